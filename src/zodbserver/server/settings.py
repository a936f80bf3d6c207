"""The operational settings of a server, apart from the storages it serves.

One frozen dataclass, filled from a ``zeo.conf`` ``<zeo>`` section, from the
command line, or directly by tests and embedding code.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..addresses import DEFAULT_HOST, DEFAULT_PORT, Address
from ..protocol import DEFAULT_MAX_FRAME_SIZE
from ..tls import ServerTLS
from .tasks import DEFAULT_WORKER_THREADS


@dataclass(frozen=True)
class ServerSettings:
    address: Address = (DEFAULT_HOST, DEFAULT_PORT)
    read_only: bool = False
    invalidation_queue_size: int = 100
    #: Seconds; when the invalidation queue cannot answer ``getInvalidations``
    #: and the client's tid is younger than this, the storage is scanned.
    invalidation_age: float | None = None
    #: Seconds a transaction may hold the commit lock before its client is
    #: disconnected (which aborts the transaction).
    transaction_timeout: float | None = None
    client_conflict_resolution: bool = False
    #: Encoding announced in the handshake: msgpack (``M5``) unless False.
    msgpack: bool = True
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    pid_filename: str | None = None
    #: Threads for pack, undo logs, iteration, blob reads and a database
    #: storage's reads (``tasks``); ``worker-threads`` in zeo.conf.
    worker_threads: int = DEFAULT_WORKER_THREADS
    #: TLS (``<ssl>``); None listens in plain TCP.
    tls: ServerTLS | None = None
    #: Seconds a client has to complete the TLS handshake.
    tls_handshake_timeout: float = 10.0
    #: The access rules file (``access``); None lets every client do all.
    access_rules: str | None = None
    #: Where the monitor answers HTTP (``monitor``); None: no monitor.
    monitor_address: Address | None = None
    #: Seconds a commit may hold the commit lock before it is logged.
    slow_commit_threshold: float = 1.0
    #: Bytes of a transaction's stores kept in memory before the rest go to
    #: a temporary file (``spool``).
    transaction_spool_threshold: int = 16 * 1024 * 1024
    #: Connections served at once; more are refused (None: no limit).
    max_connections: int | None = 1000
    #: Seconds a connection has to register for a storage.
    register_timeout: float = 30.0
    #: Bytes of replies a connection may have unsent before the server stops
    #: reading its calls (it reads again below a quarter of this).
    connection_buffer_limit: int = 256 * 1024
    #: Seconds a connection may stay over its buffer limit before it is
    #: closed, as a client that does not read its replies.
    slow_client_timeout: float = 300.0
    #: Seconds between looks for the commits other servers made to a
    #: database storage (``mvcc``) they share with this one.
    database_poll_interval: float = 0.1
    #: The primary this server follows as a read-only replica
    #: (``follower``); None: it is a primary.
    replicate_from: Address | None = None
    #: Replicas that must have a commit on disk before its ``tpc_finish``
    #: is answered (``replication``).
    sync_replicas: int = 0
    #: Seconds a commit waits for them.
    sync_replicas_timeout: float = 10.0
    #: When they do not confirm in time: "fail" the commit, or go on
    #: "async" (logged, counted).
    sync_replicas_missing: str = "fail"
