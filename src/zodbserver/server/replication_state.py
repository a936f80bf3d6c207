"""What a replicated storage remembers between runs: its history and peers.

A FileStorage's state is kept beside it, in ``Data.fs.replication``: one
JSON object, written to a temporary file and renamed into place, so that a
crash leaves the old state or the new, never half of one::

    {"history": [[1, "0000000000000000"], [2, "03e5c1d2a4b6c800"]],
     "replicas": ["10.0.0.2:8100"]}

``history`` is the storage's epochs (``replication_history``); a storage
without the file has the first history.  ``replicas`` are the addresses of
the replicas that have followed this server: when it starts as a primary
it asks them whether one of them was promoted meanwhile (``fencing``).
Storages other than FileStorage keep their state in memory only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace

from ZODB.FileStorage import FileStorage
from zope.proxy import removeAllProxies

from ..errors import ConfigurationError
from .replication_history import FIRST_HISTORY, History, from_json, to_json
from .storage_api import ServedStorage

logger = logging.getLogger(__name__)

SUFFIX = ".replication"


@dataclass(frozen=True)
class ReplicationState:
    history: History = FIRST_HISTORY
    replicas: tuple[str, ...] = ()
    #: The file it is kept in (None: in memory).
    path: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, storage: ServedStorage) -> ReplicationState:
        """The state of ``storage``, read from beside its file."""
        file_storage = removeAllProxies(storage)
        if not isinstance(file_storage, FileStorage):
            return cls()
        return cls.load(file_storage._file_name + SUFFIX)

    @classmethod
    def load(cls, path: str) -> ReplicationState:
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except FileNotFoundError:
            return cls(path=path)
        except OSError as error:
            raise ConfigurationError(f"{path}: cannot read: {error}") from None
        try:
            value = json.loads(text)
        except ValueError as error:
            raise ConfigurationError(f"{path}: not JSON: {error}") from None
        if not isinstance(value, dict):
            raise ConfigurationError(f"{path}: not a JSON object")
        replicas = value.get("replicas", [])
        if not isinstance(replicas, list) or not all(
            isinstance(address, str) for address in replicas
        ):
            raise ConfigurationError(f"{path}: replicas must be a list of addresses")
        return cls(from_json(value.get("history"), path), tuple(replicas), path)

    def save(self) -> None:
        if self.path is None:
            return
        temporary = f"{self.path}.tmp"
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(
                {"history": to_json(self.history), "replicas": list(self.replicas)},
                stream,
            )
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)

    def changed(self, **changes: object) -> ReplicationState:
        """A copy with ``changes``, saved."""
        state = replace(self, **changes)  # type: ignore[arg-type]
        if state != self:
            state.save()
        return state
