"""The replication methods of a session (docs/replication.md).

``replicate`` turns the session of a replica into a ``ReplicaLink`` fed by
a task of its own; ``replicated`` is the replica's acknowledgement;
``replication_status`` (allowed before ``register``) tells another server
or ``zeoserver status`` this server's role and histories, and ``promote``
(also before ``register``; ``admin`` access on every storage) makes a
replica a primary.  None of these is a ZEO method: a ZEO client never
calls them, and a ZEO server answers them with an unknown-method error,
which a replica reports as "the primary does not replicate".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ZODB.POSException import StorageError
from ZODB.utils import z64

from ..errors import ConfigurationError
from .access import Access
from .replication import ReplicaLink
from .replication_history import Verdict, compare, from_json, to_json
from .session_base import SessionBase

logger = logging.getLogger(__name__)


class ReplicationCalls(SessionBase):
    #: This session's replica, once it replicates.
    replica: ReplicaLink | None = None
    _feed: asyncio.Task[None] | None = None

    async def replicate(self, request: dict[str, Any]) -> dict[str, Any]:
        hosted = self._hosted
        if self.access < Access.REPLICATE:
            raise StorageError(
                f"access denied: {self.peer.credentials.describe()} may not "
                f"replicate storage {hosted.name!r} (it has "
                f"{self.access.name.lower()} access)"
            )
        if self.replica is not None or self.transaction is not None:
            raise StorageError("replicate() on a connection that already uses it")
        try:
            history = from_json(request.get("history"), "replicate() history")
        except ConfigurationError as error:
            raise TypeError(str(error)) from None
        last = request.get("last_tid")
        advertised = request.get("address")
        if not (isinstance(last, bytes) and len(last) == 8):
            raise TypeError("replicate() last_tid must be 8 bytes")
        replication = hosted.replication
        comparison = compare(replication.history, history, last)
        verdict, branch = comparison.verdict, comparison.branch
        if verdict is Verdict.FOLLOW and last > hosted.last_tid:
            # Ahead of us in the same epoch: not a copy of what we hold.
            verdict, branch = Verdict.DIVERGED, hosted.last_tid
        if verdict is Verdict.FOLLOW and last != z64:
            held = await self.server.tasks.run_in_thread(_holds, self.storage, last)
            if not held:
                verdict, branch = Verdict.DIVERGED, None
        answer: dict[str, Any] = {
            "verdict": verdict.value,
            "branch": branch,
            "history": to_json(replication.history),
            "last_tid": hosted.last_tid,
        }
        if verdict is not Verdict.FOLLOW:
            logger.warning(
                "%s: refused as a replica of storage %r: %s at %s",
                self.peer.label,
                hosted.name,
                verdict.value,
                last.hex(),
            )
            return answer
        if self.closed:
            return answer
        address = self._replica_address(advertised)
        link = ReplicaLink(replication, self.peer, address, last)
        self.replica = link
        hosted.sessions.discard(self)  # a replica gets the stream, not invalidations
        replication.add(link)
        self._feed = self.server.tasks.spawn(link.feed(self.server.tasks), service=True)
        self._feed.add_done_callback(self._feed_ended)
        logger.info(
            "%s: replica %s follows storage %r from %s",
            self.peer.label,
            address or "(no address)",
            hosted.name,
            last.hex(),
        )
        return answer

    def _replica_address(self, advertised: object) -> str:
        """Where the replica listens: its own word for the port, and the
        address it connects from (it may listen on every interface)."""
        if isinstance(advertised, str) and advertised:
            if advertised.startswith("/"):
                return advertised
            host, _, port = advertised.rpartition(":")
            peer = self.peer.credentials.address
            if port.isdigit() and peer:
                if host in ("", "0.0.0.0", "::", "[::]"):
                    host = f"[{peer}]" if ":" in peer else peer
                return f"{host}:{port}"
        return ""

    def _feed_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.peer.close()

    def replicated(self, tid: bytes) -> None:
        if self.replica is None:
            raise StorageError("replicated() from a connection that does not replicate")
        self.replica.acknowledge(tid)

    def end_replication(self) -> None:
        """The connection is gone: stop feeding it."""
        link, self.replica = self.replica, None
        if link is None:
            return
        if self._feed is not None:
            self._feed.cancel()
        self._hosted.replication.remove(link)
        logger.info("%s: replica disconnected", self.peer.label)

    def replication_status(self) -> dict[str, Any]:
        return self.server.replication_status()

    async def promote(self) -> dict[str, Any]:
        rules = self.server.access
        if rules is not None:
            for name in self.server.hosted:
                if rules.decide(name, self.peer.credentials).access < Access.ADMIN:
                    raise StorageError(
                        f"access denied: {self.peer.credentials.describe()} may "
                        f"not promote (it lacks admin access to storage {name!r})"
                    )
        logger.warning("%s: promote requested", self.peer.label)
        return await self.server.promote()


def _holds(storage: Any, tid: bytes) -> bool:
    """Whether ``storage`` has a transaction ``tid`` (in a worker thread)."""
    transactions = storage.iterator(tid, tid)
    try:
        return any(transaction.tid == tid for transaction in transactions)
    finally:
        close = getattr(transactions, "close", None)
        if close is not None:
            close()
