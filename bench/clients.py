"""Open a storage of one kind: our client, ZEO's client, a FileStorage, or
RelStorage on PostgreSQL.

Shared by the benchmark process and its workers so both open clients the
same way.  ZEO and RelStorage are imported lazily: they are benchmark-only
dependencies.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import Any

#: Client kinds: the ``client`` half of a system.
OURS = "ours"
ZEO = "zeo"
FILESTORAGE = "filestorage"
#: RelStorage opened by the application process itself (``bench.database``).
RELSTORAGE = "relstorage"

CONNECT_TIMEOUT = 30.0

#: Set by ``python -m bench --tls`` (and inherited by the workers): the
#: directory of ``tls.Certificates``' files; clients then speak TLS.
TLS_ENVIRONMENT = "ZODBSERVER_BENCH_TLS"


def open_storage(
    kind: str,
    target: Any,
    *,
    blob_dir: str | None = None,
    cache_name: str | None = None,
    cache_dir: str | None = None,
    cache_size: int | None = None,
    wait_timeout: float = CONNECT_TIMEOUT,
) -> Any:
    """A connected storage of ``kind``.

    ``target`` is a server address for the clients, ``(path, blob_dir)``
    for a FileStorage and ``(dsn, directory)`` for RelStorage (its blob
    cache is a new directory in ``directory``).  ``blob_dir`` is the
    client's private blob cache; ``cache_name`` and ``cache_dir`` make its
    object cache persistent; ``cache_size`` is its size in bytes.
    """
    if kind == FILESTORAGE:
        from ZODB.FileStorage import FileStorage

        path, server_blobs = target
        return FileStorage(path, blob_dir=server_blobs)
    if kind == RELSTORAGE:
        dsn, directory = target
        return relstorage(dsn, tempfile.mkdtemp(prefix="blobcache-", dir=directory))
    options: dict[str, Any] = {"wait_timeout": wait_timeout}
    if cache_size is not None:
        options["cache_size"] = cache_size
    if blob_dir is not None:
        options["blob_dir"] = blob_dir
    if cache_name is not None:
        options.update(client=cache_name, var=cache_dir)
    certificates = os.environ.get(TLS_ENVIRONMENT)
    if certificates:
        options.update(ssl=client_tls(certificates), ssl_server_hostname="127.0.0.1")
    if kind == OURS:
        from zodbserver import ClientStorage

        return ClientStorage(tuple(target), **options)
    if kind == ZEO:
        from ZEO.ClientStorage import ClientStorage as ZeoClientStorage

        return ZeoClientStorage(tuple(target), **options)
    raise ValueError(f"unknown client kind {kind!r}")


def relstorage(dsn: str, blob_cache: str) -> Any:
    """A history-preserving RelStorage on PostgreSQL ``dsn`` with its blobs
    in the database (``blob_cache`` is this process's cache of them), as
    ``tests/support/database.py`` configures our servers' storages."""
    from relstorage.adapters.postgresql import PostgreSQLAdapter
    from relstorage.options import Options
    from relstorage.storage import RelStorage

    options = Options(keep_history=True, blob_dir=blob_cache, shared_blob_dir=False)
    return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options), options=options)


def client_tls(directory: str) -> ssl.SSLContext:
    """The same client context for both stacks: the bench CA, the client
    certificate ``bench``."""
    from zodbserver.tls import client_context

    return client_context(
        certificate=os.path.join(directory, "client.pem"),
        key=os.path.join(directory, "client.key"),
        authenticate=os.path.join(directory, "ca.pem"),
    )


def make_certificates(directory: str) -> str:
    """A CA, a server certificate for 127.0.0.1 and a client certificate,
    made with trustme into ``directory``; the directory."""
    import trustme

    os.makedirs(directory, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("bench", common_name="bench")
    files = {
        "ca.pem": ca.cert_pem.bytes(),
        "server.pem": b"".join(blob.bytes() for blob in server.cert_chain_pems),
        "server.key": server.private_key_pem.bytes(),
        "client.pem": b"".join(blob.bytes() for blob in client.cert_chain_pems),
        "client.key": client.private_key_pem.bytes(),
    }
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as file:
            file.write(data)
    return directory
