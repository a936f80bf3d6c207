"""The table of methods a client may call, with their argument checks.

Nothing from the wire is looked up with ``getattr``: a method name is a key
into ``METHODS`` or it is refused.  Each entry says whether the call is
synchronous (answered) or asynchronous, whether it is allowed before
``register``, and how each positional argument is checked.  Arguments are
checked before the storage sees them, so a wrong type from a hostile or
broken client becomes a ``TypeError`` naming the method and argument, never
an obscure failure deep inside a storage.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .session import Session

Check = Callable[[Any], Any]


class ArgumentError(TypeError):
    """An argument does not match its check (internal to this module)."""


def _describe(value: Any) -> str:
    """Name what was sent without a repr of unbounded size or depth."""
    if isinstance(value, bytes | str):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def _bytes8(value: Any) -> bytes:
    if isinstance(value, bytes) and len(value) == 8:
        return value
    raise ArgumentError("an 8-byte oid or tid")


def _oid(value: Any) -> bytes:
    """An oid a client may store: below 2**63, as every storage allocates
    them (FileStorage counts up from 0, DemoStorage draws below 2**63).
    A store at the very top would leave ``new_oid`` nothing to count to,
    for every client, for good."""
    if isinstance(value, bytes) and len(value) == 8 and value[0] < 0x80:
        return value
    raise ArgumentError("an 8-byte oid below 2**63")


def _optional_bytes8(value: Any) -> bytes | None:
    return None if value is None else _bytes8(value)


def _serial(value: Any) -> bytes:
    """A serial (tid) a transaction call names: 8 bytes, or -- as ZEO's
    server takes it from ZODB's test suites and older application code --
    an 8-character ``str`` that is 8 bytes in latin-1 (``"\0" * 8``)."""
    if isinstance(value, bytes) and len(value) == 8:
        return value
    if isinstance(value, str) and len(value) == 8:
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            pass
    raise ArgumentError("an 8-byte serial")


def _optional_serial(value: Any) -> bytes | None:
    return None if value is None else _serial(value)


def _data(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    raise ArgumentError("bytes")


def _optional_data(value: Any) -> bytes | None:
    return None if value is None else _data(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    raise ArgumentError("a string")


def _text_or_bytes(value: Any) -> str | bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # a lone surrogate cannot be stored
        except UnicodeEncodeError:
            pass
        else:
            return value
    raise ArgumentError("a string")


#: ``tpc_begin``'s status, as a storage records it: a transaction, one
#: packed, one undone (copied from another storage with its status).
TRANSACTION_STATUSES = frozenset({" ", "p", "u"})


def _transaction_status(value: Any) -> str:
    status = _text(value)
    if status in TRANSACTION_STATUSES:
        return status
    raise ArgumentError("a transaction status: ' ', 'p' or 'u'")


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ArgumentError("an integer")


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ArgumentError("a number")


#: The latest pack time a storage can represent: the year 10000.
LATEST_PACK_TIME = 253402300800.0


def _pack_time(value: Any) -> float:
    """Seconds since the epoch, as ``pack`` takes them: finite, and within
    what a timestamp holds."""
    number = _number(value)
    if 0 <= number < LATEST_PACK_TIME:
        return number
    raise ArgumentError("a time in seconds since the epoch, before the year 10000")


def _optional_integer(value: Any) -> int | None:
    return None if value is None else _integer(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool | int) or value is None:
        return bool(value)
    raise ArgumentError("a boolean")


def _mapping(value: Any) -> dict[Hashable, object]:
    if isinstance(value, dict):
        return value
    raise ArgumentError("a mapping")


def _integers(value: Any) -> list[int]:
    if isinstance(value, list | tuple):
        return [_integer(item) for item in value]
    raise ArgumentError("a list of integers")


def _token(value: Any) -> Hashable:
    try:
        hash(value)
    except (TypeError, RecursionError):
        raise ArgumentError("a hashable transaction token") from None
    token: Hashable = value
    return token


#: Longest client label kept for log lines.
MAX_LABEL = 200


def _client_label(value: Any) -> str:
    """The label a client gives itself for the server's log: a string, cut
    to ``MAX_LABEL`` characters, with anything unprintable replaced so a
    client cannot forge log lines."""
    text = _text(value)[:MAX_LABEL]
    return "".join(char if char.isprintable() else "?" for char in text)


_PLAIN = str | bytes | int | float | bool | None


def _undo_filter(value: Any) -> dict[str, Any] | None:
    """``undoInfo``'s specification: None, or a mapping of transaction
    description keys to the plain values they must equal."""
    if value is None:
        return None
    if isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, _PLAIN) for key, item in value.items()
    ):
        return value
    raise ArgumentError("None or a mapping of names to plain values")


@dataclass(frozen=True)
class Method:
    function: Callable[..., Any]
    checks: Sequence[Check]
    required: int
    synchronous: bool = True
    before_register: bool = False
    #: The function is a coroutine function: its reply comes when it ends.
    deferred: bool = field(init=False)
    #: Checks a full argument tuple at once (None: more checks than that).
    _check_all: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = field(
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "deferred", inspect.iscoroutinefunction(self.function))
        object.__setattr__(self, "_check_all", _all_checks(self.checks))

    def bind_arguments(self, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        checks = self.checks
        check_all = self._check_all
        if check_all is not None and len(args) == len(checks):
            try:
                return check_all(args)
            except ArgumentError:
                pass  # name the argument below
        elif self.required <= len(args) <= len(checks):
            try:
                return tuple(
                    check(value) for check, value in zip(checks, args, strict=False)
                )
            except ArgumentError:
                pass
        else:
            expected = (
                str(self.required)
                if self.required == len(checks)
                else f"{self.required} to {len(checks)}"
            )
            raise TypeError(f"{name}() takes {expected} arguments, got {len(args)}")
        for position, (check, value) in enumerate(zip(checks, args, strict=False)):
            try:
                check(value)
            except ArgumentError as exc:
                # A plain TypeError: ZEO clients map builtins.TypeError.
                raise TypeError(
                    f"{name}() argument {position + 1} must be {exc}, "
                    f"got {_describe(value)}"
                ) from None
        raise AssertionError("a check failed once only")  # pragma: no cover


def _all_checks(
    checks: Sequence[Check],
) -> Callable[[tuple[Any, ...]], tuple[Any, ...]] | None:
    """One function applying every check: the usual calls take few arguments,
    and a loop over them costs more than the checks themselves."""
    if not checks:
        return lambda args: ()
    if len(checks) == 1:
        (first,) = checks
        return lambda args: (first(args[0]),)
    if len(checks) == 2:
        first, second = checks
        return lambda args: (first(args[0]), second(args[1]))
    if len(checks) == 3:
        first, second, third = checks
        return lambda args: (first(args[0]), second(args[1]), third(args[2]))
    if len(checks) == 4:
        first, second, third, fourth = checks
        return lambda args: (
            first(args[0]),
            second(args[1]),
            third(args[2]),
            fourth(args[3]),
        )
    return None


def _sync(
    function: Callable[..., Any],
    *checks: Check,
    required: int | None = None,
    before_register: bool = False,
) -> Method:
    return Method(
        function,
        checks,
        len(checks) if required is None else required,
        True,
        before_register,
    )


def _async(
    function: Callable[..., Any], *checks: Check, required: int | None = None
) -> Method:
    return Method(
        function, checks, len(checks) if required is None else required, False
    )


S = Session
METHODS: dict[str, Method] = {
    # connection
    "register": _sync(S.register, _text, _flag, before_register=True),
    "get_info": _sync(S.get_info),
    "lastTransaction": _sync(S.lastTransaction),
    "getInvalidations": _sync(S.getInvalidations, _bytes8),
    "ping": _sync(S.ping),
    "server_status": _sync(S.server_status),
    "set_client_label": _async(S.set_client_label, _client_label),
    # replication (docs/replication.md)
    "replicate": _sync(S.replicate, _mapping),
    "replicated": _async(S.replicated, _bytes8),
    "replication_status": _sync(S.replication_status, before_register=True),
    "promote": _sync(S.promote, before_register=True),
    # reads
    "loadBefore": _sync(S.loadBefore, _bytes8, _bytes8),
    "loadSerial": _sync(S.loadSerial, _bytes8, _bytes8),
    "getTid": _sync(S.getTid, _bytes8),
    "history": _sync(S.history, _bytes8, _integer, required=1),
    "record_iternext": _sync(S.record_iternext, _optional_data, required=0),
    "new_oids": _sync(S.new_oids, _integer, required=0),
    # administration
    "pack": _sync(S.pack, _pack_time, _flag, required=1),
    "undoLog": _sync(S.undoLog, _integer, _integer),
    "undoInfo": _sync(S.undoInfo, _integer, _integer, _undo_filter),
    "iterator_start": _sync(S.iterator_start, _optional_bytes8, _optional_bytes8),
    "iterator_next": _sync(S.iterator_next, _integer),
    "iterator_record_start": _sync(S.iterator_record_start, _integer, _bytes8),
    "iterator_record_next": _sync(S.iterator_record_next, _integer),
    "iterator_gc": _async(S.iterator_gc, _integers),
    # transactions
    "tpc_begin": _async(
        S.tpc_begin,
        _token,
        _text_or_bytes,
        _text_or_bytes,
        _mapping,
        _optional_bytes8,
        _transaction_status,
        required=4,
    ),
    "storea": _async(S.storea, _oid, _optional_serial, _data, _token),
    "checkCurrentSerialInTransaction": _async(
        S.checkCurrentSerialInTransaction, _oid, _optional_serial, _token
    ),
    "deleteObject": _async(S.deleteObject, _oid, _serial, _token),
    "restorea": _async(
        S.restorea, _oid, _serial, _optional_data, _optional_serial, _token
    ),
    "undoa": _async(S.undoa, _data, _token),
    # blobs
    "storeBlobStart": _async(S.storeBlobStart),
    "storeBlobChunk": _async(S.storeBlobChunk, _data),
    "storeBlobEnd": _async(S.storeBlobEnd, _oid, _optional_serial, _data, _token),
    "storeBlobShared": _async(
        S.storeBlobShared, _oid, _optional_serial, _data, _text, _token
    ),
    "sendBlob": _sync(S.sendBlob, _bytes8, _bytes8),
    "vote": _sync(S.vote, _token),
    "tpc_finish": _sync(S.tpc_finish, _token),
    "tpc_abort": _sync(S.tpc_abort, _token),
}

#: Async calls whose failure belongs to the client's transaction.
TRANSACTION_CALLS = frozenset(
    {
        "tpc_begin",
        "storea",
        "checkCurrentSerialInTransaction",
        "deleteObject",
        "restorea",
        "undoa",
        "storeBlobStart",
        "storeBlobChunk",
        "storeBlobEnd",
        "storeBlobShared",
    }
)
