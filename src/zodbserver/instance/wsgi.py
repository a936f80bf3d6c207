r"""One database connection and one transaction per HTTP request.

``TransactionMiddleware`` wraps a WSGI application.  For every request it
opens a connection from the ``ZODB.DB`` with its own transaction manager,
puts it in ``environ["zodbserver.connection"]`` (and the root object in
``environ["zodbserver.root"]``), calls the application and collects its
whole response, then commits.  An exception aborts the transaction and
answers 500; a ``ConflictError`` (raised by the application or by the
commit) aborts and runs the request again, up to ``conflict_retries``
times, after which the client gets 409.  The response is sent only after
the commit succeeded, so a client never sees a success that was rolled
back; the request body is read once so that a retry sees it again.

``make_app(config_path)`` builds the whole stack from an instance
configuration file (JSON written by the ``zodbserver:instance`` recipe),
for any WSGI server; an instance whose application is ``zope`` gets
Zope's own pipeline instead (see ``zope_app``).  Each worker process must
build its own application (its database connection runs a thread), so
do not preload it in a forking server's master::

    gunicorn -b 127.0.0.1:8080 \
        'zodbserver.instance.wsgi:make_app("parts/client1/etc/instance.json")'
    uwsgi --http 127.0.0.1:8080 --master --lazy-apps --enable-threads \
        --eval 'from zodbserver.instance.wsgi import make_app
    application = make_app("parts/client1/etc/instance.json")'
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import transaction
import ZODB
import ZODB.config
from ZODB.POSException import ConflictError

log = logging.getLogger("zodbserver.instance")

#: The ``application`` setting that selects a real Zope (``zope_app``).
ZOPE_APPLICATION = "zope"

StartResponse = Callable[..., Any]
WSGIApplication = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class TransactionMiddleware:
    def __init__(
        self, db: ZODB.DB, application: WSGIApplication, conflict_retries: int = 3
    ) -> None:
        self.db = db
        self.application = application
        self.conflict_retries = conflict_retries

    def close(self) -> None:
        self.db.close()

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        body = _read_body(environ)
        for attempt in range(self.conflict_retries + 1):
            environ["wsgi.input"] = io.BytesIO(body)
            try:
                status, headers, chunks = self._attempt(environ)
            except ConflictError as error:
                if attempt < self.conflict_retries:
                    log.info("conflict, retrying request (%d): %s", attempt + 1, error)
                    continue
                return _plain(start_response, "409 Conflict", f"{error}\n")
            except Exception:
                log.exception("request failed: %s", environ.get("PATH_INFO"))
                return _plain(start_response, "500 Internal Server Error", "error\n")
            start_response(status, headers)
            return chunks
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, environ: dict[str, Any]
    ) -> tuple[str, list[tuple[str, str]], list[bytes]]:
        manager = transaction.TransactionManager(explicit=True)
        connection = self.db.open(manager)
        try:
            manager.begin()
            try:
                environ["zodbserver.connection"] = connection
                environ["zodbserver.root"] = connection.root()
                response: list[Any] = []

                def start_response(
                    status: str, headers: list[tuple[str, str]], exc_info: Any = None
                ) -> Callable[[bytes], None]:
                    response[:] = [status, headers]
                    return lambda data: chunks.append(data)

                chunks: list[bytes] = []
                result = self.application(environ, start_response)
                try:
                    chunks.extend(result)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
                if not response:
                    raise RuntimeError("the application did not call start_response")
                manager.commit()
            except BaseException:
                manager.abort()
                raise
        finally:
            connection.close()
        return response[0], response[1], chunks


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    data = text.encode()
    start_response(
        status,
        [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))],
        sys.exc_info(),
    )
    return [data]


#: The entry point group that ``application = egg:DIST#NAME`` looks in.
ENTRY_POINT_GROUP = "zodbserver.application"


def entry_point(spec: str) -> importlib.metadata.EntryPoint:
    """The entry point ``egg:DIST#NAME`` names (``NAME`` defaults to ``main``).

    A distribution declares its application for instances as, in its
    ``pyproject.toml``: ``[project.entry-points."zodbserver.application"]``
    ``main = "package.module:application"``.  Raises ``LookupError`` saying
    what is missing.
    """
    distribution_name, _, name = spec.removeprefix("egg:").partition("#")
    name = name or "main"
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        raise LookupError(
            f"no distribution {distribution_name!r} is installed"
        ) from None
    for point in distribution.entry_points:
        if point.group == ENTRY_POINT_GROUP and point.name == name:
            return point
    raise LookupError(
        f"{distribution_name} has no {name!r} entry point in the "
        f"{ENTRY_POINT_GROUP!r} group"
    )


def resolve(dotted: str) -> Any:
    """``package.module:attribute``, ``package.module.attribute``, or an entry
    point ``egg:DIST#NAME``."""
    if dotted.startswith("egg:"):
        return entry_point(dotted).load()
    if ":" in dotted:
        module_name, _, attribute = dotted.partition(":")
    else:
        module_name, _, attribute = dotted.rpartition(".")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def set_environment(environment: dict[str, str]) -> None:
    os.environ.update(environment)
    if "TZ" in environment:
        time.tzset()


def load_settings(config_path: str) -> dict[str, Any]:
    with open(config_path) as file:
        settings: dict[str, Any] = json.load(file)
    return settings


class InstanceApplication(Protocol):
    """What ``make_app`` returns: a WSGI application that can be closed."""

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]: ...

    def close(self) -> None: ...


def make_app(config_path: str) -> InstanceApplication:
    """The WSGI application an instance serves, built from its config file.

    The part's ``environment-vars`` are set in ``os.environ`` first (and the
    time zone reread when they set ``TZ``), before the application imports
    anything that reads them.
    """
    settings = load_settings(config_path)
    set_environment(settings.get("environment") or {})
    if settings["application"] == ZOPE_APPLICATION:
        from .zope_app import make_zope_app

        return make_zope_app(settings["zope-conf"])
    db = ZODB.config.databaseFromString(settings["zodb-conf"])
    application = resolve(settings["application"])
    return TransactionMiddleware(db, application, int(settings["conflict-retries"]))
