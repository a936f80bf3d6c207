"""The package's version and its type-information marker, as installed."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import subprocess
import sys

import pytest

import zodbserver
from zodbserver import zeopack


def test_version_is_the_distribution_metadata_version() -> None:
    version = importlib.metadata.version("zodbserver")
    assert zodbserver.__version__ == version
    assert version[0].isdigit()


def test_zeopack_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert zeopack.main(["--version"]) == 0
    assert capsys.readouterr().out == f"zeopack {zodbserver.__version__}\n"


def test_the_package_ships_py_typed() -> None:
    marker = importlib.resources.files("zodbserver") / "py.typed"
    assert marker.is_file()


def test_the_server_command_reads_the_version_only_when_asked() -> None:
    """A server process (``zeoserver fg``) does not load importlib.metadata."""
    probe = (
        "import sys, zodbserver.cli as cli; cli.build_parser(); "
        "print('importlib.metadata' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
