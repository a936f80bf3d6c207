"""The connection state application threads read: an immutable value."""

from __future__ import annotations

import dataclasses

import pytest

from zodbserver.client.state import NO_INFO, ConnectionState


def connect(state: ConnectionState, **info: object) -> ConnectionState:
    return state.connected(
        read_only=False,
        server_address="('127.0.0.1', 8100)",
        protocol_version=b"M5",
        verify_result="empty cache",
        info=info,
    )


def test_every_connect_and_disconnect_is_a_new_generation() -> None:
    state = ConnectionState(read_only=True)
    assert not state.operational
    assert state.read_only
    up = connect(state, size=10)
    assert up.operational
    assert up.generation == state.generation + 1
    assert not up.read_only
    down = up.disconnected()
    assert not down.operational
    assert down.generation == up.generation + 1
    # What the last connection said stays known while disconnected.
    assert down.server_address == up.server_address
    assert down.info["size"] == 10
    assert not state.operational  # the old values are untouched


def test_info_merges_and_cannot_be_changed_in_place() -> None:
    state = connect(ConnectionState(), size=10, length=2)
    later = state.with_info({"size": 20})
    assert later.info["size"] == 20
    assert later.info["length"] == 2
    assert state.info["size"] == 10
    with pytest.raises(TypeError):
        later.info["size"] = 30  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        later.operational = False  # type: ignore[misc]
    assert NO_INFO["length"] == 0
