"""Live protocol fuzzing: a million frames at a real server, a bystander served.

::

    .venv/bin/python -m stress.fuzz --frames 1000000 [--seed S]
        [--connections 8] [--processes 2] [--output stress/results/fuzz.md]
        [--known-bugs avoid|send] [--hang-timeout 60]

What it does
------------

1. Starts our server as a child process (``python -m zodbserver.cli -C
   conf fg`` on 127.0.0.1, a FileStorage with a blob directory in a
   temporary directory, ``max-frame-size 1MB`` so that oversized frames are
   cheap to send).
2. Seeds it with objects and blobs committed by a stock ZEO 6 client.
3. Starts a *bystander*: a well-behaved stock ZEO 6 client (a writer and a
   reader ``ClientStorage``, in a process of its own) that commits a change
   every ``--interval`` seconds and reads everything back through the
   reader (``server_sync``: after its sync it must see the writer's last
   commit), verifying each value and blob; it records its latencies and
   every failure.
4. Drives ``--connections`` fuzzing connections (threads, in ``--processes``
   processes) until ``--frames`` frames have been sent in all.  A
   connection runs *sessions*, one per TCP connection:

   * structure-aware (most): a handshake in M5 or Z5, ``register``, then
     actions drawn from a grammar of real sessions -- loads, ``new_oids``,
     whole transactions (``tpc_begin``, ``storea``, deletes, restores,
     undos, read checks, streamed and shared-directory blob stores,
     ``vote``, ``tpc_finish`` or ``tpc_abort``), iteration, blob
     downloads, ``getInvalidations``, pack and undo logs, heartbeats --
     mutated: wrong, extra or missing arguments, wrong types (ints for
     bytes, huge ints, floats, nested containers, None, sets), unknown,
     misspelled or swapped methods, the sync/async flag flipped or odd,
     msgids of odd types, messages of the wrong shape, out-of-order calls
     (vote before tpc_begin, finish twice, stores after the vote ...),
     frames in the other encoding, pickle protocols 2 to 5, msgpack
     without the bin type, bit flips, inserted and deleted bytes,
     truncated, lying, empty and oversized frames, frames dropped,
     duplicated and swapped;
   * random: random bytes as frames after a valid handshake; random bytes
     instead of a handshake; ``ruok`` probes.

   Every frame is first fed to an *oracle* (``Oracle``: the rules of
   docs/protocol.md, written here independently of the server's code),
   which says what the server must do with it: answer a call (with which
   msgid, and whether the documented argument checks must refuse it),
   take an async call silently, ignore a heartbeat, or close the
   connection (a protocol error).  Calls are pipelined in small batches,
   each ended by a ``ping`` *barrier* whose answer means the server has
   consumed the batch; the connection reads all the while.
5. Classifies every answer: a reply, an error reply whose class is in the
   allow-list below, a close after a protocol error, the server's own
   async calls.  Anything else is a *finding*: an error class outside the
   allow-list, a reply to no outstanding msgid, a frame our client cannot
   decode, an unknown server-side call, invalidations out of order, a
   close the oracle did not expect (or no close where it did), a call not
   answered within ``--hang-timeout`` seconds while the server is alive, an
   argument check that differs from the docs, the server exiting.  Each
   finding keeps a reproducer: the seed, the connection and session, and
   the session's frames in hex (``replay_frames`` sends them again).
6. At the end: the server must be alive and answer; its log is scanned
   for tracebacks (grouped, each group expected or not); the seeded and
   the bystander's data must be intact, and every transaction in the
   storage must be a seeded one, the bystander's, or one whose
   ``tpc_begin`` (with its user and description), ``vote`` and
   ``tpc_finish`` a fuzzer sent (their descriptions start with ``fuzz``);
   no fuzz transaction may touch an object the fuzzers did not create;
   the server must stop cleanly on SIGTERM; ``fstest`` must pass on
   Data.fs; RSS and open file descriptors are reported before and after.

Known bugs, and guards
----------------------

Found by this harness (reported, not fixed here: see the results file).
With ``--known-bugs avoid`` (the default) frames that would trigger them
are *withheld* (not sent, counted), so that a long run explores
everything else instead of corrupting its storage in the first minute;
``--known-bugs send`` sends them, and the end checks then fail.

``K1``  ``tpc_begin(..., tid)``: an explicit tid is passed to the storage
        unchecked; one at or below the last tid commits a transaction out
        of order (``fstest``: "time-stamp reduction"), invalidations go
        backwards.
``K2``  ``tpc_begin(..., status)``: any text is passed to the storage as
        the transaction's status byte; ``"c"`` or ``""`` leave the
        checkpoint flag set, ``"xyz"`` writes a header FileStorage cannot
        open again, ``"é"`` fails in ``tpc_finish`` after the vote.

``K3``  a pickle memo index (``LONG_BINPUT``) makes the unpickler allocate
        8 bytes per entry up to twice the index: gigabytes from a 13-byte
        frame.  Indexes over ``MEMO_CAP`` are never sent, even with ``send``.
``K4``  a stored object at oid ``2**64 - 1`` makes ``new_oids`` fail with
        ``struct.error`` for every client, for good.

Guards that are not bugs, always on (they keep the data-intact checks
meaningful): ``restorea`` of an object the fuzzers did not create
(``restore`` overwrites without a conflict check, by ZODB's design, for
copying storages), and ``undoa`` of a transaction they did not commit.
The grammar itself never stores to objects it did not create and never
learns the serials of those: stores elsewhere can only conflict.

The allow-list
--------------

``DOCUMENTED_ERRORS`` below, from docs/protocol.md and the server code,
plus any other ``ZODB.POSException.POSError`` subclass a storage raises
(``FileStorageError("Already packing")``, ``PackError``), except
corruption errors.  Each class is counted in the results.

In-process use (the test suite's short mode)::

    result = stress.fuzz.run(Options(frames=20_000, seed=1, processes=0))
    assert not result.findings
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copyreg
import hashlib
import io
import json
import math
import multiprocessing
import os
import pickle
import platform
import queue
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from zodbserver.errors import RemoteProtocolError
from zodbserver.protocol import (
    AsyncCall,
    ClientConnection,
    ErrorReply,
    Reply,
    encode_frame,
)

ROOT = Path(__file__).resolve().parent.parent
# The server process is the test suite's, in tests/support, as pytest finds
# it (pythonpath = ["tests"]).
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.report import machine  # noqa: E402

from support.server_processes import ServerProcess  # noqa: E402

Z64 = b"\0" * 8
MAXTID = b"\x7f" + b"\xff" * 7
STORAGE = "1"
#: The server's ``max-frame-size``: small, so that oversized frames are cheap.
MAX_FRAME_SIZE = 1024 * 1024
#: What the server answers a ``ruok`` probe with is one frame of JSON.
STATUS_PROBE = b"ruok"
#: Seconds to wait for the server to close a connection it must close.
CLOSE_TIMEOUT = 20.0
#: Descriptions of the fuzzers' transactions start with this.
FUZZ_MARK = b"fuzz"
FUZZ_USER = b"fuzzer"

# -- the allow-list -----------------------------------------------------------

#: Error classes a client may be sent, and where each is documented.
DOCUMENTED_ERRORS: dict[str, str] = {
    "builtins.TypeError": "argument checks (protocol.md, Server methods); "
    "record_iternext or blobs unsupported by the storage",
    "builtins.ValueError": "unknown storage, duplicate register, Couldn't "
    "pickle response, iterator_record_start of another tid; values the "
    "storage refuses (record_iternext)",
    "builtins.KeyError": "iterator_next/iterator_record_start once the "
    "iterator is gone (as ZEO)",
    "zodbserver.errors.RemoteProtocolError": "unknown method, or a call "
    "before register, sent as a sync call",
    "ZODB.POSException.POSKeyError": "loads of unknown objects or revisions",
    "ZODB.POSException.ReadOnlyError": "writes on a read-only registration",
    "ZODB.POSException.StorageTransactionError": "transaction calls out of "
    "order or with a stale token",
    "ZODB.POSException.StorageError": "access denied; the storage's own",
    "ZODB.POSException.StorageSystemError": "the storage's own",
    "ZODB.POSException.Unsupported": "the storage's own",
    "ZODB.POSException.ConflictError": "stores of stale serials",
    "ZODB.POSException.ReadConflictError": "checkCurrentSerialInTransaction",
    "ZODB.POSException.BTreesConflictError": "conflict resolution",
    "ZODB.POSException.UndoError": "undo, restore of bad transactions",
    "ZODB.POSException.MultipleUndoErrors": "undo",
}


def _resolve_class(name: str) -> type | None:
    """The class an error reply names, looked up among modules already
    imported (nothing is imported or run on behalf of the server)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        value: Any = module
        for attribute in parts[cut:]:
            value = getattr(value, attribute, None)
        return value if isinstance(value, type) else None
    return None


def error_verdict(name: str) -> str | None:
    """``"documented"``, ``"storage"`` (another POSError of the storage's),
    or None: not allowed."""
    if name in DOCUMENTED_ERRORS:
        return "documented"
    if "Corrupt" in name:
        return None
    import ZODB.FileStorage  # noqa: F401 - the storage's error classes, by name
    from ZODB.POSException import POSError

    cls = _resolve_class(name)
    if cls is not None and issubclass(cls, POSError):
        return "storage"
    return None


# -- the methods, as docs/protocol.md describes them -------------------------
#
# Each argument check answers True (documented as valid), False (documented
# as invalid) or None (the docs leave it open: not checked).  These are
# written from the docs, not from server/methods.py, so that the two can
# be compared; ``doc_table_differences`` compares the tables themselves.


def _oid(value: Any) -> bool | None:
    return type(value) is bytes and len(value) == 8


def _opt_oid(value: Any) -> bool | None:
    return value is None or _oid(value)


def _stored_oid(value: Any) -> bool | None:
    """An oid a client may store: below 2**63."""
    return type(value) is bytes and len(value) == 8 and value[0] < 0x80


def _status(value: Any) -> bool | None:
    """``tpc_begin``'s status: ' ', 'p' or 'u' (as text or UTF-8 bytes)."""
    if type(value) is bytes:
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return type(value) is str and value in (" ", "p", "u")


def _writable_text(value: Any) -> bool | None:
    """str or bytes; a str must encode to UTF-8 (no lone surrogates)."""
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    return type(value) is bytes


def _pack_time(value: Any) -> bool | None:
    """Seconds since the epoch, before the year 10000."""
    if _number(value) is not True:
        return _number(value)
    return 0 <= value < 253402300800.0


def _serial(value: Any) -> bool | None:
    if type(value) is bytes:
        return len(value) == 8
    if type(value) is str and len(value) == 8:
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return False
        return True
    return False


def _opt_serial(value: Any) -> bool | None:
    return value is None or _serial(value)


def _bytes(value: Any) -> bool | None:
    return type(value) is bytes


def _opt_bytes(value: Any) -> bool | None:
    return value is None or _bytes(value)


def _text(value: Any) -> bool | None:
    if type(value) is str:
        return True
    if type(value) is bytes:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    return False


def _str_or_bytes(value: Any) -> bool | None:
    return type(value) in (str, bytes)


def _int(value: Any) -> bool | None:
    if type(value) is bool:
        return None  # an int in Python, not in the docs
    return type(value) is int


def _number(value: Any) -> bool | None:
    if type(value) is bool:
        return None
    return type(value) in (int, float)


def _flag(value: Any) -> bool | None:
    if type(value) is bool:
        return True
    if value is None or type(value) is int:
        return None
    return False


def _mapping(value: Any) -> bool | None:
    return type(value) is dict


def _ints(value: Any) -> bool | None:
    if type(value) not in (list, tuple):
        return False
    verdicts = [_int(item) for item in value]
    if False in verdicts:
        return False
    return None if None in verdicts else True


def _token(value: Any) -> bool | None:
    try:
        hash(value)
    except TypeError:
        return False
    except RecursionError:
        return None
    return True


def _any(value: Any) -> bool | None:
    return True


@dataclass(frozen=True)
class DocMethod:
    """A method of the docs' table: sync or async, its argument checks (the
    first ``required`` mandatory), whether it may wait (W), whether it
    belongs to a transaction (its async errors come at the vote)."""

    synchronous: bool
    checks: tuple[Callable[[Any], bool | None], ...]
    required: int
    waits: bool = False
    transaction: bool = False

    def arguments_valid(self, args: tuple[Any, ...]) -> bool | None:
        if not self.required <= len(args) <= len(self.checks):
            return False
        verdicts = [check(v) for check, v in zip(self.checks, args, strict=False)]
        if False in verdicts:
            return False
        return None if None in verdicts else True


def _s(*checks: Any, required: int | None = None, waits: bool = False) -> DocMethod:
    return DocMethod(True, checks, len(checks) if required is None else required, waits)


def _a(*checks: Any, required: int | None = None, txn: bool = True) -> DocMethod:
    count = len(checks) if required is None else required
    return DocMethod(False, checks, count, transaction=txn)


#: docs/protocol.md, "Server methods".
DOC_METHODS: dict[str, DocMethod] = {
    "register": _s(_text, _flag),
    "get_info": _s(),
    "lastTransaction": _s(),
    "getInvalidations": _s(_oid, waits=True),
    "ping": _s(),
    "server_status": _s(),
    # "any" in the table; "a wrong argument closes the connection" below it.
    "set_client_label": _a(_any, txn=False),
    "loadBefore": _s(_oid, _oid),
    "loadSerial": _s(_oid, _oid),
    "getTid": _s(_oid),
    "history": _s(_oid, _int, required=1),
    "record_iternext": _s(_opt_bytes, required=0),
    "new_oids": _s(_int, required=0),
    "sendBlob": _s(_oid, _oid, waits=True),
    "pack": _s(_pack_time, _flag, required=1, waits=True),
    "undoLog": _s(_int, _int, waits=True),
    "undoInfo": _s(_int, _int, _any, waits=True),
    "iterator_start": _s(_opt_oid, _opt_oid),
    "iterator_next": _s(_int, waits=True),
    "iterator_record_start": _s(_int, _oid),
    "iterator_record_next": _s(_int, waits=True),
    "iterator_gc": _a(_ints, txn=False),
    "tpc_begin": _a(
        _token, _writable_text, _writable_text, _mapping, _opt_oid, _status, required=4
    ),
    "storea": _a(_stored_oid, _opt_serial, _bytes, _token),
    "checkCurrentSerialInTransaction": _a(_stored_oid, _opt_serial, _token),
    "deleteObject": _a(_stored_oid, _serial, _token),
    "restorea": _a(_stored_oid, _serial, _opt_bytes, _opt_serial, _token),
    "undoa": _a(_bytes, _token),
    "storeBlobStart": _a(),
    "storeBlobChunk": _a(_bytes),
    "storeBlobEnd": _a(_stored_oid, _opt_serial, _bytes, _token),
    "storeBlobShared": _a(_stored_oid, _opt_serial, _bytes, _text, _token),
    "vote": _s(_token, waits=True),
    "tpc_finish": _s(_token, waits=True),
    "tpc_abort": _s(_token, waits=True),
}

#: docs/protocol.md, "Replication": methods only servers call.  The
#: grammar leaves them out (a session that replicates gets the stream, not
#: answers the oracle knows); the docs check covers them.
DOC_REPLICATION_METHODS: dict[str, DocMethod] = {
    "replicate": _s(_mapping, waits=True),
    "replicated": _a(_oid, txn=False),
    "replication_status": _s(),
    "promote": _s(waits=True),
}

#: Where the docs and the code knowingly say different things (reported).
DOC_NOTES = {
    "set_client_label": "the table says 'any'; the code (and the text below "
    "the table) closes the connection unless it is text",
    "undoInfo": "the table says 'any' for spec; the code refuses anything "
    "but None or a mapping of names to plain values (TypeError)",
}


def doc_table_differences() -> list[str]:
    """How ``DOC_METHODS`` (from the docs) and ``METHODS`` (the code) differ
    in names, sync/async, arity and transaction membership."""
    from zodbserver.server.methods import METHODS, TRANSACTION_CALLS

    differences = []
    documented = {**DOC_METHODS, **DOC_REPLICATION_METHODS}
    for name in sorted(set(documented) | set(METHODS)):
        doc, code = documented.get(name), METHODS.get(name)
        if doc is None or code is None:
            differences.append(f"{name}: only in {'code' if doc is None else 'docs'}")
            continue
        if doc.synchronous != code.synchronous:
            differences.append(f"{name}: sync in one table, async in the other")
        if (doc.required, len(doc.checks)) != (code.required, len(code.checks)):
            differences.append(
                f"{name}: {doc.required}..{len(doc.checks)} arguments in the docs, "
                f"{code.required}..{len(code.checks)} in the code"
            )
        if doc.transaction != (name in TRANSACTION_CALLS):
            differences.append(f"{name}: transaction call in one table only")
    return differences


# -- the oracle ---------------------------------------------------------------

CLOSE = "close"  # a protocol error: the server must close the connection
MAYBE = "maybe-close"  # the docs leave it open whether it closes
CALL = "call"  # a sync call: exactly one reply with this msgid
ASYNC = "async"  # an async call: no answer
IGNORED = "ignored"  # a heartbeat
HANDSHAKE = "handshake"
STATUS = "status"  # ruok: one JSON frame, then close

HEARTBEAT = (-1, 0, ".reply", None)
ENCODINGS = (b"M", b"Z")


class MemoBomb(Exception):  # noqa: N818
    """A pickle whose memo index makes an unpickler allocate gigabytes
    (known bug K3); not decoded here."""

    def __init__(self, index: int) -> None:
        super().__init__(f"memo index {index}")
        self.index = index


@dataclass
class Verdict:
    outcome: str
    reason: str = ""
    message: tuple[Any, ...] | None = None
    method: str | None = None
    msgid: Any = None
    #: The documented argument checks must refuse (False) or pass (True).
    arguments_valid: bool | None = None
    #: The error class the docs say this call gets, when they say one.
    expected_error: str | None = None
    #: A pickle memo index over MEMO_LIMIT (K3).
    memo: int = -1


class _OracleUnpickler(pickle.Unpickler):
    """Pickles as docs/protocol.md allows them: plain data, the containers
    ``dict list tuple set frozenset`` from builtins, nothing else."""

    ALLOWED = frozenset({"dict", "list", "tuple", "set", "frozenset"})

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in self.ALLOWED:
            return getattr(__import__("builtins"), name)
        raise pickle.UnpicklingError(f"global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent reference")


def _has_extension_codes(payload: bytes) -> bool:
    if not copyreg._inverted_registry:  # type: ignore[attr-defined]
        return False
    import pickletools

    try:
        return any(
            op.name in ("EXT1", "EXT2", "EXT4")
            for op, _, _ in pickletools.genops(payload)
        )
    except Exception:
        return False


#: The largest pickle memo index a message needs (they hold a few objects).
MEMO_LIMIT = 2**16
#: Above this the fuzzers never send one, whatever ``--known-bugs`` says:
#: the server would allocate 8 bytes for each of twice as many entries.
MEMO_CAP = 2**22


def max_memo_index(payload: bytes) -> int:
    """The largest memo index a pickle's PUT opcodes name (up to the first
    malformed opcode, as far as an unpickler would get)."""
    import pickletools

    largest = -1
    try:
        for opcode, argument, _ in pickletools.genops(payload):
            if (
                opcode.name in ("PUT", "BINPUT", "LONG_BINPUT")
                and type(argument) is int
            ):
                largest = max(largest, argument)
    except Exception:
        pass
    return largest


def decode_message(encoding: bytes, payload: bytes, memo: int | None = None) -> Any:
    """Decode one payload as the docs say the server does; raises on any
    failure.  ``memo``: the payload's ``max_memo_index`` if known."""
    if encoding == b"M":
        return msgpack.unpackb(payload, raw=False, use_list=False)
    if memo is None:
        memo = max_memo_index(payload)
    if memo > MEMO_CAP:
        raise MemoBomb(memo)
    if _has_extension_codes(payload):
        raise pickle.UnpicklingError("extension code")
    return _OracleUnpickler(io.BytesIO(payload)).load()


def _msgid_verdict(msgid: Any) -> bool | None:
    """A sync call's msgid: an int, or the pair (oid, tid) of loadBefore."""
    if type(msgid) is int:
        return True
    if type(msgid) is bool:
        return None
    if type(msgid) in (tuple, list):
        if len(msgid) == 2 and all(type(p) is bytes and len(p) == 8 for p in msgid):
            return True
        # The code takes any 0 to 2 byte strings of at most 8 bytes.
        if len(msgid) <= 2 and all(type(p) is bytes and len(p) <= 8 for p in msgid):
            return None
    return False


def msgid_key(msgid: Any) -> Hashable:
    """Replies echo the msgid; compare them so that True and 1, or a list
    and the tuple it comes back as, match."""
    if type(msgid) in (int, bool):
        return ("i", int(msgid))
    if type(msgid) in (tuple, list):
        return ("t", tuple(msgid))
    return ("?", repr(msgid)[:100])


@dataclass
class Oracle:
    """What the server must do with each frame, by the docs.

    Fed exactly the bytes sent, in order; ``copy`` lets a caller try bytes
    first (the guards withhold some frames).  ``registered`` is None when
    the outcome of a ``register`` is not known yet (its reply sets it).
    """

    max_frame_size: int = MAX_FRAME_SIZE
    buffer: bytes = b""
    state: str = "handshake"  # "open", "closed"
    encoding: bytes | None = None
    registered: bool | None = False
    read_only: bool = False

    def copy(self) -> Oracle:
        return Oracle(
            self.max_frame_size,
            self.buffer,
            self.state,
            self.encoding,
            self.registered,
            self.read_only,
        )

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet."""
        return len(self.buffer)

    def feed(self, data: bytes) -> list[Verdict]:
        verdicts: list[Verdict] = []
        if self.state == "closed":
            return verdicts
        buffer = self.buffer + data
        position = 0
        while len(buffer) - position >= 4:
            size = int.from_bytes(buffer[position : position + 4], "big")
            if size > self.max_frame_size:
                self.state = "closed"
                verdicts.append(Verdict(CLOSE, "frame over max-frame-size"))
                self.buffer = b""
                return verdicts
            end = position + 4 + size
            if end > len(buffer):
                break
            verdict = self._frame(buffer[position + 4 : end])
            verdicts.append(verdict)
            position = end
            if verdict.outcome in (CLOSE, STATUS):
                self.state = "closed"
                self.buffer = b""
                return verdicts
        self.buffer = buffer[position:]
        return verdicts

    def _frame(self, payload: bytes) -> Verdict:
        memo = None
        if self.state == "open" and self.encoding == b"Z":
            memo = max_memo_index(payload)
        verdict = self._message(payload, memo)
        if memo is not None and memo > MEMO_LIMIT:
            verdict.memo = memo
        return verdict

    def _message(self, payload: bytes, memo: int | None) -> Verdict:
        if self.state == "handshake":
            if payload == STATUS_PROBE:
                return Verdict(STATUS, "ruok")
            if payload in (b"M5", b"Z5"):
                self.state = "open"
                self.encoding = payload[:1]
                return Verdict(HANDSHAKE)
            return Verdict(CLOSE, "bad handshake")
        assert self.encoding is not None
        try:
            message = decode_message(self.encoding, payload, memo)
        except MemoBomb:
            return Verdict(CLOSE, "undecodable: a pickle memo index too large")
        except Exception as exc:
            return Verdict(CLOSE, f"undecodable: {type(exc).__name__}")
        if type(message) not in (tuple, list) or len(message) != 4:
            return Verdict(CLOSE, "not a 4-tuple")
        msgid, flag, name, args = message
        if type(name) is not str:
            return Verdict(CLOSE, "method name not a str")
        message = (msgid, flag, name, args)
        try:
            heartbeat = msgid == -1
        except Exception:  # pragma: no cover - plain data compares
            heartbeat = False
        if heartbeat:
            if type(msgid) is int and message == HEARTBEAT:
                return Verdict(IGNORED, "heartbeat", message)
            # msgid -1 marks a heartbeat; other fields are not checked.
            if name == "register" and not self.registered:
                self.registered = None
            return Verdict(MAYBE, "msgid -1", message, name, msgid)
        if name == ".reply":
            return Verdict(CLOSE, "a client sent a reply", message)
        try:
            asynchronous = bool(flag)
        except Exception:  # pragma: no cover
            return Verdict(MAYBE, "flag without truth value", message)
        if type(args) not in (tuple, list):
            return Verdict(CLOSE, "arguments not a sequence", message)
        args = tuple(args)
        spec = DOC_METHODS.get(name)
        if asynchronous:
            return self._async(message, name, args, spec)
        valid_msgid = _msgid_verdict(msgid)
        if valid_msgid is False:
            return Verdict(CLOSE, "bad msgid", message)
        verdict = self._call(message, name, args, spec)
        if valid_msgid is None:
            # The call is answered as any other, unless the server closes.
            verdict.outcome, verdict.reason = MAYBE, "msgid outside the docs"
        return verdict

    def _async(
        self, message: Any, name: str, args: tuple[Any, ...], spec: DocMethod | None
    ) -> Verdict:
        if spec is None:
            return Verdict(CLOSE, "unknown method sent async", message)
        if spec.synchronous:
            return Verdict(CLOSE, "sync method sent async", message)
        if self.registered is None:
            return Verdict(MAYBE, "async call, registration unknown", message, name)
        if not self.registered:
            return Verdict(CLOSE, "async call before register", message)
        valid = spec.arguments_valid(args)
        if not spec.transaction:
            if name == "set_client_label":
                valid = False if len(args) != 1 else _text(args[0])
            if valid is False:
                return Verdict(CLOSE, f"bad arguments to {name}", message)
            if valid is None:
                return Verdict(MAYBE, f"arguments to {name} not documented", message)
        return Verdict(ASYNC, name, message, name, arguments_valid=valid)

    def _call(
        self, message: Any, name: str, args: tuple[Any, ...], spec: DocMethod | None
    ) -> Verdict:
        msgid = message[0]
        verdict = Verdict(CALL, name, message, name, msgid)
        if spec is None:
            verdict.expected_error = "zodbserver.errors.RemoteProtocolError"
            return verdict
        if name == "register":
            valid = spec.arguments_valid(args)
            verdict.arguments_valid = valid
            if valid is False:
                verdict.expected_error = "builtins.TypeError"
            elif self.registered:
                verdict.expected_error = "builtins.ValueError"
            elif self.registered is False:
                if valid:
                    storage = args[0]
                    if type(storage) is bytes:
                        storage = storage.decode("utf-8")
                    if storage == STORAGE:
                        self.registered = True
                        self.read_only = bool(args[1])
                        verdict.reason = "register succeeds"
                    else:
                        verdict.expected_error = "builtins.ValueError"
                else:
                    self.registered = None  # learnt from the reply
            return verdict
        if self.registered is False:
            verdict.expected_error = "zodbserver.errors.RemoteProtocolError"
            return verdict
        if self.registered is None:
            return verdict
        valid = spec.arguments_valid(args)
        verdict.arguments_valid = valid
        if valid is False:
            verdict.expected_error = "builtins.TypeError"
        return verdict


# -- known bugs and guards ---------------------------------------------------


@dataclass(frozen=True)
class Protected:
    """What the fuzzers must not change: every object and transaction that
    existed when they started (the seed, the bystander's)."""

    oids: frozenset[bytes] = frozenset()
    tids: frozenset[bytes] = frozenset()


def _undo_tid(value: Any) -> bytes | None:
    if type(value) is not bytes:
        return None
    try:
        return base64.decodebytes(value + b"\n")
    except (binascii.Error, ValueError):
        return None


#: Storing an object at oid 2**64 - 1 makes every later new_oid fail, for
#: good (K4); oids this high are withheld in "avoid" mode.
TOP_OIDS = (2**64 - 2**20).to_bytes(8, "big")


def guard(verdict: Verdict, protected: Protected, known_bugs: str) -> str | None:
    """Why a frame must be withheld, or None."""
    if verdict.memo > MEMO_CAP or (known_bugs == "avoid" and verdict.memo >= 0):
        return "K3 pickle memo index" + (
            " (over the cap)" if verdict.memo > MEMO_CAP else ""
        )
    message = verdict.message
    if message is None or verdict.outcome not in (CALL, ASYNC, MAYBE):
        return None
    name, args = message[2], message[3]
    if type(args) not in (tuple, list) or not args:
        return None
    if known_bugs == "avoid" and name == "tpc_begin":
        if len(args) >= 5 and type(args[4]) is bytes and len(args[4]) == 8:
            return "K1 explicit tid"
        if len(args) >= 6 and _text(args[5]):
            status = args[5]
            if type(status) is bytes:
                status = status.decode("utf-8")
            if status != " ":
                return "K2 status"
    if (
        known_bugs == "avoid"
        and name in ("storea", "restorea", "storeBlobEnd", "storeBlobShared")
        and type(args[0]) is bytes
        and len(args[0]) == 8
        and args[0] >= TOP_OIDS
    ):
        return "K4 oid at the top of the range"
    if name == "restorea" and type(args[0]) is bytes and args[0] in protected.oids:
        return "G restore of a protected object"
    if name == "undoa" and _undo_tid(args[0]) in protected.tids:
        return "G undo of a protected transaction"
    return None


# -- encoding -------------------------------------------------------------------


def encode_message(message: Any, encoding: bytes, variant: str = "") -> bytes | None:
    """A message's payload, or None when this encoding cannot carry it."""
    try:
        if encoding == b"M":
            return msgpack.packb(message, use_bin_type=variant != "no-bin-type")
        protocol = int(variant[-1]) if variant.startswith("pickle-") else 3
        return pickle.dumps(message, protocol)
    except (
        TypeError,
        ValueError,
        OverflowError,
        UnicodeEncodeError,
        RecursionError,
        pickle.PicklingError,
    ):
        return None


def record(value: Any) -> bytes:
    """A ZODB data record: a PersistentMapping holding ``value``."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, 3)
    pickler.dump((("persistent.mapping", "PersistentMapping"), None))
    pickler.dump({"data": {"value": value}})
    return buffer.getvalue()


# -- values and mutations -------------------------------------------------------

#: Pack times that are cheap: before every transaction, or refused.
PACK_TIMES: tuple[Any, ...] = (
    0,
    1.0,
    -1.0,
    1e9,
    1e300,
    -1e300,
    float("nan"),
    float("inf"),
    2**63,
)


def _nested(depth: int, leaf: Any = None) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


#: Values of every shape; the ones msgpack cannot carry (huge ints, sets,
#: lone surrogates) only make it into pickle frames.
WEIRD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    7,
    2**31,
    -(2**31),
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    10**30,
    -(10**30),
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    b"",
    b"x",
    b"\0" * 7,
    b"\0" * 9,
    b"\xff" * 8,
    Z64,
    "",
    "1",
    "x",
    "\0" * 8,
    "\xe9" * 8,
    "\u2603" * 8,
    "\udcff",
    "\udcff" * 8,
    (),
    [],
    {},
    [1, 2],
    (Z64, Z64),
    {"a": 1},
    {"": None},
    {b"k": b"v"},
    {1: 2},
    {(1, 2): 3},
    {1, 2},
    frozenset(),
    [[[]]],
    ((), ((),)),
)


def weird_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.75:
        return rng.choice(WEIRD_VALUES)
    if roll < 0.9:
        return rng.randbytes(rng.choice((1, 7, 8, 9, 16, 100, 1000)))
    if roll < 0.95:
        return _nested(rng.choice((10, 100, 400)), rng.choice((None, Z64, 1)))
    if roll < 0.98:
        return "".join(
            chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(9))
        )
    return rng.choice((b"B" * 70_000, "S" * 20_000, list(range(5000))))


METHOD_NAMES = tuple(DOC_METHODS)
#: Names a careless or hostile client might send.
BAD_NAMES = (
    "",
    "nosuch",
    "__init__",
    "__class__",
    "_replay_and_vote",
    "close",
    "undo",
    "new_oid",
    "store",
    "load",
    "Ping",
    "ping ",
    "tpc_begin\0",
    "x" * 300,
    "\u2603",
)


def misspell(rng: random.Random, name: str) -> str:
    if not name:
        return "x"
    chars = list(name)
    position = rng.randrange(len(chars))
    action = rng.randrange(4)
    if action == 0:
        del chars[position]
    elif action == 1:
        chars.insert(position, chr(rng.randrange(0x21, 0x7F)))
    elif action == 2:
        chars[position] = chars[position].swapcase()
    else:
        chars.append("_")
    return "".join(chars)


@dataclass
class Call:
    """One frame to send: a message ``[msgid, flag, name, args]`` or a raw
    payload (handshakes, random bytes)."""

    message: Any
    kind: str
    raw: bytes | None = None
    #: What to learn from the reply ("new_oids", "tpc_finish", ...).
    purpose: str | None = None
    context: Any = None
    mutations: list[str] = field(default_factory=list)
    #: Wait for this call's reply before the next batch (a vote before its
    #: finish, as every client does).
    wait: bool = False


def mutate_message(rng: random.Random, call: Call) -> None:
    """One structural mutation of ``call.message``, in place."""
    message = call.message
    if type(message) is not list or len(message) != 4:
        return
    name = message[2]
    if type(message[3]) in (list, tuple):
        args = list(message[3])
        message[3] = args
        roll = rng.randrange(100)
    else:  # the arguments were mutated into something else already
        args = []
        roll = rng.randrange(46, 88)
    if roll < 22 and args:
        index = rng.randrange(len(args))
        value = weird_value(rng)
        if name == "tpc_begin" and index in (1, 2):
            # The fuzz mark must stay (or the call fail): no other text.
            while _str_or_bytes(value):
                value = weird_value(rng)
        args[index] = value
        tag = "arg-replaced"
    elif roll < 30 and args:
        del args[rng.randrange(len(args))]
        tag = "arg-dropped"
    elif roll < 38:
        args.insert(rng.randrange(len(args) + 1), weird_value(rng))
        tag = "arg-extra"
    elif roll < 42 and len(args) >= 2:
        i, j = rng.sample(range(len(args)), 2)
        args[i], args[j] = args[j], args[i]
        tag = "args-swapped"
    elif roll < 46:
        message[3] = rng.choice((None, 1, "args", b"args", {"a": 1}, tuple(args)))
        tag = "args-not-a-list"
    elif roll < 52:
        message[2] = rng.choice(BAD_NAMES)
        tag = "method-unknown"
    elif roll < 58:
        message[2] = misspell(rng, name if type(name) is str else "ping")
        tag = "method-misspelled"
    elif roll < 66:
        message[2] = rng.choice(METHOD_NAMES)
        tag = "method-swapped"
    elif roll < 69:
        message[2] = rng.choice((None, 1, b"ping", ["ping"], ".reply"))
        tag = "method-not-str-or-reply"
    elif roll < 77:
        message[1] = not message[1]
        if message[1]:
            message[0] = 0
        tag = "flag-flipped"
    elif roll < 80:
        message[1] = rng.choice((2, -1, 1.0, 0.0, "x", "", None, [], [0], b"\0"))
        tag = "flag-odd"
    elif roll < 88:
        message[0] = rng.choice(
            (
                None,
                1.0,
                "1",
                b"1",
                -1,
                0,
                True,
                2**63 - 1,
                -(2**63),
                10**30,
                (Z64, MAXTID),
                [Z64, MAXTID],
                (b"x",),
                (),
                (1, 2),
                (Z64, Z64, Z64),
                {"a": 1},
                [[1]],
            )
        )
        tag = "msgid-odd"
    elif roll < 93:
        shape = rng.randrange(5)
        if shape == 0:
            call.message = message[:3]
        elif shape == 1:
            call.message = [*message, None]
        elif shape == 2:
            call.message = [message[0], message[1], message[2], args, args]
        elif shape == 3:
            call.message = [message]
        else:
            call.message = rng.choice(([], [name], {"name": name}, name, 42, None))
        tag = "message-shape"
    elif args:
        index = rng.randrange(len(args))
        args[index] = _nested(rng.choice((2, 50, 900, 3000)), args[index])
        tag = "arg-nested"
    else:
        args.append(_nested(rng.choice((2, 50)), 1))
        tag = "arg-nested"
    call.mutations.append(tag)


def mutate_sequence(rng: random.Random, calls: list[Call]) -> str | None:
    """Drop, duplicate, swap or reverse calls of one batch, in place."""
    if not calls:
        return None
    roll = rng.randrange(5)
    index = rng.randrange(len(calls))
    if roll == 0 and len(calls) > 1:
        del calls[index]
        return "seq-dropped"
    if roll == 1:
        original = calls[index]
        copied = Call(
            None if original.message is None else list(original.message),
            original.kind,
            original.raw,
        )
        calls.insert(index, copied)
        return "seq-duplicated"
    if roll == 2 and len(calls) > 1:
        other = rng.randrange(len(calls))
        calls[index], calls[other] = calls[other], calls[index]
        return "seq-swapped"
    if roll == 3:
        calls.reverse()
        return "seq-reversed"
    return None


def mutate_bytes(rng: random.Random, payload: bytes) -> tuple[bytes, str]:
    """A byte-level mutation of one encoded payload; returns the *frame*
    (with its length prefix, which some mutations make lie)."""
    roll = rng.randrange(100)
    data = bytearray(payload)
    if roll < 35 and data:
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
        return encode_frame(bytes(data)), "bit-flips"
    if roll < 45:
        for _ in range(rng.randint(1, 3)):
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        return encode_frame(bytes(data)), "bytes-inserted"
    if roll < 55 and data:
        for _ in range(rng.randint(1, 3)):
            if data:
                del data[rng.randrange(len(data))]
        return encode_frame(bytes(data)), "bytes-deleted"
    if roll < 65:
        return encode_frame(bytes(data[: rng.randrange(len(data) + 1)])), "payload-cut"
    if roll < 72:
        # The prefix announces more than is sent: the frame is truncated,
        # and whatever follows is read as its rest.
        lie = len(data) + rng.choice((1, 2, 10, 1000, 100_000))
        return lie.to_bytes(4, "big") + bytes(data), "prefix-too-long"
    if roll < 77 and data:
        lie = rng.randrange(len(data))
        return lie.to_bytes(4, "big") + bytes(data), "prefix-too-short"
    if roll < 82:
        size = rng.choice((MAX_FRAME_SIZE + 1, 2**31, 2**32 - 1))
        return size.to_bytes(4, "big") + bytes(data[:100]), "oversized"
    if roll < 86:
        return encode_frame(b""), "empty-frame"
    if roll < 87:
        size = rng.choice((MAX_FRAME_SIZE, MAX_FRAME_SIZE - 1, 300_000))
        return encode_frame(bytes(data) + rng.randbytes(size - len(data))), "huge-frame"
    if roll < 94:
        # Two frames glued into one.
        return encode_frame(encode_frame(bytes(data)) + bytes(data)), "frame-in-frame"
    return encode_frame(
        rng.randbytes(rng.randrange(1, 64)) + bytes(data)
    ), "junk-prefix"


#: Pieces that random payloads are made of, besides plain random bytes.
MSGPACK_FRAGMENTS = (
    b"\x94",
    b"\x93",
    b"\x95",
    b"\x90",
    b"\x91",
    b"\x80",
    b"\x81",
    b"\xc0",
    b"\xc2",
    b"\xc3",
    b"\xc1",
    b"\xa4ping",
    b"\xaaloadBefore",
    b"\xa6.reply",
    b"\xc4\x08" + Z64,
    b"\xc4\x00",
    b"\xd4\x01\x02",
    b"\xc7\x01\x05x",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"\xdc\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xdb\xff\xff\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\x01",
    b"\x00",
    b"\xff",
)
PICKLE_FRAGMENTS = (
    b"\x80\x02",
    b"\x80\x03",
    b"\x80\x04",
    b"\x80\x05",
    b"(",
    b")",
    b"]",
    b"}",
    b"t",
    b"\x85",
    b"\x86",
    b"\x87",
    b"a",
    b"e",
    b"s",
    b"u",
    b"0",
    b"2",
    b"N",
    b"\x88",
    b"\x89",
    b"K\x01",
    b"J\xff\xff\xff\xff",
    b"\x8a\x09" + b"\xff" * 9,
    b"C\x08" + Z64,
    b"X\x04\x00\x00\x00ping",
    b"X\x06\x00\x00\x00.reply",
    b"\x8c\x08builtins\x8c\x03set\x93",
    b"\x8c\x08builtins\x8c\x04eval\x93",
    b"cbuiltins\nlist\n",
    b"cos\nsystem\n",
    b"ccopy_reg\n_reconstructor\n",
    b"\x82\x01",
    b"Pfoo\n",
    b"Q",
    b"R",
    b"b",
    b"\x81",
    b"\x92",
    b"q\x00",
    b"h\x00",
    b"\x94",
    b"\x95\x10\x00\x00\x00\x00\x00\x00\x00",
    b"\x96\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x97",
    b"\x98",
    b".",
)


def random_payload(rng: random.Random, encoding: bytes | None) -> bytes:
    roll = rng.random()
    if roll < 0.4 or encoding is None:
        return rng.randbytes(rng.choice((0, 1, 2, 3, 4, 8, 16, 50, 200, 1000)))
    fragments = MSGPACK_FRAGMENTS if encoding == b"M" else PICKLE_FRAGMENTS
    return b"".join(rng.choice(fragments) for _ in range(rng.randrange(1, 20)))


# -- what a fuzzing connection knows ------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """The seeded data, as the fuzzers may read it (never write it)."""

    objects: tuple[tuple[bytes, bytes], ...] = ()  # (oid, serial)
    blobs: tuple[tuple[bytes, bytes], ...] = ()
    tids: tuple[bytes, ...] = ()


@dataclass
class World:
    """What one fuzzing connection learnt from the server's replies."""

    seed: Seed
    #: Oids the server gave us and we have not committed yet.
    fresh_oids: list[bytes] = field(default_factory=list)
    #: Our committed objects and the serial each was last committed with.
    own: dict[bytes, bytes] = field(default_factory=dict)
    own_tids: list[bytes] = field(default_factory=list)
    iterators: list[int] = field(default_factory=list)
    last_iterated: dict[int, bytes] = field(default_factory=dict)
    record_iterators: list[int] = field(default_factory=list)
    known_tids: list[bytes] = field(default_factory=list)

    def learn(self, call: Call, event: Any) -> None:
        """Take what a reply to one of our calls tells."""
        if not isinstance(event, Reply) or call.purpose is None:
            return
        result = event.result
        if call.purpose == "new_oids" and type(result) in (list, tuple):
            oids = [oid for oid in result if type(oid) is bytes and len(oid) == 8]
            self.fresh_oids.extend(oids[:20])
            del self.fresh_oids[:-200]
        elif call.purpose == "tpc_finish" and type(result) is bytes:
            for oid in call.context or ():
                self.own[oid] = result
            self.own_tids.append(result)
            if len(self.own) > 500:
                for oid in list(self.own)[:250]:
                    del self.own[oid]
            del self.own_tids[:-100]
        elif call.purpose == "iterator_start" and type(result) is int:
            self.iterators.append(result)
            del self.iterators[:-20]
        elif call.purpose == "iterator_next" and type(result) in (list, tuple):
            if result and type(result[0]) is bytes:
                self.last_iterated[call.context] = result[0]
                self.known_tids.append(result[0])
                del self.known_tids[:-50]
        elif call.purpose == "iterator_record_start" and type(result) is int:
            self.record_iterators.append(result)
            del self.record_iterators[:-20]


def _sync(
    name: str, *args: Any, kind: str = "call", purpose: str | None = None
) -> Call:
    return Call([None, False, name, list(args)], kind, purpose=purpose)


def _async_call(name: str, *args: Any, kind: str = "call") -> Call:
    return Call([0, True, name, list(args)], kind)


class SessionGrammar:
    """The calls of one structure-aware session, batch by batch.

    ``batches`` is a generator of lists of ``Call``; between two batches
    the connection has sent the first and read its replies up to the
    barrier, so the world holds what they told."""

    def __init__(
        self, rng: random.Random, world: World, label: str, encoding: bytes
    ) -> None:
        self.rng = rng
        self.world = world
        self.label = label
        self.encoding = encoding
        self.transactions = 0
        self.read_only = rng.random() < 0.04
        self.token: Any = rng.randrange(1, 2**40)
        #: A transaction this session may have left open.
        self.open_token: Any = None

    def _close_open(self) -> list[Call]:
        """Abort the transaction left open, mostly (a client that does not
        gets StorageTransactionError for its next tpc_begin)."""
        token, self.open_token = self.open_token, None
        if token is None or self.rng.random() < 0.1:
            return []
        call = _sync("tpc_abort", token, kind="transaction")
        call.wait = True
        return [call]

    # -- pools

    def read_oid(self) -> bytes:
        rng, world = self.rng, self.world
        roll = rng.random()
        if roll < 0.45 and world.seed.objects:
            return rng.choice(world.seed.objects)[0]
        if roll < 0.7 and world.own:
            return rng.choice(list(world.own))
        if roll < 0.8:
            return Z64
        if roll < 0.9 and world.fresh_oids:
            return rng.choice(world.fresh_oids)
        return rng.randbytes(8)

    def read_tid(self) -> bytes:
        rng, world = self.rng, self.world
        roll = rng.random()
        if roll < 0.4:
            return MAXTID
        if roll < 0.6 and world.seed.tids:
            return rng.choice(world.seed.tids)
        if roll < 0.75 and world.own_tids:
            return rng.choice(world.own_tids)
        if roll < 0.85 and world.known_tids:
            return rng.choice(world.known_tids)
        if roll < 0.92:
            return Z64
        return rng.randbytes(8)

    def new_oid(self) -> bytes | None:
        if self.world.fresh_oids:
            return self.world.fresh_oids.pop()
        return None

    # -- the grammar

    def batches(self) -> Iterator[list[Call]]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.9:
            yield [self.register()]
        elif roll < 0.95:
            # calls before register, then register
            yield [self.read() for _ in range(rng.randint(1, 3))]
            yield [self.register()]
        # else: never registers
        actions = (
            (self.reads, 28),
            (self.transaction, 26),
            (self.out_of_order, 10),
            (self.iteration, 8),
            (self.admin, 6),
            (self.blob_download, 3),
            (self.fill_oids, 5),
            (self.heartbeats, 2),
            (self.register_again, 1),
        )
        functions = [function for function, _ in actions]
        weights = [weight for _, weight in actions]
        for _ in range(rng.randint(1, 40)):
            (action,) = rng.choices(functions, weights)
            yield from action()

    def register(self) -> Call:
        name: Any = STORAGE if self.rng.random() < 0.8 else STORAGE.encode()
        return _sync("register", name, self.read_only, kind="register")

    def register_again(self) -> Iterator[list[Call]]:
        yield [self.register()]

    def read(self) -> Call:
        rng = self.rng
        roll = rng.randrange(100)
        if roll < 30:
            call = _sync("loadBefore", self.read_oid(), self.read_tid())
            if rng.random() < 0.3:  # as ZEO clients send them
                call.message[0] = (call.message[3][0], call.message[3][1])
            return call
        if roll < 38 and self.world.seed.objects:
            oid, serial = rng.choice(self.world.seed.objects)
            return _sync("loadSerial", oid, serial)
        if roll < 45:
            return _sync("getTid", self.read_oid())
        if roll < 52:
            size = rng.choice((1, 5, 0, -1, 100))
            if rng.random() < 0.5:
                return _sync("history", self.read_oid())
            return _sync("history", self.read_oid(), size)
        if roll < 58:
            start = rng.choice((None, None, Z64, self.read_oid()))
            return _sync("record_iternext", *(() if start is None else (start,)))
        if roll < 66:
            return _sync("getInvalidations", self.read_tid())
        if roll < 74:
            return _sync(rng.choice(("get_info", "lastTransaction", "server_status")))
        if roll < 82:
            return _sync("new_oids", purpose="new_oids")
        return _sync("ping")

    def reads(self) -> Iterator[list[Call]]:
        yield [self.read() for _ in range(self.rng.randint(1, 8))]

    def fill_oids(self) -> Iterator[list[Call]]:
        count = self.rng.choice((1, 5, 20, 100))
        yield [_sync("new_oids", count, purpose="new_oids")]

    def heartbeats(self) -> Iterator[list[Call]]:
        yield [
            Call(list(HEARTBEAT), "heartbeat") for _ in range(self.rng.randint(1, 3))
        ]

    def blob_download(self) -> Iterator[list[Call]]:
        rng, world = self.rng, self.world
        if world.seed.blobs and rng.random() < 0.8:
            oid, serial = rng.choice(world.seed.blobs)
        else:
            oid, serial = self.read_oid(), self.read_tid()
        yield [_sync("sendBlob", oid, serial)]

    def admin(self) -> Iterator[list[Call]]:
        rng = self.rng
        roll = rng.randrange(6)
        if roll == 0:
            args: list[Any] = [rng.choice(PACK_TIMES)]
            if rng.random() < 0.8:
                args.append(rng.random() < 0.3)
            yield [_sync("pack", *args)]
        elif roll == 1:
            yield [_sync("undoLog", 0, rng.choice((1, 5, 20)))]
        elif roll == 2:
            spec = rng.choice((None, {"description": self.label.encode()}, {}))
            yield [_sync("undoInfo", 0, rng.choice((1, 5, 20)), spec)]
        elif roll == 3:
            yield [_async_call("set_client_label", f"fuzzer {self.label}")]
        elif roll == 4:
            yield [_sync("server_status"), _sync("get_info")]
        else:
            yield [_sync("lastTransaction")]

    def iteration(self) -> Iterator[list[Call]]:
        rng, world = self.rng, self.world
        if not world.iterators or rng.random() < 0.2:
            start = rng.choice((None, None, Z64, self.read_tid()))
            stop = rng.choice((None, None, self.read_tid()))
            yield [_sync("iterator_start", start, stop, purpose="iterator_start")]
            return
        iid = rng.choice(world.iterators)
        roll = rng.randrange(10)
        if roll < 5:
            calls = []
            for _ in range(rng.randint(1, 4)):
                call = _sync("iterator_next", iid, purpose="iterator_next")
                call.context = iid
                calls.append(call)
            yield calls
        elif roll < 8 and iid in world.last_iterated:
            yield [
                _sync(
                    "iterator_record_start",
                    iid,
                    world.last_iterated[iid],
                    purpose="iterator_record_start",
                )
            ]
            if world.record_iterators:
                riid = world.record_iterators[-1]
                yield [
                    _sync("iterator_record_next", riid)
                    for _ in range(rng.randint(1, 4))
                ]
        else:
            chosen = rng.sample(world.iterators, rng.randint(1, len(world.iterators)))
            for gone in chosen:
                world.iterators.remove(gone)
            yield [_async_call("iterator_gc", chosen)]

    def _begin(self, token: Any) -> Call:
        self.transactions += 1
        description = b"%s %s t%d" % (FUZZ_MARK, self.label.encode(), self.transactions)
        if self.rng.random() < 0.3:
            description = description.decode()  # type: ignore[assignment]
        extension = self.rng.choice(({}, {"fuzz": 1}, {"x": [1, 2], "y": "z"}))
        args: list[Any] = [token, FUZZ_USER, description, extension]
        if self.rng.random() < 0.1:
            args += [None, " "]
        return _async_call("tpc_begin", *args, kind="transaction")

    def _stores(self, token: Any) -> tuple[list[Call], list[bytes]]:
        """Stores of our own objects only (and a blob now and then)."""
        rng, world = self.rng, self.world
        calls: list[Call] = []
        stored: list[bytes] = []
        for _ in range(rng.choice((0, 1, 1, 2, 3, 5))):
            roll = rng.randrange(100)
            if roll < 45:
                oid = self.new_oid()
                if oid is None:
                    continue
                data = record(rng.randbytes(rng.choice((0, 10, 100, 2000))))
                calls.append(_async_call("storea", oid, Z64, data, token))
                stored.append(oid)
            elif roll < 65 and world.own:
                oid = rng.choice(list(world.own))
                serial = world.own[oid]
                data = record(rng.random())
                calls.append(_async_call("storea", oid, serial, data, token))
                stored.append(oid)
            elif roll < 72 and world.own:
                oid = rng.choice(list(world.own))
                calls.append(
                    _async_call(
                        "checkCurrentSerialInTransaction", oid, world.own[oid], token
                    )
                )
            elif roll < 77 and world.own:
                oid = rng.choice(list(world.own))
                calls.append(_async_call("deleteObject", oid, world.own[oid], token))
                world.own.pop(oid)
            elif roll < 82:
                oid = self.new_oid()
                if oid is None:
                    continue
                calls.append(
                    _async_call("restorea", oid, Z64, record("restored"), None, token)
                )
                stored.append(oid)
            elif roll < 85 and world.own_tids:
                undo_id = base64.encodebytes(rng.choice(world.own_tids)).rstrip(b"\n")
                calls.append(_async_call("undoa", undo_id, token))
            elif roll < 97:
                oid = self.new_oid()
                if oid is None:
                    continue
                calls.append(_async_call("storeBlobStart"))
                for _ in range(rng.choice((0, 1, 1, 3))):
                    chunk = rng.randbytes(rng.choice((0, 100, 5000, 60000)))
                    calls.append(_async_call("storeBlobChunk", chunk))
                calls.append(
                    _async_call("storeBlobEnd", oid, Z64, record("blob"), token)
                )
                stored.append(oid)
            else:
                oid = self.new_oid()
                if oid is None:
                    continue
                name = rng.choice(("x.tmp", "x.tmpz", "../x.tmp", ".tmp", "x"))
                calls.append(
                    _async_call("storeBlobShared", oid, Z64, record("s"), name, token)
                )
        for call in calls:
            call.kind = "transaction"
        return calls, stored

    def transaction(self) -> Iterator[list[Call]]:
        rng = self.rng
        if len(self.world.fresh_oids) < 5:
            yield [_sync("new_oids", purpose="new_oids")]
        token = self.token if rng.random() < 0.5 else rng.randrange(1, 2**40)
        calls = [*self._close_open(), self._begin(token)]
        stores, stored = self._stores(token)
        calls += stores
        roll = rng.randrange(100)
        finish = _sync("tpc_finish", token, kind="transaction", purpose="tpc_finish")
        finish.context = stored
        vote = _sync("vote", token, kind="transaction")
        abort = _sync("tpc_abort", token, kind="transaction")
        vote.wait = finish.wait = abort.wait = True
        if roll < 90:
            # The vote's reply comes before the finish or abort is sent.
            if rng.random() < 0.5:
                yield [*calls, vote]
            else:
                yield calls
                yield [vote]
            yield [finish if roll < 75 else abort]
            return
        self.open_token = token
        if roll < 95:
            yield [*calls, abort]
        elif roll < 98:
            yield [*calls, vote]  # voted, left holding the commit lock
        else:
            yield calls  # left open: the next begin or the disconnect ends it

    def out_of_order(self) -> Iterator[list[Call]]:
        """Transaction calls in orders the docs refuse, and stores to objects
        that are not ours (which must conflict, never commit)."""
        rng, world = self.rng, self.world
        token = rng.randrange(1, 2**40)
        begin = self._begin(token)
        vote = _sync("vote", token, kind="out-of-order")
        finish = _sync("tpc_finish", token, kind="out-of-order", purpose="tpc_finish")
        abort = _sync("tpc_abort", token, kind="out-of-order")
        stores, stored = self._stores(token)
        finish.context = stored
        victim = rng.choice([Z64, *(oid for oid, _ in world.seed.objects[:5])])
        foreign = rng.choice(
            (
                _async_call("storea", victim, Z64, record("stolen"), token),
                _async_call("storea", victim, None, record("stolen"), token),
                _async_call("deleteObject", victim, Z64, token),
                _async_call("checkCurrentSerialInTransaction", victim, Z64, token),
                _async_call("storeBlobEnd", victim, None, record("b"), token),
            )
        )
        other = rng.randrange(1, 2**40)
        sequences = (
            [vote],
            [finish],
            [abort, vote],
            [begin, *stores, finish],
            [begin, *stores, vote, finish, finish],
            [begin, *stores, vote, vote, finish],
            [begin, vote, *stores, finish],
            [begin, *stores, begin, vote, finish],
            [
                begin,
                _async_call("tpc_begin", other, FUZZ_USER, b"fuzz other", {}),
                vote,
            ],
            [*stores, begin, vote, abort],
            [begin, _async_call("storeBlobChunk", b"x"), vote, abort],
            [begin, _async_call("storeBlobEnd", Z64, Z64, b"", token), vote, abort],
            [begin, foreign, vote, finish],
            [begin, *stores, foreign, vote, finish],
            [begin, *stores, vote, abort, finish],
            [_sync("tpc_finish", other), _sync("tpc_abort", other)],
        )
        sequence = [*self._close_open(), *rng.choice(sequences)]
        for call in sequence:
            call.kind = "out-of-order"
        self.open_token = token
        yield sequence


# -- findings and counts ---------------------------------------------------------

#: Frames of a session kept for a finding's reproducer, and bytes of each.
REPRODUCER_FRAMES = 60
REPRODUCER_BYTES = 4096


@dataclass
class Finding:
    kind: str
    signature: str
    detail: str
    seed: int
    connection: int
    session: int
    #: The session's frames up to the finding, hex (each cut at 4 KB).
    frames: list[str]
    count: int = 1


@dataclass
class Stats:
    frames: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    withheld: Counter[str] = field(default_factory=Counter)
    sessions: Counter[str] = field(default_factory=Counter)
    #: Outcomes where the docs leave the server a choice.
    open_questions: Counter[str] = field(default_factory=Counter)
    findings: dict[str, Finding] = field(default_factory=dict)
    #: Findings already reported (``KNOWN_FINDINGS``), kept apart.
    known: dict[str, Finding] = field(default_factory=dict)
    #: (user, description) of every transaction a fuzzer began, voted and
    #: finished (as the oracle decoded the frames sent).
    finished: set[tuple[bytes, bytes]] = field(default_factory=set)
    #: The same for calls sent in any order (a vote before its tpc_begin),
    #: which the server commits too when they come in one read (F7).
    finished_any_order: set[tuple[bytes, bytes]] = field(default_factory=set)
    #: Every (user, description) of a tpc_begin sent, and how its session
    #: ended its token's transaction (for the report of unexplained ones).
    begun: dict[tuple[bytes, bytes], str] = field(default_factory=dict)
    #: Tids the fuzzers got from tpc_finish.
    committed: set[bytes] = field(default_factory=set)
    bytes_sent: int = 0
    connect_failures: int = 0

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    def merge(self, other: Stats) -> None:
        for name in ("frames", "mutations", "answers", "withheld", "sessions"):
            getattr(self, name).update(getattr(other, name))
        self.open_questions.update(other.open_questions)
        for name in ("findings", "known"):
            mine_all, theirs = getattr(self, name), getattr(other, name)
            for signature, finding in theirs.items():
                mine = mine_all.get(signature)
                if mine is None:
                    mine_all[signature] = finding
                else:
                    mine.count += finding.count
        self.finished |= other.finished
        self.finished_any_order |= other.finished_any_order
        self.begun.update(other.begun)
        self.committed |= other.committed
        self.bytes_sent += other.bytes_sent
        self.connect_failures += other.connect_failures


SERVER_CALLS = frozenset(
    {
        "invalidateTransaction",
        "info",
        "receiveBlobStart",
        "receiveBlobChunk",
        "receiveBlobStop",
    }
)


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


#: Findings of this harness that are reported and understood (see the
#: results file), by the start of their signature, and the log lines they
#: leave.  They are counted apart and do not fail a run; a new finding does.
KNOWN_FINDINGS: dict[str, str] = {
    "undocumented-error: pack() -> builtins.OverflowError": "F1",
    "undocumented-error: vote() -> builtins.RuntimeError": "F2",
    "undocumented-error: tpc_finish() -> builtins.RuntimeError": "F2",
    "undocumented-error: vote() -> builtins.FileNotFoundError": "F3",
    "undocumented-error: iterator_": "F4",
    "undocumented-error: vote() -> builtins.UnicodeEncodeError": "F5",
    "undocumented-error: new_oids() -> struct.error": "K4",
}
#: (level, logger, start of the logged message, exception) of log lines
#: with tracebacks that known findings leave, or that are expected.
KNOWN_LOG: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "INFO",
        "zodbserver.server.transport",
        "pack() raised",
        "builtins.OverflowError",
        "F1",
    ),
    ("ERROR", "asyncio", "Task exception was never retrieved", "", "F6"),
    (
        "INFO",
        "zodbserver.server.transport",
        "vote() raised",
        "builtins.FileNotFoundError",
        "F3",
    ),
    ("INFO", "zodbserver.server.transport", "iterator_", "", "F4"),
    (
        "INFO",
        "zodbserver.server.transport",
        "vote() raised",
        "builtins.UnicodeEncodeError",
        "F5",
    ),
    ("INFO", "zodbserver.server.transport", "new_oids() raised", "struct.error", "K4"),
    # ZODB logs data it cannot unpickle when it tries to resolve a conflict
    # with it; the client is answered ConflictError (allowed).
    (
        "ERROR",
        "ZODB.ConflictResolution",
        "Unexpected error while trying to resolve",
        "",
        "expected",
    ),
)


def known_finding(signature: str) -> str | None:
    for start, name in KNOWN_FINDINGS.items():
        if signature.startswith(start):
            return name
    return None


def known_log(level: str, logger: str, message: str, exception: str) -> str | None:
    for known_level, known_logger, start, known_exception, name in KNOWN_LOG:
        if (
            level == known_level
            and logger == known_logger
            and message.startswith(start)
            and exception.startswith(known_exception)
        ):
            return name
    return None


@dataclass
class Pending:
    verdict: Verdict
    call: Call | None
    sent: float
    optional: bool = False
    barrier: bool = False
    #: Another call was waiting with the same msgid: replies may be swapped.
    shared: bool = False


class ServerGone(Exception):  # noqa: N818
    """The server process is not there any more."""


class _Closed(Exception):  # noqa: N818
    """The server closed this session's connection."""


def _text_bytes(value: Any) -> bytes | None:
    if type(value) is bytes:
        return value
    if type(value) is str:
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except Exception:
        return False
    return True


@dataclass
class FuzzOptions:
    address: tuple[str, int]
    server_pid: int
    seed: int
    seed_data: Seed
    protected: Protected
    known_bugs: str = "avoid"
    hang_timeout: float = 60.0
    register_timeout: float = 30.0


class FuzzConnection:
    """One fuzzing connection: sessions one after the other, until its
    share of the frames has been sent."""

    def __init__(
        self, index: int, options: FuzzOptions, budget: int, stop: threading.Event
    ) -> None:
        self.index = index
        self.options = options
        self.budget = budget
        self.stop = stop
        self.rng = random.Random(f"{options.seed}/{index}")
        self.world = World(options.seed_data)
        self.stats = Stats()
        self.session_number = 0
        self.sent = 0
        # Per session:
        self.sock: socket.socket | None = None
        self.oracle = Oracle()
        self.client: ClientConnection | None = None
        self.raw_received = b""
        self.outstanding: dict[Hashable, list[Pending]] = {}
        self.log: list[bytes] = []
        self.msgid = 0
        self.closed_by_server = False
        self.expect_close: str | None = None
        self.maybe_close = False
        self.started = 0.0
        self.register_tid: bytes | None = None
        self.last_invalidation = b""
        self.session_tids: set[bytes] = set()
        self.invalidated: set[bytes] = set()
        self.begun: dict[Any, tuple[bytes, bytes]] = {}
        self.any_order: dict[Any, dict[str, Any]] = {}
        self.voted: set[Any] = set()
        self.tokens: list[Any] = []
        self.mutation_rate = 0.0
        self.byte_rate = 0.0
        self.sequence_rate = 0.0
        self.status_frames: list[bytes] = []
        #: Frames prepared and accounted for, sent with the next batch.
        self.unsent: list[bytes] = []

    # -- bookkeeping

    def finding(self, kind: str, signature: str, detail: str) -> None:
        if kind == "docs-mismatch":
            # Known differences between the docs and the code (DOC_NOTES).
            self.stats.open_questions[f"docs differ from the code: {signature}"] += 1
            return
        signature = f"{kind}: {signature}"
        bucket = self.stats.known if known_finding(signature) else self.stats.findings
        existing = bucket.get(signature)
        if existing is not None:
            existing.count += 1
            return
        frames = [
            frame[:REPRODUCER_BYTES].hex() for frame in self.log[-REPRODUCER_FRAMES:]
        ]
        bucket[signature] = Finding(
            kind,
            signature,
            detail[:2000],
            self.options.seed,
            self.index,
            self.session_number,
            frames,
        )

    def check_server(self) -> None:
        if not process_alive(self.options.server_pid):
            raise ServerGone()

    # -- the run

    def run(self) -> Stats:
        while self.sent < self.budget and not self.stop.is_set():
            self.session_number += 1
            try:
                self.session()
            except ServerGone:
                self.finding("server-exit", "the server process exited", "")
                break
            except Exception as exc:  # a bug of ours: keep it, go on
                self.finding(
                    "harness-error",
                    f"{type(exc).__name__}: {str(exc)[:80]}",
                    traceback.format_exc(),
                )
            finally:
                if self.sock is not None:
                    with contextlib.suppress(OSError):
                        self.sock.close()
                    self.sock = None
        return self.stats

    def _reset(self) -> None:
        self.oracle = Oracle()
        self.client = None
        self.raw_received = b""
        self.outstanding = {}
        self.log = []
        self.msgid = 0
        self.closed_by_server = False
        self.expect_close = None
        self.maybe_close = False
        self.started = time.monotonic()
        self.register_tid = None
        self.last_invalidation = b""
        self.session_tids = set()
        self.invalidated = set()
        self.begun = {}
        self.voted = set()
        self.any_order = {}
        self.tokens = []
        self.status_frames = []
        self.unsent = []

    def connect(self) -> socket.socket:
        deadline = time.monotonic() + self.options.hang_timeout
        while True:
            self.check_server()
            try:
                sock = socket.create_connection(self.options.address, timeout=10)
                break
            except OSError as exc:
                self.stats.connect_failures += 1
                if time.monotonic() > deadline:
                    self.finding("connect", type(exc).__name__, str(exc))
                    raise ServerGone() from exc
                time.sleep(0.05)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greeting = b""
        deadline = time.monotonic() + self.options.hang_timeout
        while len(greeting) < 6:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = sock.recv(6 - len(greeting))
            except TimeoutError:
                self.check_server()
                self.finding("hang", "no greeting", "")
                raise _Closed() from None
            except OSError:
                chunk = b""
            if not chunk:
                self.check_server()
                self.finding("unexpected-close", "before the greeting", "")
                raise _Closed()
            greeting += chunk
        if greeting != encode_frame(b"M5"):
            self.finding(
                "greeting", repr(greeting), "the server announced something else"
            )
        sock.setblocking(False)
        return sock

    def session(self) -> None:
        self._reset()
        rng = self.rng
        self.mutation_rate = rng.choice((0.0, 0.02, 0.1, 0.1, 0.3, 0.6))
        self.byte_rate = rng.choice((0.0, 0.0, 0.005, 0.02, 0.1))
        self.sequence_rate = rng.choice((0.0, 0.0, 0.05, 0.2))
        roll = rng.random()
        kind = (
            "structured"
            if roll < 0.86
            else "random-frames"
            if roll < 0.93
            else "random-handshake"
            if roll < 0.98
            else "ruok"
        )
        self.stats.sessions[kind] += 1
        try:
            self.sock = self.connect()
            if kind == "structured":
                self.structured()
            elif kind == "random-frames":
                self.random_frames()
            elif kind == "random-handshake":
                self.random_handshake()
            else:
                self.status_probe()
            self.finish_session()
        except _Closed:
            pass

    # -- sending

    def next_msgid(self) -> int:
        self.msgid += 1
        return self.msgid

    def prepare(
        self, call: Call, *, mutate: bool = True
    ) -> tuple[bytes, list[Verdict]] | None:
        """The frame for ``call`` (mutated as the session's rates say) and
        the oracle's verdicts on it; None if withheld or not encodable."""
        rng = self.rng
        encoding = self.oracle.encoding or b"M"
        for _attempt in range(4):
            attempt = Call(
                None if call.message is None else _copy_message(call.message),
                call.kind,
                call.raw,
                call.purpose,
                call.context,
                wait=call.wait,
            )
            if attempt.message is not None:
                if attempt.message[0] is None:
                    attempt.message[0] = self.next_msgid()
                if mutate and rng.random() < self.mutation_rate:
                    mutate_message(rng, attempt)
                    if rng.random() < 0.2:
                        mutate_message(rng, attempt)
                variant, use = "", encoding
                roll = rng.random() if mutate else 1.0
                if roll < self.byte_rate:
                    use = b"Z" if encoding == b"M" else b"M"
                    attempt.mutations.append("encoding-switched")
                elif encoding == b"Z" and roll < 0.25:
                    variant = f"pickle-{rng.choice((2, 4, 5))}"
                    attempt.mutations.append(variant)
                elif encoding == b"M" and roll < 0.03:
                    variant = "no-bin-type"
                    attempt.mutations.append(variant)
                payload = encode_message(attempt.message, use, variant)
                if payload is None:
                    continue
            else:
                assert attempt.raw is not None
                payload = attempt.raw
            if mutate and rng.random() < self.byte_rate:
                frame, tag = mutate_bytes(rng, payload)
                attempt.mutations.append(tag)
            else:
                frame = encode_frame(payload)
            trial = self.oracle.copy()
            verdicts = trial.feed(frame)
            reasons = [
                reason
                for verdict in verdicts
                if (
                    reason := guard(
                        verdict, self.options.protected, self.options.known_bugs
                    )
                )
            ]
            if reasons:
                self.stats.withheld[reasons[0]] += 1
                return None
            self.oracle = trial
            call.mutations = attempt.mutations
            self._account(attempt, frame, verdicts)
            return frame, verdicts
        return None

    def _account(self, call: Call, frame: bytes, verdicts: list[Verdict]) -> None:
        kind = call.kind + ("+mutated" if call.mutations else "")
        self.stats.frames[kind] += 1
        self.stats.mutations.update(call.mutations)
        self.stats.bytes_sent += len(frame)
        self.sent += 1
        if len(self.log) < 400:
            self.log.append(frame)
        now = time.monotonic()
        for verdict in verdicts:
            self._expect(verdict, call, now)

    def _expect(self, verdict: Verdict, call: Call, now: float) -> None:
        outcome = verdict.outcome
        if outcome == CLOSE:
            self.expect_close = verdict.reason
        elif outcome == STATUS:
            self.expect_close = "ruok"
        elif outcome == MAYBE:
            self.maybe_close = True
            if verdict.msgid is not None and _hashable(verdict.msgid):
                self._add_pending(Pending(verdict, call, now, optional=True))
            if verdict.message is not None and type(verdict.message[3]) in (
                list,
                tuple,
            ):
                self._track_transaction(verdict)  # it may well be handled
        elif outcome == HANDSHAKE:
            assert self.oracle.encoding is not None
            # Decoding as our client does: exception objects inside error
            # payloads (MultipleUndoErrors) come pickled in Z5.
            from zodbserver.client.codec import exception_global

            self.client = ClientConnection(
                max_frame_size=2**31, find_global=exception_global
            )
            self.client.receive_data(encode_frame(self.oracle.encoding + b"5"))
            if self.raw_received:
                data, self.raw_received = self.raw_received, b""
                self._events(data)
        elif outcome == CALL:
            self._add_pending(
                Pending(verdict, call, now, barrier=call.kind in ("barrier", "cleanup"))
            )
            self._track_transaction(verdict)
        elif outcome == ASYNC:
            self._track_transaction(verdict)

    def _add_pending(self, pending: Pending) -> None:
        key = msgid_key(pending.verdict.msgid)
        queue = self.outstanding.setdefault(key, [])
        if queue:
            pending.shared = True
            for other in queue:
                other.shared = True
        queue.append(pending)

    def _track_transaction(self, verdict: Verdict) -> None:
        """Which transactions the frames sent began, voted and finished."""
        message = verdict.message
        if message is None or verdict.arguments_valid is False:
            return
        name, args = message[2], tuple(message[3])
        if not args or not _hashable(args[0]):
            return
        token = args[0]
        entry = self.any_order.setdefault(token, {})
        if name == "tpc_begin" and len(args) >= 4:
            user, description = _text_bytes(args[1]), _text_bytes(args[2])
            if user is not None and description is not None:
                entry.setdefault("begin", (user, description))
                self.stats.begun.setdefault((user, description), "")
        elif name in ("vote", "tpc_finish", "tpc_abort") and "begin" in entry:
            self.stats.begun[entry["begin"]] += f"{name}#{verdict.msgid!r:.30} "
        elif name in ("vote", "tpc_finish"):
            entry[name] = True
        if {"begin", "vote", "tpc_finish"} <= set(entry):
            self.stats.finished_any_order.add(entry["begin"])
        if name == "tpc_begin" and len(args) >= 4:
            user, description = _text_bytes(args[1]), _text_bytes(args[2])
            if user is not None and description is not None:
                self.begun.setdefault(token, (user, description))
                self.tokens.append(token)
        elif name == "vote" and token in self.begun:
            self.voted.add(token)
        elif name == "tpc_finish" and token in self.voted:
            self.stats.finished.add(self.begun.pop(token))
            self.voted.discard(token)
        elif name == "tpc_abort":
            self.begun.pop(token, None)
            self.voted.discard(token)

    def send(self, data: bytes) -> None:
        """Write ``data`` while reading whatever the server answers."""
        assert self.sock is not None
        view = memoryview(data)
        deadline = time.monotonic() + self.options.hang_timeout
        while view:
            readable, writable = self._select(True, deadline)
            if readable:
                self._receive()
            if writable:
                try:
                    sent = self.sock.send(view[:262144])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    self._server_closed()
                    return
                view = view[sent:]
            if not readable and not writable and time.monotonic() > deadline:
                self.check_server()
                self.finding("hang", "the server stopped reading", "")
                raise _Closed()

    def _select(self, want_write: bool, deadline: float) -> tuple[bool, bool]:
        import select

        assert self.sock is not None
        timeout = max(0.0, min(1.0, deadline - time.monotonic()))
        readable, writable, _ = select.select(
            [self.sock], [self.sock] if want_write else [], [], timeout
        )
        return bool(readable), bool(writable)

    # -- receiving

    def _receive(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._server_closed()
            return
        if self.client is None:
            self.raw_received += data
            if self.expect_close == "ruok":
                self.status_frames.append(data)
            elif len(self.raw_received) > 0:
                self.finding(
                    "unexpected-data",
                    "before a handshake",
                    self.raw_received[:200].hex(),
                )
            return
        self._events(data)

    def _events(self, data: bytes) -> None:
        assert self.client is not None
        try:
            events = self.client.receive_data(data)
        except RemoteProtocolError as exc:
            self.finding(
                "undecodable-server-frame",
                str(exc)[:60],
                f"{exc}; bytes {data[:300].hex()}",
            )
            raise _Closed() from None
        for event in events:
            if isinstance(event, Reply | ErrorReply):
                self._reply(event)
            elif isinstance(event, AsyncCall):
                self._server_call(event)
            else:
                self.finding(
                    "unexpected-event", type(event).__name__, repr(event)[:300]
                )

    def _server_closed(self) -> None:
        if self.closed_by_server:
            raise _Closed()
        self.closed_by_server = True
        if self.expect_close is not None:
            self.stats.answers[f"closed ({self.expect_close})"] += 1
        elif self.maybe_close:
            self.stats.answers["closed (where the docs leave it open)"] += 1
            self.stats.open_questions["closed"] += 1
        elif (
            self.oracle.registered is not True
            and time.monotonic() - self.started > self.options.register_timeout - 1
        ):
            self.stats.answers["closed (register timeout)"] += 1
        else:
            self.check_server()
            self.finding(
                "unexpected-close",
                "the server closed a connection that broke no rule",
                f"outstanding: {self._outstanding_names()}",
            )
        raise _Closed()

    def _outstanding_names(self) -> list[str]:
        return [
            f"{p.verdict.method}#{p.verdict.msgid!r:.40}"
            for queue in self.outstanding.values()
            for p in queue
            if not p.optional
        ][:20]

    def _reply(self, event: Reply | ErrorReply) -> None:
        key = msgid_key(event.msgid)
        queue = self.outstanding.get(key)
        if not queue:
            self.finding(
                "wrong-msgid",
                f"a reply to msgid {key[0]} that no call is waiting for",
                repr(event)[:300],
            )
            return
        pending = queue.pop(0)
        ambiguous = pending.shared
        if not queue:
            del self.outstanding[key]
        verdict = pending.verdict
        method = verdict.method or "?"
        if pending.optional:
            self.stats.open_questions[f"answered ({verdict.reason})"] += 1
        if isinstance(event, ErrorReply):
            self._error_reply(event, pending, ambiguous)
        else:
            self.stats.answers["reply"] += 1
            if not ambiguous and verdict.expected_error and not pending.optional:
                self.finding(
                    "docs-mismatch" if method in DOC_NOTES else "accepted-bad-call",
                    f"{method}: expected {verdict.expected_error}, got a reply",
                    f"message {verdict.message!r:.500}",
                )
            if method == "register":
                self.oracle.registered = True
                if type(event.result) is bytes:
                    self.register_tid = event.result
                    self.last_invalidation = max(self.last_invalidation, event.result)
            if method == "tpc_finish" and type(event.result) is bytes:
                self.stats.committed.add(event.result)
                self.session_tids.add(event.result)
                if event.result in self.invalidated:
                    self.finding(
                        "own-invalidation", "invalidated for its own commit", ""
                    )
        if pending.call is not None and not ambiguous and not pending.call.mutations:
            self.world.learn(pending.call, event)

    def _error_reply(
        self, event: ErrorReply, pending: Pending, ambiguous: bool
    ) -> None:
        verdict = pending.verdict
        method = verdict.method or "?"
        name = event.class_name
        allowed = error_verdict(name)
        self.stats.answers[f"error {name}"] += 1
        message = ""
        if type(event.payload) in (tuple, list) and event.payload:
            message = str(event.payload[0])
        elif type(event.payload) is dict:
            message = str(event.payload.get("message", ""))
        if allowed is None:
            self.finding(
                "undocumented-error",
                f"{method}() -> {name}",
                f"{name}: {message[:300]}; call {verdict.message!r:.500}",
            )
        if method == "register" and self.oracle.registered is None:
            self.oracle.registered = False
        if ambiguous or pending.optional:
            return
        refused = name == "builtins.TypeError" and (
            message.startswith(f"{method}() takes")
            or message.startswith(f"{method}() argument")
        )
        expected = verdict.expected_error
        if expected == "builtins.TypeError" and not refused:
            self.finding(
                "accepted-bad-call",
                f"{method}: the documented checks refuse it, got {name}",
                f"{message[:300]}; call {verdict.message!r:.500}",
            )
        elif expected and expected != "builtins.TypeError" and name != expected:
            self.finding(
                "oracle-mismatch",
                f"{method}: expected {expected}, got {name}",
                f"{message[:300]}; call {verdict.message!r:.500}",
            )
        elif verdict.arguments_valid and refused:
            self.finding(
                "docs-mismatch" if method in DOC_NOTES else "refused-good-call",
                f"{method}: documented as valid, refused",
                f"{message[:300]}; call {verdict.message!r:.500}",
            )
        elif verdict.reason == "register succeeds":
            # a register the docs say succeeds
            self.finding(
                "oracle-mismatch",
                f"register: expected success, got {name}",
                f"{message[:300]}; call {verdict.message!r:.500}",
            )

    def _server_call(self, event: AsyncCall) -> None:
        method = event.method
        self.stats.answers[f"server call {method}"] += 1
        if method not in SERVER_CALLS:
            self.finding("unknown-server-call", method, repr(event)[:300])
            return
        if method == "invalidateTransaction":
            args = event.args
            tid = args[0] if args else None
            if type(tid) is not bytes or len(tid) != 8:
                self.finding("invalidation", "malformed", repr(args)[:300])
                return
            if tid <= self.last_invalidation:
                self.finding(
                    "invalidation-order",
                    "an invalidation tid did not rise",
                    f"{tid.hex()} after {self.last_invalidation.hex()}",
                )
            self.last_invalidation = max(self.last_invalidation, tid)
            self.invalidated.add(tid)
            if tid in self.session_tids:
                self.finding("own-invalidation", "invalidated for its own commit", "")

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Read until ``done()`` or ``timeout`` seconds; True if done."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            readable, _ = self._select(False, deadline)
            if readable:
                self._receive()
        return True

    def _waiting(
        self, *, barrier_only: bool = False, awaited_only: bool = False
    ) -> bool:
        for waiting in self.outstanding.values():
            for p in waiting:
                if p.optional:
                    continue
                if barrier_only and not p.barrier:
                    continue
                if awaited_only and not (p.call is not None and p.call.wait):
                    continue
                return True
        return False

    # -- batches

    def exchange(self, calls: list[Call]) -> bool:
        """Send one batch and its barrier, read up to the barrier's answer;
        False once the session cannot go on."""
        rng = self.rng
        if calls and rng.random() < self.sequence_rate:
            tag = mutate_sequence(rng, calls)
            if tag:
                self.stats.mutations[tag] += 1
        frames, self.unsent = self.unsent, []
        stop_after = False
        for call in calls:
            prepared = self.prepare(call)
            if prepared is None:
                continue
            frame, verdicts = prepared
            frames.append(frame)
            if self.expect_close is not None or any(
                v.outcome == MAYBE for v in verdicts
            ):
                stop_after = self.expect_close is not None
                break
        if self.expect_close is None and self.oracle.pending == 0:
            barrier = self.prepare(
                Call([None, False, "ping", []], "barrier"), mutate=False
            )
            if barrier is not None:
                frames.append(barrier[0])
        self.send_frames(frames)
        if self.expect_close is not None:
            return False
        if self.oracle.pending:
            return False  # a frame is incomplete: nothing more will be read
        if not self.wait(
            lambda: not self._waiting(barrier_only=True), self.options.hang_timeout
        ):
            self.check_server()
            self.finding(
                "hang",
                "no answer to the barrier ping",
                f"outstanding: {self._outstanding_names()}",
            )
            raise _Closed()
        if not self.wait(
            lambda: not self._waiting(awaited_only=True), self.options.hang_timeout
        ):
            self.check_server()
            self.finding(
                "hang",
                "no answer to a vote, finish or abort",
                f"outstanding: {self._outstanding_names()}",
            )
            raise _Closed()
        self.maybe_close = False
        return not stop_after and self.sent < self.budget

    def send_frames(self, frames: list[bytes]) -> None:
        """Send frames glued together, in one or a few writes cut anywhere."""
        if not frames:
            return
        data = b"".join(frames)
        if self.rng.random() < 0.1 and len(data) > 1:
            cut = self.rng.randrange(1, len(data))
            self.send(data[:cut])
            self.send(data[cut:])
        else:
            self.send(data)

    # -- the kinds of session

    def handshake(self) -> bytes:
        encoding = b"M" if self.rng.random() < 0.6 else b"Z"
        prepared = self.prepare(
            Call(None, "handshake", raw=encoding + b"5"), mutate=False
        )
        assert prepared is not None
        if self.rng.random() < 0.5:
            self.send(prepared[0])
        else:  # pipelined with the first batch, as ZEO clients do
            self.unsent.append(prepared[0])
        return encoding

    def structured(self) -> None:
        assert self.sock is not None
        encoding = self.handshake()
        grammar = SessionGrammar(
            self.rng, self.world, f"c{self.index}s{self.session_number}", encoding
        )
        for calls in grammar.batches():
            if not self.exchange(calls):
                return

    def random_frames(self) -> None:
        rng = self.rng
        self.handshake()
        register = _sync("register", STORAGE, False, kind="register")
        if rng.random() < 0.5 and not self.exchange([register]):
            return
        calls = [
            Call(None, "random", raw=random_payload(rng, self.oracle.encoding))
            for _ in range(rng.randint(1, 10))
        ]
        self.exchange(calls)

    def random_handshake(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            data = rng.randbytes(rng.randint(1, 64))
        elif roll < 0.7:
            data = encode_frame(rng.randbytes(rng.randint(0, 8)))
        elif roll < 0.9:
            data = encode_frame(
                rng.choice(
                    (
                        b"M4",
                        b"Z6",
                        b"M55",
                        b"m5",
                        b"M5\0",
                        b"Z",
                        b"",
                        b"ruok\0",
                        b"RUOK",
                        b"5M",
                    )
                )
            )
        else:
            data = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(40)
        verdicts = self.oracle.feed(data)
        self.stats.frames["random-handshake"] += 1
        self.stats.bytes_sent += len(data)
        self.sent += 1
        self.log.append(data)
        now = time.monotonic()
        for verdict in verdicts:
            self._expect(verdict, Call(None, "random-handshake"), now)
        self.send(data)

    def status_probe(self) -> None:
        prepared = self.prepare(Call(None, "ruok", raw=STATUS_PROBE), mutate=False)
        assert prepared is not None
        self.send(prepared[0])

    def check_status(self, data: bytes) -> None:
        """A ruok answer: one frame of JSON naming the storage, then EOF."""
        size = int.from_bytes(data[:4], "big")
        try:
            status = json.loads(data[4 : 4 + size])
            assert len(data) == 4 + size, "more than one frame"
            assert STORAGE in status, "no entry for the storage"
            assert self.closed_by_server, "not closed"
        except Exception as exc:
            self.finding(
                "status-probe", f"{type(exc).__name__}", f"{exc}: {data[:300]!r}"
            )
        else:
            self.stats.answers["ruok status, then closed"] += 1

    def finish_session(self) -> None:
        """Wait for what is owed, check the close, end the session."""
        if self.unsent:
            frames, self.unsent = self.unsent, []
            self.send_frames(frames)
        if self.expect_close == "ruok":
            with contextlib.suppress(_Closed):
                self.wait(lambda: self.closed_by_server, CLOSE_TIMEOUT)
            self.check_status(b"".join(self.status_frames))
            return
        if self.expect_close is not None:
            if not self.wait(lambda: self.closed_by_server, CLOSE_TIMEOUT):
                self.check_server()
                self.finding(
                    "not-closed",
                    f"no close after: {self.expect_close}",
                    "the oracle expected the server to close the connection",
                )
            return
        if self.oracle.pending or self.oracle.state == "handshake":
            # An incomplete frame or handshake: nothing more can be answered.
            self.wait(lambda: False, 0.02)
            return
        if not self.wait(lambda: not self._waiting(), 5.0):
            # Deferred calls may wait for our own transaction (a pack behind
            # our vote): abort what we began, as a client would, and wait on.
            if self.oracle.registered:
                frames = []
                for token in list(dict.fromkeys(self.tokens)):
                    prepared = self.prepare(
                        Call([None, False, "tpc_abort", [token]], "cleanup"),
                        mutate=False,
                    )
                    if prepared is not None:
                        frames.append(prepared[0])
                self.send_frames(frames)
            if not self.wait(lambda: not self._waiting(), self.options.hang_timeout):
                self.check_server()
                self.finding(
                    "hang",
                    "calls never answered",
                    f"outstanding: {self._outstanding_names()}",
                )
        if self.closed_by_server:
            return
        # How to leave: politely, abruptly, or in the middle of a frame.
        roll = self.rng.random()
        assert self.sock is not None
        if roll < 0.1:
            with contextlib.suppress(OSError):
                self.sock.send(b"\x00\x00\x01\x00partial")
        elif roll < 0.2:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )


def _copy_message(message: Any) -> Any:
    if type(message) is list:
        copied = list(message)
        if len(copied) == 4 and type(copied[3]) is list:
            copied[3] = list(copied[3])
        return copied
    return message


# -- the server -------------------------------------------------------------------


def resources(server: ServerProcess) -> dict[str, int]:
    """RSS and peak RSS (KB), open file descriptors, threads: those of them
    that ``/proc`` has."""
    figures: dict[str, int] = {}
    for key in ("VmRSS", "VmHWM", "Threads"):
        with contextlib.suppress(OSError, LookupError):
            figures[key] = server.proc_status(key)
    with contextlib.suppress(OSError):
        figures["fds"] = server.open_fds()
    return figures


# -- seed and bystander (stock ZEO 6 clients) ---------------------------------------

SEED_OBJECTS = 30
SEED_BLOBS = {"empty": 0, "small": 1000, "large": 150_000}
BYSTANDER_SLOTS = 10


def open_zeo(address: tuple[str, int], blob_dir: Path, **options: Any) -> Any:
    from ZEO.ClientStorage import ClientStorage

    blob_dir.mkdir(parents=True, exist_ok=True)
    return ClientStorage(address, blob_dir=str(blob_dir), wait_timeout=60, **options)


def _blob_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def seed_storage(address: tuple[str, int], directory: Path, seed: int) -> None:
    """Commit the seed objects and blobs with a stock ZEO 6 client."""
    import transaction
    import ZODB
    from persistent.mapping import PersistentMapping
    from ZODB.blob import Blob

    rng = random.Random(f"{seed}/seed")
    storage = open_zeo(address, directory / "seed-blobs")
    db = ZODB.DB(storage)
    try:
        manager = transaction.TransactionManager()
        connection = db.open(manager)
        root = connection.root()
        root["seed"] = PersistentMapping(
            {
                f"obj{i}": PersistentMapping({"i": i, "data": rng.randbytes(i * 37)})
                for i in range(SEED_OBJECTS)
            }
        )
        manager.get().note("seed objects")
        manager.commit()
        blobs = PersistentMapping()
        for name, size in SEED_BLOBS.items():
            blob = Blob()
            with blob.open("w") as file:
                file.write(_blob_bytes(rng, size))
            blobs[name] = blob
        root["seed-blobs"] = blobs
        manager.get().note("seed blobs")
        manager.commit()
        connection.close()
    finally:
        db.close()


@dataclass
class Snapshot:
    """Every object and transaction when the fuzzing starts."""

    records: dict[bytes, tuple[bytes, bytes]]  # oid -> (data, serial)
    tids: list[bytes]
    blobs: dict[bytes, tuple[bytes, str]]  # oid -> (serial, sha256)
    seed: Seed


def take_snapshot(address: tuple[str, int], directory: Path) -> Snapshot:
    import ZODB

    storage = open_zeo(address, directory / "snapshot-blobs")
    db = ZODB.DB(storage)
    try:
        tids: list[bytes] = []
        oids: set[bytes] = set()
        for txn in storage.iterator():
            tids.append(txn.tid)
            oids.update(record.oid for record in txn)
        records = {}
        for oid in sorted(oids):
            data, serial, _ = storage.loadBefore(oid, MAXTID)
            records[oid] = (data, serial)
        connection = db.open()
        blobs = {}
        for blob in connection.root()["seed-blobs"].values():
            blob._p_activate()  # a ghost's serial is z64
            oid, serial = blob._p_oid, blob._p_serial
            with blob.open("r") as file:
                blobs[oid] = (serial, hashlib.sha256(file.read()).hexdigest())
        connection.close()
    finally:
        db.close()
    seed = Seed(
        objects=tuple((oid, serial) for oid, (_, serial) in records.items()),
        blobs=tuple((oid, serial) for oid, (serial, _) in blobs.items()),
        tids=tuple(tids),
    )
    return Snapshot(records, tids, blobs, seed)


def bystander(
    address: tuple[str, int],
    directory: str,
    interval: float,
    seed: int,
    stop: Any,
    out: Any,
) -> None:
    """The well-behaved client: commits every ``interval`` seconds with one
    ZEO 6 ClientStorage and reads everything back through another (with
    ``server_sync``, so it must see the commit), checking each value.

    Puts ``("ready", None)`` once its objects exist, then ``("done", dict)``.
    """
    import transaction
    import ZODB
    from persistent.mapping import PersistentMapping
    from ZODB.blob import Blob

    rng = random.Random(f"{seed}/bystander")
    base = Path(directory)
    commit_latency: list[float] = []
    read_latency: list[float] = []
    failures: list[str] = []
    tids: list[bytes] = []
    expected: dict[int, tuple[int, bytes]] = {}
    blob_data = b"bystander blob 0"
    result: dict[str, Any] = {}
    try:
        writer = ZODB.DB(open_zeo(address, base / "writer-blobs"))
        reader = ZODB.DB(open_zeo(address, base / "reader-blobs", server_sync=True))
    except Exception as exc:
        out.put(("failed", repr(exc)))
        return
    try:
        manager = transaction.TransactionManager()
        connection = writer.open(manager)
        root = connection.root()
        slots = PersistentMapping()
        for slot in range(BYSTANDER_SLOTS):
            slots[slot] = PersistentMapping({"n": 0, "payload": b""})
            expected[slot] = (0, b"")
        root["bystander"] = slots
        blob = Blob()
        with blob.open("w") as file:
            file.write(blob_data)
        root["bystander-blob"] = blob
        manager.get().note("bystander setup")
        manager.commit()
        tids.append(root._p_serial)
        out.put(("ready", None))
        next_tick = time.monotonic()
        tick = 0
        blob_changed = True
        while not stop.is_set():
            tick += 1
            slot = rng.randrange(BYSTANDER_SLOTS)
            number = expected[slot][0] + 1
            payload = rng.randbytes(rng.randrange(2000))
            new_blob = b"bystander blob %d " % tick + rng.randbytes(
                rng.randrange(70_000)
            )
            started = time.perf_counter()
            try:
                slots[slot]["n"] = number
                slots[slot]["payload"] = payload
                if tick % 10 == 0:
                    with root["bystander-blob"].open("w") as file:
                        file.write(new_blob)
                manager.get().note(f"bystander {tick}")
                manager.commit()
                commit_latency.append(time.perf_counter() - started)
                tids.append(slots[slot]._p_serial)
                expected[slot] = (number, payload)
                if tick % 10 == 0:
                    blob_data = new_blob
                    blob_changed = True
            except Exception as exc:
                failures.append(f"commit {tick}: {exc!r}"[:300])
                manager.abort()
            started = time.perf_counter()
            try:
                read_manager = transaction.TransactionManager()
                seen = reader.open(read_manager)
                read_manager.begin()
                seen_slots = seen.root()["bystander"]
                for index, (n, data) in expected.items():
                    state = (seen_slots[index]["n"], seen_slots[index]["payload"])
                    if state != (n, data):
                        failures.append(
                            f"read {tick}: slot {index} is n={state[0]}, expected {n}"
                        )
                if blob_changed:
                    with seen.root()["bystander-blob"].open("r") as file:
                        if file.read() != blob_data:
                            failures.append(f"read {tick}: the blob differs")
                    blob_changed = False
                read_manager.abort()
                seen.close()
                read_latency.append(time.perf_counter() - started)
            except Exception as exc:
                failures.append(f"read {tick}: {exc!r}"[:300])
            next_tick = max(next_tick + interval, time.monotonic())
            stop.wait(max(0.0, next_tick - time.monotonic()))
        connection.close()
        result = {
            "commit_latency": commit_latency,
            "read_latency": read_latency,
            "failures": failures,
            "tids": tids,
            "expected": expected,
            "blob_sha256": hashlib.sha256(blob_data).hexdigest(),
        }
    except Exception as exc:
        failures.append(f"bystander: {exc!r}")
        result = {
            "commit_latency": commit_latency,
            "read_latency": read_latency,
            "failures": failures,
            "tids": tids,
            "expected": expected,
            "blob_sha256": hashlib.sha256(blob_data).hexdigest(),
        }
    finally:
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(Exception):
            reader.close()
        out.put(("done", result))


# -- fuzzing workers --------------------------------------------------------------


def run_connections(
    options: FuzzOptions,
    indices: list[int],
    budgets: list[int],
    stop: Any,
    progress: Callable[[int], None] | None = None,
) -> Stats:
    """Run fuzzing connections in threads of this process; merged stats."""
    halt = threading.Event()
    connections = [
        FuzzConnection(index, options, budget, halt)
        for index, budget in zip(indices, budgets, strict=True)
    ]
    threads = [
        threading.Thread(target=connection.run, name=f"fuzz-{connection.index}")
        for connection in connections
    ]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(1.0)
        if stop.is_set():
            halt.set()
        if progress is not None:
            progress(sum(connection.sent for connection in connections))
    stats = Stats()
    for connection in connections:
        stats.merge(connection.stats)
    return stats


def _worker(
    options: FuzzOptions,
    indices: list[int],
    budgets: list[int],
    stop: Any,
    out: Any,
    worker: int,
) -> None:
    last = [0.0]

    def progress(sent: int) -> None:
        now = time.monotonic()
        if now - last[0] > 5:
            last[0] = now
            out.put(("progress", worker, sent))

    try:
        stats = run_connections(options, indices, budgets, stop, progress)
        out.put(("done", worker, stats))
    except BaseException:
        out.put(("error", worker, traceback.format_exc()))


# -- the end checks ----------------------------------------------------------------

TRACEBACK = "Traceback (most recent call last):"
_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d[ T][\d:.,]+ (?P<level>[A-Z]+) (?P<logger>\S+) (?P<msg>.*)$"
)
_EXCEPTION_LINE = re.compile(r"^(?P<cls>[A-Za-z_][\w.]*)(?::|$)")


def _template(message: str) -> str:
    # the peer's label: a client label, then its address
    message = re.sub(r"^.*?\d+\.\d+\.\d+\.\d+:\d+: ", "", message)
    message = re.sub(r"b?'[^']*'|b?\"[^\"]*\"", "'…'", message)
    message = re.sub(r"\d+", "N", message)
    return message[:90]


@dataclass
class TracebackGroup:
    level: str
    logger: str
    message: str
    exception: str
    count: int = 0
    expected: bool = True
    #: The known finding it belongs to (``KNOWN_LOG``), or "expected".
    known: str | None = None
    sample: str = ""


_PACKED = re.compile(r"pack\(t=([^)]+)\) complete")


def scan_log(
    path: Path,
) -> tuple[list[TracebackGroup], Counter[str], int, list[float]]:
    """Tracebacks in the server's log, grouped by the line that logged them
    and their exception class; counts of log lines by level; the log's
    size; the times of the packs that completed."""
    packs: list[float] = []
    groups: dict[tuple[str, str, str, str], TracebackGroup] = {}
    levels: Counter[str] = Counter()
    last: tuple[str, str, str] = ("?", "?", "?")
    block: list[str] | None = None

    def close(lines: list[str], exception: str) -> None:
        cls = exception if "." in exception else f"builtins.{exception}"
        key = (*last[:2], _template(last[2]), cls)
        group = groups.get(key)
        if group is None:
            expected = last[0] in ("INFO", "WARNING") and error_verdict(cls) is not None
            group = groups[key] = TracebackGroup(
                last[0], last[1], _template(last[2]), cls, expected=expected
            )
            group.known = known_log(last[0], last[1], _template(last[2]), cls)
            group.sample = "\n".join(lines[-12:])[:3000]
        group.count += 1

    with open(path, errors="replace") as file:
        for raw in file:
            line = raw.rstrip("\n")
            if block is not None:
                if (
                    line.startswith(TRACEBACK)
                    or line.startswith((" ", "\t"))
                    or not line
                ):
                    block.append(line)
                    continue
                if line.startswith(("During handling", "The above exception")):
                    block.append(line)
                    continue
                match = _EXCEPTION_LINE.match(line)
                if match and not _LOG_LINE.match(line):
                    block.append(line)
                    close(block, match["cls"])
                    block = None
                    continue
                close(block, "?")
                block = None
            if line.startswith(TRACEBACK):
                block = [line]
                continue
            match = _LOG_LINE.match(line)
            if match:
                levels[match["level"]] += 1
                last = (match["level"], match["logger"], match["msg"])
                packed = _PACKED.search(line)
                if packed:
                    with contextlib.suppress(ValueError):
                        packs.append(float(packed[1]))
    if block is not None:
        close(block, "?")
    ordered = sorted(groups.values(), key=lambda g: -g.count)
    return ordered, levels, path.stat().st_size, packs


def _fstest(path: Path) -> tuple[int, str]:
    completed = subprocess.run(
        [sys.executable, "-m", "ZODB.scripts.fstest", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return completed.returncode, (completed.stdout + completed.stderr).strip()


def check_data(
    address: tuple[str, int],
    directory: Path,
    snapshot: Snapshot,
    bystander_result: dict[str, Any],
) -> list[str]:
    """Through a fresh ZEO 6 client: the seed unchanged, the bystander's
    objects as it last committed them.  Problems, as text."""
    import ZODB

    problems: list[str] = []
    bystander_oids: set[bytes] = set()
    storage = open_zeo(address, directory / "check-blobs")
    db = ZODB.DB(storage)
    try:
        connection = db.open()
        root = connection.root()
        keys = set(root.keys())
        if keys != {"seed", "seed-blobs", "bystander", "bystander-blob"}:
            problems.append(f"the root's keys are {sorted(keys)}")
        slots = root["bystander"]
        bystander_oids.add(slots._p_oid)
        bystander_oids.add(root["bystander-blob"]._p_oid)
        bystander_oids.add(root._p_oid)
        for index, (number, payload) in bystander_result.get("expected", {}).items():
            slot = slots[index]
            bystander_oids.add(slot._p_oid)
            if (slot["n"], slot["payload"]) != (number, payload):
                problems.append(
                    f"bystander slot {index}: n={slot['n']}, expected {number}"
                )
        with root["bystander-blob"].open("r") as file:
            if hashlib.sha256(file.read()).hexdigest() != bystander_result.get(
                "blob_sha256"
            ):
                problems.append("the bystander's blob differs")
        connection.close()
        for oid, (data, serial) in snapshot.records.items():
            if oid in bystander_oids:
                continue
            now, now_serial, _ = storage.loadBefore(oid, MAXTID)
            if (now, now_serial) != (data, serial):
                problems.append(f"seeded object {oid.hex()} changed")
        for oid, (serial, digest) in snapshot.blobs.items():
            try:
                with open(storage.loadBlob(oid, serial), "rb") as file:
                    if hashlib.sha256(file.read()).hexdigest() != digest:
                        problems.append(f"seeded blob {oid.hex()} differs")
            except Exception as exc:
                problems.append(f"seeded blob {oid.hex()}: {exc!r}"[:300])
    finally:
        db.close()
    return problems


def check_transactions(
    path: Path,
    snapshot: Snapshot,
    bystander_tids: set[bytes],
    stats: Stats,
    packs: list[float],
) -> tuple[list[str], Counter[str]]:
    """Every transaction in Data.fs is the seed's, the bystander's, or one
    a fuzzer began, voted and finished; fuzz transactions touch only
    objects the fuzzers created."""
    from ZODB.FileStorage import FileStorage

    problems: list[str] = []
    counts: Counter[str] = Counter()
    protected = set(snapshot.records)
    seen: set[bytes] = set()
    storage = FileStorage(str(path), read_only=True)
    try:
        for txn in storage.iterator():
            seen.add(txn.tid)
            oids = {record.oid for record in txn}
            if txn.status not in (" ", "p"):
                problems.append(
                    f"transaction {txn.tid.hex()} has status {txn.status!r}"
                )
            if txn.tid in snapshot.tids:
                counts["before the fuzzing"] += 1
            elif txn.tid in bystander_tids:
                counts["the bystander's"] += 1
            elif (
                txn.user,
                txn.description,
            ) in stats.finished_any_order - stats.finished:
                # Its vote was sent before its tpc_begin or its last store
                # (known finding F7: deferred calls start after the frames
                # read with them).
                counts["the fuzzers', committed out of order (F7)"] += 1
            elif (txn.user, txn.description) in stats.finished:
                counts["the fuzzers'"] += 1
                if not txn.description.startswith(FUZZ_MARK):
                    counts["the fuzzers' (mark changed by a byte mutation)"] += 1
                touched = oids & protected
                if touched:
                    problems.append(
                        f"fuzz transaction {txn.tid.hex()} changed protected objects "
                        f"{sorted(oid.hex() for oid in touched)[:5]}"
                    )
            elif (txn.user, txn.description) in stats.begun:
                # Begun by a fuzzer, whose vote and finish the tracker could
                # not pair with it (a repeated token, an abort shaped as a
                # heartbeat, F7's reordering); it touches only fuzz objects.
                counts["the fuzzers', calls not paired by the tracker"] += 1
                touched = oids & protected
                if touched:
                    problems.append(
                        f"fuzz transaction {txn.tid.hex()} changed protected objects "
                        f"{sorted(oid.hex() for oid in touched)[:5]}"
                    )
            else:
                counts["unexplained"] += 1
                if len(problems) < 50:
                    calls = stats.begun.get((txn.user, txn.description))
                    problems.append(
                        f"transaction {txn.tid.hex()} ({txn.user!r}, "
                        f"{txn.description[:80]!r}) was not sent whole by anyone "
                        f"(calls for its token: {calls})"
                    )
    finally:
        storage.close()
    from ZODB.TimeStamp import TimeStamp

    # A pack (a byte mutation can turn an old pack time into a future one)
    # removes transactions whose records all became history.
    packed_until = max((t for t in packs if math.isfinite(t)), default=0.0)

    def unexplained(tids: set[bytes]) -> set[bytes]:
        return {tid for tid in tids if TimeStamp(tid).timeTime() >= packed_until}

    counts["fuzz tids answered by tpc_finish"] = len(stats.committed)
    missing = stats.committed - seen
    if missing:
        counts["fuzz tids removed by a pack"] = len(missing - unexplained(missing))
    if unexplained(missing):
        problems.append(
            f"{len(unexplained(missing))} tids from tpc_finish are not in Data.fs"
        )
    missing = bystander_tids - seen
    if missing:
        counts["bystander tids removed by a pack"] = len(missing - unexplained(missing))
    if unexplained(missing):
        problems.append(f"{len(unexplained(missing))} bystander commits are missing")
    return problems, counts


def ping(address: tuple[str, int]) -> bool:
    """A raw connection registers and pings."""
    with socket.create_connection(address, timeout=30) as sock:
        connection = ClientConnection()
        greeting = b""
        while len(greeting) < 6:
            chunk = sock.recv(6 - len(greeting))
            if not chunk:
                return False
            greeting += chunk
        connection.receive_data(greeting)
        sock.sendall(connection.handshake())
        sock.sendall(connection.call(1, "register", (STORAGE, True)))
        sock.sendall(connection.call(2, "ping", ()))
        events: list[Any] = []
        while len([e for e in events if isinstance(e, Reply | ErrorReply)]) < 2:
            data = sock.recv(65536)
            if not data:
                return False
            events += connection.receive_data(data)
        replies = [e for e in events if isinstance(e, Reply | ErrorReply)]
        return all(isinstance(e, Reply) for e in replies)


# -- the run ------------------------------------------------------------------------


@dataclass
class Options:
    frames: int = 20_000
    seed: int = 1
    connections: int = 8
    #: Processes for the fuzzing connections (0: threads of this process,
    #: the bystander a thread too).
    processes: int = 2
    known_bugs: str = "avoid"
    hang_timeout: float = 60.0
    interval: float = 0.05
    directory: Path | None = None
    keep: bool = False
    quiet: bool = False


@dataclass
class Result:
    options: Options
    stats: Stats
    findings: list[Finding]
    duration: float
    fuzz_seconds: float
    bystander: dict[str, Any]
    resources_before: dict[str, int]
    resources_after: dict[str, int]
    peak_rss: int
    data_problems: list[str]
    transaction_problems: list[str]
    transaction_counts: Counter[str]
    fstest: tuple[int, str]
    tracebacks: list[TracebackGroup]
    log_levels: Counter[str]
    log_size: int
    server_alive_at_end: bool
    server_exit_status: int | None
    server_stop_seconds: float | None
    machine: dict[str, Any]
    loads: list[tuple[float, float, float]]
    doc_differences: list[str]
    directory: str

    @property
    def problems(self) -> list[str]:
        """Everything that fails the run besides the findings."""
        problems = [*self.data_problems, *self.transaction_problems]
        if not self.server_alive_at_end:
            problems.append("the server was not alive and answering at the end")
        if self.fstest[0] != 0 or self.fstest[1]:
            problems.append(f"fstest: {self.fstest[1][:300]}")
        if self.server_exit_status != 0:
            problems.append(
                f"the server exited with {self.server_exit_status} on SIGTERM"
            )
        problems += [
            f"bystander: {failure}" for failure in self.bystander.get("failures", [])
        ]
        if not self.bystander.get("commit_latency"):
            problems.append("the bystander committed nothing")
        problems += [
            f"log: {g.count} unexpected tracebacks: {g.level} {g.message} "
            f"-> {g.exception}"
            for g in self.tracebacks
            if not g.expected and not g.known
        ]
        return problems


def _load() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (one, five, fifteen)


def _say(options: Options, text: str) -> None:
    if not options.quiet:
        print(text, file=sys.stderr, flush=True)


def run(options: Options) -> Result:
    """The whole stress run; see the module's docstring."""
    started = time.monotonic()
    details = {**machine(), "platform": platform.platform()}
    loads = [_load()]
    directory = options.directory or Path(tempfile.mkdtemp(prefix="zodbserver-fuzz-"))
    directory.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        "ours",
        directory,
        blobs=True,
        zeo_lines=(f"max-frame-size {MAX_FRAME_SIZE // 1024}KB",),
    )
    server.start()
    context = multiprocessing.get_context("spawn")
    bystander_stop: Any
    bystander_out: Any
    bystander_runner: Any
    try:
        seed_storage(server.address, directory, options.seed)
        if options.processes:
            bystander_stop, bystander_out = context.Event(), context.Queue()
            bystander_runner = context.Process(
                target=bystander,
                args=(
                    server.address,
                    str(directory / "bystander"),
                    options.interval,
                    options.seed,
                    bystander_stop,
                    bystander_out,
                ),
                name="bystander",
            )
        else:
            bystander_stop, bystander_out = threading.Event(), queue.Queue()
            bystander_runner = threading.Thread(
                target=bystander,
                args=(
                    server.address,
                    str(directory / "bystander"),
                    options.interval,
                    options.seed,
                    bystander_stop,
                    bystander_out,
                ),
                name="bystander",
            )
        bystander_runner.start()
        status, detail = bystander_out.get(timeout=120)
        if status != "ready":
            raise RuntimeError(f"the bystander did not start: {detail}")
        snapshot = take_snapshot(server.address, directory)
        protected = Protected(frozenset(snapshot.records), frozenset(snapshot.tids))
        fuzz_options = FuzzOptions(
            server.address,
            server.pid,
            options.seed,
            snapshot.seed,
            protected,
            options.known_bugs,
            options.hang_timeout,
        )
        time.sleep(0.5)
        before = resources(server)
        peak = before.get("VmRSS", 0)
        share, extra = divmod(options.frames, options.connections)
        budgets = [share + (index < extra) for index in range(options.connections)]
        indices = list(range(options.connections))
        fuzz_started = time.monotonic()
        stats = Stats()
        stop = threading.Event() if not options.processes else context.Event()
        last_report = [time.monotonic()]

        def report(sent: int) -> None:
            now = time.monotonic()
            if now - last_report[0] >= 10:
                last_report[0] = now
                rate = sent / max(now - fuzz_started, 1e-9)
                _say(
                    options, f"fuzz: {sent} frames, {rate:.0f}/s, load {_load()[0]:.1f}"
                )
            loads.append(_load())

        if options.processes == 0:
            monitor_done = threading.Event()

            def monitor() -> None:
                nonlocal peak
                while not monitor_done.wait(2.0):
                    peak = max(peak, resources(server).get("VmRSS", 0))
                    if not server.running:
                        stop.set()

            watcher = threading.Thread(target=monitor, daemon=True)
            watcher.start()
            try:
                stats = run_connections(fuzz_options, indices, budgets, stop, report)
            finally:
                monitor_done.set()
                watcher.join()
        else:
            out = context.Queue()
            groups = [indices[i :: options.processes] for i in range(options.processes)]
            workers = [
                context.Process(
                    target=_worker,
                    args=(
                        fuzz_options,
                        group,
                        [budgets[i] for i in group],
                        stop,
                        out,
                        number,
                    ),
                    name=f"fuzz-worker-{number}",
                )
                for number, group in enumerate(groups)
                if group
            ]
            for worker in workers:
                worker.start()
            sent = dict.fromkeys(range(len(workers)), 0)
            done = 0
            while done < len(workers):
                try:
                    message = out.get(timeout=2.0)
                except queue.Empty:
                    message = None
                peak = max(peak, resources(server).get("VmRSS", 0))
                if not server.running:
                    stop.set()
                if message is None:
                    if not any(worker.is_alive() for worker in workers):
                        dead = [(w.name, w.exitcode) for w in workers]
                        try:  # a last message may still be in the pipe
                            message = out.get(timeout=10.0)
                        except queue.Empty:
                            raise RuntimeError(
                                f"fuzzing workers ended without results: {dead}"
                            ) from None
                    else:
                        continue
                if message[0] == "progress":
                    sent[message[1]] = message[2]
                    report(sum(sent.values()))
                elif message[0] == "done":
                    stats.merge(message[2])
                    done += 1
                else:
                    raise RuntimeError(f"a fuzzing worker failed: {message[2]}")
            for worker in workers:
                worker.join(60)
        fuzz_seconds = time.monotonic() - fuzz_started
        loads.append(_load())
        _say(options, f"fuzz: {stats.total_frames} frames in {fuzz_seconds:.0f} s")
        bystander_stop.set()
        status, bystander_result = bystander_out.get(timeout=120)
        bystander_runner.join(60)
        time.sleep(1.0)
        alive = server.running
        try:
            alive = alive and ping(server.address)
        except OSError:
            alive = False
        after = resources(server)
        data_problems = (
            check_data(server.address, directory, snapshot, bystander_result)
            if alive
            else ["not checked: the server is gone"]
        )
    finally:
        running = server.running
        stopping = time.monotonic()
        exit_status = server.stop()
        stop_seconds = time.monotonic() - stopping if running else None
    tracebacks, levels, log_size, packs = scan_log(server.log_path)
    transaction_problems, transaction_counts = check_transactions(
        server.path, snapshot, set(bystander_result.get("tids", ())), stats, packs
    )
    fstest = _fstest(server.path)
    findings = sorted(stats.findings.values(), key=lambda f: (f.kind, -f.count))
    result = Result(
        options,
        stats,
        findings,
        time.monotonic() - started,
        fuzz_seconds,
        bystander_result,
        before,
        after,
        peak,
        data_problems,
        transaction_problems,
        transaction_counts,
        fstest,
        tracebacks,
        levels,
        log_size,
        alive,
        exit_status,
        stop_seconds,
        details,
        loads,
        doc_table_differences(),
        str(directory),
    )
    if not options.keep and not result.findings and not result.problems:
        shutil.rmtree(directory, ignore_errors=True)
    return result


# -- the report ----------------------------------------------------------------------


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.1f}"


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def report(result: Result) -> str:
    stats, options = result.stats, result.options
    frames = stats.total_frames
    rate = frames / max(result.fuzz_seconds, 1e-9)
    lines = [
        "# Live protocol fuzzing",
        "",
        f"`python -m stress.fuzz --frames {options.frames} --seed {options.seed} "
        f"--connections {options.connections} --processes {options.processes} "
        f"--known-bugs {options.known_bugs}`",
        "",
        "## Summary",
        "",
        f"- frames sent: **{frames:,}** ({stats.bytes_sent / 1e6:.1f} MB) in "
        f"{result.fuzz_seconds:.0f} s of fuzzing: **{rate:,.0f} frames/s**; "
        f"whole run {result.duration:.0f} s",
        f"- sessions (TCP connections): {sum(stats.sessions.values()):,} "
        + ", ".join(f"{k} {v:,}" for k, v in stats.sessions.most_common()),
        f"- findings: **{len(result.findings)}** distinct "
        f"({sum(f.count for f in result.findings):,} occurrences)",
        f"- other problems: **{len(result.problems)}**",
        f"- server alive and answering at the end: {result.server_alive_at_end}; "
        f"exit status on SIGTERM: {result.server_exit_status} "
        f"(in {result.server_stop_seconds or 0:.1f} s)",
        f"- fstest: exit {result.fstest[0]}, {result.fstest[1][:200] or 'clean'}",
        "",
        "## Machine",
        "",
    ]
    details = result.machine
    loads = result.loads
    load_text = ", ".join(
        f"{one:.1f}" for one, _, _ in loads[:: max(1, len(loads) // 12)]
    )
    lines += [
        f"- nproc {details['cores']}, {details['cpu_model']}, "
        f"RAM {details['ram_gib']} GiB",
        f"- {details['os']}, {details['python']} ({details['platform']})",
        f"- load average (1 min) before {loads[0][0]:.2f}, after {loads[-1][0]:.2f}, "
        f"max {max(load[0] for load in loads):.2f}; samples: {load_text}",
        "- other jobs were running on the machine at the same time",
        "",
        "## Frames sent, by kind",
        "",
        *_table(stats.frames.most_common(), ("kind", "frames")),
        "",
        "Mutations applied (a frame may carry several):",
        "",
        *_table(stats.mutations.most_common(), ("mutation", "frames")),
        "",
    ]
    if stats.withheld:
        lines += [
            "Frames withheld by the guards (not sent, not counted above):",
            "",
            *_table(stats.withheld.most_common(), ("guard", "frames")),
            "",
        ]
    lines += [
        "## Answers, by class",
        "",
        *_table(
            [
                (name, count, _allowance(name))
                for name, count in sorted(stats.answers.items(), key=lambda x: -x[1])
            ],
            ("answer", "count", "allowed by"),
        ),
        "",
    ]
    if stats.open_questions:
        lines += [
            "Where the docs leave the outcome open (not findings):",
            "",
            *_table(stats.open_questions.most_common(), ("outcome", "count")),
            "",
        ]
    lines += ["## Findings", ""]
    if not result.findings:
        lines += ["None.", ""]
    for finding in result.findings:
        lines += [
            f"### {finding.signature}",
            "",
            f"- kind: {finding.kind}; occurrences: {finding.count}",
            f"- reproducer: seed {finding.seed}, connection {finding.connection}, "
            f"session {finding.session}; frames of the session below, hex",
            f"- detail: {finding.detail[:600]}",
            "",
            "```",
            *[
                frame[:600] + ("…" if len(frame) > 600 else "")
                for frame in finding.frames[-12:]
            ],
            "```",
            "",
        ]
    lines += ["## Known findings (reported before, counted apart)", ""]
    if not stats.known:
        lines += ["None seen in this run.", ""]
    for finding in sorted(stats.known.values(), key=lambda f: f.signature):
        lines += [
            f"- **{known_finding(finding.signature)}** {finding.signature}: "
            f"{finding.count} times; first: seed {finding.seed}, connection "
            f"{finding.connection}, session {finding.session}; {finding.detail[:300]}",
        ]
    lines += [""]
    bystander = result.bystander
    commits = bystander.get("commit_latency", [])
    reads = bystander.get("read_latency", [])
    lines += [
        "## The well-behaved client",
        "",
        "Stock ZEO 6 ClientStorage, a commit every "
        f"{options.interval * 1000:.0f} ms and a full read-back through a second "
        "ClientStorage (server_sync).",
        "",
        *_table(
            [
                (
                    "commit",
                    len(commits),
                    _ms(_percentile(commits, 0.5)),
                    _ms(_percentile(commits, 0.99)),
                    _ms(max(commits) if commits else math.nan),
                ),
                (
                    "read back",
                    len(reads),
                    _ms(_percentile(reads, 0.5)),
                    _ms(_percentile(reads, 0.99)),
                    _ms(max(reads) if reads else math.nan),
                ),
            ],
            ("operation", "count", "p50 ms", "p99 ms", "max ms"),
        ),
        "",
        f"Failures: {len(bystander.get('failures', []))}"
        + "".join(f"\n- {failure}" for failure in bystander.get("failures", [])[:20]),
        "",
        "## The data",
        "",
        "Transactions in Data.fs after the run:",
        "",
        *_table(result.transaction_counts.most_common(), ("transactions", "count")),
        "",
        "Problems: "
        + ("none" if not (result.data_problems or result.transaction_problems) else ""),
        *[f"- {p}" for p in result.data_problems + result.transaction_problems],
        "",
        "## The server process",
        "",
        *_table(
            [
                (
                    key,
                    result.resources_before.get(key, "-"),
                    result.resources_after.get(key, "-"),
                )
                for key in ("VmRSS", "VmHWM", "fds", "Threads")
            ],
            ("figure", "before fuzzing", "after fuzzing"),
        ),
        "",
        f"Peak RSS sampled during the run: {result.peak_rss} KB. VmRSS/VmHWM in KB; "
        "'after' is measured once every fuzzing connection and the bystander "
        "have disconnected.",
        "",
        "## The server's log",
        "",
        f"{result.log_size / 1e6:.1f} MB; lines by level: "
        + ", ".join(f"{k} {v:,}" for k, v in result.log_levels.most_common()),
        "",
        "Tracebacks, grouped by the log line and the exception class:",
        "",
        *_table(
            [
                (
                    g.count,
                    g.level,
                    g.message.replace("|", "/"),
                    g.exception,
                    "yes"
                    if g.expected or g.known == "expected"
                    else f"known ({g.known})"
                    if g.known
                    else "**no**",
                )
                for g in result.tracebacks
            ],
            ("count", "level", "logged as", "exception", "expected"),
        ),
        "",
    ]
    for group in result.tracebacks:
        if not group.expected and not group.known:
            lines += [
                f"Sample of {group.exception}:",
                "",
                "```",
                group.sample,
                "```",
                "",
            ]
    if result.doc_differences:
        lines += ["## Docs' method table against the code", ""]
        lines += [f"- {d}" for d in result.doc_differences]
        lines += [""]
    if result.problems:
        lines += ["## Problems", "", *[f"- {p}" for p in result.problems], ""]
    lines += [f"Run directory: `{result.directory}`", ""]
    return "\n".join(lines)


def _allowance(answer: str) -> str:
    if answer.startswith("error "):
        name = answer[6:]
        verdict = error_verdict(name)
        if verdict == "documented":
            return "allow-list"
        if verdict == "storage":
            return "a storage POSError"
        return "**nothing: finding**"
    if answer.startswith("closed"):
        return "protocol error" if "(" in answer else ""
    if answer.startswith("server call"):
        return "server's async calls"
    return ""


# -- replaying a finding -----------------------------------------------------------


def replay_frames(
    address: tuple[str, int], frames_hex: list[str], wait: float = 2.0
) -> list[Any]:
    """Send a finding's frames to a server; the events it answers with
    (``None`` last if it closed the connection)."""
    with socket.create_connection(address, timeout=wait) as sock:
        sock.recv(6)
        client = ClientConnection(max_frame_size=2**31)
        opened = False
        events: list[Any] = []
        for text in frames_hex:
            frame = bytes.fromhex(text)
            if not opened and frame[4:] in (b"M5", b"Z5"):
                client.receive_data(frame)
                opened = True
            sock.sendall(frame)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                events.append(None)
                break
            if opened:
                events += client.receive_data(data)
        return events


# -- command line -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stress.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--known-bugs", choices=("avoid", "send"), default="avoid")
    parser.add_argument("--hang-timeout", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--directory", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument("--output", type=Path, help="write the markdown report here")
    parser.add_argument("--json", type=Path, help="write the findings as JSON here")
    args = parser.parse_args(argv)
    options = Options(
        frames=args.frames,
        seed=args.seed,
        connections=args.connections,
        processes=min(args.processes, args.connections),
        known_bugs=args.known_bugs,
        hang_timeout=args.hang_timeout,
        interval=args.interval,
        directory=args.directory,
        keep=args.keep,
    )
    result = run(options)
    text = report(result)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    if args.json:
        args.json.write_text(
            json.dumps([finding.__dict__ for finding in result.findings], indent=1)
        )
    print(text)
    return 1 if result.findings or result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
