"""Replicas over TLS authenticate with their own certificates, like any
client, and need the ``replicate`` access right: a replica with it
follows; one the rules do not know, or that may only read, is refused and
says why.  A replica also follows a replica (a chain)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import ZODB

from support.certificates import Certificates
from support.replicas import file_storage, replication_status, same_history
from support.waiting import wait_until
from zodbserver.client import ClientStorage
from zodbserver.peer_call import call_once
from zodbserver.server.settings import ServerSettings
from zodbserver.server.thread import ServerThread
from zodbserver.tls import ServerTLS

RULES = """\
1  name:replica-a  replicate
1  name:reader     read
1  name:writer     write
"""


def tls_status(certificates: Certificates, address: Any) -> dict[str, Any]:
    context = certificates.client_context("writer")
    context.check_hostname = False
    result: dict[str, Any] = asyncio.run(
        call_once(address, "replication_status", tls=context)
    )
    return result


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path / "certificates")


def test_replicas_need_their_access_right(
    tmp_path: Path, certificates: Certificates
) -> None:
    rules = tmp_path / "access.rules"
    rules.write_text(RULES)
    pem = certificates.server
    primary = ServerThread(
        {"1": file_storage(tmp_path / "primary")},
        ServerSettings(
            ("127.0.0.1", 0),
            tls=ServerTLS(pem.certificate, pem.key, certificates.ca_file),
            access_rules=str(rules),
        ),
    )
    address = primary.start()
    replicas = {}
    try:
        for identity in ("replica-a", "reader", "stranger"):
            own = certificates.client(identity)
            replicas[identity] = ServerThread(
                {"1": file_storage(tmp_path / identity)},
                ServerSettings(
                    ("127.0.0.1", 0),
                    tls=ServerTLS(own.certificate, own.key, certificates.ca_file),
                    replicate_from=address,
                ),
            )
            replicas[identity].start()
        context = certificates.client_context("writer")
        db = ZODB.DB(
            ClientStorage(
                address, ssl=context, ssl_server_hostname="127.0.0.1", wait_timeout=30
            )
        )
        with db.transaction() as conn:
            conn.root()["value"] = "over TLS"
        db.close()

        def state(identity: str) -> dict[str, Any]:
            replica = replicas[identity]
            assert replica.address is not None
            status = tls_status(certificates, replica.address)
            primary_status: dict[str, Any] = status["storages"]["1"]["primary"]
            return primary_status

        last = tls_status(certificates, address)["storages"]["1"]["last_tid"]
        wait_until(
            lambda: state("replica-a")["last_applied"] == last,
            "replica-a to follow",
        )
        wait_until(lambda: state("reader")["state"] == "refused", "reader refused")
        assert "may not replicate" in state("reader")["error"]
        wait_until(lambda: state("stranger")["state"] == "refused", "stranger refused")
        assert "access denied" in state("stranger")["error"]
    finally:
        for replica in replicas.values():
            replica.stop()
        primary.stop()


def test_a_replica_of_a_replica(tmp_path: Path) -> None:
    primary_storage = file_storage(tmp_path / "primary")
    with ServerThread({"1": primary_storage}) as address:
        middle = ServerThread(
            {"1": file_storage(tmp_path / "middle")}, replicate_from=address
        )
        middle_address = middle.start()
        last_storage = file_storage(tmp_path / "last")
        end = ServerThread({"1": last_storage}, replicate_from=middle_address)
        end_address = end.start()
        try:
            db = ZODB.DB(ClientStorage(address, wait_timeout=30))
            for number in range(10):
                with db.transaction() as conn:
                    conn.root()[number] = number
            db.close()
            wait_until(
                lambda: (
                    replication_status(end_address)["storages"]["1"]["last_tid"]
                    == replication_status(address)["storages"]["1"]["last_tid"]
                ),
                "the end of the chain to catch up",
            )
            middle_replicas = replication_status(middle_address)["storages"]["1"][
                "replicas"
            ]
            assert len(middle_replicas) == 1
        finally:
            end.stop()
            middle.stop()
    assert same_history(primary_storage, last_storage) == []
