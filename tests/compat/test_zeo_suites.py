"""ZEO 6's own test classes, with ZEO's ClientStorage against our server.

ZEO ships the tests it runs against its own server in ``ZEO.tests``
(``testZEO``: ``ThreadTests``, ``IterationTests``, ``CommitLockVoteTests``,
``MiscZEOTests``, ``TransUndoStorageWithCache`` and ZODB's storage mixins,
composed per storage type).  They start their server through
``ZEO.tests.forker.start_zeo_server`` with a ``zeo.conf`` text; here that
text is loaded by our configuration code and served by our server in a
thread, and everything else -- the client, the tests, their assertions -- is
ZEO's, unchanged.  Every FileStorage class runs in both wire encodings.

ZEO names its test methods ``check*``; each is collected here as
``test_check*``.  None is left out.  ZEO's TLS class runs as it is, and its
blob class is also run over ZEO's TLS setup.
The FileStorage classes also run ZODB's ``HistoryStorage`` and
``PersistentStorage`` mixins, which ZEO runs elsewhere.

ZEO's client leaves a coroutine unawaited when a test closes it while a
call or a finish is pending (``CommitLockVoteTests``, ``ThreadTests``; with
ZEO's own server as well), and ``BasicStorage.test_tid_ordering_w_commit``
never aborts a transaction whose vote fails, so ZEO's client never closes
its ``TransactionBuffer`` temporary file: those warnings alone are ignored
here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ZEO.tests import forker, testZEO
from ZODB.tests import HistoryStorage, PersistentStorage

from zodbserver.config import load_config, open_storages
from zodbserver.server.thread import ServerThread

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <coroutine object "
        "ClientIO.(call_sync_co|tpc_finish_co):pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:coroutine 'ClientIO.(call_sync_co|tpc_finish_co)' was never awaited"
        ":RuntimeWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <_io.FileIO name=[0-9]+ mode='rb[+]'"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


def start_our_server(
    storage_conf: str | None = None,
    zeo_conf: Any = None,
    port: Any = None,
    keep: bool = False,
    path: str = "Data.fs",
    blob_dir: str | None = None,
    msgpack: bool = True,
    **ignored: Any,
) -> tuple[Any, Callable[[], None]]:
    """``forker.start_zeo_server`` for our server: returns (address, stop)."""
    if not storage_conf:
        storage_conf = f"<filestorage>\npath {path}\n</filestorage>"
    if blob_dir:
        storage_conf = (
            f"<blobstorage>\nblob-dir {blob_dir}\n{storage_conf}\n</blobstorage>"
        )
    if zeo_conf is None or isinstance(zeo_conf, dict):
        address = ("127.0.0.1", port or 0) if not isinstance(port, str) else port
        options = zeo_conf or {}
        zeo_conf = forker.ZEOConfig(address, **options)
    fd, config_path = tempfile.mkstemp(".conf", prefix="zeo", dir=os.getcwd())
    with os.fdopen(fd, "w") as stream:
        stream.write(f"{zeo_conf}\n\n{storage_conf}\n")
    config = load_config(config_path)
    settings = dataclasses.replace(config.settings, msgpack=msgpack)
    server = ServerThread(open_storages(config), settings)
    address = server.start()
    return address, server.stop


@contextlib.contextmanager
def our_server_in_forker(msgpack: bool) -> Iterator[None]:
    """Make ``forker.start_zeo_server`` start our server, for one setUp."""
    original = forker.start_zeo_server

    def start(*args: Any, **kwargs: Any) -> tuple[Any, Callable[[], None]]:
        kwargs.pop("msgpack", None)
        return start_our_server(*args, msgpack=msgpack, **kwargs)

    forker.start_zeo_server = start
    try:
        yield
    finally:
        forker.start_zeo_server = original


class OurServer:
    """Mixed in before a ZEO test class: its servers are ours."""

    msgpack = True

    def setUp(self) -> None:
        with our_server_in_forker(self.msgpack):
            super().setUp()  # type: ignore[misc]


def zeo_checks(cls: type) -> type:
    """Expose the ``check*`` methods of ``cls`` as ``test_check*``."""
    for name in dir(cls):
        method = getattr(cls, name)
        if name.startswith("check") and callable(method):
            setattr(cls, f"test_{name}", method)
    return cls


class _WithHistory(HistoryStorage.HistoryStorage, PersistentStorage.PersistentStorage):
    pass


@zeo_checks
class TestFileStorageMsgpack(OurServer, testZEO.FileStorageTests, _WithHistory):
    long_tests = True  # ZODB's long race test, with ZEO's client (tests/conftest.py)


@zeo_checks
class TestFileStoragePickle(OurServer, testZEO.FileStorageTests, _WithHistory):
    msgpack = False


@zeo_checks
class TestFileStorageSSL(OurServer, testZEO.FileStorageSSLTests):
    """ZEO's TLS configuration (its zeo.conf ``<ssl>`` and its client
    context) against our server."""


@zeo_checks
class TestBlobsOverSSL(OurServer, testZEO.BlobAdaptedFileStorageTests):
    """ZEO's blob checks, uploads and downloads, over ZEO's TLS setup."""

    def getZEOConfig(self) -> str:  # noqa: N802 - ZEO's name
        return str(testZEO.testssl.server_config)

    def _client_options(self) -> dict[str, object]:
        return {"ssl": testZEO.testssl.client_ssl()}


@zeo_checks
class TestMappingStorage(OurServer, testZEO.MappingStorageTests):
    pass


@zeo_checks
class TestDemoStorage(OurServer, testZEO.DemoStorageTests):
    pass


@zeo_checks
class TestBlobAdaptedFileStorage(OurServer, testZEO.BlobAdaptedFileStorageTests):
    pass


@zeo_checks
class TestBlobWritableCache(OurServer, testZEO.BlobWritableCacheTests):
    pass


@zeo_checks
class TestClientConflictResolution(OurServer, testZEO.ClientConflictResolutionTests):
    pass


@zeo_checks
class TestFileStorageHex(OurServer, testZEO.FileStorageHexTests):
    pass


@zeo_checks
class TestFileStorageClientHex(OurServer, testZEO.FileStorageClientHexTests):
    pass


@zeo_checks
class TestFileStorageRecovery(OurServer, testZEO.FileStorageRecoveryTests):
    pass
