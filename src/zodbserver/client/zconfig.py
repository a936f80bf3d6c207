"""The ``<clientstorage>`` section: opening a ``ClientStorage`` from ZConfig.

A ZODB configuration (``zope.conf``, ``ZODB.config``, zodbshootout) that
says ``%import zodbserver`` gets the section types of ``component.xml``
beside the package's ``__init__``; ``<clientstorage>`` is a drop-in for
ZEO's, so a configuration switches by changing ``%import ZEO`` alone::

    %import zodbserver

    <zodb>
      <clientstorage>
        server 127.0.0.1:8100        # repeatable; HOST:PORT, PORT or a path
        storage 1
        cache-size 200MB
        client app                    # persistent cache: $var/app-1.zec
        var /var/cache/zodb
        blob-dir /var/cache/zodb/blobs
        read-only-fallback true
        wait-timeout 30
        <ssl>                         # only for TLS servers
          authenticate /etc/zodb/ca.pem
        </ssl>
      </clientstorage>
    </zodb>

The same configuration cannot also ``%import ZEO``: ZConfig refuses the
second definition of ``clientstorage`` (and of ``ssl``).  The keys are ZEO's
with ZEO's defaults, plus ``client``, ``var``, ``wait`` and the reconnect
polls of ZODB's ``<zeoclient>``; ``<ssl>`` takes ZEO's keys, but its
``certificate`` is optional (a client needs none unless the server asks).

Every key has a datatype of its own here, so that a bad value fails with
a message naming the key (ZConfig's own datatypes do not name it).  The
value parsers (``parse_byte_size``, ``parse_boolean``, ``parse_timeout``)
are shared with the URI resolver (``uri``); addresses are read by
:mod:`zodbserver.addresses` (connecting: ``:PORT`` is 127.0.0.1), sizes and
durations by :mod:`zodbserver.units`.
"""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ZODB.config

from ..addresses import Address, parse_address
from ..errors import ConfigurationError
from ..tls import client_context
from ..units import parse_byte_size, parse_seconds
from .storage import ClientStorage

T = TypeVar("T")

_TRUE = frozenset({"1", "on", "true", "yes"})
_FALSE = frozenset({"0", "off", "false", "no"})


# -- value parsers: raise ValueError with a message fit for an operator ------


def parse_boolean(value: str) -> bool:
    """``true``/``false``, ``on``/``off``, ``yes``/``no`` or ``1``/``0``."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r} (use true or false)")


def parse_timeout(value: str) -> float:
    """0 or more seconds, optionally with an s/m/h/d suffix (30, 30s, 5m)."""
    return parse_seconds(value, allow_zero=True)


def parse_count(value: str) -> int:
    """A whole number, 0 or more."""
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise ValueError(f"must be 0 or more: {value!r}")
    return number


def parse_percentage(value: str) -> int:
    """A whole number from 1 to 100."""
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"not a whole number: {value!r}") from None
    if not 1 <= number <= 100:
        raise ValueError(f"must be a percentage from 1 to 100: {value!r}")
    return number


def parse_server_address(value: str) -> Address:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``PORT`` (on 127.0.0.1) or a socket path."""
    return parse_address(value, listening=False)


# -- ZConfig datatypes, one per key, so that errors name the key -------------


def _naming(key: str, parse: Callable[[str], T]) -> Callable[[str], T]:
    def convert(value: str) -> T:
        try:
            return parse(value)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None

    convert.__name__ = convert.__qualname__ = key.replace("-", "_")
    convert.__doc__ = f"ZConfig datatype for ``{key}``: {parse.__doc__}"
    return convert


server = _naming("server", parse_server_address)
cache_size = _naming("cache-size", parse_byte_size)
blob_cache_size = _naming("blob-cache-size", parse_byte_size)
blob_cache_size_check = _naming("blob-cache-size-check", parse_percentage)
shared_blob_dir = _naming("shared-blob-dir", parse_boolean)
read_only = _naming("read-only", parse_boolean)
read_only_fallback = _naming("read-only-fallback", parse_boolean)
drop_cache_rather_verify = _naming("drop-cache-rather-verify", parse_boolean)
server_sync = _naming("server-sync", parse_boolean)
readahead = _naming("readahead", parse_count)
wait = _naming("wait", parse_boolean)
wait_timeout = _naming("wait-timeout", parse_timeout)
min_disconnect_poll = _naming("min-disconnect-poll", parse_timeout)
max_disconnect_poll = _naming("max-disconnect-poll", parse_timeout)
check_hostname = _naming("check-hostname", parse_boolean)


# -- the <ssl> subsection ------------------------------------------------------


@dataclass(frozen=True)
class TlsSettings:
    """What ``ClientStorage`` needs to speak TLS: its ``ssl`` arguments."""

    context: ssl_module.SSLContext
    server_hostname: str | None


def client_tls(section: Any) -> TlsSettings:
    """ZConfig datatype for ``<ssl>``: a client-side ``SSLContext``
    (``zodbserver.tls``: ZEO's keys and meanings)."""
    try:
        context = client_context(
            certificate=section.certificate,
            key=section.key,
            password_function=section.password_function,
            authenticate=section.authenticate,
            check_hostname=section.check_hostname,
        )
    except ConfigurationError as error:
        raise ValueError(str(error)) from None
    return TlsSettings(context, section.server_hostname)


# -- the section itself --------------------------------------------------------


class ClientStorageConfig(ZODB.config.BaseConfig):
    """ZConfig datatype for ``<clientstorage>``: ``open()`` makes the storage."""

    def storage_options(self) -> dict[str, Any]:
        """The ``ClientStorage`` keyword arguments the section stands for."""
        config = self.config
        options: dict[str, Any] = {
            "storage": config.storage,
            "cache_size": config.cache_size,
            "cache": config.cache_path,
            "name": config.name,
            "client": config.client,
            "var": config.var,
            "blob_dir": config.blob_dir,
            "shared_blob_dir": config.shared_blob_dir,
            "blob_cache_size": config.blob_cache_size,
            "read_only": config.read_only,
            "read_only_fallback": config.read_only_fallback,
            "server_sync": config.server_sync,
            "wait": config.wait,
            "wait_timeout": config.wait_timeout,
            "client_label": config.client_label,
        }
        optional = {
            "blob_cache_size_check": config.blob_cache_size_check,
            "readahead": config.readahead,
            "min_disconnect_poll": config.min_disconnect_poll,
            "max_disconnect_poll": config.max_disconnect_poll,
        }
        options.update(
            (key, value) for key, value in optional.items() if value is not None
        )
        if config.ssl is not None:
            options["ssl"] = config.ssl.context
            options["ssl_server_hostname"] = config.ssl.server_hostname
        return options

    def open(self, database_name: str = "unnamed", databases: Any = None) -> Any:
        if not self.config.server:
            raise ConfigurationError("clientstorage: no server address given")
        return ClientStorage(list(self.config.server), **self.storage_options())
