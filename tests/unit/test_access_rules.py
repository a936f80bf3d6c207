"""The access rules file: parsing, errors that name file and line, and the
first-match decision."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zodbserver.errors import ConfigurationError
from zodbserver.server.access import Access, Credentials, credentials, parse_rules

DER = b"a certificate's bytes"
FINGERPRINT = hashlib.sha256(DER).hexdigest()
#: As ``openssl x509 -fingerprint -sha256`` prints it: pairs and colons.
COLONS = ":".join(FINGERPRINT[i : i + 2] for i in range(0, 64, 2))

RULES = f"""
# storage  client                     access
main       name:web*                  write
main       name:reports               read
*          fingerprint:{COLONS}  admin
other      network:10.1.0.0/16        read
*          network:::1/128            write
*          name:nobody                none
"""


def client(
    *names: str, address: str = "192.0.2.1", der: bytes | None = None
) -> Credentials:
    return Credentials(
        address, names, hashlib.sha256(der).hexdigest() if der is not None else None
    )


@pytest.mark.parametrize(
    ("storage", "who", "expected"),
    [
        ("main", client("web3"), Access.WRITE),
        ("main", client("reports"), Access.READ),
        ("other", client("web3"), Access.NONE),  # no rule for web* there
        ("other", client("anyone", der=DER), Access.ADMIN),
        ("other", client(address="10.1.200.7"), Access.READ),
        ("other", client(address="10.2.0.1"), Access.NONE),
        ("main", client(address="::1"), Access.WRITE),
        ("main", client("nobody"), Access.NONE),
        ("main", client("reports", "web1"), Access.WRITE),  # any name, first rule
        ("main", Credentials(None, ()), Access.NONE),  # a Unix socket, no cert
    ],
)
def test_the_first_matching_rule_decides(
    storage: str, who: Credentials, expected: Access
) -> None:
    assert parse_rules(RULES, "access.rules").decide(storage, who).access is expected


def test_the_decision_names_its_rule() -> None:
    decision = parse_rules(RULES, "access.rules").decide("main", client("reports"))
    assert decision.rule is not None
    assert decision.rule.origin == "access.rules:4"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("main web write", "not name:PATTERN"),
        ("main name:web", "expected 'STORAGE CLIENT ACCESS', got 2 fields"),
        ("main name:web write extra", "got 4 fields"),
        ("main name:web everything", "unknown access 'everything'"),
        ("main host:web write", "unknown client kind 'host'"),
        ("main fingerprint:abc write", "not a SHA-256"),
        ("main network:10.1.0.0/33 write", "network '10.1.0.0/33'"),
    ],
)
def test_errors_name_the_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^rules\.txt:3: ") as raised:
        parse_rules(f"# comment\n\n{line}\n", "rules.txt")
    assert message in str(raised.value)


@given(st.text())
def test_any_text_parses_or_fails_with_a_configuration_error(text: str) -> None:
    try:
        rules = parse_rules(text, "fuzz")
    except ConfigurationError as error:
        assert str(error).startswith("fuzz:")  # noqa: PT017 - the property is the message
        return
    rules.decide("1", client("web1"))


def test_credentials_from_a_certificate() -> None:
    certificate = {
        "subject": ((("organizationName", "Example"),), (("commonName", "web1"),)),
        "subjectAltName": (("DNS", "web1.example"), ("DNS", "web1")),
    }
    found = credentials(("10.0.0.5", 41000), certificate, DER)
    assert found.names == ("web1", "web1.example")
    assert found.address == "10.0.0.5"
    assert found.fingerprint == FINGERPRINT
    assert credentials("/run/zeo.sock", None, None) == Credentials(None, (), None)


def test_zeo_conf_names_a_bad_rule(tmp_path) -> None:
    from zodbserver.config import load_config

    rules = tmp_path / "access.rules"
    rules.write_text("main name:web* write\nmain name:x sometimes\n")
    conf = tmp_path / "zeo.conf"
    conf.write_text(f"<zeo>\n  access-rules {rules}\n</zeo>\n<mappingstorage 1/>\n")
    with pytest.raises(ConfigurationError, match=r"access\.rules:2: unknown access"):
        load_config(conf)
    rules.write_text("main name:web* write\n")
    assert load_config(conf).settings.access_rules == str(rules)
