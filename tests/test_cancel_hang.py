"""A lost wake-up of the I/O thread (the intermittent cancel-storm hang).

``IOLoop._on_wake`` cleared ``_wake_pending`` and only then drained the wake-up channel.
A caller that had seen the loop asleep (``_asleep`` read just before the loop woke)
could take ``_wake_lock`` in between, find the flag clear, set it and write its byte;
the drain swallowed that write and the flag stayed set with nothing in the channel. From
then on every caller believed a wake-up was already on its way and skipped the write:
the loop slept until its next timer (a lazily re-armed read-timeout tick, the keep-alive
expiry, or never), and a request posted to an idle client was not even submitted to the
pool, so no ReadTimeout or PoolTimeout could fire for it. The cancel storm (thousands of
posts while the loop wakes and sleeps) made the race likely enough to hang
``test_cancel_storm_leaves_client_working`` now and then, always after the storm, when
nothing but a caller's wake-up could move the loop.

The interleaving is forced: the loop thread is held inside its drain while the test
thread plays the caller that read ``_asleep`` just before the loop woke up.
"""

from __future__ import annotations

import contextlib
import os
import threading

import pytest
from servers.util import wait_until

from h2pool._loop import IOLoop, WakeChannel


class HeldDrain:
    """Stands in for the loop's wake-up drain: the first call tells the test that the
    loop is draining, then waits until the test has played the racing caller. Each
    call then drains the real channel (the selector watches that one)."""

    def __init__(self, read) -> None:
        self._read = read
        self.draining = threading.Event()
        self.release = threading.Event()
        self._armed = True

    def __call__(self) -> None:
        if self._armed:
            self._armed = False
            self.draining.set()
            self.release.wait(5.0)
        self._read()


@pytest.fixture(params=["eventfd", "socketpair"])
def wake_kind(request, monkeypatch):
    """Each test runs with both wake-up channels: Linux's eventfd and the socket pair
    used where there is none."""
    if request.param == "socketpair":
        monkeypatch.delattr(os, "eventfd", raising=False)
    elif not hasattr(os, "eventfd"):
        pytest.skip("no eventfd on this platform")
    return request.param


@pytest.mark.timeout(10)
def test_wake_channel_one_read_takes_every_write_and_close_is_final(wake_kind):
    ch = WakeChannel()
    assert (ch._pair is None) == (wake_kind == "eventfd")
    with pytest.raises(BlockingIOError):
        ch.read()  # nothing written yet
    for _ in range(3):
        ch.write()
    ch.read()
    if wake_kind == "eventfd":
        with pytest.raises(BlockingIOError):
            ch.read()  # the counter was taken whole
    r, w = os.pipe()
    old = ch.fd
    ch.close()
    w2 = os.dup(w)  # POSIX: the lowest free number, which the channel just gave up
    try:
        if wake_kind == "eventfd":
            assert w2 == old  # the premise: the number now names a pipe's write end
        ch.close()  # a second close must not close a reused descriptor number
        with pytest.raises(OSError):
            ch.write()
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 64)  # nothing was written into whatever reused the number
        os.write(w2, b"x")  # and the second close did not close it
        assert os.read(r, 64) == b"x"
    finally:
        for fd in (r, w, w2):
            os.close(fd)


@pytest.mark.timeout(60)
def test_wakeup_posted_while_the_loop_drains_is_not_lost(wake_kind):
    loop = IOLoop(name="h2pool-io-wake-test")
    loop.start()
    real = loop._wake_read
    try:
        # Asleep in select() with no timer and no command: only a wake-up moves it.
        wait_until(lambda: loop._asleep and not loop._commands)
        held = HeldDrain(real)
        loop._wake_read = held

        # Caller A: the loop is asleep, so A sets _wake_pending and writes the byte.
        first = threading.Event()
        loop.call_soon_threadsafe(first.set)
        assert held.draining.wait(5.0), "the loop did not wake up for the first post"

        # Caller B read _asleep as True just before the loop woke, and reaches
        # _wake_lock only now, while the loop is inside _on_wake. (The loop thread is
        # parked in recv() and reads _asleep nowhere before it sets it again itself.)
        loop._asleep = True
        try:
            loop.call_soon_threadsafe(lambda: None)
        finally:
            loop._asleep = False
        held.release.set()
        assert first.wait(5.0)

        # The loop goes back to sleep with no timer: the next post must wake it.
        wait_until(lambda: loop._asleep and not loop._commands)
        later = threading.Event()
        loop.call_soon_threadsafe(later.set)
        assert later.wait(5.0), (
            "the I/O thread missed a wake-up: _wake_pending="
            f"{loop._wake_pending} with the wake-up socket empty"
        )
    finally:
        loop._wake_read = real
        loop.stop()
        with contextlib.suppress(OSError):
            loop._wake_write()  # whatever the flag says
        assert loop.join(5.0)
