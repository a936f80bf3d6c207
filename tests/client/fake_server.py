"""A scripted ZEO-protocol server on a real socket, for what ZEO won't show.

It speaks through ``protocol.ServerConnection``, answers calls from a table
of handlers, and records every event, so tests can look at heartbeats,
msgids and misbehaving servers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

from ZODB.utils import z64

from zodbserver.protocol import AsyncCall, Call, Heartbeat, ServerConnection

Handler = Callable[..., Any]

INFO = {"length": 0, "size": 0, "name": "fake", "supportsUndo": False, "interfaces": ()}


class FakeServer:
    def __init__(self, announce: bytes = b"M5") -> None:
        self.announce = announce
        self.handlers: dict[str, Handler] = {
            "register": lambda storage, read_only: z64,
            "lastTransaction": lambda: z64,
            "get_info": lambda: INFO,
            "ping": lambda: None,
        }
        self.calls: list[Call] = []
        self.async_calls: list[AsyncCall] = []
        self.heartbeats = threading.Semaphore(0)
        self.connections = threading.Semaphore(0)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.addr = self._listener.getsockname()[:2]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._current: tuple[socket.socket, ServerConnection] | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(sock)
            threading.Thread(target=self._handle, args=(sock,), daemon=True).start()

    def _handle(self, sock: socket.socket) -> None:
        connection = ServerConnection(self.announce)
        with self._lock:
            self._current = (sock, connection)
            sock.sendall(connection.greeting())
        self.connections.release()
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                for event in connection.receive_data(data):
                    self._event(sock, connection, event)
        sock.close()

    def _event(
        self, sock: socket.socket, connection: ServerConnection, event: Any
    ) -> None:
        if isinstance(event, Heartbeat):
            self.heartbeats.release()
        elif isinstance(event, AsyncCall):
            self.async_calls.append(event)
        elif isinstance(event, Call):
            self.calls.append(event)
            try:
                reply = connection.reply(
                    event.msgid, self.handlers[event.method](*event.args)
                )
            except Exception as exc:
                reply = connection.error(event.msgid, exc)
            with self._lock:
                sock.sendall(reply)

    def push(self, method: str, *args: Any) -> None:
        """Send an async call to the connected client."""
        with self._lock:
            assert self._current is not None
            sock, connection = self._current
            sock.sendall(connection.call_async(method, args))

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
