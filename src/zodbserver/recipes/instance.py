"""``recipe = zodbserver:instance``: a client instance serving HTTP.

Options (plone.recipe.zope2instance's names for the ZEO client part)::

    [instance]
    recipe = zodbserver:instance
    zeo-address = 8100               # one or several (whitespace-separated)
    http-address = 8080              # PORT (on 127.0.0.1) or HOST:PORT
    storage = 1                      # the storage name on the server
    blob-storage = var/blobcache-<part>   # the client's blob cache / dir
    shared-blob = false              # true: blob-storage is the server's dir
    zeo-client-cache-size = 30MB
    zeo-client-client =              # a name: persistent cache files
    zeo-client-blob-cache-size =     # e.g. 1GB
    read-only = false
    zeo-client-read-only-fallback = false
    application = zodbserver.instance.demo:application
    conflict-retries = 3
    var = ${buildout:directory}/var
    zodb-cache-size =                # objects per connection (ZODB's 5000)
    ssl-certificate =                # TLS: this client's certificate,
    ssl-key =                        #   its key, the CA the server's
    ssl-authenticate =               #   certificate chains to, and the
    ssl-server-hostname =            #   name it has (<ssl> in zodb.conf)

The application is a WSGI application (``module:callable``, or an entry
point ``egg:DIST#NAME`` in the ``zodbserver.application`` group) that finds
its database connection in ``environ["zodbserver.connection"]`` and the
root object in ``environ["zodbserver.root"]``; the instance gives it one
connection and one transaction per request (see ``instance.wsgi``).

Writes ``parts/<part>/etc/zodb.conf`` (a ZConfig ``<zodb>`` section, the
same one a ``zope.conf`` would hold), ``parts/<part>/etc/instance.json``
and ``bin/<part>`` (fg, start, stop, status).

``application = zope`` serves a real Zope instead (the ``Zope``
distribution, installed with ``zodbserver[zope]``), with
plone.recipe.zope2instance's options for it::

    user = admin:secret              # the initial manager (inituser)
    zodb-cache-size = 30000          # objects per connection
    debug-mode = off
    zope-conf-additional =           # lines appended to zope.conf
    zope-conf =                      # or: this zope.conf, used as it is

The part's directory is the Zope instance home: ``etc/zope.conf`` holds
``%import zodbserver`` and a ``<zodb_db main>`` (mount point ``/``) whose
storage is the same ``<clientstorage>`` as ``zodb.conf``'s; ``inituser``
holds the initial manager (salted SHA-1, as Zope reads it; Zope removes
the file once the user exists); the client home is ``var/<part>``.  Zope
runs its own transaction per request, so it is not wrapped in ours.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import secrets
from collections.abc import MutableMapping
from typing import Any

from ..instance.wsgi import ZOPE_APPLICATION, entry_point
from ..instance.zope_app import MISSING_ZOPE
from ._options import PartOptions, python_script, write_file

DEFAULT_APPLICATION = "zodbserver.instance.demo:application"
DEFAULT_ZOPE_CACHE_SIZE = 30000
#: Options that only a Zope instance (``application = zope``) reads.
ZOPE_OPTIONS = ("user", "debug-mode", "zope-conf", "zope-conf-additional")
#: Options that shape the generated zope.conf, pointless with ``zope-conf``.
GENERATED_ZOPE_CONF_OPTIONS = (
    "user",
    "debug-mode",
    "zope-conf-additional",
    "zodb-cache-size",
)


class Recipe:
    def __init__(
        self, buildout: Any, name: str, options: MutableMapping[str, str]
    ) -> None:
        self.name = name
        self.options = options
        self.base = buildout["buildout"]["directory"]
        options["location"] = os.path.join(
            buildout["buildout"]["parts-directory"], name
        )
        options["bin-directory"] = buildout["buildout"]["bin-directory"]
        self.parsed = PartOptions(name, options)
        self.zodb_conf, self.settings = self.render()
        self.zope = ZopeInstance.from_options(self) if self.is_zope else None
        if self.zope is not None:
            self.settings["zope-conf"] = self.zope.zope_conf_path

    def render(self) -> tuple[str, dict[str, Any]]:
        parsed = self.parsed
        var = parsed.path("var", "var", self.base)
        http = parsed.parsed_address(
            "http-address", parsed.text("http-address") or "8080"
        )
        if isinstance(http, str):
            raise parsed.fail("http-address", "expected PORT or HOST:PORT, not a path")
        http_host, http_port = http
        self.var = var
        application = self.application()
        self.storage_lines = self.clientstorage_lines()
        zodb_lines = ["<zodb>"]
        cache_size = parsed.integer("zodb-cache-size", 0, minimum=1)
        if cache_size and not self.is_zope:
            zodb_lines.append(f"  cache-size {cache_size}")
        zodb_conf = "\n".join(
            [
                f"# Generated by zodbserver:instance for [{self.name}]; do not edit.",
                "%import zodbserver",
                *zodb_lines,
                *self.storage_lines,
                "</zodb>",
            ]
        )
        settings = {
            "http-host": http_host,
            "http-port": http_port,
            "application": application,
            "conflict-retries": parsed.integer("conflict-retries", 3),
            "zodb-conf": zodb_conf + "\n",
            "pid-file": os.path.join(var, f"{self.name}.pid"),
            "log-file": os.path.join(var, "log", f"{self.name}.log"),
        }
        return zodb_conf + "\n", settings

    def application(self) -> str:
        """The ``application`` option: ``module:callable``, ``egg:DIST#NAME``
        or ``zope``."""
        parsed = self.parsed
        application = parsed.text("application") or DEFAULT_APPLICATION
        self.is_zope = application == ZOPE_APPLICATION
        if self.is_zope and importlib.util.find_spec("Zope2") is None:
            raise parsed.fail("application", MISSING_ZOPE)
        if application.startswith("egg:"):
            try:
                entry_point(application)
            except LookupError as error:
                raise parsed.fail("application", str(error)) from None
        elif not self.is_zope:
            module, colon, attribute = application.partition(":")
            if not colon or not module or not attribute:
                raise parsed.fail(
                    "application",
                    f"expected module:callable, egg:DIST#NAME or "
                    f"{ZOPE_APPLICATION}, not {application!r}",
                )
        if not self.is_zope:
            for option in ZOPE_OPTIONS:
                if parsed.text(option):
                    raise parsed.fail(
                        option, f"only for application = {ZOPE_APPLICATION}"
                    )
        return application

    def clientstorage_lines(self) -> list[str]:
        """The ``<clientstorage>`` section, indented for ``<zodb>``."""
        parsed = self.parsed
        servers = parsed.text("zeo-address") or "8100"
        addresses = [parsed.address("zeo-address", item) for item in servers.split()]
        storage = parsed.text("storage") or "1"
        shared = parsed.flag("shared-blob")
        blob_text = parsed.text("blob-storage")
        if shared and not blob_text:
            raise parsed.fail(
                "shared-blob", "needs blob-storage: the server's blob directory"
            )
        self.blob_dir = parsed.path(
            "blob-storage", os.path.join(self.var, f"blobcache-{self.name}"), self.base
        )
        cache_size = parsed.size("zeo-client-cache-size") or "30MB"
        blob_cache_size = parsed.size("zeo-client-blob-cache-size")
        client = parsed.text("zeo-client-client")
        if client and not client.replace("-", "").replace("_", "").isalnum():
            raise parsed.fail("zeo-client-client", f"not a cache file name: {client!r}")
        read_only = parsed.flag("read-only")
        fallback = parsed.flag("zeo-client-read-only-fallback")
        lines = [
            "  <clientstorage>",
            *(f"    server {address}" for address in addresses),
            f"    storage {storage}",
            f"    cache-size {cache_size}",
            f"    blob-dir {self.blob_dir}",
            f"    shared-blob-dir {str(shared).lower()}",
            f"    read-only {str(read_only).lower()}",
            f"    read-only-fallback {str(fallback).lower()}",
        ]
        if blob_cache_size:
            lines.append(f"    blob-cache-size {blob_cache_size}")
        if client:
            lines += [f"    client {client}", f"    var {self.var}"]
        lines += self.ssl_lines()
        lines.append("  </clientstorage>")
        return lines

    def ssl_lines(self) -> list[str]:
        """``<ssl>`` for a TLS server: the client's certificate and key, the
        CA the server's certificate chains to, the name it has."""
        parsed = self.parsed
        files = {
            key: parsed.text(f"ssl-{key}")
            for key in ("certificate", "key", "authenticate")
        }
        hostname = parsed.text("ssl-server-hostname")
        if not any(files.values()) and not hostname:
            return []
        if files["key"] and not files["certificate"]:
            raise parsed.fail("ssl-key", "needs ssl-certificate")
        lines = ["    <ssl>"]
        for key, value in files.items():
            if value:
                lines.append(f"      {key} {os.path.join(self.base, value)}")
        if hostname:
            lines.append(f"      server-hostname {hostname}")
        return [*lines, "    </ssl>"]

    def install(self) -> list[str]:
        location = self.options["location"]
        os.makedirs(os.path.join(self.var, "log"), exist_ok=True)
        os.makedirs(self.blob_dir, exist_ok=True)
        write_file(os.path.join(location, "etc", "zodb.conf"), self.zodb_conf)
        if self.zope is not None:
            self.zope.install()
        config = os.path.join(location, "etc", "instance.json")
        write_file(config, json.dumps(self.settings, indent=2) + "\n")
        script = os.path.join(self.options["bin-directory"], self.name)
        text = python_script("zodbserver.instance.main", ["-C", config])
        write_file(script, text, executable=True)
        return [location, script]

    update = install


class ZopeInstance:
    """The Zope instance home of an ``application = zope`` part."""

    def __init__(
        self,
        instance_home: str,
        client_home: str,
        zope_conf: str | None,
        inituser: str | None,
    ) -> None:
        self.instance_home = instance_home
        self.client_home = client_home
        #: The generated zope.conf text; None when the part names its own.
        self.zope_conf = zope_conf
        self.inituser = inituser
        self.zope_conf_path = os.path.join(instance_home, "etc", "zope.conf")

    @classmethod
    def from_options(cls, recipe: Recipe) -> ZopeInstance:
        parsed = recipe.parsed
        instance_home = recipe.options["location"]
        client_home = os.path.join(recipe.var, recipe.name)
        given = parsed.text("zope-conf")
        if given:
            for option in GENERATED_ZOPE_CONF_OPTIONS:
                if parsed.text(option):
                    raise parsed.fail(
                        option,
                        "has no effect with zope-conf (that file is used as "
                        "it is): set it in the file, or drop zope-conf",
                    )
            zope = cls(instance_home, client_home, None, None)
            zope.zope_conf_path = os.path.join(recipe.base, given)
            return zope
        cache_size = parsed.integer(
            "zodb-cache-size", DEFAULT_ZOPE_CACHE_SIZE, minimum=1
        )
        lines = [
            f"# Generated by zodbserver:instance for [{recipe.name}]; do not edit.",
            "%import zodbserver",
            f"instancehome {instance_home}",
            f"clienthome {client_home}",
            f"debug-mode {'on' if parsed.flag('debug-mode') else 'off'}",
            "<zodb_db main>",
            "  mount-point /",
            f"  cache-size {cache_size}",
            *recipe.storage_lines,
            "</zodb_db>",
        ]
        additional = parsed.text("zope-conf-additional")
        if additional:
            lines.append(additional)
        inituser = inituser_line(parsed)
        return cls(instance_home, client_home, "\n".join(lines) + "\n", inituser)

    def install(self) -> None:
        os.makedirs(self.client_home, exist_ok=True)
        if self.zope_conf is None:
            return
        write_file(self.zope_conf_path, self.zope_conf)
        if self.inituser is not None:
            path = write_file(
                os.path.join(self.instance_home, "inituser"), self.inituser
            )
            os.chmod(path, 0o600)


def inituser_line(parsed: PartOptions) -> str | None:
    """``user = NAME:PASSWORD`` as a line of Zope's ``inituser`` file."""
    value = parsed.text("user")
    if not value:
        return None
    name, colon, password = value.partition(":")
    if not colon or not name.strip() or not password:
        raise parsed.fail("user", "expected NAME:PASSWORD, e.g. admin:secret")
    return f"{name.strip()}:{salted_sha(password)}\n"


def salted_sha(password: str) -> str:
    """``{SSHA}``: base64 of SHA-1(password + salt) + salt, as Zope checks it."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()
