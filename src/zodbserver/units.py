"""Byte sizes as operators write them in configuration files."""

from __future__ import annotations

_BYTES_PER_UNIT = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}


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
