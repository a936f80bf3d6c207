"""The transaction spool: its file format, its file, and when a pending
transaction uses it."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage

from zodbserver.errors import TransactionSpoolError
from zodbserver.server.commit import OPERATION_OVERHEAD, PendingTransaction
from zodbserver.server.settings import ServerSettings
from zodbserver.server.spool import (
    CHECK_READ,
    DELETE,
    FILE_PREFIX,
    HEADER_SIZE,
    RESTORE,
    STORE,
    UNDO,
    Operation,
    Spool,
    SpoolLocation,
    read_operations,
    write_operation,
)
from zodbserver.server.storage_server import HostedStorage

OID = b"\0" * 7 + b"\1"
SERIAL = b"\0" * 7 + b"\2"

EVERY_KIND: list[Operation] = [
    (STORE, OID, None, b"new object"),
    (STORE, OID, SERIAL, b""),
    (STORE, OID, SERIAL, b"x" * 300_000),  # longer than the file buffer
    (CHECK_READ, OID, SERIAL),
    (CHECK_READ, OID, None),
    (DELETE, OID, SERIAL),
    (RESTORE, OID, SERIAL, b"record", SERIAL),
    (RESTORE, OID, SERIAL, None, None),
    (RESTORE, OID, SERIAL, b"", None),
    (UNDO, b"transaction id"),
    (UNDO, b""),
]


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{FILE_PREFIX}*"))


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    spool = Spool(str(tmp_path))
    yield spool
    spool.close()


# -- the format -------------------------------------------------------------


def encode(operations: list[Operation]) -> bytes:
    stream = io.BytesIO()
    written = sum(write_operation(stream, operation) for operation in operations)
    assert written == stream.tell()
    return stream.getvalue()


def test_every_kind_round_trips_in_order() -> None:
    encoded = encode(EVERY_KIND)
    decoded = list(read_operations(io.BytesIO(encoded), len(encoded)))
    assert decoded == EVERY_KIND
    assert [type(field) for op in decoded for field in op[1:]] == [
        type(field) for op in EVERY_KIND for field in op[1:]
    ]


def test_reading_stops_at_the_length_given() -> None:
    encoded = encode(EVERY_KIND[:3])
    first = len(encode(EVERY_KIND[:1]))
    assert list(read_operations(io.BytesIO(encoded), first)) == EVERY_KIND[:1]
    assert list(read_operations(io.BytesIO(encoded), 0)) == []


def test_a_truncated_file_raises() -> None:
    encoded = encode(EVERY_KIND)
    short = encoded[:-1]
    with pytest.raises(TransactionSpoolError, match="ends in the middle"):
        list(read_operations(io.BytesIO(short), len(encoded), "spool-file"))


def test_a_damaged_header_raises() -> None:
    encoded = bytearray(encode(EVERY_KIND))
    encoded[2] ^= 0x01  # a length of the first record
    with pytest.raises(TransactionSpoolError, match="spool-file: record header"):
        list(read_operations(io.BytesIO(bytes(encoded)), len(encoded), "spool-file"))


def test_a_record_past_the_end_raises() -> None:
    encoded = encode(EVERY_KIND[:1])
    with pytest.raises(TransactionSpoolError, match="past the spool's end"):
        list(read_operations(io.BytesIO(encoded), len(encoded) - 1))
    with pytest.raises(TransactionSpoolError, match="past the spool's end"):
        list(read_operations(io.BytesIO(encoded), HEADER_SIZE - 1))


oids = st.binary(min_size=8, max_size=8)
optional = st.none() | st.binary(max_size=40)
operations = st.one_of(
    st.tuples(st.just(STORE), oids, st.none() | oids, st.binary(max_size=3000)),
    st.tuples(st.just(CHECK_READ), oids, st.none() | oids),
    st.tuples(st.just(DELETE), oids, oids),
    st.tuples(st.just(RESTORE), oids, oids, optional, st.none() | oids),
    st.tuples(st.just(UNDO), st.binary(max_size=20)),
)


@given(st.lists(operations, max_size=30))
def test_any_operations_round_trip(ops: list[Operation]) -> None:
    encoded = encode(ops)
    assert list(read_operations(io.BytesIO(encoded), len(encoded))) == ops


@given(st.lists(operations, min_size=1, max_size=10), st.data())
def test_any_truncation_raises_after_a_prefix(
    ops: list[Operation], data: st.DataObject
) -> None:
    encoded = encode(ops)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    read: list[Operation] = []
    with pytest.raises(TransactionSpoolError):
        read.extend(read_operations(io.BytesIO(encoded[:cut]), len(encoded)))
    assert read == ops[: len(read)]


@given(st.binary(max_size=200), st.integers(0, 400))
def test_garbage_raises_only_the_spool_error(garbage: bytes, length: int) -> None:
    try:
        for operation in read_operations(io.BytesIO(garbage), length):
            assert operation[0] in {STORE, CHECK_READ, DELETE, RESTORE, UNDO}
    except TransactionSpoolError:
        pass


# -- the file ---------------------------------------------------------------


def test_the_spool_file_round_trips_and_is_removed(
    spool: Spool, tmp_path: Path
) -> None:
    for operation in EVERY_KIND:
        spool.add(operation)
    [path] = spool_files(tmp_path)
    assert str(path) == spool.path
    assert path.name.endswith(".spool")
    assert list(spool) == EVERY_KIND
    assert list(spool) == EVERY_KIND  # a second replay reads it all again
    spool.close()
    assert spool_files(tmp_path) == []
    spool.close()  # again: nothing to do


def test_operations_added_after_a_replay_follow_it(spool: Spool) -> None:
    """After conflicts the client stores again and votes again: the next
    replay reads the earlier operations and then the new ones."""
    spool.add(EVERY_KIND[0])
    replay = iter(spool)
    assert next(replay) == EVERY_KIND[0]  # a replay abandoned half way
    spool.add(EVERY_KIND[1])
    spool.add(EVERY_KIND[2])
    assert list(spool) == EVERY_KIND[:3]


@settings(max_examples=25)
@given(st.lists(st.lists(operations, max_size=8), min_size=1, max_size=4))
def test_any_additions_and_replays_keep_the_order(
    tmp_path_factory: pytest.TempPathFactory, rounds: list[list[Operation]]
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(str(directory))
    try:
        added: list[Operation] = []
        for round_ in rounds:
            for operation in round_:
                spool.add(operation)
            added.extend(round_)
            assert list(spool) == added
    finally:
        spool.close()
    assert spool_files(directory) == []


def test_a_truncated_spool_file_raises(spool: Spool) -> None:
    for operation in EVERY_KIND:
        spool.add(operation)
    list(spool)  # flushed
    os.truncate(spool.path, os.path.getsize(spool.path) - 10)
    with pytest.raises(TransactionSpoolError, match=re.escape(spool.path)):
        list(spool)


def test_a_damaged_spool_file_raises(spool: Spool) -> None:
    spool.add(EVERY_KIND[0])
    spool.add(EVERY_KIND[3])
    list(spool)
    with open(spool.path, "r+b") as file:
        file.seek(0)
        file.write(b"\x09")  # no such kind
    with pytest.raises(TransactionSpoolError, match="damaged"):
        list(spool)


def test_a_failed_write_breaks_the_spool(spool: Spool) -> None:
    spool.add(EVERY_KIND[0])
    with pytest.raises(TypeError):
        spool.add((STORE, OID, None, 42))  # type: ignore[arg-type]
    with pytest.raises(TransactionSpoolError, match="an earlier write failed"):
        spool.add(EVERY_KIND[0])
    with pytest.raises(TransactionSpoolError, match="an earlier write failed"):
        list(spool)


def test_a_spool_read_after_its_file_is_unlinked_still_reads(spool: Spool) -> None:
    """Read through the descriptor it opened: removing the name (another
    server's clean-up, say) does not take the data away."""
    spool.add(EVERY_KIND[0])
    os.remove(spool.path)
    spool.add(EVERY_KIND[1])
    assert list(spool) == EVERY_KIND[:2]


# -- where the file goes ------------------------------------------------------


def test_a_file_storage_spools_beside_its_data_fs(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path / "Data.fs"))
    try:
        location = SpoolLocation.of(storage)
    finally:
        storage.close()
    assert location == SpoolLocation(
        str(tmp_path), f"{FILE_PREFIX}Data.fs-", exclusive=True
    )
    spool = location.create()
    try:
        assert os.path.dirname(spool.path) == str(tmp_path)
        assert os.path.basename(spool.path).startswith(".zodbserver-txn-Data.fs-")
    finally:
        spool.close()


def test_a_read_only_file_storage_does_not_own_its_directory(tmp_path: Path) -> None:
    FileStorage(str(tmp_path / "Data.fs")).close()
    storage = FileStorage(str(tmp_path / "Data.fs"), read_only=True)
    try:
        assert not SpoolLocation.of(storage).exclusive
    finally:
        storage.close()


def test_a_long_storage_name_is_hashed(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path / ("x" * 200 + ".fs")))
    try:
        location = SpoolLocation.of(storage)
    finally:
        storage.close()
    assert len(location.prefix) == len(FILE_PREFIX) + 16 + 1
    location.create().close()


def test_other_storages_spool_in_the_temporary_directory() -> None:
    location = SpoolLocation.of(MappingStorage())
    assert location == SpoolLocation(None, FILE_PREFIX, exclusive=False)
    assert location.remove_stale() == []


def test_only_exact_leftovers_are_removed_at_start(tmp_path: Path) -> None:
    FileStorage(str(tmp_path / "Data.fs")).close()
    kept = [
        ".zodbserver-txn-Data.fs-abc_123.spool.bak",
        ".zodbserver-txn-Data.fs-abc-123.spool",  # not a tempfile name
        ".zodbserver-txn-Data.fs-x-abc_123.spool",  # storage "Data.fs-x"
        ".zodbserver-txn-Other.fs-abc_123.spool",
        "zodbserver-txn-Data.fs-abc_123.spool",
        "Data.fs.tmp",
    ]
    stale = [".zodbserver-txn-Data.fs-abc_123.spool", ".zodbserver-txn-Data.fs-z.spool"]
    for name in kept + stale:
        (tmp_path / name).write_bytes(b"left over")
    storage = FileStorage(str(tmp_path / "Data.fs"))
    try:
        HostedStorage("1", storage, ServerSettings())
    finally:
        storage.close()
    remaining = {path.name for path in tmp_path.iterdir()}
    assert remaining.isdisjoint(stale)
    assert remaining.issuperset(kept)


def test_a_read_only_storage_removes_nothing(tmp_path: Path) -> None:
    FileStorage(str(tmp_path / "Data.fs")).close()
    leftover = tmp_path / ".zodbserver-txn-Data.fs-abc_123.spool"
    leftover.write_bytes(b"maybe another server's")
    storage = FileStorage(str(tmp_path / "Data.fs"), read_only=True)
    try:
        HostedStorage("1", storage, ServerSettings())
    finally:
        storage.close()
    assert leftover.exists()


# -- when a pending transaction spools -----------------------------------------


def pending(tmp_path: Path, threshold: int) -> PendingTransaction:
    return PendingTransaction(
        "token",
        TransactionMetaData(),
        spool_threshold=threshold,
        spool_location=SpoolLocation(str(tmp_path)),
    )


def add(txn: PendingTransaction, operation: Operation) -> None:
    """As the session adds: with the size of a store's or restore's data."""
    data = operation[3] if len(operation) > 3 else None
    txn.add(operation, 0 if data is None else len(data))


def test_a_small_transaction_stays_in_memory(tmp_path: Path) -> None:
    txn = pending(tmp_path, threshold=1000 + 3 * OPERATION_OVERHEAD)
    add(txn, (STORE, OID, None, b"x" * 500))
    add(txn, (CHECK_READ, OID, SERIAL))
    add(txn, (RESTORE, OID, SERIAL, b"x" * 500, None))
    assert txn.spool is None
    assert spool_files(tmp_path) == []
    assert list(txn.replay()) == txn.operations
    txn.close()


def test_passing_the_threshold_spools_everything_in_order(tmp_path: Path) -> None:
    txn = pending(tmp_path, threshold=1000 + 3 * OPERATION_OVERHEAD)
    added: list[Operation] = [
        (STORE, OID, None, b"x" * 500),
        (CHECK_READ, OID, SERIAL),
        (RESTORE, OID, SERIAL, b"x" * 501, None),
        (DELETE, OID, SERIAL),
        (UNDO, b"tid"),
    ]
    for operation in added:
        add(txn, operation)
    assert txn.spool is not None
    assert txn.operations == []
    assert len(spool_files(tmp_path)) == 1
    assert list(txn.replay()) == added
    txn.close()
    assert spool_files(tmp_path) == []
    assert txn.spool is None


def test_many_operations_without_data_spool_too(tmp_path: Path) -> None:
    txn = pending(tmp_path, threshold=10 * OPERATION_OVERHEAD)
    for _ in range(11):
        add(txn, (DELETE, OID, SERIAL))
    assert txn.spool is not None
    txn.close()


def test_a_spill_that_fails_keeps_the_operations(tmp_path: Path) -> None:
    txn = pending(tmp_path / "missing", threshold=1)
    with pytest.raises(FileNotFoundError):
        add(txn, (STORE, OID, None, b"data"))
    assert txn.spool is None
    assert txn.operations == [(STORE, OID, None, b"data")]
