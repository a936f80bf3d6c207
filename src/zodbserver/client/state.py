"""What application threads may know of the connection: one immutable value.

The thread rule of the client
-----------------------------

Two kinds of thread use a ``ClientStorage``: the application threads that
ZODB calls it from, and the one connection thread running the event loop
(``connection.ClientThread``).  Every object belongs to one of them:

* the ``ConnectionManager``, its links, ``Readahead`` and everything else in
  ``manager.py``, ``routing.py``, ``verification.py`` and ``link.py``
  belong to the connection thread.  Application threads never read or
  write their attributes; they hand work over with ``ClientThread``
  (``wait_for``, ``run``, ``call_soon``), passing values, not objects they
  keep using;
* the storage's transaction state (``commit.py``: the commit lock, the
  current transaction, its ``CommitBuffer``) and its supply of new oids
  belong to the application threads, guarded by the storage's locks;
* what application threads need to know about the connection -- is it up,
  which generation, read-only or not, the server's ``get_info`` -- the
  connection thread publishes as a ``ConnectionState``: a frozen value,
  replaced as a whole (one attribute assignment) whenever it changes.  A
  reader takes ``manager.state`` once and uses that value; it may be stale
  by the time it acts, which the generation check of every transaction
  call turns into ``ClientDisconnected``.  Readahead's marks are published
  the same way (``Readahead.marked``, a frozenset);
* shared structures that both threads use are thread-safe by construction
  and say so: the ``ClientCache`` (its own lock), the iterator registry
  (``iterators.py``, a lock), the storage's connection condition, and the
  queue that carries batches of new oids from the connection thread.

The one exception is ZODB's own: on connecting, the connection thread adds
the interfaces the server announces to the storage (``alsoProvides``),
which replaces the storage's interface declaration in one assignment, as
ZEO's client does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

#: ``get_info`` as a client knows it before any server has answered.
NO_INFO: Mapping[str, Any] = MappingProxyType(
    {
        "length": 0,
        "size": 0,
        "name": "zodbserver client",
        "supportsUndo": False,
        "interfaces": (),
    }
)


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """The connection as application threads see it (immutable)."""

    #: Moves on every connect and disconnect; a transaction begun in one
    #: generation cannot continue in another.
    generation: int = 0
    #: Verified and ready for application calls.
    operational: bool = False
    read_only: bool = False
    #: The server's address as ``sortKey`` names it, once connected.
    server_address: str | None = None
    protocol_version: bytes | None = None
    #: How the cache was verified on the last connect.
    verify_result: str | None = None
    #: The server's ``get_info``, merged with later ``info`` messages.
    info: Mapping[str, Any] = field(default_factory=lambda: NO_INFO)

    def connected(
        self,
        *,
        read_only: bool,
        server_address: str,
        protocol_version: bytes | None,
        verify_result: str,
        info: Mapping[str, Any],
    ) -> ConnectionState:
        return replace(
            self,
            generation=self.generation + 1,
            operational=True,
            read_only=read_only,
            server_address=server_address,
            protocol_version=protocol_version,
            verify_result=verify_result,
            info=MappingProxyType({**self.info, **info}),
        )

    def disconnected(self) -> ConnectionState:
        return replace(self, generation=self.generation + 1, operational=False)

    def with_info(self, info: Mapping[str, Any]) -> ConnectionState:
        return replace(self, info=MappingProxyType({**self.info, **info}))
