"""The ``zodbserver://`` URI: the zodburi entry point, parsing, a real server."""

from __future__ import annotations

import functools
import socket
import urllib.parse
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
import ZODB
import zodburi
from hypothesis import given
from hypothesis import strategies as st
from ZODB.MappingStorage import MappingStorage

from zodbserver.client import ClientStorage
from zodbserver.client.uri import resolve
from zodbserver.errors import ConfigurationError
from zodbserver.server.thread import ServerThread

MB = 1024 * 1024


@pytest.fixture
def storages() -> dict[str, MappingStorage]:
    return {"1": MappingStorage(), "other": MappingStorage()}


@pytest.fixture
def address(storages: dict[str, MappingStorage]) -> Iterator[Any]:
    with ServerThread(storages) as address:
        yield address


def _options(uri: str) -> tuple[list[Any], dict[str, Any]]:
    """The ClientStorage arguments a URI stands for, without dialing."""
    factory, _ = resolve(uri)
    assert isinstance(factory, functools.partial)
    assert factory.func is ClientStorage
    (addresses,) = factory.args
    return addresses, dict(factory.keywords)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- registration ----------------------------------------------------------------


def test_entry_point_is_registered() -> None:
    (entry_point,) = [
        ep for ep in entry_points(group="zodburi.resolvers") if ep.name == "zodbserver"
    ]
    assert entry_point.load() is resolve


def test_zodburi_opens_a_database(
    address: Any, storages: dict[str, MappingStorage]
) -> None:
    host, port = address
    uri = (
        f"zodbserver://{host}:{port}?storage=other&cache_size=3MB"
        "&database_name=main&connection_cache_size=1234"
    )
    factory, dbkw = zodburi.resolve_uri(uri)
    assert dbkw["database_name"] == "main"
    assert dbkw["cache_size"] == 1234
    db = ZODB.DB(factory(), **dbkw)
    try:
        assert isinstance(db.storage, ClientStorage)
        assert db.storage._cache.maxsize == 3 * MB
        with db.transaction() as conn:
            conn.root()["via"] = "uri"
        with db.transaction() as conn:
            assert conn.root()["via"] == "uri"
    finally:
        db.close()
    assert len(storages["other"]) > 0
    assert len(storages["1"]) == 0


def test_zodburi_rejects_our_unknown_parameters_with_our_error() -> None:
    with pytest.raises(ConfigurationError, match="colour"):
        zodburi.resolve_uri("zodbserver://localhost:8100?colour=blue")


def test_unix_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "zodb.sock")
    with ServerThread({"1": MappingStorage()}, address=path):
        factory, _ = resolve(f"zodbserver://{path}?wait_timeout=10")
        storage = factory()
        try:
            assert storage.is_connected()
            assert storage._addresses == [path]
        finally:
            storage.close()


def test_first_live_server_of_several(address: Any) -> None:
    host, port = address
    factory, _ = resolve(f"zodbserver://{host}:{_unused_port()},{host}:{port}")
    storage = factory()
    try:
        assert storage.is_connected()
    finally:
        storage.close()


def test_resolving_dials_nothing() -> None:
    factory, dbkw = resolve(f"zodbserver://127.0.0.1:{_unused_port()}?wait=false")
    assert dbkw == {}
    storage = factory()  # wait=false: opens without a server
    try:
        assert not storage.is_connected()
    finally:
        storage.close()


# -- the address ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "addresses"),
    [
        ("zodbserver://db.example:9000", [("db.example", 9000)]),
        ("zodbserver://db.example:9000/", [("db.example", 9000)]),
        ("zodbserver://db.example", [("db.example", 8100)]),
        ("zodbserver://:9000", [("127.0.0.1", 9000)]),
        ("zodbserver://[::1]:9000", [("::1", 9000)]),
        ("zodbserver://[::1]", [("::1", 8100)]),
        ("ZODBSERVER://a:1,b:2", [("a", 1), ("b", 2)]),
        ("zodbserver:///var/run/zodb.sock", ["/var/run/zodb.sock"]),
        ("zodbserver:///var/run/my%20zodb.sock?storage=1", ["/var/run/my zodb.sock"]),
    ],
)
def test_addresses(uri: str, addresses: list[Any]) -> None:
    assert _options(uri)[0] == addresses


@pytest.mark.parametrize(
    ("uri", "complaint"),
    [
        ("zeo://localhost:8100", "not a zodbserver"),
        ("zodbserver:localhost:8100", "not a zodbserver"),
        ("zodbserver://", "no server address"),
        ("zodbserver:///", "no server address"),
        ("zodbserver://host:port", "bad port"),
        ("zodbserver://host:0", "bad port"),
        ("zodbserver://host:70000", "bad port"),
        ("zodbserver://::1:8100", "brackets"),
        ("zodbserver://[::1:8100", "IPv6"),
        ("zodbserver://host:8100/var/sock", "path after the server address"),
        ("zodbserver://user@host:8100", "user name"),
        ("zodbserver://host:8100#main", "fragment"),
    ],
)
def test_bad_addresses(uri: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        resolve(uri)


# -- the parameters ------------------------------------------------------------------


def test_every_parameter() -> None:
    _, options = _options(
        "zodbserver://h:1?storage=main&name=web&client=app&var=/var/cache"
        "&cache_path=/tmp/c.zec&blob_dir=/tmp/blobs&client_label=w1"
        "&cache_size=20MB&blob_cache_size=500KB&blob_cache_size_check=25"
        "&read_only=1&read_only_fallback=off&shared_blob_dir=yes&server_sync=true"
        "&wait=no&wait_timeout=1m&min_disconnect_poll=2&max_disconnect_poll=90s"
        "&readahead=64"
    )
    assert options == {
        "storage": "main",
        "name": "web",
        "client": "app",
        "var": "/var/cache",
        "cache": "/tmp/c.zec",
        "blob_dir": "/tmp/blobs",
        "client_label": "w1",
        "cache_size": 20 * MB,
        "blob_cache_size": 500 * 1024,
        "blob_cache_size_check": 25,
        "read_only": True,
        "read_only_fallback": False,
        "shared_blob_dir": True,
        "server_sync": True,
        "wait": False,
        "wait_timeout": 60.0,
        "min_disconnect_poll": 2.0,
        "max_disconnect_poll": 90.0,
        "readahead": 64,
    }


def test_database_parameters_pass_through() -> None:
    factory, dbkw = resolve(
        "zodbserver://h:1?database_name=main&connection_pool_size=3&storage=x"
    )
    assert dbkw == {"database_name": "main", "connection_pool_size": "3"}
    assert isinstance(factory, functools.partial)
    assert factory.keywords == {"storage": "x"}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("cache_size=lots", "cache_size"),
        ("cache_size=", "cache_size"),
        ("blob_cache_size=-1", "blob_cache_size"),
        ("blob_cache_size_check=0", "blob_cache_size_check"),
        ("read_only=maybe", "read_only"),
        ("read_only_fallback=2", "read_only_fallback"),
        ("shared_blob_dir=", "shared_blob_dir"),
        ("server_sync=often", "server_sync"),
        ("wait=forever", "wait"),
        ("wait_timeout=soon", "wait_timeout"),
        ("wait_timeout=-3", "wait_timeout"),
        ("min_disconnect_poll=inf", "min_disconnect_poll"),
        ("max_disconnect_poll=x", "max_disconnect_poll"),
        ("readahead=-1", "readahead"),
        ("readahead=many", "readahead"),
        ("colour=blue", "colour"),
        ("cache-size=20MB", "cache-size"),
        ("storage=a&storage=b", "storage"),
    ],
)
def test_bad_parameter_is_named(query: str, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve(f"zodbserver://h:1?{query}")
    assert parameter in str(caught.value)


def test_malformed_query() -> None:
    with pytest.raises(ConfigurationError, match="query"):
        resolve("zodbserver://h:1?storage")


@given(st.text())
def test_only_configuration_errors_escape(rest: str) -> None:
    try:
        factory, dbkw = resolve("zodbserver://" + rest)
    except ConfigurationError:
        return
    assert isinstance(factory, functools.partial)
    assert isinstance(dbkw, dict)


def test_tls_parameters(tmp_path: Any) -> None:
    from support.certificates import Certificates
    from zodbserver.server.settings import ServerSettings
    from zodbserver.server.thread import ServerThread
    from zodbserver.tls import ServerTLS

    certificates = Certificates(tmp_path)
    pem = certificates.server
    settings = ServerSettings(
        ("127.0.0.1", 0), tls=ServerTLS(pem.certificate, pem.key, certificates.ca_file)
    )
    client = certificates.client("pyramid")
    with ServerThread({"1": MappingStorage()}, settings) as (host, port):
        query = urllib.parse.urlencode(
            {
                "ssl_certificate": client.certificate,
                "ssl_key": client.key,
                "ssl_authenticate": certificates.ca_file,
                "ssl_server_hostname": "localhost",
                "wait_timeout": "10",
            }
        )
        factory, dbkw = zodburi.resolve_uri(f"zodbserver://{host}:{port}?{query}")
        db = ZODB.DB(factory(), **dbkw)
        try:
            with db.transaction() as conn:
                conn.root()["via"] = "a TLS uri"
        finally:
            db.close()


def test_a_missing_tls_file_is_named() -> None:
    with pytest.raises(
        ConfigurationError, match=r"certificate: cannot load .*nowhere\.pem"
    ):
        resolve("zodbserver://localhost?ssl_certificate=/nowhere.pem")
