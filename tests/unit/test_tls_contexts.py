"""TLS contexts with ZEO's keys: real handshakes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from support.certificates import Certificates
from zodbserver.errors import ConfigurationError
from zodbserver.tls import SERVER_ONLY, ServerTLS, client_context, server_context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certificates"))


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bool:
    """Whether the server accepted the client (asyncio calls the handler
    only once the handshake is done)."""

    async def run() -> bool:
        accepted = asyncio.Event()

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            accepted.set()
            writer.write(await reader.read(1))
            writer.close()

        listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
        port = listener.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname="127.0.0.1"
            )
            writer.write(b"x")
            echoed = await asyncio.wait_for(reader.read(1), 5)
            writer.close()
            return echoed == b"x" and accepted.is_set()
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            return False
        finally:
            listener.close()
            await listener.wait_closed()

    return asyncio.run(run())


def mutual(certificates: Certificates) -> ssl.SSLContext:
    pem = certificates.server
    return server_context(ServerTLS(pem.certificate, pem.key, certificates.ca_file))


def test_a_client_with_a_trusted_certificate_is_accepted(
    certificates: Certificates,
) -> None:
    assert handshake(mutual(certificates), certificates.client_context("web1"))


@pytest.mark.parametrize("kind", ["none", "expired", "foreign"])
def test_a_client_without_a_valid_certificate_is_refused(
    certificates: Certificates, kind: str
) -> None:
    pem = {
        "none": None,
        "expired": certificates.expired_client("old"),
        "foreign": certificates.foreign_client("stranger"),
    }[kind]
    assert not handshake(mutual(certificates), certificates.client_context(pem))


def test_server_only_mode_encrypts_without_client_certificates(
    certificates: Certificates,
) -> None:
    pem = certificates.server
    context = server_context(ServerTLS(pem.certificate, pem.key, SERVER_ONLY))
    assert context.verify_mode is ssl.CERT_NONE
    assert handshake(context, certificates.client_context(None))


def test_a_client_refuses_a_server_from_another_ca(certificates: Certificates) -> None:
    stranger = client_context(authenticate=certificates.other_ca_file)
    assert not handshake(mutual(certificates), stranger)


def test_tls_below_1_2_is_refused(certificates: Certificates) -> None:
    assert mutual(certificates).minimum_version is ssl.TLSVersion.TLSv1_2
    assert certificates.client_context(None).minimum_version is ssl.TLSVersion.TLSv1_2


def test_errors_name_the_key_and_the_file(
    certificates: Certificates, tmp_path: Path
) -> None:
    pem = certificates.server
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(
        ConfigurationError, match=r"certificate: cannot load .*missing\.pem"
    ):
        server_context(ServerTLS(missing, pem.key, certificates.ca_file))
    with pytest.raises(
        ConfigurationError, match=r"authenticate: cannot load .*missing\.pem"
    ):
        server_context(ServerTLS(pem.certificate, pem.key, missing))
    with pytest.raises(ConfigurationError, match="password-function: cannot import"):
        server_context(
            ServerTLS(pem.certificate, pem.key, certificates.ca_file, "no.such.f")
        )
    with pytest.raises(ConfigurationError, match="need a certificate"):
        client_context(key=pem.key)


def test_password_function_unlocks_an_encrypted_key(
    certificates: Certificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(
        Path(certificates.server.key).read_bytes(), password=None
    )
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"sesame"),
        )
    )
    import support.certificates as module

    monkeypatch.setattr(module, "password", lambda: "sesame", raising=False)
    tls = ServerTLS(
        certificates.server.certificate,
        str(encrypted),
        certificates.ca_file,
        "support.certificates.password",
    )
    assert handshake(server_context(tls), certificates.client_context("web1"))
