"""The server recipe's packing, logging, process and script options.

Most tests call the recipe as zc.buildout does (see ``test_recipe_options``)
and then load what it wrote: zeo.conf through our ZConfig schema, the
scripts by running them.  One real buildout at the end runs a server from
the generated ``bin/`` scripts and packs it with ``bin/zeopack``.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zc.buildout
import ZODB
from persistent.mapping import PersistentMapping

import zodbserver.config
from support.waiting import wait_until
from zodbserver import ClientStorage
from zodbserver.logformat import JSONFormatter
from zodbserver.recipes import server

from .conftest import Pids, buildout_header, free_port, run_buildout
from .test_recipe_options import fake_buildout, install_server


def make_recipe(directory: Path, **options: str) -> server.Recipe:
    return server.Recipe(fake_buildout(directory), "zeoserver", dict(options))


def load_conf(directory: Path) -> zodbserver.config.ServerConfig:
    path = directory / "parts" / "zeoserver" / "etc" / "zeo.conf"
    return zodbserver.config.load_config(str(path))


def run_script(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=120
    )


def wrong(directory: Path, option: str, **options: str) -> str:
    """The error message for ``options``, which must name ``option``."""
    with pytest.raises(zc.buildout.UserError) as raised:
        make_recipe(directory, **options)
    message = str(raised.value)
    assert message.startswith(f"[zeoserver] {option}: "), message
    return message


# -- pack-gc, pack-keep-old ---------------------------------------------------


def test_pack_settings_reach_the_filestorage(tmp_path: Path) -> None:
    conf = install_server(tmp_path, **{"pack-gc": "false", "pack-keep-old": "off"})
    assert "  pack-gc false\n  pack-keep-old false\n</filestorage>" in conf
    storages = zodbserver.config.open_storages(load_conf(tmp_path))
    try:
        storage = storages["1"]
        assert storage._pack_gc is False
        assert storage.pack_keep_old is False
    finally:
        storage.close()


def test_pack_settings_default_to_true(tmp_path: Path) -> None:
    conf = install_server(tmp_path, **{"pack-gc": "true"})
    assert "pack-gc" not in conf
    assert "pack-keep-old" not in conf


# -- zeo-log-format, zeo-log-max-size, zeo-log-old-files ----------------------


def make_log_handler(directory: Path) -> logging.Handler:
    """The handler ZConfig makes from the rendered <eventlog>."""
    eventlog = load_conf(directory).eventlog
    assert eventlog is not None
    (factory,) = eventlog.handler_factories
    handler: logging.Handler = factory()
    return handler


DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def test_log_format_default_carries_the_level(tmp_path: Path) -> None:
    conf = install_server(tmp_path)
    assert f"    format {DEFAULT_FORMAT}\n" in conf
    assert "max-size" not in conf
    handler = make_log_handler(tmp_path)
    try:
        assert not isinstance(handler, logging.handlers.RotatingFileHandler)
        assert handler.formatter is not None
        assert handler.formatter._fmt == DEFAULT_FORMAT
        record = logging.LogRecord(
            "zodbserver.server", logging.ERROR, __file__, 1, "disk full", (), None
        )
        assert " ERROR zodbserver.server disk full" in handler.format(record)
    finally:
        handler.close()


def test_log_rotation_and_format(tmp_path: Path) -> None:
    install_server(
        tmp_path,
        **{
            "zeo-log-max-size": "1KB",
            "zeo-log-old-files": "2",
            "zeo-log-format": "$ %(levelname)s %(message)s",
        },
    )
    handler = make_log_handler(tmp_path)
    try:
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        assert (handler.maxBytes, handler.backupCount) == (1024, 2)
        for number in range(300):
            record = logging.LogRecord(
                "zodbserver", logging.INFO, __file__, 1, f"line {number:03}", (), None
            )
            handler.handle(record)
    finally:
        handler.close()
    log = tmp_path / "var" / "log" / "zeoserver.log"
    assert {path.name for path in log.parent.iterdir()} == {
        "zeoserver.log",
        "zeoserver.log.1",
        "zeoserver.log.2",
    }
    assert log.stat().st_size <= 1024
    assert log.read_text().splitlines()[-1] == "$ INFO line 299"


@pytest.mark.parametrize(
    ("option", "options", "message"),
    [
        ("zeo-log-max-size", {"zeo-log-max-size": "huge"}, "expected a size"),
        ("zeo-log-max-size", {"zeo-log-max-size": "0"}, "expected a size"),
        (
            "zeo-log-old-files",
            {"zeo-log-max-size": "1MB", "zeo-log-old-files": "0"},
            "at least 1",
        ),
        (
            "zeo-log-old-files",
            {"zeo-log-max-size": "1MB", "zeo-log-old-files": "x"},
            "expected an integer",
        ),
        ("zeo-log-old-files", {"zeo-log-old-files": "3"}, "zeo-log-max-size"),
        ("zeo-log-format", {"zeo-log-format": "%(nosuchname)s"}, "logging format"),
        ("zeo-log-format", {"zeo-log-format": "%(message)"}, "logging format"),
    ],
)
def test_wrong_log_option(
    tmp_path: Path, option: str, options: dict[str, str], message: str
) -> None:
    assert message in wrong(tmp_path, option, **options)


# -- zeo-log-json ---------------------------------------------------------------


def test_log_json_names_the_json_formatter(tmp_path: Path) -> None:
    conf = install_server(
        tmp_path,
        **{"zeo-log-json": "true", "zeo-log-max-size": "1MB", "zeo-log-level": "debug"},
    )
    assert (
        f"    path {tmp_path}/var/log/zeoserver.log\n"
        "    formatter zodbserver.logformat.JSONFormatter\n"
        "    encoding utf-8\n"
        "    max-size 1MB\n"
    ) in conf
    assert "format %" not in conf
    handler = make_log_handler(tmp_path)
    try:
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        assert isinstance(handler.formatter, JSONFormatter)
        record = logging.LogRecord(
            "zodbserver.server",
            logging.INFO,
            __file__,
            1,
            "%s\nopened",
            ("Größe",),
            None,
        )
        handler.handle(record)
    finally:
        handler.close()
    log = tmp_path / "var" / "log" / "zeoserver.log"
    (line,) = log.read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"]) == ("INFO", "zodbserver.server")
    assert entry["message"] == "Größe\nopened"


def test_log_json_false_keeps_the_text_format(tmp_path: Path) -> None:
    conf = install_server(tmp_path, **{"zeo-log-json": "false"})
    assert f"    format {DEFAULT_FORMAT}\n" in conf
    assert "formatter" not in conf
    assert install_server(tmp_path) == conf


@pytest.mark.parametrize(
    ("option", "options", "message"),
    [
        ("zeo-log-json", {"zeo-log-json": "json"}, "expected true or false"),
        (
            "zeo-log-format",
            {"zeo-log-json": "true", "zeo-log-format": "%(message)s"},
            "give one of zeo-log-format and zeo-log-json",
        ),
    ],
)
def test_wrong_log_json(
    tmp_path: Path, option: str, options: dict[str, str], message: str
) -> None:
    assert message in wrong(tmp_path, option, **options)


# -- monitor-address, slow-commit-threshold -------------------------------------


@pytest.mark.parametrize(
    ("value", "written", "address"),
    [
        ("8200", "127.0.0.1:8200", ("127.0.0.1", 8200)),
        ("0.0.0.0:9100", "0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", "[::1]:9100", ("::1", 9100)),
    ],
)
def test_monitor_address_goes_into_zeo(
    tmp_path: Path, value: str, written: str, address: tuple[str, int]
) -> None:
    conf = install_server(tmp_path, **{"monitor-address": value})
    zeo = conf[conf.index("<zeo>") : conf.index("</zeo>")]
    assert f"\n  monitor-address {written}\n" in zeo
    assert load_conf(tmp_path).settings.monitor_address == address


def test_no_monitor_by_default(tmp_path: Path) -> None:
    conf = install_server(tmp_path, **{"monitor-address": ""})
    assert "monitor-address" not in conf
    assert load_conf(tmp_path).settings.monitor_address is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"monitor-address": "monitor"}, "invalid address 'monitor'"),
        ({"monitor-address": "70000"}, "out of range"),
        ({"monitor-address": "8100"}, "the monitor needs an address of its own"),
        (
            {"zeo-address": "0.0.0.0:8300", "monitor-address": "0.0.0.0:8300"},
            "the monitor needs an address of its own",
        ),
    ],
)
def test_wrong_monitor_address(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    assert message in wrong(tmp_path, "monitor-address", **options)


@pytest.mark.parametrize(("value", "seconds"), [("2.5", 2.5), ("0.25", 0.25), ("3", 3)])
def test_slow_commit_threshold_goes_into_zeo(
    tmp_path: Path, value: str, seconds: float
) -> None:
    conf = install_server(tmp_path, **{"slow-commit-threshold": value})
    zeo = conf[conf.index("<zeo>") : conf.index("</zeo>")]
    assert f"\n  slow-commit-threshold {value}\n" in zeo
    assert load_conf(tmp_path).settings.slow_commit_threshold == seconds


def test_slow_commit_threshold_defaults_to_the_servers(tmp_path: Path) -> None:
    conf = install_server(tmp_path)
    assert "slow-commit-threshold" not in conf
    assert load_conf(tmp_path).settings.slow_commit_threshold == 1.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "expected a number"),
        ("1s", "expected a number"),
        ("-1", "expected a positive number of seconds"),
        ("0", "expected a positive number of seconds"),
        ("inf", "expected a positive number of seconds"),
        ("nan", "expected a positive number of seconds"),
    ],
)
def test_wrong_slow_commit_threshold(tmp_path: Path, value: str, message: str) -> None:
    option = "slow-commit-threshold"
    assert message in wrong(tmp_path, option, **{option: value})


# -- pid-file, socket-name, effective-user ------------------------------------


def test_pid_file_defaults_to_the_part_name(tmp_path: Path) -> None:
    recipe = server.Recipe(fake_buildout(tmp_path), "zeo", {})
    assert f"pid-filename {tmp_path}/var/zeo.pid" in recipe.rendered


def test_socket_name_is_the_control_file(tmp_path: Path) -> None:
    conf = install_server(tmp_path, **{"socket-name": "run/zeo.zdsock"})
    assert f"pid-filename {tmp_path}/run/zeo.zdsock" in conf
    assert (tmp_path / "run").is_dir()  # made, as plone makes the socket's
    settings = load_conf(tmp_path).settings
    assert settings.pid_filename == f"{tmp_path}/run/zeo.zdsock"


def test_pid_file_and_socket_name_must_agree(tmp_path: Path) -> None:
    conf = install_server(
        tmp_path, **{"pid-file": "run/zeo.pid", "socket-name": "run/zeo.pid"}
    )
    assert f"pid-filename {tmp_path}/run/zeo.pid" in conf
    message = wrong(
        tmp_path, "socket-name", **{"pid-file": "a.pid", "socket-name": "b.sock"}
    )
    assert "no zdaemon control socket" in message


def test_effective_user_is_passed_to_the_server(tmp_path: Path) -> None:
    install_server(tmp_path, **{"effective-user": "nobody"})
    script = (tmp_path / "bin" / "zeoserver").read_text()
    assert "'--user',\n    'nobody'," in script
    assert "--user" not in (tmp_path / "bin" / "zeopack").read_text()


def test_wrong_effective_user(tmp_path: Path) -> None:
    wrong(tmp_path, "effective-user", **{"effective-user": "no body"})


# -- zeopack, zeopack-script-name, pack-days ----------------------------------


def test_zeopack_script_defaults(tmp_path: Path) -> None:
    install_server(tmp_path, **{"zeo-address": "8300", "storage-number": "main"})
    zeopack = tmp_path / "bin" / "zeopack"
    assert os.access(zeopack, os.X_OK)
    text = zeopack.read_text()
    assert "from zodbserver.zeopack import main" in text
    for argument in ("'-a',\n    '127.0.0.1:8300',", "'-S',\n    'main',"):
        assert argument in text
    assert "'-d',\n    '1'," in text
    result = run_script(zeopack, "--help")
    assert result.returncode == 0
    assert "usage: zeopack" in result.stdout


def test_zeopack_script_name_and_pack_days(tmp_path: Path) -> None:
    install_server(tmp_path, **{"zeopack-script-name": "pack-main", "pack-days": "7.5"})
    assert not (tmp_path / "bin" / "zeopack").exists()
    assert "'-d',\n    '7.5'," in (tmp_path / "bin" / "pack-main").read_text()


def test_empty_zeopack_writes_no_script(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, zeopack="")
    installed = recipe.install()
    assert not (tmp_path / "bin" / "zeopack").exists()
    assert installed == [
        str(tmp_path / "parts" / "zeoserver"),
        str(tmp_path / "bin" / "zeoserver"),
    ]


def test_custom_zeopack_script(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "mypack.py").write_text(
        "import sys\n\ndef main():\n    print('custom pack', sys.argv[1:])\n"
    )
    install_server(tmp_path, zeopack="tools/mypack.py")
    result = run_script(tmp_path / "bin" / "zeopack", "-D", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "custom pack ['-D', '3']\n"


@pytest.mark.parametrize(
    ("option", "options"),
    [
        ("zeopack", {"zeopack": "tools/missing.py"}),
        ("zeopack", {"zeopack": "tools"}),
        ("zeopack-script-name", {"zeopack-script-name": "../zeopack"}),
        ("pack-days", {"pack-days": "-2"}),
        ("pack-gc", {"pack-gc": "sometimes"}),
        ("pack-keep-old", {"pack-keep-old": "2"}),
    ],
)
def test_wrong_pack_option(
    tmp_path: Path, option: str, options: dict[str, str]
) -> None:
    (tmp_path / "tools").mkdir()
    wrong(tmp_path, option, **options)


# -- eggs, extra-paths, relative-paths ----------------------------------------


def test_eggs_and_extra_paths_go_on_the_scripts_path(tmp_path: Path) -> None:
    import ZEO

    location = str(Path(ZEO.__file__).parents[1])
    install_server(
        tmp_path, eggs="ZEO >= 5\nBTrees", **{"extra-paths": "lib\n/opt/shared"}
    )
    for name in ("zeoserver", "zeopack"):
        text = (tmp_path / "bin" / name).read_text()
        paths = text[text.index("paths = [") : text.index("]\n")]
        assert repr(location) in paths
        assert f"'{tmp_path}/lib',\n    '/opt/shared'," in paths


def test_extra_paths_are_importable_by_the_scripts(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "extramodule.py").write_text("MARK = 'extra'\n")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "mypack.py").write_text(
        "import os, extramodule\n\n"
        "def main():\n"
        "    print(extramodule.MARK, os.environ['PYTHONPATH'].split(os.pathsep)[1])\n"
    )
    install_server(tmp_path, zeopack="tools/mypack.py", **{"extra-paths": "lib"})
    result = run_script(tmp_path / "bin" / "zeopack")
    assert result.returncode == 0, result.stderr
    # PYTHONPATH carries the paths to a server started in the background.
    assert result.stdout == f"extra {tmp_path}/lib\n"


@pytest.mark.parametrize("eggs", ["no-such-distribution-here", "ZEO>=999", "ZEO[["])
def test_wrong_eggs(tmp_path: Path, eggs: str) -> None:
    recipe = make_recipe(tmp_path, eggs=eggs)
    # Eggs are resolved when scripts are written, as zc.recipe.egg does.
    with pytest.raises(zc.buildout.UserError, match=r"^\[zeoserver\] eggs: ") as raised:
        recipe.install()
    assert eggs.rstrip("[") in str(raised.value)


def test_relative_paths_survive_moving_the_buildout(tmp_path: Path) -> None:
    first = tmp_path / "first"
    (first / "lib").mkdir(parents=True)
    (first / "lib" / "extramodule.py").write_text("MARK = 'moved'\n")
    (first / "lib" / "mypack.py").write_text(
        "import extramodule\n\ndef main():\n    print(extramodule.MARK)\n"
    )
    install_server(
        first,
        zeopack="lib/mypack.py",
        **{"extra-paths": "lib", "relative-paths": "true"},
    )
    control = (first / "bin" / "zeoserver").read_text()
    assert str(first) not in control
    assert "here('../parts/zeoserver/etc/zeo.conf')" in control
    second = tmp_path / "second"
    shutil.move(first, second)
    result = run_script(second / "bin" / "zeopack")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "moved\n"


def test_relative_paths_from_the_buildout_section(tmp_path: Path) -> None:
    buildout = fake_buildout(tmp_path)
    buildout["buildout"]["relative-paths"] = "true"
    server.Recipe(buildout, "zeoserver", {}).install()
    assert "here('../var')" in (tmp_path / "bin" / "zeoserver").read_text()


def test_wrong_relative_paths(tmp_path: Path) -> None:
    wrong(tmp_path, "relative-paths", **{"relative-paths": "yes please"})


# -- a real buildout: server, rotation and bin/zeopack -------------------------


def write_history(address: str) -> None:
    db = ZODB.DB(ClientStorage(address, wait_timeout=30))
    try:
        for revision in range(10):
            with db.transaction() as connection:
                connection.root()["data"] = PersistentMapping(
                    {"payload": str(revision) * 20_000}
                )
    finally:
        db.close()


def test_buildout_zeopack_and_log_rotation(tmp_path: Path, pids: Pids) -> None:
    port = free_port()
    config = buildout_header("zeoserver") + (
        f"""
[zeoserver]
recipe = zodbserver:server
zeo-address = {port}
pack-days = 0
pack-keep-old = false
zeo-log-max-size = 2KB
zeo-log-old-files = 3
zeo-log-format = %(levelname)s %(name)s %(message)s
zeopack-script-name = pack-zeo
eggs = ZEO
relative-paths = true
"""
    )
    result = run_buildout(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
    var = tmp_path / "var"
    pids.watch(var / "zeoserver.pid")
    data_fs = var / "filestorage" / "Data.fs"
    address = f"127.0.0.1:{port}"

    started = run_script(tmp_path / "bin" / "zeoserver", "start")
    assert started.returncode == 0, started.stderr
    pid = int((var / "zeoserver.pid").read_text())
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (python_path,) = [item for item in environment if item.startswith(b"PYTHONPATH=")]
    import ZEO

    assert str(Path(ZEO.__file__).parents[1]).encode() in python_path

    write_history(address)
    size_before = data_fs.stat().st_size
    packed = run_script(tmp_path / "bin" / "pack-zeo")
    assert packed.returncode == 0, packed.stderr
    assert data_fs.stat().st_size < size_before / 4
    assert not Path(f"{data_fs}.old").exists()

    # Every connection is logged: enough of them rotate the 2KB log.
    for _ in range(30):
        ClientStorage(address, wait_timeout=30).close()
    log = var / "log" / "zeoserver.log"
    wait_until(
        Path(f"{log}.2").exists, "the log to rotate twice", timeout=30, interval=0.1
    )
    assert Path(f"{log}.1").exists()
    assert not Path(f"{log}.4").exists()
    assert "INFO zodbserver." in log.read_text() + Path(f"{log}.1").read_text()

    stopped = run_script(tmp_path / "bin" / "zeoserver", "stop")
    assert stopped.returncode == 0, stopped.stderr
    refused = run_script(tmp_path / "bin" / "pack-zeo", "--wait-timeout", "1")
    assert refused.returncode == 1
    assert f"cannot connect to storage '1' at {address}" in refused.stderr


# -- TLS ------------------------------------------------------------------------


def test_ssl_options_make_an_ssl_section(tmp_path: Path) -> None:
    from support.certificates import Certificates

    certificates = Certificates(tmp_path / "certificates")
    conf = install_server(
        tmp_path,
        **{
            "ssl-certificate": "certificates/server.pem",
            "ssl-key": "certificates/server.key",
            "ssl-authenticate": "certificates/ca.pem",
        },
    )
    assert "<ssl>" in conf
    tls = load_conf(tmp_path).settings.tls
    assert tls is not None
    assert tls.certificate == certificates.server.certificate
    assert tls.key == certificates.server.key
    assert tls.authenticate == certificates.ca_file


def test_ssl_server_only(tmp_path: Path) -> None:
    from support.certificates import Certificates

    Certificates(tmp_path / "certificates")
    install_server(
        tmp_path,
        **{
            "ssl-certificate": "certificates/server.pem",
            "ssl-key": "certificates/server.key",
            "ssl-authenticate": "SERVER-ONLY",
        },
    )
    tls = load_conf(tmp_path).settings.tls
    assert tls is not None
    assert tls.server_only


def test_ssl_needs_certificate_and_authenticate(tmp_path: Path) -> None:
    message = wrong(tmp_path, "ssl-authenticate", **{"ssl-certificate": "server.pem"})
    assert "ssl-certificate and ssl-authenticate" in message


def test_zeo4_authentication_points_at_the_ssl_options(tmp_path: Path) -> None:
    message = wrong(
        tmp_path, "authentication-database", **{"authentication-database": "a"}
    )
    assert "ssl-certificate" in message
