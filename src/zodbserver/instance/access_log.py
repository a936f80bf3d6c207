"""The instance's access log: one line per request, as web servers write it.

The line is the NCSA combined log format, the common log format with the
referrer and the user agent added, as Zope's own WSGI set-up (Paste's
translogger) writes it::

    127.0.0.1 - admin [04/Dec/2026:22:41:07 +0000] "GET /Plone HTTP/1.1" 200 5123
        "-" "curl/8.5"

(one line in the file).

The user is the name of an HTTP Basic ``Authorization`` header (never its
password), or ``REMOTE_USER`` when a middleware set it; ``-`` otherwise.
The size is the number of body bytes sent.  A line is written when the
response is closed, so it is there once the client has the whole answer.
"""

from __future__ import annotations

import base64
import binascii
import logging
import logging.handlers
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: The logger the lines go to; it does not propagate to the event log.
LOGGER_NAME = "zodbserver.instance.access"

StartResponse = Callable[..., Any]
Application = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def open_access_log(path: str, max_size: int = 0, old_files: int = 1) -> logging.Logger:
    """The access logger, writing to ``path`` (rotated at ``max_size`` bytes,
    keeping ``old_files`` old files, when ``max_size`` is set)."""
    handler: logging.Handler
    if max_size:
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_size, backupCount=old_files
        )
    else:
        handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class AccessLog:
    """WSGI middleware writing a line per request to ``logger``."""

    def __init__(self, application: Application, logger: logging.Logger) -> None:
        self.application = application
        self.logger = logger

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        started = time.time()
        status: list[str] = []

        def recording_start_response(
            response_status: str, headers: Any, exc_info: Any = None
        ) -> Any:
            status[:] = [response_status]
            if exc_info is None:
                return start_response(response_status, headers)
            return start_response(response_status, headers, exc_info)

        result = self.application(environ, recording_start_response)
        return _LoggedBody(
            result, lambda sent: self._log(environ, status, started, sent)
        )

    def _log(
        self, environ: dict[str, Any], status: list[str], started: float, sent: int
    ) -> None:
        self.logger.info(
            "%s", log_line(environ, status[0] if status else "500", started, sent)
        )


class _LoggedBody:
    """The response body, counted as it is sent; logged when closed."""

    def __init__(self, body: Iterable[bytes], done: Callable[[int], None]) -> None:
        self.body = body
        self.done = done
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.done(self.sent)


def log_line(environ: dict[str, Any], status: str, started: float, sent: int) -> str:
    """One request in the combined log format."""
    uri = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if environ.get("QUERY_STRING"):
        uri += "?" + environ["QUERY_STRING"]
    request = " ".join(
        [
            environ.get("REQUEST_METHOD", "-"),
            uri or "/",
            environ.get("SERVER_PROTOCOL", "HTTP/1.0"),
        ]
    )
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(started))
    return (
        f"{environ.get('REMOTE_ADDR') or '-'} - {_user(environ)} [{stamp}] "
        f'"{_quote(request)}" {status.split(" ", 1)[0]} {sent or "-"} '
        f'"{_quote(environ.get("HTTP_REFERER") or "-")}" '
        f'"{_quote(environ.get("HTTP_USER_AGENT") or "-")}"'
    )


def _user(environ: dict[str, Any]) -> str:
    if environ.get("REMOTE_USER"):
        return _quote(str(environ["REMOTE_USER"])).replace(" ", "_")
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return "-"
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return "-"
    name = decoded.partition(":")[0]
    return _quote(name).replace(" ", "_") or "-"


def _quote(text: str) -> str:
    """Quotes and control characters escaped, so a line stays one line."""
    return "".join(
        f"\\x{ord(char):02x}"
        if char in '"\\' or ord(char) < 32 or ord(char) == 127
        else char
        for char in text
    )
