"""The ``<clientstorage>`` section after ``%import zodbserver``, on a real server.

Each key is checked by its effect on the opened ``ClientStorage``: what it
does where that is observable (the storage a commit lands in, a cache file
on disk, a read-only refusal), otherwise the value the storage was built
with.  The shortcuts ``zodbserver.DB`` and ``zodbserver.connection`` are
checked here too.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import transaction
import ZConfig
import ZEO.tests
import ZODB
import ZODB.config
from hypothesis import given
from hypothesis import strategies as st
from ZODB import POSException
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage

import zodbserver
from zodbserver.client import ClientDisconnected, ClientStorage, zconfig
from zodbserver.client.convenience import client
from zodbserver.server.thread import ServerThread

MB = 1024 * 1024
CERTIFICATES = os.path.dirname(ZEO.tests.__file__)  # ZEO's test certificates


def _section(body: str, extra: str = "") -> str:
    return f"%import zodbserver\n<clientstorage>\n{body}\n</clientstorage>\n{extra}"


def _database(body: str) -> str:
    section = f"<clientstorage>\n{body}\n</clientstorage>"
    return f"%import zodbserver\n<zodb>\n{section}\n</zodb>"


def _server_line(address: Any) -> str:
    return f"server {address[0]}:{address[1]}"


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def storages() -> dict[str, MappingStorage]:
    return {"1": MappingStorage(), "other": MappingStorage()}


@pytest.fixture
def address(storages: dict[str, MappingStorage]) -> Iterator[Any]:
    with ServerThread(storages) as address:
        yield address


@pytest.fixture
def open_storage() -> Iterator[Callable[[str], ClientStorage]]:
    opened: list[ClientStorage] = []

    def open_storage(text: str) -> ClientStorage:
        storage = ZODB.config.storageFromString(text)
        opened.append(storage)
        return storage

    yield open_storage
    for storage in opened:
        storage.close()


def _commit(db: ZODB.DB, key: str, value: Any) -> None:
    with db.transaction() as conn:
        conn.root()[key] = value


def _read(db: ZODB.DB, key: str) -> Any:
    with db.transaction() as conn:
        return conn.root()[key]


# -- opening a database ----------------------------------------------------------


def test_database_from_config_commits_and_reads(address: Any) -> None:
    writer = ZODB.config.databaseFromString(_database(_server_line(address)))
    # server-sync: the reader's transaction waits for the writer's invalidation
    reader = ZODB.config.databaseFromString(
        _database(f"{_server_line(address)}\nserver-sync true")
    )
    try:
        assert isinstance(writer.storage, ClientStorage)
        _commit(writer, "answer", 42)
        assert _read(reader, "answer") == 42
    finally:
        writer.close()
        reader.close()


def test_defaults_are_zeos(
    address: Any, open_storage: Callable[[str], ClientStorage]
) -> None:
    storage = open_storage(_section(_server_line(address)))
    assert storage._cache.maxsize == 20 * MB
    assert storage._wait_timeout == 30
    assert not storage.isReadOnly()
    assert not storage.server_sync
    assert storage._cache_file is None
    assert storage._blobs is None
    assert storage._manager.ssl is None


def test_storage_selects_the_served_storage(
    address: Any, storages: dict[str, MappingStorage]
) -> None:
    db = ZODB.config.databaseFromString(
        _database(f"{_server_line(address)}\nstorage other")
    )
    try:
        _commit(db, "where", "other")
    finally:
        db.close()
    assert len(storages["other"]) > 0
    assert len(storages["1"]) == 0


def test_cache_size(address: Any, open_storage: Callable[[str], ClientStorage]) -> None:
    storage = open_storage(_section(f"{_server_line(address)}\ncache-size 3MB"))
    assert storage._cache.maxsize == 3 * MB


def test_name(address: Any, open_storage: Callable[[str], ClientStorage]) -> None:
    storage = open_storage(_section(f"{_server_line(address)}\nname main-db"))
    assert storage.__name__ == "main-db"
    assert storage.getName().startswith("main-db ")


def test_read_only_refuses_commits(address: Any) -> None:
    zodbserver.DB(address).close()  # a read-only DB cannot create the root
    db = ZODB.config.databaseFromString(
        _database(f"{_server_line(address)}\nread-only true")
    )
    try:
        assert db.storage.isReadOnly()
        conn = db.open()
        conn.root()["x"] = 1
        with pytest.raises(POSException.ReadOnlyError):
            transaction.commit()
        transaction.abort()
        conn.close()
    finally:
        db.close()


def test_read_only_fallback_accepts_a_read_only_server(
    open_storage: Callable[[str], ClientStorage],
) -> None:
    with ServerThread({"1": MappingStorage()}, read_only=True) as address:
        storage = open_storage(
            _section(f"{_server_line(address)}\nread-only-fallback on")
        )
        assert storage.is_connected()
        assert storage.isReadOnly()


def test_without_read_only_fallback_a_read_only_server_is_refused() -> None:
    with (
        ServerThread({"1": MappingStorage()}, read_only=True) as address,
        pytest.raises(ClientDisconnected),
    ):
        ZODB.config.storageFromString(
            _section(f"{_server_line(address)}\nwait-timeout 0.5")
        )


def test_client_and_var_keep_the_cache_between_runs(
    address: Any, tmp_path: Any
) -> None:
    text = _database(f"{_server_line(address)}\nclient app\nvar {tmp_path}")
    db = ZODB.config.databaseFromString(text)
    _commit(db, "kept", "yes")
    db.close()
    assert (tmp_path / "app-1.zec").exists()

    storage = ZODB.config.storageFromString(
        _section(f"{_server_line(address)}\nclient app\nvar {tmp_path}")
    )
    try:
        assert len(storage._cache) > 0  # loaded from the file, before any read
    finally:
        storage.close()


def test_cache_path(address: Any, tmp_path: Any) -> None:
    path = tmp_path / "caches" / "my.zec"
    path.parent.mkdir()
    db = ZODB.config.databaseFromString(
        _database(f"{_server_line(address)}\ncache-path {path}")
    )
    _commit(db, "x", 1)
    db.close()
    assert path.exists()


def test_wait_off_opens_without_a_server(
    open_storage: Callable[[str], ClientStorage],
) -> None:
    storage = open_storage(
        _section(f"server 127.0.0.1:{_unused_port()}\nwait off\nwait-timeout 2m")
    )
    assert not storage.is_connected()
    assert storage._wait_timeout == 120


def test_wait_timeout_bounds_the_wait_for_a_server() -> None:
    started = time.monotonic()
    with pytest.raises(ClientDisconnected):
        ZODB.config.storageFromString(
            _section(f"server 127.0.0.1:{_unused_port()}\nwait-timeout 0.3")
        )
    assert time.monotonic() - started < 10  # the default would be 30 s


def test_several_servers_first_live_one_wins(
    address: Any, open_storage: Callable[[str], ClientStorage]
) -> None:
    dead = ("127.0.0.1", _unused_port())
    storage = open_storage(
        _section(f"{_server_line(dead)}\n{_server_line(address)}\nwait-timeout 10")
    )
    assert storage.is_connected()
    assert storage._addresses == [dead, tuple(address)]


def test_bare_port_means_localhost(
    address: Any, open_storage: Callable[[str], ClientStorage]
) -> None:
    storage = open_storage(_section(f"server {address[1]}"))
    assert storage.is_connected()
    assert storage._addresses == [("127.0.0.1", address[1])]


def test_unix_socket_path(
    tmp_path: Any, open_storage: Callable[[str], ClientStorage]
) -> None:
    path = str(tmp_path / "zodb.sock")
    with ServerThread({"1": MappingStorage()}, address=path):
        storage = open_storage(_section(f"server {path}"))
        assert storage.is_connected()
        assert storage._addresses == [path]


def test_connection_tuning_keys(
    address: Any, open_storage: Callable[[str], ClientStorage]
) -> None:
    storage = open_storage(
        _section(
            f"{_server_line(address)}\nserver-sync true\nclient-label web-7\n"
            "min-disconnect-poll 2\nmax-disconnect-poll 1m\nreadahead 0"
        )
    )
    assert storage.server_sync
    assert not storage._manager.readahead.enabled
    assert storage._manager.client_label == "web-7"
    assert storage._manager.min_poll == 2
    assert storage._manager.max_poll == 60


# -- blobs -----------------------------------------------------------------------


def test_blob_dir_round_trips_a_blob(tmp_path: Any) -> None:
    served = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "served"))
    with ServerThread({"1": served}) as address:
        writer = ZODB.config.databaseFromString(
            _database(
                f"{_server_line(address)}\nblob-dir {tmp_path / 'writer'}\n"
                "blob-cache-size 10MB\nblob-cache-size-check 20"
            )
        )
        reader = ZODB.config.databaseFromString(
            _database(
                f"{_server_line(address)}\nblob-dir {tmp_path / 'reader'}\n"
                "server-sync true"
            )
        )
        try:
            blobs = writer.storage._blobs
            assert not blobs.shared
            assert blobs.cache_size == 10 * MB
            assert blobs._check_every == 2 * MB
            blob = Blob(b"blob bytes")
            _commit(writer, "blob", blob)
            with reader.transaction() as conn, conn.root()["blob"].open() as file:
                assert file.read() == b"blob bytes"
        finally:
            writer.close()
            reader.close()


def test_shared_blob_dir_writes_into_the_servers_directory(tmp_path: Any) -> None:
    shared = tmp_path / "shared"
    served = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(shared))
    with ServerThread({"1": served}) as address:
        db = ZODB.config.databaseFromString(
            _database(
                f"{_server_line(address)}\nblob-dir {shared}\nshared-blob-dir true"
            )
        )
        try:
            assert db.storage._blobs.shared
            _commit(db, "blob", Blob(b"shared bytes"))
            with db.transaction() as conn:
                path = conn.root()["blob"].committed()
            assert path.startswith(str(shared))
            with open(path, "rb") as file:
                assert file.read() == b"shared bytes"
        finally:
            db.close()


# -- TLS -------------------------------------------------------------------------


def _certificate(name: str) -> str:
    return os.path.join(CERTIFICATES, name)


def _ssl_section(port: int, ssl_body: str) -> str:
    return _section(
        f"server 127.0.0.1:{port}\nwait off\n<ssl>\n{ssl_body}\n</ssl>",
    )


def test_ssl_section_dials_with_tls_and_presents_the_certificate(
    open_storage: Callable[[str], ClientStorage],
) -> None:
    context = ssl.create_default_context(
        ssl.Purpose.CLIENT_AUTH, cafile=_certificate("client.pem")
    )
    context.load_cert_chain(_certificate("server.pem"), _certificate("server_key.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    peer: list[Any] = []
    handshaken = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept_one() -> None:
            sock, _ = listener.accept()
            try:
                with context.wrap_socket(sock, server_side=True) as tls:
                    peer.append(tls.getpeercert())
            except (OSError, ssl.SSLError) as error:
                peer.append(error)
            finally:
                handshaken.set()

        thread = threading.Thread(target=accept_one, daemon=True)
        thread.start()
        storage = open_storage(
            _ssl_section(
                port,
                f"certificate {_certificate('client.pem')}\n"
                f"key {_certificate('client_key.pem')}\n"
                f"authenticate {_certificate('server.pem')}\n"
                "server-hostname zodb.org",
            )
        )
        assert handshaken.wait(30)
        storage.close()
        thread.join(30)
    assert storage._manager.ssl is not None
    assert storage._manager.ssl_server_hostname == "zodb.org"
    assert isinstance(peer[0], dict), peer  # a verified client certificate


def test_ssl_check_hostname_off(
    open_storage: Callable[[str], ClientStorage],
) -> None:
    storage = open_storage(
        _ssl_section(
            _unused_port(),
            f"authenticate {_certificate('server.pem')}\ncheck-hostname false",
        )
    )
    context = storage._manager.ssl
    assert context is not None
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert storage._manager.ssl_server_hostname is None


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (f"key {_certificate('client_key.pem')}", "certificate"),
        (
            f"certificate {_certificate('client.pem')}\n"
            f"key {_certificate('client_key.pem')}\n"
            "password-function no.such.function",
            "password-function",
        ),
        ("authenticate /nonexistent/ca.pem", "authenticate"),
        ("check-hostname perhaps", "check-hostname"),
    ],
)
def test_ssl_bad_settings_name_the_key(body: str, key: str) -> None:
    with pytest.raises(ZConfig.ConfigurationError, match=key):
        ZODB.config.storageFromString(_ssl_section(_unused_port(), body))


def test_ssl_bad_certificate_names_the_key(tmp_path: Any) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ZConfig.ConfigurationError, match="certificate"):
        ZODB.config.storageFromString(
            _ssl_section(_unused_port(), f"certificate {bogus}")
        )


# -- bad configurations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("cache-size lots", "cache-size"),
        ("cache-size -5MB", "cache-size"),
        ("blob-cache-size huge", "blob-cache-size"),
        ("blob-cache-size-check 500", "blob-cache-size-check"),
        ("read-only maybe", "read-only"),
        ("read-only-fallback sometimes", "read-only-fallback"),
        ("shared-blob-dir perhaps", "shared-blob-dir"),
        ("server-sync often", "server-sync"),
        ("wait forever", "wait"),
        ("readahead -3", "readahead"),
        ("wait-timeout soon", "wait-timeout"),
        ("wait-timeout -1", "wait-timeout"),
        ("min-disconnect-poll quick", "min-disconnect-poll"),
        ("max-disconnect-poll slow", "max-disconnect-poll"),
        ("server nowhere", "server"),
        ("server host:port", "server"),
        ("cache-sise 20MB", "cache-sise"),
    ],
)
def test_bad_value_names_the_key(line: str, key: str) -> None:
    with pytest.raises(ZConfig.ConfigurationError) as caught:
        ZODB.config.storageFromString(_section(f"server 127.0.0.1:1\n{line}"))
    assert key in str(caught.value)


def test_server_is_required() -> None:
    with pytest.raises(ZConfig.ConfigurationError, match="server"):
        ZODB.config.storageFromString(_section("storage 1"))


# -- the shortcuts -------------------------------------------------------------------


def test_db_shortcut(address: Any) -> None:
    db = zodbserver.DB(address, cache_size=2 * MB)
    storage = db.storage
    try:
        assert storage._cache.maxsize == 2 * MB
        _commit(db, "via", "DB")
        assert _read(db, "via") == "DB"
    finally:
        db.close()
    assert not storage.is_connected()  # closing the DB closed the storage


def test_connection_shortcut_closes_its_db(address: Any) -> None:
    conn = zodbserver.connection(address)
    storage = conn.db().storage
    conn.root()["via"] = "connection"
    conn.transaction_manager.commit()
    conn.close()
    assert not storage.is_connected()
    db = zodbserver.DB(address)
    try:
        assert _read(db, "via") == "connection"
    finally:
        db.close()


def test_client_shortcut(address: Any) -> None:
    storage = client(address, storage="other")
    try:
        assert isinstance(storage, ClientStorage)
        assert storage.is_connected()
        assert storage._storage == "other"
    finally:
        storage.close()


# -- the value parsers -----------------------------------------------------------


@pytest.mark.parametrize(
    "parse",
    [
        zconfig.parse_boolean,
        zconfig.parse_byte_size,
        zconfig.parse_percentage,
        zconfig.parse_timeout,
        zconfig.parse_server_address,
    ],
)
@given(text=st.text())
def test_parsers_raise_only_value_error(parse: Callable[[str], Any], text: str) -> None:
    message = None
    try:
        parse(text)
    except ValueError as error:
        message = str(error)
    if message is not None:
        assert repr(text) in message  # the operator sees what was wrong


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["", "KB", "MB"]))
def test_byte_size_units(number: int, unit: str) -> None:
    factor = {"": 1, "KB": 1024, "MB": MB}[unit]
    assert zconfig.parse_byte_size(f"{number}{unit}") == number * factor
    assert zconfig.parse_byte_size(f" {number} {unit.lower()} ") == number * factor
