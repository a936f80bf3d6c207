"""What a storage reports after a crash, corrected before it is served.

A FileStorage writes a transaction's records at its vote, with the
*checkpoint* status ``c``, and marks them committed at the finish.  When the
process dies between the two, the next ``FileStorage`` to open the file
truncates that unfinished transaction -- but ZODB's ``read_index`` has by
then already taken its tid as the storage's last transaction.  Until the next
commit, ``lastTransaction()`` names a "phantom" tid that has no data, and
clients would compare their caches against a transaction that never
happened (and, once the server is restarted again and reports the real tid,
find their caches "newer than the server").

``forget_unfinished_transaction`` puts the last *committed* tid back, reading
the header of the transaction that ends the file, when the server starts.
New tids still come after the phantom (the storage's timestamp is left as
it is), so a client that saw it still sees every later commit as newer.
"""

from __future__ import annotations

import logging

from ZODB.FileStorage import FileStorage
from ZODB.utils import u64, z64
from zope.proxy import removeAllProxies

from .storage_api import ServedStorage

logger = logging.getLogger(__name__)

#: The first transaction of a Data.fs starts after its 4-byte magic number.
_DATA_START = 4


def forget_unfinished_transaction(name: str, storage: ServedStorage) -> None:
    """Make ``storage.lastTransaction()`` name its last committed tid."""
    file_storage = removeAllProxies(storage)
    if not isinstance(file_storage, FileStorage):
        return  # other storages do not report transactions they dropped
    with file_storage._lock:
        reported = file_storage._ltid
        committed = _last_committed_tid(file_storage)
        if committed >= reported:
            return
        file_storage._ltid = committed
    logger.warning(
        "storage %r: transaction %s was voted but never finished (the server "
        "stopped in between) and was removed; the last committed transaction "
        "is %s",
        name,
        reported.hex(),
        committed.hex(),
    )


def _last_committed_tid(storage: FileStorage) -> bytes:
    """The tid of the transaction that ends the file's committed data."""
    tid: bytes = z64  # no transaction at all
    end = storage._pos
    if end > _DATA_START:
        file = storage._file
        file.seek(end - 8)
        # Each transaction record ends with its length (without those 8 bytes).
        length = u64(file.read(8))
        file.seek(end - 8 - length)
        tid = file.read(8)
    return tid
