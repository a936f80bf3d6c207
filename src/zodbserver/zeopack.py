"""The ``zeopack`` command: pack storages of a running server.

    zeopack [-d DAYS] [-t HH[:MM[:SS]]] [-S STORAGE] [-a ADDRESS]
            [--wait-timeout SECONDS] [SERVER ...]

It connects to each server with ``zodbserver.ClientStorage`` (read-only: a
read-only connection may pack, as with ZEO) and asks it to pack one
storage, removing the history older than DAYS days before now (or before
the time of day ``-t``), and waits until the pack is done.  The server does
the work in its own process, blobs included, so no blob directory is needed
here.  Whether unreachable objects are collected is the storage's setting on
the server (``pack-gc`` in its ``<filestorage>`` section); the protocol's
``pack`` call has no garbage-collection argument.

Servers are ZEO's zeopack forms: ``HOST:PORT[:STORAGE]`` positionals,
``-u PATH[:STORAGE]`` for Unix sockets, the older ``-h HOST -p PORT`` and
``-U PATH`` with ``-S STORAGE``.  Without any of those, ``-a ADDRESS``
(``PORT``, ``HOST:PORT`` or a socket path) with ``-S`` names the server;
the buildout recipe writes ``bin/zeopack`` with ``-a`` and ``-S`` and ``-d``
set from its part, so that its command line can override them.  ``-D`` and
``-B`` are accepted as plone.recipe.zeoserver's scripts spell them (``-B``,
a blob directory, is not needed and is ignored).

Exit status: 0 when every storage was packed; 1 when a server could not be
reached within ``--wait-timeout`` seconds (default 10) or a pack failed;
2 for a wrong command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from . import __version__
from .addresses import (
    DEFAULT_HOST,
    Address,
    format_address,
    parse_address,
    parse_port,
    split_host_port,
)
from .errors import ConfigurationError
from .exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .tls import client_context
from .units import parse_seconds

PROGRAM = "zeopack"

DEFAULT_WAIT_TIMEOUT = 10.0
SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class Target:
    """One storage on one server."""

    address: Address
    storage: str

    def describe(self) -> str:
        return f"storage {self.storage!r} at {format_address(self.address)}"


class UsageError(ConfigurationError):
    """The command line names no server or a malformed one."""


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"days must not be negative: {text!r}")
    return days


def _time_of_day(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if not 1 <= len(numbers) <= 3 or len(numbers) != len(parts):
        raise argparse.ArgumentTypeError(f"expected HH[:MM[:SS]], not {text!r}")
    hour, minute, second = [*numbers, 0, 0][:3]
    if not (0 <= hour < 24 and 0 <= minute < 60 and 0 <= second < 60):
        raise argparse.ArgumentTypeError(f"not a time of day: {text!r}")
    return hour, minute, second


def _seconds(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        # -h is ZEO's zeopack host option; help is --help only.
        add_help=False,
        description="Pack storages of running ZODB database servers "
        "(ZEO-compatible): remove the history older than DAYS days. "
        "Exit 0 when every storage was packed, 1 when a server cannot be "
        "reached or a pack fails, 2 for a wrong command line.",
        epilog="SERVER is HOST:PORT[:STORAGE]. Without SERVER, -u, -h/-p "
        "or -U, the server is -a ADDRESS.",
    )
    parser.add_argument("--help", action="help", help="show this help message and exit")
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROGRAM} {__version__}",
        help="show the version and exit",
    )
    parser.add_argument("servers", nargs="*", metavar="SERVER", help="a server to pack")
    parser.add_argument(
        "-d",
        "-D",
        "--days",
        type=_days,
        default=0.0,
        help="keep the history of the last DAYS days (default 0)",
    )
    parser.add_argument(
        "-t",
        "--time",
        type=_time_of_day,
        metavar="HH[:MM[:SS]]",
        help="pack to this time of day (today, minus DAYS) instead of now",
    )
    parser.add_argument(
        "-a",
        "--address",
        help="PORT (on 127.0.0.1), HOST:PORT or a Unix socket path: "
        "the server when no other is named",
    )
    parser.add_argument(
        "-S",
        "--storage",
        default="1",
        help="storage name for -a, -h/-p and -U (default 1)",
    )
    parser.add_argument(
        "-u",
        "--unix",
        action="append",
        default=[],
        metavar="PATH[:STORAGE]",
        help="a server listening on a Unix socket (repeatable)",
    )
    parser.add_argument("-h", dest="host", help="server host, with -p")
    parser.add_argument("-p", dest="port", type=int, help="server port, with -h")
    parser.add_argument("-U", dest="unix_path", help="a Unix socket path, with -S")
    parser.add_argument(
        "-B",
        dest="blob_dir",
        help="ignored (plone.recipe.zeoserver's blob directory option): "
        "the server packs its own blobs",
    )
    tls = parser.add_argument_group("TLS (for servers with <ssl>)")
    tls.add_argument(
        "--ssl-certificate", metavar="PEM", help="this client's certificate"
    )
    tls.add_argument("--ssl-key", metavar="PEM", help="its key, if not in its file")
    tls.add_argument(
        "--ssl-authenticate",
        metavar="CA",
        help="the CA file or directory the server's certificate chains to",
    )
    tls.add_argument(
        "--ssl-server-hostname",
        metavar="NAME",
        help="the name the server's certificate has",
    )
    parser.add_argument(
        "--wait-timeout",
        type=_seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help="give up on a server not reached within SECONDS "
        f"(default {DEFAULT_WAIT_TIMEOUT:g})",
    )
    return parser


def targets(args: argparse.Namespace) -> list[Target]:
    """The storages the command line names, in order."""
    found: list[Target] = []
    for server in args.servers:
        host_port, name = _split_server(server)
        found.append(Target(host_port, name or "1"))
    for entry in args.unix:
        path, _, name = entry.partition(":")
        found.append(Target(path, name or "1"))
    if args.host is not None or args.port is not None:
        if args.port is None:
            raise UsageError("-h HOST needs -p PORT")
        found.append(Target((args.host or DEFAULT_HOST, args.port), args.storage))
    if args.unix_path:
        found.append(Target(args.unix_path, args.storage))
    if not found and args.address:
        try:
            address = parse_address(args.address)
        except ValueError as error:
            raise UsageError(f"-a {args.address!r}: {error}") from None
        found.append(Target(address, args.storage))
    if not found:
        raise UsageError("no server given (SERVER, -a, -u, -h/-p or -U)")
    return found


def _split_server(text: str) -> tuple[tuple[str, int], str]:
    """``HOST:PORT[:STORAGE]`` as ``((host, port), storage or "")``."""
    address, storage = text, ""
    head, _, tail = text.rpartition(":")
    if ":" in head.rpartition("]")[2]:  # a second colon outside the brackets
        address, storage = head, tail
    try:
        host, port = split_host_port(address)
        if port is None:
            raise ValueError(f"no port in {address!r}")
        return (
            host or DEFAULT_HOST,
            parse_port(port, address, listening=False),
        ), storage
    except ValueError as error:
        raise UsageError(
            f"not a server HOST:PORT[:STORAGE]: {text!r} ({error})"
        ) from None


def pack_time(days: float, time_of_day: tuple[int, int, int] | None) -> float:
    """The time to pack to: now, or today's ``time_of_day``, minus ``days``."""
    now = time.time()
    if time_of_day is not None:
        today = time.localtime(now)
        now = time.mktime((*today[:3], *time_of_day, *today[6:8], -1))
    return now - days * SECONDS_PER_DAY


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """``ClientStorage``'s ``ssl`` arguments from ``--ssl-*``, if any."""
    given = (args.ssl_certificate, args.ssl_key, args.ssl_authenticate)
    if not any(given) and args.ssl_server_hostname is None:
        return {}
    try:
        context = client_context(
            certificate=args.ssl_certificate,
            key=args.ssl_key,
            authenticate=args.ssl_authenticate,
        )
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    return {"ssl": context, "ssl_server_hostname": args.ssl_server_hostname}


def pack(
    target: Target, when: float, wait_timeout: float, tls: dict[str, Any] | None = None
) -> str | None:
    """Pack one storage; an error message, or None when it was packed."""
    from .client import ClientDisconnected, ClientStorage

    try:
        storage = ClientStorage(
            target.address,
            storage=target.storage,
            read_only=True,
            wait_timeout=wait_timeout,
            **(tls or {}),
        )
    except ClientDisconnected as error:
        return f"cannot connect to {target.describe()}: {error}"
    try:
        storage.pack(when, wait=True)
    except Exception as error:
        return f"packing {target.describe()} failed: {error}"
    finally:
        storage.close()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        chosen = targets(args)
        tls = tls_options(args)
    except SystemExit as exited:  # --help, or argparse's own usage error
        return exited.code if isinstance(exited.code, int) else EXIT_USAGE
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    # The client logs every failed connection attempt; only the outcome,
    # reported below, matters here.
    logging.getLogger("zodbserver").setLevel(logging.CRITICAL)
    when = pack_time(args.days, args.time)
    status = EXIT_OK
    for target in chosen:
        problem = pack(target, when, args.wait_timeout, tls)
        if problem is not None:
            print(f"{PROGRAM}: {problem}", file=sys.stderr)
            status = EXIT_FAILURE
    return status


if __name__ == "__main__":
    sys.exit(main())
