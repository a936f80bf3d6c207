"""Properties of the zeo.conf parser: whatever an operator writes, the
result is a configuration or a ConfigurationError naming the problem --
never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zodbserver.config import load_config, parse_address, seconds
from zodbserver.errors import ConfigurationError

KEYS = [
    "address",
    "read-only",
    "invalidation-queue-size",
    "invalidation-age",
    "transaction-timeout",
    "client-conflict-resolution",
    "msgpack",
    "pid-filename",
    "max-frame-size",
    "no-such-key",
]

line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=30,
)


@given(st.text(max_size=40))
def test_parse_address_returns_an_address_or_value_error(text: str) -> None:
    try:
        address = parse_address(text)
    except ValueError as error:
        message = str(error)
        assert message, "an empty error message"  # noqa: PT017
        return
    if isinstance(address, str):
        assert "/" in address
    else:
        host, port = address
        assert isinstance(host, str)
        assert 0 <= port <= 65535


@given(st.integers(0, 65535))
def test_a_bare_port_listens_on_loopback(port: int) -> None:
    assert parse_address(str(port)) == ("127.0.0.1", port)


@given(st.text(max_size=20))
def test_seconds_returns_a_positive_number_or_value_error(text: str) -> None:
    try:
        value = seconds(text)
    except ValueError:
        return
    assert value > 0


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.tuples(st.sampled_from(KEYS), line_text), max_size=4),
    line_text,
)
def test_any_zeo_section_loads_or_fails_with_a_configuration_error(
    tmp_path: Path, entries: list[tuple[str, str]], junk: str
) -> None:
    body = "\n".join(f"  {key} {value}" for key, value in entries)
    path = tmp_path / "zeo.conf"
    path.write_text(
        f"<zeo>\n{body}\n</zeo>\n{junk}\n<mappingstorage 1>\n</mappingstorage>\n",
        encoding="utf-8",
    )
    try:
        config = load_config(str(path))
    except ConfigurationError as error:
        message = str(error)
        assert str(path) in message  # noqa: PT017 - the property is the message
        return
    assert config.settings.invalidation_queue_size >= 0


def test_the_property_can_see_a_wrong_value(tmp_path: Path) -> None:
    path = tmp_path / "zeo.conf"
    path.write_text(
        "<zeo>\n  transaction-timeout soon\n</zeo>\n<mappingstorage/>\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match="transaction-timeout"):
        load_config(str(path))
