"""``recipe = zodbserver:instance``: a client instance serving HTTP.

Options (plone.recipe.zope2instance's names and meanings)::

    [instance]
    recipe = zodbserver:instance
    zeo-address = 8100               # one or several (whitespace-separated)
    zeo-client = on                  # always on: the instance is a client
    http-address = 8080              # PORT (on ip-address) or HOST:PORT
    ip-address = 127.0.0.1           # the host of a bare http-address port
    http-fast-listen = on            # listen before the application loads
    threads = 4                      # request threads (old name:
                                     #   zserver-threads)
    max-request-body-size = 1073741824
    http-header-max-length = 262144  # bytes of request headers
    clear-untrusted-proxy-headers = false
    storage = 1                      # the storage name on the server (or
                                     #   zeo-storage, zope2instance's name)
    blob-storage = var/blobcache-<part>   # the client's blob cache / dir
    shared-blob = false              # true: blob-storage is the server's dir
    zeo-client-cache-size = 30MB
    zeo-client-client =              # a name: persistent cache files, in
    zeo-var = var                    #   this directory
    zeo-client-blob-cache-size =     # e.g. 1GB
    zeo-client-blob-cache-size-check =    # percent of it (10)
    zeo-client-drop-cache-rather-verify = # accepted: a cache too old to
                                     #   bring up to date is dropped anyway
    zeo-client-name =                # a label for the client in the log
    zeo-client-server-sync = false   # true: each transaction sees every
                                     #   commit that finished before it
    min-disconnect-poll =            # seconds between reconnect attempts,
    max-disconnect-poll =            #   from the first to the longest
    read-only = false
    zeo-client-read-only-fallback = false
    application = zodbserver.instance.demo:application
    conflict-retries = 3
    var = ${buildout:directory}/var
    pid-file = var/<part>.pid
    event-log = var/log/<part>.log   # also the output of bin/<part> start
    event-log-level = INFO
    access-log = var/log/<part>-access.log    # or z2-log; disable: none
    access-log-max-size =            # e.g. 10MB: rotate at that size,
    access-log-old-files = 1         #   keeping this many old files
    environment-vars =               # NAME VALUE a line (or pairs on one)
    deprecation-warnings =           # on: shown, off: ignored
    zopectl-umask =                  # e.g. 022
    zodb-cache-size =                # objects per connection (ZODB's 5000)
    zodb-cache-size-bytes =          # and/or bytes per connection
    eggs =                           # distributions on the script's path
    extra-paths =                    # directories on the script's path
    relative-paths = false
    initialization =                 # Python run by bin/<part> first
    ssl-certificate =                # TLS: this client's certificate,
    ssl-key =                        #   its key, the CA the server's
    ssl-authenticate =               #   certificate chains to, and the
    ssl-server-hostname =            #   name it has (<ssl> in zodb.conf)

Every other option fails the buildout, naming it: the zope2instance
options without a meaning here (other storages, ZServer's servers,
logging handlers, wsgi.ini templates, ZCML slugs) say what to do
instead (``_known_options``).

The application is a WSGI application (``module:callable``, or an entry
point ``egg:DIST#NAME`` in the ``zodbserver.application`` group) that finds
its database connection in ``environ["zodbserver.connection"]`` and the
root object in ``environ["zodbserver.root"]``; the instance gives it one
connection and one transaction per request (see ``instance.wsgi``).

Writes ``parts/<part>/etc/zodb.conf`` (a ZConfig ``<zodb>`` section, the
same one a ``zope.conf`` would hold), ``parts/<part>/etc/instance.json``
and ``bin/<part>`` (fg, start, stop, status).  The directories of the var
tree are made again by ``bin/<part> fg`` and ``start``, so a wiped var/
starts as buildout left it.

``application = zope`` serves a real Zope instead (the ``Zope``
distribution, installed with ``zodbserver[zope]``; Plone with ``eggs =
Plone``), with plone.recipe.zope2instance's options for it::

    user = admin:secret              # the initial manager (inituser)
    zodb-cache-size = 30000          # objects per connection
    debug-mode = off
    debug-exceptions = off
    verbose-security = off           # on: the Python security policy, verbose
    python-check-interval =
    default-zpublisher-encoding =
    client-home = var/<part>
    template-cache = on              # Chameleon's cache in var/cache
    zope-conf-imports =              # %import lines
    zope-conf-additional =           # lines appended to zope.conf
    zope-conf =                      # or: this zope.conf, used as it is

The part's directory is the Zope instance home: ``etc/zope.conf`` holds
``%import zodbserver`` and a ``<zodb_db main>`` (mount point ``/``) whose
storage is the same ``<clientstorage>`` as ``zodb.conf``'s; ``inituser``
holds the initial manager (salted SHA-1, as Zope reads it; Zope removes
the file once the user exists, and ``bin/<part> start`` writes it again,
so that a new database gets the manager); the client home is
``var/<part>``.  ``user`` works with ``zope-conf`` too.  Zope runs its
own transaction per request, so it is not wrapped in ours.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import secrets
from collections.abc import MutableMapping
from typing import Any

import zc.buildout

from ..instance.wsgi import ZOPE_APPLICATION, entry_point
from ..instance.zope_app import MISSING_ZOPE
from ._known_options import INSTANCE_REFUSED, INSTANCE_REFUSED_PREFIXES, check_options
from ._options import TRUE, PartOptions, egg_locations, python_script, write_file

RECIPE = "zodbserver:instance"
DEFAULT_APPLICATION = "zodbserver.instance.demo:application"
DEFAULT_ZOPE_CACHE_SIZE = 30000
#: waitress's and plone.recipe.zope2instance's number of request threads.
DEFAULT_THREADS = 4
#: The options of the generated zope.conf, pointless with ``zope-conf``.
GENERATED_ZOPE_CONF_OPTIONS = (
    "debug-mode",
    "debug-exceptions",
    "verbose-security",
    "client-home",
    "zope-conf-imports",
    "zope-conf-additional",
    "python-check-interval",
    "default-zpublisher-encoding",
    "zodb-cache-size",
    "zodb-cache-size-bytes",
)
#: Options that only a Zope instance (``application = zope``) reads.
ZOPE_OPTIONS = (
    "user",
    "zope-conf",
    "template-cache",
    *(name for name in GENERATED_ZOPE_CONF_OPTIONS if not name.startswith("zodb-")),
)
#: Options of the ``<clientstorage>`` section.
CLIENT_OPTIONS = (
    "zeo-address",
    "storage",
    "zeo-storage",
    "blob-storage",
    "shared-blob",
    "zeo-client",
    "zeo-client-cache-size",
    "zeo-client-client",
    "zeo-var",
    "zeo-client-blob-cache-size",
    "zeo-client-blob-cache-size-check",
    "zeo-client-drop-cache-rather-verify",
    "zeo-client-name",
    "zeo-client-server-sync",
    "zeo-client-read-only-fallback",
    "read-only",
    "min-disconnect-poll",
    "max-disconnect-poll",
    "ssl-certificate",
    "ssl-key",
    "ssl-authenticate",
    "ssl-server-hostname",
)
#: Options of the HTTP server, the process and its logs.
PROCESS_OPTIONS = (
    "http-address",
    "ip-address",
    "http-fast-listen",
    "threads",
    "zserver-threads",
    "wsgi",
    "max-request-body-size",
    "http-header-max-length",
    "clear-untrusted-proxy-headers",
    "application",
    "conflict-retries",
    "var",
    "pid-file",
    "event-log",
    "event-log-level",
    "access-log",
    "z2-log",
    "access-log-max-size",
    "access-log-old-files",
    "environment-vars",
    "deprecation-warnings",
    "zopectl-umask",
    "eggs",
    "extra-paths",
    "relative-paths",
    "initialization",
    "scripts",
)
KNOWN_OPTIONS = frozenset(
    (*CLIENT_OPTIONS, *PROCESS_OPTIONS, *ZOPE_OPTIONS, *GENERATED_ZOPE_CONF_OPTIONS)
)
LOG_LEVELS = ("CRITICAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG")


class Recipe:
    def __init__(
        self, buildout: Any, name: str, options: MutableMapping[str, str]
    ) -> None:
        self.buildout = buildout
        self.name = name
        self.options = options
        self.parsed = PartOptions(name, options)
        check_options(
            self.parsed,
            RECIPE,
            KNOWN_OPTIONS,
            INSTANCE_REFUSED,
            INSTANCE_REFUSED_PREFIXES,
        )
        self.base = buildout["buildout"]["directory"]
        options["location"] = os.path.join(
            buildout["buildout"]["parts-directory"], name
        )
        options["bin-directory"] = buildout["buildout"]["bin-directory"]
        self.paths = self.script_paths()
        self.zodb_conf, self.settings = self.render()
        self.zope = ZopeInstance.from_options(self) if self.is_zope else None
        if self.zope is not None:
            self.settings["zope-conf"] = self.zope.zope_conf_path
            self.settings["directories"].append(self.zope.client_home)
            if self.zope.inituser is not None:
                self.settings["inituser"] = {
                    "path": os.path.join(self.zope.instance_home, "inituser"),
                    "text": self.zope.inituser,
                }
            self.settings["environment"] = {
                **self.zope.environment,
                **self.settings["environment"],
            }
            cache = self.zope.environment.get("CHAMELEON_CACHE")
            if cache and "CHAMELEON_CACHE" not in self.environment:
                self.settings["directories"].append(cache)

    def lines(self, option: str) -> list[str]:
        """One value a line, as zc.recipe.egg reads eggs and extra-paths."""
        return [
            line.strip()
            for line in self.parsed.text(option).splitlines()
            if line.strip()
        ]

    def script_paths(self) -> list[str]:
        """``eggs`` (with their dependencies) and ``extra-paths``."""
        eggs = [spec for line in self.lines("eggs") for spec in line.split()]
        locations: list[str] = []
        if eggs:
            try:
                locations = egg_locations(self.buildout, eggs)
            except zc.buildout.UserError as error:
                raise self.parsed.fail("eggs", str(error)) from None
        extra = [os.path.join(self.base, path) for path in self.lines("extra-paths")]
        return list(dict.fromkeys([*locations, *extra]))

    def render(self) -> tuple[str, dict[str, Any]]:
        parsed = self.parsed
        var = parsed.path("var", "var", self.base)
        self.var = var
        http_host, http_port = self.http_address()
        application = self.application()
        self.storage_lines = self.clientstorage_lines()
        zodb_lines = ["<zodb>"]
        cache_size = parsed.integer("zodb-cache-size", 0, minimum=1)
        if cache_size and not self.is_zope:
            zodb_lines.append(f"  cache-size {cache_size}")
        cache_bytes = parsed.size("zodb-cache-size-bytes")
        if cache_bytes and not self.is_zope:
            zodb_lines.append(f"  cache-size-bytes {cache_bytes}")
        zodb_conf = "\n".join(
            [
                f"# Generated by zodbserver:instance for [{self.name}]; do not edit.",
                "%import zodbserver",
                *zodb_lines,
                *self.storage_lines,
                "</zodb>",
            ]
        )
        log_file = parsed.path(
            "event-log", os.path.join(var, "log", f"{self.name}.log"), self.base
        )
        self.environment = self.environment_vars()
        settings: dict[str, Any] = {
            "http-host": http_host,
            "http-port": http_port,
            "application": application,
            "conflict-retries": parsed.integer("conflict-retries", 3),
            "zodb-conf": zodb_conf + "\n",
            "pid-file": parsed.path(
                "pid-file", os.path.join(var, f"{self.name}.pid"), self.base
            ),
            "log-file": log_file,
            "log-level": self.log_level(),
            "threads": self.threads(),
            "fast-listen": parsed.flag("http-fast-listen", default=True),
            "max-request-body-size": parsed.integer(
                "max-request-body-size", 1073741824, minimum=1
            ),
            "max-request-header-size": parsed.integer(
                "http-header-max-length", 262144, minimum=1
            ),
            "clear-untrusted-proxy-headers": parsed.flag(
                "clear-untrusted-proxy-headers"
            ),
            "environment": self.environment,
            "deprecation-warnings": self.deprecation_warnings(),
            "umask": self.umask(),
            "inituser": None,
            **self.access_log(),
        }
        self.wsgi()
        self.scripts()
        settings["directories"] = list(
            dict.fromkeys(
                [
                    var,
                    os.path.dirname(settings["pid-file"]),
                    os.path.dirname(log_file),
                    self.blob_dir,
                    self.zeo_var,
                    *(
                        [os.path.dirname(settings["access-log"])]
                        if settings["access-log"]
                        else []
                    ),
                ]
            )
        )
        return zodb_conf + "\n", settings

    def http_address(self) -> tuple[str, int]:
        parsed = self.parsed
        text = parsed.text("http-address") or "8080"
        host = parsed.text("ip-address")
        if host and text.isdigit():
            text = f"{host}:{text}"
        http = parsed.parsed_address("http-address", text)
        if isinstance(http, str):
            raise parsed.fail("http-address", "expected PORT or HOST:PORT, not a path")
        return http

    def threads(self) -> int:
        """``threads`` (or its old name ``zserver-threads``): request threads."""
        parsed = self.parsed
        threads = parsed.integer("threads", 0, minimum=1)
        old = parsed.integer("zserver-threads", 0, minimum=1)
        if threads and old and threads != old:
            raise parsed.fail(
                "zserver-threads",
                f"is the old name of threads, which says {threads}: give one",
            )
        return threads or old or DEFAULT_THREADS

    def log_level(self) -> str:
        level = (self.parsed.text("event-log-level") or "INFO").upper()
        if level not in LOG_LEVELS:
            raise self.parsed.fail(
                "event-log-level",
                f"expected one of {', '.join(LOG_LEVELS)}, not {level!r}",
            )
        return level

    def access_log(self) -> dict[str, Any]:
        """The access log's file (None: ``disable``) and its rotation."""
        parsed = self.parsed
        given = parsed.text("z2-log") or parsed.text("access-log")
        if parsed.text("z2-log") and parsed.text("access-log"):
            raise parsed.fail("z2-log", "is the old name of access-log: give one")
        max_size = parsed.size("access-log-max-size")
        old_files = parsed.integer("access-log-old-files", 1, minimum=1)
        if given.lower() == "disable":
            path = None
        else:
            default = os.path.join(self.var, "log", f"{self.name}-access.log")
            path = os.path.join(self.base, given) if given else default
        return {
            "access-log": path,
            "access-log-max-size": _bytes(max_size),
            "access-log-old-files": old_files,
        }

    def environment_vars(self) -> dict[str, str]:
        """``environment-vars``: ``NAME VALUE`` a line, or pairs on one line."""
        text = self.parsed.text("environment-vars")
        if not text:
            return {}
        if "\n" in text:
            pairs = [line.strip().split(None, 1) for line in text.splitlines()]
            pairs = [pair for pair in pairs if pair]
        else:
            words = text.split()
            pairs = [words[index : index + 2] for index in range(0, len(words), 2)]
        environment = {}
        for pair in pairs:
            if len(pair) != 2:
                raise self.parsed.fail(
                    "environment-vars", f"{pair[0]!r} has no value (NAME VALUE)"
                )
            environment[pair[0]] = pair[1].strip()
        return environment

    def deprecation_warnings(self) -> str | None:
        value = self.parsed.text("deprecation-warnings").lower()
        if not value:
            return None
        if value in ("off", "disable", "false", "ignore"):
            return "ignore"
        if value in ("on", "enable", "true", "default"):
            return "default"
        raise self.parsed.fail(
            "deprecation-warnings", f"expected on or off, not {value!r}"
        )

    def umask(self) -> int | None:
        value = self.parsed.text("zopectl-umask")
        if not value:
            return None
        try:
            return int(value, 8)
        except ValueError:
            raise self.parsed.fail(
                "zopectl-umask", f"expected an octal umask such as 022, not {value!r}"
            ) from None

    def wsgi(self) -> None:
        value = self.parsed.text("wsgi")
        if value and value.lower() not in TRUE:
            raise self.parsed.fail(
                "wsgi",
                "the instance always serves WSGI with its own waitress; to "
                "use another WSGI server, point it at "
                'zodbserver.instance.wsgi:make_app("parts/'
                f'{self.name}/etc/instance.json")',
            )

    def scripts(self) -> None:
        if self.parsed.text("scripts"):
            raise self.parsed.fail(
                "scripts",
                "the instance writes no console scripts of its eggs (an empty "
                "scripts is accepted); use a zc.recipe.egg part for them",
            )

    def application(self) -> str:
        """The ``application`` option: ``module:callable``, ``egg:DIST#NAME``
        or ``zope``."""
        parsed = self.parsed
        application = parsed.text("application") or DEFAULT_APPLICATION
        self.is_zope = application == ZOPE_APPLICATION
        if self.is_zope and not _importable("Zope2", self.paths):
            raise parsed.fail("application", MISSING_ZOPE + ", or list Zope in eggs")
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
        if not parsed.flag("zeo-client", default=True):
            raise parsed.fail(
                "zeo-client",
                "this instance is always a client of a zodbserver (or ZEO) "
                "server; for a Zope that opens its Data.fs itself, use "
                "plone.recipe.zope2instance",
            )
        servers = parsed.text("zeo-address") or "8100"
        addresses = [parsed.address("zeo-address", item) for item in servers.split()]
        storage = self.storage_name()
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
        check = parsed.integer("zeo-client-blob-cache-size-check", 0, minimum=1)
        if check > 100:
            raise parsed.fail(
                "zeo-client-blob-cache-size-check",
                f"a percentage of zeo-client-blob-cache-size, not {check}",
            )
        # Accepted for what it says: like ZEO 5's, the client drops a cache
        # it cannot bring up to date from the server's recent invalidations.
        parsed.flag("zeo-client-drop-cache-rather-verify")
        client = parsed.text("zeo-client-client")
        if client and not client.replace("-", "").replace("_", "").isalnum():
            raise parsed.fail("zeo-client-client", f"not a cache file name: {client!r}")
        zeo_var = parsed.path("zeo-var", self.var, self.base)
        self.zeo_var = zeo_var
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
        if parsed.flag("zeo-client-server-sync"):
            lines.append("    server-sync true")
        if blob_cache_size:
            lines.append(f"    blob-cache-size {blob_cache_size}")
        if check:
            lines.append(f"    blob-cache-size-check {check}")
        if client:
            lines += [f"    client {client}", f"    var {zeo_var}"]
        label = parsed.text("zeo-client-name")
        if label:
            lines.append(f"    client-label {label}")
        for option in ("min-disconnect-poll", "max-disconnect-poll"):
            seconds = parsed.number(option, minimum=0.001)
            if seconds:
                lines.append(f"    {option} {seconds}")
        lines += self.ssl_lines()
        lines.append("  </clientstorage>")
        return lines

    def storage_name(self) -> str:
        """``storage``, or zope2instance's name for it, ``zeo-storage``."""
        parsed = self.parsed
        storage, zeo_storage = parsed.text("storage"), parsed.text("zeo-storage")
        if storage and zeo_storage and storage != zeo_storage:
            raise parsed.fail(
                "zeo-storage",
                f"names the same setting as storage ({storage}): give one",
            )
        return storage or zeo_storage or "1"

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

    def relative_paths(self) -> str | None:
        value = self.parsed.text("relative-paths") or self.buildout["buildout"].get(
            "relative-paths", "false"
        )
        if value not in ("true", "false"):
            raise self.parsed.fail(
                "relative-paths", f"expected true or false, not {value!r}"
            )
        return self.base if value == "true" else None

    def install(self) -> list[str]:
        location = self.options["location"]
        for directory in self.settings["directories"]:
            os.makedirs(directory, exist_ok=True)
        write_file(os.path.join(location, "etc", "zodb.conf"), self.zodb_conf)
        if self.zope is not None:
            self.zope.install()
        config = os.path.join(location, "etc", "instance.json")
        write_file(config, json.dumps(self.settings, indent=2) + "\n")
        if self.settings["inituser"] is not None:
            os.chmod(config, 0o600)  # the initial manager's salted hash
        script = os.path.join(self.options["bin-directory"], self.name)
        text = python_script(
            "zodbserver.instance.main",
            ["-C", config],
            paths=self.paths,
            relative_to=self.relative_paths(),
            script_directory=self.options["bin-directory"],
            initialization=self.options.get("initialization", ""),
        )
        write_file(script, text, executable=True)
        return [location, script]

    update = install


def _importable(module: str, paths: list[str]) -> bool:
    """Is ``module`` in this Python, or in one of ``paths``?"""
    if importlib.util.find_spec(module) is not None:
        return True
    if not paths:
        return False
    return importlib.machinery.PathFinder.find_spec(module, paths) is not None


def _bytes(size: str) -> int:
    """A size as the options write it (``10MB``) in bytes; 0 when empty."""
    if not size:
        return 0
    text = size.upper().removesuffix("B")
    factor = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * factor


class ZopeInstance:
    """The Zope instance home of an ``application = zope`` part."""

    def __init__(
        self,
        instance_home: str,
        client_home: str,
        zope_conf: str | None,
        inituser: str | None,
        environment: dict[str, str],
    ) -> None:
        self.instance_home = instance_home
        self.client_home = client_home
        #: The generated zope.conf text; None when the part names its own.
        self.zope_conf = zope_conf
        self.inituser = inituser
        #: Variables the instance sets for Zope (the Chameleon cache).
        self.environment = environment
        self.zope_conf_path = os.path.join(instance_home, "etc", "zope.conf")

    @classmethod
    def from_options(cls, recipe: Recipe) -> ZopeInstance:
        parsed = recipe.parsed
        instance_home = recipe.options["location"]
        client_home = parsed.path(
            "client-home", os.path.join(recipe.var, recipe.name), recipe.base
        )
        inituser = inituser_line(parsed)
        environment = template_cache(recipe)
        given = parsed.text("zope-conf")
        if given:
            for option in GENERATED_ZOPE_CONF_OPTIONS:
                if parsed.text(option):
                    raise parsed.fail(
                        option,
                        "has no effect with zope-conf (that file is used as "
                        "it is): set it in the file, or drop zope-conf",
                    )
            path = os.path.join(recipe.base, given)
            # Zope reads inituser from the instance home its zope.conf names.
            home = zope_conf_instance_home(path) or instance_home
            zope = cls(home, client_home, None, inituser, environment)
            zope.zope_conf_path = path
            return zope
        lines = [
            f"# Generated by zodbserver:instance for [{recipe.name}]; do not edit.",
            "%import zodbserver",
            *(f"%import {name}" for name in recipe.lines("zope-conf-imports")),
            f"instancehome {instance_home}",
            f"clienthome {client_home}",
            f"debug-mode {'on' if parsed.flag('debug-mode') else 'off'}",
            *zope_directives(recipe),
            "<zodb_db main>",
            "  mount-point /",
            *zodb_db_cache_lines(parsed),
            *recipe.storage_lines,
            "</zodb_db>",
        ]
        additional = parsed.text("zope-conf-additional")
        if additional:
            lines.append(additional)
        zope_conf = "\n".join(lines) + "\n"
        return cls(instance_home, client_home, zope_conf, inituser, environment)

    def install(self) -> None:
        os.makedirs(self.client_home, exist_ok=True)
        if self.zope_conf is not None:
            write_file(self.zope_conf_path, self.zope_conf)
        if self.inituser is not None:
            write_inituser(os.path.join(self.instance_home, "inituser"), self.inituser)


def zope_conf_instance_home(path: str) -> str | None:
    """The ``instancehome`` a zope.conf names (``%define`` names expanded);
    None when it names none or cannot be read."""
    try:
        with open(path) as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    names: dict[str, str] = {}

    def expand(match: re.Match[str]) -> str:
        return names.get((match.group(1) or match.group(2)).lower(), match.group(0))

    for line in lines:
        words = line.split(None, 2)
        if len(words) == 3 and words[0].lower() == "%define":
            names[words[1].lower()] = VARIABLE.sub(expand, words[2].strip())
        elif len(words) >= 2 and words[0].lower() == "instancehome":
            return VARIABLE.sub(expand, line.split(None, 1)[1].strip())
    return None


#: ``$NAME`` or ``${NAME}`` in a ZConfig value.
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def write_inituser(path: str, text: str) -> None:
    """Zope's ``inituser`` file, readable by its owner only."""
    write_file(path, text)
    os.chmod(path, 0o600)


def zope_directives(recipe: Recipe) -> list[str]:
    """zope.conf lines for the Zope options the part sets."""
    parsed = recipe.parsed
    lines = []
    if parsed.text("debug-exceptions"):
        lines.append(f"debug-exceptions {_on_off(parsed, 'debug-exceptions')}")
    if parsed.flag("verbose-security"):
        lines += ["security-policy-implementation python", "verbose-security on"]
    interval = parsed.integer("python-check-interval", 0, minimum=1)
    if interval:
        lines.append(f"python-check-interval {interval}")
    encoding = parsed.text("default-zpublisher-encoding")
    if encoding:
        lines.append(f"default-zpublisher-encoding {encoding}")
    return lines


def zodb_db_cache_lines(parsed: PartOptions) -> list[str]:
    size = parsed.integer("zodb-cache-size", DEFAULT_ZOPE_CACHE_SIZE, minimum=1)
    lines = [f"  cache-size {size}"]
    cache_bytes = parsed.size("zodb-cache-size-bytes")
    if cache_bytes:
        lines.append(f"  cache-size-bytes {cache_bytes}")
    return lines


def template_cache(recipe: Recipe) -> dict[str, str]:
    """``template-cache``: Chameleon's cache directory, ``var/cache`` when on."""
    parsed = recipe.parsed
    value = parsed.text("template-cache") or "on"
    if value.lower() in ("off", "0", "false", "disabled"):
        return {}
    if value.lower() in ("on", "1", "true", "enabled"):
        return {"CHAMELEON_CACHE": os.path.join(recipe.var, "cache")}
    return {"CHAMELEON_CACHE": os.path.join(recipe.base, value)}


def _on_off(parsed: PartOptions, option: str) -> str:
    return "on" if parsed.flag(option) else "off"


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
