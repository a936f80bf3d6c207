"""Calling a session's methods as the transport does, for tests that drive
sessions without a connection: the call runs at once, and what it returns
to be answered later (a ``Later``, or a coroutine of an ``async`` method)
is awaited."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from zodbserver.server.tasks import Later


async def settle(result: Any) -> Any:
    """The answer to a call that returned ``result``."""
    if isinstance(result, Later):
        return await result.result()
    if inspect.isawaitable(result):
        return await result
    return result


async def failed(error: Exception) -> Any:
    raise error


def call_now(function: Callable[..., Any], *args: Any) -> Any:
    """Run the call now; an awaitable of its answer (or of its error)."""
    try:
        result = function(*args)
    except Exception as error:
        return failed(error)
    return settle(result)


async def answer(function: Callable[..., Any], *args: Any) -> Any:
    """Call and wait for the answer."""
    return await call_now(function, *args)
