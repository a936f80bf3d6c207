"""Properties of the one address parser and the duration parser.

Whatever an operator or a program writes, an address parses into a
``(host, port)`` pair or a socket path, or fails with a ``ValueError`` that
quotes it -- never another exception; and what :func:`format_address`
writes parses back to the same address.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zodbserver.addresses import (
    DEFAULT_HOST,
    format_address,
    normalize_addresses,
    parse_address,
    split_host_port,
)
from zodbserver.units import parse_seconds

host_names = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]+)*", fullmatch=True
)
hosts = st.one_of(
    host_names,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
ports = st.integers(0, 65535)
socket_paths = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), max_size=30
).map(lambda text: f"/{text}".rstrip() or "/")
#: Text made of the characters the address syntax gives a meaning.
address_like = st.text(alphabet=":[]/ .0123456789abcdef-", max_size=24)
any_text = st.one_of(st.text(max_size=40), address_like)


@given(hosts, ports)
def test_a_formatted_listen_address_parses_back(host: str, port: int) -> None:
    assert parse_address(format_address((host, port))) == (host, port)


@given(hosts, st.integers(1, 65535))
def test_a_formatted_server_address_parses_back(host: str, port: int) -> None:
    text = format_address((host, port))
    assert parse_address(text, listening=False) == (host, port)
    assert normalize_addresses(text) == [(host, port)]


@given(socket_paths)
def test_a_socket_path_is_kept(path: str) -> None:
    assert format_address(path) == path
    assert parse_address(path) == path
    assert normalize_addresses(path) == [path]


@given(ports)
def test_a_bare_port_is_on_loopback(port: int) -> None:
    assert parse_address(str(port)) == (DEFAULT_HOST, port)
    assert parse_address(f":{port}") == ("", port)  # every interface
    if port:
        assert parse_address(f":{port}", listening=False) == (DEFAULT_HOST, port)


@pytest.mark.parametrize("listening", [True, False])
@given(text=any_text)
def test_only_a_value_error_quoting_the_address_escapes(
    listening: bool, text: str
) -> None:
    try:
        address = parse_address(text, listening=listening)
    except ValueError as error:
        assert repr(text) in str(error)  # noqa: PT017 - the property is the message
        return
    if isinstance(address, str):
        assert "/" in address
        return
    host, port = address
    assert (0 if listening else 1) <= port <= 65535
    assert host or listening
    assert parse_address(format_address(address), listening=listening) == address


@given(any_text)
def test_split_host_port_raises_only_value_error(text: str) -> None:
    try:
        _host, port = split_host_port(text)
    except ValueError:
        return
    assert port is None or ":" not in port


@given(any_text)
def test_a_client_reads_any_string_as_an_address(text: str) -> None:
    (address,) = normalize_addresses(text)
    assert isinstance(address, str) or isinstance(address[1], int)


@given(
    st.one_of(st.text(max_size=20), st.text(alphabet="0123456789.smhd -", max_size=8))
)
def test_seconds_are_positive_or_a_value_error(text: str) -> None:
    for allow_zero in (False, True):
        try:
            value = parse_seconds(text, allow_zero=allow_zero)
        except ValueError as error:
            assert repr(text) in str(error)  # noqa: PT017
            continue
        assert value >= 0 if allow_zero else value > 0
        assert value < float("inf")


@given(
    st.integers(1, 10**6),
    st.sampled_from([("", 1), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]),
)
def test_seconds_units(number: int, unit: tuple[str, int]) -> None:
    suffix, factor = unit
    assert parse_seconds(f"{number}{suffix}") == number * factor
    assert parse_seconds(f" {number}{suffix.upper()} ") == number * factor
