"""The floor under the scaling workloads: a server that does nothing.

``python -m bench.echo serve`` listens on 127.0.0.1 (a free port, printed
as ``READY PORT``) with uvloop, as both real servers do, and answers
length-prefixed frames (4 bytes, big-endian) at once:

* ``L`` + anything: a reply of ``RECORD_BYTES`` (a ``loadBefore`` answer
  for a ~570-byte record);
* ``C`` + an 8-byte number: that number, 9 bytes, sent first to every
  other connection (an invalidation) and then as the reply (the tid).

Its clients are the workers of ``bench.worker`` with the client kind
``echo``: ``commit``, ``listen`` and ``read`` behave as they do against a
real server, on a raw socket (``commit``, ``read``) or on one uvloop per
listener thread (``listen``: each listener sleeps in its own loop as a
``ClientStorage``'s connection thread does).  What they measure is what
the machine's kernel and an event loop cost per round trip and per
message, below any protocol, storage or cache.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from typing import Any

#: The size of a reply to ``L``: a loadBefore reply of a ~570-byte record.
RECORD_BYTES = 600
#: Seconds the floor's committer waits after each commit.
COMMIT_PAUSE = 0.0005


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


class Frames:
    """Whole payloads from a byte stream."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data
        payloads = []
        while len(buffer) >= 4:
            size = int.from_bytes(buffer[:4], "big")
            if len(buffer) < 4 + size:
                break
            payloads.append(buffer[4 : 4 + size])
            buffer = buffer[4 + size :]
        self._buffer = buffer
        return payloads


class EchoProtocol(asyncio.Protocol):
    def __init__(self, peers: set[EchoProtocol]) -> None:
        self._peers = peers
        self._frames = Frames()
        self._transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._peers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._peers.discard(self)

    def data_received(self, data: bytes) -> None:
        for payload in self._frames.feed(data):
            if payload[:1] == b"C":
                message = frame(b"I" + payload[1:9])
                for peer in self._peers:
                    if peer is not self:
                        peer._transport.write(message)
                self._transport.write(frame(b"T" + payload[1:9]))
            else:
                self._transport.write(frame(b"R" * RECORD_BYTES))


def serve() -> None:
    import uvloop

    async def main() -> None:
        peers: set[EchoProtocol] = set()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: EchoProtocol(peers), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        server.close()

    uvloop.run(main())


# -- the clients (used by bench.worker) ---------------------------------------


class Client:
    """A blocking request/reply client on a raw socket."""

    def __init__(self, address: Any) -> None:
        self._socket = socket.create_connection(tuple(address))
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._frames = Frames()
        self._ready: list[bytes] = []

    def call(self, payload: bytes) -> bytes:
        self._socket.sendall(frame(payload))
        while not self._ready:
            data = self._socket.recv(1 << 16)
            if not data:
                raise ConnectionError("the echo server closed the connection")
            self._ready += self._frames.feed(data)
        return self._ready.pop(0)

    def close(self) -> None:
        self._socket.close()


class _ListenerProtocol(asyncio.Protocol):
    def __init__(self, seen: list[int]) -> None:
        self._seen = seen
        self._frames = Frames()

    def data_received(self, data: bytes) -> None:
        for payload in self._frames.feed(data):
            self._seen[0] = int.from_bytes(payload[1:9], "big")


class Listener:
    """One thread with its own uvloop and connection, noting the last
    number broadcast to it."""

    def __init__(self, address: Any) -> None:
        import uvloop

        self.seen = [0]
        self._loop = uvloop.new_event_loop()
        connected = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(
                self._loop.create_connection(
                    lambda: _ListenerProtocol(self.seen), *address
                )
            )
            connected.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        connected.wait(30)

    def lastTransaction(self) -> bytes:  # the name a storage's has
        return self.seen[0].to_bytes(8, "big")


def commit_loop(address: Any, duration: float) -> dict[str, Any]:
    """Commit for ``duration`` seconds, pausing ``COMMIT_PAUSE`` after each
    (as a real commit waits for its fsync): the listeners fall asleep
    between two messages, as they do against a real server."""
    client = Client(address)
    number = 0
    latencies = []
    deadline = time.perf_counter() + duration
    while (start := time.perf_counter()) < deadline:
        number += 1
        client.call(b"C" + number.to_bytes(8, "big"))
        latencies.append(time.perf_counter() - start)
        time.sleep(COMMIT_PAUSE)
    client.close()
    return {"latencies": latencies, "last_tid": number.to_bytes(8, "big").hex()}


def read_loop(address: Any, count: int) -> dict[str, Any]:
    client = Client(address)
    latencies = []
    begin = time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        client.call(b"L")
        latencies.append(time.perf_counter() - start)
    end = time.perf_counter()
    client.close()
    return {"latencies": latencies, "start": begin, "end": end}


if __name__ == "__main__":
    serve()
