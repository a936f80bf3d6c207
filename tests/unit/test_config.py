"""zeo.conf files, as operators write them, read into ServerConfig."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import ZODB.DemoStorage
import ZODB.FileStorage
import ZODB.MappingStorage

from zodbserver.addresses import parse_address
from zodbserver.config import (
    ServerConfig,
    close_storages,
    load_config,
    open_storages,
)
from zodbserver.errors import ConfigurationError, StorageInUseError
from zodbserver.protocol import DEFAULT_MAX_FRAME_SIZE
from zodbserver.server.settings import ServerSettings

NO_ENVIRONMENT: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "zeo.conf") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    path = write(tmp_path, text)
    return load_config(path, environ=NO_ENVIRONMENT if environ is None else environ)


def zeo_section(tmp_path: Path, body: str) -> str:
    return f"<zeo>\n{body}\n</zeo>\n<mappingstorage/>\n"


# -- <zeo> keys ----------------------------------------------------------------


def test_every_key_reaches_the_settings(tmp_path):
    (tmp_path / "run").mkdir()
    config = load(
        tmp_path,
        f"""
        <zeo>
          address 10.1.2.3:9100
          read-only true
          invalidation-queue-size 500
          invalidation-age 1h
          transaction-timeout 30
          client-conflict-resolution on
          msgpack false
          pid-filename {tmp_path}/run/zeo.pid
          max-frame-size 8MB
        </zeo>
        <mappingstorage/>
        """,
    )
    assert config.settings == ServerSettings(
        address=("10.1.2.3", 9100),
        read_only=True,
        invalidation_queue_size=500,
        invalidation_age=3600.0,
        transaction_timeout=30.0,
        client_conflict_resolution=True,
        msgpack=False,
        pid_filename=f"{tmp_path}/run/zeo.pid",
        max_frame_size=8 * 1024 * 1024,
    )


def test_defaults_without_zeo_section(tmp_path):
    config = load(tmp_path, "<mappingstorage/>")
    assert config.settings == ServerSettings()
    assert config.settings.address == ("127.0.0.1", 8100)
    assert config.settings.max_frame_size == DEFAULT_MAX_FRAME_SIZE


def test_defaults_of_an_empty_zeo_section(tmp_path):
    config = load(tmp_path, "<zeo>\n</zeo>\n<mappingstorage/>")
    assert config.settings == ServerSettings()


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("read-only", "yes", "read_only", True),
        ("read-only", "false", "read_only", False),
        ("invalidation-queue-size", "0", "invalidation_queue_size", 0),
        ("invalidation-age", "90", "invalidation_age", 90.0),
        ("invalidation-age", "2.5m", "invalidation_age", 150.0),
        ("transaction-timeout", "300s", "transaction_timeout", 300.0),
        ("transaction-timeout", "0.5", "transaction_timeout", 0.5),
        ("transaction-timeout", "1d", "transaction_timeout", 86400.0),
        ("client-conflict-resolution", "true", "client_conflict_resolution", True),
        ("max-frame-size", "1048576", "max_frame_size", 1048576),
        ("max-frame-size", "64kb", "max_frame_size", 65536),
        ("max-frame-size", "1GB", "max_frame_size", 1024**3),
        ("worker-threads", "2", "worker_threads", 2),
        ("worker-threads", "64", "worker_threads", 64),
    ],
)
def test_one_key(tmp_path, key, value, field, expected):
    config = load(tmp_path, zeo_section(tmp_path, f"{key} {value}"))
    assert getattr(config.settings, field) == expected
    untouched = {
        name: getattr(config.settings, name)
        for name in ServerSettings.__dataclass_fields__
        if name != field
    }
    defaults = ServerSettings()
    assert untouched == {name: getattr(defaults, name) for name in untouched}


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("", {}, True),  # our default encoding
        ("", {"ZEO_MSGPACK": "1"}, True),
        ("", {"ZEO_MSGPACK": ""}, False),  # set but empty: pickle, as in ZEO
        ("msgpack true", {"ZEO_MSGPACK": ""}, True),
        ("msgpack false", {"ZEO_MSGPACK": "1"}, False),
        ("msgpack false", {}, False),
    ],
)
def test_msgpack_key_and_environment(tmp_path, text, environ, expected):
    config = load(tmp_path, zeo_section(tmp_path, text), environ=environ)
    assert config.settings.msgpack is expected


def test_msgpack_environment_without_zeo_section(tmp_path):
    config = load(tmp_path, "<mappingstorage/>", environ={"ZEO_MSGPACK": ""})
    assert config.settings.msgpack is False


# -- addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8100", ("127.0.0.1", 8100)),
        ("0", ("127.0.0.1", 0)),
        ("localhost:9000", ("localhost", 9000)),
        ("0.0.0.0:8100", ("0.0.0.0", 8100)),
        (":8100", ("", 8100)),
        ("[::1]:8100", ("::1", 8100)),
        ("zeo.example.org:65535", ("zeo.example.org", 65535)),
        ("/var/run/zeo.sock", "/var/run/zeo.sock"),
        ("var/zeo.sock", "var/zeo.sock"),
        ("./zeo.sock", "./zeo.sock"),
    ],
)
def test_address_forms(tmp_path, text, expected):
    assert parse_address(text) == expected
    config = load(tmp_path, zeo_section(tmp_path, f"address {text}"))
    assert config.settings.address == expected


@pytest.mark.parametrize(
    "text", ["host:port", "65536", "-1", "::1:8100", "[nonsense]:8100", "abc"]
)
def test_bad_addresses_are_refused(tmp_path, text):
    with pytest.raises(ValueError, match="address"):
        parse_address(text)
    path = write(tmp_path, f"<zeo>\n  address {text}\n</zeo>\n<mappingstorage/>\n")
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    message = str(raised.value)
    assert str(path) in message
    assert "line 2" in message
    assert "'address'" in message


# -- wrong values: the message names file, line and key ------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("read-only", "maybe"),
        ("invalidation-queue-size", "many"),
        ("invalidation-queue-size", "-5"),
        ("invalidation-age", "old"),
        ("transaction-timeout", "soon"),
        ("transaction-timeout", "0"),
        ("transaction-timeout", "-3"),
        ("client-conflict-resolution", "perhaps"),
        ("msgpack", "2"),
        ("max-frame-size", "huge"),
        ("max-frame-size", "12"),
        ("pid-filename", "/no/such/directory/zeo.pid"),
        ("worker-threads", "0"),
        ("worker-threads", "65"),
        ("worker-threads", "some"),
    ],
)
def test_wrong_value_names_file_line_and_key(tmp_path, key, value):
    path = write(
        tmp_path,
        f"""
        # a comment, so that the key is not on the first lines
        <zeo>
          address 8100
          {key} {value}
        </zeo>
        <mappingstorage/>
        """,
    )
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}, line 4: ")
    assert repr(key) in message


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = write(tmp_path, "<zeo>\n  adress 8100\n</zeo>\n<mappingstorage/>\n")
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}, line 2: ")
    assert "'adress'" in message


def test_storage_key_error_names_the_line(tmp_path):
    path = write(
        tmp_path,
        """
        <filestorage 1>
          path /no/such/directory/Data.fs
        </filestorage>
        """,
    )
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}, line 2: ")
    assert "'path'" in message


def test_error_in_an_included_file_names_that_file(tmp_path):
    included = write(tmp_path, "<zeo>\n  read-only sometimes\n</zeo>\n", "zeo.inc")
    path = write(tmp_path, f"%include {included}\n<mappingstorage/>\n")
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{included}, line 2: ")


def test_no_storage_is_an_error(tmp_path):
    path = write(tmp_path, "<zeo>\n  address 8100\n</zeo>\n")
    with pytest.raises(ConfigurationError, match="no storage section") as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.conf"
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "<zeo>\n  address 8100\n<mappingstorage/>\n")
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path}, line 3: ")


# -- storages ------------------------------------------------------------------


def test_single_unnamed_storage_is_served_as_1(tmp_path):
    config = load(
        tmp_path,
        f"""
        <filestorage>
          path {tmp_path}/Data.fs
        </filestorage>
        """,
    )
    assert [factory.name for factory in config.storages] == ["1"]
    assert config.storages[0].path == f"{tmp_path}/Data.fs"
    storages = open_storages(config)
    try:
        assert list(storages) == ["1"]
        assert isinstance(storages["1"], ZODB.FileStorage.FileStorage)
    finally:
        close_storages(storages)


def test_several_named_storages_in_file_order(tmp_path):
    config = load(
        tmp_path,
        f"""
        <filestorage main>
          path {tmp_path}/Data.fs
          blob-dir {tmp_path}/blobs
        </filestorage>
        <mappingstorage 2/>
        <demostorage temp>
          <mappingstorage/>
        </demostorage>
        """,
    )
    assert [factory.name for factory in config.storages] == ["main", "2", "temp"]
    storages = open_storages(config)
    try:
        assert list(storages) == ["main", "2", "temp"]
        assert isinstance(storages["main"], ZODB.FileStorage.FileStorage)
        assert storages["main"].fshelper.base_dir.rstrip("/") == f"{tmp_path}/blobs"
        assert isinstance(storages["2"], ZODB.MappingStorage.MappingStorage)
        assert isinstance(storages["temp"], ZODB.DemoStorage.DemoStorage)
    finally:
        close_storages(storages)


def test_two_unnamed_storages_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="at most one may be unnamed"):
        load(tmp_path, "<mappingstorage/>\n<mappingstorage/>\n")


def test_unnamed_storage_and_a_storage_named_1_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="another section is named '1'"):
        load(tmp_path, "<mappingstorage/>\n<mappingstorage 1/>\n")


def test_duplicate_storage_names_are_refused(tmp_path):
    path = write(tmp_path, "<mappingstorage a>\n</mappingstorage>\n" * 2)
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}, line 4: ")
    assert "'a'" in message


def test_locked_filestorage_is_storage_in_use(tmp_path):
    data_fs = tmp_path / "Data.fs"
    config = load(
        tmp_path,
        f"""
        <filestorage 1>
          path {tmp_path}/Other.fs
        </filestorage>
        <filestorage 2>
          path {data_fs}
        </filestorage>
        """,
    )
    holder = ZODB.FileStorage.FileStorage(str(data_fs))
    try:
        with pytest.raises(StorageInUseError) as raised:
            open_storages(config)
    finally:
        holder.close()
    message = str(raised.value)
    assert str(data_fs) in message
    assert "another process" in message
    assert "zeoserver" in message
    assert "Zope instance" in message
    # Storages opened before the failure were closed again: no lock left.
    ZODB.FileStorage.FileStorage(str(tmp_path / "Other.fs")).close()


def test_locked_storage_inside_a_wrapper_names_the_file(tmp_path):
    data_fs = tmp_path / "Data.fs"
    config = load(
        tmp_path,
        f"""
        <demostorage>
          <filestorage base>
            path {data_fs}
          </filestorage>
        </demostorage>
        """,
    )
    holder = ZODB.FileStorage.FileStorage(str(data_fs))
    try:
        with pytest.raises(StorageInUseError, match=str(data_fs)):
            open_storages(config)
    finally:
        holder.close()


# -- logging -------------------------------------------------------------------


def test_eventlog_files(tmp_path):
    config = load(
        tmp_path,
        f"""
        <mappingstorage/>
        <eventlog>
          level info
          <logfile>
            path {tmp_path}/zeo.log
          </logfile>
          <logfile>
            path STDERR
          </logfile>
        </eventlog>
        """,
    )
    assert config.eventlog is not None
    assert config.log_files == (f"{tmp_path}/zeo.log",)


def test_no_eventlog(tmp_path):
    config = load(tmp_path, "<mappingstorage/>")
    assert config.eventlog is None
    assert config.log_files == ()
    assert config.filename == str(tmp_path / "zeo.conf")


def test_replace_keeps_the_rest():
    config = ServerConfig(settings=ServerSettings(), storages=())
    changed = config.replace(settings=ServerSettings(read_only=True))
    assert changed.settings.read_only
    assert changed.storages == ()
    assert not config.settings.read_only
