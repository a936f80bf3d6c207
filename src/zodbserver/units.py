"""Byte sizes and durations as operators write them in configuration files.

``20MB``, ``500KB``, ``1GB`` or a plain number of bytes; ``30``, ``30s``,
``5m``, ``1h`` or ``1d`` seconds.  The parsers raise ``ValueError`` with a
message that quotes the value; callers add the key or option it was given
for.
"""

from __future__ import annotations

_BYTES_PER_UNIT = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_byte_size(value: str) -> int:
    """A number of bytes, optionally with a KB, MB or GB suffix."""
    text = value.strip().lower()
    factor = 1
    if text[-2:] in _BYTES_PER_UNIT:
        factor = _BYTES_PER_UNIT[text[-2:]]
        text = text[:-2]
    try:
        number = int(text) * factor
    except ValueError:
        raise ValueError(f"not a byte size: {value!r} (e.g. 20MB, 500KB)") from None
    if number < 0:
        raise ValueError(f"must not be negative: {value!r}")
    return number


def parse_seconds(value: str, *, allow_zero: bool = False) -> float:
    """A positive number of seconds, optionally with an s/m/h/d suffix.

    With ``allow_zero``, 0 is accepted too (a client's timeouts and polls:
    0 means "do not wait"); the server's timeouts and the commands'
    ``--timeout`` options must be positive.
    """
    text = value.strip().lower()
    factor = 1
    if text and text[-1] in _SECONDS_PER_UNIT:
        factor = _SECONDS_PER_UNIT[text[-1]]
        text = text[:-1]
    try:
        number = float(text) * factor
    except ValueError:
        raise ValueError(
            f"not a number of seconds: {value!r} (e.g. 30, 30s, 5m, 1h)"
        ) from None
    in_range = number >= 0 if allow_zero else number > 0
    if not in_range or number == float("inf"):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"must be a {kind} number of seconds: {value!r}")
    return number
