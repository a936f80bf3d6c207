"""The instance's app factory under gunicorn, a second WSGI server.

A real buildout makes a server part, a plain instance (the demo key/value
application) and a Zope instance.  gunicorn, started as an operator would
with the factory and the instance's ``instance.json``, serves each of
them on a free port; a write through gunicorn is read back through the
waitress instance the ``bin/`` script runs, or through Zope.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.waiting import read_until

from .conftest import PROFILE, Pids, buildout_header, free_port, run_buildout
from .test_zope_instance import MANAGER, http_request, run_bin, wait_for_response

START_SECONDS = 60.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    directory = tmp_path_factory.mktemp("gunicorn-buildout")
    zeo_port, http_port = free_port(), free_port()
    config = buildout_header("zeoserver client1 zclient", extends=str(PROFILE))
    config += f"""
[zeoserver]
zeo-address = {zeo_port}

[client1]
<= instance
http-address = {http_port}

[zclient]
<= instance
application = zope
user = {":".join(MANAGER)}
http-address = {free_port()}
"""
    result = run_buildout(directory, config)
    assert result.returncode == 0, result.stdout + result.stderr
    return directory, zeo_port, http_port


def factory(directory: Path, part: str) -> str:
    """The gunicorn APP_MODULE an operator writes for an instance part."""
    config = directory / "parts" / part / "etc" / "instance.json"
    return f'zodbserver.instance.wsgi:make_app("{config}")'


@contextmanager
def gunicorn(directory: Path, app: str, pids: Pids) -> Iterator[int]:
    """A gunicorn master serving ``app`` on a free port; stopped by SIGTERM."""
    port = free_port()
    pid_file = directory / "var" / f"gunicorn-{port}.pid"
    pids.watch(pid_file)
    log = directory / "var" / "log" / f"gunicorn-{port}.log"
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
    # No control socket: gunicorn would put it in the home directory.
    command += ["--workers", "1", "--no-control-socket", "--pid", str(pid_file), app]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=directory, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        assert listening(process, port), log.read_text()
        yield port
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def listening(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether gunicorn accepts connections on ``port`` within START_SECONDS
    (False as soon as it exits)."""
    return read_until(
        lambda: process.poll() is None and connects(port),
        lambda listening: listening or process.poll() is not None,
        timeout=START_SECONDS,
        interval=0.1,
    )


def test_write_through_gunicorn_is_read_through_waitress(
    built: tuple[Path, int, int], pids: Pids
) -> None:
    directory, _, http_port = built
    for name in ("zeoserver", "client1"):
        pids.watch(directory / "var" / f"{name}.pid")
    try:
        assert run_bin(directory, "zeoserver", "start").returncode == 0
        assert run_bin(directory, "client1", "start").returncode == 0
        with gunicorn(directory, factory(directory, "client1"), pids) as port:
            stored = http_request(port, "PUT", "/colour", body=b"blue")
            assert stored[0] == 201
            seen = wait_for_response(http_port, "/colour", (200, b"blue"))
            assert seen == (200, b"blue")
            assert http_request(port, "GET", "/colour") == (200, b"blue")
        assert run_bin(directory, "client1", "stop").returncode == 0
        assert run_bin(directory, "zeoserver", "stop").returncode == 0
        assert pids.alive() == []
    finally:
        pids.kill_all()


def test_gunicorn_serves_zope_from_the_same_factory(
    built: tuple[Path, int, int], pids: Pids
) -> None:
    directory = built[0]
    pids.watch(directory / "var" / "zeoserver.pid")
    try:
        assert run_bin(directory, "zeoserver", "start").returncode == 0
        with gunicorn(directory, factory(directory, "zclient"), pids) as port:
            form = {"id": "via_gunicorn", "title": "Served by gunicorn"}
            added = http_request(
                port,
                "POST",
                "/manage_addProduct/OFSP/manage_addFolder",
                form=form,
                user=MANAGER,
            )
            assert added[0] in (200, 302), added
            title = http_request(port, "GET", "/via_gunicorn/title_or_id", user=MANAGER)
            assert title == (200, b"Served by gunicorn")
        assert run_bin(directory, "zeoserver", "stop").returncode == 0
        assert pids.alive() == []
    finally:
        pids.kill_all()
