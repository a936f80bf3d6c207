"""The argument-check targets of ``stress/fuzz_targets.py`` (5 and 6, which
``python -m stress.fuzz_atheris`` runs coverage-guided) fed by Hypothesis.

Target 6 binds a method's arguments through the method table: it may raise
``TypeError`` only, and must refuse what docs/protocol.md's checks refuse
and accept what they accept.  Target 5 does the same for the calls a
``ServerConnection`` decodes from a client's stream.  Any other exception,
or a disagreement with the docs, fails the test.  The arguments are mostly
a valid call's with one value changed, one dropped or one added, so the
checks are met at their edges; the rest are random values and bytes.
"""

from __future__ import annotations

import pickle
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stress import fuzz_targets

from zodbserver.protocol import encode_frame
from zodbserver.server import methods
from zodbserver.server.methods import METHODS, Method

SETTINGS = settings(max_examples=150, deadline=None, database=None)
NAMES = sorted(METHODS)

#: Values of the shapes the checks tell apart: 8-byte strings and others,
#: ints at the edges of the ranges the checks take, floats that are not
#: numbers, text with surrogates, containers of them.
scalars = (
    st.none()
    | st.booleans()
    | st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30])
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.binary(min_size=8, max_size=8)
    | st.binary(max_size=12)
    | st.sampled_from(["", " ", "p", "u", "c", "1", "\udc80", "x.tmp"])
    | st.text(max_size=10)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def method_calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    """A method and its arguments: a valid call's, changed once, or random."""
    name = draw(st.sampled_from(NAMES))
    args = list(fuzz_targets.VALID_ARGS[name])
    change = draw(st.sampled_from(["replace", "replace", "drop", "add", "random"]))
    if change == "replace" and args:
        args[draw(st.integers(0, len(args) - 1))] = draw(values)
    elif change == "drop" and args:
        del args[draw(st.integers(0, len(args) - 1))]
    elif change == "add":
        args.insert(draw(st.integers(0, len(args))), draw(values))
    elif change == "random":
        args = draw(st.lists(values, max_size=7))
    return name, tuple(args)


def test_every_method_has_valid_seed_arguments_the_checks_accept() -> None:
    assert set(fuzz_targets.VALID_ARGS) == set(METHODS)
    for name, args in fuzz_targets.VALID_ARGS.items():
        bound = METHODS[name].bind_arguments(name, args)  # no TypeError
        assert len(bound) == len(args), name
        fuzz_targets.check_arguments(name, args)


def test_the_seed_inputs_pass_every_target() -> None:
    seeds = fuzz_targets.seed_inputs()
    assert {seed[0] for seed in seeds} == {1, 3, 5, 6}
    for seed in seeds:
        fuzz_targets.fuzz_one_input(seed)


@SETTINGS
@given(call=method_calls())
def test_argument_checks_fuzz(call: tuple[str, tuple[Any, ...]]) -> None:
    fuzz_targets.check_arguments(*call)


@SETTINGS
@given(
    name=st.sampled_from(NAMES),
    args=st.lists(values, max_size=6),
    pickled=st.booleans(),
)
def test_method_target_fuzz(name: str, args: list[Any], pickled: bool) -> None:
    """Target 6 as libFuzzer calls it: the method's index, the encoding,
    the encoded arguments (an unencodable value sends random bytes)."""
    try:
        if pickled:
            payload = pickle.dumps((1, False, name, tuple(args)), 3)
        else:
            payload = msgpack.packb(args, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, pickle.PicklingError):
        payload = repr(args).encode()
    index = bytes([fuzz_targets.NAMES.index(name), int(pickled)])
    fuzz_targets.fuzz_one_input(b"\x06" + index + payload)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_method_target_fuzz_on_random_bytes(data: bytes) -> None:
    fuzz_targets.fuzz_one_input(b"\x06" + data)


@SETTINGS
@given(
    calls=st.lists(st.tuples(method_calls(), st.booleans()), min_size=1, max_size=4),
    letter=st.sampled_from([b"M", b"Z"]),
)
def test_dispatch_target_fuzz(
    calls: list[tuple[tuple[str, tuple[Any, ...]], bool]], letter: bytes
) -> None:
    """Target 5: a registered session's calls, synchronous or not."""
    stream = encode_frame(letter + b"5")
    messages: list[Any] = [(1, False, "register", ("1", False))]
    messages += [
        (msgid, flag, name, args)
        for msgid, ((name, args), flag) in enumerate(calls, start=2)
    ]
    for message in messages:
        try:
            if letter == b"M":
                payload = msgpack.packb(message, use_bin_type=True)
            else:
                payload = pickle.dumps(message, 3)
        except (TypeError, ValueError, OverflowError, pickle.PicklingError):
            continue
        stream += encode_frame(payload)
    fuzz_targets.fuzz_one_input(b"\x05" + stream)


# -- the targets can fail ------------------------------------------------------


def _refusing(error: Exception) -> Method:
    def check(value: Any) -> Any:
        raise error

    return Method(methods.Session.ping, (check,), 1)


@pytest.mark.parametrize(
    ("check_error", "escapes"),
    [
        (ValueError("undocumented"), ValueError),
        (methods.ArgumentError("a tid"), AssertionError),  # docs say valid
    ],
)
def test_a_check_that_breaks_the_contract_fails_the_target(
    monkeypatch: pytest.MonkeyPatch,
    check_error: Exception,
    escapes: type[Exception],
) -> None:
    """getTid(z64) with a check that raises: an undocumented exception
    escapes as itself, a refusal the docs do not make as AssertionError."""
    monkeypatch.setitem(METHODS, "getTid", _refusing(check_error))
    with pytest.raises(escapes):
        fuzz_targets.check_arguments("getTid", (b"\0" * 8,))
    message = msgpack.packb((b"\0" * 8,), use_bin_type=True)
    index = bytes([fuzz_targets.NAMES.index("getTid"), 0])
    with pytest.raises(escapes):
        fuzz_targets.fuzz_one_input(b"\x06" + index + message)
