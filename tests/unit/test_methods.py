"""The method table's argument checks: what passes, and what each refusal says."""

from __future__ import annotations

from typing import Any

import pytest

from zodbserver.server.methods import METHODS

OID = b"\x00" * 7 + b"\x01"
TID = b"\x03" * 8


@pytest.mark.parametrize(
    ("method", "args", "bound"),
    [
        ("ping", (), ()),
        ("getInvalidations", (TID,), (TID,)),
        ("loadBefore", (OID, TID), (OID, TID)),
        ("register", (b"1", 0), ("1", False)),
        ("checkCurrentSerialInTransaction", (OID, None, 7), (OID, None, 7)),
        ("storea", (OID, TID, b"data", 7), (OID, TID, b"data", 7)),
        ("tpc_begin", (7, b"u", "d", {}), (7, b"u", "d", {})),
        ("tpc_begin", (7, b"u", "d", {}, TID, "p"), (7, b"u", "d", {}, TID, "p")),
        ("tpc_begin", (7, b"u", "d", {}, TID, " "), (7, b"u", "d", {}, TID, " ")),
        ("tpc_begin", (7, b"u", "d", {}, TID, b"u"), (7, b"u", "d", {}, TID, "u")),
        (
            "storea",
            (b"\x7f" + b"\xff" * 7, None, b"d", 7),
            (b"\x7f" + b"\xff" * 7, None, b"d", 7),
        ),
        ("pack", (1764000000.5,), (1764000000.5,)),
        ("history", (OID,), (OID,)),
        ("history", (OID, 3), (OID, 3)),
        ("iterator_gc", ((1, 2),), ([1, 2],)),
        # Serials as ZODB's test suites and older code send them (ZEO takes
        # them): an 8-character str that is 8 bytes in latin-1.
        ("storea", (OID, "\0" * 8, b"data", 7), (OID, b"\0" * 8, b"data", 7)),
        ("deleteObject", (OID, "\xff" * 8, 7), (OID, b"\xff" * 8, 7)),
        ("storeBlobEnd", (OID, "\0" * 8, b"d", 7), (OID, b"\0" * 8, b"d", 7)),
        ("set_client_label", ("web1",), ("web1",)),
        ("set_client_label", (b"web1",), ("web1",)),
        # Unprintable characters could forge log lines; long labels are cut.
        ("set_client_label", ("a\nb\x1b",), ("a?b?",)),
        ("set_client_label", ("x" * 500,), ("x" * 200,)),
        ("undoInfo", (0, -20, None), (0, -20, None)),
        (
            "undoInfo",
            (0, -20, {"user_name": "/ bob"}),
            (0, -20, {"user_name": "/ bob"}),
        ),
    ],
)
def test_good_arguments_are_bound(
    method: str, args: tuple[Any, ...], bound: tuple[Any, ...]
) -> None:
    assert tuple(METHODS[method].bind_arguments(method, args)) == bound


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("ping", (1,), r"ping\(\) takes 0 arguments, got 1"),
        ("loadBefore", (OID,), r"loadBefore\(\) takes 2 arguments, got 1"),
        ("history", (), r"history\(\) takes 1 to 2 arguments, got 0"),
        (
            "loadBefore",
            (OID, b"short"),
            r"loadBefore\(\) argument 2 must be an 8-byte oid or tid, "
            r"got bytes of length 5",
        ),
        (
            "loadBefore",
            ("x" * 8, TID),
            r"loadBefore\(\) argument 1 must be an 8-byte oid or tid, got str",
        ),
        (
            "storea",
            (OID, TID, b"data", [1]),
            r"storea\(\) argument 4 must be a hashable transaction token",
        ),
        (
            "tpc_begin",
            (7, b"u", "d", {}, TID, 5),
            r"tpc_begin\(\) argument 6 must be a string, got int",
        ),
        ("history", (OID, "3"), r"history\(\) argument 2 must be an integer"),
        (
            "storea",
            (OID, "\u0100" * 8, b"data", 7),
            r"storea\(\) argument 2 must be an 8-byte serial, got str of length 8",
        ),
        (
            "storea",
            (OID, "\0" * 7, b"data", 7),
            r"storea\(\) argument 2 must be an 8-byte serial, got str of length 7",
        ),
        ("register", ("1", "yes"), r"register\(\) argument 2 must be a boolean"),
        ("set_client_label", (7,), r"set_client_label\(\) argument 1 must be a string"),
        (
            "undoInfo",
            (0, -20, {"description": [1, 2]}),
            r"undoInfo\(\) argument 3 must be None or a mapping of names to plain",
        ),
        ("undoInfo", (0, -20, "spec"), r"undoInfo\(\) argument 3 must be None or a"),
        # An oid at the top would leave new_oid nothing to count to.
        (
            "storea",
            (b"\xff" * 8, None, b"data", 7),
            r"storea\(\) argument 1 must be an 8-byte oid below 2\*\*63",
        ),
        ("deleteObject", (b"\x80" + b"\0" * 7, TID, 7), r"oid below 2\*\*63"),
        ("restorea", (b"\x80" + b"\0" * 7, TID, None, None, 7), r"oid below"),
        ("storeBlobEnd", (b"\xff" * 8, None, b"d", 7), r"oid below 2\*\*63"),
        # A status is written into Data.fs as it is: only real ones.
        (
            "tpc_begin",
            (7, b"u", "d", {}, TID, "xyz"),
            r"argument 6 must be a transaction status: ' ', 'p' or 'u'",
        ),
        ("tpc_begin", (7, b"u", "d", {}, TID, "c"), r"a transaction status"),
        ("tpc_begin", (7, b"u", "d", {}, TID, ""), r"a transaction status"),
        # A lone surrogate cannot be written as the user or description.
        ("tpc_begin", (7, "\udc80", "d", {}), r"argument 2 must be a string"),
        ("pack", (float("inf"),), r"pack\(\) argument 1 must be a time in seconds"),
        ("pack", (1e300,), r"before the year 10000"),
        ("pack", (2**63,), r"before the year 10000"),
        ("pack", (float("nan"),), r"before the year 10000"),
    ],
)
def test_bad_arguments_name_the_method_and_argument(
    method: str, args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        METHODS[method].bind_arguments(method, args)


def test_coroutine_methods_are_answered_later() -> None:
    assert METHODS["pack"].deferred
    assert METHODS["getInvalidations"].deferred
    assert not METHODS["loadBefore"].deferred
    assert not METHODS["storea"].deferred
