"""Run a server: listen, serve until told to stop, shut down cleanly.

``serve`` is the coroutine; ``run`` wraps it for a process (signals, pid
file, uvloop when installed) and ``ServerThread`` (in ``thread``) for tests
and embedding.

Shutdown, whatever triggers it: stop listening; let every transaction that
is voting or finishing in a storage thread complete; close every client
connection (which aborts the transactions that were still open); close the
storages in a thread (FileStorage saves its index).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from ..addresses import Address
from ..exit_codes import EXIT_OK, EXIT_RESTART
from .memory import TrimTimer, tune_malloc
from .monitor import Monitor
from .settings import ServerSettings
from .storage_api import ServedStorage
from .storage_server import StorageServer
from .tls_accept import TLSAcceptor, TLSListener
from .transport import ServerProtocol

logger = logging.getLogger(__name__)

#: How long shutdown waits for transactions in vote/finish to complete.
SHUTDOWN_GRACE = 30.0


async def serve(
    settings: ServerSettings,
    storages: Mapping[str, ServedStorage],
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Address], None] | None = None,
    reload: asyncio.Event | None = None,
    monitor: Monitor | None = None,
) -> None:
    """Serve ``storages`` until ``stop`` is set (or forever).

    Setting ``reload`` reads the TLS certificate, key and CAs again (for
    new connections; established ones keep theirs) and the access rules.
    ``monitor`` (started and closed by the caller, which can start it
    before opening the storages) is told when the server serves and when it
    begins to shut down.
    """
    loop = asyncio.get_running_loop()
    server = StorageServer(storages, settings)
    connections: set[ServerProtocol] = set()
    address = settings.address
    listener: asyncio.AbstractServer | None = None

    def protocol() -> ServerProtocol:
        return ServerProtocol(server, connections)

    factory: Callable[[], asyncio.Protocol] = protocol
    tls: TLSListener | None = None
    if settings.tls is not None:
        tls = TLSListener(settings.tls, settings.tls_handshake_timeout)

        def factory() -> asyncio.Protocol:
            assert tls is not None
            return TLSAcceptor(tls, protocol, server.tasks, server.traffic)

    try:
        server.attach(loop)
        if reload is not None:
            server.tasks.spawn(_reload_on_request(reload, server, tls), service=True)
        bound: Address
        if isinstance(address, str):
            _remove_stale_socket(address)
            listener = await loop.create_unix_server(factory, address)
            bound = address
        else:
            host, port = address
            listener = await loop.create_server(factory, host, port, reuse_address=True)
            bound = listener.sockets[0].getsockname()[:2]
        logger.info("listening on %s, storages %s", bound, ", ".join(server.hosted))
        server.replication.start(bound)
        if monitor is not None:
            monitor.attach(server, loop)
        if ready is not None:
            ready(bound)
        await (stop or asyncio.Event()).wait()
    finally:
        logger.info("shutting down")
        if monitor is not None:
            monitor.stopping()
        if listener is not None:
            listener.close()
            if isinstance(address, str):
                with contextlib.suppress(OSError):
                    os.unlink(address)
        await _drain(server, connections)
        await server.tasks.run_in_thread(server.close_storages)
        await server.tasks.close()
        if monitor is not None:
            monitor.detach()
        logger.info("shut down")


async def _reload_on_request(
    reload: asyncio.Event, server: StorageServer, tls: TLSListener | None
) -> None:
    """Reload what can change without a restart, whenever asked: the TLS
    certificates and the access rules."""
    while True:
        await reload.wait()
        reload.clear()
        logger.info("reload requested")
        if tls is not None:
            tls.reload()
        server.reload_access()


async def _drain(server: StorageServer, connections: set[ServerProtocol]) -> None:
    """Let voting and finishing transactions end, then drop every client."""
    await _wait_for_storage_calls(server)
    lost = [connection.lost for connection in connections]
    for connection in list(connections):
        connection.close()
    if lost:
        await asyncio.wait(lost, timeout=SHUTDOWN_GRACE)
    # Closing connections aborted their transactions in the storage threads.
    await _wait_for_storage_calls(server)


async def _wait_for_storage_calls(server: StorageServer) -> None:
    running = [f for hosted in server.hosted.values() for f in hosted.running]
    running.extend(server.tasks.running())
    if running:
        await asyncio.wait(running, timeout=SHUTDOWN_GRACE)


def _remove_stale_socket(path: str) -> None:
    """Remove a Unix socket left by a server that died, but not a live one."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise OSError(f"another server is listening on {path}")
    finally:
        probe.close()


def run(
    settings: ServerSettings,
    storages: Mapping[str, ServedStorage],
    *,
    reopen_logs: Callable[[], None] | None = None,
    ready: Callable[[Address], None] | None = None,
    monitor: Monitor | None = None,
) -> int:
    """Run a server process until a signal; return its exit code.

    SIGTERM and SIGINT stop it (exit 0), SIGHUP stops it with exit 1 so that
    a supervisor restarts it, SIGUSR2 reopens the log files, SIGUSR1 reloads
    the TLS certificates and the access rules.
    """
    outcome = {"code": EXIT_OK}
    tune_malloc()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def request_stop(code: int) -> None:
            outcome["code"] = code
            stop.set()

        trimmer = TrimTimer(loop)
        loop.add_signal_handler(signal.SIGTERM, request_stop, EXIT_OK)
        loop.add_signal_handler(signal.SIGINT, request_stop, EXIT_OK)
        loop.add_signal_handler(signal.SIGHUP, request_stop, EXIT_RESTART)
        reload = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, reload.set)
        if reopen_logs is not None:
            loop.add_signal_handler(signal.SIGUSR2, reopen_logs)

        def started(bound: Address) -> None:
            if settings.pid_filename and not settings.read_only:
                _write_pid_file(settings.pid_filename)
            if ready is not None:
                ready(bound)

        try:
            await serve(
                settings,
                storages,
                stop=stop,
                ready=started,
                reload=reload,
                monitor=monitor,
            )
        finally:
            trimmer.cancel()
            if settings.pid_filename and not settings.read_only:
                with contextlib.suppress(OSError):
                    os.unlink(settings.pid_filename)

    _event_loop_runner(settings)(main())
    return outcome["code"]


def _write_pid_file(path: str) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as stream:
        stream.write(f"{os.getpid()}\n")
    os.replace(temporary, path)


def _event_loop_runner(
    settings: ServerSettings,
) -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's runner when it is installed, asyncio's otherwise -- and
    asyncio's for a TLS server: uvloop's ``start_tls`` can hand the first
    bytes of a client's handshake to the protocol it replaces, and the
    handshake then never completes (uvloop issue 707)."""
    if settings.tls is not None:
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
