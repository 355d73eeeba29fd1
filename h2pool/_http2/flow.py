"""Receive windows that grow to the bandwidth-delay product. I/O thread only.

A stream can deliver at most one window per round trip: with the default 2 MiB window
a 50 ms link carries at most ~40 MB/s, whatever its bandwidth, and credit returned in
half-window steps halves that again. ``WindowTuner`` estimates the link the way gRPC's
BDP estimator does: when data arrives it sends a PING and counts the bytes received
until the ACK. That count is what the link carried in one round trip; when it fills
two thirds of the window and the bandwidth it implies is a new maximum, the window
becomes four times the count, up to ``Limits.max_stream_window``. (gRPC grows to
twice the count; four reaches a 100 ms link's window in half the round trips:
``stress/latency.py``, a fresh connection's streamed 50 MB download at 50 / 100 ms
RTT went from 45 / 25 to 64 / 40 MB/s.)

A PING sample needs a round trip, and the first ones on a connection are taken while
the window is still the limit, so a fresh connection took four round trips to reach
16 MiB at 100 ms RTT. The first window of a streamed response gives evidence sooner:
when its reader has consumed it, the window took ``seconds`` to arrive and be read,
and the link's round trip is known from earlier PINGs or from how long the request
waited for its response headers. A window that arrives in a fraction of the round
trip says the link carries ``window * rtt / seconds`` per round trip; the window
becomes twice that (``on_burst``): the window reaches 16 MiB one round trip after
the first byte. (``stress/latency.py``, a fresh connection's streamed 50 MB download
at 50 / 100 ms RTT: 100 / 56 MB/s before, 154-160 / 87-88 after, httpx 110-128 / 81-87
in the same runs.)

Only streams whose reader keeps up get the larger window (a buffered response, whose
caller asked for the whole body, or a streamed one with little unread): a reader slow
from the start holds at most ``stream_window``, one that slows down later at most the
grown window (``docs/architecture.md``, flow control).
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_WINDOW", "WindowTuner"]

DEFAULT_MAX_WINDOW = 16 * 1024 * 1024  # gRPC's bdpLimit
_BETA = 2 / 3  # a sample this full of the window means the window is the limit
_GAMMA = 4  # grow to this many times the sample (see above)
_GAMMA_BURST = 2  # grow to this many times a burst's estimate (gRPC's factor)
_MIN_BURST = 0.001  # seconds: a window read within one loop turn still took some time


class WindowTuner:
    """One per HTTP/2 connection: the stream receive window it grants now."""

    __slots__ = ("_bw_max", "_sample", "maximum", "rtt", "sampling", "window")

    def __init__(self, initial: int, maximum: int) -> None:
        self.window = initial
        self.maximum = maximum
        self.sampling = False  # a PING is out and bytes are being counted
        self._sample = 0
        self._bw_max = 0.0
        self.rtt = 0.0  # the shortest round trip seen, seconds (0: none yet)

    @property
    def growing(self) -> bool:
        return self.window < self.maximum

    def start(self) -> None:
        """A PING was just sent for a sample: count from now."""
        self.sampling = True
        self._sample = 0

    def count(self, nbytes: int) -> None:
        self._sample += nbytes

    def observe_rtt(self, rtt: float) -> None:
        """A round trip took ``rtt`` seconds (a PING, or a request without a body
        waiting for its response headers, which adds the server's time: an upper
        bound, hence the minimum)."""
        if rtt > 0 and (not self.rtt or rtt < self.rtt):
            self.rtt = rtt

    def on_ack(self, rtt: float) -> int | None:
        """The sample's PING was answered after ``rtt`` seconds: the new window, or None."""
        self.sampling = False
        self.observe_rtt(rtt)
        sample = self._sample
        if rtt <= 0 or sample < _BETA * self.window:
            return None
        bandwidth = sample / rtt
        if bandwidth <= self._bw_max:
            return None  # not a faster link, only a burst (a window just opened)
        self._bw_max = bandwidth
        new = min(self.maximum, int(_GAMMA * sample))
        if new <= self.window:
            return None
        self.window = new
        return new

    def on_burst(self, nbytes: int, seconds: float) -> int | None:
        """A streamed response's reader consumed its first window, ``nbytes``, within
        ``seconds`` of the response headers: the new window, or None.

        Over one round trip the link carries about ``nbytes * rtt / seconds``: a window
        that arrived (and was read) in a tenth of the round trip means a link ten
        windows wide. A reader slower than the link measures itself, which is what its
        window should carry. The bandwidth maximum of the PING samples is left alone:
        this rate is a burst's, and later samples must still be able to grow past it.
        """
        rtt = self.rtt
        if not rtt or nbytes <= 0:
            return None
        estimate = nbytes * rtt / max(seconds, _MIN_BURST)
        new = min(self.maximum, int(_GAMMA_BURST * estimate))
        if new <= self.window:
            return None
        self.window = new
        return new
