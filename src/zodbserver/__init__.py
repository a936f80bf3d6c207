"""zodbserver: a database server for ZODB, wire-compatible with ZEO 5/6.

Public API:

* ``ClientStorage`` -- open a served database from a ZODB application;
* ``DB``, ``connection`` -- a ``ZODB.DB`` or an open connection in one call,
  as ``ZEO.DB`` and ``ZEO.connection`` (ZEO's third shortcut, ``client``, is
  ``zodbserver.client.convenience.client``: the name ``zodbserver.client``
  is the client subpackage);
* ``ServerThread`` -- run a server inside a process (tests, embedding);
* ``ServerSettings`` -- a server's operational settings;
* ``ZodbServerError`` -- the root of the package's own exceptions;
* ``__version__`` -- the installed distribution's version (pyproject.toml's).

The ``zeoserver`` command runs and controls a server process.

Names are imported on first use, so that a server process does not load the
client and a client does not load the server; ``importlib.metadata`` is
loaded when ``__version__`` is first read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ZodbServerError

if TYPE_CHECKING:
    from .client import ClientDisconnected, ClientStorage
    from .client.convenience import DB, connection
    from .server.settings import ServerSettings
    from .server.thread import ServerThread

    __version__: str

_LAZY = {
    "ClientDisconnected": ".client",
    "ClientStorage": ".client",
    "DB": ".client.convenience",
    "connection": ".client.convenience",
    "ServerSettings": ".server.settings",
    "ServerThread": ".server.thread",
}

__all__ = [
    "DB",
    "ClientDisconnected",
    "ClientStorage",
    "ServerSettings",
    "ServerThread",
    "ZodbServerError",
    "connection",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        globals()[name] = value = version("zodbserver")
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zodbserver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
