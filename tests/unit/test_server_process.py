"""Process-level tuning done by the server's ``run``."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from zodbserver.server.main import fix_mmap_threshold


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
    reason="mallopt is glibc's",
)
def test_the_mmap_threshold_is_fixed_with_glibc() -> None:
    assert fix_mmap_threshold() is True
