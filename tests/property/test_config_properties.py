"""Properties of the zeo.conf parser: whatever an operator writes, the
result is a configuration or a ConfigurationError naming the problem --
never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zodbserver.config import load_config
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
        assert str(path) in message
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
