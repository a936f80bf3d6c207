"""Access rules: which client may do what to which storage.

A rules file (``access-rules`` in ``<zeo>``, ``zeoserver --access-rules``)
holds one rule per line; ``#`` starts a comment.  Each rule is three
fields::

    # storage   client                        access
    main        name:web*                     write
    main        name:reports                  read
    *           fingerprint:3f:a1:...:09      admin
    *           network:10.1.0.0/16           read
    *           *                             none

*storage* is a storage name or ``*``.  *client* is ``name:PATTERN`` (a
shell-style pattern matched against the names of the client's TLS
certificate: its subject's common name and its subject alternative names),
``fingerprint:HEX`` (the SHA-256 of the client's certificate, colons
optional), ``network:CIDR`` (the client's address, IPv4 or IPv6; a Unix
socket has none), or ``*`` (any client).  *access* is ``none``, ``read``
(loads, history, iteration, the undo log, blobs out), ``replicate`` (also
follow the storage as a replica), ``write`` (also commits and undo) or
``admin`` (also pack and promote).

The first rule that matches the storage and the client decides, as in
PostgreSQL's ``pg_hba.conf``; a client no rule matches has no access.  A
client without access is refused at ``register`` with an error that names
it and the storage; a ``read`` client is served as by a read-only server
(commits fail with ``ReadOnlyError``).  Without a rules file every client
may do everything, as with ZEO.

This module only parses and decides (no I/O but reading the file); the
session applies the decision (``session.py``), and a reload replaces the
rules of the running server and applies them again to the clients already
connected (``main.py``).
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError


class Access(enum.IntEnum):
    NONE = 0
    READ = 1
    #: Read, and follow the storage as a replica (``replication``).
    REPLICATE = 2
    WRITE = 3
    ADMIN = 4


@dataclass(frozen=True)
class Credentials:
    """What the server knows of a client: its address, and the names and
    fingerprint of its verified TLS certificate (if it sent one)."""

    address: str | None = None
    names: tuple[str, ...] = ()
    fingerprint: str | None = None

    def describe(self) -> str:
        who = (
            f"client {self.names[0]!r}"
            if self.names
            else "client without a certificate"
        )
        return f"{who} from {self.address}" if self.address else who


@dataclass(frozen=True)
class Rule:
    storage: str
    kind: str  # "name", "fingerprint", "network" or "any"
    value: str | ipaddress.IPv4Network | ipaddress.IPv6Network | None
    access: Access
    #: Where the rule was written, for log lines: "FILE:LINE".
    origin: str

    def matches(self, storage: str, client: Credentials) -> bool:
        if self.storage not in ("*", storage):
            return False
        if self.kind == "any":
            return True
        value = self.value
        if isinstance(value, str):
            if self.kind == "name":
                return any(fnmatch.fnmatchcase(name, value) for name in client.names)
            return client.fingerprint == value
        if value is None or client.address is None:
            return False
        try:
            return ipaddress.ip_address(client.address) in value
        except ValueError:
            return False


@dataclass(frozen=True)
class Decision:
    access: Access
    rule: Rule | None  # None: no rule matched


class AccessRules:
    """The parsed rules of one file, in order."""

    def __init__(self, rules: Iterable[Rule], source: str) -> None:
        self.rules = tuple(rules)
        self.source = source

    def decide(self, storage: str, client: Credentials) -> Decision:
        for rule in self.rules:
            if rule.matches(storage, client):
                return Decision(rule.access, rule)
        return Decision(Access.NONE, None)


def load_rules(path: str) -> AccessRules:
    """Read and parse a rules file; ``ConfigurationError`` names file and line."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(
            f"{path}: cannot read the access rules: {error}"
        ) from None
    return parse_rules(text, path)


def parse_rules(text: str, source: str) -> AccessRules:
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        origin = f"{source}:{number}"
        if len(fields) != 3:
            raise ConfigurationError(
                f"{origin}: expected 'STORAGE CLIENT ACCESS', got {len(fields)} "
                f"field{'s' if len(fields) != 1 else ''}: {line.strip()!r}"
            )
        storage, client, access = fields
        kind, value = _client(client, origin)
        try:
            level = Access[access.upper()]
        except KeyError:
            raise ConfigurationError(
                f"{origin}: unknown access {access!r}; "
                "expected none, read, replicate, write or admin"
            ) from None
        rules.append(Rule(storage, kind, value, level, origin))
    return AccessRules(rules, source)


def _client(
    text: str, origin: str
) -> tuple[str, str | ipaddress.IPv4Network | ipaddress.IPv6Network | None]:
    if text == "*":
        return "any", None
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise ConfigurationError(
            f"{origin}: client {text!r} is not name:PATTERN, fingerprint:HEX, "
            "network:CIDR or *"
        )
    if kind == "name":
        return "name", value
    if kind == "fingerprint":
        digits = value.replace(":", "").lower()
        if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
            raise ConfigurationError(
                f"{origin}: fingerprint {value!r} is not a SHA-256 (64 hex digits)"
            )
        return "fingerprint", digits
    if kind == "network":
        try:
            return "network", ipaddress.ip_network(value, strict=False)
        except ValueError as error:
            raise ConfigurationError(f"{origin}: network {value!r}: {error}") from None
    raise ConfigurationError(
        f"{origin}: unknown client kind {kind!r}; expected name, fingerprint or network"
    )


def credentials(
    peername: object, certificate: Mapping[str, Any] | None, der: bytes | None
) -> Credentials:
    """A connection's credentials from what its transport knows."""
    address = None
    if isinstance(peername, tuple) and peername:
        address = str(peername[0])
    names: list[str] = []
    if certificate:
        for relative_name in certificate.get("subject", ()):
            for key, value in relative_name:
                if key == "commonName":
                    names.append(str(value))
        for _kind, value in certificate.get("subjectAltName", ()):
            if str(value) not in names:
                names.append(str(value))
    fingerprint = hashlib.sha256(der).hexdigest() if der else None
    return Credentials(address, tuple(names), fingerprint)
