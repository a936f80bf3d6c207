"""A client killed (or stopped) mid-vote, holding the commit lock.

The victim is a ZEO 6 ``ClientStorage`` in a Python process of its own
(``VICTIM``): it begins a transaction, stores one new object and votes, so
the server grants it the commit lock, then says so on its stdout and
sleeps, never finishing.  Meanwhile another client (``Bystander``, in this
process) begins its own commit; its vote waits for the lock (the server's
``server_status()`` counts it ``waiting``).  Then the victim gets:

``SIGKILL``  the kernel closes its socket, so the server sees the
             disconnect at once, aborts the victim's transaction and hands
             the lock on, with or without a ``transaction-timeout``;
``SIGSTOP``  its connection stays open and silent, so only the server's
             ``transaction-timeout`` frees the lock: the bystander's commit
             lands about that long after the victim's vote, not before.

``vote_then_signal`` runs one such trial and returns its times
(``Trial``); it fails when the bystander's commit fails or does not come
within ``deadline`` seconds of the signal, or when the victim's object is
visible afterwards.  ``check_file`` checks the file once the server is
stopped: ``fstest`` passes, every bystander's object is there with its
value, no victim's object is.  ``run_trials`` runs a series of trials on
one server and checks what a signal implies: after a SIGKILL the
bystander's commit lands before a ``transaction-timeout`` would have freed
the lock; after a SIGSTOP not before it (less ``EARLY``), and the server
logged the timeout.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.scripts import fstest
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle
from ZODB.utils import z64

from support.server_processes import ServerProcess
from support.waiting import wait_until

#: The victim: votes, prints the oid it stored, and sleeps unfinished.
VICTIM = """\
import sys, time
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle
from ZODB.utils import z64

storage = ClientStorage((sys.argv[1], int(sys.argv[2])), wait_timeout=60)
metadata = TransactionMetaData()
storage.tpc_begin(metadata)
oid = storage.new_oid()
storage.store(oid, z64, zodb_pickle(MinPO("victim")), "", metadata)
storage.tpc_vote(metadata)
print(oid.hex(), flush=True)
time.sleep(3600)
"""
#: How long the victim may take to start, connect and vote.
VICTIM_START = 60.0
#: How long the bystander's vote may take to be seen waiting for the lock.
WAITING = 30.0
#: How early (before ``transaction-timeout`` after the victim's vote was
#: answered) the lock of a stopped victim may be seen free: the lock was
#: granted a little before the answer reached the victim and its parent.
EARLY = 0.5


@dataclass(frozen=True)
class Trial:
    """One victim's trial (times in seconds)."""

    signal: str
    #: The victim's vote returned (its line read) to its signal.
    vote_to_signal: float
    #: The signal to the bystander's ``tpc_finish`` returning.
    signal_to_commit: float

    @property
    def vote_to_commit(self) -> float:
        return self.vote_to_signal + self.signal_to_commit


@dataclass
class Bystander:
    """The client whose commit waits for the victim's lock."""

    address: tuple[str, int]
    storage: ClientStorage = field(init=False)
    #: oid -> value of every object it committed.
    committed: dict[bytes, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.storage = ClientStorage(self.address, wait_timeout=60)

    def commit(self, value: str) -> tuple[bytes, float]:
        """Commit one new object holding ``value``: its oid, and when
        ``tpc_finish`` returned (``time.monotonic``)."""
        storage = self.storage
        metadata = TransactionMetaData()
        storage.tpc_begin(metadata)
        oid = storage.new_oid()
        storage.store(oid, z64, zodb_pickle(MinPO(value)), "", metadata)
        storage.tpc_vote(metadata)
        storage.tpc_finish(metadata)
        finished = time.monotonic()
        self.committed[oid] = value
        return oid, finished

    def close(self) -> None:
        self.storage.close()


@dataclass
class Victims:
    """The victims' processes and oids, for the checks and the cleanup."""

    directory: Path
    oids: list[bytes] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, address: tuple[str, int]) -> subprocess.Popen[bytes]:
        """Start a victim; return once it has voted (holds the lock)."""
        with open(self.directory / "victims.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", VICTIM, address[0], str(address[1])],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self.processes.append(process)
        self.oids.append(bytes.fromhex(_read_line(process, VICTIM_START).decode()))
        return process

    def log(self) -> str:
        path = self.directory / "victims.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def reap(self) -> None:
        """Kill (and continue, if stopped) every victim still alive."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.send_signal(signal.SIGCONT)
            process.wait(30)
            assert process.stdout is not None
            process.stdout.close()
        self.processes.clear()


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first line ``process`` writes to its stdout, within ``timeout``."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the victim did not vote within {timeout}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 1024)
            if not chunk:
                raise AssertionError(f"the victim exited ({process.wait()})")
            data += chunk
    return data.strip()


def waiting(status: ClientStorage) -> int:
    """How many clients wait for the commit lock, as the server says."""
    return int(status.server_status()["waiting"])


def vote_then_signal(
    address: tuple[str, int],
    victims: Victims,
    bystander: Bystander,
    status: ClientStorage,
    *,
    signal_number: signal.Signals,
    deadline: float,
) -> Trial:
    """One trial: a victim votes, the bystander's commit waits for the lock,
    the victim gets ``signal_number``; the bystander's commit must land
    within ``deadline`` seconds of the signal.  The victim is left as the
    signal left it (``Victims.reap`` cleans up)."""
    assert waiting(status) == 0
    victim = victims.spawn(address)
    voted = time.monotonic()
    value = f"bystander {len(bystander.committed)}"
    outcome: dict[str, object] = {}

    def commit() -> None:
        try:
            outcome["oid"], outcome["finished"] = bystander.commit(value)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=commit, name="bystander", daemon=True)
    thread.start()
    wait_until(
        lambda: waiting(status) >= 1 or not thread.is_alive(),
        "the bystander's vote to wait for the lock",
        timeout=WAITING,
    )
    assert "error" not in outcome, outcome
    assert thread.is_alive(), "the bystander committed while the victim held the lock"
    signalled = time.monotonic()
    victim.send_signal(signal_number)
    thread.join(deadline)
    assert not thread.is_alive(), (
        f"the bystander did not commit within {deadline}s of the victim's "
        f"{signal_number.name}: the commit lock was not released"
    )
    assert "error" not in outcome, outcome
    finished = outcome["finished"]
    assert isinstance(finished, float)
    # The victim's transaction was aborted: its object does not exist; the
    # bystander's does, with its value.
    victim_oid = victims.oids[-1]
    try:
        status.load(victim_oid)
    except POSKeyError:
        pass
    else:
        raise AssertionError("the victim's voted, unfinished object exists")
    oid = outcome["oid"]
    assert isinstance(oid, bytes)
    data, _ = status.load(oid)
    assert zodb_unpickle(data).value == value
    return Trial(signal_number.name, signalled - voted, finished - signalled)


def check_file(directory: Path, bystander: Bystander, victims: Victims) -> int:
    """Check the stopped server's Data.fs; the number of transactions."""
    path = directory / "Data.fs"
    fstest.check(str(path))
    storage = FileStorage(str(path), read_only=True)
    try:
        for oid, value in bystander.committed.items():
            assert zodb_unpickle(storage.load(oid)[0]).value == value
        for oid in victims.oids:
            try:
                storage.load(oid)
            except POSKeyError:
                continue
            raise AssertionError(f"the victim's object {oid.hex()} was committed")
        return sum(1 for _ in storage.iterator())
    finally:
        storage.close()


def server_with_timeout(
    kind: str, directory: Path, transaction_timeout: float | None
) -> ServerProcess:
    """A server (not started) with ``transaction-timeout`` set, or not."""
    lines = (
        ()
        if transaction_timeout is None
        else (f"transaction-timeout {transaction_timeout}",)
    )
    return ServerProcess(kind, directory, zeo_lines=lines)


@dataclass
class Series:
    """``run_trials``' trials on one server."""

    signal: str
    transaction_timeout: float | None
    trials: list[Trial]
    #: Transactions in the file afterwards (one per bystander's commit).
    transactions: int


def run_trials(
    directory: Path,
    *,
    signal_number: signal.Signals,
    transaction_timeout: float | None,
    trials: int,
    deadline: float,
    kind: str = "ours",
    progress: Callable[[int, Trial], None] | None = None,
) -> Series:
    """``trials`` victims, one after the other, on a server over
    ``directory/Data.fs`` with ``transaction_timeout``, each given
    ``signal_number`` mid-vote; see the module's docstring for what it
    checks.  ``progress`` is called after each trial."""
    stopped = signal_number is signal.SIGSTOP
    assert transaction_timeout is not None or not stopped, "would never end"
    server = server_with_timeout(kind, directory, transaction_timeout)
    victims = Victims(directory)
    done: list[Trial] = []
    with server:
        address = server.start()
        bystander = Bystander(address)
        status = ClientStorage(address, wait_timeout=60)
        try:
            for number in range(1, trials + 1):
                trial = vote_then_signal(
                    address,
                    victims,
                    bystander,
                    status,
                    signal_number=signal_number,
                    deadline=deadline,
                )
                done.append(trial)
                if transaction_timeout is None:
                    pass
                elif stopped:
                    # Not before the timeout freed the lock ...
                    assert trial.vote_to_commit >= transaction_timeout - EARLY, trial
                else:
                    # ... while the disconnect freed it before the timeout.
                    assert trial.vote_to_commit < transaction_timeout, trial
                victims.reap()
                if progress is not None:
                    progress(number, trial)
            if stopped:
                # The server closed the silent connections.
                log = server.log_path.read_text(errors="replace")
                assert "transaction timeout" in log.lower(), server.log()
        finally:
            victims.reap()
            status.close()
            bystander.close()
        assert server.stop() == 0, server.log()
    transactions = check_file(directory, bystander, victims)
    assert transactions == trials == len(victims.oids)
    return Series(signal_number.name, transaction_timeout, done, transactions)
