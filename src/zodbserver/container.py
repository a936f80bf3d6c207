"""The environment variables of the ``plone/plone-zeo`` container image.

That image writes its ``zeo.conf`` from four variables; ``zeoserver fg``
(and ``start``, whose server process is ``fg``) reads the same ones, so
that it takes the image's place in a compose file unchanged:

=============================== ============================================
``ZEO_PORT``                    listen on ``0.0.0.0:PORT`` (all interfaces)
``ZEO_READ_ONLY``               ``true``: refuse every write
``ZEO_INVALIDATION_QUEUE_SIZE`` the invalidation queue's length
``ZEO_PACK_KEEP_OLD``           ``false``: packing keeps no ``Data.fs.old``
=============================== ============================================

Each applies only when it is set (there are no defaults of the image's
here: an unset variable leaves zeo.conf's value, or ours); set, it
overrides zeo.conf, and a command-line option (``-a``, ``--read-only``)
overrides it.  A wrong value is a configuration error naming the variable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError
from .foreground import Plan

TRUE = ("true", "on", "yes", "1")
FALSE = ("false", "off", "no", "0")


def apply_environment(
    plan: Plan,
    environ: Mapping[str, str],
    *,
    address_given: bool = False,
    read_only_given: bool = False,
) -> Plan:
    """``plan`` with the variables that ``environ`` sets applied."""
    settings = plan.config.settings
    changes: dict[str, Any] = {}
    port = environ.get("ZEO_PORT", "").strip()
    if port and not address_given:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"ZEO_PORT: not a port: {port!r}")
        changes["address"] = ("0.0.0.0", int(port))
    read_only = _flag(environ, "ZEO_READ_ONLY")
    if read_only is not None and not read_only_given:
        changes["read_only"] = read_only
    queue = environ.get("ZEO_INVALIDATION_QUEUE_SIZE", "").strip()
    if queue:
        if not queue.isdigit():
            raise ConfigurationError(
                f"ZEO_INVALIDATION_QUEUE_SIZE: not a number: {queue!r}"
            )
        changes["invalidation_queue_size"] = int(queue)
    config = plan.config
    if changes:
        config = config.replace(settings=dataclasses.replace(settings, **changes))
    keep_old = _flag(environ, "ZEO_PACK_KEEP_OLD")
    if keep_old is not None:
        storages = tuple(
            _with_pack_keep_old(factory, keep_old) for factory in config.storages
        )
        config = config.replace(storages=storages)
    if config is plan.config:
        return plan
    return dataclasses.replace(plan, config=config)


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    value = environ.get(name, "").strip().lower()
    if not value:
        return None
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigurationError(f"{name}: expected true or false, not {value!r}")


def _with_pack_keep_old(factory: Any, keep_old: bool) -> Any:
    """The factory, opening a FileStorage that packs with ``keep_old``."""
    from .config import StorageFactory

    def open_storage() -> Any:
        storage = factory.open()
        # FileStorage reads the attribute when it packs; other storages
        # keep no old file.
        if hasattr(storage, "pack_keep_old"):
            storage.pack_keep_old = keep_old
        return storage

    return StorageFactory(factory.name, open_storage, factory.path)
