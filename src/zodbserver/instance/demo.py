"""The default instance application: a key/value store over HTTP.

``PUT /KEY`` stores the request body under KEY, ``GET /KEY`` returns it
(404 when absent), ``DELETE /KEY`` removes it.  Values live in an
``OOBTree`` under the root key ``zodbserver.demo``, so concurrent writes
of different keys resolve instead of conflicting.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from BTrees.OOBTree import OOBTree

ROOT_KEY = "zodbserver.demo"


def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    root = environ["zodbserver.root"]
    key = environ.get("PATH_INFO", "/").lstrip("/")
    method = environ["REQUEST_METHOD"]
    if not key:
        return _respond(start_response, "400 Bad Request", b"no key in the path\n")
    values = root.get(ROOT_KEY)
    if method == "PUT":
        if values is None:
            values = root[ROOT_KEY] = OOBTree()
        values[key] = environ["wsgi.input"].read()
        return _respond(start_response, "201 Created", b"")
    if method == "GET":
        if values is None or key not in values:
            return _respond(start_response, "404 Not Found", b"no such key\n")
        return _respond(start_response, "200 OK", values[key])
    if method == "DELETE":
        if values is None or key not in values:
            return _respond(start_response, "404 Not Found", b"no such key\n")
        del values[key]
        return _respond(start_response, "204 No Content", b"")
    return _respond(start_response, "405 Method Not Allowed", b"GET, PUT, DELETE\n")


def _respond(start_response: Any, status: str, body: bytes) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]
