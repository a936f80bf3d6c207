"""plone.recipe.zope2instance's options on ``zodbserver:instance``.

Each option either has its zope2instance meaning in the generated files or
fails the recipe naming the option and what to do instead; an option no
recipe knows fails too (zc.buildout alone would only warn).  The recipes
are called as zc.buildout calls them; ``test_instance_process`` runs the
instances these settings make.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import zc.buildout
from Zope2.Startup.options import ZopeWSGIOptions

from zodbserver.recipes import instance, server

from .test_recipe_options import fake_buildout


def install(directory: Path, **options: str) -> dict[str, Any]:
    recipe = instance.Recipe(fake_buildout(directory), "client1", dict(options))
    recipe.install()
    path = directory / "parts" / "client1" / "etc" / "instance.json"
    settings: dict[str, Any] = json.loads(path.read_text())
    return settings


def zope_conf_root(directory: Path) -> Any:
    path = directory / "parts" / "client1" / "etc" / "zope.conf"
    return ZopeWSGIOptions(str(path))().configroot


@pytest.mark.parametrize(
    "option", ["zeo-adress", "http_address", "threds", "my-own-variable"]
)
def test_unknown_instance_option_fails(tmp_path: Path, option: str) -> None:
    with pytest.raises(
        zc.buildout.UserError,
        match=rf"^\[client1\] {option}: not an option of zodbserver:instance",
    ):
        instance.Recipe(fake_buildout(tmp_path), "client1", {option: "1"})


def test_unknown_option_names_the_closest_known_one(tmp_path: Path) -> None:
    with pytest.raises(zc.buildout.UserError, match="did you mean zeo-address"):
        instance.Recipe(fake_buildout(tmp_path), "client1", {"zeo-adress": "1"})


@pytest.mark.parametrize(
    ("option", "advice"),
    [
        ("rel-storage", "configure it there"),
        ("file-storage", "configure it there"),
        ("zeo-username", "use TLS"),
        ("webdav-address", "WSGI only"),
        ("zcml", "list the distribution in eggs"),
        ("wsgi-ini-template", "make_app"),
        ("sentry_dsn", "make_app"),
        ("event-log-max-size", "logrotate"),
        ("effective-user", "User= in systemd"),
    ],
)
def test_zope2instance_option_without_meaning_here_fails_with_advice(
    tmp_path: Path, option: str, advice: str
) -> None:
    with pytest.raises(zc.buildout.UserError, match=rf"^\[client1\] {option}: ") as e:
        instance.Recipe(fake_buildout(tmp_path), "client1", {option: "x"})
    assert advice in str(e.value)


@pytest.mark.parametrize("option", ["zeo-adress", "storage-numbr", "http-address"])
def test_unknown_server_option_fails(tmp_path: Path, option: str) -> None:
    with pytest.raises(
        zc.buildout.UserError,
        match=rf"^\[zeoserver\] {option}: not an option of zodbserver:server",
    ):
        server.Recipe(fake_buildout(tmp_path), "zeoserver", {option: "1"})


def test_threads_and_their_old_name(tmp_path: Path) -> None:
    assert install(tmp_path)["threads"] == 4
    assert install(tmp_path, threads="2")["threads"] == 2
    assert install(tmp_path, **{"zserver-threads": "3"})["threads"] == 3
    with pytest.raises(zc.buildout.UserError, match=r"\[client1\] zserver-threads"):
        install(tmp_path, threads="2", **{"zserver-threads": "3"})
    with pytest.raises(zc.buildout.UserError, match=r"\[client1\] threads"):
        install(tmp_path, threads="0")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("TZ Europe/Vienna\nzope_i18n_compile_mo_files true", None),
        ("TZ Europe/Vienna zope_i18n_compile_mo_files true", None),
    ],
)
def test_environment_vars_on_lines_or_one_line(
    tmp_path: Path, value: str, expected: None
) -> None:
    settings = install(tmp_path, **{"environment-vars": value})
    assert settings["environment"] == {
        "TZ": "Europe/Vienna",
        "zope_i18n_compile_mo_files": "true",
    }


def test_environment_var_without_value_fails(tmp_path: Path) -> None:
    with pytest.raises(zc.buildout.UserError, match=r"\[client1\] environment-vars"):
        install(tmp_path, **{"environment-vars": "TZ"})


def test_zeo_client_options_reach_the_clientstorage(tmp_path: Path) -> None:
    settings = install(
        tmp_path,
        **{
            "zeo-client": "on",
            "zeo-storage": "main",
            "zeo-client-name": "web1",
            "zeo-client-server-sync": "true",
            "zeo-client-blob-cache-size": "1GB",
            "zeo-client-blob-cache-size-check": "25",
            "zeo-client-drop-cache-rather-verify": "true",
            "zeo-client-client": "web1",
            "zeo-var": "var/zeocache",
            "min-disconnect-poll": "2",
            "max-disconnect-poll": "20",
            "zodb-cache-size-bytes": "500MB",
        },
    )
    conf = (tmp_path / "parts" / "client1" / "etc" / "zodb.conf").read_text()
    for line in (
        "storage main",
        "client-label web1",
        "server-sync true",
        "blob-cache-size-check 25",
        f"var {tmp_path}/var/zeocache",
        "min-disconnect-poll 2",
        "max-disconnect-poll 20",
        "cache-size-bytes 500MB",
    ):
        assert f"  {line}\n" in conf, line
    assert f"{tmp_path}/var/zeocache" in settings["directories"]


def test_zeo_client_off_fails(tmp_path: Path) -> None:
    with pytest.raises(zc.buildout.UserError, match=r"\[client1\] zeo-client: "):
        install(tmp_path, **{"zeo-client": "off"})


@pytest.mark.parametrize("value", ["off", "etc/gunicorn.ini"])
def test_wsgi_other_than_on_fails(tmp_path: Path, value: str) -> None:
    assert install(tmp_path, wsgi="on")["application"]
    with pytest.raises(zc.buildout.UserError, match=r"\[client1\] wsgi: .*make_app"):
        install(tmp_path, wsgi=value)


def test_http_options(tmp_path: Path) -> None:
    settings = install(
        tmp_path,
        **{
            "http-address": "8081",
            "ip-address": "0.0.0.0",
            "http-fast-listen": "off",
            "max-request-body-size": "1000",
            "clear-untrusted-proxy-headers": "true",
        },
    )
    assert (settings["http-host"], settings["http-port"]) == ("0.0.0.0", 8081)
    assert settings["fast-listen"] is False
    assert settings["max-request-body-size"] == 1000
    assert settings["clear-untrusted-proxy-headers"] is True
    assert install(tmp_path)["fast-listen"] is True


def test_logs(tmp_path: Path) -> None:
    settings = install(tmp_path)
    assert settings["access-log"] == f"{tmp_path}/var/log/client1-access.log"
    assert settings["log-file"] == f"{tmp_path}/var/log/client1.log"
    settings = install(
        tmp_path,
        **{
            "event-log": "logs/events.log",
            "event-log-level": "debug",
            "z2-log": "logs/hits.log",
            "access-log-max-size": "10MB",
            "access-log-old-files": "3",
        },
    )
    assert settings["log-file"] == f"{tmp_path}/logs/events.log"
    assert settings["log-level"] == "DEBUG"
    assert settings["access-log"] == f"{tmp_path}/logs/hits.log"
    assert settings["access-log-max-size"] == 10 * 1024 * 1024
    assert settings["access-log-old-files"] == 3
    assert install(tmp_path, **{"access-log": "disable"})["access-log"] is None


def test_zope_options_reach_zope_conf(tmp_path: Path) -> None:
    install(
        tmp_path,
        application="zope",
        **{
            "debug-exceptions": "on",
            "verbose-security": "on",
            "python-check-interval": "500",
            "zodb-cache-size-bytes": "100MB",
            "client-home": "var/home",
        },
    )
    root = zope_conf_root(tmp_path)
    assert root.debug_exceptions is True
    assert root.verbose_security is True
    assert root.security_policy_implementation == "PYTHON"
    assert root.python_check_interval == 500
    assert root.clienthome == f"{tmp_path}/var/home"
    [database] = root.databases
    assert database.config.cache_size_bytes == 100 * 1024 * 1024


def test_template_cache(tmp_path: Path) -> None:
    settings = install(tmp_path, application="zope")
    assert settings["environment"]["CHAMELEON_CACHE"] == f"{tmp_path}/var/cache"
    assert f"{tmp_path}/var/cache" in settings["directories"]
    off = install(tmp_path, application="zope", **{"template-cache": "off"})
    assert "CHAMELEON_CACHE" not in off["environment"]


def test_user_with_zope_conf_writes_inituser(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "zope.conf").write_text(
        f"%define INSTANCE {home}\ninstancehome $INSTANCE\n"
    )
    settings = install(
        tmp_path, application="zope", user="admin:secret", **{"zope-conf": "zope.conf"}
    )
    # Where Zope reads it: the instance home of that zope.conf.
    inituser = home / "inituser"
    assert inituser.read_text().startswith("admin:{SSHA}")
    assert settings["inituser"]["path"] == str(inituser)
    assert settings["zope-conf"] == str(tmp_path / "zope.conf")


def test_eggs_go_on_the_scripts_path(tmp_path: Path) -> None:
    extra = tmp_path / "src"
    extra.mkdir()
    buildout = fake_buildout(tmp_path)
    buildout["buildout"]["offline"] = "true"
    recipe = instance.Recipe(
        buildout,
        "client1",
        {"eggs": "waitress\nZODB", "extra-paths": "src", "initialization": "X = 1"},
    )
    recipe.install()
    script = (tmp_path / "bin" / "client1").read_text()
    import waitress

    assert repr(str(Path(waitress.__file__).parents[1])) in script
    assert repr(str(extra)) in script
    assert "\nX = 1\n" in script
    assert script.startswith(f"#!{sys.executable}")


def test_missing_egg_fails_naming_eggs(tmp_path: Path) -> None:
    buildout = fake_buildout(tmp_path)
    buildout["buildout"]["offline"] = "true"
    with pytest.raises(zc.buildout.UserError, match=r"\[client1\] eggs: "):
        instance.Recipe(buildout, "client1", {"eggs": "no.such.distribution"})


def test_plone_backend_clientstorage_keys_are_accepted() -> None:
    """plone/plone-backend's client keys, drop-cache-rather-verify included,
    in our ``<clientstorage>``."""
    import ZODB.config

    storage = ZODB.config.storageFromString(
        "%import zodbserver\n"
        "<clientstorage>\n"
        "  server 127.0.0.1:1\n"
        "  name zeostorage\n"
        "  storage 1\n"
        "  read-only false\n"
        "  read-only-fallback false\n"
        "  shared-blob-dir false\n"
        "  cache-size 128MB\n"
        "  drop-cache-rather-verify true\n"
        "  wait false\n"
        "</clientstorage>\n"
    )
    try:
        assert storage.getName().startswith("zeostorage")
    finally:
        storage.close()
