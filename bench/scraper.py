"""The monitor scraper: ``python -m bench.scraper BASE_URL INTERVAL``.

While told to, every ``INTERVAL`` seconds it GETs ``BASE_URL/metrics``, as
Prometheus does (every 15 s by default), then ``BASE_URL/status.json``, as
a dashboard polling the JSON would, and prints one line per scrape::

    SCRAPE {"at": ..., "seconds": ..., "metrics_ms": ..., "status_ms": ...,
            "metrics_bytes": ..., "status_bytes": ..., "error": null}

``at`` is ``time.monotonic()`` when the scrape began: on Linux that is
CLOCK_MONOTONIC, one clock for every process, so the benchmark can tell
which scrapes fell within a measurement.  A scrape fails (``error`` says
why) on a connection error or timeout, a status other than 200, a
``/metrics`` without ``zodbserver_ready 1`` or a ``/status.json`` whose
state is not ``serving``; the scraper goes on scraping.

It first waits for ``/ready`` to answer 200 and prints ``READY``; then it
waits, scraping nothing, for commands on stdin, one a line:

- ``BEGIN``: a measurement of the monitored server starts.  Answered
  ``BEGUN``, printed after the first scrape's ``at`` was taken and before
  that scrape is sent, so a measurement begun before ``BEGIN`` was sent and
  ended after ``BEGUN`` was read holds at least that scrape.  Then it
  scrapes every ``INTERVAL`` until
- ``END``: answered ``ENDED`` once the scrape in flight is done (every
  ``SCRAPE`` line of the measurement comes before it); scraping stops, so
  the unmonitored systems' measurements share the machine with no scraper.
- ``SYNC``: answered ``SYNCED`` (every scrape begun before has been printed).
- ``STOP`` or the end of stdin (the benchmark ended or died) ends it; an
  alarm ends it after ``LIFETIME`` seconds whatever happens.

The scraper is one thread and reads stdin only between scrapes.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import sys
import time
from typing import Any
from urllib.parse import urlsplit

#: Seconds a request may take.
REQUEST_TIMEOUT = 10.0
#: Seconds to wait for ``/ready`` at start.
READY_TIMEOUT = 60.0
LIFETIME = 4 * 3600


class ScrapeError(Exception):
    """A scrape got no answer, or not the one expected."""


def get(host: str, port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise ScrapeError(f"{path}: {response.status} {body[:200]!r}")
    return body


def scrape(host: str, port: int, started: float) -> dict[str, Any]:
    record: dict[str, Any] = {"at": started, "error": None}
    try:
        metrics = get(host, port, "/metrics")
        record["metrics_ms"] = (time.monotonic() - started) * 1000.0
        record["metrics_bytes"] = len(metrics)
        if b"\nzodbserver_ready 1.0\n" not in metrics:
            raise ScrapeError("/metrics: no zodbserver_ready 1.0")
        status_started = time.monotonic()
        status = get(host, port, "/status.json")
        record["status_ms"] = (time.monotonic() - status_started) * 1000.0
        record["status_bytes"] = len(status)
        state = json.loads(status).get("state")
        if state != "serving":
            raise ScrapeError(f"/status.json: state {state!r}")
    except (OSError, ValueError, http.client.HTTPException, ScrapeError) as error:
        record["error"] = repr(error)
    record["seconds"] = time.monotonic() - started
    return record


def wait_ready(host: str, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            get(host, port, "/ready")
            return
        except (OSError, http.client.HTTPException, ScrapeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    signal.alarm(LIFETIME)
    parts = urlsplit(argv[0])
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    interval = float(argv[1])
    wait_ready(host, port)
    print("READY", flush=True)
    stdin = sys.stdin.fileno()
    pending = b""
    #: When the next scrape is due; None between measurements.
    next_at: float | None = None
    while True:
        timeout = None if next_at is None else max(0.0, next_at - time.monotonic())
        readable, _, _ = select.select([stdin], [], [], timeout)
        if readable:
            chunk = os.read(stdin, 4096)
            if not chunk:
                return 0
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                command = line.strip()
                if command == b"STOP":
                    return 0
                if command == b"SYNC":
                    print("SYNCED", flush=True)
                elif command == b"END":
                    next_at = None
                    print("ENDED", flush=True)
                elif command == b"BEGIN":
                    started = time.monotonic()
                    print("BEGUN", flush=True)
                    _report(scrape(host, port, started))
                    next_at = started + interval
            continue
        if next_at is None:
            continue
        _report(scrape(host, port, time.monotonic()))
        next_at += interval
        # A scrape slower than the interval skips the ticks it overran.
        now = time.monotonic()
        if next_at < now:
            next_at = now + interval


def _report(record: dict[str, Any]) -> None:
    print("SCRAPE " + json.dumps(record), flush=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
