"""``recipe = zodbserver:server``: a zeo.conf and the scripts to run it.

The options are plone.recipe.zeoserver's, with its defaults::

    [zeoserver]
    recipe = zodbserver:server
    zeo-address = 8100                  # PORT (on 127.0.0.1), HOST:PORT or a path
    monitor-address =                   # the monitor's HTTP address, as
                                        #   zeo-address; empty: no monitor
    var = ${buildout:directory}/var
    file-storage = var/filestorage/Data.fs   # relative to the buildout
    blob-storage = var/blobstorage           # empty: no blobs
    zeo-log = var/log/<part>.log
    zeo-log-level = INFO
    zeo-log-format = %(asctime)s %(levelname)s %(name)s %(message)s
    zeo-log-json = false                # true: a JSON object a line, UTF-8
    zeo-log-max-size =                  # e.g. 10MB: rotate the log at that size
    zeo-log-old-files = 1               # rotated files kept (with max-size)
    storage-number = 1
    invalidation-queue-size = 100
    read-only = false
    transaction-timeout =               # seconds; empty: none
    slow-commit-threshold =             # seconds; empty: the server's 1
    client-conflict-resolution = false
    ssl-certificate =                   # TLS: the server's certificate chain,
    ssl-key =                           #   its key, and the CA (or directory)
    ssl-authenticate =                  #   clients' certificates chain to,
                                        #   or SERVER-ONLY (<ssl> in zeo.conf)
    access-rules =                      # who may read, write or pack what
    replicate-from =                    # HOST:PORT: be a read-only replica
    sync-replicas = 0                   # replicas a commit waits for
    sync-replicas-timeout =             # seconds; empty: the server's 10
    sync-replicas-missing =             # fail (the server's default) or async
    pack-days = 1                       # bin/zeopack's default
    pack-gc = true                      # false: packing keeps unreachable objects
    pack-keep-old = true                # false: no Data.fs.old copy when packing
    zeopack =                           # absent: bin/zeopack; empty: none;
                                        # a path: a wrapper for that script
    zeopack-script-name = zeopack
    effective-user =                    # run the server as this user (from root)
    socket-name =                       # the control file: see below
    pid-file = var/<part>.pid
    eggs =                              # distributions the scripts import
    extra-paths =                       # directories put on sys.path
    initialization =                    # Python run by the scripts first
    relative-paths = false              # default: [buildout] relative-paths
    zeo-conf-additional =               # lines appended to zeo.conf
    zeo-conf =                          # an existing zeo.conf replaces ours

It writes ``parts/<part>/etc/zeo.conf``, ``bin/<part>``, which runs
``zeoserver -C parts/<part>/etc/zeo.conf --var VAR "$@"``, so
``bin/zeoserver start|stop|restart|status|fg|logtail`` work, and
``bin/zeopack``, which packs storage ``storage-number`` at ``zeo-address``
to ``pack-days`` days ago (``bin/zeopack --help``; ``-d``, ``-S`` and a
server on its command line override them).

``socket-name`` is zdaemon's control socket in plone.recipe.zeoserver: the
file through which ``bin/zeoserver stop|status`` reach the running server.
There is no zdaemon here; that file is the locked pid file, so
``socket-name`` names the pid file, as ``pid-file`` does (both may be given
only if they agree).  ``effective-user`` is passed as ``zeoserver --user``:
started as root, the server switches to that user before it opens anything.
``pack-gc`` and ``pack-keep-old`` are settings of the FileStorage, which the
server packs, so they go into its ``<filestorage>`` section.

``monitor-address`` is where the server's monitor answers HTTP: metrics for
Prometheus, a status page and health checks (ZEO 4 had a monitor under that
name; this one is ours).  A commit holding the commit lock longer than
``slow-commit-threshold`` seconds is logged.  ``zeo-log-json = true`` writes
the log as JSON lines (:mod:`zodbserver.logformat`) for log shippers:
``zeo-log-format`` does not apply to them, so the two are not given together.

``replicate-from``, ``sync-replicas``, ``sync-replicas-timeout`` and
``sync-replicas-missing`` are the ``<zeo>`` keys of the same names
(docs/replication.md): a part with ``replicate-from`` is a replica of the
server at that address, ``bin/<part> promote`` makes it a primary.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

import zc.buildout
from ZConfig.components.logger.handlers import log_format as log_format_datatype
from ZConfig.datatypes import Registry

from ..tls import SERVER_ONLY
from ._known_options import check_options
from ._options import PartOptions, egg_locations, python_script, write_file

#: ZConfig's own byte-size datatype: 10MB, 512KB, 1GB or bytes.
BYTE_SIZE = Registry().get("byte-size")

#: ZEO 4 options whose feature is gone, and what to use instead.
REMOVED = {
    "authentication-database": (
        "ZEO 4 authentication was removed in ZEO 5 and is not supported; "
        "use TLS with client certificates (ssl-certificate, ssl-key and "
        "ssl-authenticate) or bind zeo-address to a private network"
    ),
    "authentication-realm": (
        "ZEO 4 authentication was removed in ZEO 5 and is not supported; "
        "use TLS with client certificates (ssl-certificate, ssl-key and "
        "ssl-authenticate) or bind zeo-address to a private network"
    ),
}

#: The formatter ``zeo-log-json = true`` names in the ``<logfile>``.
JSON_FORMATTER = "zodbserver.logformat.JSONFormatter"

LOG_LEVELS = ("CRITICAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "TRACE", "ALL")
#: The time, the level and the logger before the message, so that ``grep
#: ERROR`` finds the errors (plone.recipe.zeoserver's default has neither).
DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


#: The options this recipe reads (the docstring says what each does).
KNOWN_OPTIONS = frozenset(
    {
        "zeo-address",
        "monitor-address",
        "var",
        "file-storage",
        "blob-storage",
        "zeo-log",
        "zeo-log-level",
        "zeo-log-format",
        "zeo-log-json",
        "zeo-log-max-size",
        "zeo-log-old-files",
        "storage-number",
        "invalidation-queue-size",
        "read-only",
        "transaction-timeout",
        "slow-commit-threshold",
        "client-conflict-resolution",
        "ssl-certificate",
        "ssl-key",
        "ssl-authenticate",
        "access-rules",
        "replicate-from",
        "sync-replicas",
        "sync-replicas-timeout",
        "sync-replicas-missing",
        "pack-days",
        "pack-gc",
        "pack-keep-old",
        "zeopack",
        "zeopack-script-name",
        "effective-user",
        "socket-name",
        "pid-file",
        "eggs",
        "extra-paths",
        "relative-paths",
        "initialization",
        "zeo-conf-additional",
        "zeo-conf",
        *REMOVED,
    }
)

#: plone.recipe.zeoserver options this recipe refuses, and why.
REFUSED = {
    "pack-user": "ZEO 4 authentication was removed in ZEO 5; bin/zeopack "
    "needs no credentials (restrict packing with access-rules)",
    "pack-password": "ZEO 4 authentication was removed in ZEO 5; bin/zeopack "
    "needs no credentials (restrict packing with access-rules)",
    "keep-alive-delay": "a zc.zrs setting: replicas of this server need no "
    "keep-alive (see docs/replication.md)",
    "replicate-to": "ZRS's primary listened on a port of its own; replicas of "
    "this server connect to its zeo-address (give them replicate-from)",
    "repozo": "make bin/repozo with a zc.recipe.egg part (eggs = ZODB, "
    "scripts = repozo) or collective.recipe.backup",
    "repozo-script-name": "make bin/repozo with a zc.recipe.egg part (eggs = "
    "ZODB, scripts = repozo) or collective.recipe.backup",
    "zeo-log-custom": "write the <eventlog> in a zeo.conf of your own (zeo-conf)",
    "executable": "the scripts run with the Python that runs buildout",
    "scripts": "the recipe writes bin/<part> and bin/zeopack only",
}


class Recipe:
    def __init__(
        self, buildout: Any, name: str, options: MutableMapping[str, str]
    ) -> None:
        self.buildout = buildout
        self.name = name
        self.options = options
        self.parsed = PartOptions(name, options)
        for option, advice in REMOVED.items():
            if options.get(option, "").strip():
                raise self.parsed.fail(option, advice)
        check_options(self.parsed, "zodbserver:server", KNOWN_OPTIONS, REFUSED)
        base = buildout["buildout"]["directory"]
        self.base = base
        options["location"] = os.path.join(
            buildout["buildout"]["parts-directory"], name
        )
        options["bin-directory"] = buildout["buildout"]["bin-directory"]
        self.zeo_conf_path = os.path.join(options["location"], "etc", "zeo.conf")
        options["zeo-conf-path"] = self.text_or("zeo-conf", self.zeo_conf_path)
        self.rendered = self.render()
        self.server_arguments = self.control_arguments()
        self.zeopack = self.zeopack_script()
        self.extra_paths = [
            os.path.join(base, path) for path in self.lines("extra-paths")
        ]
        self.relative = self.relative_paths()

    def lines(self, option: str) -> list[str]:
        """One value a line, as zc.recipe.egg reads eggs and extra-paths."""
        return [
            line.strip()
            for line in self.parsed.text(option).splitlines()
            if line.strip()
        ]

    def text_or(self, option: str, default: str) -> str:
        value = self.parsed.text(option)
        return os.path.join(self.base, value) if value else default

    # -- zeo.conf -------------------------------------------------------------

    def render(self) -> str:
        parsed = self.parsed
        var = parsed.path("var", "var", self.base)
        self.var = var
        self.address = parsed.address(
            "zeo-address", parsed.text("zeo-address") or "8100"
        )
        self.storage_number = parsed.text("storage-number") or "1"
        if not self.storage_number.replace("_", "").replace("-", "").isalnum():
            raise parsed.fail(
                "storage-number", f"not a storage name: {self.storage_number!r}"
            )
        self.options["pack-days"] = parsed.number("pack-days") or "1"
        self.pid_file = self.control_file()
        zeo_log = parsed.path(
            "zeo-log", os.path.join(var, "log", f"{self.name}.log"), self.base
        )
        storage, file_storage, blob_storage = self.storage_section()
        self.paths = [file_storage, blob_storage, zeo_log, self.pid_file]
        lines = [
            f"# Generated by zodbserver:server for [{self.name}]; do not edit.",
            "<zeo>",
            *self.zeo_section(),
            "</zeo>",
            "",
            *storage,
            "",
            *self.eventlog_section(zeo_log),
        ]
        additional = self.options.get("zeo-conf-additional", "").strip("\n")
        if additional:
            lines += ["", additional]
        return "\n".join(lines) + "\n"

    def zeo_section(self) -> list[str]:
        parsed = self.parsed
        read_only = parsed.flag("read-only")
        queue = parsed.integer("invalidation-queue-size", 100, minimum=1)
        timeout = parsed.number("transaction-timeout", minimum=1)
        zeo = [
            f"  address {self.address}",
            f"  read-only {str(read_only).lower()}",
            f"  invalidation-queue-size {queue}",
            f"  pid-filename {self.pid_file}",
        ]
        if timeout:
            zeo.append(f"  transaction-timeout {timeout}")
        threshold = self.slow_commit_threshold()
        if threshold:
            zeo.append(f"  slow-commit-threshold {threshold}")
        monitor = self.monitor_address()
        if monitor:
            zeo.append(f"  monitor-address {monitor}")
        if parsed.flag("client-conflict-resolution"):
            zeo.append("  client-conflict-resolution true")
        rules = parsed.text("access-rules")
        if rules:
            zeo.append(f"  access-rules {os.path.join(self.base, rules)}")
        return zeo + self.replication_keys() + self.ssl_section()

    def replication_keys(self) -> list[str]:
        parsed = self.parsed
        keys = []
        primary = parsed.text("replicate-from")
        if primary:
            address = parsed.address("replicate-from", primary)
            if address == self.address:
                raise parsed.fail(
                    "replicate-from", f"{address} is this server's own zeo-address"
                )
            keys.append(f"  replicate-from {address}")
        required = parsed.integer("sync-replicas", 0)
        if required:
            keys.append(f"  sync-replicas {required}")
        timeout = parsed.number("sync-replicas-timeout", minimum=1)
        if timeout:
            keys.append(f"  sync-replicas-timeout {timeout}")
        missing = parsed.text("sync-replicas-missing")
        if missing:
            if missing not in ("fail", "async"):
                raise parsed.fail(
                    "sync-replicas-missing", f"expected fail or async, not {missing!r}"
                )
            keys.append(f"  sync-replicas-missing {missing}")
        return keys

    def slow_commit_threshold(self) -> str:
        """Seconds, as transaction-timeout takes them; empty when unset."""
        option = "slow-commit-threshold"
        value = self.parsed.number(option, minimum=float("-inf"))
        if value and not 0 < float(value) < float("inf"):
            raise self.parsed.fail(
                option, f"expected a positive number of seconds, not {value!r}"
            )
        return value

    def monitor_address(self) -> str:
        """The monitor's address, read as zeo-address is; empty when unset."""
        option = "monitor-address"
        value = self.parsed.text(option)
        if not value:
            return ""
        address = self.parsed.address(option, value)
        if address == self.address and not address.endswith(":0"):
            raise self.parsed.fail(
                option,
                f"{address} is zeo-address; the monitor needs an address of its own",
            )
        return address

    def ssl_section(self) -> list[str]:
        """``<ssl>`` from ``ssl-certificate``, ``ssl-key`` and
        ``ssl-authenticate`` (paths relative to the buildout)."""
        parsed = self.parsed
        values = {
            key: parsed.text(f"ssl-{key}")
            for key in ("certificate", "key", "authenticate")
        }
        if not any(values.values()):
            return []
        for key in ("certificate", "authenticate"):
            if not values[key]:
                raise parsed.fail(
                    f"ssl-{key}", "TLS needs ssl-certificate and ssl-authenticate"
                )
        lines = ["  <ssl>"]
        for key, value in values.items():
            if value:
                path = value if value == SERVER_ONLY else os.path.join(self.base, value)
                lines.append(f"    {key} {path}")
        return [*lines, "  </ssl>"]

    def storage_section(self) -> tuple[list[str], str, str]:
        parsed = self.parsed
        file_storage = parsed.path(
            "file-storage",
            os.path.join(self.var, "filestorage", "Data.fs"),
            self.base,
        )
        if "blob-storage" in self.options:
            blob_text = parsed.text("blob-storage")
            blob_storage = os.path.join(self.base, blob_text) if blob_text else ""
        else:
            blob_storage = os.path.join(self.var, "blobstorage")
        lines = [f"<filestorage {self.storage_number}>", f"  path {file_storage}"]
        if blob_storage:
            lines.append(f"  blob-dir {blob_storage}")
        if parsed.flag("read-only"):
            lines.append("  read-only true")
        # As plone.recipe.zeoserver: only the non-default value is written.
        for option in ("pack-gc", "pack-keep-old"):
            if not parsed.flag(option, default=True):
                lines.append(f"  {option} false")
        lines.append("</filestorage>")
        return lines, file_storage, blob_storage

    def eventlog_section(self, zeo_log: str) -> list[str]:
        parsed = self.parsed
        level = (parsed.text("zeo-log-level") or "INFO").upper()
        if level not in LOG_LEVELS:
            raise parsed.fail(
                "zeo-log-level",
                f"expected one of {', '.join(LOG_LEVELS)}, not {level!r}",
            )
        logfile = [f"    path {zeo_log}", *self.log_format(), *self.rotation()]
        return [
            "<eventlog>",
            f"  level {level}",
            "  <logfile>",
            *logfile,
            "  </logfile>",
            "</eventlog>",
        ]

    def log_format(self) -> list[str]:
        """The ``<logfile>`` lines for ``zeo-log-format`` or ``zeo-log-json``."""
        parsed = self.parsed
        if parsed.flag("zeo-log-json"):
            if parsed.text("zeo-log-format"):
                raise parsed.fail(
                    "zeo-log-format",
                    "JSON log lines (zeo-log-json = true) have fixed fields; "
                    "give one of zeo-log-format and zeo-log-json",
                )
            # JSON text is UTF-8 (RFC 8259), whatever the server's locale.
            return [f"    formatter {JSON_FORMATTER}", "    encoding utf-8"]
        log_format = parsed.text("zeo-log-format") or DEFAULT_LOG_FORMAT
        try:
            log_format_datatype(log_format)
        except ValueError:
            raise parsed.fail(
                "zeo-log-format",
                f"not a logging format: {log_format!r} "
                "(use names such as %(asctime)s %(levelname)s %(message)s)",
            ) from None
        # ZConfig substitutes $NAME in values: a literal $ is $$.
        return [f"    format {log_format.replace('$', '$$')}"]

    def rotation(self) -> list[str]:
        parsed = self.parsed
        max_size = parsed.text("zeo-log-max-size")
        old_files = parsed.integer("zeo-log-old-files", 1, minimum=1)
        if not max_size:
            if parsed.text("zeo-log-old-files"):
                raise parsed.fail(
                    "zeo-log-old-files",
                    "rotated files are kept only with zeo-log-max-size",
                )
            return []
        try:
            size = BYTE_SIZE(max_size)
        except ValueError:
            size = 0
        if size <= 0:  # ZConfig takes 0 as "no rotation"
            raise parsed.fail(
                "zeo-log-max-size",
                f"expected a size such as 10MB, 512KB or 1000000, not {max_size!r}",
            )
        return [f"    max-size {max_size}", f"    old-files {old_files}"]

    def control_file(self) -> str:
        """The pid file, named by pid-file or (for zdaemon's socket) socket-name."""
        parsed = self.parsed
        default = os.path.join(self.var, f"{self.name}.pid")
        pid_file = parsed.path("pid-file", default, self.base)
        socket_name = parsed.text("socket-name")
        if not socket_name:
            return pid_file
        control = os.path.join(self.base, socket_name)
        if parsed.text("pid-file") and control != pid_file:
            raise parsed.fail(
                "socket-name",
                "zodbserver has no zdaemon control socket: bin/"
                f"{self.name} controls the server through its pid file, which "
                f"socket-name names here, but pid-file names {pid_file}; "
                "give one of them",
            )
        return control

    # -- scripts --------------------------------------------------------------

    def control_arguments(self) -> list[str]:
        arguments = ["-C", self.options["zeo-conf-path"], "--var", self.var]
        user = self.parsed.text("effective-user")
        if user:
            if any(character.isspace() or character == ":" for character in user):
                raise self.parsed.fail("effective-user", f"not a user name: {user!r}")
            arguments += ["--user", user]
        return arguments

    def zeopack_script(self) -> tuple[str, str | None, list[str] | None] | None:
        """bin/zeopack as (path, custom script or None, arguments), or None."""
        parsed = self.parsed
        name = parsed.text("zeopack-script-name") or "zeopack"
        if os.sep in name or name.startswith("."):
            raise parsed.fail("zeopack-script-name", f"not a script name: {name!r}")
        path = os.path.join(self.options["bin-directory"], name)
        if "zeopack" not in self.options:
            arguments = ["-a", self.address, "-S", self.storage_number]
            return path, None, [*arguments, "-d", self.options["pack-days"]]
        custom = parsed.text("zeopack")
        if not custom:
            return None  # plone.recipe.zeoserver: an empty value, no script
        custom = os.path.join(self.base, custom)
        if not custom.endswith(".py") or not os.path.isfile(custom):
            raise parsed.fail(
                "zeopack", f"expected the path of a Python script, not {custom!r}"
            )
        return path, custom, None

    def relative_paths(self) -> str | None:
        value = self.parsed.text("relative-paths") or self.buildout["buildout"].get(
            "relative-paths", "false"
        )
        if value not in ("true", "false"):
            raise self.parsed.fail(
                "relative-paths", f"expected true or false, not {value!r}"
            )
        return self.base if value == "true" else None

    def script_paths(self) -> list[str]:
        eggs = self.lines("eggs")
        if not eggs:
            return self.extra_paths
        try:
            locations = egg_locations(self.buildout, eggs)
        except zc.buildout.UserError as error:
            raise self.parsed.fail("eggs", str(error)) from None
        return locations + self.extra_paths

    def write_script(
        self,
        path: str,
        module: str,
        arguments: list[str] | None,
        paths: list[str],
        prologue: str = "",
    ) -> str:
        initialization = "\n".join(
            filter(None, [prologue, self.options.get("initialization", "")])
        )
        text = python_script(
            module,
            arguments,
            paths=paths,
            relative_to=self.relative,
            script_directory=self.options["bin-directory"],
            initialization=initialization,
        )
        return write_file(path, text, executable=True)

    def directories(self) -> list[str]:
        """The directories of the files the server writes."""
        file_storage, blob_storage, zeo_log, pid_file = self.paths
        candidates = [
            os.path.dirname(file_storage),
            blob_storage,
            os.path.dirname(zeo_log),
            os.path.dirname(pid_file),
        ]
        return list(dict.fromkeys(path for path in candidates if path))

    def make_directories_code(self) -> str:
        """Python for bin/<part>: make the var directories of a zeo.conf
        written here, which ZConfig requires to exist, so that a wiped var/
        starts as a new one does."""
        if self.options["zeo-conf-path"] != self.zeo_conf_path:
            return ""
        bin_directory = self.options["bin-directory"]
        inside = os.path.join(os.path.abspath(self.base), "")

        def spell(path: str) -> str:
            if self.relative is None or not os.path.join(path, "").startswith(inside):
                return repr(path)
            return f"here({os.path.relpath(path, bin_directory)!r})"

        listing = ", ".join(spell(path) for path in self.directories())
        return "\n".join(
            [
                "# zeo.conf names these; a wiped var/ gets them back.",
                f"for directory in [{listing}]:",
                "    os.makedirs(directory, exist_ok=True)",
            ]
        )

    # -- install --------------------------------------------------------------

    def install(self) -> list[str]:
        for directory in self.directories():
            os.makedirs(directory, exist_ok=True)
        installed = [self.options["location"]]
        conf = self.options["zeo-conf-path"]
        if conf == self.zeo_conf_path:
            write_file(conf, self.rendered)
        paths = self.script_paths()
        script = os.path.join(self.options["bin-directory"], self.name)
        installed.append(
            self.write_script(
                script,
                "zodbserver.cli",
                self.server_arguments,
                paths,
                prologue=self.make_directories_code(),
            )
        )
        if self.zeopack is not None:
            path, custom, arguments = self.zeopack
            if custom is None:
                module = "zodbserver.zeopack"
            else:
                module = os.path.splitext(os.path.basename(custom))[0]
                paths = [os.path.dirname(custom), *paths]
            installed.append(self.write_script(path, module, arguments, paths))
        return installed

    update = install
