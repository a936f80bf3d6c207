"""Which options a part may have, and what to do about the others.

zc.buildout only warns about an option no recipe read ("Unused option"),
so a misspelt or unsupported option would be dropped in silence.  Each
recipe lists the options it reads; :func:`check_options` fails the
buildout for any other, naming it: options of plone.recipe.zope2instance
or plone.recipe.zeoserver that have no meaning here are refused with what
to do instead, the rest as unknown, with the closest known name.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping

from ._options import PartOptions

#: Keys zc.buildout itself puts into a part, or reads from it.
BUILDOUT_KEYS = frozenset(
    {"recipe", "location", "bin-directory", "<part-dependencies>"}
)

_ZSERVER = (
    "a ZServer setting; Zope 5 and later serve WSGI only, and this "
    "instance serves HTTP on http-address alone"
)
_STORAGE = (
    "the instance is a client of the zodbserver:server part, which owns "
    "the storage: configure it there (file-storage, blob-storage, "
    "zeo-conf-additional), or give a zope.conf of your own with zope-conf"
)
_LOGGING = (
    "the instance logs to event-log (event-log-level) and access-log "
    "(access-log-max-size, access-log-old-files); for other handlers, "
    "configure logging in the application or rotate with logrotate"
)
_WSGI_INI = (
    "the instance serves its application with waitress itself, without a "
    "wsgi.ini; to run Zope in another WSGI server or pipeline, point it at "
    'zodbserver.instance.wsgi:make_app("parts/<part>/etc/instance.json")'
)
_ZCML = (
    "Plone add-ons load their ZCML themselves (plone.autoinclude or "
    "z3c.autoinclude): list the distribution in eggs; for ZCML of your own, "
    "give a zope.conf with zope-conf and a site.zcml beside it"
)

#: plone.recipe.zope2instance options this instance refuses, and why.
INSTANCE_REFUSED: Mapping[str, str] = {
    "zeo-username": "ZEO 4 authentication was removed in ZEO 5; use TLS "
    "(ssl-certificate, ssl-key, ssl-authenticate)",
    "zeo-password": "ZEO 4 authentication was removed in ZEO 5; use TLS "
    "(ssl-certificate, ssl-key, ssl-authenticate)",
    "zeo-realm": "ZEO 4 authentication was removed in ZEO 5; use TLS "
    "(ssl-certificate, ssl-key, ssl-authenticate)",
    "file-storage": _STORAGE,
    "demo-storage": _STORAGE,
    "demo-file-storage": _STORAGE,
    "demo-blob-storage": _STORAGE,
    "before-storage": _STORAGE,
    "storage-wrapper": _STORAGE,
    "zlib-storage": _STORAGE,
    "rel-storage": _STORAGE,
    "zodb-temporary-storage": _STORAGE,
    "ftp-address": _ZSERVER,
    "webdav-address": _ZSERVER,
    "webdav-force-connection-close": _ZSERVER,
    "icp-address": _ZSERVER,
    "port-base": _ZSERVER,
    "http-force-connection-close": _ZSERVER,
    "asyncore-use-poll": _ZSERVER,
    "enable-product-installation": "removed in Zope 4; products install "
    "through GenericSetup profiles",
    "lock-file": "there is no lock file: the pid file (pid-file) is locked "
    "while the instance runs",
    "effective-user": "the instance does not switch users: run bin/<part> "
    "as that user (User= in systemd, user= in supervisord)",
    "event-log-custom": _LOGGING,
    "event-log-handler": _LOGGING,
    "event-log-args": _LOGGING,
    "event-log-kwargs": _LOGGING,
    "event-log-max-size": _LOGGING,
    "event-log-old-files": _LOGGING,
    "access-log-custom": _LOGGING,
    "access-log-handler": _LOGGING,
    "access-log-args": _LOGGING,
    "access-log-kwargs": _LOGGING,
    "access-log-level": _LOGGING,
    "z2-log-level": _LOGGING,
    "mailinglogger": _LOGGING,
    "wsgi-ini-template": _WSGI_INI,
    "wsgi-logging-ini-template": _WSGI_INI,
    "pipeline": _WSGI_INI,
    "profile": _WSGI_INI,
    "zcml": _ZCML,
    "zcml-additional": _ZCML,
    "site-zcml": _ZCML,
    "resources": _ZCML,
    "locales": _ZCML,
    "products": "Zope's WSGI zope.conf has no products directories; make "
    "the product a distribution (Products.NAME) and list it in eggs",
    "import-directory": "removed from Zope's WSGI configuration; import "
    "through the ZMI from the client home (var/<part>/import)",
    "executable": "the scripts run with the Python that runs buildout",
}

#: Option prefixes of plone.recipe.zope2instance's sentry and profile filters.
INSTANCE_REFUSED_PREFIXES: Mapping[str, str] = {
    "sentry_": _WSGI_INI,
    "profile_": _WSGI_INI,
}


def check_options(
    parsed: PartOptions,
    recipe: str,
    known: Collection[str],
    refused: Mapping[str, str] | None = None,
    refused_prefixes: Mapping[str, str] | None = None,
) -> None:
    """Fail for the first option (in name order) that is not ``known``."""
    refused = refused or {}
    refused_prefixes = refused_prefixes or {}
    for option in sorted(parsed.options):
        if option in known or option in BUILDOUT_KEYS or option.startswith("__"):
            continue
        if option in refused:
            raise parsed.fail(option, f"not supported by {recipe}: {refused[option]}")
        for prefix, advice in refused_prefixes.items():
            if option.startswith(prefix):
                raise parsed.fail(option, f"not supported by {recipe}: {advice}")
        close = difflib.get_close_matches(option, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise parsed.fail(
            option,
            f"not an option of {recipe}{hint} (the README lists the options)",
        )
