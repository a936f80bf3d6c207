"""Work a client does not wait for still has its failure reported: a pack
with ``wait`` false that fails is logged once, by the server, with the
error -- not left to asyncio's "exception was never retrieved".  A pack the
storage refuses ("Already packing") is the request's failure: a warning,
with no traceback, and the client that waits gets the error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ZODB.FileStorage import FileStorage
from ZODB.FileStorage.FileStorage import FileStorageError

from support.raw_client import RawClient
from support.waiting import wait_until
from zodbserver.protocol import ErrorReply
from zodbserver.server.thread import ServerThread


class UnpackableStorage(FileStorage):
    def pack(self, t: float, referencesf: object, gc: bool | None = None) -> None:
        raise OSError(28, "No space left on device")


def test_a_pack_not_waited_for_logs_its_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = UnpackableStorage(str(tmp_path / "Data.fs"))
    with ServerThread({"1": storage}) as address, RawClient(address) as client:
        client.result("register", "1", False)
        assert client.result("pack", time.time(), False) is None  # at once
        wait_until(lambda: "background task" in caplog.text, "the failure to be logged")
        assert client.result("ping") is None  # the server goes on
    failures = [r for r in caplog.records if "background task" in r.getMessage()]
    assert len(failures) == 1
    assert "No space left on device" in failures[0].getMessage()
    assert "never retrieved" not in caplog.text


class BusyPackingStorage(FileStorage):
    def pack(self, t: float, referencesf: object, gc: bool | None = None) -> None:
        raise FileStorageError("Already packing")


@pytest.mark.parametrize("wait", [True, False])
def test_a_refused_pack_is_a_warning_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wait: bool
) -> None:
    storage = BusyPackingStorage(str(tmp_path / "Data.fs"))
    with ServerThread({"1": storage}) as address, RawClient(address) as client:
        client.result("register", "1", False)
        if wait:
            event = client.call("pack", time.time(), True)
            assert isinstance(event, ErrorReply), event
            assert event.class_name.endswith("FileStorageError")
            assert "Already packing" in repr(event.payload)
        else:
            assert client.result("pack", time.time(), False) is None
        wait_until(lambda: "failed" in caplog.text, "the refusal to be logged")
        assert client.result("ping") is None
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelname == "WARNING"
    assert failures[0].exc_info is None
    assert "Already packing" in failures[0].getMessage()
