"""``zeoserver --user NAME``: run the server as another user.

plone.recipe.zeoserver's ``effective-user``.  ``fg``, ``start`` and
``restart``, started as root, switch to that user and its groups before
they create a directory, open the log, lock the pid file or open a storage,
so every file the server writes is the user's (the directories it uses must
be writable by that user).  Started as that user already, nothing changes;
started as any other user, switching fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd

from .errors import ConfigurationError


def find_user(name: str) -> pwd.struct_passwd:
    """The account named ``name`` (or numbered, as ``1000``)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if name.isdigit():
            with contextlib.suppress(KeyError):
                return pwd.getpwuid(int(name))
    raise ConfigurationError(f"--user: no such user: {name!r}")


def switch_user(user: pwd.struct_passwd) -> str | None:
    """Run as ``user`` from now on; why that is impossible, or None."""
    current = os.geteuid()
    if current == user.pw_uid:
        return None
    if current != 0:
        try:
            current_name = pwd.getpwuid(current).pw_name
        except KeyError:
            current_name = str(current)
        return (
            f"--user {user.pw_name}: only root can switch to another user; "
            f"running as {current_name}"
        )
    # Groups first: after setuid there is no right left to change them.
    os.initgroups(user.pw_name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    return None
