"""A server running on its own event loop in a background thread.

For tests and for applications that embed a server::

    with ServerThread({"1": storage}) as address:
        ...   # connect clients to address

The storages are closed when the server stops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..addresses import DEFAULT_HOST, Address
from .main import serve
from .monitor import Monitor
from .settings import ServerSettings
from .storage_api import ServedStorage

T = TypeVar("T")


class ServerThread:
    def __init__(
        self,
        storages: Mapping[str, ServedStorage],
        settings: ServerSettings | None = None,
        *,
        monitor: Monitor | None = None,
        **options: Any,
    ) -> None:
        """``monitor``: one the caller has started (and closes); without
        it, a ``monitor_address`` in the settings gets one of the thread's
        own, started and closed with the server."""
        if settings is None:
            options.setdefault("address", (DEFAULT_HOST, 0))
            settings = ServerSettings(**options)
        elif options:
            raise TypeError("give settings or keyword options, not both")
        self.settings = settings
        self.storages = storages
        self.monitor = monitor
        self._own_monitor: Monitor | None = None
        if monitor is None and settings.monitor_address is not None:
            self.monitor = self._own_monitor = Monitor(settings.monitor_address)
        self.address: Address | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._reload: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="zodbserver", daemon=True
        )

    def start(self, timeout: float = 30.0) -> Address:
        if self._own_monitor is not None:
            self._own_monitor.start()
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the server did not start")
        if self._error is not None:
            raise self._error
        assert self.address is not None
        return self.address

    def stop(self, timeout: float = 60.0) -> None:
        if (
            self._loop is not None
            and self._stop is not None
            and self._thread.is_alive()
        ):
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the server did not stop")
        if self._own_monitor is not None:
            self._own_monitor.close()

    def reload(self) -> None:
        """What SIGUSR1 does to a server process: reload its TLS
        certificates and its access rules."""
        assert self._loop is not None
        assert self._reload is not None
        self._loop.call_soon_threadsafe(self._reload.set)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the server's loop and return its result."""
        assert self._loop is not None

        async def wrapper() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(30)

    def __enter__(self) -> Address:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._reload = asyncio.Event()

            def ready(address: Address) -> None:
                self.address = address
                self._ready.set()

            await serve(
                self.settings,
                self.storages,
                stop=self._stop,
                ready=ready,
                reload=self._reload,
                monitor=self.monitor,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()
