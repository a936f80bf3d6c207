"""A server's role in replication: follow, promote, fence (docs/replication.md).

``ReplicationControl`` is owned by the ``StorageServer`` and used on its
event loop.  It starts a ``Follower`` per storage on a replica, stops them
when the replica is promoted, and on a primary that has had replicas it
*fences* the storages first: they serve read-only until every replica the
state file names has been asked whether it was promoted meanwhile.  One
that was (its history has a later epoch) means this server's history was
left behind: its storage stays read-only, with an error in the log and in
the status, until an operator makes it rejoin as a replica.  A replica
that does not answer in ``FENCING_TIMEOUT`` does not keep the primary
fenced: a primary whose replicas are all gone still serves.

Promotion adds an epoch to each storage's history, after its last
transaction, and saved before the first write; clients that wanted to
write and were served read-only (``read_only_fallback``) are disconnected
so that they come back writable.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

from ZODB.POSException import StorageError

from ..addresses import Address, parse_address
from ..errors import ConfigurationError
from ..peer_call import CallFailedError, call_once
from ..tls import SERVER_ONLY, client_context
from .follower import Follower
from .replication_history import from_json, promoted, to_json

if TYPE_CHECKING:
    from .storage_server import HostedStorage, StorageServer

logger = logging.getLogger(__name__)

#: Seconds a former replica has to say whether it was promoted.
FENCING_TIMEOUT = 5.0


class ReplicationControl:
    def __init__(self, server: StorageServer) -> None:
        self._server = server
        self.followers: dict[str, Follower] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Storages that another server's promotion left behind.
        self.stale: dict[str, str] = {}
        self.promotions = 0

    @property
    def is_replica(self) -> bool:
        return bool(self.followers)

    def client_tls(self) -> ssl.SSLContext | None:
        """How this server connects to others: TLS with its own
        certificate as the client's when it has ``<ssl>``."""
        tls = self._server.settings.tls
        if tls is None:
            return None
        return client_context(
            certificate=tls.certificate,
            key=tls.key,
            password_function=tls.password_function,
            authenticate=None if tls.authenticate == SERVER_ONLY else tls.authenticate,
            check_hostname=False,
        )

    def start(self, bound: Address) -> None:
        """Serving on ``bound``: follow the primary, or fence."""
        server = self._server
        primary = server.settings.replicate_from
        if primary is None:
            for hosted in server.hosted.values():
                if hosted.replication.state.replicas and not hosted.read_only:
                    hosted.read_only = True
                    server.tasks.spawn(self._fence(hosted), service=True)
            return
        advertise = bound if isinstance(bound, str) else f"{bound[0]}:{bound[1]}"
        tls = self.client_tls()
        for name, hosted in server.hosted.items():
            follower = Follower(
                hosted, primary, server.tasks, tls=tls, advertise=advertise
            )
            self.followers[name] = follower
            self._tasks[name] = server.tasks.spawn(follower.run(), service=True)

    async def _fence(self, hosted: HostedStorage) -> None:
        state = hosted.replication.state
        ours = state.history
        tls = self.client_tls()
        for text in state.replicas:
            try:
                address = parse_address(text, listening=False)
                status = await call_once(
                    address, "replication_status", tls=tls, seconds=FENCING_TIMEOUT
                )
                theirs = from_json(
                    status["storages"][hosted.name]["history"], f"{text}'s history"
                )
            except (CallFailedError, ConfigurationError, KeyError, TypeError) as error:
                logger.warning(
                    "storage %r: former replica %s did not tell whether it was "
                    "promoted (%s)",
                    hosted.name,
                    text,
                    error,
                )
                continue
            if len(theirs) > len(ours) or theirs[: len(ours)] != ours:
                why = (
                    f"{text} was promoted (epoch {theirs[-1].number}, this storage "
                    f"is at epoch {ours[-1].number}): this server's history was "
                    "left behind; it serves read-only until it rejoins as a "
                    "replica ('zeoserver rejoin', then replicate-from)"
                )
                self.stale[hosted.name] = why
                logger.error("storage %r: %s", hosted.name, why)
                return
        hosted.read_only = self._server.settings.read_only or bool(
            hosted.storage.isReadOnly()
        )
        logger.info("storage %r: no former replica was promoted; writable", hosted.name)
        hosted.reconnect_waiting_writers()

    async def promote(self) -> dict[str, Any]:
        """Stop following; begin a new epoch; serve writes."""
        server = self._server
        if not self.followers:
            raise StorageError(
                "promote: this server is not a replica (it has no replicate-from)"
            )
        for follower in self.followers.values():
            follower.stop()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for follower in self.followers.values():
            if follower.committing is not None:
                await asyncio.gather(follower.committing, return_exceptions=True)
        result: dict[str, Any] = {}
        for name, hosted in server.hosted.items():
            if hosted.running:
                await asyncio.wait(list(hosted.running))
            replication = hosted.replication
            last = hosted.last_tid
            history = promoted(replication.history, last)
            replication.state = replication.state.changed(history=history)
            hosted.read_only = server.settings.read_only or bool(
                hosted.storage.isReadOnly()
            )
            result[name] = {"epoch": history[-1].number, "after": last.hex()}
            logger.warning(
                "storage %r: promoted to primary, epoch %d, after %s",
                name,
                history[-1].number,
                last.hex(),
            )
            hosted.reconnect_waiting_writers()
        self.followers.clear()
        self._tasks.clear()
        self.promotions += 1
        return {"storages": result}

    def status(self) -> dict[str, Any]:
        server = self._server
        storages: dict[str, Any] = {}
        for name, hosted in server.hosted.items():
            follower = self.followers.get(name)
            storages[name] = {
                "history": to_json(hosted.replication.history),
                "last_tid": hosted.last_tid.hex(),
                "read_only": hosted.read_only,
                "primary": None if follower is None else follower.snapshot(),
                "replicas": hosted.replication.snapshot(),
                "sync_replicas": hosted.replication.required,
                "unconfirmed_commits": hosted.replication.unconfirmed_commits,
                "stale": self.stale.get(name),
            }
        role = "replica" if self.is_replica else "primary"
        return {"role": role, "storages": storages}
