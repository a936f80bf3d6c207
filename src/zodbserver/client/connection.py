"""The connection thread: one event loop, reached from any application thread.

``ClientThread`` starts a daemon thread running an asyncio loop (uvloop's
when it is importable) and the ``ConnectionManager`` on it.  Application
threads never touch the loop's objects directly: synchronous calls cross
with ``call_soon_threadsafe`` (``wait_for``: a function run on the loop
returns what to wait for, and the application thread waits on a plain lock)
or as coroutines with ``run_coroutine_threadsafe`` (``run``); asynchronous
calls are queued with ``call_soon_threadsafe`` and tagged with the
connection generation they were meant for.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .exceptions import ClientDisconnected
from .manager import ConnectionManager

logger = logging.getLogger(__name__)

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class ClientThread:
    """A loop thread that owns one ``ConnectionManager``."""

    def __init__(
        self, make_manager: Callable[[], ConnectionManager], name: str
    ) -> None:
        self._loop = new_event_loop()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"{name} connection thread", daemon=True
        )
        started = threading.Event()
        self._loop.call_soon(started.set)
        self._thread.start()
        started.wait()
        self.manager: ConnectionManager = self.run(self._start(make_manager))

    @staticmethod
    async def _start(
        make_manager: Callable[[], ConnectionManager],
    ) -> ConnectionManager:
        manager = make_manager()
        manager.start()
        return manager

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(
                    asyncio.gather(*pending, return_exceptions=True)
                )
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    @property
    def is_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop and wait for its result."""
        if self._closed:
            coroutine.close()
            raise ClientDisconnected("the client storage is closed")
        if self.is_loop_thread:
            coroutine.close()
            raise RuntimeError("a blocking storage call from the connection thread")
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError as exc:  # the loop closed since we looked
            coroutine.close()
            raise ClientDisconnected("the client storage is closed") from exc
        try:
            return future.result(timeout)
        finally:
            del future  # the future holds the traceback, which holds us

    def wait_for(
        self,
        start: Callable[..., Awaitable[Any] | Any],
        *args: Any,
        timeout: float | None = None,
    ) -> Any:
        """Run ``start(*args)`` on the loop and wait for what it returns.

        ``start`` returns a future or coroutine to wait for, or the result
        itself.  This is the cheap crossing for the hot paths (loads, vote,
        finish): one ``call_soon_threadsafe`` there and a lock released on
        the way back, with no task or chained future when ``start`` returns
        a future.
        """
        if self.is_loop_thread:
            raise RuntimeError("a blocking storage call from the connection thread")
        done = threading.Lock()
        done.acquire()
        outcome: list[Any] = []

        def settle(result: Any, error: BaseException | None) -> None:
            outcome.extend((result, error))
            done.release()

        def finished(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                settle(None, ClientDisconnected("the call was cancelled"))
            else:
                error = future.exception()
                settle(None if error else future.result(), error)

        def begin() -> None:
            try:
                pending = start(*args)
                if not inspect.isawaitable(pending):
                    settle(pending, None)
                    return
                asyncio.ensure_future(pending).add_done_callback(finished)
            except BaseException as exc:
                settle(None, exc)

        self.call_soon(begin)
        if not done.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"no answer within {timeout} seconds")
        result, error = outcome
        if error is not None:
            try:
                raise error
            finally:
                del error, outcome  # the traceback would hold this frame
        return result

    def call_soon(self, function: Callable[..., object], *args: Any) -> None:
        if self._closed:
            raise ClientDisconnected("the client storage is closed")
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError as exc:  # the loop closed since we looked
            raise ClientDisconnected("the client storage is closed") from exc

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            try:
                self.run(self.manager.close(), timeout=30)
            except Exception:
                logger.exception("closing the connection failed")
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
