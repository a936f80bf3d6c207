"""Accepting TLS clients: the handshake before the ZEO protocol starts.

A TLS server listens in plain TCP and upgrades each connection itself
(``loop.start_tls``) before the ``ServerProtocol`` sees it, rather than
handing the context to ``create_server``: asyncio would then drop a failed
handshake silently, and an operator needs to know which peer failed and
why -- no certificate, an expired or untrusted one, a plain ZEO client on
the TLS port (it waits for the server to speak first, so its handshake
times out), or no handshake at all.  Each failure is one log line naming
the peer; the server serves everyone else meanwhile.

The context lives in a ``TLSListener``, which ``reload`` replaces: new
connections use the new certificate and CAs, established ones keep theirs.
Everything here runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import cast

from ..errors import ConfigurationError
from ..tls import ServerTLS, server_context
from .tasks import ServerTasks
from .traffic import Refusal, Traffic
from .transport import address_label

logger = logging.getLogger(__name__)


class TLSListener:
    """The current context and what each new connection needs."""

    def __init__(self, settings: ServerTLS, handshake_timeout: float) -> None:
        self.settings = settings
        self.handshake_timeout = handshake_timeout
        self.context = server_context(settings)

    def reload(self) -> None:
        """Read the certificate, key and CAs again; keep the old context if
        they cannot be loaded (the error is logged)."""
        try:
            self.context = server_context(self.settings)
        except ConfigurationError as error:
            logger.error(
                "TLS reload failed, keeping the current certificates: %s", error
            )
            return
        logger.info("TLS certificates reloaded from %s", self.settings.certificate)


class TLSAcceptor(asyncio.Protocol):
    """One accepted TCP connection until its TLS handshake is done."""

    def __init__(
        self,
        listener: TLSListener,
        make_protocol: Callable[[], asyncio.Protocol],
        tasks: ServerTasks,
        traffic: Traffic,
    ) -> None:
        self._listener = listener
        self._make_protocol = make_protocol
        self._tasks = tasks
        self._traffic = traffic
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        tcp = cast(asyncio.Transport, transport)
        self._transport = tcp
        tcp.pause_reading()  # until start_tls takes over
        self._tasks.spawn(self._upgrade(tcp), service=True)

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        listener = self._listener
        label = address_label(transport.get_extra_info("peername"))
        protocol = self._make_protocol()
        loop = asyncio.get_running_loop()
        try:
            upgraded = await loop.start_tls(
                transport,
                protocol,
                listener.context,
                server_side=True,
                ssl_handshake_timeout=listener.handshake_timeout,
            )
        except (OSError, TimeoutError) as error:
            self._traffic.refused[Refusal.TLS_HANDSHAKE] += 1
            logger.warning(
                "%s: TLS handshake failed: %s",
                label,
                describe_failure(error, listener.handshake_timeout),
            )
            transport.close()
            return
        if upgraded is None:  # the client left during the handshake
            transport.close()
            return
        protocol.connection_made(upgraded)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before or during the handshake: ``_upgrade`` reports it

    def data_received(self, data: bytes) -> None:
        # Reading is paused until start_tls takes over, and asyncio's loop
        # keeps that; a loop that does not would lose these bytes of the
        # handshake (hence no uvloop for TLS servers: ``main.py``).
        logger.warning("data before the TLS handshake began; closing")
        if self._transport is not None:
            self._transport.close()


def describe_failure(error: BaseException, timeout: float) -> str:
    """What went wrong, in the terms an operator searches for."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the client's certificate was refused: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
        if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"):
            return f"not a TLS client ({reason}): a plain client on the TLS port?"
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "the client sent no certificate"
        return reason
    if isinstance(error, TimeoutError | ConnectionAbortedError):
        return (
            f"no TLS handshake within {timeout:g} s: a plain ZEO client on the "
            "TLS port, or a stalled client"
        )
    return str(error) or type(error).__name__
