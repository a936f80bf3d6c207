"""What the parts of a ``Session`` share: its client, storage and state.

A session knows its client only through the small ``Peer`` interface (send
an async call, close), so it can be driven by the asyncio transport or
directly by tests.  ``SessionBase`` holds the state of one connection --
the storage it registered for, its pending transaction, its blob upload
and the ``FileWriter`` that writes it, its iterators -- which the event
loop owns; the wire methods are added by
``transaction_calls.TransactionCalls`` and ``session.Session``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

from ZODB.POSException import StorageError

from .access import Access, Credentials
from .blobs import BlobUpload
from .commit import PendingTransaction, VoteResult
from .file_writer import FileWriter
from .storage_api import ServedStorage, TransactionRecord
from .storage_server import HostedStorage, StorageServer
from .traffic import Refusal

logger = logging.getLogger(__name__)


class Peer(Protocol):
    label: str
    #: Who the client is, as far as the connection can tell.
    credentials: Credentials

    def send_async(self, method: str, args: tuple[Any, ...]) -> None: ...

    async def send_blob(self, oid: bytes, serial: bytes, path: str) -> None: ...

    async def drained(self) -> None: ...

    def hold_reading(self, until: asyncio.Future[None]) -> None:
        """Handle none of the client's calls until ``until`` is done."""

    def close(self) -> None: ...


class SessionBase:
    """The state of one client connection, and what every part uses."""

    def __init__(self, server: StorageServer, peer: Peer) -> None:
        self.server = server
        self.peer = peer
        self.hosted: HostedStorage | None = None
        self.read_only = server.settings.read_only
        #: It asked to write and was refused as read-only (``register``).
        self.wanted_write = False
        #: What the access rules grant this client on its storage.
        self.access = Access.ADMIN
        self.closed = False
        #: Invalidations for tids up to this one are not sent to the client.
        self.last_tid = b""
        #: Why its commit's replicas did not confirm it (sync-replicas).
        self._unconfirmed: Exception | None = None
        self.transaction: PendingTransaction | None = None
        self._vote_result: VoteResult | None = None
        self._async_error: Exception | None = None
        self._upload: BlobUpload | None = None
        #: Writes this connection's blob uploads off the loop; when they
        #: fall behind, the client's calls wait (``Peer.hold_reading``).
        self._files = FileWriter(server.tasks, over_limit=self._writes_behind)
        #: Open iterators, each with the storage's pack count when it began.
        self._iterators: dict[int, tuple[Iterator[Any], int]] = {}
        self._last_transaction_info: dict[int, TransactionRecord] = {}
        self._iterator_ids = itertools.count(1)
        self.connected_at = time.time()
        #: What this client did, for the monitor.
        self.loads = 0
        self.commits = 0

    def __repr__(self) -> str:
        return f"<Session {self.peer.label}>"

    @property
    def label(self) -> str:
        return self.peer.label

    @property
    def storage(self) -> ServedStorage:
        assert self.hosted is not None
        return self.hosted.storage

    @property
    def _hosted(self) -> HostedStorage:
        assert self.hosted is not None
        return self.hosted

    # -- outgoing ---------------------------------------------------------

    def send_async(self, method: str, args: tuple[Any, ...]) -> None:
        if not self.closed:
            self.peer.send_async(method, args)

    def invalidate(self, tid: bytes, oids: list[bytes]) -> None:
        if tid > self.last_tid:
            self.last_tid = tid
            self.send_async("invalidateTransaction", (tid, oids))

    def close_connection(self, reason: str) -> None:
        logger.warning("%s: closing connection: %s", self.peer.label, reason)
        self.peer.close()

    def _writes_behind(self, caught_up: asyncio.Future[None]) -> None:
        self.peer.hold_reading(caught_up)

    def _discard_upload(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.discard()

    # -- access ------------------------------------------------------------

    def _granted(self, storage_name: str) -> Access:
        """What the rules grant; refuse a client they grant nothing."""
        rules = self.server.access
        if rules is None:
            return Access.ADMIN
        client = self.peer.credentials
        decision = rules.decide(storage_name, client)
        if decision.access is Access.NONE:
            self.server.traffic.refused[Refusal.ACCESS_DENIED] += 1
            where = (
                decision.rule.origin if decision.rule else f"no rule in {rules.source}"
            )
            logger.warning(
                "%s: refused: no access to storage %r (%s)",
                self.peer.label,
                storage_name,
                where,
            )
            raise StorageError(
                f"access denied: {client.describe()} has no access to storage "
                f"{storage_name!r}"
            )
        assert decision.rule is not None  # only "no rule" grants nothing
        logger.info(
            "%s: %s access to storage %r (%s)",
            self.peer.label,
            decision.access.name.lower(),
            storage_name,
            decision.rule.origin,
        )
        return decision.access

    def describe(self) -> str:
        """This client in ``server_status``'s list: label and access."""
        return f"{self.peer.label} ({self.access.name.lower()})"

    def access_changed(self) -> None:
        """The rules were reloaded: apply them to this registered client."""
        hosted = self._hosted
        try:
            access = self._granted(hosted.name)
        except StorageError:
            self.peer.close()
            return
        self.access = access
        if access < Access.WRITE:
            self.read_only = True
