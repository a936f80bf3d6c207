"""The fuzz targets of ``stress/fuzz_atheris.py``: the protocol decoder and
the server's argument checks, one input at a time, no fuzzer needed.

The first input byte picks a target:

0-4  the targets of ``tests/fuzz/test_protocol_fuzz.py`` (frame decoder,
     msgpack and pickle codecs, server and client connections): only
     ``RemoteProtocolError`` may escape, a failed connection is CLOSED, no
     pickle runs code;
5    a stream fed to a ``ServerConnection`` whose calls go through the
     method table: ``METHODS[name].bind_arguments`` may raise ``TypeError``
     only, and must agree with the argument checks docs/protocol.md
     describes (``stress.fuzz.DOC_METHODS``, and
     ``DOC_REPLICATION_METHODS`` for the replication methods);
6    the same for one method picked by the next byte, with its arguments
     decoded from the rest (msgpack, or the restricted pickle), so the
     fuzzer need not spell method names.

A disagreement raises ``AssertionError``; any other exception escaping is
a finding too.  Pickles whose memo index is over
``stress.fuzz.MEMO_LIMIT`` are skipped and counted: they make any
unpickler allocate gigabytes (known bug K3, found by ``stress.fuzz``), and
libFuzzer would stop on the out-of-memory instead of fuzzing on.

``tests/fuzz/test_argument_fuzz.py`` feeds these targets from Hypothesis;
``python -m stress.fuzz_atheris`` runs them coverage-guided.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import msgpack

from stress.fuzz import (
    DOC_METHODS,
    DOC_NOTES,
    DOC_REPLICATION_METHODS,
    MEMO_LIMIT,
    Z64,
    max_memo_index,
)
from zodbserver.errors import RemoteProtocolError
from zodbserver.protocol import (
    AsyncCall,
    Call,
    Codec,
    ServerConnection,
    encode_frame,
)
from zodbserver.protocol.framing import FrameDecoder
from zodbserver.server.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests" / "fuzz") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
import test_protocol_fuzz  # noqa: E402

#: The docs' argument checks of every method, the replication ones included.
DOCUMENTED = {**DOC_METHODS, **DOC_REPLICATION_METHODS}

NAMES = sorted(METHODS)
SKIPPED = {"memo": 0}


def _memo_bomb(payload: bytes) -> bool:
    if max_memo_index(payload) > MEMO_LIMIT:
        SKIPPED["memo"] += 1
        return True
    return False


def _stream_has_memo_bomb(stream: bytes) -> bool:
    """Any pickle frame of a Z5 stream with too large a memo index."""
    try:
        frames = FrameDecoder(2**20).feed(stream)
    except RemoteProtocolError:
        return False
    if not frames or frames[0][:1] != b"Z":
        return False
    return any(_memo_bomb(frame) for frame in frames[1:])


def check_arguments(name: str, args: tuple[Any, ...]) -> None:
    """The method table's checks: TypeError or checked values, and the
    same verdict as the docs' checks where they give one."""
    spec = METHODS.get(name)
    if spec is None:
        return
    try:
        bound = spec.bind_arguments(name, args)
    except TypeError as exc:
        refused = True
        message = str(exc)
        assert message.startswith(f"{name}()"), message
    else:
        refused = False
        assert type(bound) is tuple, bound
        assert len(bound) == len(args), (name, len(args), len(bound))
    documented = DOCUMENTED[name].arguments_valid(args)
    if name in DOC_NOTES or documented is None:
        return
    assert documented != refused, (
        f"{name}{args!r:.300}: the docs say {'valid' if documented else 'invalid'}, "
        f"the checks {'refused' if refused else 'accepted'}"
    )


def fuzz_dispatch(stream: bytes) -> None:
    """A client's bytes into a ServerConnection, its calls into the table."""
    if _stream_has_memo_bomb(stream):
        return
    connection = ServerConnection(max_frame_size=2**20)
    try:
        events = connection.receive_data(stream)
    except RemoteProtocolError:
        return
    for event in events:
        if isinstance(event, Call | AsyncCall):
            check_arguments(event.method, event.args)


def fuzz_method(data: bytes) -> None:
    """One method, picked by a byte; its arguments decoded from the rest."""
    if len(data) < 2:
        return
    name = NAMES[data[0] % len(NAMES)]
    payload = data[2:]
    if data[1] % 2:
        if _memo_bomb(payload):
            return
        try:
            _, _, _, args = Codec(b"Z").decode(payload)
        except RemoteProtocolError:
            return
    else:
        try:
            args = msgpack.unpackb(payload, raw=False, use_list=False)
        except Exception:
            return
    if type(args) not in (tuple, list):
        args = (args,)
    check_arguments(name, tuple(args))


def fuzz_one_input(data: bytes) -> None:
    if not data:
        return
    selector, rest = data[0] % 7, data[1:]
    if selector < 5:
        if selector == 2 and _memo_bomb(rest):
            return
        if selector in (3, 4) and _stream_has_memo_bomb(rest):
            return
        test_protocol_fuzz.fuzz_one_input(bytes([selector]) + rest)
    elif selector == 5:
        fuzz_dispatch(rest)
    else:
        fuzz_method(rest)


# -- the seed corpus -----------------------------------------------------------------

#: Valid arguments for every method, to start from.
VALID_ARGS: dict[str, tuple[Any, ...]] = {
    "register": ("1", False),
    "get_info": (),
    "lastTransaction": (),
    "getInvalidations": (Z64,),
    "ping": (),
    "server_status": (),
    "set_client_label": ("label",),
    "loadBefore": (Z64, b"\x7f" + b"\xff" * 7),
    "loadSerial": (Z64, Z64),
    "getTid": (Z64,),
    "history": (Z64, 5),
    "record_iternext": (None,),
    "new_oids": (10,),
    "sendBlob": (Z64, Z64),
    "pack": (1.5, False),
    "undoLog": (0, 20),
    "undoInfo": (0, 20, {"description": "x"}),
    "iterator_start": (None, Z64),
    "iterator_next": (1,),
    "iterator_record_start": (1, Z64),
    "iterator_record_next": (2,),
    "iterator_gc": ([1, 2],),
    "tpc_begin": (1, "user", b"description", {"x": 1}, None, " "),
    "storea": (Z64, Z64, b"data", 1),
    "checkCurrentSerialInTransaction": (Z64, "\0" * 8, 1),
    "deleteObject": (Z64, Z64, 1),
    "restorea": (Z64, Z64, None, None, 1),
    "undoa": (b"id", 1),
    "storeBlobStart": (),
    "storeBlobChunk": (b"chunk",),
    "storeBlobEnd": (Z64, None, b"data", 1),
    "storeBlobShared": (Z64, None, b"data", "x.tmp", 1),
    "vote": (1,),
    "tpc_finish": (1,),
    "tpc_abort": (1,),
    "replicate": ({"storage": "1"},),
    "replicated": (Z64,),
    "replication_status": (),
    "promote": (),
}


def seed_inputs() -> list[bytes]:
    """Valid inputs for every target and method, to start from."""
    seeds: list[bytes] = []
    for name, args in VALID_ARGS.items():
        index = bytes([NAMES.index(name)])
        packed = msgpack.packb(args, use_bin_type=True)
        seeds.append(b"\x06" + index + b"\x00" + packed)
        pickled = pickle.dumps((1, False, name, args), 3)
        seeds.append(b"\x06" + index + b"\x01" + pickled)
        for letter, encode in (
            (b"M", lambda m: msgpack.packb(m, use_bin_type=True)),
            (b"Z", lambda m: pickle.dumps(m, 3)),
        ):
            stream = encode_frame(letter + b"5") + encode_frame(
                encode((1, False, "register", ("1", False)))
            )
            stream += encode_frame(encode((2, name in ("vote",), name, args)))
            seeds.append(b"\x05" + stream)
            seeds.append(b"\x03" + stream)
            seeds.append(b"\x01" + encode((1, False, name, args)))
    return seeds


def seed_corpus(directory: Path) -> None:
    for number, seed in enumerate(seed_inputs()):
        (directory / f"seed-{number:04d}").write_bytes(seed)
