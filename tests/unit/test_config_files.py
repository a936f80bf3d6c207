"""How configuration files are read: includes, and no MIME tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zodbserver.config import load_config
from zodbserver.errors import ConfigurationError


def test_an_include_is_read_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "storage.conf").write_text(
        f"<filestorage 1>\n  path {tmp_path / 'Data.fs'}\n</filestorage>\n"
    )
    main = tmp_path / "zeo.conf"
    main.write_text("<zeo>\n  address 9999\n</zeo>\n%include storage.conf\n")
    config = load_config(main)
    assert config.settings.address == ("127.0.0.1", 9999)
    assert [storage.name for storage in config.storages] == ["1"]


def test_a_missing_include_names_the_file(tmp_path: Path) -> None:
    main = tmp_path / "zeo.conf"
    main.write_text("%include missing.conf\n")
    with pytest.raises(ConfigurationError, match=r"error opening file .*missing\.conf"):
        load_config(main)


def test_reading_a_configuration_loads_no_mime_tables(tmp_path: Path) -> None:
    main = tmp_path / "zeo.conf"
    main.write_text(f"<filestorage 1>\n  path {tmp_path / 'Data.fs'}\n</filestorage>\n")
    probe = (
        "import sys, zodbserver.config as config; "
        f"config.load_config({str(main)!r}); "
        "mimetypes = sys.modules.get('mimetypes'); "
        "print(bool(mimetypes and mimetypes.inited))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
