"""``StorageThread``: the one thread that runs a storage's commit calls.

Vote (with its fsync), finish and abort of one storage run here, one at a
time, in the order they were submitted, so the event loop never waits for
the disk and a call never sees the storage before the one submitted ahead
of it has ended.  The ``HostedStorage`` of that storage owns the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ZODB.POSException import StorageError

T = TypeVar("T")

#: A queued call: the loop and future its outcome goes to, what to call.
_Call = tuple[
    asyncio.AbstractEventLoop,
    asyncio.Future[Any],
    Callable[..., Any],
    tuple[Any, ...],
]


class StorageThread:
    """One thread that runs a storage's transaction calls, one at a time.

    Cheaper than an executor for the two calls every commit makes (vote,
    finish): a call is one queue put, and its result one
    ``call_soon_threadsafe`` back to the loop that sets an asyncio future --
    no concurrent future, no chained callbacks.  The thread starts with the
    first call, so a server that never commits never pays for it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        #: Calls to run, then None to end the thread.
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        function: Callable[..., T],
        args: tuple[Any, ...],
    ) -> asyncio.Future[T]:
        """Queue ``function(*args)``; its outcome completes the future.
        ``StorageError`` once the thread was shut down."""
        if self._closed:
            raise StorageError(f"{self.name} is closed")
        if self._thread is None:
            # A daemon: an interpreter exiting without ``shutdown`` (an
            # embedding that never stopped its server) must not hang on it.
            self._thread = threading.Thread(
                target=self._run, name=self.name, daemon=True
            )
            self._thread.start()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, function, args))
        return future

    def shutdown(self) -> None:
        """Run what is queued, then end the thread (blocking); refuse
        calls from then on."""
        self._closed = True
        if self._thread is not None:
            self._calls.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        calls = self._calls
        while (call := calls.get()) is not None:
            loop, future, function, args = call
            complete: Callable[[asyncio.Future[Any], Any], None]
            try:
                outcome = function(*args)
            except BaseException as exc:  # handed to whoever awaits the future
                if isinstance(exc, StopIteration):  # futures refuse it
                    exc = RuntimeError(f"{function!r} raised StopIteration")
                complete, outcome = _set_exception, exc
            else:
                complete = _set_result
            # A closed loop raises RuntimeError: nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(complete, future, outcome)
            del call, future, outcome, args


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
