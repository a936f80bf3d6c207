"""The demo application's ``/blobs/`` paths, on an in-memory blob storage."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import transaction
import ZODB
from ZODB.blob import Blob, BlobStorage
from ZODB.MappingStorage import MappingStorage

from zodbserver.instance import TransactionMiddleware
from zodbserver.instance.demo import (
    BLOBS_ROOT_KEY,
    CHUNK_SIZE,
    ROOT_KEY,
    application,
)

#: Several chunks and a partial one, so that chunk boundaries are crossed.
PAYLOAD = os.urandom(3 * CHUNK_SIZE + 1234)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[ZODB.DB]:
    storage = BlobStorage(str(tmp_path / "blobs"), MappingStorage())
    database = ZODB.DB(storage)
    try:
        yield database
    finally:
        database.close()


class Response:
    def __init__(self) -> None:
        self.status = ""
        self.headers: dict[str, str] = {}

    def __call__(self, status: str, headers: Any, exc_info: Any = None) -> None:
        self.status = status
        self.headers = dict(headers)


def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[Response, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    response = Response()
    data = b"".join(app(environ, response))
    return response, data


class RecordingInput(io.BytesIO):
    """A request body that remembers how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.requests: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.requests.append(size)
        return super().read(size)


def test_put_then_get_returns_the_same_bytes(db: ZODB.DB) -> None:
    app = TransactionMiddleware(db, application)
    put, _ = call(app, "PUT", "/blobs/picture", PAYLOAD)
    assert put.status == "201 Created"
    got, data = call(app, "GET", "/blobs/picture")
    assert got.status == "200 OK"
    assert got.headers["Content-Length"] == str(len(PAYLOAD))
    assert data == PAYLOAD


def test_blob_is_a_zodb_blob_apart_from_the_keys(db: ZODB.DB) -> None:
    app = TransactionMiddleware(db, application)
    call(app, "PUT", "/blobs/file", b"blob bytes")
    call(app, "PUT", "/key", b"value")
    with db.transaction() as connection:
        root = connection.root()
        blob = root[BLOBS_ROOT_KEY]["file"]
        assert isinstance(blob, Blob)
        with blob.open("r") as file:
            assert file.read() == b"blob bytes"
        assert dict(root[ROOT_KEY]) == {"key": b"value"}


def test_put_replaces_and_delete_removes(db: ZODB.DB) -> None:
    app = TransactionMiddleware(db, application)
    call(app, "PUT", "/blobs/doc", b"first")
    call(app, "PUT", "/blobs/doc", b"second")
    assert call(app, "GET", "/blobs/doc")[1] == b"second"
    assert call(app, "DELETE", "/blobs/doc")[0].status == "204 No Content"
    assert call(app, "GET", "/blobs/doc")[0].status == "404 Not Found"
    assert call(app, "DELETE", "/blobs/doc")[0].status == "404 Not Found"


def test_absent_blob_and_bad_requests(db: ZODB.DB) -> None:
    app = TransactionMiddleware(db, application)
    assert call(app, "GET", "/blobs/none")[0].status == "404 Not Found"
    assert call(app, "GET", "/blobs/")[0].status == "400 Bad Request"
    assert call(app, "POST", "/blobs/x", b"x")[0].status == "405 Method Not Allowed"
    assert call(app, "GET", "/none")[0].status == "404 Not Found"


def test_empty_blob(db: ZODB.DB) -> None:
    app = TransactionMiddleware(db, application)
    call(app, "PUT", "/blobs/empty")
    response, data = call(app, "GET", "/blobs/empty")
    assert (response.status, response.headers["Content-Length"], data) == (
        "200 OK",
        "0",
        b"",
    )


def test_body_is_read_in_chunks_up_to_its_length(db: ZODB.DB) -> None:
    body = RecordingInput(PAYLOAD + b"beyond the declared length")
    environ = {
        "REQUEST_METHOD": "PUT",
        "PATH_INFO": "/blobs/big",
        "CONTENT_LENGTH": str(len(PAYLOAD)),
        "wsgi.input": body,
    }
    with db.transaction() as connection:
        environ["zodbserver.root"] = connection.root()
        application(environ, Response())
    assert body.requests
    assert all(size is not None and 0 < size <= CHUNK_SIZE for size in body.requests)
    with (
        db.transaction() as connection,
        connection.root()[BLOBS_ROOT_KEY]["big"].open("r") as file,
    ):
        assert file.read() == PAYLOAD


def test_body_without_length_is_read_to_its_end(db: ZODB.DB) -> None:
    body = RecordingInput(PAYLOAD)
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": "/blobs/b", "wsgi.input": body}
    with db.transaction() as connection:
        environ["zodbserver.root"] = connection.root()
        application(environ, Response())
    assert all(size == CHUNK_SIZE for size in body.requests)
    assert call(TransactionMiddleware(db, application), "GET", "/blobs/b")[1] == (
        PAYLOAD
    )


def test_get_streams_chunks_from_the_committed_file(db: ZODB.DB) -> None:
    call(TransactionMiddleware(db, application), "PUT", "/blobs/s", PAYLOAD)
    manager = transaction.TransactionManager()
    connection = db.open(manager)
    try:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/blobs/s",
            "zodbserver.root": connection.root(),
        }
        result: Any = application(environ, Response())
        chunks = list(result)
        result.close()
        assert result.file.closed
        assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE
        assert len(chunks) == 4
        assert b"".join(chunks) == PAYLOAD
    finally:
        manager.abort()
        connection.close()
