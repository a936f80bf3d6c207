"""Real Zope instances as clients of the server, built by a real buildout.

One buildout (module scope, to build it once) extends the ZEO-style
profile with ``application = zope``: a server part, two Zope clients on
free ports, and a "plain" Zope instance whose own ``zope.conf`` opens the
server's Data.fs directly, as the classic guides warn against.  Every
process is started and stopped through the generated ``bin/`` scripts.
"""

from __future__ import annotations

import base64
import http.client
import io
import os
import shutil
import subprocess
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import zc.buildout
import ZConfig
from Zope2.Startup.options import ZopeWSGIOptions

from support.waiting import read_until
from zodbserver.errors import ConfigurationError
from zodbserver.instance.zope_app import make_zope_app
from zodbserver.recipes import instance

from .conftest import PROFILE, Pids, buildout_header, free_port, run_buildout
from .test_recipe_options import fake_buildout

MANAGER = ("admin", "secret")


def run_bin(
    directory: Path, script: str, command: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(directory / "bin" / script), command],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    form: dict[str, str] | None = None,
    user: tuple[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request to 127.0.0.1:``port``; redirects are not followed."""
    headers: dict[str, str] = {}
    if form is not None:
        body = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if user is not None:
        token = base64.b64encode(":".join(user).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_for_response(
    port: int,
    path: str,
    expected: tuple[int, bytes],
    *,
    user: tuple[str, str] | None = None,
    seconds: float = 15.0,
) -> tuple[int, bytes]:
    """GET ``path`` until it answers ``expected`` (an invalidation may lag)
    or ``seconds`` pass; the last answer."""
    return read_until(
        lambda: http_request(port, "GET", path, user=user),
        lambda seen: seen == expected,
        timeout=seconds,
        interval=0.1,
    )


@dataclass
class ZopeBuildout:
    directory: Path
    zeo_port: int
    http1: int
    http2: int
    plain_http: int

    @property
    def data_fs(self) -> Path:
        return self.directory / "var" / "filestorage" / "Data.fs"


def plain_zope_conf(home: Path, data_fs: Path) -> str:
    """A stock Zope instance's configuration, naming the Data.fs itself."""
    return (
        f"instancehome {home}\n"
        "<zodb_db main>\n"
        "  <filestorage>\n"
        f"    path {data_fs}\n"
        "  </filestorage>\n"
        "  mount-point /\n"
        "</zodb_db>\n"
    )


@pytest.fixture(scope="module")
def zope_buildout(tmp_path_factory: pytest.TempPathFactory) -> ZopeBuildout:
    directory = tmp_path_factory.mktemp("zope-buildout")
    built = ZopeBuildout(directory, free_port(), free_port(), free_port(), free_port())
    plain_home = directory / "plain-zope"
    (plain_home / "var").mkdir(parents=True)
    (plain_home / "zope.conf").write_text(plain_zope_conf(plain_home, built.data_fs))
    config = buildout_header("zeoserver client1 client2 plain", extends=str(PROFILE))
    config += f"""
[zeoserver]
zeo-address = {built.zeo_port}

[instance]
application = zope
user = {":".join(MANAGER)}
zodb-cache-size = 5000

[client1]
<= instance
http-address = {built.http1}

[client2]
<= instance
http-address = {built.http2}

[plain]
recipe = zodbserver:instance
application = zope
zope-conf = plain-zope/zope.conf
http-address = {built.plain_http}
"""
    result = run_buildout(directory, config)
    assert result.returncode == 0, result.stdout + result.stderr
    return built


def watch_all(pids: Pids, built: ZopeBuildout) -> None:
    for name in ("zeoserver", "client1", "client2", "plain"):
        pids.watch(built.directory / "var" / f"{name}.pid")


def test_generated_zope_conf_is_zopes_and_uses_the_client_storage(
    zope_buildout: ZopeBuildout,
) -> None:
    home = zope_buildout.directory / "parts" / "client1"
    options = ZopeWSGIOptions(str(home / "etc" / "zope.conf"))()
    root = options.configroot
    assert root.instancehome == str(home)
    assert root.clienthome == str(zope_buildout.directory / "var" / "client1")
    [database] = root.databases
    assert database.name == "main"
    assert database.config.mount_points == ["/"]
    assert database.config.cache_size == 5000
    storage = database.config.storage.config
    assert storage.server == [("127.0.0.1", zope_buildout.zeo_port)]
    inituser = (home / "inituser").read_text()
    assert inituser.startswith("admin:{SSHA}")
    assert "secret" not in inituser


def test_folder_added_on_client1_is_seen_on_client2(
    zope_buildout: ZopeBuildout, pids: Pids
) -> None:
    directory = zope_buildout.directory
    watch_all(pids, zope_buildout)
    try:
        assert run_bin(directory, "zeoserver", "start").returncode == 0
        # Both at once, as an init system would: on the new database their
        # startups may conflict, and ``start`` must then run fg again.
        with ThreadPoolExecutor(2) as pool:
            starting = [
                pool.submit(run_bin, directory, client, "start")
                for client in ("client1", "client2")
            ]
            for started in (future.result() for future in starting):
                assert started.returncode == 0, started.stdout + started.stderr
        assert run_bin(directory, "client2", "status").returncode == 0

        add_folder = "/manage_addProduct/OFSP/manage_addFolder"
        form = {"id": "shared", "title": "Made on client1"}
        anonymous = http_request(zope_buildout.http1, "POST", add_folder, form=form)
        assert anonymous[0] == 401
        added = http_request(
            zope_buildout.http1, "POST", add_folder, form=form, user=MANAGER
        )
        assert added[0] in (200, 302), added
        seen = wait_for_response(
            zope_buildout.http2,
            "/shared/title_or_id",
            (200, b"Made on client1"),
            user=MANAGER,
        )
        assert seen == (200, b"Made on client1")
        missing = http_request(zope_buildout.http2, "GET", "/absent", user=MANAGER)
        assert missing[0] == 404

        for client in ("client1", "client2"):
            assert run_bin(directory, client, "stop").returncode == 0
            assert run_bin(directory, client, "status").returncode == 3
        assert run_bin(directory, "zeoserver", "stop").returncode == 0
        assert pids.alive() == []
    finally:
        pids.kill_all()


def test_plain_zope_on_the_servers_data_fs_fails_with_the_lock_message(
    zope_buildout: ZopeBuildout, pids: Pids
) -> None:
    directory = zope_buildout.directory
    watch_all(pids, zope_buildout)
    try:
        assert run_bin(directory, "zeoserver", "start").returncode == 0
        refused = run_bin(directory, "plain", "start")
        assert refused.returncode == 1
        message = refused.stderr
        assert f"{zope_buildout.data_fs} is locked by another process" in message
        assert "a running zeoserver" in message
        assert "<clientstorage>" in message
        assert str(directory / "plain-zope" / "zope.conf") in message
        assert run_bin(directory, "plain", "status").returncode == 3
        assert run_bin(directory, "zeoserver", "stop").returncode == 0
        assert pids.alive() == []
    finally:
        pids.kill_all()


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"user": "admin"}, "user"),
        ({"user": ":secret"}, "user"),
        ({"zodb-cache-size": "many"}, "zodb-cache-size"),
        ({"debug-mode": "sometimes"}, "debug-mode"),
        ({"zope-conf": "zope.conf", "debug-exceptions": "on"}, "debug-exceptions"),
        ({"zope-conf": "zope.conf", "zodb-cache-size": "9"}, "zodb-cache-size"),
    ],
)
def test_wrong_zope_option_names_part_and_option(
    tmp_path: Path, options: dict[str, str], option: str
) -> None:
    with pytest.raises(zc.buildout.UserError, match=rf"^\[client1\] {option}: "):
        instance.Recipe(
            fake_buildout(tmp_path), "client1", {"application": "zope", **options}
        )


@pytest.mark.parametrize("option", ["user", "zope-conf", "zope-conf-additional"])
def test_zope_option_without_zope_is_refused(tmp_path: Path, option: str) -> None:
    with pytest.raises(
        zc.buildout.UserError, match=rf"^\[client1\] {option}: only for application"
    ):
        instance.Recipe(fake_buildout(tmp_path), "client1", {option: "x:y"})


def test_zope_conf_additional_is_appended(tmp_path: Path) -> None:
    recipe = instance.Recipe(
        fake_buildout(tmp_path),
        "client1",
        {"application": "zope", "zope-conf-additional": "http-realm Intranet"},
    )
    recipe.install()
    zope_conf = tmp_path / "parts" / "client1" / "etc" / "zope.conf"
    options = ZopeWSGIOptions(str(zope_conf))()
    assert options.configroot.http_realm == "Intranet"
    assert not (tmp_path / "parts" / "client1" / "inituser").exists()


def test_zope_missing_fails_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "Zope2", None)
    with pytest.raises(
        zc.buildout.UserError, match=r"^\[client1\] application: .*zodbserver\[zope\]"
    ):
        instance.Recipe(fake_buildout(tmp_path), "client1", {"application": "zope"})


def test_zope_missing_fails_the_app_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zope_conf = tmp_path / "zope.conf"
    zope_conf.write_text(plain_zope_conf(tmp_path, tmp_path / "Data.fs"))
    monkeypatch.setitem(sys.modules, "Zope2.Startup.run", None)
    with pytest.raises(ConfigurationError, match="needs the Zope distribution"):
        make_zope_app(str(zope_conf))


def test_app_factory_names_a_missing_zope_conf(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"no such zope\.conf: .*absent\.conf"):
        make_zope_app(str(tmp_path / "absent.conf"))


def test_zodb_cache_size_of_a_plain_instance(tmp_path: Path) -> None:
    recipe = instance.Recipe(
        fake_buildout(tmp_path), "client1", {"zodb-cache-size": "1234"}
    )
    recipe.install()
    zodb_conf = (tmp_path / "parts" / "client1" / "etc" / "zodb.conf").read_text()
    schema = ZConfig.loadSchemaFile(
        io.StringIO(
            '<schema><import package="ZODB"/>'
            '<section type="ZODB.database" name="*" attribute="database"/>'
            "</schema>"
        )
    )
    config, _ = ZConfig.loadConfigFile(schema, io.StringIO(zodb_conf))
    assert config.database.config.cache_size == 1234
    assert "zope.conf" not in os.listdir(tmp_path / "parts" / "client1" / "etc")


def test_wiped_var_gets_a_new_database_with_the_manager(
    zope_buildout: ZopeBuildout, pids: Pids
) -> None:
    """Zope deletes inituser once it made the user; ``start`` writes it
    again, so a new database (var/ wiped) gets the manager of ``user``."""
    directory = zope_buildout.directory
    watch_all(pids, zope_buildout)
    shutil.rmtree(directory / "var")
    try:
        assert run_bin(directory, "zeoserver", "start").returncode == 0
        started = run_bin(directory, "client1", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        status, _ = http_request(
            zope_buildout.http1, "GET", "/manage_main", user=MANAGER
        )
        assert status == 200
        assert not (directory / "parts" / "client1" / "inituser").exists()
        assert run_bin(directory, "client1", "stop").returncode == 0
        assert run_bin(directory, "zeoserver", "stop").returncode == 0
        assert pids.alive() == []
    finally:
        pids.kill_all()
