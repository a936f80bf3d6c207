"""A replica's side of replication: follow the primary's storage.

With ``replicate-from``, each hosted storage gets a ``Follower``: a task
that connects to the primary like a client (TLS with the server's own
certificate when the server has ``<ssl>``), registers read-only for the
storage of the same name and calls ``replicate`` with its history and last
transaction (docs/replication.md).  The primary answers whether it may
follow (``replication_history``), then streams every later transaction
(``replication``).  Each one is applied as it arrives with the storage's
``restore``/``restoreBlob`` -- same tid, status, user, description,
extension and records -- in the storage's transaction thread, finished
like a client's commit (loads wait for the finish, ``submit_finish``),
published to this server's own clients as an invalidation, and
acknowledged to the primary with ``replicated(tid)``.

Reading from the primary waits while a transaction is applied, so a
replica that cannot keep up slows the stream through TCP, not its memory.
When the connection fails the follower reconnects, with back-off, and
resumes after its storage's last transaction: a transaction cut off
half-way was never finished, so there is no gap and no duplicate.

The follower is owned by the server's tasks (a service); ``promote`` stops
it.  Everything here runs on the event loop but the storage calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from typing import TYPE_CHECKING, Any, TypedDict

from ZODB.Connection import TransactionMetaData
from ZODB.POSException import StorageError
from ZODB.serialize import referencesf
from ZODB.utils import z64

from ..addresses import Address, format_address
from ..errors import RemoteProtocolError, ZodbServerError
from ..protocol import AsyncCall, ClientConnection, ErrorReply, Handshake, Reply
from .blobs import BlobUpload, remove_quietly
from .file_writer import FileWriter
from .replication import tid_time
from .replication_history import Verdict, from_json, to_json

if TYPE_CHECKING:
    from .storage_server import HostedStorage
    from .tasks import ServerTasks

logger = logging.getLogger(__name__)

#: Record bytes applied to the storage at once, within a transaction.
APPLY_BYTES = 8 * 1024 * 1024
#: Seconds between attempts to reach the primary (doubling up to the max).
RETRY_FIRST = 0.25
RETRY_MAX = 5.0
#: Seconds the primary has to answer a call made while connecting.
CALL_TIMEOUT = 60.0


class ReplicationRefusedError(ZodbServerError):
    """The primary will not be followed, or would not have us."""


class FollowerSnapshot(TypedDict):
    primary: str
    state: str
    last_applied: str
    primary_last: str
    lag_seconds: float
    applied: int
    error: str | None


class _Transaction:
    """The transaction being received and applied."""

    def __init__(self, tid: bytes, status: str, metadata: TransactionMetaData) -> None:
        self.tid = tid
        self.status = status
        self.metadata = metadata
        self.begun = False
        self.records: list[tuple[bytes, bytes | None, bytes | None, str | None]] = []
        self.size = 0
        self.oids: list[bytes] = []


class Follower:
    def __init__(
        self,
        hosted: HostedStorage,
        primary: Address,
        tasks: ServerTasks,
        *,
        tls: ssl.SSLContext | None = None,
        advertise: str = "",
    ) -> None:
        self.hosted = hosted
        self.primary = primary
        self._tasks = tasks
        self._tls = tls
        #: How the primary can reach this server (its listening address).
        self.advertise = advertise
        self.state = "connecting"
        self.primary_last = z64
        self.applied = 0
        self.error: str | None = None
        #: Set once the first connection's replicate() was answered.
        self.answered = asyncio.Event()
        self._connection = ClientConnection()
        self._writer: asyncio.StreamWriter | None = None
        self._msgid = 0
        self._transaction: _Transaction | None = None
        self._upload: BlobUpload | None = None
        #: Writes received blobs off the loop; ``_handle`` waits when it
        #: falls behind, and before the storage reads what it wrote.
        self._files = FileWriter(tasks)
        #: The first write of the current transaction's blobs that failed.
        self._write_error: Exception | None = None
        self._blob: tuple[bytes, bytes, str] | None = None
        #: The commit of the last transaction received (done when idle).
        self.committing: asyncio.Future[None] | None = None
        self.stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- the task ------------------------------------------------------------

    def stop(self) -> None:
        """Stop following (``promote``): the task ends at its next step."""
        self.stopping = True
        if self._task is not None:
            self._task.cancel()

    async def run(self) -> None:
        """Follow until stopped; reconnect when the connection fails."""
        self._task = asyncio.current_task()
        delay = RETRY_FIRST
        name = self.hosted.name
        while not self.stopping:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except ReplicationRefusedError as error:
                self.state = "refused"
                self.error = str(error)
                self.answered.set()
                logger.error("storage %r: %s", name, error)
                delay = RETRY_MAX
            except (OSError, EOFError, RemoteProtocolError, TimeoutError) as error:
                if self.state != "connecting":
                    logger.warning(
                        "storage %r: lost the primary %s: %s; reconnecting",
                        name,
                        format_address(self.primary),
                        error or type(error).__name__,
                    )
                self.state = "connecting"
                self.error = str(error) or type(error).__name__
            except Exception as error:
                self.state = "connecting"
                self.error = repr(error)
                logger.exception("storage %r: replication failed; reconnecting", name)
                delay = RETRY_MAX
            finally:
                await self._end_connection()
            if self.stopping:
                # A stop whose cancellation an error raised at the same
                # moment took the place of.
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _end_connection(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._abandon_transaction()

    def _abandon_transaction(self) -> None:
        """Abort a transaction cut off half-way (the storage never saw its
        end; the next connection sends it again)."""
        txn, self._transaction = self._transaction, None
        if txn is not None:
            if txn.begun:
                self.hosted.submit(self.hosted.storage.tpc_abort, txn.metadata)
            for _, _, _, path in txn.records:
                if path is not None:
                    self._remove(path)
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.discard()
        if self._blob is not None:
            self._remove(self._blob[2])
            self._blob = None
        self._write_error = None

    def _remove(self, path: str) -> None:
        """Remove a received blob file, after the writes to it."""
        self._files.submit(functools.partial(remove_quietly, path))

    def _write_failed(self, error: Exception) -> None:
        if self._write_error is None:
            self._write_error = error

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        primary = self.primary
        if isinstance(primary, str):
            return await asyncio.open_unix_connection(primary, ssl=self._tls)
        host, port = primary
        return await asyncio.open_connection(host, port, ssl=self._tls)

    async def _follow(self) -> None:
        hosted = self.hosted
        reader, writer = await asyncio.wait_for(self._connect(), CALL_TIMEOUT)
        self._writer = writer
        self._connection = ClientConnection()
        events = self._events(reader)
        handshake = await asyncio.wait_for(anext(events), CALL_TIMEOUT)
        if not isinstance(handshake, Handshake):
            raise RemoteProtocolError(f"expected the server's handshake: {handshake!r}")
        writer.write(self._connection.handshake())
        await self._call(events, "register", hosted.name, True)
        last = await hosted.in_worker(_last_transaction, hosted.storage)
        replication = hosted.replication
        try:
            answer = await self._call(
                events,
                "replicate",
                {
                    "history": to_json(replication.history),
                    "last_tid": last,
                    "address": self.advertise,
                },
            )
        except EOFError:
            # ZEO's server drops a connection that calls a method it lacks.
            raise ReplicationRefusedError(
                f"the primary {format_address(self.primary)} closed the "
                "connection when asked to replicate: it is not a server that "
                "replicates (a ZEO server refused replicate() so)"
            ) from None
        self._accept(answer, last)
        async for event in events:
            if isinstance(event, AsyncCall):
                await self._handle(event.method, event.args)

    def _accept(self, answer: Any, last: bytes) -> None:
        """Check the primary's answer to ``replicate``; take its history."""
        hosted = self.hosted
        where = f"the primary {format_address(self.primary)}"
        if not isinstance(answer, dict):
            raise RemoteProtocolError(
                f"{where} answered replicate() with {answer!r:.80}"
            )
        verdict = answer.get("verdict")
        if verdict == Verdict.DIVERGED.value:
            branch = answer.get("branch")
            raise ReplicationRefusedError(
                f"this storage's history has diverged from {where}'s: it has "
                f"transactions after {_hex(branch)} (up to {last.hex()}) that the "
                "primary does not have; stop this server and run 'zeoserver "
                "rejoin' to move them aside"
            )
        if verdict == Verdict.PRIMARY_STALE.value:
            raise ReplicationRefusedError(
                f"{where} is stale: this storage knows of a later promotion; "
                "it will not follow it"
            )
        if verdict != Verdict.FOLLOW.value:
            raise ReplicationRefusedError(f"{where} refused: {answer!r:.200}")
        history = from_json(answer.get("history"), f"{where}'s history")
        replication = hosted.replication
        replication.state = replication.state.changed(history=history)
        primary_last = answer.get("last_tid")
        if isinstance(primary_last, bytes):
            self.primary_last = primary_last
        self.state = "catching up" if self.primary_last > last else "following"
        self.error = None
        self.answered.set()
        logger.info(
            "storage %r: following %s from %s (%s)",
            hosted.name,
            format_address(self.primary),
            last.hex(),
            self.state,
        )

    async def _events(self, reader: asyncio.StreamReader) -> Any:
        connection = self._connection
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                raise EOFError("the primary closed the connection")
            for event in connection.receive_data(data):
                yield event

    async def _call(self, events: Any, method: str, *args: Any) -> Any:
        assert self._writer is not None
        self._msgid += 1
        msgid = self._msgid
        self._writer.write(self._connection.call(msgid, method, args))
        while True:
            event = await asyncio.wait_for(anext(events), CALL_TIMEOUT)
            if isinstance(event, Reply) and event.msgid == msgid:
                return event.result
            if isinstance(event, ErrorReply) and event.msgid == msgid:
                raise ReplicationRefusedError(
                    f"the primary refused {method}(): {event.class_name}: "
                    f"{event.payload!r:.300}"
                )

    # -- the stream ------------------------------------------------------------

    async def _handle(self, method: str, args: tuple[Any, ...]) -> None:
        if method == "replicate_begin":
            tid, status, user, description, extension = args
            self._abandon_transaction()
            self._transaction = _Transaction(
                tid, status, TransactionMetaData(user, description, extension)
            )
        elif method == "receiveBlobStart":
            if self._upload is not None:
                self._upload.discard()
            self._upload = BlobUpload(
                self.hosted.storage, self._files, self._write_failed
            )
        elif method == "receiveBlobChunk":
            if self._upload is None:
                raise RemoteProtocolError("a blob chunk without receiveBlobStart")
            self._upload.write(args[2])
            await self._files.room()
        elif method == "receiveBlobStop":
            upload, self._upload = self._upload, None
            if upload is None:
                raise RemoteProtocolError("receiveBlobStop without receiveBlobStart")
            self._blob = (args[0], args[1], upload.finish())
        elif method == "replicate_record":
            await self._record(*args)
        elif method == "replicate_end":
            await self._end(*args)
        elif method == "replicate_pack":
            self._tasks.spawn(self._pack(args[0]))
        # Anything else (info, an invalidation sent before the stream began)
        # is not for a replica.

    async def _record(
        self, oid: bytes, data: bytes | None, data_txn: bytes | None, has_blob: bool
    ) -> None:
        txn = self._transaction
        if txn is None:
            raise RemoteProtocolError("a record outside a transaction")
        path = None
        blob, self._blob = self._blob, None
        if has_blob:
            if blob is None or blob[0] != oid:
                raise RemoteProtocolError("a blob record without its blob")
            path = blob[2]
        elif blob is not None:
            self._remove(blob[2])
        txn.records.append((oid, data, data_txn, path))
        txn.oids.append(oid)
        txn.size += 0 if data is None else len(data)
        if txn.size >= APPLY_BYTES:
            await self._apply(txn)

    async def _apply(self, txn: _Transaction) -> None:
        """Hand the records received so far to the storage."""
        await self._files.idle()
        if self._write_error is not None:
            raise StorageError(
                f"a replicated blob could not be written: {self._write_error}"
            ) from self._write_error
        records, txn.records = txn.records, []
        txn.size = 0
        begin = not txn.begun
        txn.begun = True
        await self.hosted.in_worker(_restore, self.hosted.storage, txn, begin, records)

    async def _end(self, tid: bytes, primary_last: bytes) -> None:
        txn = self._transaction
        if txn is None or txn.tid != tid:
            raise RemoteProtocolError(f"the end of a transaction not begun: {tid!r}")
        await self._apply(txn)
        # From the vote on, the transaction is seen through even if the
        # follower is stopped: once finished it must be published.
        self._transaction = None
        self.committing = asyncio.ensure_future(self._commit(txn, primary_last))
        await asyncio.shield(self.committing)

    async def _commit(self, txn: _Transaction, primary_last: bytes) -> None:
        hosted = self.hosted
        storage = hosted.storage
        try:
            await hosted.in_worker(storage.tpc_vote, txn.metadata)
            await hosted.submit_finish(storage.tpc_finish, txn.metadata)
        except BaseException:
            hosted.submit(storage.tpc_abort, txn.metadata)
            raise
        tid = txn.tid
        self.applied += 1
        self.primary_last = max(primary_last, tid)
        if self.state == "catching up" and tid >= self.primary_last:
            self.state = "following"
            logger.info(
                "storage %r: caught up with the primary at %s", hosted.name, tid.hex()
            )
        hosted.publish_commit(None, tid, txn.oids)
        if self._writer is not None:
            self._writer.write(self._connection.call_async("replicated", (tid,)))

    async def _pack(self, t: float) -> None:
        hosted = self.hosted
        logger.info("storage %r: pack(t=%r) as the primary did", hosted.name, t)
        hosted.packs += 1
        await self._tasks.run_in_thread(hosted.storage.pack, t, referencesf)
        logger.info("storage %r: pack(t=%r) complete", hosted.name, t)
        hosted.broadcast_info()

    def snapshot(self) -> FollowerSnapshot:
        last = self.hosted.last_tid
        return {
            "primary": format_address(self.primary),
            "state": self.state,
            "last_applied": last.hex(),
            "primary_last": self.primary_last.hex(),
            "lag_seconds": max(tid_time(self.primary_last) - tid_time(last), 0.0),
            "applied": self.applied,
            "error": self.error,
        }


def _last_transaction(storage: Any) -> bytes:
    return bytes(storage.lastTransaction() or z64)


def _restore(
    storage: Any,
    txn: _Transaction,
    begin: bool,
    records: list[tuple[bytes, bytes | None, bytes | None, str | None]],
) -> None:
    """Restore records into ``storage`` (in its transaction thread)."""
    metadata = txn.metadata
    if begin:
        storage.tpc_begin(metadata, txn.tid, txn.status)
    for oid, data, data_txn, path in records:
        if path is None:
            storage.restore(oid, txn.tid, data, "", data_txn, metadata)
        else:
            storage.restoreBlob(oid, txn.tid, data, path, data_txn, metadata)


def _hex(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)
