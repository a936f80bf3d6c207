"""The ``zeoserver`` command: run, start, stop and inspect a database server.

    zeoserver [OPTIONS] fg | start | stop | restart | reload | status | logtail
                        | promote | rejoin
    zeoserver [OPTIONS] pack [ZEOPACK ARGUMENTS]

The options say which server: ``-C zeo.conf``, or ``-a ADDRESS`` and
``-f Data.fs`` on their own, with ``--var DIR`` (default ``./var``) holding
the pid file, the log and, without ``-C`` or ``-f``, the database
(``var/filestorage/Data.fs``, blobs in ``var/blobstorage``).  Give every
command the same options: they find the server through its pid file.
Command-line options override the file; ``-f`` replaces its storages.

This module reads the command line into a :class:`~zodbserver.foreground.Plan`
and runs the command: ``fg`` in :mod:`~zodbserver.foreground`; ``start``,
``stop`` and ``status`` with :mod:`~zodbserver.daemon`, which also explains
why the server daemonizes itself rather than using zdaemon; ``--user`` in
:mod:`~zodbserver.user_switch`; ``logtail`` in :mod:`~zodbserver.logtail`.

Exit codes (:mod:`~zodbserver.exit_codes`), LSB-like: 0 success; 1 failure
(``start`` when already running, ``stop`` when not running, a server that
fails to start or to stop); 2 a wrong command line or configuration file;
``status`` answers 0 running, 1 not running but a stale pid file remains
(the process died), 3 not running.  ``stop`` on a stopped server is an
error here (LSB init scripts call that success) so that a mistyped
``--var`` does not pass unnoticed; ``restart`` starts a stopped server.

Signals (handled by the server core): TERM and INT shut down gracefully and
exit 0; USR2 reopens the log files (for logrotate); USR1 (``reload``)
reloads the TLS certificates and the access rules.  HUP exits 1 meaning
"restart me", as in ZEO: ``fg`` exits 1 for its service manager to restart
it, a ``start``ed server re-executes itself in place (same pid).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pwd
import sys
from collections.abc import Sequence

from . import daemon
from .addresses import format_address, parse_address
from .config import ServerConfig, filestorage, load_config, msgpack_from_environment
from .container import apply_environment
from .errors import ConfigurationError
from .exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .foreground import PROGRAM, Plan, daemon_argv, serve
from .logtail import logtail
from .pidfile import AlreadyRunningError, probe
from .server.access import load_rules
from .server.settings import ServerSettings
from .tls import SERVER_ONLY, ServerTLS, server_context
from .units import parse_seconds
from .user_switch import find_user, switch_user

#: Seconds ``start`` waits for the server to listen (storages may need to
#: build their index first) and ``stop`` waits for it to exit.
DEFAULT_START_TIMEOUT = 300.0
DEFAULT_STOP_TIMEOUT = 60.0


# -- what to run: options and zeo.conf combined ------------------------------


def make_plan(args: argparse.Namespace) -> Plan:
    """Combine zeo.conf (if any) with the command-line overrides."""
    var = os.path.abspath(args.var)
    directories = [var]
    options = ["--var", var]
    if args.configure:
        config = load_config(args.configure)
        options += ["-C", os.path.abspath(args.configure)]
    else:
        config = ServerConfig(
            settings=ServerSettings(msgpack=msgpack_from_environment()),
            storages=(),
        )
    blob_dirs = [os.path.abspath(path) for path in args.blob_dir or ()]
    if blob_dirs and len(blob_dirs) > len(args.filename or ()):
        raise ConfigurationError(
            "--blob-dir: each gives the blobs of one -f storage, in order; "
            f"{len(blob_dirs)} for {len(args.filename or ())} -f"
        )
    if args.filename:
        paths = [os.path.abspath(path) for path in args.filename]
        blobs_of = dict(zip(paths, blob_dirs, strict=False))
        storages = tuple(
            filestorage(str(number), path, blobs_of.get(path))
            for number, path in enumerate(paths, 1)
        )
        config = config.replace(storages=storages)
        for path in paths:
            options += ["-f", path]
        for blob_dir in blob_dirs:
            options += ["--blob-dir", blob_dir]
    elif not args.configure:
        data_fs = os.path.join(var, "filestorage", "Data.fs")
        blobs = os.path.join(var, "blobstorage")
        config = config.replace(storages=(filestorage("1", data_fs, blobs),))
        directories.append(os.path.dirname(data_fs))

    settings = config.settings
    if args.address is not None:
        settings = dataclasses.replace(settings, address=args.address)
        options += ["-a", args.address_text]
    if args.transaction_timeout is not None:
        settings = dataclasses.replace(
            settings, transaction_timeout=args.transaction_timeout
        )
        options += ["-t", repr(args.transaction_timeout)]
    if args.read_only:
        settings = dataclasses.replace(settings, read_only=True)
        options.append("--read-only")
    if args.monitor_address_text is not None:
        settings = dataclasses.replace(
            settings, monitor_address=parse_address(args.monitor_address_text)
        )
        options += ["--monitor-address", args.monitor_address_text]
    if args.replicate_from_text is not None:
        settings = dataclasses.replace(
            settings,
            replicate_from=parse_address(args.replicate_from_text, listening=False),
        )
        options += ["--replicate-from", args.replicate_from_text]
    if args.access_rules is not None:
        path = os.path.abspath(args.access_rules)
        load_rules(path)  # a bad rule is an error now, not at start
        settings = dataclasses.replace(settings, access_rules=path)
        options += ["--access-rules", path]
    tls = _tls_options(args, settings.tls)
    if tls is not settings.tls:
        settings = dataclasses.replace(settings, tls=tls)
        assert tls is not None
        options += ["--ssl-certificate", tls.certificate]
        options += ["--ssl-authenticate", tls.authenticate]
        if tls.key:
            options += ["--ssl-key", tls.key]
    if args.user is not None:
        options += ["--user", args.user]
    pid_file = settings.pid_filename or os.path.join(var, "zeoserver.pid")
    # The command keeps the pid file (see zodbserver.foreground).
    config = config.replace(settings=dataclasses.replace(settings, pid_filename=None))

    log_files = config.log_files
    if log_files:
        log_file = log_files[0]
    else:
        log_file = os.path.join(var, "log", "zeoserver.log")
        directories.append(os.path.dirname(log_file))
    # The directories of the files the server writes (-f's Data.fs, the pid
    # file) are made at start, as those of a new --var are.
    written = [pid_file, *log_files]
    written += [storage.path for storage in config.storages if storage.path]
    directories += [os.path.dirname(os.path.abspath(path)) for path in written]
    return Plan(
        config=config,
        var=var,
        pid_file=os.path.abspath(pid_file),
        log_file=os.path.abspath(log_file),
        directories=tuple(dict.fromkeys(directories)),
        options=tuple(options),
    )


def _tls_options(args: argparse.Namespace, tls: ServerTLS | None) -> ServerTLS | None:
    """``--ssl-*`` over the configuration's ``<ssl>``; checked by loading."""
    given = {
        "certificate": args.ssl_certificate,
        "key": args.ssl_key,
        "authenticate": args.ssl_authenticate,
    }
    changes = {name: value for name, value in given.items() if value is not None}
    if not changes:
        return tls
    if tls is None:
        missing = [
            name for name in ("certificate", "authenticate") if not changes.get(name)
        ]
        if missing:
            flags = " and ".join(f"--ssl-{name}" for name in missing)
            raise ConfigurationError(f"TLS needs {flags} too")
        tls = ServerTLS(
            changes["certificate"], changes.get("key"), changes["authenticate"]
        )
    else:
        tls = dataclasses.replace(tls, **changes)
    for name in ("certificate", "key", "authenticate"):
        value = getattr(tls, name)
        if value and value != SERVER_ONLY:
            tls = dataclasses.replace(tls, **{name: os.path.abspath(value)})
    server_context(tls)  # a bad file is an error now, not at start
    return tls


# -- start, and the user to run as --------------------------------------------


def start(plan: Plan, timeout: float) -> int:
    """Start the server as a daemon; return once it listens or has failed."""
    state, pid = probe(plan.pid_file)
    if state == "running":
        print(AlreadyRunningError(pid, plan.pid_file), file=sys.stderr)
        return EXIT_FAILURE
    try:
        for directory in plan.directories:
            os.makedirs(directory, exist_ok=True)
        report, log_offset = daemon.launch(
            daemon_argv(plan), log_file=plan.log_file, timeout=timeout
        )
    except OSError as error:
        print(
            f"{PROGRAM}: cannot prepare {error.filename}: {error.strerror}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if report.kind == "ready":
        print(f"{PROGRAM} started (pid {report.pid}), listening on {report.detail}")
        return EXIT_OK
    if report.kind == "error":
        problem = report.detail
    elif report.kind == "timeout":
        problem = f"not listening after {timeout:g} seconds; it is still starting"
    else:
        problem = "the server process exited before it listened"
    print(f"{PROGRAM} failed to start: {problem}", file=sys.stderr)
    daemon.print_log_since(plan.log_file, log_offset)
    return EXIT_FAILURE


def _become(user: pwd.struct_passwd | None) -> int | None:
    """Switch to ``user`` if one is given; an exit status if that fails."""
    if user is None:
        return None
    problem = switch_user(user)
    if problem is None:
        return None
    print(f"{PROGRAM}: {problem}", file=sys.stderr)
    return EXIT_FAILURE


# -- the command line --------------------------------------------------------


def _address_text(text: str) -> str:
    # Checked here, kept as text: a daemon is handed the same option.
    try:
        parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _seconds(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _server_options(suppress: bool) -> argparse.ArgumentParser:
    """The options naming the server, for the main parser and each command.

    In the commands their defaults are suppressed, so that an option given
    before the command is not reset by the command's own parser.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("server options")
    group.add_argument(
        "-C",
        "--configure",
        metavar="ZEO.CONF",
        default=default(None),
        help="the configuration file (ZEO's zeo.conf format)",
    )
    group.add_argument(
        "-a",
        "--address",
        metavar="ADDRESS",
        dest="address_text",
        type=_address_text,
        default=default(None),
        help="PORT (on 127.0.0.1), HOST:PORT, or a Unix socket PATH "
        "(containing '/'); default 127.0.0.1:8100",
    )
    group.add_argument(
        "-f",
        "--filename",
        metavar="DATA.FS",
        action="append",
        default=default(None),
        help="serve this FileStorage (repeat for storages '1', '2', ...); "
        "replaces the storages of -C; default VAR/filestorage/Data.fs",
    )
    group.add_argument(
        "--blob-dir",
        metavar="DIR",
        action="append",
        default=default(None),
        help="the blob directory of the storage of the -f given in the same "
        "place (the first --blob-dir for the first -f, ...); without it that "
        "storage has no blobs",
    )
    group.add_argument(
        "-t",
        "--transaction-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default(None),
        help="disconnect a client that holds the commit lock longer",
    )
    group.add_argument(
        "--read-only",
        action="store_true",
        default=default(False),
        help="refuse every write",
    )
    group.add_argument(
        "--ssl-certificate",
        metavar="PEM",
        default=default(None),
        help="serve over TLS with this certificate chain (as <ssl> certificate)",
    )
    group.add_argument(
        "--ssl-key",
        metavar="PEM",
        default=default(None),
        help="the certificate's private key, if not in its file",
    )
    group.add_argument(
        "--ssl-authenticate",
        metavar="CA",
        default=default(None),
        help="CA file or directory clients' certificates must chain to, or "
        "SERVER-ONLY for no client certificates (as <ssl> authenticate)",
    )
    group.add_argument(
        "--monitor-address",
        metavar="ADDRESS",
        dest="monitor_address_text",
        type=_address_text,
        default=default(None),
        help="answer HTTP there: /metrics (Prometheus), a status page at /, "
        "/live, /ready, /status.json; PORT (on 127.0.0.1) or HOST:PORT",
    )
    group.add_argument(
        "--replicate-from",
        metavar="ADDRESS",
        dest="replicate_from_text",
        type=_address_text,
        default=default(None),
        help="be a read-only replica of the primary at HOST:PORT (see "
        "'zeoserver promote')",
    )
    group.add_argument(
        "--access-rules",
        metavar="FILE",
        default=default(None),
        help="who may read, write or pack which storage (see the README)",
    )
    group.add_argument(
        "--user",
        metavar="NAME",
        default=default(None),
        help="run the server as this user (fg, start, restart; needs root "
        "unless already that user)",
    )
    group.add_argument(
        "--var",
        metavar="DIR",
        default=default("var"),
        help="directory of the pid file (zeoserver.pid), the log "
        "(log/zeoserver.log) and the default database; default ./var",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Run and control a ZODB database server (ZEO-compatible).",
        parents=[_server_options(suppress=False)],
        epilog="Give every command the same server options. "
        "Run 'zeoserver COMMAND --help' for a command's own options.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_server_options(suppress=True)]

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=common, help=summary, description=description
        )

    fg = command(
        "fg",
        "run the server in the foreground",
        "Run the server in this process, logging to stderr unless zeo.conf "
        "has an <eventlog>. For systemd, supervisord and containers. "
        "SIGTERM/SIGINT stop it (exit 0); SIGHUP exits 1 to be restarted; "
        "SIGUSR2 reopens the log files. The plone/plone-zeo image's "
        "variables apply when set: ZEO_PORT (listen on 0.0.0.0:PORT), "
        "ZEO_READ_ONLY, ZEO_INVALIDATION_QUEUE_SIZE, ZEO_PACK_KEEP_OLD.",
    )
    fg.add_argument("--daemon", action="store_true", help=argparse.SUPPRESS)
    fg.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)

    start = command(
        "start",
        "start the server in the background",
        "Start the server as a daemon and return once it listens (exit 0), "
        "or print why it could not start and the log's last lines (exit 1). "
        "Exits 1 if it is already running.",
    )
    _timeout_option(start, DEFAULT_START_TIMEOUT, "to wait for the server to listen")
    stop = command(
        "stop",
        "stop the background server",
        "Send the server SIGTERM and wait until it has exited (exit 0). "
        "Exits 1 if it is not running or does not stop in time.",
    )
    _timeout_option(stop, DEFAULT_STOP_TIMEOUT, "to wait for the server to exit")
    restart = command(
        "restart",
        "stop the server if it runs, then start it",
        "Stop the server if it is running, then start it as 'start' does.",
    )
    _timeout_option(
        restart, DEFAULT_START_TIMEOUT, "to wait for each of stopping and starting"
    )
    command(
        "reload",
        "reload the TLS certificates and the access rules",
        "Send the server SIGUSR1: it reads its TLS certificate, key and CAs "
        "again, for new connections (established ones keep working), and its "
        "access rules, which it applies to the clients already connected. "
        "Exits 1 if it is not running.",
    )
    status = command(
        "status",
        "tell whether the server runs",
        "Print whether the server is running. Exit 0 running, 3 not running, "
        "1 not running but a stale pid file remains. With --verbose, also "
        "what the monitor shows (storages, clients, the commit lock, the "
        "slowest recent commits), or without a monitor-address the "
        "server_status counters.",
    )
    status.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the server's figures too",
    )
    command(
        "promote",
        "make a replica a writable primary",
        "Tell the running replica (through its address) to stop following "
        "its primary and take writes: each storage begins a new epoch, "
        "saved beside its file, so that the former primary, when it comes "
        "back, knows it was replaced. Run it once the primary is gone for "
        "good; exit 1 if the server is not a replica or cannot be reached.",
    )
    rejoin = command(
        "rejoin",
        "move a former primary's own transactions aside, to follow again",
        "With the server stopped: ask the primary given by --replicate-from "
        "(or zeo.conf's replicate-from) where this server's history left "
        "the primary's, and move this server's transactions after that "
        "point into DATA.FS.diverged-TID (a FileStorage, with its blobs), "
        "which an operator can inspect or copy back. Then start the server "
        "as a replica.",
    )
    rejoin.add_argument(
        "--dry-run",
        action="store_true",
        help="only print what would be moved aside",
    )
    logtail = command(
        "logtail",
        "show the end of the log, following it",
        "Print the last lines of the server's log file, then follow it "
        "(like tail -f) until interrupted with Ctrl-C.",
    )
    logtail.add_argument(
        "-n", "--lines", type=int, default=10, help="lines to show (default 10)"
    )
    logtail.add_argument(
        "--no-follow", action="store_true", help="print and exit, do not follow"
    )
    pack = commands.add_parser(
        "pack",
        help="pack a storage of a running server (the zeopack command)",
        description="Run zeopack with the arguments that follow 'pack' "
        "('zeoserver pack --help' shows them); the server options given "
        "before 'pack' (-C, -a) name the server to pack when the arguments "
        "name none.",
        add_help=False,
        # Every argument after "pack" is zeopack's, even those spelt like
        # the server options (-t, -a): none is an option here.
        prefix_chars="\x00",
    )
    pack.add_argument("zeopack_arguments", nargs="*", metavar="ZEOPACK-ARGUMENT")
    return parser


class _Version(argparse.Action):
    """``--version``: print ``zeoserver VERSION`` and exit 0.

    argparse's ``action="version"`` needs the text when the parser is built;
    this reads it only when asked, so that a server process does not load
    ``importlib.metadata`` for it.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object):
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show the version and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from . import __version__

        print(f"{PROGRAM} {__version__}")
        parser.exit()


def _timeout_option(
    parser: argparse.ArgumentParser, default: float, purpose: str
) -> None:
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default,
        help=f"seconds {purpose} (default {default:g})",
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``zeoserver ARGV``; the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exited:  # --help, or argparse's own usage error
        return exited.code if isinstance(exited.code, int) else EXIT_USAGE
    text = args.address_text
    args.address = None if text is None else parse_address(text)
    try:
        user = None if args.user is None else find_user(args.user)
        plan = make_plan(args)
        if args.command == "fg":
            plan = apply_environment(
                plan,
                os.environ,
                address_given=text is not None,
                read_only_given=args.read_only,
            )
    except ConfigurationError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    if args.command == "fg":
        return _become(user) or serve(plan, daemon=args.daemon, ready_fd=args.ready_fd)
    if args.command == "start":
        return _become(user) or start(plan, args.timeout)
    if args.command == "stop":
        return daemon.stop(PROGRAM, plan.pid_file, args.timeout)
    if args.command == "restart":
        if probe(plan.pid_file)[0] == "running":
            stopped = daemon.stop(PROGRAM, plan.pid_file, args.timeout)
            if stopped != EXIT_OK:
                return stopped
        return _become(user) or start(plan, args.timeout)
    if args.command == "status":
        state = daemon.status(PROGRAM, plan.pid_file)
        if state == EXIT_OK and args.verbose:
            return _print_figures(plan)
        return state
    if args.command == "reload":
        return daemon.reload(PROGRAM, plan.pid_file)
    if args.command == "promote":
        return _promote(plan)
    if args.command == "rejoin":
        from .rejoin import rejoin

        return rejoin(plan.config, dry_run=args.dry_run)
    if args.command == "logtail":
        return _logtail(plan, args.lines, follow=not args.no_follow)
    if args.command == "pack":
        return _pack(plan, args)
    raise AssertionError(args.command)


def _pack(plan: Plan, args: argparse.Namespace) -> int:
    """``zeoserver pack ARGS``: zeopack, aimed at the server the options name."""
    from . import zeopack

    arguments: list[str] = []
    if args.configure or args.address_text is not None:
        arguments += ["-a", format_address(plan.config.settings.address)]
        if len(plan.config.storages) == 1:
            arguments += ["-S", plan.config.storages[0].name]
    return zeopack.main([*arguments, *args.zeopack_arguments])


def _print_figures(plan: Plan) -> int:
    from .status_report import StatusUnavailableError, report

    try:
        print(report(plan.config.settings), end="")
    except StatusUnavailableError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _promote(plan: Plan) -> int:
    from .addresses import DEFAULT_HOST, format_address
    from .peer_call import CallFailedError, call

    address = plan.config.settings.address
    if not isinstance(address, str) and address[0] in ("", "0.0.0.0", "::"):
        address = (DEFAULT_HOST, address[1])
    try:
        answer = call(address, "promote", seconds=60.0)
    except CallFailedError as error:
        print(f"{PROGRAM}: promote: {error}", file=sys.stderr)
        return EXIT_FAILURE
    for name, epoch in sorted(answer["storages"].items()):
        print(
            f"storage {name!r} at {format_address(address)}: primary, "
            f"epoch {epoch['epoch']}, after {epoch['after']}"
        )
    return EXIT_OK


def _logtail(plan: Plan, lines: int, follow: bool) -> int:
    try:
        logtail(plan.log_file, lines, follow=follow)
    except OSError as error:
        print(
            f"{PROGRAM}: no log file: {plan.log_file}: {error.strerror}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
