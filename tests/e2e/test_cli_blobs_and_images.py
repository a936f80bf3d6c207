"""``zeoserver -f`` with blobs, ``zeoserver pack``, and the container image's
environment variables (``ZEO_PORT``, ...): real server processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZODB
from ZODB.blob import Blob
from ZODB.POSException import Unsupported

from support.waiting import wait_until
from zodbserver import ClientStorage
from zodbserver.cli import build_parser, make_plan
from zodbserver.client.exceptions import ClientDisconnected
from zodbserver.container import apply_environment
from zodbserver.errors import ConfigurationError

CLI = [sys.executable, "-m", "zodbserver.cli"]
STARTED = re.compile(r"started \(pid (\d+)\), listening on 127\.0\.0\.1:(\d+)")
TIMEOUT = 120


def zeoserver(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )


def start(*args: str | Path, cwd: Path) -> int:
    """``zeoserver start``; the port it listens on."""
    result = zeoserver(*args, "start", cwd=cwd)
    assert result.returncode == 0, result.stderr
    match = STARTED.search(result.stdout)
    assert match, result.stdout
    return int(match.group(2))


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for pid_file in tmp_path.glob("**/*.pid"):
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            continue


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_db(port: int, blob_dir: Path) -> ZODB.DB:
    storage = ClientStorage(
        ("127.0.0.1", port), blob_dir=str(blob_dir), wait_timeout=30
    )
    return ZODB.DB(storage)


def commit_blob(db: ZODB.DB, data: bytes) -> None:
    with db.transaction() as connection:
        blob = Blob()
        with blob.open("w") as file:
            file.write(data)
        connection.root()["blob"] = blob


def read_blob(db: ZODB.DB) -> bytes:
    connection = db.open(transaction.TransactionManager())
    try:
        with connection.root()["blob"].open("r") as file:
            data: bytes = file.read()
            return data
    finally:
        connection.close()


def test_f_with_blob_dir_serves_blobs(workdir: Path) -> None:
    # Directories that do not exist yet: made at start, as --var's are.
    data_fs = workdir / "data" / "new" / "Data.fs"
    blobs = workdir / "data" / "blobs"
    port = start("-a", "127.0.0.1:0", "-f", data_fs, "--blob-dir", blobs, cwd=workdir)
    writer, reader = open_db(port, workdir / "c1"), open_db(port, workdir / "c2")
    try:
        payload = os.urandom(200_000)
        commit_blob(writer, payload)
        assert read_blob(reader) == payload
    finally:
        writer.close()
        reader.close()
    assert any(blobs.rglob("*.blob"))
    log = (workdir / "var" / "log" / "zeoserver.log").read_text()
    assert "has no blob directory" not in log
    assert zeoserver("-f", data_fs, "stop", cwd=workdir).returncode == 0


def test_f_without_blob_dir_warns_and_a_blob_commit_says_what_is_missing(
    workdir: Path,
) -> None:
    port = start("-a", "127.0.0.1:0", "-f", workdir / "Data.fs", cwd=workdir)
    log = (workdir / "var" / "log" / "zeoserver.log").read_text()
    assert "WARNING" in log
    assert "storage '1' has no blob directory" in log
    db = open_db(port, workdir / "cache")
    try:
        with pytest.raises(Unsupported, match=r"has no blob directory.*--blob-dir"):
            commit_blob(db, b"data")
        with db.transaction() as connection:  # other commits go on
            connection.root()["plain"] = 1
    finally:
        db.close()
    assert zeoserver("-f", workdir / "Data.fs", "stop", cwd=workdir).returncode == 0


def test_more_blob_dirs_than_f_is_a_usage_error(workdir: Path) -> None:
    result = zeoserver("--blob-dir", "b", "status", cwd=workdir)
    assert result.returncode == 2
    assert "--blob-dir" in result.stderr


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, (("127.0.0.1", 8100), False, 100)),
        ({"ZEO_PORT": "9100"}, (("0.0.0.0", 9100), False, 100)),
        ({"ZEO_READ_ONLY": "true"}, (("127.0.0.1", 8100), True, 100)),
        ({"ZEO_INVALIDATION_QUEUE_SIZE": "7"}, (("127.0.0.1", 8100), False, 7)),
    ],
)
def test_image_variables_change_the_plan(
    tmp_path: Path, environ: dict[str, str], expected: tuple[object, ...]
) -> None:
    args = build_parser().parse_args(["--var", str(tmp_path), "fg"])
    args.address = None
    plan = apply_environment(make_plan(args), environ)
    settings = plan.config.settings
    assert (
        settings.address,
        settings.read_only,
        settings.invalidation_queue_size,
    ) == expected


@pytest.mark.parametrize(
    "environ",
    [{"ZEO_PORT": "http"}, {"ZEO_READ_ONLY": "maybe"}, {"ZEO_PACK_KEEP_OLD": "x"}],
)
def test_wrong_image_variable_is_a_usage_error(
    workdir: Path, environ: dict[str, str]
) -> None:
    result = zeoserver("fg", cwd=workdir, env={**os.environ, **environ})
    assert result.returncode == 2
    assert next(iter(environ)) in result.stderr
    args = build_parser().parse_args(["--var", str(workdir), "fg"])
    args.address = None
    plan = make_plan(args)
    with pytest.raises(ConfigurationError):
        apply_environment(plan, environ)


@contextlib.contextmanager
def fg_listening(
    workdir: Path, environ: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """``zeoserver fg`` with ``environ`` added, once it says it listens."""
    with subprocess.Popen(
        [*CLI, "fg"],
        cwd=workdir,
        stderr=subprocess.PIPE,
        env={**os.environ, **environ},
    ) as process:
        assert process.stderr is not None
        fd = process.stderr.fileno()
        output = b""
        deadline = time.monotonic() + TIMEOUT
        try:
            expected = f"listening on 0.0.0.0:{environ['ZEO_PORT']}".encode()
            while expected not in output:
                remaining = deadline - time.monotonic()
                readable, _, _ = select.select([fd], [], [], max(remaining, 0))
                chunk = os.read(fd, 65536) if readable else b""
                if not chunk:
                    raise AssertionError(f"fg did not listen: {output.decode()}")
                output += chunk
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=TIMEOUT)


def test_zeo_port_and_pack_keep_old_from_the_environment(workdir: Path) -> None:
    port = free_port()
    environ = {"ZEO_PORT": str(port), "ZEO_PACK_KEEP_OLD": "false"}
    with fg_listening(workdir, environ) as process:
        db = open_db(port, workdir / "cache")
        try:
            for value in range(3):
                with db.transaction() as connection:
                    connection.root()["value"] = value
        finally:
            db.close()
        packed = zeoserver("-a", f"127.0.0.1:{port}", "pack", "-d", "0", cwd=workdir)
        assert packed.returncode == 0, packed.stdout + packed.stderr
        data_fs = workdir / "var" / "filestorage" / "Data.fs"
        assert data_fs.exists()
        assert not data_fs.with_name("Data.fs.old").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0


def test_zeo_read_only_from_the_environment(workdir: Path) -> None:
    port = free_port()
    environ = {"ZEO_PORT": str(port), "ZEO_READ_ONLY": "true"}
    with fg_listening(workdir, environ):
        # A read-only server refuses a writable client at registration
        # (as ZEO's does) and serves a read-only one.
        with pytest.raises(ClientDisconnected):
            ClientStorage(("127.0.0.1", port), wait_timeout=3)
        storage = ClientStorage(("127.0.0.1", port), read_only=True, wait_timeout=30)
        try:
            assert storage.isReadOnly()
            assert storage.lastTransaction()
        finally:
            storage.close()


def test_pack_subcommand_keeps_old_by_default(workdir: Path) -> None:
    port = start("-a", "127.0.0.1:0", cwd=workdir)
    db = open_db(port, workdir / "cache")
    try:
        for value in range(3):
            with db.transaction() as connection:
                connection.root()["value"] = value
    finally:
        db.close()
    packed = zeoserver("-a", f"127.0.0.1:{port}", "pack", "-d", "0", cwd=workdir)
    assert packed.returncode == 0, packed.stdout + packed.stderr
    old = workdir / "var" / "filestorage" / "Data.fs.old"
    wait_until(old.exists, "Data.fs.old after the pack", timeout=30)
    assert zeoserver("stop", cwd=workdir).returncode == 0
