"""Access rules per client identity, over TLS, with both clients."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import transaction
import ZEO.ClientStorage
import ZEO.Exceptions
import ZODB
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import ReadOnlyError, StorageError

import zodbserver
from support.certificates import Certificates
from support.waiting import wait_until
from zodbserver.server.settings import ServerSettings
from zodbserver.server.thread import ServerThread
from zodbserver.tls import ServerTLS

RULES = """\
# storage  client          access
main       name:web*       write
main       name:reports    read
other      name:reports    write
*          name:admin      admin
"""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "access.rules"
    path.write_text(RULES)
    return path


@pytest.fixture
def server(certificates: Certificates, rules: Path) -> Iterator[ServerThread]:
    pem = certificates.server
    settings = ServerSettings(
        ("127.0.0.1", 0),
        tls=ServerTLS(pem.certificate, pem.key, certificates.ca_file),
        access_rules=str(rules),
    )
    server = ServerThread(
        {"main": MappingStorage(), "other": MappingStorage()}, settings
    )
    server.start()
    yield server
    server.stop()


def open_storage(
    kind: str,
    server: ServerThread,
    certificates: Certificates,
    identity: str,
    storage: str = "main",
    **options: Any,
) -> Any:
    pem = certificates.client(identity)
    context = certificates.client_context(pem)
    options.setdefault("wait_timeout", 30)
    factory = (
        ZEO.ClientStorage.ClientStorage if kind == "zeo" else zodbserver.ClientStorage
    )
    return factory(
        server.address,
        storage=storage,
        ssl=context,
        ssl_server_hostname="127.0.0.1",
        **options,
    )


def commit(storage: Any, value: str) -> None:
    database = ZODB.DB(storage)
    try:
        with database.transaction() as connection:
            connection.root()["value"] = value
    finally:
        database.close()


@pytest.mark.parametrize("kind", ["zeo", "ours"])
def test_write_read_and_none(
    server: ServerThread, certificates: Certificates, kind: str
) -> None:
    commit(open_storage(kind, server, certificates, "web1"), "written by web1")
    reader = open_storage(kind, server, certificates, "reports")
    database = ZODB.DB(reader)
    try:
        connection = database.open()
        assert connection.root()["value"] == "written by web1"
        connection.root()["value"] = "changed by reports"
        with pytest.raises(ReadOnlyError):
            transaction.commit()
        transaction.abort()
        connection.close()
    finally:
        database.close()


def test_an_unknown_identity_is_refused_naming_it_and_the_storage(
    server: ServerThread, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "zodbserver"),
        pytest.raises(zodbserver.ClientDisconnected) as raised,
    ):
        open_storage("ours", server, certificates, "stranger", wait_timeout=2)
    message = str(raised.value)
    assert "access denied: client 'stranger'" in message
    assert "'main'" in message
    assert "stranger at 127.0.0.1:" in caplog.text
    assert "refused: no access to storage 'main'" in caplog.text
    # ZEO's client is refused the same way.
    with pytest.raises(ZEO.Exceptions.ClientDisconnected):
        open_storage("zeo", server, certificates, "stranger", wait_timeout=2)


def test_two_storages_with_different_rules(
    server: ServerThread, certificates: Certificates
) -> None:
    commit(open_storage("ours", server, certificates, "reports", "other"), "report")
    with pytest.raises(zodbserver.ClientDisconnected, match="'other'"):
        open_storage("ours", server, certificates, "web1", "other", wait_timeout=2)


def test_only_admin_packs(server: ServerThread, certificates: Certificates) -> None:
    writer = open_storage("ours", server, certificates, "web1")
    try:
        with pytest.raises(StorageError, match="may not pack storage 'main'"):
            writer.pack()
    finally:
        writer.close()
    admin = open_storage("ours", server, certificates, "admin")
    try:
        admin.pack()
    finally:
        admin.close()


def test_reloaded_rules_apply_to_connected_clients(
    server: ServerThread, certificates: Certificates, rules: Path
) -> None:
    web = open_storage("ours", server, certificates, "web1", wait_timeout=2)
    reports = open_storage("ours", server, certificates, "reports")
    try:
        rules.write_text(RULES.replace("main       name:web*       write\n", ""))
        server.reload()
        # web1 has no access any more: dropped, and refused when it redials.
        assert web.wait_until_disconnected(10)
        with pytest.raises(zodbserver.ClientDisconnected, match="access denied"):
            web.ping()
        reports.ping()  # still connected, still served
        assert reports.is_connected()
    finally:
        web.close()
        reports.close()


def test_server_status_names_the_client_and_admins_see_every_client(
    server: ServerThread, certificates: Certificates
) -> None:
    web = open_storage("ours", server, certificates, "web1")
    admin = open_storage("zeo", server, certificates, "admin")
    try:
        status = web.server_status()
        assert status["identity"] == "web1"
        assert status["access"] == "write"
        assert "clients" not in status
        assert status["connections"] == 2  # ZEO's keys stay
        clients = admin.server_status()["clients"]
        assert any(entry.startswith("web1 at 127.0.0.1:") for entry in clients)
        assert any(
            "admin at 127.0.0.1:" in entry and "(admin)" in entry for entry in clients
        )
    finally:
        web.close()
        admin.close()


def test_a_bad_rules_file_on_reload_keeps_the_old_rules(
    server: ServerThread,
    certificates: Certificates,
    rules: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    web = open_storage("ours", server, certificates, "web1")
    try:
        rules.write_text("main name:web* everything\n")
        with caplog.at_level(logging.ERROR, "zodbserver"):
            server.reload()
            wait_until(
                lambda: "access rules not reloaded" in caplog.text, "the reload's error"
            )
        assert "access.rules:1: unknown access 'everything'" in caplog.text
        commit(web, "still allowed")  # the old rules stand; web1 stays
    finally:
        web.close()
