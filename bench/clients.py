"""Open a storage of one kind: our client, ZEO's client, or a FileStorage.

Shared by the benchmark process and its workers so both open clients the
same way.  ZEO is imported lazily: it is a benchmark-only dependency.
"""

from __future__ import annotations

from typing import Any

#: Client kinds: the ``client`` half of a system.
OURS = "ours"
ZEO = "zeo"
FILESTORAGE = "filestorage"

CONNECT_TIMEOUT = 30.0


def open_storage(
    kind: str,
    target: Any,
    *,
    blob_dir: str | None = None,
    cache_name: str | None = None,
    cache_dir: str | None = None,
) -> Any:
    """A connected storage of ``kind``.

    ``target`` is a server address for the clients and ``(path, blob_dir)``
    for a FileStorage.  ``blob_dir`` is the client's private blob cache;
    ``cache_name`` and ``cache_dir`` make its object cache persistent.
    """
    if kind == FILESTORAGE:
        from ZODB.FileStorage import FileStorage

        path, server_blobs = target
        return FileStorage(path, blob_dir=server_blobs)
    options: dict[str, Any] = {"wait_timeout": CONNECT_TIMEOUT}
    if blob_dir is not None:
        options["blob_dir"] = blob_dir
    if cache_name is not None:
        options.update(client=cache_name, var=cache_dir)
    if kind == OURS:
        from zodbserver import ClientStorage

        return ClientStorage(tuple(target), **options)
    if kind == ZEO:
        from ZEO.ClientStorage import ClientStorage as ZeoClientStorage

        return ZeoClientStorage(tuple(target), **options)
    raise ValueError(f"unknown client kind {kind!r}")
