"""A real Zope application as the instance's WSGI application.

With ``application = zope`` the instance serves Zope (the ``Zope``
distribution, an optional dependency: ``pip install zodbserver[zope]``)
in its WSGI mode, configured by a ``zope.conf`` whose ``<zodb_db main>``
opens the database through ``%import zodbserver`` and ``<clientstorage>``.
Zope is imported only here, and only when such an instance starts.

Zope publishes each request in its own transaction (``ZPublisher`` begins,
commits or aborts, and retries a request after a ``ConflictError``), so
the application is not wrapped in ``TransactionMiddleware``: a second
transaction layer would commit Zope's work a second time, or hide the
conflicts Zope retries.  The pipeline is the one Zope's own ``zope.ini``
builds: ``ZPublisher.httpexceptions`` around ``publish_module``.

A ``zope.conf`` that opens a FileStorage another process has locked (the
server's ``Data.fs``, named directly instead of through the server) fails
with :class:`~zodbserver.errors.StorageInUseError`, worded as the server's
own refusal to open a busy file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import zc.lockfile

from .. import config
from ..errors import ConfigurationError, StorageInUseError

MISSING_ZOPE = (
    "application = zope needs the Zope distribution in this Python: "
    "pip install 'zodbserver[zope]'"
)
SHARE_ADVICE = (
    "To share the database with a running zeoserver, open it through the "
    "server instead: '%import zodbserver' and a <clientstorage> section in "
    "the <zodb_db> of zope.conf."
)


class ZopeApplication:
    """Zope's WSGI pipeline, and the databases it opened."""

    def __init__(self, pipeline: Callable[..., Iterable[bytes]]) -> None:
        self.pipeline = pipeline

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return self.pipeline(environ, start_response)

    def close(self) -> None:
        """Close every database Zope opened (the main one and its mounts)."""
        import Zope2

        main = getattr(Zope2, "DB", None)
        if main is None:
            return
        for database in list(main.databases.values()):
            database.close()


def make_zope_app(zope_conf: str) -> ZopeApplication:
    """Start Zope from ``zope_conf`` and return its WSGI application.

    Usable from any WSGI server; the instance's ``make_app`` calls it for
    an instance whose ``application`` is ``zope``.
    """
    zope_conf = os.path.abspath(zope_conf)
    if not os.path.isfile(zope_conf):
        raise ConfigurationError(f"no such zope.conf: {zope_conf}")
    try:
        from Zope2.Startup.run import make_wsgi_app
        from ZPublisher.httpexceptions import HTTPExceptionHandler
    except ImportError as error:
        raise ConfigurationError(f"{MISSING_ZOPE} ({error})") from error

    try:
        publish = make_wsgi_app({}, zope_conf)
    except zc.lockfile.LockError as error:
        raise storage_in_use(zope_conf, error) from error
    return ZopeApplication(HTTPExceptionHandler(publish))


def storage_in_use(zope_conf: str, error: zc.lockfile.LockError) -> StorageInUseError:
    """The server's "Data.fs is locked" error, for a database of zope.conf."""
    path = config.locked_path(error)
    refusal = config.storage_in_use(_database_named(path), path)
    return StorageInUseError(f"{zope_conf}: {refusal} {SHARE_ADVICE}")


def _database_named(locked_path: str) -> str:
    """The name of the ``<zodb_db>`` whose FileStorage is at ``locked_path``."""
    from App.config import getConfiguration

    for database in getattr(getConfiguration(), "databases", None) or []:
        storage = getattr(getattr(database, "config", None), "storage", None)
        path = getattr(getattr(storage, "config", None), "path", None)
        if path and os.path.abspath(path) == os.path.abspath(locked_path):
            return str(database.name)
    return "main"
