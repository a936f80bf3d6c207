"""The per-request transaction middleware, on an in-memory database."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ZODB
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import ConflictError

from zodbserver.instance import TransactionMiddleware, make_app
from zodbserver.instance.demo import ROOT_KEY, application
from zodbserver.instance.wsgi import resolve


@pytest.fixture
def db() -> Iterator[ZODB.DB]:
    database = ZODB.DB(MappingStorage())
    try:
        yield database
    finally:
        database.close()


def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    data = b"".join(app(environ, start_response))
    return statuses[-1], data


def stored(db: ZODB.DB) -> dict[str, bytes]:
    with db.transaction() as connection:
        return dict(connection.root().get(ROOT_KEY, {}))


def test_success_commits(db: ZODB.DB) -> None:
    app = TransactionMiddleware(db, application)
    assert call(app, "PUT", "/a", b"one")[0] == "201 Created"
    assert stored(db) == {"a": b"one"}
    assert call(app, "GET", "/a") == ("200 OK", b"one")
    assert call(app, "GET", "/b")[0] == "404 Not Found"
    assert call(app, "DELETE", "/a")[0] == "204 No Content"
    assert stored(db) == {}


def test_error_aborts(db: ZODB.DB) -> None:
    def failing(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["zodbserver.root"]["half"] = "written"
        raise ValueError("boom")

    status, _ = call(TransactionMiddleware(db, failing), "PUT", "/x", b"body")
    assert status == "500 Internal Server Error"
    with db.transaction() as connection:
        assert "half" not in connection.root()


def test_conflict_is_retried_with_the_same_body(db: ZODB.DB) -> None:
    bodies: list[bytes] = []

    def flaky(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        bodies.append(environ["wsgi.input"].read())
        if len(bodies) < 3:
            raise ConflictError("try again")
        environ["wsgi.input"] = io.BytesIO(bodies[-1])
        return application(environ, start_response)

    status, _ = call(TransactionMiddleware(db, flaky, 2), "PUT", "/k", b"v")
    assert status == "201 Created"
    assert bodies == [b"v", b"v", b"v"]
    assert stored(db) == {"k": b"v"}


def test_conflict_retries_run_out(db: ZODB.DB) -> None:
    attempts: list[int] = []

    def always(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        attempts.append(1)
        raise ConflictError("always")

    status, _ = call(TransactionMiddleware(db, always, 1), "GET", "/k")
    assert status == "409 Conflict"
    assert len(attempts) == 2


def test_make_app_builds_the_stack_from_instance_json(tmp_path: Path) -> None:
    settings = {
        "application": "zodbserver.instance.demo:application",
        "conflict-retries": 2,
        "zodb-conf": "<zodb>\n  <mappingstorage/>\n</zodb>\n",
    }
    config = tmp_path / "instance.json"
    config.write_text(json.dumps(settings))
    app = make_app(str(config))
    try:
        assert isinstance(app, TransactionMiddleware)
        assert app.conflict_retries == 2
        assert call(app, "PUT", "/k", b"v")[0] == "201 Created"
        assert call(app, "GET", "/k") == ("200 OK", b"v")
    finally:
        storage = app.db.storage
        app.close()
    assert isinstance(storage, MappingStorage)
    assert not storage.opened()


def test_applications_resolve_by_name_or_entry_point() -> None:
    assert resolve("zodbserver.instance.demo:application") is application
    assert resolve("zodbserver.instance.demo.application") is application
    assert resolve("egg:zodbserver#demo") is application
    with pytest.raises(LookupError, match="no 'main' entry point"):
        resolve("egg:zodbserver")
    with pytest.raises(LookupError, match="no distribution 'no-such-dist'"):
        resolve("egg:no-such-dist#main")
