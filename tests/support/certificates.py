"""Certificates made at test time with trustme: a CA, a server certificate
for 127.0.0.1 and localhost, client certificates for named identities, and
the wrong kinds (expired, from another CA)."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from zodbserver.tls import client_context


@dataclass(frozen=True)
class Pem:
    """A certificate chain and its key, as files."""

    certificate: str
    key: str


class Certificates:
    """Everything one TLS test needs, written under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="zodbserver test CA")
        self.other_ca = trustme.CA(organization_name="another CA")
        self.ca_file = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.other_ca_file = self._write("other-ca.pem", self.other_ca.cert_pem.bytes())
        self.server = self._issue(self.ca, "server", "127.0.0.1", "localhost")

    def client(self, identity: str) -> Pem:
        """A client certificate whose subject CN (and SAN) is ``identity``."""
        return self._issue(
            self.ca, f"client-{identity}", identity, common_name=identity
        )

    def expired_client(self, identity: str) -> Pem:
        return self._issue(
            self.ca,
            f"expired-{identity}",
            identity,
            common_name=identity,
            not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1),
        )

    def foreign_client(self, identity: str) -> Pem:
        """Signed by a CA the server does not trust."""
        return self._issue(
            self.other_ca, f"foreign-{identity}", identity, common_name=identity
        )

    def client_context(self, pem: Pem | str | None) -> ssl.SSLContext:
        """A client's context, trusting this CA and presenting ``pem``: a
        certificate, the name of one ``client`` issues, or None (none)."""
        if isinstance(pem, str):
            pem = self.client(pem)
        return client_context(
            certificate=pem.certificate if pem else None,
            key=pem.key if pem else None,
            authenticate=self.ca_file,
        )

    def _issue(
        self,
        ca: trustme.CA,
        name: str,
        *identities: str,
        common_name: str | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Pem:
        options = {} if not_after is None else {"not_after": not_after}
        leaf = ca.issue_cert(*identities, common_name=common_name, **options)
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return Pem(
            self._write(f"{name}.pem", chain),
            self._write(f"{name}.key", leaf.private_key_pem.bytes()),
        )

    def _write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)
