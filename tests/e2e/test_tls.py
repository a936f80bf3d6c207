"""TLS as ZEO does it: ZEO 6's and our client against our TLS server, our
client against ZEO 6's TLS server, and every kind of refused client, each
refused with a log line naming it while the server serves the others."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ZEO
import ZEO.Exceptions
from ZODB.MappingStorage import MappingStorage

import zodbserver
from support.certificates import Certificates
from support.server_processes import ServerProcess
from support.waiting import wait_until
from zodbserver.server.settings import ServerSettings
from zodbserver.server.thread import ServerThread
from zodbserver.tls import SERVER_ONLY, ServerTLS

#: How long a refused client waits before it reports failure.
REFUSED_WAIT = 2.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certificates"))


def start_server(
    certificates: Certificates, authenticate: str | None = None
) -> ServerThread:
    pem = certificates.server
    tls = ServerTLS(pem.certificate, pem.key, authenticate or certificates.ca_file)
    settings = ServerSettings(
        address=("127.0.0.1", 0), tls=tls, tls_handshake_timeout=1.0
    )
    server = ServerThread({"1": MappingStorage()}, settings)
    server.start()
    return server


@pytest.fixture
def server(certificates: Certificates) -> Iterator[ServerThread]:
    server = start_server(certificates)
    yield server
    server.stop()


def open_db(kind: str, address: Any, tls: ssl.SSLContext | None, **options: Any) -> Any:
    options.setdefault("wait_timeout", 30)
    if kind == "zeo":
        return ZEO.DB(address, ssl=tls, ssl_server_hostname="127.0.0.1", **options)
    return zodbserver.DB(address, ssl=tls, ssl_server_hostname="127.0.0.1", **options)


def refused_client(address: Any, tls: ssl.SSLContext) -> None:
    """A client the server must refuse: raises ``ClientDisconnected``.

    Our client, not ZEO's: ZEO's client, closing its uvloop loop after a
    failed TLS connection, can leave its transport open (a ResourceWarning
    and an error in its networking thread) -- its own cleanup, not the
    server's refusal, which is what these tests are about.
    """
    zodbserver.ClientStorage(
        address, ssl=tls, ssl_server_hostname="127.0.0.1", wait_timeout=REFUSED_WAIT
    ).close()


def commit_and_read(db: Any, value: str) -> None:
    with db.transaction() as connection:
        connection.root()["value"] = value
    with db.transaction() as connection:
        assert connection.root()["value"] == value


@pytest.mark.parametrize("kind", ["zeo", "ours"])
def test_a_client_with_a_trusted_certificate_commits_over_tls(
    server: ServerThread,
    certificates: Certificates,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, "zodbserver"):
        db = open_db(
            kind,
            server.address,
            certificates.client_context("web1"),
        )
        try:
            commit_and_read(db, f"over TLS from {kind}")
        finally:
            db.close()
    # The certificate's name is the connection's identity in the log.
    assert "web1 at 127.0.0.1:" in caplog.text


@pytest.mark.parametrize("kind", ["none", "expired", "foreign"])
def test_clients_without_a_valid_certificate_are_refused(
    server: ServerThread,
    certificates: Certificates,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pem = {
        "none": None,
        "expired": certificates.expired_client("old"),
        "foreign": certificates.foreign_client("stranger"),
    }[kind]
    good = open_db("ours", server.address, certificates.client_context("web1"))
    try:
        with caplog.at_level(logging.WARNING, "zodbserver"):
            with pytest.raises(zodbserver.ClientDisconnected):
                refused_client(server.address, certificates.client_context(pem))
            wait_until(
                lambda: "TLS handshake failed" in caplog.text, "the refusal's log line"
            )
        reason = {
            "none": "the client sent no certificate",
            "expired": "certificate has expired",
            "foreign": "the client's certificate was refused",
        }[kind]
        assert reason in caplog.text
        assert "127.0.0.1:" in caplog.text  # the peer is named
        commit_and_read(good, f"while refusing a client with {kind}")
    finally:
        good.close()


def test_a_plain_zeo_client_on_the_tls_port_is_timed_out(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "zodbserver"):
        with pytest.raises(ZEO.Exceptions.ClientDisconnected):
            ZEO.ClientStorage.ClientStorage(server.address, wait_timeout=REFUSED_WAIT)
        wait_until(
            lambda: "no TLS handshake within 1 s" in caplog.text,
            "the handshake timeout's log line",
        )


def test_a_stalled_handshake_is_dropped(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "zodbserver"),
        socket.create_connection(server.address) as stalled,
    ):
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, no more
        stalled.settimeout(10)
        assert stalled.recv(100) == b""  # closed by the server
        wait_until(
            lambda: "no TLS handshake within 1 s" in caplog.text,
            "the handshake timeout's log line",
        )


def test_a_tls_client_on_a_plain_port_is_told_so(
    certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        ServerThread({"1": MappingStorage()}) as address,
        caplog.at_level(logging.WARNING, "zodbserver"),
    ):
        with pytest.raises(zodbserver.ClientDisconnected):
            refused_client(address, certificates.client_context("web1"))
        wait_until(
            lambda: "a TLS client on a plain port" in caplog.text,
            "the plain server's log line",
        )


def test_server_only_mode_needs_no_client_certificate(
    certificates: Certificates,
) -> None:
    server = start_server(certificates, authenticate=SERVER_ONLY)
    try:
        db = open_db("zeo", server.address, certificates.client_context(None))
        try:
            commit_and_read(db, "encrypted, not authenticated")
        finally:
            db.close()
    finally:
        server.stop()


def test_reload_takes_new_certificates_for_new_connections(
    certificates: Certificates, tmp_path: Path
) -> None:
    """Rotation: a new CA and server certificate replace the files; after a
    reload, new clients need the new ones, and an established client
    carries on."""
    files = {
        "trusted.pem": certificates.ca_file,
        "server.pem": certificates.server.certificate,
        "server.key": certificates.server.key,
    }
    for name, source in files.items():
        shutil.copy(source, tmp_path / name)
    tls = ServerTLS(
        str(tmp_path / "server.pem"),
        str(tmp_path / "server.key"),
        str(tmp_path / "trusted.pem"),
    )
    rotated = Certificates(tmp_path / "rotated")
    server = ServerThread(
        {"1": MappingStorage()}, ServerSettings(("127.0.0.1", 0), tls=tls)
    )
    server.start()
    old = open_db("ours", server.address, certificates.client_context("web1"))
    try:
        commit_and_read(old, "before the rotation")
        new_files = {
            "trusted.pem": rotated.ca_file,
            "server.pem": rotated.server.certificate,
            "server.key": rotated.server.key,
        }
        for name, source in new_files.items():
            shutil.copy(source, tmp_path / f"{name}.new")
            os.replace(tmp_path / f"{name}.new", tmp_path / name)
        server.reload()
        web2 = rotated.client("web2")
        new = open_db(
            "ours",
            server.address,
            rotated.client_context(web2),
        )
        try:
            commit_and_read(new, "after the rotation")
        finally:
            new.close()
        with pytest.raises(zodbserver.ClientDisconnected):
            refused_client(server.address, certificates.client_context("web1"))
        commit_and_read(old, "still connected with the old certificates")
    finally:
        old.close()
        server.stop()


def test_our_client_against_zeos_tls_server(
    certificates: Certificates, tmp_path: Path
) -> None:
    pem = certificates.server
    server = ServerProcess(
        "zeo",
        tmp_path,
        zeo_lines=(
            "<ssl>",
            f"  certificate {pem.certificate}",
            f"  key {pem.key}",
            f"  authenticate {certificates.ca_file}",
            "</ssl>",
        ),
    )
    with server:
        server.start()
        db = open_db(
            "ours",
            server.address,
            certificates.client_context("web1"),
        )
        try:
            commit_and_read(db, "our client, ZEO's TLS server")
        finally:
            db.close()


def test_a_tls_server_process_completes_every_handshake(
    certificates: Certificates, tmp_path: Path
) -> None:
    """Many clients in a row, against the server as ``zeoserver`` runs it
    (the process picks its event loop: uvloop's start_tls lost handshakes)."""
    pem = certificates.server
    server = ServerProcess(
        "ours",
        tmp_path,
        zeo_lines=(
            "<ssl>",
            f"  certificate {pem.certificate}",
            f"  key {pem.key}",
            f"  authenticate {certificates.ca_file}",
            "</ssl>",
        ),
    )
    tls = certificates.client_context("web1")
    with server:
        server.start()
        for _ in range(100):
            plain = socket.create_connection(server.address, timeout=10)
            with tls.wrap_socket(plain, server_hostname="127.0.0.1") as encrypted:
                assert encrypted.recv(100)  # the server's greeting


def test_a_reload_that_cannot_read_the_files_keeps_the_certificates(
    certificates: Certificates, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certificate = tmp_path / "server.pem"
    shutil.copy(certificates.server.certificate, certificate)
    tls = ServerTLS(str(certificate), certificates.server.key, certificates.ca_file)
    server = ServerThread(
        {"1": MappingStorage()}, ServerSettings(("127.0.0.1", 0), tls=tls)
    )
    server.start()
    try:
        certificate.write_text("not a certificate\n")
        with caplog.at_level(logging.ERROR, "zodbserver"):
            server.reload()
            wait_until(
                lambda: (
                    "TLS reload failed, keeping the current certificates" in caplog.text
                ),
                "the reload's error",
            )
        db = open_db(
            "ours",
            server.address,
            certificates.client_context("web1"),
        )
        try:
            commit_and_read(db, "with the certificates loaded at start")
        finally:
            db.close()
    finally:
        server.stop()
