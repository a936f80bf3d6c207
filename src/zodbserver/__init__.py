"""zodbserver: a database server for ZODB, wire-compatible with ZEO 5/6.

Public API:

* ``ClientStorage`` -- open a served database from a ZODB application;
* ``DB``, ``connection`` -- a ``ZODB.DB`` or an open connection in one call,
  as ``ZEO.DB`` and ``ZEO.connection`` (ZEO's third shortcut, ``client``, is
  ``zodbserver.client.convenience.client``: the name ``zodbserver.client``
  is the client subpackage);
* ``ServerThread`` -- run a server inside a process (tests, embedding);
* ``ServerSettings`` -- a server's operational settings;
* ``ZodbServerError`` -- the root of the package's own exceptions.

The ``zeoserver`` command runs and controls a server process.
"""

from .client import ClientDisconnected, ClientStorage
from .client.convenience import DB, connection
from .errors import ZodbServerError
from .server.settings import ServerSettings
from .server.thread import ServerThread

__all__ = [
    "ClientDisconnected",
    "ClientStorage",
    "DB",
    "ServerSettings",
    "ServerThread",
    "ZodbServerError",
    "connection",
]
