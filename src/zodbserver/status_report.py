"""``zeoserver status --verbose``: a running server's figures in a terminal.

With a ``monitor-address``, the figures are the monitor's ``/status.json``
(what its status page shows: storages, clients, the commit lock, the
slowest recent commits).  Without one, they are the counters ZEO's
``ruok`` probe answers on the server's own address, as ``zeo-nagios``
reads them (plain TCP or a Unix socket: a TLS server needs the monitor).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

from .addresses import Address, format_address
from .errors import ZodbServerError
from .protocol.connection import STATUS_PROBE
from .protocol.framing import FrameDecoder, encode_frame
from .server.figures import age, clock, duration, replication, since, size
from .server.settings import ServerSettings

#: Seconds to wait for the server's answer.
TIMEOUT = 10.0


class StatusUnavailableError(ZodbServerError):
    """The running server's figures could not be read."""


def report(settings: ServerSettings) -> str:
    """The figures of the server ``settings`` describe, as text."""
    if settings.monitor_address is not None:
        return format_status(_monitor_status(settings.monitor_address))
    if settings.tls is not None:
        raise StatusUnavailableError(
            "the server speaks TLS: set monitor-address to read its figures"
        )
    return format_probe(_probe(settings.address))


# -- reading -------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(self._path)


def _monitor_status(address: Address) -> dict[str, Any]:
    where = f"the monitor at {format_address(address)}"
    if isinstance(address, str):
        connection: http.client.HTTPConnection = _UnixHTTPConnection(address)
    else:
        connection = http.client.HTTPConnection(*address, timeout=TIMEOUT)
    try:
        connection.request("GET", "/status.json")
        response = connection.getresponse()
        body = response.read()
    except OSError as error:
        raise StatusUnavailableError(f"cannot read {where}: {error}") from error
    finally:
        connection.close()
    try:
        document: dict[str, Any] = json.loads(body)
    except ValueError as error:
        raise StatusUnavailableError(f"{where} did not answer JSON") from error
    if response.status != 200 and "storages" not in document:
        state = document.get("state", f"HTTP status {response.status}")
        raise StatusUnavailableError(f"{where} says the server is {state}")
    return document


def _probe(address: Address) -> dict[str, Any]:
    where = f"the server at {format_address(address)}"
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    decoder = FrameDecoder()
    frames: list[bytes] = []
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(address)
            sock.sendall(encode_frame(STATUS_PROBE))
            while len(frames) < 2:  # the greeting, then the answer
                data = sock.recv(65536)
                if not data:
                    break
                frames.extend(decoder.feed(data))
    except OSError as error:
        raise StatusUnavailableError(f"cannot ask {where}: {error}") from error
    try:
        answer: dict[str, Any] = json.loads(frames[1])
    except (IndexError, ValueError) as error:
        raise StatusUnavailableError(f"{where} did not answer ruok") from error
    return answer


# -- writing -------------------------------------------------------------------


def format_status(document: dict[str, Any]) -> str:
    """The monitor's ``/status.json`` as lines for a terminal."""
    now = document.get("taken_at", time.time())
    lines = [f"state: {document['state']}, pid {document['pid']}"]
    traffic = document["traffic"]
    lines.append(
        f"traffic: {size(traffic['received_bytes'])} in, "
        f"{size(traffic['sent_bytes'])} out; blobs "
        f"{size(traffic['blob_uploaded_bytes'])} up, "
        f"{size(traffic['blob_downloaded_bytes'])} down"
    )
    for storage in document["storages"]:
        lines.append("")
        lines.extend(_storage_lines(storage, now))
    return "\n".join(lines) + "\n"


def _storage_lines(storage: dict[str, Any], now: float) -> list[str]:
    last_time = storage["last_transaction_time"]
    last = "none" if last_time is None else since(last_time, now)
    lines = [
        f"storage {storage['name']!r}: {size(storage['size'])}, "
        f"{storage['objects']} objects, last transaction {last}",
        "  "
        + "  ".join(f"{name} {count}" for name, count in storage["counters"].items()),
        f"  connections {storage['connections']}, open transactions "
        f"{storage['active_transactions']}, invalidation queue "
        f"{storage['invalidation_queue']}",
    ]
    if storage["blob_directory"] is not None:
        measured = storage.get("blob_directory_size")
        shown = "" if measured is None else f" ({size(measured)})"
        lines.append(f"  blobs in {storage['blob_directory']}{shown}")
    lines.extend(f"  {line}" for line in replication(storage["replication"]))
    lock = storage["lock"]
    if lock["holder"] is None:
        lines.append("  commit lock: free")
    else:
        lines.append(
            f"  commit lock: held by {lock['holder']} for {age(lock['held_for'])}"
        )
    if lock["queue"]:
        lines.append("  waiting for it: " + ", ".join(lock["queue"]))
    lines.append(f"  clients ({len(storage['clients'])}):")
    for client in storage["clients"]:
        state = client["transaction"] or "idle"
        if client["holds_lock"]:
            state += ", holds the commit lock"
        elif client["waiting_for_lock"]:
            state = "waiting for the commit lock"
        lines.append(
            f"    {client['label']}  {client['access']}  since "
            f"{clock(client['connected_at'])}  loads {client['loads']}  "
            f"commits {client['commits']}  {state}"
        )
    if storage["slowest_commits"]:
        lines.append("  slowest recent commits:")
    for entry in storage["slowest_commits"]:
        lines.append(
            f"    {clock(entry['finished_at'])}  {entry['client']}  "
            f"{entry['objects']} objects, {size(entry['bytes'])}: held "
            f"{duration(entry['hold'])} (waited {duration(entry['wait'])}, "
            f"vote {duration(entry['vote'])}, finish {duration(entry['finish'])})"
        )
    return lines


def format_probe(answer: dict[str, Any]) -> str:
    """A ``ruok`` answer (ZEO's keys) as lines for a terminal."""
    lines = []
    for name, status in answer.items():
        lines.append(f"storage {name!r}:")
        lines.extend(f"  {key}: {value}" for key, value in status.items())
    return "\n".join(lines) + "\n"
