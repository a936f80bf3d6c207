"""Server addresses: where a server listens and where a client finds it.

Every address a person or a program writes is read here: ``zeo.conf``'s
``address``, ``zeoserver -a``, the recipes' ``zeo-address`` and
``http-address``, ``zeopack``'s servers, the ``<clientstorage>`` ``server``
key, a ``zodbserver://`` URI and ``ClientStorage``'s first argument.  The
forms::

    8100                port 8100 on 127.0.0.1 (never every interface)
    db.example:8100     a host and a port
    [::1]:8100          an IPv6 address, in brackets (checked)
    :8100               every interface (listening), 127.0.0.1 (connecting)
    /run/zodb.sock      a Unix socket: anything containing "/"

An address is a ``(host, port)`` tuple or a socket path (:data:`Address`);
:func:`format_address` writes one back in the form above.

The callers' syntaxes differ where their documentation (or ZEO's) does, and
each difference is a parameter or a function here, not a parser of its own:

- *Listening* (:func:`parse_address`: ``zeo.conf``, ``zeoserver -a``, the
  recipes, and ``zeopack -a``, which the recipe hands the server's own
  address) allows port 0 (any free port) and reads an empty host as every
  interface.  *Connecting* (``listening=False``: ``<clientstorage>``, URIs,
  ``zeopack HOST:PORT``) takes ports from 1 and reads an empty host as
  127.0.0.1.
- A URI's servers are URL hosts (:func:`split_host_port`): the port may be
  left out (:data:`DEFAULT_PORT`), and a number alone is a host name.
- ``zeopack``'s positionals are ``HOST:PORT[:STORAGE]``: the port is
  required, and neither a bare port nor a socket path is a server there
  (``-a`` and ``-u`` are).
- ``ClientStorage`` (:func:`normalize_addresses`) also takes an ``int`` port,
  ``(host, port)`` tuples and lists, and reads strings leniently: a string
  is a socket path unless it ends in ``:DIGITS`` (so ``"8100"`` is a path,
  as every string is in ZEO's ``ClientStorage``), the host in front of the
  port may be an IPv6 address without brackets, and the port is not
  range-checked (connecting reports it).

Errors are ``ValueError``s whose message quotes the address; each caller
wraps them in its own error, naming the option or key.
``normalize_addresses`` raises ``ConfigurationError``, as ``ClientStorage``
always has.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Address",
    "format_address",
    "normalize_addresses",
    "parse_address",
    "parse_port",
    "split_host_port",
]

#: A TCP ``(host, port)`` pair or the path of a Unix socket.
Address = tuple[str, int] | str

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8100
MAX_PORT = 65535

_FORMS = "expected PORT, HOST:PORT or a socket path containing '/'"


def parse_address(value: str, *, listening: bool = True) -> Address:
    """``PORT``, ``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or a socket path.

    A bare port is on 127.0.0.1 only.  ``:PORT`` (an empty host)
    is every interface when ``listening``, 127.0.0.1 when connecting; port 0
    (any free port) is only for listening; see docs/operations.md, zeo.conf.
    """
    text = value.strip()
    if not text:
        raise ValueError(f"invalid address {value!r}: it is empty")
    if "/" in text:
        return text
    host, port = split_host_port(text, value)
    if port is None:  # a bare port
        if text.startswith("[") or not _is_number(host):
            raise ValueError(f"invalid address {value!r}: {_FORMS}")
        return (DEFAULT_HOST, parse_port(host, value, listening=listening))
    if not host and not listening:
        host = DEFAULT_HOST
    return (host, parse_port(port, value, listening=listening))


def split_host_port(text: str, value: str | None = None) -> tuple[str, str | None]:
    """``HOST:PORT`` as ``(HOST, PORT)``, ``HOST`` as ``(HOST, None)``.

    An IPv6 host is written in brackets, which are removed; the address in
    them is checked.  The port is returned as written (possibly empty).
    Errors quote ``value``, the address as given, if ``text`` is a part of it.
    """
    quoted = text if value is None else value
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {quoted!r}: bad IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"invalid address {quoted!r}: not an IPv6 address: {host!r}"
            ) from None
        return host, rest[1:] if rest else None
    host, colon, port = text.partition(":")
    if ":" in port:
        raise ValueError(
            f"invalid address {quoted!r}: write an IPv6 address in brackets, "
            "as [HOST]:PORT"
        )
    return host, port if colon else None


def parse_port(text: str, value: str, *, listening: bool = True) -> int:
    """The port ``text`` of address ``value``: 0 to 65535, or from 1."""
    if not _is_number(text):
        raise ValueError(f"invalid address {value!r}: bad port {text!r}; {_FORMS}")
    port = int(text)
    lowest = 0 if listening else 1
    if not lowest <= port <= MAX_PORT:
        raise ValueError(
            f"invalid address {value!r}: bad port {port}, out of range "
            f"({lowest} to {MAX_PORT})"
        )
    return port


def format_address(address: Address | Sequence[object]) -> str:
    """``HOST:PORT``, ``[IPv6]:PORT`` or the socket path: what parsing reads.

    A socket's address (which may carry IPv6 flow and scope ids) is
    formatted from its first two items.
    """
    if isinstance(address, str):
        return address
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize_addresses(addr: Any) -> list[Address]:
    """``ClientStorage``'s addresses: ``(host, port)`` tuples and socket paths.

    Accepts a port (``8100`` means ``127.0.0.1:8100``), ``(host, port)``,
    ``"host:port"``, a path (anything with a ``/``, or without a port), or a
    list of those.
    """
    if isinstance(addr, list):
        return [address for item in addr for address in normalize_addresses(item)]
    if isinstance(addr, int) and not isinstance(addr, bool):
        return [(DEFAULT_HOST, addr)]
    if isinstance(addr, tuple) and len(addr) == 2 and isinstance(addr[1], int):
        return [(str(addr[0]), addr[1])]
    if isinstance(addr, tuple):
        return normalize_addresses(list(addr))
    if isinstance(addr, str):
        host, colon, port = addr.rpartition(":")
        if "/" not in addr and colon and _is_number(port):
            return [(host.strip("[]") or DEFAULT_HOST, int(port))]
        return [addr]
    raise ConfigurationError(f"cannot use {addr!r} as a server address")


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()
