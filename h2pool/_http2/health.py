"""Deadlines of one HTTP/2 connection: stream read/write timeouts, the PING health
check and the write-stall check, all kept by one lazily re-armed timer. I/O thread only.

``Health`` is owned by its ``H2Conn`` and sees it only through ``HealthOwner``: what it
reads (streams, settings, unsent output) and what it may ask (fail a stream, give the
connection up, flush, tell the pool a slot opened).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from .._errors import ConnectionLost, H2PoolError, ReadTimeout, WriteTimeout

if TYPE_CHECKING:
    from .._config import Limits
    from .._loop import IOLoop, Timer
    from .protocol import _H2, H2Stream

__all__ = ["NO_DEADLINE", "READ", "WRITE", "Deadline", "Health", "HealthOwner"]


class Deadline(enum.IntEnum):
    """Which timeout runs on a stream now (``H2Stream.deadline_kind``)."""

    NONE = 0  # none: a streamed body's reader times its own waits
    READ = 1  # response data must arrive within Timeout.read of the last progress
    WRITE = 2  # the server must accept request body within Timeout.write


# Module-level aliases: the hot paths compare against these.
NO_DEADLINE, READ, WRITE = Deadline.NONE, Deadline.READ, Deadline.WRITE


class HealthOwner(Protocol):
    """What ``Health`` needs from its connection."""

    h2: _H2
    label: str
    settings_seen: bool

    @property
    def streams(self) -> Mapping[int, H2Stream]: ...
    @property
    def closed(self) -> bool: ...
    @property
    def unsent(self) -> int:
        """Bytes waiting for the socket."""
        ...

    def fail_stream(self, st: H2Stream, exc: H2PoolError) -> None:
        """Fail one stream with RST_STREAM(CANCEL)."""

    def lost(self, err: H2PoolError) -> None:
        """Give the connection up as lost (unsent requests are retried)."""

    def flush(self) -> None: ...
    def on_healthy(self) -> None:
        """A PING was answered: slots held back may be free again."""


class Health:
    """One timer per connection for every deadline; owned by the connection."""

    __slots__ = (
        "_covered",
        "_loop",
        "_owner",
        "_ping_payload",
        "_tick",
        "last_progress",
        "last_read",
        "last_write_progress",
        "limits",
        "pending_resets",
        "ping_sent_at",
        "stall_timeout",
        "suspect",
    )

    def __init__(
        self, owner: HealthOwner, loop: IOLoop, limits: Limits, stall_timeout: float | None
    ) -> None:
        self._owner = owner
        self._loop = loop
        self.limits = limits
        self.stall_timeout = stall_timeout
        self._tick: Timer | None = None
        now = loop.now
        self.last_read = now  # last byte read from the socket
        self.last_progress = now  # last response HEADERS or DATA on any stream
        self.last_write_progress = now  # last byte the kernel took
        self.ping_sent_at: float | None = None  # one PING in flight at most
        self._ping_payload = 0
        # Streams stalled and the health PING is unanswered: the connection takes no new
        # streams until the ACK (a new request could not be told apart from a sent one
        # if the connection then dies).
        self.suspect = False
        # Streams we reset still count against the peer's limit until it has surely
        # processed the RST_STREAM: the ACK of a PING sent after it (Go f35fec92). Else
        # a client cancelling fast can exceed MAX_CONCURRENT_STREAMS on the server.
        self.pending_resets = 0
        self._covered = 0  # resets sent before the PING in flight (its ACK proves them)

    # -- per stream ------------------------------------------------------------------------
    def arm_read(self, st: H2Stream) -> None:
        """The request is sent: from now on its response must make progress."""
        read = st.req.timeout.read
        st.last_activity = self._loop.now
        if read is None:
            st.deadline_kind = NO_DEADLINE
        else:
            st.deadline_kind = READ
            self.ensure_tick(self._loop.now + read)

    def arm_write(self, st: H2Stream) -> None:
        """The request has a body to send: the server must keep accepting it."""
        write = st.req.timeout.write
        if write is not None:
            st.deadline_kind = WRITE
            self.ensure_tick(self._loop.now + write)

    def started(self) -> None:
        """A stream was added; the read-idle clock of the PING check starts with the
        first one."""
        if len(self._owner.streams) == 1:
            self.last_read = self._loop.now
        if self._tick is None:
            self.arm()

    @staticmethod
    def _stream_due(st: H2Stream) -> float | None:
        kind = st.deadline_kind
        if kind == READ:
            t = st.req.timeout.read
        elif kind == WRITE:
            t = st.req.timeout.write
        else:
            return None
        return None if t is None else st.last_activity + t

    def _expire_streams(self, now: float) -> None:
        """Fail streams whose read or write timeout passed without progress."""
        owner = self._owner
        streams = owner.streams
        expired = [
            st for st in streams.values() if (d := self._stream_due(st)) is not None and d <= now
        ]
        for st in expired:
            if streams.get(st.id) is not st:
                continue
            if st.deadline_kind == WRITE:
                write = st.req.timeout.write
                owner.fail_stream(st, WriteTimeout(f"request body made no progress for {write} s"))
                continue
            read = st.req.timeout.read
            owner.fail_stream(st, ReadTimeout(f"no response data from {owner.label} for {read} s"))
            if owner.closed:
                return
            if owner.h2.in_header_block():
                # Stalled inside a header block (HEADERS without END_HEADERS): the HPACK
                # state is shared, so this connection can never carry anything again.
                msg = f"{owner.label} stalled inside a header block"
                try:
                    owner.h2.close_connection(error_code=1)  # PROTOCOL_ERROR
                except Exception:
                    pass
                owner.flush()
                owner.lost(ConnectionLost(msg))
                return
            if not owner.settings_seen:
                # Never a SETTINGS frame: this is not a working HTTP/2 server; do not
                # pool the connection for the next request.
                owner.lost(ConnectionLost(f"{owner.label} never sent its SETTINGS"))
                return
            if now - self.last_progress >= (read or 0.0):
                # No stream has made progress for the whole timeout: the connection may
                # be dead. Check it with a PING; until the ACK it takes no new streams.
                # (If other streams are progressing, only this one is slow.)
                self.suspect = True
                self.send_ping()

    # -- the tick --------------------------------------------------------------------------
    def arm(self) -> None:
        """One lazily re-armed timer per connection covers the streams' read and write
        timeouts, the PING health check and the write-stall check; it sleeps until the
        nearest of their deadlines. Progress only moves ``last_activity``; the tick
        re-computes when it fires, so a request costs no timer operation (measured: the
        per-stream SortedList insert and removal were ~4% of the I/O thread)."""
        due = self._next_due()
        if due is not None:
            self._tick = self._loop.call_at(due, self._on_tick)

    def arm_if_idle(self) -> None:
        if self._tick is None:
            self.arm()

    def ensure_tick(self, due: float) -> None:
        tick = self._tick
        if tick is None:
            self._tick = self._loop.call_at(due, self._on_tick)
        elif due < tick.when:
            tick.cancel()
            self._tick = self._loop.call_at(due, self._on_tick)

    def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def _next_due(self) -> float | None:
        due: float | None = None
        interval = self.limits.ping_interval
        owner = self._owner
        if self.ping_sent_at is not None:
            due = self._ping_due()
        elif interval is not None and (owner.streams or self.pending_resets):
            due = self.last_read + interval
        stall = self.stall_timeout
        if stall is not None and owner.unsent:
            d = self.last_write_progress + stall
            due = d if due is None else min(due, d)
        for st in owner.streams.values():
            d2 = self._stream_due(st)
            if d2 is not None and (due is None or d2 < due):
                due = d2
        return due

    def _on_tick(self) -> None:
        self._tick = None
        owner = self._owner
        if owner.closed:
            return
        now = self._loop.now
        self._expire_streams(now)
        if owner.closed:
            return
        ping_timeout = self.limits.ping_timeout
        if self.ping_sent_at is not None and now >= self._ping_due():
            msg = f"{owner.label} sent nothing for {ping_timeout} s and did not answer a PING"
            owner.lost(ConnectionLost(msg))
            return
        stall = self.stall_timeout
        if stall is not None and owner.unsent and now >= self.last_write_progress + stall:
            owner.lost(ConnectionLost(f"writes to {owner.label} stalled for {stall} s"))
            return
        interval = self.limits.ping_interval
        if (
            interval is not None
            and self.ping_sent_at is None
            and owner.streams
            and now >= self.last_read + interval
        ):
            self.send_ping()
        self.arm()

    # -- PING ------------------------------------------------------------------------------
    def _ping_due(self) -> float:
        """When an unanswered PING means a dead connection: ``ping_timeout`` after the
        later of the PING and the last byte read. Frames arriving are proof of life: on
        a slow or long link the ACK queues behind the data already in flight (seen: 12 s
        behind a 1 Mbit/s download), and that connection must not be killed."""
        assert self.ping_sent_at is not None
        return max(self.ping_sent_at, self.last_read) + self.limits.ping_timeout

    def reset_sent(self) -> None:
        """We sent RST_STREAM: hold its slot until a PING sent after it is answered.
        (A PING already in flight went out before the reset; its ACK proves nothing
        about it, so another PING follows that ACK.)"""
        self.pending_resets += 1
        self.send_ping()

    def send_ping(self) -> None:
        owner = self._owner
        if self.ping_sent_at is not None or owner.closed:
            return
        self._ping_payload += 1
        owner.h2.ping(self._ping_payload.to_bytes(8, "big"))
        self.ping_sent_at = self._loop.now
        self._covered = self.pending_resets
        self._loop.mark_dirty(owner)
        if self._tick is None:
            self.arm()

    def on_ping_ack(self) -> None:
        self.ping_sent_at = None
        freed = self.suspect or self._covered > 0
        self.suspect = False
        self.pending_resets -= self._covered
        self._covered = 0
        if self.pending_resets:
            self.send_ping()  # for the resets sent after the PING just answered
        # The tick may sleep until the ACK deadline; bring it forward to the next due.
        due = self._next_due()
        if due is not None:
            self.ensure_tick(due)
        if freed:
            self._owner.on_healthy()
