"""ZEO 6's own ``zeo-nagios`` script run against a ZEO 6 server and against
ours, side by side, with the same traffic on each: the same exit codes, the
same output once the values of the metrics are set aside (the metric names
and their order must match exactly), and the same counters behind the rates.

Both servers are started by ``client.servers.SERVERS`` on a FileStorage of
their own and driven by stock ZEO 6 clients.  The script runs as a child
process, from the venv's ``bin`` next to this interpreter.

Rates are counter deltas divided by the time since the status file was
written (``-u minutes`` by default).  Before the second ``-s`` run the
status file's mtime is set an hour back, so each rate times 60 is the delta
to within a few parts in ten thousand: ``round(rate * 60)`` is the number of
commits (loads, stores, ...) the server counted between the two runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import transaction
import ZODB
from BTrees.Length import Length
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import ConflictError
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle

from client.servers import SERVERS
from support.waiting import wait_until

NAGIOS = Path(sys.executable).with_name("zeo-nagios")
KINDS = {"zeo": "zeo-M5", "ours": "ours-M5"}
PROMPTLY = 10.0

#: What zeo-nagios prints for every storage, in its order.
LEVEL_METRICS = ["active_txns", "connections", "waiting"]
RATE_METRICS = [
    "aborts",
    "commits",
    "conflicts",
    "conflicts_resolved",
    "loads",
    "stores",
]
#: ``-s`` runs back-date the status file by this much (an hour: 60 minutes).
BACKDATE = 3600.0
MINUTES = BACKDATE / 60


@dataclass
class Run:
    """One ``zeo-nagios`` run: its exit code and what it printed."""

    code: int
    out: str
    err: str

    @property
    def metrics(self) -> list[tuple[str, str]]:
        """(name, value) as printed, in order: ``MSG|m1`` then ``| m2`` and
        `` m3`` on the following lines."""
        first, *rest = self.out.splitlines()
        found = [first.partition("|")[2]] if "|" in first else []
        found += [line.removeprefix("| ").removeprefix(" ") for line in rest]
        metrics = []
        for metric in found:
            name, equals, value = metric.partition("=")
            assert equals, f"not a metric: {metric!r} in {self.out!r}"
            metrics.append((name, value))
        return metrics

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.metrics]

    @property
    def shape(self) -> str:
        """The output with every metric's value replaced by ``N``."""
        return re.sub(r"=[^\n]*", "=N", self.out)

    def deltas(self) -> dict[str, int]:
        """What each rate metric stands for: the counter's increase."""
        values = dict(self.metrics)
        return {name: round(float(values[name]) * MINUTES) for name in RATE_METRICS}


class Server:
    """One running server (``kind`` "zeo" or "ours") and its nagios runs."""

    def __init__(self, kind: str, directory: Path, **options: Any) -> None:
        directory.mkdir()
        self.kind = kind
        self.directory = directory
        self.status_path = directory / "nagios-status.json"
        self.address, self._stop = SERVERS[KINDS[kind]](
            str(directory / "Data.fs"), **options
        )
        self.running = True

    @property
    def target(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    def nagios(self, *options: str) -> Run:
        done = subprocess.run(
            [os.fspath(NAGIOS), *options, self.target],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def rates(self) -> Run:
        """``-m -s`` with the status file written an hour ago."""
        back = time.time() - BACKDATE
        os.utime(self.status_path, (back, back))
        return self.nagios("-m", "-s", os.fspath(self.status_path))

    def saved_status(self) -> dict[str, Any]:
        """The server's ``ruok`` answer as zeo-nagios saved it with ``-s``."""
        saved: dict[str, Any] = json.loads(self.status_path.read_text())
        return saved

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._stop()


class Client:
    """A ZEO 6 ClientStorage, a DB and one connection with its own manager."""

    def __init__(self, address: Any) -> None:
        self.storage = ClientStorage(address, wait_timeout=PROMPTLY)
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

    def catch_up(self, other: Client) -> None:
        """Wait until this client has the invalidations of ``other``'s last
        commit, then start a new transaction that sees it."""
        committed = other.storage.lastTransaction()
        wait_until(
            lambda: self.storage.lastTransaction() >= committed,
            "the invalidation of the other client's commit",
            timeout=PROMPTLY,
        )
        self.manager.begin()

    def close(self) -> None:
        self.manager.abort()
        self.connection.close()
        self.db.close()


@dataclass
class Side:
    """A server and the two clients (writer, reader) connected to it."""

    server: Server
    writer: Client
    reader: Client


@pytest.fixture
def servers(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Server]]:
    """Both servers, fresh; ``request.param`` (indirect) gives server options."""
    monkeypatch.chdir(tmp_path)  # ZEO writes its config file into the cwd
    options: dict[str, Any] = getattr(request, "param", {})
    with contextlib.ExitStack() as stack:
        started = {}
        for kind in KINDS:
            server = Server(kind, tmp_path / kind, **options)
            stack.callback(server.stop)
            started[kind] = server
        yield started


@pytest.fixture
def sides(servers: dict[str, Server]) -> Iterator[dict[str, Side]]:
    """Both servers with a writer and a reader connected, and the writer's
    first commit made (a root holding a MinPO and a Length), which the
    reader has seen and loaded: every cache is settled before a test's first
    zeo-nagios run, so what the traffic loads is the same on both."""
    with contextlib.ExitStack() as stack:
        made = {}
        for kind, server in servers.items():
            writer = Client(server.address)
            stack.callback(writer.close)
            reader = Client(server.address)
            stack.callback(reader.close)
            writer.root["item"] = MinPO(0)
            writer.root["length"] = Length()
            writer.manager.commit()
            reader.catch_up(writer)
            reader.root["item"]._p_activate()
            reader.root["length"]._p_activate()
            made[kind] = Side(server, writer, reader)
        yield made


def both(runs: dict[str, Run]) -> tuple[Run, Run]:
    return runs["zeo"], runs["ours"]


def assert_same_run(runs: dict[str, Run]) -> None:
    """Exit codes and output equal, up to the metrics' values; the metric
    names and their order exactly equal."""
    zeo, ours = both(runs)
    assert (ours.code, ours.shape, ours.err) == (zeo.code, zeo.shape, zeo.err)
    assert ours.names == zeo.names


# The traffic between two ``-s`` runs, the same on both servers.


def commits_and_loads(side: Side) -> None:
    """Three commits of a new persistent object each; the reader loads them."""
    for number in range(3):
        side.writer.root[f"new{number}"] = PersistentMapping(number=number)
        side.writer.manager.commit()
    side.reader.catch_up(side.writer)
    for number in range(3):
        assert side.reader.root[f"new{number}"]["number"] == number


def aborts(side: Side) -> None:
    """A transaction aborted before its vote, another after it."""
    storage = side.writer.storage
    oid = storage.new_oid()
    for vote in (False, True):
        metadata = TransactionMetaData()
        storage.tpc_begin(metadata)
        storage.store(oid, b"\0" * 8, zodb_pickle(MinPO(1)), "", metadata)
        if vote:
            storage.tpc_vote(metadata)
        storage.tpc_abort(metadata)


def conflict(side: Side) -> None:
    """A store on a stale serial of an object that cannot resolve: the vote
    raises ConflictError, and the client aborts as ZODB would."""
    storage = side.writer.storage
    oid = side.writer.root["item"]._p_oid
    _, serial = storage.load(oid)
    metadata = TransactionMetaData()
    storage.tpc_begin(metadata)
    storage.store(oid, serial, zodb_pickle(MinPO(1)), "", metadata)
    storage.tpc_vote(metadata)
    storage.tpc_finish(metadata)
    metadata = TransactionMetaData()
    storage.tpc_begin(metadata)
    storage.store(oid, serial, zodb_pickle(MinPO(2)), "", metadata)
    with pytest.raises(ConflictError):
        storage.tpc_vote(metadata)
    storage.tpc_abort(metadata)


def resolved_conflict(side: Side) -> None:
    """Writer and reader both change a Length from the same revision; the
    server resolves the second commit's conflict (a ConflictError here if
    it did not)."""
    for client in (side.writer, side.reader):
        client.manager.begin()
        assert client.root["length"]() == 0
    for client in (side.writer, side.reader):
        client.root["length"].change(1)
        client.manager.commit()


def _deltas(**counted: int) -> dict[str, int]:
    return {name: counted.get(name, 0) for name in RATE_METRICS}


#: Each traffic with what ZEO 6 counts for it (between the two ``-s`` runs).
TRAFFIC: dict[str, tuple[Callable[[Side], None], dict[str, int]]] = {
    "commits-and-loads": (commits_and_loads, _deltas(commits=3, stores=6, loads=4)),
    "aborts": (aborts, _deltas(aborts=2, stores=2)),
    # ZEO counts an abort only when the client's tpc_abort finds the
    # transaction still open; a failed vote has already closed it.
    "conflict": (conflict, _deltas(commits=1, stores=2, conflicts=1)),
    # ZEO 6's server never counts a resolved conflict: the storage resolves
    # it inside store/vote and ZEO's StorageServer does not look.
    "resolved-conflict": (
        resolved_conflict,
        _deltas(commits=2, stores=2),
    ),
}

#: Where our counts differ from ZEO 6's, on purpose (README, "How it
#: differs from ZEO"): we count the conflicts the server resolved.
OURS_DIFFER = {"resolved-conflict": {"conflicts_resolved": 1}}


def test_a_fresh_storage_is_reported_empty_alike(servers: dict[str, Server]) -> None:
    for options in [(), ("-m",)]:
        runs = {kind: server.nagios(*options) for kind, server in servers.items()}
        assert_same_run(runs)
        zeo, ours = both(runs)
        assert zeo.code == 1  # WARNING
        assert zeo.out.splitlines()[0].partition("|")[0] == "Empty storage '1'"
        # Nothing to normalise: no client, no transaction.
        assert ours.out == zeo.out
    assert zeo.out == "Empty storage '1'|active_txns=0\n| connections=0\n waiting=0\n"


def test_plain_and_metrics_alike_with_clients_connected(
    sides: dict[str, Side],
) -> None:
    plain = {kind: side.server.nagios() for kind, side in sides.items()}
    assert_same_run(plain)
    zeo, ours = both(plain)
    assert (zeo.code, zeo.out) == (0, "OK\n")
    assert ours.out == zeo.out

    metrics = {kind: side.server.nagios("-m") for kind, side in sides.items()}
    assert_same_run(metrics)
    zeo, ours = both(metrics)
    assert zeo.code == 0
    assert zeo.names == LEVEL_METRICS
    # Levels, not rates: two clients, idle, on both.
    assert zeo.out == "OK|active_txns=0\n| connections=2\n waiting=0\n"
    assert ours.out == zeo.out


@pytest.mark.parametrize("traffic", sorted(TRAFFIC))
def test_rates_alike(sides: dict[str, Side], traffic: str) -> None:
    make_traffic, zeo_counts = TRAFFIC[traffic]
    first = {
        kind: side.server.nagios("-m", "-s", os.fspath(side.server.status_path))
        for kind, side in sides.items()
    }
    assert_same_run(first)
    assert first["zeo"].names == LEVEL_METRICS  # no status file yet: no rates
    assert first["ours"].out == first["zeo"].out

    for side in sides.values():
        make_traffic(side)

    second = {kind: side.server.rates() for kind, side in sides.items()}
    assert_same_run(second)
    zeo, ours = both(second)
    assert zeo.code == 0
    assert zeo.names == LEVEL_METRICS + RATE_METRICS
    assert (
        zeo.shape
        == "OK|active_txns=N\n| "
        + "\n ".join(f"{name}=N" for name in LEVEL_METRICS[1:] + RATE_METRICS)
        + "\n"
    )
    levels = len(LEVEL_METRICS)
    assert ours.metrics[:levels] == zeo.metrics[:levels]
    assert zeo.deltas() == zeo_counts
    said = f"ours said:\n{ours.out}ZEO 6 said:\n{zeo.out}"
    assert ours.deltas() == {**zeo.deltas(), **OURS_DIFFER.get(traffic, {})}, said


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    """A saved ruok answer with the times and tids shown as their shape."""
    comparable = {}
    for storage_id, storage in status.items():
        storage = dict(storage)
        assert re.fullmatch(r"[0-9a-f]{16}", storage["last-transaction"])
        tid = int(storage["last-transaction"], 16)
        storage["last-transaction"] = "TID" if tid else "NONE"
        # time.ctime() of the server's start: "Fri Dec  4 19:23:33 2026"
        time.strptime(storage["start"], "%a %b %d %H:%M:%S %Y")
        storage["start"] = "CTIME"
        if "sameple-time" in storage:  # zeo-nagios's own, misspelt
            storage["sameple-time"] = "TIME"
        comparable[storage_id] = storage
    return comparable


@pytest.mark.parametrize(
    "servers",
    [{}, {"transaction_timeout": 30}],
    ids=["no-timeout", "timeout"],
    indirect=True,
)
def test_the_saved_status_is_alike(sides: dict[str, Side]) -> None:
    """The ruok answer zeo-nagios saves with ``-s``: the same keys in the
    same order, the same counters after the same traffic, the same values
    but for the times and the tid."""
    for side in sides.values():
        side.server.nagios("-m", "-s", os.fspath(side.server.status_path))
        commits_and_loads(side)
        aborts(side)
    runs = {kind: side.server.rates() for kind, side in sides.items()}
    assert_same_run(runs)
    saved = {kind: side.server.saved_status() for kind, side in sides.items()}
    assert list(saved["ours"]["1"]) == list(saved["zeo"]["1"])
    ours, zeo = _comparable(saved["ours"]), _comparable(saved["zeo"])
    assert list(ours) == list(zeo) == ["1"]
    assert ours["1"] == zeo["1"]


def test_a_stopped_server_is_critical_alike(servers: dict[str, Server]) -> None:
    for server in servers.values():
        client = Client(server.address)
        try:
            client.root["x"] = 1
            client.manager.commit()
        finally:
            client.close()
        assert server.nagios().out == "OK\n"  # up, then stopped
        server.stop()
    status = os.fspath(servers["zeo"].directory.parent / "status.json")
    for options in [(), ("-m",), ("-m", "-s", status)]:
        runs = {kind: server.nagios(*options) for kind, server in servers.items()}
        assert_same_run(runs)
        zeo, ours = both(runs)
        assert zeo.code == 2  # CRITICAL
        assert re.fullmatch(
            r"Can't connect \[Errno \d+\] Connection refused\n", zeo.out
        )
        assert ours.out == zeo.out
    assert not os.path.exists(status)
