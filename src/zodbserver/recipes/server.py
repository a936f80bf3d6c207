"""``recipe = zodbserver:server``: a zeo.conf and a ``bin/<part>`` script.

The options are plone.recipe.zeoserver's, with its defaults::

    [zeoserver]
    recipe = zodbserver:server
    zeo-address = 8100                  # PORT (on 127.0.0.1), HOST:PORT or a path
    var = ${buildout:directory}/var
    file-storage = var/filestorage/Data.fs   # relative to the buildout
    blob-storage = var/blobstorage           # empty: no blobs
    zeo-log = var/log/<part>.log
    zeo-log-level = INFO
    storage-number = 1
    invalidation-queue-size = 100
    read-only = false
    transaction-timeout =               # seconds; empty: none
    client-conflict-resolution = false
    pack-days = 1                       # validated; used by zeopack
    zeo-conf-additional =               # lines appended to zeo.conf
    zeo-conf =                          # an existing zeo.conf replaces ours

It writes ``parts/<part>/etc/zeo.conf`` and ``bin/<part>``, which runs
``zeoserver -C parts/<part>/etc/zeo.conf --var VAR "$@"``, so
``bin/zeoserver start|stop|restart|status|fg|logtail`` work.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from ._options import PartOptions, python_script, write_file

#: ZEO 4 options whose feature is gone, and what to use instead.
REMOVED = {
    "authentication-database": (
        "ZEO 4 authentication was removed in ZEO 5 and is not supported; "
        "use TLS with client certificates (an <ssl> section through "
        "zeo-conf-additional) or bind zeo-address to a private network"
    ),
    "authentication-realm": (
        "ZEO 4 authentication was removed in ZEO 5 and is not supported; "
        "use TLS with client certificates (an <ssl> section through "
        "zeo-conf-additional) or bind zeo-address to a private network"
    ),
    "monitor-address": (
        "the ZEO 4 monitor server was removed; the server status is "
        "available through the server_status call"
    ),
}

LOG_LEVELS = ("CRITICAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "TRACE", "ALL")


class Recipe:
    def __init__(
        self, buildout: Any, name: str, options: MutableMapping[str, str]
    ) -> None:
        self.name = name
        self.options = options
        self.parsed = PartOptions(name, options)
        for option, advice in REMOVED.items():
            if options.get(option, "").strip():
                raise self.parsed.fail(option, advice)
        base = buildout["buildout"]["directory"]
        self.base = base
        options["location"] = os.path.join(
            buildout["buildout"]["parts-directory"], name
        )
        options["bin-directory"] = buildout["buildout"]["bin-directory"]
        self.zeo_conf_path = os.path.join(options["location"], "etc", "zeo.conf")
        options["zeo-conf-path"] = self.text_or("zeo-conf", self.zeo_conf_path)
        self.rendered = self.render()

    def text_or(self, option: str, default: str) -> str:
        value = self.parsed.text(option)
        return os.path.join(self.base, value) if value else default

    def render(self) -> str:
        parsed = self.parsed
        var = parsed.path("var", "var", self.base)
        self.var = var
        address = parsed.address("zeo-address", parsed.text("zeo-address") or "8100")
        storage_number = parsed.text("storage-number") or "1"
        if not storage_number.replace("_", "").replace("-", "").isalnum():
            raise parsed.fail(
                "storage-number", f"not a storage name: {storage_number!r}"
            )
        file_storage = parsed.path(
            "file-storage", os.path.join(var, "filestorage", "Data.fs"), self.base
        )
        if "blob-storage" in self.options:
            blob_text = parsed.text("blob-storage")
            blob_storage = os.path.join(self.base, blob_text) if blob_text else ""
        else:
            blob_storage = os.path.join(var, "blobstorage")
        zeo_log = parsed.path(
            "zeo-log", os.path.join(var, "log", f"{self.name}.log"), self.base
        )
        level = (parsed.text("zeo-log-level") or "INFO").upper()
        if level not in LOG_LEVELS:
            raise parsed.fail(
                "zeo-log-level",
                f"expected one of {', '.join(LOG_LEVELS)}, not {level!r}",
            )
        queue = parsed.integer("invalidation-queue-size", 100, minimum=1)
        read_only = parsed.flag("read-only")
        timeout = parsed.number("transaction-timeout", minimum=1)
        conflicts = parsed.flag("client-conflict-resolution")
        self.options["pack-days"] = parsed.number("pack-days") or "1"
        self.paths = [file_storage, blob_storage, zeo_log]

        zeo = [
            f"  address {address}",
            f"  read-only {str(read_only).lower()}",
            f"  invalidation-queue-size {queue}",
        ]
        if timeout:
            zeo.append(f"  transaction-timeout {timeout}")
        if conflicts:
            zeo.append("  client-conflict-resolution true")
        storage = [f"  path {file_storage}"]
        if blob_storage:
            storage.append(f"  blob-dir {blob_storage}")
        if read_only:
            storage.append("  read-only true")
        additional = self.options.get("zeo-conf-additional", "").strip("\n")
        lines = [
            f"# Generated by zodbserver:server for [{self.name}]; do not edit.",
            "<zeo>",
            *zeo,
            "</zeo>",
            "",
            f"<filestorage {storage_number}>",
            *storage,
            "</filestorage>",
            "",
            "<eventlog>",
            f"  level {level}",
            "  <logfile>",
            f"    path {zeo_log}",
            "  </logfile>",
            "</eventlog>",
        ]
        if additional:
            lines += ["", additional]
        return "\n".join(lines) + "\n"

    def install(self) -> list[str]:
        for path in self.paths:
            if path:
                directory = path if path == self.paths[1] else os.path.dirname(path)
                os.makedirs(directory, exist_ok=True)
        installed = [self.options["location"]]
        conf = self.options["zeo-conf-path"]
        if conf == self.zeo_conf_path:
            write_file(conf, self.rendered)
        script = os.path.join(self.options["bin-directory"], self.name)
        arguments = ["-C", conf, "--var", self.var]
        write_file(script, python_script("zodbserver.cli", arguments), executable=True)
        installed.append(script)
        return installed

    update = install
