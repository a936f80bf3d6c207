"""The client side: ``ClientStorage``, a ZODB storage served over ZEO 5.

Layers, from the application down:

* ``storage``     the synchronous IStorage facade ``ZODB.DB`` calls;
* ``cache``       revisions kept in memory (``cache_file``: saved between runs);
* ``blobs``       the blob download cache or the shared blob directory;
* ``connection``  the thread running the event loop, reached with futures;
* ``manager``     dialing, registration, cache verification, invalidations;
* ``link``        one socket, driving ``protocol.ClientConnection``.
"""

from .cache import ClientCache
from .exceptions import ClientDisconnected, ClientStorageError, ServerException
from .storage import ClientStorage, normalize_addresses

__all__ = [
    "ClientCache",
    "ClientDisconnected",
    "ClientStorage",
    "ClientStorageError",
    "ServerException",
    "normalize_addresses",
]
