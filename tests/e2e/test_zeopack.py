"""``zeopack`` against a real server process: history and garbage removed.

Each test starts ``zeoserver`` on a free port of 127.0.0.1 with its own
FileStorage, writes through our client storage, runs ``zeopack`` as a
process and then looks at the Data.fs and at what the server still loads.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.POSException import POSKeyError

from support.waiting import read_until
from zodbserver import ClientStorage

ZEOSERVER = [sys.executable, "-m", "zodbserver.cli"]
ZEOPACK = [sys.executable, "-m", "zodbserver.zeopack"]
STARTED = re.compile(r"started \(pid (\d+)\), listening on 127\.0\.0\.1:(\d+)")


def run(command: list[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, timeout=120
    )


class Server:
    """A ``zeoserver start``ed process and the files it serves."""

    def __init__(self, directory: Path, conf: str | None = None) -> None:
        self.var = directory / "var"
        self.data_fs = directory / "Data.fs"
        args: list[str | Path] = ["-a", "127.0.0.1:0", "--var", self.var]
        if conf is None:
            args += ["-f", self.data_fs]
        else:
            conf_path = directory / "zeo.conf"
            conf_path.write_text(conf.format(data_fs=self.data_fs))
            args += ["-C", conf_path]
        result = run(ZEOSERVER, *args, "start")
        assert result.returncode == 0, result.stderr
        match = STARTED.search(result.stdout)
        assert match, result.stdout
        self.pid, self.port = int(match.group(1)), int(match.group(2))
        self.address = f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        read_until(self.alive, lambda alive: not alive, timeout=30)

    def alive(self) -> bool:
        """Whether the process exists and is no zombie waiting for init."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def start(servers: list[Server], directory: Path, conf: str | None = None) -> Server:
    directory.mkdir(exist_ok=True)
    server = Server(directory, conf)
    servers.append(server)
    return server


def write_history(address: str) -> tuple[bytes, bytes, bytes]:
    """Commits leaving old revisions and one unreachable object.

    Returns the oids of the overwritten object, the unreachable one and the
    tid of the overwritten object's first revision.
    """
    db = ZODB.DB(ClientStorage(address, wait_timeout=30))
    try:
        with db.transaction() as connection:
            root = connection.root()
            root["kept"] = PersistentMapping({"payload": "x" * 50_000})
            root["dropped"] = PersistentMapping({"payload": "y" * 50_000})
        with db.transaction() as connection:
            kept = connection.root()["kept"]
            first_tid = kept._p_serial
        for revision in range(5):
            with db.transaction() as connection:
                connection.root()["kept"]["payload"] = str(revision) * 50_000
        with db.transaction() as connection:
            root = connection.root()
            dropped_oid = root["dropped"]._p_oid
            del root["dropped"]
        return kept._p_oid, dropped_oid, first_tid
    finally:
        db.close()


def loads(address: str, oid: bytes) -> bool:
    storage = ClientStorage(address, wait_timeout=30)
    try:
        storage.load(oid)
    except POSKeyError:
        return False
    finally:
        storage.close()
    return True


def old_revision_exists(address: str, oid: bytes, tid: bytes) -> bool:
    storage = ClientStorage(address, wait_timeout=30)
    try:
        storage.loadSerial(oid, tid)
    except POSKeyError:
        return False
    finally:
        storage.close()
    return True


def test_pack_removes_history_and_garbage(tmp_path: Path, servers) -> None:
    server = start(servers, tmp_path / "server")
    kept, dropped, first_tid = write_history(server.address)
    size_before = server.data_fs.stat().st_size
    assert old_revision_exists(server.address, kept, first_tid)

    result = run(ZEOPACK, "-a", server.address, "-d", "0")

    assert result.returncode == 0, result.stderr
    assert server.data_fs.stat().st_size < size_before / 2
    assert not old_revision_exists(server.address, kept, first_tid)
    assert loads(server.address, kept)
    assert not loads(server.address, dropped)
    assert Path(f"{server.data_fs}.old").exists()  # pack-keep-old's default


def test_pack_days_keeps_recent_history(tmp_path: Path, servers) -> None:
    server = start(servers, tmp_path / "server")
    kept, dropped, first_tid = write_history(server.address)
    size_before = server.data_fs.stat().st_size

    # ZEO's positional HOST:PORT:STORAGE form, and plone's -D.
    result = run(ZEOPACK, f"{server.address}:1", "-D", "1")

    assert result.returncode == 0, result.stderr
    assert old_revision_exists(server.address, kept, first_tid)
    assert loads(server.address, dropped)
    assert server.data_fs.stat().st_size >= size_before


GC_OFF = """
<zeo>
  address 127.0.0.1:0
</zeo>
<filestorage 1>
  path {data_fs}
  pack-gc false
  pack-keep-old false
</filestorage>
"""


def test_pack_gc_off_on_the_server_keeps_unreachable_objects(
    tmp_path: Path, servers
) -> None:
    server = start(servers, tmp_path / "server", GC_OFF)
    kept, dropped, first_tid = write_history(server.address)

    result = run(ZEOPACK, "-a", server.address)

    assert result.returncode == 0, result.stderr
    assert not old_revision_exists(server.address, kept, first_tid)
    assert loads(server.address, dropped)
    assert not Path(f"{server.data_fs}.old").exists()


def test_named_storage(tmp_path: Path, servers) -> None:
    conf = GC_OFF.replace("<filestorage 1>", "<filestorage main>")
    server = start(servers, tmp_path / "server", conf)
    db = ZODB.DB(ClientStorage(server.address, storage="main", wait_timeout=30))
    with db.transaction() as connection:
        connection.root()["a"] = 1
    with db.transaction() as connection:
        connection.root()["a"] = 2
    db.close()
    size_before = server.data_fs.stat().st_size

    assert run(ZEOPACK, "-a", server.address, "-S", "main").returncode == 0
    assert server.data_fs.stat().st_size < size_before

    wrong = run(ZEOPACK, "-a", server.address, "-S", "1", "--wait-timeout", "0.5")
    assert wrong.returncode == 1
    assert "storage '1'" in wrong.stderr


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_exits_1_naming_the_server() -> None:
    address = f"127.0.0.1:{free_port()}"

    result = run(ZEOPACK, "-a", address, "--wait-timeout", "0.5")

    assert result.returncode == 1
    assert f"cannot connect to storage '1' at {address}" in result.stderr
    assert "Connection refused" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no server given"),
        (["-a", "nowhere:port"], "-a 'nowhere:port'"),
        (["-d", "soon", "-a", "8100"], "not a number of days"),
        (["-d", "-1", "-a", "8100"], "must not be negative"),
        (["-t", "25:00", "-a", "8100"], "not a time of day"),
        (["localhost"], "not a server HOST:PORT[:STORAGE]"),
        (["-h", "localhost"], "-h HOST needs -p PORT"),
        (["--wait-timeout", "0", "-a", "8100"], "must be a positive number"),
    ],
)
def test_wrong_command_line_exits_2(args: list[str], message: str) -> None:
    result = run(ZEOPACK, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_help() -> None:
    result = run(ZEOPACK, "--help")
    assert result.returncode == 0
    assert "--wait-timeout" in result.stdout
    assert "-d DAYS" in result.stdout


def test_console_script_is_declared() -> None:
    from importlib.metadata import distribution

    scripts = distribution("zodbserver").entry_points.select(group="console_scripts")
    assert scripts["zeopack"].value == "zodbserver.zeopack:main"


def test_pack_time_of_day() -> None:
    from zodbserver.zeopack import pack_time

    when = time.localtime(pack_time(2, (3, 30, 0)) + 2 * 86400)
    assert (when.tm_hour, when.tm_min, when.tm_sec) == (3, 30, 0)
    assert when[:3] == time.localtime()[:3]


def test_pack_over_tls(tmp_path: Path, servers) -> None:
    from support.certificates import Certificates

    certificates = Certificates(tmp_path / "certificates")
    pem = certificates.server
    conf = (
        "<zeo>\n  <ssl>\n"
        f"    certificate {pem.certificate}\n    key {pem.key}\n"
        f"    authenticate {certificates.ca_file}\n"
        "  </ssl>\n</zeo>\n<filestorage>\n  path {data_fs}\n</filestorage>\n"
    )
    server = start(servers, tmp_path / "server", conf)
    admin = certificates.client("admin")
    tls = ["--ssl-certificate", admin.certificate, "--ssl-key", admin.key]
    tls += ["--ssl-authenticate", certificates.ca_file]

    context = certificates.client_context(admin)
    db = ZODB.DB(ClientStorage(server.address, ssl=context, wait_timeout=30))
    try:
        for revision in range(3):
            with db.transaction() as connection:
                connection.root()["revision"] = revision
    finally:
        db.close()
    refused = run(ZEOPACK, "-a", server.address, "--wait-timeout", "2")
    assert refused.returncode == 1, refused.stderr
    result = run(ZEOPACK, "-a", server.address, "-d", "0", *tls)
    assert result.returncode == 0, result.stderr
    assert Path(f"{server.data_fs}.old").exists()  # packed


def test_a_missing_tls_file_exits_2(tmp_path: Path) -> None:
    result = run(ZEOPACK, "-a", "8100", "--ssl-certificate", tmp_path / "no.pem")
    assert result.returncode == 2
    assert "certificate: cannot load" in result.stderr
