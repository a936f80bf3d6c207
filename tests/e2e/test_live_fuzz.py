"""The live protocol fuzzer (``stress/fuzz.py``) in its short mode.

About 20,000 frames, structure-aware and random, go to a real server
process from four fuzzing connections while a stock ZEO 6 client commits
and reads back every 50 ms.  The run must end with no finding beyond the
known ones (``stress.fuzz.KNOWN_FINDINGS``), the bystander served without
a failure, the seeded and the bystander's data intact, only explained
transactions in Data.fs, a clean ``fstest``, and the server alive, then
stopping cleanly.  The oracle that judges the server's answers is checked
on a few frames of its own.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import msgpack
from stress import fuzz

from zodbserver.protocol import encode_frame

FRAMES = 20_000


def test_short_live_fuzz_run_finds_nothing_new(tmp_path: Path) -> None:
    result = fuzz.run(
        fuzz.Options(
            frames=FRAMES,
            seed=2026,
            connections=4,
            processes=0,
            directory=tmp_path / "run",
            keep=True,
            quiet=True,
        )
    )
    findings = [f"{f.signature}: {f.detail[:300]}" for f in result.findings]
    assert not findings, findings
    assert not result.problems, result.problems
    stats = result.stats
    assert stats.total_frames >= FRAMES
    # Every kind of session and frame was exercised, and answered.
    assert {"structured", "random-frames", "random-handshake", "ruok"} <= set(
        stats.sessions
    )
    assert stats.frames["call+mutated"] > 0
    assert stats.frames["transaction"] > 0
    assert stats.answers["reply"] > 1000
    assert any(answer.startswith("closed (") for answer in stats.answers)
    assert any(answer.startswith("error ") for answer in stats.answers)
    # The fuzzers committed whole transactions, and only those.
    assert result.transaction_counts["the fuzzers'"] > 0
    assert result.transaction_counts["unexplained"] == 0
    # The bystander was served throughout.
    bystander = result.bystander
    assert not bystander["failures"], bystander["failures"]
    assert len(bystander["commit_latency"]) >= 10
    assert len(bystander["read_latency"]) >= 10
    assert not result.data_problems
    assert result.fstest == (0, "")
    assert result.server_alive_at_end
    assert result.server_exit_status == 0
    assert result.resources_after.get("fds", 0) <= result.resources_before["fds"] + 5
    assert "## Findings" in fuzz.report(result)


def test_the_docs_method_table_matches_the_code() -> None:
    assert fuzz.doc_table_differences() == []


def _verdicts(oracle: fuzz.Oracle, *payloads: bytes) -> list[fuzz.Verdict]:
    return oracle.feed(b"".join(encode_frame(payload) for payload in payloads))


def _pack(message: object) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def test_the_oracle_follows_the_docs() -> None:
    oracle = fuzz.Oracle()
    ping, register = (1, False, "ping", ()), (2, False, "register", ("1", False))
    verdicts = _verdicts(oracle, b"M5", _pack(ping), _pack(register))
    assert [v.outcome for v in verdicts] == [fuzz.HANDSHAKE, fuzz.CALL, fuzz.CALL]
    # Before register: an error reply, as documented.
    assert verdicts[1].expected_error == "zodbserver.errors.RemoteProtocolError"
    assert oracle.registered
    (bad,) = _verdicts(oracle, _pack((3, False, "loadBefore", (b"short", b"x"))))
    assert bad.outcome == fuzz.CALL
    assert bad.expected_error == "builtins.TypeError"
    (store,) = _verdicts(oracle, _pack((0, True, "storea", (1, 2, 3, 4))))
    assert store.outcome == fuzz.ASYNC  # its error comes at the vote
    (unknown,) = _verdicts(oracle, _pack((0, True, "nosuch", ())))
    assert unknown.outcome == fuzz.CLOSE
    assert _verdicts(oracle, _pack(ping)) == []  # nothing after a close


def test_the_oracle_closes_on_protocol_errors() -> None:
    for payloads in (
        [b"M4"],
        [b"M5", b"\xc1"],
        [b"M5", _pack((1, False, ".reply", None))],
        [b"M5", _pack((1.5, False, "ping", ()))],
        [b"M5", _pack((1, False, "ping", None))],
        [b"Z5", pickle.dumps((1, False, 7, ()), 3)],
    ):
        verdicts = _verdicts(fuzz.Oracle(), *payloads)
        assert verdicts[-1].outcome == fuzz.CLOSE, payloads
    oversized = (fuzz.MAX_FRAME_SIZE + 1).to_bytes(4, "big")
    assert fuzz.Oracle().feed(oversized)[0].outcome == fuzz.CLOSE


def test_memo_bombs_are_never_sent() -> None:
    """A pickle whose LONG_BINPUT names memo entry 2**26 makes an unpickler
    allocate a gigabyte (known bug K3): the guard withholds it."""
    bomb = b"\x80\x03]r" + (2**26).to_bytes(4, "little") + b"."
    assert fuzz.max_memo_index(bomb) == 2**26
    oracle = fuzz.Oracle()
    _verdicts(oracle, b"Z5")
    (verdict,) = _verdicts(oracle, bomb)
    assert verdict.memo == 2**26
    for mode in ("avoid", "send"):
        assert fuzz.guard(verdict, fuzz.Protected(), mode)
