"""A raw client: a socket driven through our sans-IO ``ClientConnection``,
for tests that speak the wire protocol by hand (and misbehave on it)."""

from __future__ import annotations

import socket
import time
from typing import Any

from zodbserver.protocol import (
    AsyncCall,
    ClientConnection,
    Handshake,
    Reply,
    encode_frame,
)

#: How long anything that should be prompt may take on a loaded machine.
PROMPTLY = 10.0


class RawClient:
    """A socket driven through our sans-IO ``ClientConnection``.

    ``answer`` overrides the handshake answer (``b"Z5"`` speaks pickle to a
    msgpack server; ``None`` echoes the server's letter); ``timeout`` bounds
    every wait on the socket.
    """

    def __init__(
        self,
        address: Any,
        *,
        answer: bytes | None = None,
        handshake: bool = True,
        timeout: float = PROMPTLY,
    ) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.connection = ClientConnection()
        self.events: list[Any] = []
        self.async_calls: list[AsyncCall] = []
        self._msgid = 0
        try:
            self.greeting = self._recv_exact(6)
            if handshake:
                frame = encode_frame(answer) if answer else self.greeting
                events = self.connection.receive_data(frame)
                assert isinstance(events[0], Handshake), events
                self.sock.sendall(self.connection.handshake())
        except BaseException:
            self.sock.close()
            raise

    def _recv_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the server closed before its greeting"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_frame(self, payload: bytes) -> None:
        self.sock.sendall(encode_frame(payload))

    def next_event(self) -> Any:
        """The next reply or error reply; ``None`` once the server closed.

        Async calls from the server (invalidations, info) are collected in
        ``async_calls`` on the way.
        """
        while True:
            while self.events:
                event = self.events.pop(0)
                if isinstance(event, AsyncCall):
                    self.async_calls.append(event)
                else:
                    return event
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.events.extend(self.connection.receive_data(data))

    def send_call(self, method: str, *args: Any) -> int:
        self._msgid += 1
        self.sock.sendall(self.connection.call(self._msgid, method, args))
        return self._msgid

    def async_call(self, method: str, timeout: float = 10.0) -> AsyncCall:
        """The first async call ``method`` the server sent, read for if
        need be (replies read meanwhile stay in ``events``)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in list(self.events):
                if isinstance(event, AsyncCall):
                    self.events.remove(event)
                    self.async_calls.append(event)
            for call in self.async_calls:
                if call.method == method:
                    return call
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {method}() from the server in {timeout} s"
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            assert data, f"the server closed the connection before {method}()"
            self.events.extend(self.connection.receive_data(data))

    def call(self, method: str, *args: Any) -> Any:
        msgid = self.send_call(method, *args)
        event = self.next_event()
        if event is not None:
            assert event.msgid == msgid, event
        return event

    def result(self, method: str, *args: Any) -> Any:
        """Call and insist on a successful reply."""
        event = self.call(method, *args)
        assert isinstance(event, Reply), (method, event)
        return event.result

    def call_async(self, method: str, *args: Any) -> None:
        self.sock.sendall(self.connection.call_async(method, args))

    def closed_by_server(self) -> bool:
        """Read until the server closes; False if it did not within PROMPTLY.

        Any events received meanwhile are discarded.
        """
        deadline = time.monotonic() + PROMPTLY
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                return False
            if not data:
                return True
        return False
