"""What the parts of a ``Session`` share: its client, storage and state.

A session knows its client only through the small ``Peer`` interface (send
an async call, close), so it can be driven by the asyncio transport or
directly by tests.  ``SessionBase`` holds the state of one connection --
the storage it registered for, its pending transaction, its blob upload,
its iterators -- which the event loop owns; the wire methods are added by
``transaction_calls.TransactionCalls`` and ``session.Session``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from .blobs import BlobUpload
from .commit import PendingTransaction, VoteResult
from .storage_api import ServedStorage, TransactionRecord
from .storage_server import HostedStorage, StorageServer

logger = logging.getLogger(__name__)


class Peer(Protocol):
    label: str

    def send_async(self, method: str, args: tuple[Any, ...]) -> None: ...

    async def send_blob(self, oid: bytes, serial: bytes, path: str) -> None: ...

    def close(self) -> None: ...


class SessionBase:
    """The state of one client connection, and what every part uses."""

    def __init__(self, server: StorageServer, peer: Peer) -> None:
        self.server = server
        self.peer = peer
        self.hosted: HostedStorage | None = None
        self.read_only = server.settings.read_only
        self.closed = False
        #: Invalidations for tids up to this one are not sent to the client.
        self.last_tid = b""
        self.transaction: PendingTransaction | None = None
        self._vote_result: VoteResult | None = None
        self._async_error: Exception | None = None
        self._upload: BlobUpload | None = None
        self._iterators: dict[int, Iterator[Any]] = {}
        self._last_transaction_info: dict[int, TransactionRecord] = {}
        self._iterator_ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<Session {self.peer.label}>"

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

    def _discard_upload(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.discard()
