"""Deadlines of an HTTP/2 connection: stream read/write timeouts, the PING health
check and the write-stall check, all kept by one lazily re-armed timer per connection.
A mixin of ``H2Conn``; I/O thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h2.events as ev

from .._config import Limits
from .._errors import ConnectionLost, H2PoolError, ReadTimeout, WriteTimeout
from .protocol import NO_DEADLINE, READ, WRITE, H2Stream

if TYPE_CHECKING:
    from .._loop import IOLoop, Timer
    from .protocol import _H2


class Deadlines:
    """The timer half of ``H2Conn`` (its attributes are declared there)."""

    h2: _H2
    loop: IOLoop
    limits: Limits
    label: str
    closed: bool
    streams: dict[int, H2Stream]
    origin: Any
    last_read: float
    last_progress: float
    stall_timeout: float | None
    _tick: Timer | None
    _ping_sent_at: float | None
    _ping_payload: int
    _pending_resets: int
    _suspect: bool
    _settings_seen: bool
    _out: bytearray
    _out_pos: int
    _last_write_progress: float

    def _fail_stream(
        self, st: H2Stream, exc: H2PoolError, send_rst: bool = True, code: int = 8
    ) -> None:
        raise NotImplementedError

    def _lost(self, err: H2PoolError, cause: BaseException | None) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def _arm_read_timer(self, st: H2Stream) -> None:
        read = st.req.timeout.read
        st.last_activity = self.loop.now
        if read is None:
            st.deadline_kind = NO_DEADLINE
        else:
            st.deadline_kind = READ
            self._ensure_tick(self.loop.now + read)

    def _stream_due(self, st: H2Stream) -> float | None:
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
        expired = []
        for st in self.streams.values():
            due = self._stream_due(st)
            if due is not None and due <= now:
                expired.append(st)
        for st in expired:
            if self.streams.get(st.id) is not st:
                continue
            if st.deadline_kind == WRITE:
                write = st.req.timeout.write
                self._fail_stream(st, WriteTimeout(f"request body made no progress for {write} s"))
                continue
            read = st.req.timeout.read
            self._fail_stream(st, ReadTimeout(f"no response data from {self.label} for {read} s"))
            if self.closed:
                return
            if getattr(self.h2.incoming_buffer, "_headers_buffer", None):
                # Stalled inside a header block (HEADERS without END_HEADERS): the HPACK
                # state is shared, so this connection can never carry anything again.
                msg = f"{self.label} stalled inside a header block"
                try:
                    self.h2.close_connection(error_code=1)  # PROTOCOL_ERROR
                except Exception:
                    pass
                self.flush()
                self._lost(ConnectionLost(msg), None)
                return
            if not self._settings_seen:
                # Never a SETTINGS frame: this is not a working HTTP/2 server; do not
                # pool the connection for the next request.
                self._lost(ConnectionLost(f"{self.label} never sent its SETTINGS"), None)
                return
            if now - self.last_progress >= (read or 0.0):
                # No stream has made progress for the whole timeout: the connection may
                # be dead. Check it with a PING; until the ACK it takes no new streams.
                # (If other streams are progressing, only this one is slow.)
                self._suspect = True
                self._send_ping()

    def _arm_tick(self) -> None:
        """One lazily re-armed timer per connection covers the streams' read and write
        timeouts, the PING health check and the write-stall check; it sleeps until the
        nearest of their deadlines. Progress only moves ``last_activity``; the tick
        re-computes when it fires, so a request costs no timer operation (measured: the
        per-stream SortedList insert and removal were ~4% of the I/O thread)."""
        due = self._next_tick_due()
        if due is not None:
            self._tick = self.loop.call_at(due, self._on_tick)

    def _ensure_tick(self, due: float) -> None:
        tick = self._tick
        if tick is None:
            self._tick = self.loop.call_at(due, self._on_tick)
        elif due < tick.when:
            tick.cancel()
            self._tick = self.loop.call_at(due, self._on_tick)

    def _next_tick_due(self) -> float | None:
        due: float | None = None
        interval = self.limits.ping_interval
        if self._ping_sent_at is not None:
            due = self._ping_sent_at + self.limits.ping_timeout
        elif interval is not None and (self.streams or self._pending_resets):
            due = self.last_read + interval
        stall = self.stall_timeout
        if stall is not None and len(self._out) > self._out_pos:
            d = self._last_write_progress + stall
            due = d if due is None else min(due, d)
        for st in self.streams.values():
            d2 = self._stream_due(st)
            if d2 is not None and (due is None or d2 < due):
                due = d2
        return due

    def _on_tick(self) -> None:
        self._tick = None
        if self.closed:
            return
        now = self.loop.now
        self._expire_streams(now)
        if self.closed:
            return
        ping_timeout = self.limits.ping_timeout
        if self._ping_sent_at is not None and now >= self._ping_sent_at + ping_timeout:
            msg = f"{self.label} did not answer a PING within {ping_timeout} s"
            self._lost(ConnectionLost(msg), None)
            return
        stall = self.stall_timeout
        unsent = len(self._out) > self._out_pos
        if stall is not None and unsent and now >= self._last_write_progress + stall:
            self._lost(ConnectionLost(f"writes to {self.label} stalled for {stall} s"), None)
            return
        interval = self.limits.ping_interval
        if (
            interval is not None
            and self._ping_sent_at is None
            and self.streams
            and now >= self.last_read + interval
        ):
            self._send_ping()
        self._arm_tick()

    def _send_ping(self) -> None:
        if self._ping_sent_at is not None or self.closed:
            return
        self._ping_payload += 1
        self.h2.ping(self._ping_payload.to_bytes(8, "big"))
        self._ping_sent_at = self.loop.now
        self.loop.mark_dirty(self)
        if self._tick is None:
            self._arm_tick()

    def _on_ping_ack(self, event: ev.PingAckReceived) -> None:
        self._ping_sent_at = None
        if self._suspect:
            self._suspect = False
            self.origin.on_slot_free(self)
        # The tick may sleep until the ACK deadline; bring it forward to the next due.
        due = self._next_tick_due()
        if due is not None:
            self._ensure_tick(due)
        if self._pending_resets:
            self._pending_resets = 0
            self.origin.on_slot_free(self)
