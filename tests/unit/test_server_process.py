"""Process-level tuning done by the server's ``run``."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from zodbserver.server.main import tune_malloc


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
    reason="mallopt is glibc's",
)
def test_glibc_takes_the_malloc_settings() -> None:
    assert tune_malloc() is True
