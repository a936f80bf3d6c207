"""The address forms of each caller, and where their syntaxes differ."""

from __future__ import annotations

import pytest

from zodbserver.addresses import (
    format_address,
    normalize_addresses,
    parse_address,
    split_host_port,
)
from zodbserver.errors import ConfigurationError


@pytest.mark.parametrize(
    ("text", "listening", "connecting"),
    [
        ("8100", ("127.0.0.1", 8100), ("127.0.0.1", 8100)),
        (":8100", ("", 8100), ("127.0.0.1", 8100)),
        ("[::1]:8100", ("::1", 8100), ("::1", 8100)),
        (" db:1 ", ("db", 1), ("db", 1)),
        ("/run/zodb.sock", "/run/zodb.sock", "/run/zodb.sock"),
    ],
)
def test_listening_and_connecting(text, listening, connecting) -> None:
    assert parse_address(text) == listening
    assert parse_address(text, listening=False) == connecting


def test_port_zero_is_only_for_listening() -> None:
    assert parse_address("db:0") == ("db", 0)
    with pytest.raises(ValueError, match="bad port 0"):
        parse_address("db:0", listening=False)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        ("db", "expected PORT, HOST:PORT"),
        ("[::1]", "expected PORT, HOST:PORT"),
        ("db:port", "bad port 'port'"),
        ("db:70000", "out of range"),
        ("::1:8100", "brackets"),
        ("[db]:8100", "not an IPv6 address"),
        ("[::1]x:8100", "bad IPv6 address"),
    ],
)
def test_refusals_name_the_address(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as raised:
        parse_address(text)
    assert repr(text) in str(raised.value)


def test_a_url_host_may_leave_out_the_port() -> None:
    assert split_host_port("db") == ("db", None)
    assert split_host_port("[::1]") == ("::1", None)
    assert split_host_port("db:") == ("db", "")


def test_format_address() -> None:
    assert format_address(("db", 8100)) == "db:8100"
    assert format_address(("::1", 8100, 0, 0)) == "[::1]:8100"
    assert format_address("/run/zodb.sock") == "/run/zodb.sock"


def test_client_strings_are_lenient_as_zeo() -> None:
    assert normalize_addresses("8100") == ["8100"]  # a socket path, as in ZEO
    assert normalize_addresses("::1:8100") == [("::1", 8100)]
    assert normalize_addresses("db:99999") == [("db", 99999)]
    assert normalize_addresses((8100, "db:1")) == [("127.0.0.1", 8100), ("db", 1)]
    with pytest.raises(ConfigurationError, match="server address"):
        normalize_addresses(True)
