"""One call to a server, for servers and commands that ask one thing.

``call_once`` connects, answers the handshake, makes one call allowed
before ``register`` (``replication_status``, ``promote``), returns its
result and closes.  A server fencing itself asks its former replicas with
it; ``zeoserver promote`` and ``rejoin`` use it through ``call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from .addresses import Address, format_address
from .errors import RemoteProtocolError, ZodbServerError
from .protocol import ClientConnection, ErrorReply, Handshake, Reply


class CallFailedError(ZodbServerError):
    """The server could not be reached, or refused the call."""


async def call_once(
    address: Address,
    method: str,
    *args: Any,
    tls: ssl.SSLContext | None = None,
    seconds: float = 10.0,
) -> Any:
    """``method(*args)``'s result; ``CallFailedError`` when the server is
    not reached in ``seconds`` or refuses."""
    where = format_address(address)
    try:
        return await asyncio.wait_for(_call(address, method, args, tls), seconds)
    except TimeoutError:
        raise CallFailedError(
            f"{where} did not answer {method}() in {seconds:g} s"
        ) from None
    except (OSError, EOFError, RemoteProtocolError) as error:
        raise CallFailedError(f"{where}: {method}() failed: {error}") from None


async def _call(
    address: Address, method: str, args: tuple[Any, ...], tls: ssl.SSLContext | None
) -> Any:
    if isinstance(address, str):
        reader, writer = await asyncio.open_unix_connection(address, ssl=tls)
    else:
        reader, writer = await asyncio.open_connection(*address, ssl=tls)
    connection = ClientConnection()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                raise EOFError("the server closed the connection")
            for event in connection.receive_data(data):
                if isinstance(event, Handshake):
                    writer.write(connection.handshake())
                    writer.write(connection.call(1, method, args))
                elif isinstance(event, Reply) and event.msgid == 1:
                    return event.result
                elif isinstance(event, ErrorReply) and event.msgid == 1:
                    raise CallFailedError(
                        f"{format_address(address)} refused {method}(): "
                        f"{event.class_name}: {_message(event.payload)}"
                    )
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _message(payload: object) -> str:
    if isinstance(payload, tuple | list) and len(payload) == 1:
        return str(payload[0])
    return repr(payload)[:300]


def call(address: Address, method: str, *args: Any, seconds: float = 10.0) -> Any:
    """``call_once`` from synchronous code (the command line)."""
    return asyncio.run(call_once(address, method, *args, seconds=seconds))
