"""zodbserver: a database server for ZODB, wire-compatible with ZEO 5/6.

Public API:

* ``ClientStorage`` -- open a served database from a ZODB application;
* ``ServerThread`` -- run a server inside a process (tests, embedding);
* ``ServerSettings`` -- a server's operational settings;
* ``ZodbServerError`` -- the root of the package's own exceptions.

The ``zeoserver`` command runs and controls a server process.
"""

from .client import ClientDisconnected, ClientStorage
from .errors import ZodbServerError
from .server.settings import ServerSettings
from .server.thread import ServerThread

__all__ = [
    "ClientDisconnected",
    "ClientStorage",
    "ServerSettings",
    "ServerThread",
    "ZodbServerError",
]
