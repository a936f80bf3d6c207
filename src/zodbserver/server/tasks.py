"""The owner of one server's background tasks and worker threads.

Each ``StorageServer`` -- one per ``serve()`` -- has one ``ServerTasks``.
It starts and tracks every coroutine the server runs on its own: a reply
that has to wait (a vote queued for the commit lock, a pack, an iterator
step), a pack the client does not wait for, the abort of a transaction
whose client went away, a TLS handshake, the reload watcher.  Shutdown
waits for the work (``running``) but not for replies, which may wait for
the very clients it drops, nor for the services, and at the end cancels
what is left (``close``): two servers in one process never wait on,
or cancel, each other's tasks.

Storage calls that may block but do not belong to a commit -- pack, undo
logs, iteration, invalidation scans, blob reads that miss the page cache,
reads while the storage's thread is writing (``Later``), closing the
storages -- run in the server's own pool of at most
``max_threads`` worker threads (``run_in_thread``), so a client that asks
for much of that work queues behind others instead of multiplying threads.
Vote, finish and abort never go there: each hosted storage runs them in its
own ``StorageThread``, in order.

Everything here is called on the server's event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Worker threads per server for pack, undo logs, iteration and blob reads.
DEFAULT_WORKER_THREADS = 8
#: The most ``worker-threads`` may ask for.
MAX_WORKER_THREADS = 64


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Log what a task raised that no one awaits (a pack the client did not
    wait for, say) -- once, here, instead of asyncio's "never retrieved"."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error(
            "background task %s failed: %r",
            task.get_coro().__qualname__,  # type: ignore[union-attr]
            error,
            exc_info=error,
        )


class Later(Generic[T]):
    """A synchronous method's answer, to come.  The method does at once
    what must happen in the order the calls arrived (check its arguments
    against the session's state, change that state) and returns one of
    these instead of a result for what has to wait (the commit lock, a
    worker thread); the transport replies once ``result`` is done."""

    __slots__ = ("_pending",)

    def __init__(self, pending: Coroutine[Any, Any, T]) -> None:
        self._pending = pending

    async def result(self) -> T:
        return await self._pending


class ServerTasks:
    def __init__(self, max_threads: int = DEFAULT_WORKER_THREADS) -> None:
        #: Work the server owes before it drops its clients (a pack, an abort).
        self._work: set[asyncio.Task[Any]] = set()
        #: Replies that wait; they may wait for clients shutdown drops.
        self._replies: set[asyncio.Task[Any]] = set()
        #: Tasks that serve as long as the server does (a TLS handshake, the
        #: reload watcher): shutdown does not wait for them.
        self._services: set[asyncio.Task[Any]] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="zodbserver worker"
        )

    def spawn(
        self,
        coroutine: Coroutine[Any, Any, T],
        *,
        reply: bool = False,
        service: bool = False,
    ) -> asyncio.Task[T]:
        """Start ``coroutine`` as a task of this server; ``reply``: it
        answers a call, ``service``: it serves until the server stops --
        shutdown waits for neither."""
        task = asyncio.get_running_loop().create_task(coroutine)
        tasks = self._replies if reply else self._services if service else self._work
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def run_in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in one of this server's worker threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(function, *args)
        )

    def running(self) -> set[asyncio.Task[Any]]:
        """The work (not the replies) running now: shutdown waits for it."""
        return set(self._work)

    async def close(self) -> None:
        """Cancel the tasks still running and end the worker threads (a
        thread busy in a storage call ends when the call returns)."""
        tasks = self._work | self._replies | self._services
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._executor.shutdown(wait=False, cancel_futures=True)
