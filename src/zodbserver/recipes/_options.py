"""Option parsing and file writing shared by the recipes."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import zc.buildout

from ..addresses import Address, format_address, parse_address

TRUE = ("true", "on", "yes", "1")
FALSE = ("false", "off", "no", "0")


class PartOptions:
    """Typed access to one part's options; errors name part and option."""

    def __init__(self, part: str, options: MutableMapping[str, str]) -> None:
        self.part = part
        self.options = options

    def fail(self, option: str, message: str) -> zc.buildout.UserError:
        return zc.buildout.UserError(f"[{self.part}] {option}: {message}")

    def text(self, option: str, default: str = "") -> str:
        return self.options.get(option, default).strip()

    def flag(self, option: str, default: bool = False) -> bool:
        value = self.text(option).lower()
        if not value:
            return default
        if value in TRUE:
            return True
        if value in FALSE:
            return False
        raise self.fail(option, f"expected true or false, not {value!r}")

    def number(self, option: str, *, minimum: float = 0) -> str:
        """A non-negative number, returned as written (empty when unset)."""
        value = self.text(option)
        if not value:
            return ""
        try:
            parsed = float(value)
        except ValueError:
            raise self.fail(option, f"expected a number, not {value!r}") from None
        if parsed < minimum:
            raise self.fail(option, f"must be at least {minimum:g}, not {value!r}")
        return value

    def integer(self, option: str, default: int, *, minimum: int = 0) -> int:
        value = self.text(option)
        if not value:
            return default
        try:
            parsed = int(value)
        except ValueError:
            raise self.fail(option, f"expected an integer, not {value!r}") from None
        if parsed < minimum:
            raise self.fail(option, f"must be at least {minimum}, not {value!r}")
        return parsed

    def size(self, option: str) -> str:
        """A byte size as ZConfig writes it: ``200MB``, ``1GB``, ``1000``."""
        value = self.text(option)
        if not value:
            return ""
        digits = value.upper().removesuffix("B").rstrip("KMG")
        if not digits.isdigit():
            raise self.fail(option, f"expected a size such as 200MB, not {value!r}")
        return value

    def address(self, option: str, value: str) -> str:
        """``PORT`` (on 127.0.0.1), ``HOST:PORT`` or a socket path, as text."""
        return format_address(self.parsed_address(option, value))

    def parsed_address(self, option: str, value: str) -> Address:
        """``PORT`` (on 127.0.0.1), ``HOST:PORT`` or a socket path."""
        try:
            return parse_address(value)
        except ValueError as error:
            raise self.fail(option, str(error)) from None

    def path(self, option: str, default: str, base: str) -> str:
        return os.path.join(base, self.text(option) or default)


def write_file(path: str, text: str, *, executable: bool = False) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        file.write(text)
    if executable:
        mode = os.stat(path).st_mode
        os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def python_script(
    module: str,
    arguments: list[str] | None,
    *,
    paths: Sequence[str] = (),
    relative_to: str | None = None,
    script_directory: str | None = None,
    initialization: str = "",
) -> str:
    """A script running ``module.main(ARGUMENTS + sys.argv[1:])``.

    The interpreter is the one running buildout.  ``paths`` (egg locations,
    extra paths) go first on ``sys.path``, then the directory holding the
    ``zodbserver`` package, so the script works for a develop egg as well as
    for an installed distribution; they are also put on ``PYTHONPATH``, so
    that a server the script starts in the background (a fresh interpreter)
    imports the same code.  ``arguments=None`` calls ``main()`` with none,
    as zc.buildout's scripts do.

    With ``relative_to`` (the buildout directory) and ``script_directory``
    (where the script goes), paths and arguments inside the buildout
    directory are written relative to the script's own location, as
    zc.buildout does for ``relative-paths = true``; the others stay
    absolute.  ``initialization`` is Python code run before ``main``, as
    zc.recipe.egg's option of that name.
    """
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    entries = list(dict.fromkeys([*paths, package_parent]))
    if relative_to is None:

        def spell(text: str) -> str:
            return repr(text)

    else:
        if script_directory is None:
            raise ValueError("relative_to needs script_directory")
        inside = os.path.join(os.path.abspath(relative_to), "")

        def spell(text: str) -> str:
            if not os.path.isabs(text) or not os.path.join(text, "").startswith(inside):
                return repr(text)
            return f"here({os.path.relpath(text, script_directory)!r})"

    call = (
        "main()"
        if arguments is None
        else f"main({_listing(arguments, spell)} + sys.argv[1:])"
    )
    lines = [
        f"#!{sys.executable}",
        '"""Generated by zodbserver\'s buildout recipe; do not edit."""',
        "import os",
        "import sys",
        "",
    ]
    if relative_to is not None:
        lines += [
            "",
            "def here(path):",
            "    directory = os.path.dirname(os.path.realpath(__file__))",
            "    return os.path.normpath(os.path.join(directory, path))",
            "",
            "",
        ]
    lines += [
        f"paths = {_listing(entries, spell)}",
        "sys.path[0:0] = paths",
        'inherited = os.environ.get("PYTHONPATH")',
        'os.environ["PYTHONPATH"] = os.pathsep.join(',
        "    paths + ([inherited] if inherited else [])",
        ")",
        "",
        *([initialization.strip("\n"), ""] if initialization.strip() else []),
        f"from {module} import main  # noqa: E402",
        "",
        f"sys.exit({call})",
    ]
    return "\n".join(lines) + "\n"


def _listing(items: Sequence[str], spell: Callable[[str], str]) -> str:
    if not items:
        return "[]"
    return "[\n" + "".join(f"    {spell(item)},\n" for item in items) + "]"


def egg_locations(buildout: Any, specs: Sequence[str]) -> list[str]:
    """Where the distributions ``specs`` and their dependencies live.

    Resolved with zc.buildout's machinery, as its own recipes do: against
    the buildout's develop-eggs and eggs directories and the environment
    running buildout.  Offline, nothing is installed or looked up and a
    missing distribution is an error; online, missing ones are installed
    into the eggs directory.  Raises ``zc.buildout.UserError``.
    """
    import zc.buildout.easy_install

    section = buildout["buildout"]
    develop = section.get("develop-eggs-directory", "")
    eggs = section.get("eggs-directory", "")
    if section.get("offline", "false") == "true" or not eggs:
        dists = _resolve_locally(specs, [path for path in (develop, eggs) if path])
    else:
        dists = zc.buildout.easy_install.install(
            list(specs),
            eggs,
            links=section.get("find-links", "").split(),
            index=section.get("index") or None,
            path=[develop],
            newest=section.get("newest", "true") == "true",
        )
    return list(dict.fromkeys(dist.location for dist in dists))


def _resolve_locally(specs: Sequence[str], directories: list[str]) -> list[Any]:
    # zc.buildout's installer asks the package index for a distribution it
    # lacks even when told not to install, so offline resolution is done
    # with the environment and pkg_resources of zc.buildout itself.
    from zc.buildout.easy_install import Environment, pkg_resources

    environment = Environment([*directories, *sys.path])
    requirements = []
    for spec in specs:
        try:
            requirements.append(pkg_resources.Requirement.parse(spec))
        except ValueError:
            raise zc.buildout.UserError(f"not a requirement: {spec!r}") from None
    try:
        return list(pkg_resources.WorkingSet([]).resolve(requirements, environment))
    except pkg_resources.ResolutionError as error:
        raise zc.buildout.UserError(
            f"{error.report()}; offline, nothing is installed"
        ) from None
