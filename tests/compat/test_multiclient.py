"""Several stock ZEO 6 clients sharing one of our servers, on a FileStorage
and on RelStorage over PostgreSQL.

Every test runs with both wire encodings (msgpack ``M5`` and pickle ``Z5``):
commits seen by the other clients through invalidations, conflicts raised
or resolved on the server (or, with ``client_conflict_resolution``, by the
client), MVCC snapshots, unique oids under concurrency, persistent client
caches brought up to date with ``getInvalidations``, the server's counters,
``info`` before the ``tpc_finish`` reply, registration errors and read-only
serving.

Waiting for another client to see a commit is a bounded poll of
``transaction.begin()``, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import transaction
import ZODB
from BTrees.Length import Length
from persistent import Persistent
from ZEO.ClientStorage import ClientStorage
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError, ReadOnlyError

from support.database import RelStorageServers
from support.waiting import wait_until
from zodbserver.protocol import (
    ClientConnection,
    ErrorReply,
    Handshake,
    Reply,
)
from zodbserver.server.thread import ServerThread

PROMPTLY = 10.0


class Item(Persistent):
    """A plain persistent object: concurrent changes conflict."""

    def __init__(self, value: Any = 0) -> None:
        self.value = value


class Counter(Persistent):
    """Concurrent increments merge (resolved wherever the resolver runs)."""

    def __init__(self) -> None:
        self.value = 0

    def _p_resolveConflict(
        self, old: dict[str, Any], committed: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        old_value = old.get("value", 0)
        return {"value": committed["value"] + new["value"] - old_value}


class Client:
    """A ZEO 6 ClientStorage, a DB and one connection with its own manager."""

    def __init__(self, address: Any, **options: Any) -> None:
        self.storage = ClientStorage(address, wait_timeout=PROMPTLY, **options)
        try:
            self.db = ZODB.DB(self.storage)
        except BaseException:
            self.storage.close()
            raise
        self.manager = transaction.TransactionManager()
        self.connection = self.db.open(self.manager)

    @property
    def root(self) -> Any:
        return self.connection.root()

    def sync(self) -> None:
        """Start a new transaction: see what others committed."""
        self.manager.begin()

    def commit(self) -> None:
        self.manager.commit()

    def abort(self) -> None:
        self.manager.abort()

    def sees(self, check: Callable[[Any], bool]) -> bool:
        self.sync()
        return check(self.root)

    def status(self) -> dict[str, Any]:
        return self.storage.server_status()

    def close(self) -> None:
        self.manager.abort()
        self.connection.close()
        self.db.close()


class Raw:
    """A raw socket speaking the server's encoding through ClientConnection."""

    def __init__(self, address: Any) -> None:
        self.sock = socket.create_connection(address, timeout=PROMPTLY)
        self.connection = ClientConnection()
        self.events: list[Any] = []
        handshake = self.next_event()
        assert isinstance(handshake, Handshake), handshake
        self.protocol = handshake.protocol
        self.sock.sendall(self.connection.handshake())
        self._msgid = 0

    def next_event(self) -> Any:
        while not self.events:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.events.extend(self.connection.receive_data(data))
        return self.events.pop(0)

    def call(self, method: str, *args: Any) -> Any:
        self._msgid += 1
        self.sock.sendall(self.connection.call(self._msgid, method, args))
        event = self.next_event()
        assert event is not None, "the server closed the connection"
        assert event.msgid == self._msgid, event
        return event

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=[True, False], ids=["msgpack", "pickle"])
def msgpack(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.fixture
def resources() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


class Server:
    def __init__(self, address: Any, resources: contextlib.ExitStack) -> None:
        self.address = address
        self._resources = resources

    def client(self, **options: Any) -> Client:
        client = Client(self.address, **options)
        self._resources.callback(client.close)
        return client

    def raw(self) -> Raw:
        raw = Raw(self.address)
        self._resources.callback(raw.close)
        return raw


def start_server(
    tmp_path: Any,
    msgpack: bool,
    resources: contextlib.ExitStack,
    storage: Any = None,
    **options: Any,
) -> Server:
    if storage is None:
        storage = FileStorage(str(tmp_path / "Data.fs"))
    thread = ServerThread({"1": storage}, msgpack=msgpack, **options)
    address = thread.start()
    resources.callback(thread.stop)
    server = Server(address, resources)
    # Populate through one client first: DBs opened concurrently on an empty
    # storage would race to create the root.
    first = Client(address)
    try:
        root = first.root
        root["item"] = Item(0)
        root["length"] = Length()
        root["counter"] = Counter()
        first.commit()
    finally:
        first.close()
    return server


@pytest.fixture(params=["FileStorage", "RelStorage"])
def server(
    request: pytest.FixtureRequest,
    tmp_path: Any,
    msgpack: bool,
    resources: contextlib.ExitStack,
) -> Server:
    """Our server on a FileStorage, and on RelStorage over PostgreSQL."""
    storage = None
    if request.param == "RelStorage":
        postgres = request.getfixturevalue("postgres")
        storage = RelStorageServers(postgres, tmp_path).storage("server")
    return start_server(tmp_path, msgpack, resources, storage)


# -- invalidations ------------------------------------------------------------


def test_commit_is_seen_by_the_other_clients(server: Server, msgpack: bool) -> None:
    clients = [server.client() for _ in range(3)]
    for client in clients:
        assert client.storage.protocol_version == (b"M5" if msgpack else b"Z5")
    for round_, writer in enumerate(clients, start=1):
        writer.sync()
        writer.root["item"].value = round_
        writer.root[f"new{round_}"] = Item(round_)
        writer.commit()
        tid = writer.storage.lastTransaction()
        for reader in clients:
            if reader is writer:
                continue
            wait_until(
                lambda r=reader, n=round_: r.sees(
                    lambda root: root["item"].value == n and f"new{n}" in root
                ),
                f"round {round_} to reach another client",
                timeout=PROMPTLY,
            )
            assert reader.root[f"new{round_}"].value == round_
            assert reader.storage.lastTransaction() == tid


# -- conflicts ----------------------------------------------------------------


def _concurrent_changes(
    first: Client, second: Client, change: Callable[[Any], None]
) -> None:
    """Both read the same state; ``first`` commits its change; ``second``
    makes the same change on the state it read and commits (may raise)."""
    for client in (first, second):
        client.sync()
        # Load every object now, so both start from the same revisions.
        for key in ("item", "length", "counter"):
            client.root[key]._p_activate()
    change(first.root)
    first.commit()
    change(second.root)
    second.commit()


def test_conflict_on_plain_persistent_object(server: Server) -> None:
    first, second = server.client(), server.client()
    before = first.status()

    def change(root: Any) -> None:
        root["item"].value += 1

    with pytest.raises(ConflictError) as raised:
        _concurrent_changes(first, second, change)
    assert raised.value.oid == first.root["item"]._p_oid
    second.abort()
    after = first.status()
    assert after["conflicts"] == before["conflicts"] + 1
    assert after["conflicts_resolved"] == before["conflicts_resolved"]
    assert after["commits"] == before["commits"] + 1
    # The first commit stands; the second client sees it after a retry.
    wait_until(
        lambda: second.sees(lambda root: root["item"].value == 1),
        "the first commit",
        timeout=PROMPTLY,
    )
    second.root["item"].value += 1
    second.commit()
    wait_until(
        lambda: first.sees(lambda root: root["item"].value == 2),
        "the retried commit",
        timeout=PROMPTLY,
    )


@pytest.mark.parametrize("key", ["length", "counter"])
def test_conflict_resolved_on_the_server(server: Server, key: str) -> None:
    first, second = server.client(), server.client()
    before = first.status()

    def change(root: Any) -> None:
        if key == "length":
            root[key].change(1)
        else:
            root[key].value += 1

    _concurrent_changes(first, second, change)
    after = first.status()
    assert after["commits"] == before["commits"] + 2
    assert after["conflicts_resolved"] == before["conflicts_resolved"] + 1

    def merged(root: Any) -> bool:
        return (root[key]() if key == "length" else root[key].value) == 2

    for client in (first, second):
        wait_until(
            lambda c=client: c.sees(merged), "the merged value", timeout=PROMPTLY
        )


@pytest.mark.parametrize("key", ["length", "counter"])
def test_client_conflict_resolution(
    tmp_path: Any, msgpack: bool, resources: contextlib.ExitStack, key: str
) -> None:
    server = start_server(tmp_path, msgpack, resources, client_conflict_resolution=True)
    first, second = server.client(), server.client()
    before = first.status()

    def change(root: Any) -> None:
        if key == "length":
            root[key].change(1)
        else:
            root[key].value += 1

    # The server hands the conflict back; the ZEO client resolves and
    # votes again, so the commit succeeds.
    _concurrent_changes(first, second, change)
    after = first.status()
    assert after["commits"] == before["commits"] + 2
    assert after["conflicts"] >= before["conflicts"] + 1
    assert after["conflicts_resolved"] == before["conflicts_resolved"]

    def merged(root: Any) -> bool:
        return (root[key]() if key == "length" else root[key].value) == 2

    for client in (first, second):
        wait_until(
            lambda c=client: c.sees(merged), "the merged value", timeout=PROMPTLY
        )

    # An object without a resolver still conflicts.
    def plain(root: Any) -> None:
        root["item"].value += 1

    with pytest.raises(ConflictError):
        _concurrent_changes(first, second, plain)
    second.abort()


# -- MVCC ---------------------------------------------------------------------


def test_connection_keeps_its_snapshot_until_it_syncs(server: Server) -> None:
    reader, writer = server.client(), server.client()
    reader.sync()
    old_root = reader.root
    old_tid = reader.storage.lastTransaction()
    # "item" stays a ghost in the reader: it will be loaded after the commit.
    assert old_root["counter"].value == 0
    writer.sync()
    writer.root["item"].value = "new"
    writer.root["counter"].value = 42
    writer.root["added"] = Item("added")
    writer.commit()
    new_tid = writer.storage.lastTransaction()
    assert new_tid > old_tid
    # The reader's storage got the invalidation...
    wait_until(
        lambda: reader.storage.lastTransaction() == new_tid,
        "the invalidation",
        timeout=PROMPTLY,
    )
    # ...but its open transaction still reads the old snapshot, both for
    # objects it had loaded and for ones it loads only now (loadBefore).
    assert reader.root["counter"].value == 0
    assert reader.root["item"].value == 0
    assert "added" not in reader.root
    reader.sync()
    assert reader.root["counter"].value == 42
    assert reader.root["item"].value == "new"
    assert reader.root["added"].value == "added"


# -- oids ---------------------------------------------------------------------


def test_new_oids_never_repeat_across_concurrent_clients(server: Server) -> None:
    clients = [server.client() for _ in range(4)]
    per_client = 600  # six server round trips of 100 oids each
    allocated: list[list[bytes]] = [[] for _ in clients]
    failures: list[BaseException] = []
    start = threading.Barrier(len(clients))

    def allocate(index: int) -> None:
        try:
            start.wait(PROMPTLY)
            new_oid = clients[index].storage.new_oid
            allocated[index].extend(new_oid() for _ in range(per_client))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=allocate, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PROMPTLY * 3)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures
    every = [oid for oids in allocated for oid in oids]
    assert len(every) == 4 * per_client
    assert len(set(every)) == len(every)
    existing = {clients[0].root[key]._p_oid for key in ("item", "length", "counter")}
    existing.add(b"\0" * 8)
    assert not existing & set(every)


# -- persistent caches and getInvalidations -----------------------------------


def test_reconnecting_persistent_cache_is_brought_up_to_date(
    server: Server, tmp_path: Any
) -> None:
    var = tmp_path / "client-var"
    var.mkdir()
    writer = server.client()
    base = writer.status()
    assert base["connections"] == 1

    cached = Client(server.address, client="cached", var=str(var))
    try:
        assert cached.root["item"].value == 0  # now in the persistent cache
        assert writer.status()["connections"] == 2
    finally:
        cached.close()
    assert list(var.glob("cached-1.zec"))
    wait_until(
        lambda: writer.status()["connections"] == 1, "the disconnect", timeout=PROMPTLY
    )

    writer.sync()
    writer.root["item"].value = "changed while away"
    writer.commit()
    after_commit = writer.status()
    assert after_commit["commits"] == base["commits"] + 1

    cached = server.client(client="cached", var=str(var))
    assert writer.status()["connections"] == 2
    # Verified against the server's recent invalidations, not dropped.
    assert cached.storage._server.client.verify_result == "quick verification"
    assert cached.root["item"].value == "changed while away"
    after = writer.status()
    assert after["loads"] > after_commit["loads"]  # the stale record reloaded
    assert after["commits"] == after_commit["commits"]


# -- info ---------------------------------------------------------------------


def test_info_arrives_before_tpc_finish_returns(
    tmp_path: Any, msgpack: bool, resources: contextlib.ExitStack
) -> None:
    # A FileStorage's exact figures: RelStorage's are the database's
    # estimates, which the server refreshes every few seconds.
    server = start_server(tmp_path, msgpack, resources)
    committer = server.client()
    for round_ in range(5):
        length, size = len(committer.storage), committer.storage.getSize()
        committer.sync()
        committer.root[f"info{round_}"] = Item(round_)
        committer.commit()
        # No waiting: info({length, size}) came before the tpc_finish reply.
        assert len(committer.storage) == length + 1
        assert committer.storage.getSize() > size


# -- registration -------------------------------------------------------------


def test_register_with_an_unknown_storage_name(server: Server, msgpack: bool) -> None:
    raw = server.raw()
    assert raw.protocol == (b"M5" if msgpack else b"Z5")
    event = raw.call("register", "no-such-storage", False)
    assert isinstance(event, ErrorReply), event
    assert event.class_name == "builtins.ValueError"
    assert "unknown storage" in str(event.payload[0])
    assert "no-such-storage" in str(event.payload[0])
    # The right name still works on the same connection.
    event = raw.call("register", "1", False)
    assert isinstance(event, Reply), event


def test_read_only_server(
    tmp_path: Any, msgpack: bool, resources: contextlib.ExitStack
) -> None:
    path = str(tmp_path / "Data.fs")
    db = ZODB.DB(FileStorage(path))
    try:
        with db.transaction() as connection:
            connection.root()["item"] = Item("kept")
    finally:
        db.close()
    thread = ServerThread({"1": FileStorage(path)}, msgpack=msgpack, read_only=True)
    address = thread.start()
    resources.callback(thread.stop)
    server = Server(address, resources)

    raw = server.raw()
    event = raw.call("register", "1", False)
    assert isinstance(event, ErrorReply), event
    assert event.class_name == "ZODB.POSException.ReadOnlyError"
    event = raw.call("register", "1", True)
    assert isinstance(event, Reply), event
    event = raw.call("new_oids", 1)
    assert isinstance(event, ErrorReply), event
    assert event.class_name == "ZODB.POSException.ReadOnlyError"

    reader = server.client(read_only=True)
    assert reader.storage.isReadOnly()
    assert reader.root["item"].value == "kept"
    reader.root["item"].value = "changed"
    with pytest.raises(ReadOnlyError):
        reader.commit()
    reader.abort()

    fallback = server.client(read_only_fallback=True)
    assert fallback.storage.isReadOnly()
    assert fallback.root["item"].value == "kept"
