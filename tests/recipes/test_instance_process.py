"""Instance options at work in real processes, and a wiped ``var/``.

One buildout (module scope): a server part and a client whose application
is a probe (a module on ``extra-paths``) reporting the process's request
threads and environment, with ``threads = 2`` and ``environment-vars``.
Everything is started and stopped through the generated ``bin/`` scripts.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.waiting import read_until

from .conftest import Pids, buildout_header, free_port, run_buildout
from .test_buildout_deployment import request

PROBE = """
import json
import os
import threading
import time

from zodbserver.instance.demo import application as demo


def application(environ, start_response):
    if environ["PATH_INFO"] != "/probe":
        return demo(environ, start_response)
    threads = [t.name for t in threading.enumerate() if t.name.startswith("waitress")]
    body = json.dumps(
        {
            "threads": sorted(threads),
            "TZ": os.environ.get("TZ"),
            "tzname": list(time.tzname),
            "GREETING": os.environ.get("GREETING"),
            "initialized": os.environ.get("INITIALIZED"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""

#: An application whose import takes LOAD_SECONDS, as a big site's does.
LOAD_SECONDS = 6.0
SLOW_APPLICATION = f"""
import time

time.sleep({LOAD_SECONDS})


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"loaded"]
"""

#: One line of the combined log format: host, ident, user, [time], "request",
#: status, size, "referrer", "user agent".
COMBINED = re.compile(
    r'^(?P<host>\S+) - (?P<user>\S+) \[(?P<time>[^]]+)\] "(?P<request>[^"]*)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referrer>[^"]*)" "(?P<agent>[^"]*)"$'
)


@dataclass
class Deployment:
    directory: Path
    http: int
    #: http-fast-listen on and off, for an application slow to load.
    slow_ports: dict[str, int]

    def bin(self, script: str, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.directory / "bin" / script), command],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}/{path}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    directory = tmp_path_factory.mktemp("instance-process")
    (directory / "src").mkdir()
    (directory / "src" / "probe.py").write_text(PROBE)
    (directory / "src" / "slowapp.py").write_text(SLOW_APPLICATION)
    zeo_port, http = free_port(), free_port()
    slow_ports = {"fast-on": free_port(), "fast-off": free_port()}
    config = buildout_header("zeoserver client1 fast-on fast-off")
    config += f"""
[zeoserver]
recipe = zodbserver:server
zeo-address = {zeo_port}

[client1]
recipe = zodbserver:instance
zeo-address = ${{zeoserver:zeo-address}}
http-address = {http}
application = probe:application
extra-paths = src
threads = 2
environment-vars =
    TZ XYZ-3
    GREETING hello world
initialization = import os; os.environ["INITIALIZED"] = "yes"
"""
    for name, port in slow_ports.items():
        config += f"""
[{name}]
recipe = zodbserver:instance
zeo-address = ${{zeoserver:zeo-address}}
http-address = {port}
application = slowapp:application
extra-paths = src
http-fast-listen = {name.removeprefix("fast-")}
"""
    result = run_buildout(directory, config)
    assert result.returncode == 0, result.stdout + result.stderr
    return Deployment(directory, http, slow_ports)


@pytest.fixture
def running(deployment: Deployment, pids: Pids) -> Deployment:
    var = deployment.directory / "var"
    for name in ("zeoserver", "client1"):
        pids.watch(var / f"{name}.pid")
    for name in ("zeoserver", "client1"):
        started = deployment.bin(name, "start")
        assert started.returncode == 0, started.stdout + started.stderr
    return deployment


def stop_all(deployment: Deployment, pids: Pids) -> None:
    for name in ("client1", "zeoserver"):
        stopped = deployment.bin(name, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert pids.alive() == []


def probe(deployment: Deployment) -> dict[str, object]:
    status, body = request("GET", deployment.url("probe"))
    assert status == 200, body
    answer: dict[str, object] = json.loads(body)
    return answer


def test_threads_environment_and_initialization(
    running: Deployment, pids: Pids
) -> None:
    seen = probe(running)
    assert seen["threads"] == ["waitress-0", "waitress-1"]
    assert seen["TZ"] == "XYZ-3"
    assert seen["tzname"] == ["XYZ", "XYZ"]  # reread: time.tzset()
    assert seen["GREETING"] == "hello world"
    assert seen["initialized"] == "yes"
    stop_all(running, pids)


def test_access_log_has_a_combined_format_line_per_request(
    running: Deployment, pids: Pids
) -> None:
    assert request("PUT", running.url("greeting"), b"hello")[0] == 201
    assert request("GET", running.url("greeting")) == (200, b"hello")
    assert request("GET", running.url("absent?x=1"))[0] == 404
    stop_all(running, pids)
    log = running.directory / "var" / "log" / "client1-access.log"
    lines = log.read_text().splitlines()[-3:]
    parsed = [COMBINED.match(line) for line in lines]
    assert all(parsed), lines
    fields = [(m["request"], m["status"], m["size"]) for m in parsed if m]
    assert fields == [
        ("PUT /greeting HTTP/1.1", "201", "-"),
        ("GET /greeting HTTP/1.1", "200", "5"),
        ("GET /absent?x=1 HTTP/1.1", "404", str(len(b"no such key\n"))),
    ]
    assert all(m["host"] == "127.0.0.1" for m in parsed if m)
    event_log = running.directory / "var" / "log" / "client1.log"
    assert "GET /greeting" not in event_log.read_text()


def test_wiped_var_starts_again(deployment: Deployment, pids: Pids) -> None:
    shutil.rmtree(deployment.directory / "var")
    var = deployment.directory / "var"
    for name in ("zeoserver", "client1"):
        pids.watch(var / f"{name}.pid")
    for name in ("zeoserver", "client1"):
        started = deployment.bin(name, "start")
        assert started.returncode == 0, started.stdout + started.stderr
    assert request("GET", deployment.url("greeting"))[0] == 404  # a new database
    assert request("PUT", deployment.url("greeting"), b"again")[0] == 201
    assert request("GET", deployment.url("greeting")) == (200, b"again")
    assert (var / "filestorage" / "Data.fs").exists()
    assert (var / "log" / "client1-access.log").exists()
    stop_all(deployment, pids)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("part", "listens_early"), [("fast-on", True), ("fast-off", False)]
)
def test_http_fast_listen(
    deployment: Deployment, pids: Pids, part: str, listens_early: bool
) -> None:
    """On: the port accepts while the application loads, and a request made
    then is answered once it has loaded.  Off: the port opens after."""
    var = deployment.directory / "var"
    pids.watch(var / "zeoserver.pid")
    started = deployment.bin("zeoserver", "start")
    assert started.returncode == 0, started.stderr
    port = deployment.slow_ports[part]
    launched = time.monotonic()
    with subprocess.Popen(
        [str(deployment.directory / "bin" / part), "fg"],
        cwd=deployment.directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            early = read_until(lambda: accepts(port), timeout=LOAD_SECONDS * 2 / 3)
            assert time.monotonic() - launched < LOAD_SECONDS
            assert early is listens_early
            status, body = read_until(
                lambda: (
                    request("GET", f"http://127.0.0.1:{port}/")
                    if accepts(port)
                    else (0, b"")
                ),
                lambda answer: answer[0] == 200,
                timeout=60,
                interval=0.2,
            )
            assert (status, body) == (200, b"loaded")
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
    assert deployment.bin("zeoserver", "stop").returncode == 0
