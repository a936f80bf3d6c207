"""The monitor: HTTP for Prometheus, people, and orchestrators.

With ``monitor-address`` set, the server answers HTTP there:

- ``/metrics``: the Prometheus text format (``metrics``);
- ``/``: a status page that refreshes itself (``status_page``);
- ``/status.json``: what the page shows, as JSON (``snapshot``);
- ``/live``: 200 while the process is up and its event loop answers;
- ``/ready``: 200 while the storages are open and the listener is up,
  503 before (while storages open) and once shutdown has begun.

The monitor owns its HTTP server (waitress, in a thread of its own, so a
slow scraper never delays a client) and its readiness.  It starts before
the storages are opened, so ``/ready`` can say "not yet"; ``serve`` then
``attach``-es the running server and calls ``stopping`` when it shuts
down.  The request threads never touch the server's objects: they ask the
event loop for a snapshot and wait for it (at most ``LOOP_TIMEOUT``).
Blob directory sizes are measured here, in the request thread, at most
once per ``blob_size_interval`` (a walk of the directory tree).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import waitress
from waitress import wasyncore

from ..addresses import Address, format_address
from .metrics import exposition
from .snapshot import ServerSnapshot, take
from .status_page import render
from .storage_server import StorageServer

logger = logging.getLogger(__name__)

#: Seconds a request waits for the event loop before it answers 503.
LOOP_TIMEOUT = 5.0
#: Seconds a measured blob directory size is reused.
BLOB_SIZE_INTERVAL = 60.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class MonitorState(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "shutting down"


class LoopUnresponsiveError(Exception):
    """The event loop did not answer in time (or is gone)."""


class Monitor:
    """The HTTP monitor of one server process."""

    def __init__(
        self, address: Address, *, blob_size_interval: float = BLOB_SIZE_INTERVAL
    ) -> None:
        self.requested_address = address
        self.address: Address | None = None
        #: Guards ``_state`` and ``_source``, set by the loop, read by requests.
        self._lock = threading.Lock()
        self._state = MonitorState.STARTING
        self._source: tuple[StorageServer, asyncio.AbstractEventLoop] | None = None
        self._blob_sizes = _DirectorySizes(blob_size_interval)
        self._http: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle (called by the process that runs the server) ------------

    def start(self) -> Address:
        """Listen and answer in a background thread; return the address."""
        address = self.requested_address
        if isinstance(address, str):
            options: dict[str, Any] = {"unix_socket": address}
        else:
            options = {"host": address[0], "port": address[1]}
        self._http = waitress.create_server(
            self._application,
            threads=2,
            ident="zodbserver monitor",
            **options,
        )
        if isinstance(address, str):
            self.address = address
        else:
            self.address = (
                self._http.effective_host,
                int(self._http.effective_port),
            )
        self._thread = threading.Thread(
            target=self._http.run, name="zodbserver monitor", daemon=True
        )
        self._thread.start()
        logger.info("monitor listening on http://%s/", format_address(self.address))
        return self.address

    def attach(self, server: StorageServer, loop: asyncio.AbstractEventLoop) -> None:
        """The server serves: report it (on its event loop)."""
        with self._lock:
            self._source = (server, loop)
            self._state = MonitorState.SERVING

    def stopping(self) -> None:
        """Shutdown has begun: no longer ready (still answering)."""
        with self._lock:
            self._state = MonitorState.STOPPING

    def detach(self) -> None:
        """The server's loop is ending: stop asking it."""
        with self._lock:
            self._source = None
            self._state = MonitorState.STOPPING

    def close(self) -> None:
        """Stop answering and wait for the HTTP thread."""
        http, self._http = self._http, None
        if http is None:
            return
        http.trigger.pull_trigger(lambda: wasyncore.close_all(http._map))
        if self._thread is not None:
            self._thread.join(LOOP_TIMEOUT)
        http.task_dispatcher.shutdown()
        if isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)

    # -- answering (request threads) ---------------------------------------

    def snapshot(self) -> ServerSnapshot | None:
        """The server's state, taken on its loop; None before it serves."""
        with self._lock:
            source = self._source
        if source is None:
            return None
        server, loop = source
        future: concurrent.futures.Future[ServerSnapshot] = concurrent.futures.Future()

        def take_snapshot() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(take(server))
                except BaseException as error:
                    future.set_exception(error)

        try:
            loop.call_soon_threadsafe(take_snapshot)
            return future.result(LOOP_TIMEOUT)
        except RuntimeError as error:  # the loop has closed
            raise LoopUnresponsiveError(
                "the server's event loop has stopped"
            ) from error
        except TimeoutError as error:
            future.cancel()
            raise LoopUnresponsiveError(
                f"the server's event loop did not answer within {LOOP_TIMEOUT:g} s"
            ) from error

    def _application(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        if method not in ("GET", "HEAD"):
            return _answer(
                start_response,
                "405 Method Not Allowed",
                "text/plain",
                b"only GET and HEAD\n",
                [("Allow", "GET, HEAD")],
            )
        route = ROUTES.get(path)
        if route is None:
            return _answer(
                start_response,
                "404 Not Found",
                "text/plain",
                b"not found: try /, /metrics, /status.json, /live, /ready\n",
            )
        try:
            status, content_type, body = route(self)
        except LoopUnresponsiveError as error:
            logger.warning("monitor: %s %s: %s", method, path, error)
            status, content_type = "503 Service Unavailable", "text/plain"
            body = f"{error}\n".encode()
        if method == "HEAD":
            body = b""
        return _answer(start_response, status, content_type, body)

    def _state_now(self) -> MonitorState:
        with self._lock:
            return self._state

    def _metrics(self) -> tuple[str, str, bytes]:
        snapshot = self.snapshot()
        ready = self._state_now() is MonitorState.SERVING and snapshot is not None
        body = exposition(snapshot, self._blob_sizes.of(snapshot), ready=ready)
        return "200 OK", "text/plain; version=0.0.4; charset=utf-8", body

    def _page(self) -> tuple[str, str, bytes]:
        snapshot = self.snapshot()
        state = self._state_now()
        page = render(snapshot, self._blob_sizes.of(snapshot), state=state.value)
        status = "200 OK" if snapshot is not None else "503 Service Unavailable"
        return status, "text/html; charset=utf-8", page.encode()

    def _status_json(self) -> tuple[str, str, bytes]:
        snapshot = self.snapshot()
        state = self._state_now()
        document: dict[str, Any] = {"state": state.value}
        if snapshot is not None:
            document.update(snapshot)
            sizes = self._blob_sizes.of(snapshot)
            for storage in document["storages"]:
                storage["blob_directory_size"] = sizes.get(storage["blob_directory"])
        status = "200 OK" if snapshot is not None else "503 Service Unavailable"
        return status, "application/json", json.dumps(document, indent=1).encode()

    def _live(self) -> tuple[str, str, bytes]:
        self.snapshot()  # raises LoopUnresponsiveError (503) when the loop hangs
        return "200 OK", "text/plain", b"alive\n"

    def _ready(self) -> tuple[str, str, bytes]:
        state = self._state_now()
        if state is MonitorState.SERVING:
            self.snapshot()
            return "200 OK", "text/plain", b"ready\n"
        return "503 Service Unavailable", "text/plain", f"{state.value}\n".encode()


ROUTES: dict[str, Callable[[Monitor], tuple[str, str, bytes]]] = {
    "/": Monitor._page,
    "/metrics": Monitor._metrics,
    "/status.json": Monitor._status_json,
    "/live": Monitor._live,
    "/ready": Monitor._ready,
}


def _answer(
    start_response: StartResponse,
    status: str,
    content_type: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *(headers or []),
        ],
    )
    return [body]


class _DirectorySizes:
    """Bytes in each blob directory, measured at most once an interval."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._measured: dict[str, tuple[float, int]] = {}

    def of(self, snapshot: ServerSnapshot | None) -> dict[str, int]:
        if snapshot is None:
            return {}
        sizes = {}
        for storage in snapshot["storages"]:
            directory = storage["blob_directory"]
            if directory is not None:
                sizes[directory] = self._size(directory)
        return sizes

    def _size(self, directory: str) -> int:
        with self._lock:
            now = time.monotonic()
            measured = self._measured.get(directory)
            if measured is None or now - measured[0] >= self._interval:
                measured = (now, _tree_size(directory))
                self._measured[directory] = measured
            return measured[1]


def _tree_size(directory: str) -> int:
    total = 0
    pending = [directory]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue  # removed while we looked (pack, abort)
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total
