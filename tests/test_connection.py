"""The connection lifecycle (``h2pool._connection.ConnState``), pair by pair.

Every pair of states is tried on a real connection object's transition check: the
pairs in the table move, staying put is allowed, every other pair raises
``IllegalTransition`` and leaves the state as it was.
"""

from __future__ import annotations

import itertools
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._connection import TRANSITIONS, ConnectionBase, ConnState, IllegalTransition
from h2pool._loop import IOLoop

ALL_PAIRS = list(itertools.product(ConnState, ConnState))


class _Origin:
    stall_timeout = None

    def on_slot_free(self, conn: object) -> None: ...
    def on_conn_closed(self, conn: object) -> None: ...
    def retry(self, req: object, fact: object, cause: object) -> bool:
        return False


class _Probe(ConnectionBase):  # type: ignore[type-arg]
    http_version = "probe"
    initial_state = ConnState.HANDSHAKE
    out_cap = 1024

    def _setup(self) -> None:
        pass


@pytest.fixture
def probe() -> _Probe:
    loop = IOLoop(name="h2pool-state-test")
    a, b = socket.socketpair()
    b.close()
    conn = _Probe(loop, _Origin(), a, h2pool.Limits(), "probe")
    yield conn
    a.close()
    loop._close_resources()


_PATH = [ConnState.HANDSHAKE, ConnState.OPEN, ConnState.DRAINING, ConnState.CLOSED]


def _force(conn: _Probe, state: ConnState) -> None:
    """Bring a fresh probe (in HANDSHAKE) to ``state`` by legal moves."""
    for step in _PATH[1 : _PATH.index(state) + 1]:
        conn._move_to(step)
    assert conn.state is state


def test_table_is_what_the_lifecycle_says() -> None:
    # Forward only: nothing comes back from CLOSED, nothing returns to HANDSHAKE.
    assert all(new is not ConnState.HANDSHAKE for _, new in TRANSITIONS)
    assert all(old is not ConnState.CLOSED for old, _ in TRANSITIONS)
    assert len(TRANSITIONS) == 6


@pytest.mark.parametrize(
    ("old", "new"), ALL_PAIRS, ids=[f"{a.name}->{b.name}" for a, b in ALL_PAIRS]
)
def test_every_pair(probe: _Probe, old: ConnState, new: ConnState) -> None:
    _force(probe, old)
    if old is new or (old, new) in TRANSITIONS:
        probe._move_to(new)
        assert probe.state is new
    else:
        with pytest.raises(IllegalTransition):
            probe._move_to(new)
        assert probe.state is old
    assert probe.closed is (probe.state is ConnState.CLOSED)
    assert probe.draining is (probe.state in (ConnState.DRAINING, ConnState.CLOSED))


@given(st.lists(st.sampled_from(list(ConnState)), max_size=12))
def test_random_walks_stay_on_the_table(walk: list[ConnState]) -> None:
    loop = IOLoop(name="h2pool-state-walk")
    a, b = socket.socketpair()
    try:
        conn = _Probe(loop, _Origin(), a, h2pool.Limits(), "walk")
        for new in walk:
            old = conn.state
            try:
                conn._move_to(new)
            except IllegalTransition:
                assert (old, new) not in TRANSITIONS and old is not new
                assert conn.state is old
            else:
                assert old is new or (old, new) in TRANSITIONS
                assert conn.state is new
    finally:
        a.close()
        b.close()
        loop._close_resources()
