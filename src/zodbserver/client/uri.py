"""The ``zodbserver://`` URI scheme, for zodburi (Pyramid, pyramid_zodbconn).

The package registers :func:`resolve` as the ``zodbserver`` entry point of
the ``zodburi.resolvers`` group, so ``zodburi.resolve_uri`` understands::

    zodbserver://HOST:PORT?PARAMETERS
    zodbserver://HOST1:PORT1,HOST2:PORT2?PARAMETERS   several servers
    zodbserver://[::1]:8100?PARAMETERS                IPv6
    zodbserver:///path/to/socket?PARAMETERS           a Unix socket

The port defaults to 8100 and the host to 127.0.0.1, as for the server.
A URI with a host names TCP servers (a path after it may only be ``/``);
one without (three slashes) names a Unix socket, percent-encoded if need be.
Each server is a URL host, read by :mod:`zodbserver.addresses`.

Parameters are the keys of the ``<clientstorage>`` configuration section
with ``_`` for ``-``, and take the same values:

    storage, name, client, var, cache_path, blob_dir, client_label (text);
    cache_size, blob_cache_size (bytes: 20MB, 500KB, 1048576);
    read_only, read_only_fallback, shared_blob_dir, server_sync, wait
    (true/false, on/off, yes/no, 1/0);
    wait_timeout, min_disconnect_poll, max_disconnect_poll (seconds: 30,
    30s, 5m); blob_cache_size_check (a percentage); readahead (a count);
    and TLS, as the ``<ssl>`` subsection's keys: ssl_certificate, ssl_key,
    ssl_authenticate (files), ssl_server_hostname, ssl_check_hostname
    (true/false).  Any ``ssl_`` parameter turns TLS on.

For example ``zodbserver://db.example:8100?storage=main&cache_size=200MB
&client=web&var=/var/cache/zodb&database_name=main``.

``database_name`` and ``connection_*`` parameters (``connection_cache_size``,
``connection_pool_size``, ...) are zodburi's: they are returned, unconverted,
as the keyword arguments for ``ZODB.DB``.  Any other parameter, a repeated
one, or a value that does not parse raises
:class:`~zodbserver.errors.ConfigurationError` naming it.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable
from typing import Any

from ..addresses import DEFAULT_HOST, DEFAULT_PORT, Address, parse_port, split_host_port
from ..errors import ConfigurationError
from ..tls import client_context
from .storage import ClientStorage
from .zconfig import (
    parse_boolean,
    parse_byte_size,
    parse_count,
    parse_percentage,
    parse_timeout,
)

__all__ = ["DEFAULT_PORT", "SCHEME", "resolve"]

SCHEME = "zodbserver"


def _text(value: str) -> str:
    return value


#: URI parameter -> (ClientStorage keyword, value parser)
_PARAMETERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "storage": ("storage", _text),
    "name": ("name", _text),
    "client": ("client", _text),
    "var": ("var", _text),
    "cache_path": ("cache", _text),
    "blob_dir": ("blob_dir", _text),
    "client_label": ("client_label", _text),
    "cache_size": ("cache_size", parse_byte_size),
    "blob_cache_size": ("blob_cache_size", parse_byte_size),
    "blob_cache_size_check": ("blob_cache_size_check", parse_percentage),
    "readahead": ("readahead", parse_count),
    "read_only": ("read_only", parse_boolean),
    "read_only_fallback": ("read_only_fallback", parse_boolean),
    "shared_blob_dir": ("shared_blob_dir", parse_boolean),
    "server_sync": ("server_sync", parse_boolean),
    "wait": ("wait", parse_boolean),
    "wait_timeout": ("wait_timeout", parse_timeout),
    "min_disconnect_poll": ("min_disconnect_poll", parse_timeout),
    "max_disconnect_poll": ("max_disconnect_poll", parse_timeout),
}


#: TLS parameters -> ``tls.client_context`` keywords (ssl_server_hostname
#: goes to ClientStorage as it is).
_TLS_PARAMETERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ssl_certificate": ("certificate", _text),
    "ssl_key": ("key", _text),
    "ssl_authenticate": ("authenticate", _text),
    "ssl_check_hostname": ("check_hostname", parse_boolean),
}


def _is_database_parameter(name: str) -> bool:
    return name == "database_name" or name.startswith("connection_")


def resolve(uri: str) -> tuple[Callable[[], ClientStorage], dict[str, str]]:
    """zodburi's resolver: ``(storage factory, ZODB.DB keyword arguments)``.

    Nothing is dialed here; calling the factory opens the ``ClientStorage``.
    """
    parts = _split(uri)
    addresses = _addresses(uri, parts)
    options, database_options = _parameters(uri, parts.query)
    factory = functools.partial(ClientStorage, addresses, **options)
    return factory, database_options


def _split(uri: str) -> urllib.parse.SplitResult:
    scheme, sep, _rest = uri.partition("://")
    if not sep or scheme.lower() != SCHEME:
        raise ConfigurationError(f"not a {SCHEME}:// URI: {uri!r}")
    try:
        # urlsplit learns nothing from the scheme but must not choke on it.
        parts = urllib.parse.urlsplit("http" + uri[len(scheme) :])
    except ValueError as error:
        raise ConfigurationError(f"{uri!r}: {error}") from None
    if parts.fragment:
        raise ConfigurationError(f"{uri!r}: a {SCHEME} URI takes no #fragment")
    return parts


def _addresses(uri: str, parts: urllib.parse.SplitResult) -> list[Address]:
    if not parts.netloc:
        path = urllib.parse.unquote(parts.path)
        if not path or path == "/":
            raise ConfigurationError(f"{uri!r}: no server address or socket path")
        return [path]
    if parts.path not in ("", "/"):
        raise ConfigurationError(
            f"{uri!r}: a path after the server address; for a Unix socket "
            f"write {SCHEME}:///path/to/socket"
        )
    if "@" in parts.netloc:
        raise ConfigurationError(f"{uri!r}: a {SCHEME} URI takes no user name")
    return [_host_port(uri, item) for item in parts.netloc.split(",")]


def _host_port(uri: str, item: str) -> tuple[str, int]:
    """One server of the URI: a URL host, its port defaulting to 8100."""
    try:
        host, port = split_host_port(item)
        number = parse_port(port, item, listening=False) if port else DEFAULT_PORT
    except ValueError as error:
        raise ConfigurationError(f"{uri!r}: {error}") from None
    return (host or DEFAULT_HOST, number)


def _parameters(uri: str, query: str) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        pairs = urllib.parse.parse_qsl(
            query, keep_blank_values=True, strict_parsing=bool(query)
        )
    except ValueError as error:
        raise ConfigurationError(f"{uri!r}: bad query string: {error}") from None
    options: dict[str, Any] = {}
    database_options: dict[str, str] = {}
    tls: dict[str, Any] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise ConfigurationError(f"{uri!r}: parameter {name!r} given twice")
        seen.add(name)
        if _is_database_parameter(name):
            database_options[name] = value
            continue
        if name == "ssl_server_hostname":
            options["ssl_server_hostname"] = value
            continue
        target, table = (
            (tls, _TLS_PARAMETERS)
            if name in _TLS_PARAMETERS
            else (
                options,
                _PARAMETERS,
            )
        )
        if name not in table:
            raise ConfigurationError(
                f"{uri!r}: unknown parameter {name!r}; known: "
                + ", ".join(
                    sorted([*_PARAMETERS, *_TLS_PARAMETERS, "ssl_server_hostname"])
                )
                + ", database_name, connection_*"
            )
        keyword, parse = table[name]
        try:
            target[keyword] = parse(value)
        except ValueError as error:
            raise ConfigurationError(f"{uri!r}: {name}: {error}") from None
    if tls or "ssl_server_hostname" in options:
        try:
            options["ssl"] = client_context(**tls)
        except ConfigurationError as error:
            raise ConfigurationError(f"{uri!r}: {error}") from None
    return options, database_options
