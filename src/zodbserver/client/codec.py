"""Which pickle globals a ZEO server may name in what it sends us.

``protocol.codec`` resolves pickle globals through a policy; the default
admits plain container types only, which is right for a server.  A ZEO 6
server in ``Z5`` mode, though, pickles exception *objects* inside some error
payloads: ``MultipleUndoErrors`` carries ``{"_errs": [(oid, UndoError(...)),
...]}``, and a ``POSError`` pickles as ``ZODB.POSException._recon(cls,
state)``.  ZEO's own client admits exception classes.

``exception_global`` does the same, narrowly: besides the plain containers,
it resolves only exception classes from ``builtins`` and
``ZODB.POSException``, plus ``_recon``, which only calls
``__new__``/``__setstate__`` on such a class.  Nothing else from the wire
can name code to run.
"""

from __future__ import annotations

import builtins
import pickle
from typing import Any

import ZODB.POSException

from ..protocol.codec import plain_data_global

_EXCEPTION_MODULES = {"builtins": builtins, "ZODB.POSException": ZODB.POSException}


def exception_global(module: str, name: str) -> Any:
    namespace = _EXCEPTION_MODULES.get(module)
    if namespace is not None and not name.startswith("__"):
        value = getattr(namespace, name, None)
        if isinstance(value, type) and issubclass(value, BaseException):
            return value
        if module == "ZODB.POSException" and name == "_recon":
            return _recon
    return plain_data_global(module, name)


def _recon(cls: Any, state: Any) -> BaseException:
    if not (isinstance(cls, type) and issubclass(cls, ZODB.POSException.POSError)):
        raise pickle.UnpicklingError("_recon of a non-POSError")
    construct: Any = cls.__new__
    error: BaseException = construct(cls)
    error.__setstate__(state)
    return error
