"""The servers our client is tested against, by name.

Each entry starts a server on 127.0.0.1 serving a FileStorage at ``path``
(with blobs in ``blob_dir`` if given) as storage ``"1"`` and returns
``(address, stop)``.  ``port=0`` picks a free port; a given port lets a
test restart a server where a client expects it.
``process=True`` runs the server in a child process: tests that stop a
server under connected clients need that, because ZEO's in-thread server
can leave its client sockets open when it stops.
Add our own server here when it exists: every test parametrised over
``SERVERS`` then runs against it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from support.waiting import wait_until


class ServerStarter(Protocol):
    def __call__(
        self,
        path: str,
        *,
        port: int | str = 0,
        read_only: bool = False,
        process: bool = False,
        blob_dir: str | None = None,
        **options: Any,
    ) -> tuple[Any, Callable[[], None]]: ...


def wait_for_commit(writer: Any, reader: Any, timeout: float = 10) -> None:
    """Wait (bounded) until ``reader`` has the invalidation of ``writer``'s
    last commit.

    ``server_sync``'s ping is not enough against ZEO's threaded test server,
    which may answer the ping before it sends the invalidation.
    """
    committed = writer.lastTransaction()
    wait_until(
        lambda: reader.lastTransaction() >= committed,
        "the invalidation of the writer's last commit",
        timeout=timeout,
    )


def _zeo(msgpack: bool) -> ServerStarter:
    def start(
        path: str,
        *,
        port: int | str = 0,
        read_only: bool = False,
        process: bool = False,
        blob_dir: str | None = None,
        **options: Any,
    ) -> tuple[Any, Callable[[], None]]:
        import ZEO  # test-only peer

        zeo_conf = dict(options)
        if msgpack:
            zeo_conf["msgpack"] = True
        if read_only:
            zeo_conf["read_only"] = True
        addr, stop = ZEO.server(
            path=path,
            blob_dir=blob_dir,
            port=port,
            threaded=not process,
            zeo_conf=zeo_conf or None,
        )
        return addr, stop

    return start


#: Runs our server in a child process; prints "LISTENING <address as JSON>".
_OUR_SERVER_SCRIPT = r"""
import json, sys
from ZODB.FileStorage import FileStorage
from zodbserver.server.main import run
from zodbserver.server.settings import ServerSettings

path, options = sys.argv[1], json.loads(sys.argv[2])
if isinstance(options["address"], list):
    options["address"] = tuple(options["address"])
storage = FileStorage(path, blob_dir=options.pop("blob_dir"))

def ready(address):
    print("LISTENING", json.dumps(address), flush=True)

sys.exit(run(ServerSettings(**options), {"1": storage}, ready=ready))
"""


def _ours(msgpack: bool) -> ServerStarter:
    def start(
        path: str,
        *,
        port: int | str = 0,
        read_only: bool = False,
        process: bool = False,
        blob_dir: str | None = None,
        **options: Any,
    ) -> tuple[Any, Callable[[], None]]:
        from ZODB.FileStorage import FileStorage

        from zodbserver.server.thread import ServerThread

        settings = dict(
            options,
            msgpack=msgpack,
            read_only=read_only,
            address=port if isinstance(port, str) else ("127.0.0.1", port),
        )
        if not process:
            storage = FileStorage(path, blob_dir=blob_dir)
            server = ServerThread({"1": storage}, **settings)
            return server.start(), server.stop
        return _process(path, dict(settings, blob_dir=blob_dir))

    return start


def _process(path: str, settings: dict[str, Any]) -> tuple[Any, Callable[[], None]]:
    import json
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", _OUR_SERVER_SCRIPT, path, json.dumps(settings)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith(b"LISTENING "):
        child.kill()
        child.wait()
        child.stdout.close()
        raise RuntimeError(f"our server did not start: {line!r}")
    bound = json.loads(line.split(b" ", 1)[1])
    address: Any = bound if isinstance(bound, str) else tuple(bound)

    def stop() -> None:
        child.terminate()
        child.wait(30)
        assert child.stdout is not None
        child.stdout.close()

    return address, stop


SERVERS: dict[str, ServerStarter] = {
    "zeo-M5": _zeo(msgpack=True),
    "zeo-Z5": _zeo(msgpack=False),
    "ours-M5": _ours(msgpack=True),
    "ours-Z5": _ours(msgpack=False),
}

#: Servers that serve blobs: all of them.
BLOB_SERVERS = SERVERS
