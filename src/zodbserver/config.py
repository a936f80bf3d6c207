"""Reading a server's ``zeo.conf`` and opening the storages it names.

The file is the one ZEO's ``runzeo -C`` reads, in ZConfig syntax (the schema
is ``schema.xml`` beside this module)::

    <zeo>
      address 127.0.0.1:8100          # or 8100, or /path/to/socket
      read-only false
      invalidation-queue-size 100
      invalidation-age 1h
      transaction-timeout 300
      client-conflict-resolution false
      msgpack true
      pid-filename var/zeoserver.pid
      max-frame-size 64MB             # ours; ZEO has no such key
    </zeo>

    <filestorage 1>                   # any ZODB storage section type
      path var/filestorage/Data.fs
      blob-dir var/blobstorage
    </filestorage>

    <eventlog>                        # ZConfig's logger section
      <logfile>
        path var/log/zeoserver.log
      </logfile>
    </eventlog>

Every section but the storages is optional.  The storages are served under
their section names; a single unnamed section is served as ``"1"``, as
runzeo does.  Differences from ZEO, each in the operator's favour: the
``<zeo>`` section and its ``address`` may be left out (127.0.0.1:8100), a
bare port means 127.0.0.1 rather than every interface, and time keys take
``s``/``m``/``h``/``d`` suffixes.  Addresses are read by
:mod:`~zodbserver.addresses`, durations and sizes by :mod:`~zodbserver.units`.

``msgpack`` left unset: ZEO then reads the environment variable
``ZEO_MSGPACK`` (non-empty means msgpack) and otherwise uses pickle.  We keep
the variable's meaning when it is set, so ``ZEO_MSGPACK=`` (empty) selects
pickle, but with the variable absent we announce msgpack, our default
encoding (docs/protocol.md, Handshake).

Errors come out as :class:`~zodbserver.errors.ConfigurationError` whose
message names the file, the line and the key, and a FileStorage locked by
another process as :class:`~zodbserver.errors.StorageInUseError`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zc.lockfile
import ZConfig
import ZConfig.loader
import ZODB.FileStorage
import ZODB.interfaces

from . import child_packer
from .addresses import Address, parse_address
from .errors import ConfigurationError, StorageInUseError
from .protocol import DEFAULT_MAX_FRAME_SIZE
from .server.access import load_rules
from .server.settings import ServerSettings
from .server.tasks import MAX_WORKER_THREADS
from .tls import ServerTLS, server_context
from .units import parse_byte_size, parse_seconds

__all__ = [
    "ServerConfig",
    "StorageFactory",
    "close_storages",
    "filestorage",
    "load_config",
    "msgpack_from_environment",
    "open_storages",
]

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "schema.xml")

#: The name a single unnamed storage section is served under.
DEFAULT_STORAGE_NAME = "1"


# -- datatypes named by schema.xml -------------------------------------------


def server_address(value: str) -> Address:
    """ZConfig datatype for ``address``: where the server listens."""
    return parse_address(value)


def primary_address(value: str) -> Address:
    """ZConfig datatype for ``replicate-from``: a server to connect to."""
    return parse_address(value, listening=False)


def sync_replicas_missing(value: str) -> str:
    """ZConfig datatype for ``sync-replicas-missing``: fail or async."""
    choice = value.strip().lower()
    if choice not in ("fail", "async"):
        raise ValueError(f"expected fail or async, got {value!r}")
    return choice


def non_negative_integer(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise ValueError(f"must not be negative: {value!r}")
    return number


def worker_threads(value: str) -> int:
    number = non_negative_integer(value)
    if not 1 <= number <= MAX_WORKER_THREADS:
        raise ValueError(f"must be from 1 to {MAX_WORKER_THREADS}: {value!r}")
    return number


def seconds(value: str) -> float:
    """ZConfig datatype for the time keys: positive seconds (30, 5m, 1h)."""
    return parse_seconds(value)


def byte_size(value: str) -> int:
    """A positive byte count, optionally with a KB/MB/GB suffix."""
    number = parse_byte_size(value)
    if number < 1:
        raise ValueError(f"must be at least 1 byte: {value!r}")
    return number


def connection_limit(value: str) -> int | None:
    """A positive number of connections, or ``none`` for no limit."""
    if value.strip().lower() == "none":
        return None
    number = non_negative_integer(value)
    if number < 1:
        raise ValueError(f"must be at least 1 (or none): {value!r}")
    return number


def frame_size(value: str) -> int:
    """A byte count of at least 1KB, optionally with a KB/MB/GB suffix."""
    number = parse_byte_size(value)
    if number < 1024:
        raise ValueError(f"too small for a frame size: {value!r} (at least 1KB)")
    return number


# -- the loaded configuration ------------------------------------------------


class StorageFactory:
    """A storage to be served: its name and how to open it.

    ``path`` is the storage's main file where there is one (a FileStorage's
    Data.fs), used to name it in error messages.
    """

    def __init__(
        self,
        name: str,
        opener: Callable[[], ZODB.interfaces.IStorage],
        path: str | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self._opener = opener

    def open(self) -> ZODB.interfaces.IStorage:
        return self._opener()

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"<StorageFactory {self.name!r}{where}>"


def filestorage(name: str, path: str, blob_dir: str | None = None) -> StorageFactory:
    """A FileStorage at ``path`` (created if missing), with blobs if asked."""
    opener = functools.partial(ZODB.FileStorage.FileStorage, path, blob_dir=blob_dir)
    return StorageFactory(name, opener, path)


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server process needs: settings, storages, logging."""

    settings: ServerSettings
    storages: tuple[StorageFactory, ...]
    #: ZConfig's ``<eventlog>`` factory; calling it configures the root
    #: logger.  None when the file has no ``<eventlog>`` section.
    eventlog: Any | None = None
    #: The configuration file, if the configuration came from one.
    filename: str | None = None

    @property
    def log_files(self) -> tuple[str, ...]:
        """The files the ``<eventlog>`` section writes to (not STDERR/STDOUT)."""
        if self.eventlog is None:
            return ()
        paths = []
        for handler in self.eventlog.handler_factories:
            path = getattr(getattr(handler, "section", None), "path", None)
            if path and path not in ("STDERR", "STDOUT"):
                paths.append(path)
        return tuple(paths)

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)


class _FileOpener:
    """Reads ``file:`` resources with ``open`` rather than ``urlopen``.

    urllib's file handler asks ``mimetypes`` for each file's type, which
    loads the system's MIME tables: some 400 KB that a server process would
    then keep for its whole life without ever using them.  Other URLs, and
    every error message, are ZConfig's own.
    """

    def openResource(self, url: Any) -> Any:
        url = str(url)
        if url[:5].lower() != "file:":
            return super().openResource(url)  # type: ignore[misc]
        try:
            with open(_url_path(url), encoding="utf-8") as file:
                data = file.read()
        except OSError as error:
            self._raise_open_error(url, str(error))  # type: ignore[attr-defined]
        return self.createResource(io.StringIO(data), url)  # type: ignore[attr-defined]


class _SchemaLoader(_FileOpener, ZConfig.loader.SchemaLoader):
    pass


class _ConfigLoader(_FileOpener, ZConfig.loader.ConfigLoader):
    pass


@functools.cache
def _schema() -> Any:
    return _SchemaLoader().loadURL(SCHEMA_PATH)


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Read a zeo.conf; raise ConfigurationError naming file, line and key."""
    filename = os.fspath(path)
    if environ is None:
        environ = os.environ
    try:
        root, _handlers = _ConfigLoader(_schema()).loadURL(filename)
    except OSError as error:
        raise ConfigurationError(
            f"{filename}: cannot read the configuration file: {error.strerror}"
        ) from error
    except ZConfig.ConfigurationError as error:
        raise ConfigurationError(_describe(error, filename)) from error

    storages = _name_storages(root.storages, filename)
    return ServerConfig(
        settings=_settings(root.zeo, environ),
        storages=storages,
        eventlog=root.eventlog,
        filename=filename,
    )


def _settings(zeo: Any, environ: Mapping[str, str]) -> ServerSettings:
    defaults = ServerSettings()
    if zeo is None:
        return dataclasses.replace(defaults, msgpack=_msgpack(None, environ))
    return ServerSettings(
        address=zeo.address if zeo.address is not None else defaults.address,
        read_only=zeo.read_only,
        invalidation_queue_size=zeo.invalidation_queue_size,
        invalidation_age=zeo.invalidation_age,
        transaction_timeout=zeo.transaction_timeout,
        client_conflict_resolution=zeo.client_conflict_resolution,
        msgpack=_msgpack(zeo.msgpack, environ),
        max_frame_size=(
            zeo.max_frame_size
            if zeo.max_frame_size is not None
            else DEFAULT_MAX_FRAME_SIZE
        ),
        pid_filename=zeo.pid_filename,
        access_rules=zeo.access_rules,
        monitor_address=zeo.monitor_address,
        slow_commit_threshold=zeo.slow_commit_threshold,
        transaction_spool_threshold=zeo.transaction_spool_threshold,
        max_connections=zeo.max_connections,
        register_timeout=zeo.register_timeout,
        connection_buffer_limit=zeo.connection_buffer_limit,
        slow_client_timeout=zeo.slow_client_timeout,
        database_poll_interval=zeo.database_poll_interval,
        worker_threads=zeo.worker_threads,
        replicate_from=zeo.replicate_from,
        sync_replicas=zeo.sync_replicas,
        sync_replicas_timeout=zeo.sync_replicas_timeout,
        sync_replicas_missing=zeo.sync_replicas_missing,
        tls=None if zeo.ssl is None else zeo.ssl[0],
        tls_handshake_timeout=(
            defaults.tls_handshake_timeout if zeo.ssl is None else zeo.ssl[1]
        ),
    )


def access_rules_file(value: str) -> str:
    """ZConfig datatype for ``access-rules``: a rules file, parsed now so a
    bad rule is reported with its file and line."""
    path = os.path.abspath(value)
    try:
        load_rules(path)
    except ConfigurationError as error:
        raise ValueError(str(error)) from None
    return path


def server_tls(section: Any) -> tuple[ServerTLS, float]:
    """ZConfig datatype for the server's ``<ssl>``: the settings, checked by
    making a context once (a bad file is reported with its line), and the
    handshake timeout."""
    settings = ServerTLS(
        certificate=section.certificate,
        key=section.key,
        authenticate=section.authenticate,
        password_function=section.password_function,
    )
    try:
        server_context(settings)
    except ConfigurationError as error:
        raise ValueError(str(error)) from None
    return settings, section.handshake_timeout


def msgpack_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    """The encoding to announce when no ``msgpack`` key says: see above."""
    if environ is None:
        environ = os.environ
    if "ZEO_MSGPACK" in environ:
        return bool(environ["ZEO_MSGPACK"])
    return True


def _msgpack(configured: bool | None, environ: Mapping[str, str]) -> bool:
    return msgpack_from_environment(environ) if configured is None else configured


def _name_storages(sections: list[Any], filename: str) -> tuple[StorageFactory, ...]:
    unnamed = [section for section in sections if section.name is None]
    names = [section.name for section in sections if section.name is not None]
    if len(unnamed) > 1:
        raise ConfigurationError(
            f"{filename}: {len(unnamed)} storage sections have no name; "
            "at most one may be unnamed (it is served as storage "
            f"{DEFAULT_STORAGE_NAME!r}); name the others, e.g. <filestorage 2>"
        )
    if unnamed and DEFAULT_STORAGE_NAME in names:
        raise ConfigurationError(
            f"{filename}: an unnamed storage section is served as "
            f"{DEFAULT_STORAGE_NAME!r}, but another section is named "
            f"{DEFAULT_STORAGE_NAME!r}; name the unnamed one"
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigurationError(
            f"{filename}: more than one storage section is named "
            + ", ".join(repr(name) for name in duplicates)
        )
    factories = []
    for section in sections:
        name = section.name if section.name is not None else DEFAULT_STORAGE_NAME
        path = getattr(getattr(section, "config", None), "path", None)
        factories.append(StorageFactory(name, section.open, path))
    return tuple(factories)


def _describe(error: ZConfig.ConfigurationError, filename: str) -> str:
    """One line naming file, line and key, from ZConfig's exception."""
    url = getattr(error, "url", None)
    source = _url_path(url) if url else filename
    lineno = getattr(error, "lineno", None)
    where = f"{source}, line {lineno}" if lineno else source
    key = _key_at(source, lineno) if lineno else None
    if isinstance(error, ZConfig.DataConversionError):
        if key:
            return f"{where}: bad value for {key!r}: {error.message}"
        return f"{where}: bad value {error.value!r}: {error.message}"
    if "zodb.storage" in error.message:
        return (
            f"{where}: no storage section; add one, e.g. "
            "<filestorage 1> path var/filestorage/Data.fs </filestorage>"
        )
    if key and key not in error.message:
        return f"{where}: {key!r}: {error.message}"
    return f"{where}: {error.message}"


def _url_path(url: str) -> str:
    if url.startswith("file:"):
        return urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    return url


def _key_at(source: str, lineno: int) -> str | None:
    """The key (or ``<section>``) written on line ``lineno`` of ``source``."""
    try:
        with open(source, encoding="utf-8", errors="replace") as file:
            line = next(itertools.islice(file, lineno - 1, None), "")
    except OSError:
        return None
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("<"):
        return text.split(">", 1)[0] + ">"
    return text.replace("=", " ", 1).split(None, 1)[0]


# -- opening and closing the storages ----------------------------------------


def open_storages(config: ServerConfig) -> dict[str, ZODB.interfaces.IStorage]:
    """Open every storage, in file order; all or none.

    If one fails, those already opened are closed again.  A storage whose
    files another process has locked raises StorageInUseError.
    """
    opened: dict[str, ZODB.interfaces.IStorage] = {}
    try:
        for factory in config.storages:
            opened[factory.name] = _open(factory)
    except BaseException:
        close_storages(opened)
        raise
    return opened


def _open(factory: StorageFactory) -> ZODB.interfaces.IStorage:
    try:
        storage = factory.open()
    except zc.lockfile.LockError as error:
        path = factory.path or locked_path(error)
        raise storage_in_use(factory.name, path) from error
    child_packer.install(storage)
    return storage


def storage_in_use(name: str, path: str) -> StorageInUseError:
    """The refusal to open storage ``name``: another process locks ``path``."""
    return StorageInUseError(
        f"storage {name!r}: {path} is locked by another process: "
        "a running zeoserver, or a Zope instance that opens the file "
        "directly, holds its lock. Stop that process first; two processes "
        "must never write the same Data.fs."
    )


def locked_path(error: zc.lockfile.LockError) -> str:
    """The file whose lock ``error`` could not take."""
    # zc.lockfile says "Couldn't lock '/path/Data.fs.lock'".
    message = str(error)
    _, _, quoted = message.partition("lock ")
    path = quoted.strip("'\"")
    if path.endswith(".lock"):
        path = path[: -len(".lock")]
    return path or message


def close_storages(storages: Mapping[str, ZODB.interfaces.IStorage]) -> None:
    """Close each storage, carrying on past failures; re-raise the first."""
    first: BaseException | None = None
    for storage in storages.values():
        try:
            storage.close()
        except Exception as error:
            first = first or error
    if first is not None:
        raise first
