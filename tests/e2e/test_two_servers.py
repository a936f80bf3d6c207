"""Two servers in one process: each owns its tasks and worker threads, so
each shuts down promptly whatever the other is doing."""

from __future__ import annotations

import threading
import time
from typing import Any

from ZODB.MappingStorage import MappingStorage

import zodbserver
from zodbserver.server.thread import ServerThread

PROMPTLY = 10.0


class SlowPackStorage(MappingStorage):
    """A MappingStorage whose pack runs until the test lets it end."""

    def __init__(self) -> None:
        super().__init__()
        self.packing = threading.Event()
        self.release = threading.Event()
        self.packed = threading.Event()

    def pack(self, t: float, referencesf: Any, gc: bool = True) -> None:
        self.packing.set()
        assert self.release.wait(60), "the test never released the pack"
        super().pack(t, referencesf, gc)
        self.packed.set()


def test_a_server_stops_while_another_is_busy_packing() -> None:
    busy = SlowPackStorage()
    first = ServerThread({"1": busy})
    second = ServerThread({"1": MappingStorage()})
    first_address = first.start()
    second_address = second.start()
    try:
        client = zodbserver.ClientStorage(first_address, wait_timeout=PROMPTLY)
        try:
            client.pack(time.time(), None, wait=False)
            assert busy.packing.wait(PROMPTLY)
        finally:
            client.close()
        # The first server's pack is still running in its worker thread.
        other = zodbserver.ClientStorage(second_address, wait_timeout=PROMPTLY)
        other.close()
        started = time.monotonic()
        second.stop(timeout=PROMPTLY)
        assert time.monotonic() - started < PROMPTLY / 2
    finally:
        busy.release.set()
        first.stop()
        second.stop()
    # The first server finished the pack it owed before it shut down.
    assert busy.packed.is_set()
