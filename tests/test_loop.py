"""IOLoop timers against an injected clock: deadlines are stepped by hand, so whether a
timer has fired depends on the clock the test set, not on how fast the machine is."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2pool._loop import IOLoop, Poller


class StepClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def loop(clock: StepClock) -> Iterator[IOLoop]:
    loop = IOLoop(clock=clock)
    loop.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    assert loop.join(5)


def on_loop(loop: IOLoop, fn: Callable[[], object]) -> None:
    """Run ``fn`` on the I/O thread (timers must be armed there) and wait for it."""
    done = threading.Event()

    def run() -> None:
        fn()
        done.set()

    loop.call_soon_threadsafe(run)
    assert done.wait(5)


def turn_at(loop: IOLoop, clock: StepClock, t: float) -> None:
    """Set the clock to ``t`` and wait until the loop has run its timers due by then.

    The probe is a zero-delay timer armed at ``t``: timers run in deadline order, so once
    it has fired, every timer due by ``t`` has fired too and no later one has.
    """
    clock.t = t
    probe = threading.Event()
    loop.call_soon_threadsafe(lambda: loop.call_later(0.0, probe.set))
    assert probe.wait(5)


@pytest.mark.timeout(10)
def test_call_later_fires_when_the_injected_clock_reaches_its_deadline(
    loop: IOLoop, clock: StepClock
) -> None:
    fired: list[float] = []
    on_loop(loop, lambda: loop.call_later(30.0, lambda: fired.append(loop.now)))
    turn_at(loop, clock, 1029.999)
    assert fired == []
    turn_at(loop, clock, 1030.0)
    assert fired == [1030.0]


@pytest.mark.timeout(10)
def test_a_cancelled_timer_never_fires(loop: IOLoop, clock: StepClock) -> None:
    fired: list[str] = []

    def arm() -> None:
        loop.call_later(5.0, fired.append, "kept")
        loop.call_later(5.0, fired.append, "cancelled").cancel()

    on_loop(loop, arm)
    turn_at(loop, clock, 1005.0)
    assert fired == ["kept"]


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("arm"), st.integers(0, 20)),
            st.tuples(st.just("cancel"), st.integers(0, 30)),
            st.tuples(st.just("turn"), st.integers(0, 20)),
        ),
        max_size=40,
    )
)
def test_the_nearest_deadline_follows_every_arm_cancel_and_turn(ops: list) -> None:
    """The loop sleeps until its cached nearest deadline: it must never be later than
    the earliest live timer (a timer would fire late), and every due timer fires in
    the turn after its deadline, timers armed by timers included."""
    clock = StepClock()
    loop = IOLoop(clock=clock)
    live: dict[int, tuple[float, object]] = {}
    fired: list[int] = []
    n = 0

    def fire(i: int) -> None:
        fired.append(i)
        del live[i]
        if i % 3 == 0:  # a timer that arms an earlier-than-the-rest timer
            arm(0)

    def arm(delay: int) -> None:
        nonlocal n
        live[n] = (clock.t + delay, loop.call_later(float(delay), fire, n))
        n += 1

    try:
        for op, x in ops:
            if op == "arm":
                arm(x)
            elif op == "cancel" and x < n and x in live:
                live.pop(x)[1].cancel()  # type: ignore[attr-defined]
            elif op == "turn":
                clock.t += x
                loop.call_soon_threadsafe(lambda: None)  # never sleeps in select()
                loop._run_once()
                assert all(when > clock.t for when, _ in live.values())
            assert loop._due == min((w for w, _ in live.values()), default=float("inf"))
    finally:
        loop._close_resources()


# -- Poller: the loop's readiness source ---------------------------------------------------


def _pollers() -> list[str]:
    import select

    return ["epoll", "selectors"] if hasattr(select, "epoll") else ["selectors"]


@pytest.fixture(params=_pollers())
def poller(request: pytest.FixtureRequest) -> Iterator[Poller]:
    p = Poller()
    if request.param == "selectors" and p._epoll is not None:
        # The portable path, on a machine that has epoll: what other systems run.
        p._epoll.close()
        p._epoll = None
        p._selector = selectors.DefaultSelector()
    yield p
    p.close()


def _seen(p: Poller, timeout: float = 0.0) -> list[tuple[str, int]]:
    return [(cb.__name__, mask) for cb, mask in p.poll(timeout)]  # type: ignore[attr-defined]


def _named(name: str) -> Callable[[int], None]:
    def cb(mask: int) -> None:
        pass

    cb.__name__ = name
    return cb


@pytest.mark.timeout(10)
def test_poller_reports_what_each_socket_asked_for(poller: Poller) -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with a, b, c, d:
        poller.register(a, selectors.EVENT_READ, _named("a"))
        poller.register(c, selectors.EVENT_WRITE, _named("c"))
        assert _seen(poller) == [("c", selectors.EVENT_WRITE)]  # a has nothing to read
        b.send(b"x")
        assert sorted(_seen(poller, 5)) == [
            ("a", selectors.EVENT_READ),
            ("c", selectors.EVENT_WRITE),
        ]
        # modify: new events and a new callback; the same events keep working
        poller.modify(c, selectors.EVENT_READ, _named("c2"))
        poller.modify(a, selectors.EVENT_READ, _named("a2"))
        assert _seen(poller) == [("a2", selectors.EVENT_READ)]
        d.send(b"y")
        assert sorted(_seen(poller, 5)) == [
            ("a2", selectors.EVENT_READ),
            ("c2", selectors.EVENT_READ),
        ]
        poller.unregister(a)
        assert _seen(poller) == [("c2", selectors.EVENT_READ)]
        assert sorted(map(id, poller.fileobjs())) == [id(c)]
        with pytest.raises(KeyError):
            poller.register(c, selectors.EVENT_READ, _named("again"))
        with pytest.raises(KeyError):
            poller.unregister(a)
        with pytest.raises(KeyError):
            poller.modify(a, selectors.EVENT_READ, _named("a3"))
        with pytest.raises(ValueError):
            poller.register(b, 0, _named("b"))


@pytest.mark.timeout(10)
def test_poller_hang_up_wakes_a_reader_and_a_closed_socket_can_be_unregistered(
    poller: Poller,
) -> None:
    a, b = socket.socketpair()
    with a:
        poller.register(a, selectors.EVENT_READ | selectors.EVENT_WRITE, _named("a"))
        b.close()  # the peer is gone: a is readable (EOF) as well as writable
        assert _seen(poller, 5) == [("a", selectors.EVENT_READ | selectors.EVENT_WRITE)]
        a.close()
        poller.unregister(a)  # found by identity, as selectors does once fileno() is -1
        assert poller.fileobjs() == []
        assert _seen(poller) == []


@pytest.mark.timeout(10)
def test_poller_waits_at_least_the_timeout_it_is_given(poller: Poller) -> None:
    import time

    a, b = socket.socketpair()
    with a, b:
        poller.register(a, selectors.EVENT_READ, _named("a"))
        t0 = time.monotonic()
        assert _seen(poller, -1.0) == []  # a deadline already past: no wait at all
        assert time.monotonic() - t0 < 1
        for timeout in (0.0004, 0.0101):
            t0 = time.monotonic()
            assert _seen(poller, timeout) == []
            # Rounded up to epoll's milliseconds, never down: a loop waiting for a
            # deadline must not wake just before it and spin.
            assert time.monotonic() - t0 >= timeout
