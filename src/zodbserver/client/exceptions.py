"""The client's own exceptions, and error replies turned back into exceptions.

``ClientDisconnected`` is what ZODB applications written for ZEO already
catch: a ``ZODB.POSException.StorageError`` and a transient error (so
``transaction`` retries it), and here also a ``ZodbServerError``.

A server's error reply carries ``(qualified_class_name, payload)`` where the
payload is the exception's ``__dict__`` or its ``args``.  Only the classes in
``_FACTORIES`` are rebuilt; any other name becomes ``ServerException`` so that
no name from the wire can make us construct an arbitrary class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import transaction.interfaces
from ZODB import POSException

from ..errors import ZodbServerError


class ClientStorageError(ZodbServerError, POSException.StorageError):
    """An error in the client storage."""


class ClientDisconnected(ClientStorageError, transaction.interfaces.TransientError):
    """The client storage is not connected to a server."""


class ServerException(ClientStorageError):
    """The server raised an exception the client does not rebuild."""


def _from_args(cls: type[BaseException]) -> Callable[[Any], BaseException]:
    def build(payload: Any) -> BaseException:
        if isinstance(payload, tuple | list):
            return cls(*payload)
        return cls(payload)

    return build


def _conflict(cls: type[POSException.ConflictError]) -> Callable[[Any], BaseException]:
    def build(payload: Any) -> BaseException:
        if not isinstance(payload, Mapping):
            return _from_args(cls)(payload)
        serials = payload.get("serials")
        exc = cls(
            message=payload.get("message"),
            oid=payload.get("oid"),
            serials=tuple(serials) if serials else None,
        )
        exc.class_name = payload.get("class_name")
        return exc

    return build


def _btrees_conflict(payload: Any) -> BaseException:
    if not isinstance(payload, Mapping):
        return _from_args(POSException.BTreesConflictError)(payload)
    return POSException.BTreesConflictError(
        payload["p1"], payload["p2"], payload["p3"], payload["reason"]
    )


def _multiple_undo(payload: Any) -> BaseException:
    errors = payload.get("_errs", ()) if isinstance(payload, Mapping) else payload
    rebuilt = []
    for oid, error in errors:
        # msgpack sends the nested UndoErrors as (class_name, payload) pairs
        if isinstance(error, tuple | list) and len(error) == 2:
            error = exception_from_reply(str(error[0]), error[1])
        rebuilt.append((oid, error))
    return POSException.MultipleUndoErrors(rebuilt)


def _undo(payload: Any) -> BaseException:
    if isinstance(payload, Mapping):
        return POSException.UndoError(payload.get("_reason"), payload.get("_oid"))
    return _from_args(POSException.UndoError)(payload)


_POS = "ZODB.POSException."

_FACTORIES: dict[str, Callable[[Any], BaseException]] = {
    "builtins.KeyError": _from_args(KeyError),
    "builtins.TypeError": _from_args(TypeError),
    "builtins.ValueError": _from_args(ValueError),
    "exceptions.KeyError": _from_args(KeyError),
    "exceptions.TypeError": _from_args(TypeError),
    _POS + "POSKeyError": _from_args(POSException.POSKeyError),
    _POS + "ReadOnlyError": _from_args(POSException.ReadOnlyError),
    _POS + "StorageTransactionError": _from_args(POSException.StorageTransactionError),
    _POS + "StorageSystemError": _from_args(POSException.StorageSystemError),
    _POS + "Unsupported": _from_args(POSException.Unsupported),
    _POS + "ConflictError": _conflict(POSException.ConflictError),
    _POS + "ReadConflictError": _conflict(POSException.ReadConflictError),
    _POS + "BTreesConflictError": _btrees_conflict,
    _POS + "MultipleUndoErrors": _multiple_undo,
    _POS + "UndoError": _undo,
}

#: Errors that are part of normal operation and not worth an error log line.
EXPECTED_ERRORS = (
    POSException.POSKeyError,
    POSException.ConflictError,
    POSException.UndoError,
    POSException.ReadOnlyError,
)


def exception_from_reply(class_name: str, payload: Any) -> BaseException:
    """Rebuild the exception an error reply describes."""
    factory = _FACTORIES.get(class_name)
    if factory is not None:
        try:
            return factory(payload)
        except Exception:  # a malformed payload: keep the name, lose the shape
            pass
    return ServerException(class_name, payload)
