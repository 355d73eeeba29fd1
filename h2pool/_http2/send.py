"""Sending request bodies on an HTTP/2 connection: round-robin DATA within the
flow-control windows and the outbound-buffer cap. I/O thread only.

``BodyScheduler`` is owned by its ``H2Conn`` and sees it only through ``SenderOwner``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import h2.exceptions as h2x

from .._connection import take_upload
from .._errors import H2PoolError
from .health import NO_DEADLINE

if TYPE_CHECKING:
    from .._loop import IOLoop
    from .health import Health
    from .protocol import _H2, H2Stream

__all__ = ["OUT_CAP", "BodyScheduler", "SenderOwner"]

# Outbound bytes we buffer per connection before we stop generating DATA and stop
# reading the socket. h2 acknowledges PING and SETTINGS without limit, so a peer that
# floods them and never reads must hit a wall here (CVE-2019-9512, CVE-2019-9515).
OUT_CAP = 1024 * 1024


class SenderOwner(Protocol):
    """What ``BodyScheduler`` needs from its connection."""

    h2: _H2
    health: Health
    settings_seen: bool

    @property
    def streams(self) -> Mapping[int, H2Stream]: ...
    @property
    def unsent(self) -> int: ...
    def fail_stream(self, st: H2Stream, exc: H2PoolError) -> None: ...
    def flush(self) -> None: ...


class BodyScheduler:
    """The streams of one connection with request body left to send."""

    __slots__ = ("_loop", "_owner", "pending", "senders")

    def __init__(self, owner: SenderOwner, loop: IOLoop) -> None:
        self._owner = owner
        self._loop = loop
        self.senders: deque[H2Stream] = deque()
        # Set by event handlers (WINDOW_UPDATE, SETTINGS): pump once after the whole
        # batch of events, since a later event of the batch may be the RST_STREAM h2
        # has already applied, and sending on that stream would fail.
        self.pending = False

    def __bool__(self) -> bool:
        return bool(self.senders)

    def add(self, st: H2Stream) -> None:
        self.senders.append(st)
        self.pump()

    def pump_if_pending(self) -> None:
        if self.pending:
            self.pending = False
            self.pump()

    def pump(self) -> None:
        """Send DATA round-robin, one frame per stream per round, within the flow-control
        windows, so one large upload cannot starve small requests on this connection."""
        owner = self._owner
        if not owner.settings_seen:
            # Until the server's SETTINGS arrive we do not know its stream windows; a
            # server announcing a window below 65535 would see an overflow (RFC 9113
            # §6.9.2 allows it, strict servers reject it). HEADERS go out at once.
            return
        senders = self.senders
        h2c = owner.h2
        streams = owner.streams
        # Count what h2 has generated but not yet handed over, or several uploads
        # started in one turn would each buffer up to the cap.
        budget = OUT_CAP - owner.unsent - h2c.pending_output()
        while senders and budget > 0:
            if h2c.outbound_flow_control_window <= 0:
                return
            progressed = False
            for _ in range(len(senders)):
                st = senders.popleft()
                if streams.get(st.id) is not st:
                    continue
                window = h2c.local_flow_control_window(st.id)
                if window <= 0:
                    senders.append(st)
                    continue
                if st.upload is not None:
                    sent = self._send_upload(st, min(window, h2c.max_outbound_frame_size, budget))
                    budget -= sent
                    progressed = progressed or sent > 0
                    if h2c.outbound_flow_control_window <= 0 or budget <= 0:
                        break
                    continue
                body = st.body
                if body is None:
                    continue
                pos = st.body_pos
                # Within the budget too: nginx allows frames as large as the window, and
                # a frame of megabytes would overfill the outbound buffer (OUT_CAP).
                n = min(window, h2c.max_outbound_frame_size, len(body) - pos, budget)
                end = pos + n >= len(body)
                try:
                    h2c.send_data(st.id, body[pos : pos + n], end_stream=end)
                except h2x.StreamClosedError:
                    continue  # reset by the peer; its StreamReset event settles it
                budget -= n
                st.last_activity = self._loop.now
                progressed = True
                if end:
                    st.body = None
                    owner.health.arm_read(st)
                else:
                    st.body_pos = pos + n
                    senders.append(st)
                if h2c.outbound_flow_control_window <= 0 or budget <= 0:
                    break
            if not progressed:
                return

    def _send_upload(self, st: H2Stream, limit: int) -> int:
        """One DATA frame from a streamed body; re-queues the stream if more may follow."""
        pipe = st.upload
        assert pipe is not None
        owner = self._owner
        data, end, error = take_upload(pipe, limit)
        if error is not None:
            owner.fail_stream(st, error)
            return 0
        if not data and not end:
            # Waiting on the caller's own producer, not on the server: the write
            # timeout ("the server does not accept the body") stops until resume().
            st.deadline_kind = NO_DEADLINE
            return 0
        try:
            owner.h2.send_data(st.id, data, end_stream=end)
        except h2x.StreamClosedError:
            return 0  # reset by the peer; its StreamReset event settles it
        st.last_activity = self._loop.now
        if end:
            st.upload = None
            owner.health.arm_read(st)
        else:
            self.senders.append(st)
        return max(len(data), 1)

    def resume(self, st: H2Stream) -> None:
        """The producer of ``st``'s streamed body has more (posted by the producer)."""
        owner = self._owner
        if owner.streams.get(st.id) is not st or st.upload is None:
            return
        if st.deadline_kind == NO_DEADLINE:
            st.last_activity = self._loop.now  # the write timeout runs again from now
            owner.health.arm_write(st)
        if st not in self.senders:
            self.senders.append(st)
            self.pump()
            self._loop.mark_dirty(owner)
