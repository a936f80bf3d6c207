"""Each recipe option's effect on the generated files, and wrong values.

The recipes are called the way zc.buildout calls them (buildout mapping,
part name, options), without a buildout run, so every option is cheap to
check; ``test_buildout_deployment`` runs the real buildout.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import zc.buildout
import ZConfig

import zodbserver.config
from zodbserver.recipes import instance, server


def fake_buildout(directory: Path) -> dict[str, dict[str, str]]:
    return {
        "buildout": {
            "directory": str(directory),
            "parts-directory": str(directory / "parts"),
            "bin-directory": str(directory / "bin"),
        }
    }


def install_server(directory: Path, **options: str) -> str:
    recipe = server.Recipe(fake_buildout(directory), "zeoserver", dict(options))
    recipe.install()
    return (directory / "parts" / "zeoserver" / "etc" / "zeo.conf").read_text()


def install_instance(directory: Path, **options: str) -> dict[str, Any]:
    recipe = instance.Recipe(fake_buildout(directory), "client1", dict(options))
    recipe.install()
    path = directory / "parts" / "client1" / "etc" / "instance.json"
    settings: dict[str, Any] = json.loads(path.read_text())
    return settings


def test_server_defaults(tmp_path: Path) -> None:
    conf = install_server(tmp_path)
    assert "address 127.0.0.1:8100" in conf
    assert f"path {tmp_path}/var/filestorage/Data.fs" in conf
    assert f"blob-dir {tmp_path}/var/blobstorage" in conf
    assert f"path {tmp_path}/var/log/zeoserver.log" in conf
    assert "invalidation-queue-size 100" in conf
    assert "read-only false" in conf
    assert "<filestorage 1>" in conf
    script = (tmp_path / "bin" / "zeoserver").read_text()
    assert os.access(tmp_path / "bin" / "zeoserver", os.X_OK)
    assert "zodbserver.cli" in script
    assert repr(str(tmp_path / "parts" / "zeoserver" / "etc" / "zeo.conf")) in script
    assert repr(str(tmp_path / "var")) in script


def test_server_config_loads(tmp_path: Path) -> None:
    """The generated zeo.conf is one the server accepts."""
    conf = install_server(
        tmp_path,
        **{"transaction-timeout": "30", "client-conflict-resolution": "true"},
    )
    path = tmp_path / "zeo.conf"
    path.write_text(conf)
    loaded = zodbserver.config.load_config(str(path))
    assert loaded.settings.transaction_timeout == 30


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("zeo-address", "8888", "address 127.0.0.1:8888"),
        ("zeo-address", "webdb:8888", "address webdb:8888"),
        ("file-storage", "data/Main.fs", "path {dir}/data/Main.fs"),
        ("blob-storage", "data/blobs", "blob-dir {dir}/data/blobs"),
        ("zeo-log", "logs/zeo.log", "path {dir}/logs/zeo.log"),
        ("zeo-log-level", "debug", "level DEBUG"),
        ("storage-number", "main", "<filestorage main>"),
        ("invalidation-queue-size", "5000", "invalidation-queue-size 5000"),
        ("read-only", "true", "read-only true"),
        ("transaction-timeout", "120", "transaction-timeout 120"),
        ("client-conflict-resolution", "on", "client-conflict-resolution true"),
        ("var", "state", "path {dir}/state/filestorage/Data.fs"),
        (
            "zeo-conf-additional",
            "<mappingstorage 2>\n</mappingstorage>",
            "<mappingstorage 2>",
        ),
    ],
)
def test_server_option(tmp_path: Path, option: str, value: str, expected: str) -> None:
    conf = install_server(tmp_path, **{option: value})
    assert expected.format(dir=tmp_path) in conf


def test_server_without_blobs(tmp_path: Path) -> None:
    assert "blob-dir" not in install_server(tmp_path, **{"blob-storage": ""})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("zeo-address", "notaport"),
        ("zeo-address", "host:99999"),
        ("read-only", "maybe"),
        ("invalidation-queue-size", "many"),
        ("invalidation-queue-size", "0"),
        ("transaction-timeout", "-1"),
        ("zeo-log-level", "LOUD"),
        ("pack-days", "soon"),
        ("client-conflict-resolution", "2"),
        ("authentication-database", "auth.db"),
        ("authentication-realm", "realm"),
    ],
)
def test_server_wrong_value(tmp_path: Path, option: str, value: str) -> None:
    with pytest.raises(zc.buildout.UserError, match=rf"^\[zeoserver\] {option}: "):
        server.Recipe(fake_buildout(tmp_path), "zeoserver", {option: value})


def test_instance_defaults(tmp_path: Path) -> None:
    settings = install_instance(tmp_path)
    assert settings["http-host"] == "127.0.0.1"
    assert settings["http-port"] == 8080
    assert settings["application"] == "zodbserver.instance.demo:application"
    assert settings["conflict-retries"] == 3
    zodb = settings["zodb-conf"]
    assert "server 127.0.0.1:8100" in zodb
    assert "storage 1" in zodb
    assert "cache-size 30MB" in zodb
    assert f"blob-dir {tmp_path}/var/blobcache-client1" in zodb
    assert "shared-blob-dir false" in zodb
    assert zodb == (tmp_path / "parts/client1/etc/zodb.conf").read_text()
    assert "zodbserver.instance.main" in (tmp_path / "bin" / "client1").read_text()


def test_instance_zodb_conf_loads(tmp_path: Path) -> None:
    """The generated <zodb> section parses with ZODB's schema + ours."""
    zodb = install_instance(
        tmp_path,
        **{"zeo-address": "webdb:8888 8889", "zeo-client-client": "c1"},
    )["zodb-conf"]
    schema = ZConfig.loadSchemaFile(
        io.StringIO(
            '<schema><import package="ZODB"/>'
            '<section type="ZODB.database" name="*" attribute="database"/>'
            "</schema>"
        )
    )
    config, _ = ZConfig.loadConfigFile(schema, io.StringIO(zodb))
    storage = config.database.config.storage.config
    assert storage.client == "c1"
    assert len(storage.server) == 2


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("zeo-address", "webdb:8888", "server webdb:8888"),
        ("zeo-address", "a:1 b:2", "server a:1\n    server b:2"),
        ("storage", "main", "storage main"),
        ("blob-storage", "var/blobs", "blob-dir {dir}/var/blobs"),
        ("zeo-client-cache-size", "200MB", "cache-size 200MB"),
        ("zeo-client-client", "client1", "client client1"),
        ("zeo-client-blob-cache-size", "1GB", "blob-cache-size 1GB"),
        ("read-only", "true", "read-only true"),
        ("zeo-client-read-only-fallback", "true", "read-only-fallback true"),
    ],
)
def test_instance_option(
    tmp_path: Path, option: str, value: str, expected: str
) -> None:
    zodb = install_instance(tmp_path, **{option: value})["zodb-conf"]
    assert expected.format(dir=tmp_path) in zodb


def test_instance_shared_blob(tmp_path: Path) -> None:
    zodb = install_instance(
        tmp_path, **{"shared-blob": "on", "blob-storage": "var/blobstorage"}
    )["zodb-conf"]
    assert "shared-blob-dir true" in zodb
    assert f"blob-dir {tmp_path}/var/blobstorage" in zodb


def test_instance_http_and_app_options(tmp_path: Path) -> None:
    settings = install_instance(
        tmp_path,
        **{
            "http-address": "0.0.0.0:8081",
            "application": "mypackage.wsgi:app",
            "conflict-retries": "7",
        },
    )
    assert (settings["http-host"], settings["http-port"]) == ("0.0.0.0", 8081)
    assert settings["application"] == "mypackage.wsgi:app"
    assert settings["conflict-retries"] == 7


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("zeo-address", "webdb:port"),
        ("http-address", "eighty"),
        ("http-address", "/tmp/socket"),
        ("shared-blob", "perhaps"),
        ("zeo-client-cache-size", "big"),
        ("zeo-client-blob-cache-size", "1TBB"),
        ("read-only", "2"),
        ("zeo-client-read-only-fallback", "x"),
        ("application", "not-dotted"),
        ("application", "egg:zodbserver#no-such-application"),
        ("application", "egg:no-such-distribution"),
        ("conflict-retries", "-1"),
        ("zeo-client-client", "../evil"),
    ],
)
def test_instance_wrong_value(tmp_path: Path, option: str, value: str) -> None:
    with pytest.raises(zc.buildout.UserError, match=rf"^\[client1\] {option}: "):
        instance.Recipe(fake_buildout(tmp_path), "client1", {option: value})


def test_instance_application_by_entry_point(tmp_path: Path) -> None:
    settings = install_instance(tmp_path, application="egg:zodbserver#demo")
    assert settings["application"] == "egg:zodbserver#demo"


def test_shared_blob_needs_blob_storage(tmp_path: Path) -> None:
    with pytest.raises(zc.buildout.UserError, match=r"^\[client1\] shared-blob: "):
        instance.Recipe(fake_buildout(tmp_path), "client1", {"shared-blob": "true"})


def test_instance_ssl_options_reach_zodb_conf_and_zope_conf(tmp_path: Path) -> None:
    from support.certificates import Certificates

    Certificates(tmp_path / "certificates").client("web")
    tls = {
        "ssl-certificate": "certificates/client-web.pem",
        "ssl-key": "certificates/client-web.key",
        "ssl-authenticate": "certificates/ca.pem",
        "ssl-server-hostname": "db.example",
    }
    zodb = install_instance(tmp_path, **tls)["zodb-conf"]
    assert f"certificate {tmp_path}/certificates/client-web.pem" in zodb
    assert f"authenticate {tmp_path}/certificates/ca.pem" in zodb
    assert "server-hostname db.example" in zodb
    zope_part = tmp_path / "zope"
    zope_part.mkdir()
    Certificates(zope_part / "certificates").client("web")
    recipe = instance.Recipe(
        fake_buildout(zope_part), "client1", {"application": "zope", **tls}
    )
    recipe.install()
    zope_conf = (zope_part / "parts" / "client1" / "etc" / "zope.conf").read_text()
    assert "<ssl>" in zope_conf
    assert f"key {zope_part}/certificates/client-web.key" in zope_conf


def test_instance_ssl_key_needs_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(zc.buildout.UserError, match=r"^\[client1\] ssl-key: "):
        instance.Recipe(fake_buildout(tmp_path), "client1", {"ssl-key": "k.pem"})
