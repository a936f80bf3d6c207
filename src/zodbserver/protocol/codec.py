"""Encoding of message tuples: msgpack (``M``) or a safe pickle (``Z``).

``M``  ``msgpack.packb(msg, use_bin_type=True)`` / ``unpackb(raw=False,
       use_list=False)``: bytes stay bytes, str stays str, arrays come back as
       tuples, map keys must be str or bytes, no ext types.
``Z``  pickle protocol 3.  Decoding resolves a global only through a
       ``find_global`` policy.  The default, ``plain_data_global``, admits
       nothing but the plain container types (``dict``, ``list``, ``tuple``,
       ``set``, ``frozenset`` from ``builtins``, which ZEO clients emit for
       subclasses such as a transaction's extension mapping); no other class,
       no function, no extension-registry code.  So a message holds plain data
       only (None, bool, int, float, bytes, str and those containers), and a
       peer cannot make us construct arbitrary objects or call ``eval`` the
       way ZEO's own server unpickler allows.

Exceptions are never sent as objects: an error reply carries
``(qualified_class_name, exc.__dict__ or exc.args)``, which ZEO clients map
back onto ZODB's exception classes.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import msgpack

from ..errors import LocalProtocolError, RemoteProtocolError

MSGPACK = b"M"
PICKLE = b"Z"
ENCODINGS = (MSGPACK, PICKLE)


_EXTENSION_OPCODES = frozenset({"EXT1", "EXT2", "EXT4"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
#: Memo indexes up to this are taken whatever the message's length.
MEMO_INDEX_FLOOR = 1 << 16
#: Protocol 5's buffer opcodes: no ZEO client sends them (ZEO 5 pickles with
#: protocol 3), and a malformed use can leave a bytearray freed while a
#: view of it is still exported.
_BUFFER_OPCODES = frozenset({"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"})


def _check_opcodes(payload: bytes) -> None:
    """Refuse what the C unpickler would act on before any check of ours.

    - A memo index beyond the message's own length (and beyond
      ``MEMO_INDEX_FLOOR``, which costs at most a megabyte): the unpickler
      grows its memo to twice the index at once, so 13 bytes could ask for
      gigabytes.  A real pickle numbers its memo entries from 0, one per
      object, and has fewer objects than bytes.
    - copyreg extension codes, while any are registered: the unpickler
      resolves one it has seen before from ``copyreg._extension_cache``
      without asking ``find_class``.
    - protocol 5's out-of-band buffers.
    """
    import pickletools  # a quarter megabyte of tables, only for pickle

    extensions = bool(copyreg._inverted_registry)  # type: ignore[attr-defined]
    limit = max(len(payload), MEMO_INDEX_FLOOR)
    for opcode, argument, _ in pickletools.genops(payload):
        name = opcode.name
        if name in _MEMO_PUTS and isinstance(argument, int) and argument > limit:
            raise pickle.UnpicklingError(
                f"memo index {argument} is beyond the {len(payload)}-byte message"
            )
        if extensions and name in _EXTENSION_OPCODES:
            raise pickle.UnpicklingError("extension codes are not allowed")
        if name in _BUFFER_OPCODES:
            raise pickle.UnpicklingError(f"{name} is not allowed")


#: Resolves ``(module, name)`` from a pickle to an object, or raises.
FindGlobal = Callable[[str, str], object]

_PLAIN_CONTAINERS: dict[tuple[str, str], type] = {
    ("builtins", kind.__name__): kind for kind in (dict, list, tuple, set, frozenset)
}


def plain_data_global(module: str, name: str) -> type:
    """The default policy: plain container types and nothing else."""
    try:
        return _PLAIN_CONTAINERS[module, name]
    except KeyError:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals through a policy; refuses persistent references."""

    def __init__(self, payload: bytes, find_global: FindGlobal) -> None:
        super().__init__(io.BytesIO(payload))
        self._find_global = find_global

    def find_class(self, module: str, name: str) -> object:
        return self._find_global(module, name)

    def persistent_load(self, pid: object) -> NoReturn:
        raise pickle.UnpicklingError("persistent references are not allowed")


def exception_payload(
    exc: BaseException,
) -> tuple[str, dict[str, Any] | tuple[Any, ...]]:
    """The ``(class_name, payload)`` pair an error reply carries."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}", (exc.__dict__ or exc.args)


def _msgpack_default(obj: object) -> tuple[object, ...]:
    if isinstance(obj, BaseException):
        return exception_payload(obj)
    if isinstance(obj, set | frozenset):
        return tuple(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _without_sets(value: object) -> object:
    """Sets as tuples: pickling a set names ``builtins.set``, a global that
    ZEO clients (and we) refuse to unpickle.  msgpack does this in
    ``_msgpack_default``."""
    if isinstance(value, tuple):
        return tuple(_without_sets(item) for item in value)
    if isinstance(value, list):
        return [_without_sets(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_sets(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return tuple(_without_sets(item) for item in value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


#: A Packer keeps its buffer (256 KiB of address space, resident as far as
#: the largest message it packed reached) for as long as it lives, and grows
#: it to twice the size of any larger message.  A packer per connection would
#: keep each connection's largest message resident; so there is one per
#: thread, shared by all the connections served from that thread, and
#: replaced after a message larger than its initial buffer.
PACKER_BUFFER_SIZE = 256 * 1024


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(
        use_bin_type=True, default=_msgpack_default, buf_size=PACKER_BUFFER_SIZE
    )


class _Packers(threading.local):
    def __init__(self) -> None:
        self.packer = _new_packer()


_packers = _Packers()


class Codec:
    """Encode and decode whole message tuples in one encoding."""

    __slots__ = ("_find_global", "encoding")

    def __init__(
        self, encoding: bytes, find_global: FindGlobal = plain_data_global
    ) -> None:
        if encoding not in ENCODINGS:
            raise LocalProtocolError(f"unknown encoding {encoding!r}")
        self.encoding = encoding
        self._find_global = find_global

    def encode(self, message: tuple[Any, Any, str, Any]) -> bytes:
        """Encode a message tuple; raises ``LocalProtocolError`` if it can't."""
        try:
            if self.encoding == MSGPACK:
                data: bytes = _packers.packer.pack(message)
                if len(data) > PACKER_BUFFER_SIZE:
                    _packers.packer = _new_packer()  # free the grown buffer
                return data
            return pickle.dumps(_without_sets(message), 3)
        except Exception as exc:
            # msgpack's Packer keeps partial output after an error.
            _packers.packer = _new_packer()
            raise LocalProtocolError(f"cannot encode message: {exc}") from exc

    def decode(self, payload: bytes) -> tuple[Any, Any, str, Any]:
        """Decode and shape-check one message.

        Raises ``RemoteProtocolError`` for anything that is not a
        ``(msgid, flag, name: str, args)`` tuple of plain data.
        """
        try:
            if self.encoding == MSGPACK:
                message = msgpack.unpackb(payload, raw=False, use_list=False)
            else:
                _check_opcodes(payload)
                message = _RestrictedUnpickler(payload, self._find_global).load()
        except RecursionError as exc:
            raise RemoteProtocolError("message nested too deeply") from exc
        except Exception as exc:
            raise RemoteProtocolError(f"undecodable message: {exc}") from exc
        if not (isinstance(message, tuple | list) and len(message) == 4):
            raise RemoteProtocolError(
                f"a message must be a 4-tuple, got {type(message).__name__}"
            )
        msgid, flag, name, args = message
        if not isinstance(name, str):
            raise RemoteProtocolError(
                f"method name must be str, got {type(name).__name__}"
            )
        return msgid, flag, name, args
