"""A real zc.buildout run of the classic ZEO profile, end to end.

The buildout extends ``profiles/zeo-instance.cfg`` exactly as an operator
would: ``parts`` lists four clients made with ``<= instance`` (the server
part comes with them), ``[instance]`` names the server by host name and
port, and every port is free at test time.  The server and the clients
are started and stopped through the generated ``bin/`` scripts; a write
and a blob made through one client are read through another, with each
client's own blob cache (the default) and with the server's blob directory
shared; at the end no process of the deployment is left.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from support.waiting import read_until

from .conftest import PROFILE, Pids, buildout_header, free_port, run_buildout

#: Several of the 59000-byte chunks blobs travel in, and a partial one.
BLOB_SIZE = 300_000
CLIENTS = ("client1", "client2", "client3", "client4")
SHARED_CLIENTS = ("shared1", "shared2")


def bin_command(directory: Path, script: str, command: str) -> int:
    process = subprocess.run(
        [str(directory / "bin" / script), command],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return process.returncode


def request(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def files_holding(directory: Path, data: bytes) -> list[Path]:
    return [
        path
        for path in directory.rglob("*.blob")
        if path.stat().st_size == len(data) and path.read_bytes() == data
    ]


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions TEXT (the buildout
    directory): whatever the deployment started, pid file or not."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in command_line:
            found.append(int(entry.name))
    return found


def classic_profile(zeo_port: int, http_ports: dict[str, int]) -> str:
    # parts lists the clients only: the profile brings the zeoserver part.
    config = buildout_header(" ".join(http_ports), extends=str(PROFILE))
    # localhost stands for the classic "webdb:8888": a host name the client
    # resolves (here to 127.0.0.1, where a bare server port listens).
    config += f"""
[zeoserver]
zeo-address = {zeo_port}

[instance]
zeo-address = localhost:{zeo_port}
"""
    for name, port in http_ports.items():
        config += f"\n[{name}]\n<= instance\nhttp-address = {port}\n"
        if name in SHARED_CLIENTS:
            config += "shared-blob = true\nblob-storage = ${zeoserver:blob-storage}\n"
    return config


def test_classic_profile_four_clients_and_blobs(tmp_path: Path, pids: Pids) -> None:
    zeo_port = free_port()
    http_ports = {name: free_port() for name in CLIENTS + SHARED_CLIENTS}
    result = run_buildout(tmp_path, classic_profile(zeo_port, http_ports))
    assert result.returncode == 0, result.stdout + result.stderr
    zodb_conf = (tmp_path / "parts" / "client4" / "etc" / "zodb.conf").read_text()
    assert f"server localhost:{zeo_port}" in zodb_conf
    var = tmp_path / "var"
    for name in ("zeoserver", *http_ports):
        pids.watch(var / f"{name}.pid")

    def url(client: str, path: str) -> str:
        return f"http://127.0.0.1:{http_ports[client]}/{path}"

    def write_then_read(writer: str, reader: str, path: str, body: bytes) -> None:
        """PUT through one client, then GET the same bytes through another
        (the commit reaches it through an asynchronous invalidation)."""
        assert request("PUT", url(writer, path), body)[0] == 201
        seen = read_until(
            lambda: request("GET", url(reader, path)),
            lambda seen: seen == (200, body),
            timeout=10,
            interval=0.1,
        )
        assert seen == (200, body)

    try:
        assert bin_command(tmp_path, "zeoserver", "start") == 0
        assert bin_command(tmp_path, "zeoserver", "status") == 0
        for name in http_ports:
            assert bin_command(tmp_path, name, "start") == 0, name
        assert bin_command(tmp_path, "client4", "status") == 0

        write_then_read("client1", "client4", "greeting", b"hello")
        assert request("GET", url("client4", "missing"))[0] == 404

        # Each client its own blob cache: the blob goes to the server and
        # from there into client4's cache.
        photo = os.urandom(BLOB_SIZE)
        write_then_read("client2", "client4", "blobs/photo", photo)
        assert files_holding(var / "blobcache-client4", photo)
        assert files_holding(var / "blobstorage", photo)

        # The server's blob directory shared: written there by shared1,
        # read there by shared2; a caching client downloads it as usual.
        report = os.urandom(BLOB_SIZE)
        write_then_read("shared1", "shared2", "blobs/report", report)
        assert files_holding(var / "blobstorage", report)
        assert not (var / "blobcache-shared1").exists()
        assert not (var / "blobcache-shared2").exists()
        seen = read_until(
            lambda: request("GET", url("client3", "blobs/report")),
            lambda seen: seen == (200, report),
            timeout=10,
            interval=0.1,
        )
        assert seen == (200, report)
        assert request("GET", url("shared2", "blobs/photo")) == (200, photo)

        for name in http_ports:
            assert bin_command(tmp_path, name, "stop") == 0, name
            assert bin_command(tmp_path, name, "status") == 3, name
        assert bin_command(tmp_path, "zeoserver", "stop") == 0
        assert bin_command(tmp_path, "zeoserver", "status") == 3
        assert pids.alive() == []
        assert processes_mentioning(str(tmp_path)) == []
    finally:
        pids.kill_all()
    assert (var / "filestorage" / "Data.fs").exists()


def test_wrong_option_fails_the_buildout(tmp_path: Path) -> None:
    config = buildout_header("zeoserver", extends=str(PROFILE))
    config += "\n[zeoserver]\nzeo-address = notaport\n"
    result = run_buildout(tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "[zeoserver] zeo-address:" in output
    assert not (tmp_path / "bin" / "zeoserver").exists()


def test_zeo4_authentication_fails_the_buildout(tmp_path: Path) -> None:
    config = buildout_header("zeoserver", extends=str(PROFILE))
    config += "\n[zeoserver]\nauthentication-database = auth.db\n"
    result = run_buildout(tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "[zeoserver] authentication-database:" in output
    assert "TLS" in output


def test_tls_deployment_a_server_and_two_clients(tmp_path: Path, pids: Pids) -> None:
    """The server recipe's ssl-* and the instance recipe's ssl-* options:
    a write through one client is read through the other, over TLS."""
    from support.certificates import Certificates

    Certificates(tmp_path / "certificates").client("web")  # client-web.pem
    zeo_port = free_port()
    http_ports = {"client1": free_port(), "client2": free_port()}
    config = buildout_header(" ".join(http_ports), extends=str(PROFILE))
    config += f"""
[zeoserver]
zeo-address = {zeo_port}
ssl-certificate = certificates/server.pem
ssl-key = certificates/server.key
ssl-authenticate = certificates/ca.pem

[instance]
zeo-address = localhost:{zeo_port}
ssl-certificate = certificates/client-web.pem
ssl-key = certificates/client-web.key
ssl-authenticate = certificates/ca.pem
"""
    for name, port in http_ports.items():
        config += f"\n[{name}]\n<= instance\nhttp-address = {port}\n"
    result = run_buildout(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
    zodb_conf = (tmp_path / "parts" / "client1" / "etc" / "zodb.conf").read_text()
    assert "<ssl>" in zodb_conf
    var = tmp_path / "var"
    for name in ("zeoserver", *http_ports):
        pids.watch(var / f"{name}.pid")
    try:
        assert bin_command(tmp_path, "zeoserver", "start") == 0
        for name in http_ports:
            assert bin_command(tmp_path, name, "start") == 0, name
        base = {name: f"http://127.0.0.1:{port}" for name, port in http_ports.items()}
        assert request("PUT", f"{base['client1']}/secret", b"over TLS")[0] == 201
        seen = read_until(
            lambda: request("GET", f"{base['client2']}/secret"),
            lambda seen: seen == (200, b"over TLS"),
            timeout=10,
            interval=0.1,
        )
        assert seen == (200, b"over TLS")
        log = (var / "log" / "zeoserver.log").read_text()
        assert "web at 127.0.0.1:" in log  # the clients' certificate name
        for name in http_ports:
            assert bin_command(tmp_path, name, "stop") == 0, name
        assert bin_command(tmp_path, "zeoserver", "stop") == 0
    finally:
        pids.kill_all()
