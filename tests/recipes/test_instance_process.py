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
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

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
    zeo_port, http = free_port(), free_port()
    config = buildout_header("zeoserver client1")
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
    result = run_buildout(directory, config)
    assert result.returncode == 0, result.stdout + result.stderr
    return Deployment(directory, http)


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
