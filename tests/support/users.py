"""Running part of a test as an unprivileged user.

Some of ZODB's doctests check what only file permissions prevent (a
committed blob file cannot be opened for writing); root passes every such
check, so as root those tests cannot pass.  ``run_as_nobody`` forks the test
process and runs a function in the child after switching to ``nobody``:
the interpreter and every module already imported stay usable, even when
the interpreter lives where ``nobody`` could not start it (under ``/root``).
"""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import tempfile
import traceback
from collections.abc import Callable, Sequence


def run_as_nobody(
    function: Callable[[], str | None], preload: Sequence[str] = ()
) -> None:
    """Run ``function`` as ``nobody``, in a new directory of theirs.

    ``preload`` names modules ``function`` imports on its way that are not
    imported yet: imported first, since ``nobody`` may not be able to read
    them.  Raises AssertionError with the child's traceback, or with what
    ``function`` returned, when that is not None (a failure report).
    """
    for module in preload:
        importlib.import_module(module)
    nobody = pwd.getpwnam("nobody")
    # Not under pytest's tmp_path: root's base directory is closed to others.
    directory = tempfile.mkdtemp(prefix="as-nobody-")
    try:
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
        _run_in_child(nobody, directory, function)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run_in_child(
    nobody: pwd.struct_passwd, directory: str, function: Callable[[], str | None]
) -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        report = "child failed before reporting"
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.chdir(directory)
            failure = function()
            report = "" if failure is None else f"FAILED\n{failure}"
        except BaseException:
            report = f"FAILED\n{traceback.format_exc()}"
        finally:
            with os.fdopen(write_end, "wb") as stream:
                stream.write(report.encode("utf-8", "replace"))
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        report = stream.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert not report, report
