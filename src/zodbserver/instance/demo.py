"""The default instance application: keys and blobs over HTTP.

``PUT /KEY`` stores the request body under KEY, ``GET /KEY`` returns it
(404 when absent), ``DELETE /KEY`` removes it.  Values live in an
``OOBTree`` under the root key ``zodbserver.demo``, so concurrent writes
of different keys resolve instead of conflicting.

Paths under ``/blobs/`` hold ``ZODB.blob.Blob`` objects instead, in an
``OOBTree`` under the root key ``zodbserver.demo.blobs``: ``PUT
/blobs/NAME`` copies the request body into a new blob chunk by chunk,
``GET /blobs/NAME`` streams the committed blob back from a file opened in
the request's connection, ``DELETE /blobs/NAME`` removes it.  These
exercise the storage's blob path end to end: the blob travels to the
server on commit and, on another instance, into its blob cache (or is read
from the shared blob directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import IO, Any

from BTrees.OOBTree import OOBTree
from ZODB.blob import Blob

ROOT_KEY = "zodbserver.demo"
BLOBS_ROOT_KEY = "zodbserver.demo.blobs"
BLOBS_PREFIX = "blobs/"
#: How much of a request body or a blob file is held in memory at once.
CHUNK_SIZE = 64 * 1024


def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    root = environ["zodbserver.root"]
    key = environ.get("PATH_INFO", "/").lstrip("/")
    method = environ["REQUEST_METHOD"]
    if key.startswith(BLOBS_PREFIX):
        return _blob(environ, start_response, root, key.removeprefix(BLOBS_PREFIX))
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
    return _not_allowed(start_response)


def _blob(
    environ: dict[str, Any], start_response: Any, root: Any, name: str
) -> Iterable[bytes]:
    method = environ["REQUEST_METHOD"]
    if not name:
        return _respond(start_response, "400 Bad Request", b"no blob name\n")
    blobs = root.get(BLOBS_ROOT_KEY)
    if method == "PUT":
        if blobs is None:
            blobs = root[BLOBS_ROOT_KEY] = OOBTree()
        blob = Blob()
        with blob.open("w") as file:
            _copy_body(environ, file)
        blobs[name] = blob
        return _respond(start_response, "201 Created", b"")
    if method not in ("GET", "DELETE"):
        return _not_allowed(start_response)
    if blobs is None or name not in blobs:
        return _respond(start_response, "404 Not Found", b"no such blob\n")
    if method == "DELETE":
        del blobs[name]
        return _respond(start_response, "204 No Content", b"")
    return BlobResponse(blobs[name].open("r"), start_response)


class BlobResponse:
    """A blob file sent in chunks; the WSGI server's ``close()`` closes it."""

    def __init__(self, file: IO[bytes], start_response: Any) -> None:
        self.file = file
        size = os.fstat(file.fileno()).st_size
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(size)),
            ],
        )

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.file.read(CHUNK_SIZE):
            yield chunk

    def close(self) -> None:
        self.file.close()


def _copy_body(environ: dict[str, Any], file: IO[bytes]) -> None:
    """Copy the request body into FILE without holding all of it.

    Reads stop at ``CONTENT_LENGTH`` when the request gives one: a WSGI
    server need not mark the end of the body otherwise.
    """
    body = environ["wsgi.input"]
    try:
        remaining: int | None = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        remaining = None
    while remaining is None or remaining > 0:
        wanted = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
        chunk = body.read(wanted)
        if not chunk:
            break
        file.write(chunk)
        if remaining is not None:
            remaining -= len(chunk)


def _not_allowed(start_response: Any) -> list[bytes]:
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
