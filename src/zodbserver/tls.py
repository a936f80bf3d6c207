"""TLS contexts for both ends, with ZEO's ``<ssl>`` keys and meanings.

ZEO configures TLS with four keys, on the server inside ``<zeo>`` and on the
client inside ``<clientstorage>``: ``certificate`` and ``key`` (this end's
certificate chain and private key), ``password-function`` (the dotted name
of a callable returning the key's password) and ``authenticate`` (a CA file,
or a directory of trusted certificates, that the other end's certificate
must chain to).  As in ZEO:

* a TLS server always asks for a client certificate and refuses a client
  without a valid one (``CERT_REQUIRED``, ``VERIFY_X509_STRICT``, and a CRL
  check of the client's own certificate when CRLs are loaded).  Our one
  addition is an explicit server-only mode: ``authenticate SERVER-ONLY``
  encrypts without asking clients for certificates.  It is never a default;
  a server ``<ssl>`` without ``authenticate`` is refused;
* ``authenticate DYNAMIC`` loads no CA;
* a client without ``authenticate`` trusts the system's CAs.

Both ends speak TLS 1.2 or later.  Errors name the key and the file.
"""

from __future__ import annotations

import os
import pkgutil
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigurationError

#: ``authenticate`` on a server: encryption only, no client certificates.
SERVER_ONLY = "SERVER-ONLY"
#: ``authenticate`` as ZEO knows it: load no CA.
DYNAMIC = "DYNAMIC"
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class ServerTLS:
    """A server's ``<ssl>`` settings: files, read when a context is made (at
    start, and again on reload)."""

    certificate: str
    key: str | None
    authenticate: str
    password_function: str | None = None

    @property
    def server_only(self) -> bool:
        return self.authenticate == SERVER_ONLY


def server_context(settings: ServerTLS) -> ssl.SSLContext:
    """The ``SSLContext`` a server listens with."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_chain(context, settings.certificate, settings.key, settings.password_function)
    if settings.server_only:
        context.verify_mode = ssl.CERT_NONE
        return context
    if settings.authenticate != DYNAMIC:
        _load_trusted(context, settings.authenticate)
    context.verify_mode = ssl.CERT_REQUIRED
    _strict(context)
    return context


def client_context(
    *,
    certificate: str | None = None,
    key: str | None = None,
    password_function: str | None = None,
    authenticate: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """The ``SSLContext`` a client connects with."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    if authenticate and authenticate != DYNAMIC:
        _load_trusted(context, authenticate)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certificate:
        _load_chain(context, certificate, key, password_function)
    elif key or password_function:
        raise ConfigurationError("ssl: key and password-function need a certificate")
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    _strict(context)
    return context


def password_function(dotted: str | None) -> Callable[[], str] | None:
    """The callable ``password-function`` names, or None."""
    if not dotted:
        return None
    try:
        function = pkgutil.resolve_name(dotted)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigurationError(
            f"ssl: password-function: cannot import {dotted!r}: {error}"
        ) from None
    if not callable(function):
        raise ConfigurationError(f"ssl: password-function: {dotted!r} is not callable")
    return function


def _load_chain(
    context: ssl.SSLContext, certificate: str, key: str | None, password: str | None
) -> None:
    try:
        context.load_cert_chain(certificate, key, password_function(password))
    except (OSError, ssl.SSLError) as error:
        what = certificate if key is None else f"{certificate} with key {key}"
        raise ConfigurationError(
            f"ssl: certificate: cannot load {what}: {error}"
        ) from None


def _load_trusted(context: ssl.SSLContext, authenticate: str) -> None:
    try:
        if os.path.isdir(authenticate):
            context.load_verify_locations(capath=authenticate)
        else:
            context.load_verify_locations(cafile=authenticate)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(
            f"ssl: authenticate: cannot load {authenticate!r}: {error}"
        ) from None


def _strict(context: ssl.SSLContext) -> None:
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    if context.cert_store_stats()["crl"]:
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
