"""A real zc.buildout run of the ZEO-style profile, then a write seen twice.

The buildout extends ``profiles/zeo-instance.cfg`` exactly as an operator
would, makes two clients with ``<= instance``, and uses ports free at test
time.  The server and both instances are started and stopped through the
generated ``bin/`` scripts; whatever is left running is killed at the end.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .conftest import PROFILE, Pids, buildout_header, free_port, run_buildout


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
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_profile_server_and_two_clients(tmp_path: Path, pids: Pids) -> None:
    zeo_port, http1, http2 = free_port(), free_port(), free_port()
    config = buildout_header("zeoserver client1 client2", extends=str(PROFILE))
    config += f"""
[zeoserver]
zeo-address = {zeo_port}

[client1]
<= instance
http-address = {http1}

[client2]
<= instance
http-address = 127.0.0.1:{http2}
"""
    result = run_buildout(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
    var = tmp_path / "var"
    for name in ("zeoserver", "client1", "client2"):
        pids.watch(var / f"{name}.pid")

    try:
        assert bin_command(tmp_path, "zeoserver", "start") == 0
        assert bin_command(tmp_path, "zeoserver", "status") == 0
        assert bin_command(tmp_path, "client1", "start") == 0
        assert bin_command(tmp_path, "client2", "start") == 0
        assert bin_command(tmp_path, "client2", "status") == 0

        status, _ = request("PUT", f"http://127.0.0.1:{http1}/greeting", b"hello")
        assert status == 201
        deadline = time.monotonic() + 10
        seen: tuple[int, bytes] = (0, b"")
        while time.monotonic() < deadline:
            seen = request("GET", f"http://127.0.0.1:{http2}/greeting")
            if seen == (200, b"hello"):
                break
            time.sleep(0.1)
        assert seen == (200, b"hello")
        assert request("GET", f"http://127.0.0.1:{http2}/missing")[0] == 404

        assert bin_command(tmp_path, "client1", "stop") == 0
        assert bin_command(tmp_path, "client2", "stop") == 0
        assert bin_command(tmp_path, "client1", "status") == 3
        assert bin_command(tmp_path, "zeoserver", "stop") == 0
        assert bin_command(tmp_path, "zeoserver", "status") == 3
        assert pids.alive() == []
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
