"""Sending request bodies on an HTTP/2 connection: round-robin DATA within the
flow-control windows and the outbound-buffer cap. A mixin of ``H2Conn``; I/O thread only.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions as h2x

from .._errors import H2PoolError, RequestBodyError
from .protocol import H2Stream

if TYPE_CHECKING:
    from .._loop import IOLoop
    from .protocol import _H2

# Outbound bytes we buffer per connection before we stop generating DATA and stop
# reading the socket. h2 acknowledges PING and SETTINGS without limit, so a peer that
# floods them and never reads must hit a wall here (CVE-2019-9512, CVE-2019-9515).
OUT_CAP = 1024 * 1024


class BodySender:
    """The body-sending half of ``H2Conn`` (its attributes are declared there)."""

    h2: _H2
    loop: IOLoop
    streams: dict[int, H2Stream]
    _senders: deque[H2Stream]
    _out: bytearray
    _out_pos: int
    _settings_seen: bool

    def _fail_stream(
        self, st: H2Stream, exc: H2PoolError, send_rst: bool = True, code: int = 8
    ) -> None:
        raise NotImplementedError

    def _arm_read_timer(self, st: H2Stream) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def _pump_bodies(self) -> None:
        """Send DATA round-robin, one frame per stream per round, within the flow-control
        windows, so one large upload cannot starve small requests on this connection."""
        if not self._settings_seen:
            # Until the server's SETTINGS arrive we do not know its stream windows; a
            # server announcing a window below 65535 would see an overflow (RFC 9113
            # §6.9.2 allows it, strict servers reject it). HEADERS go out at once.
            return
        senders = self._senders
        h2c = self.h2
        # Count what h2 has generated but not yet handed over, or several uploads
        # started in one turn would each buffer up to the cap.
        budget = OUT_CAP - (len(self._out) - self._out_pos) - self.h2.pending_output()
        while senders and budget > 0:
            if h2c.outbound_flow_control_window <= 0:
                return
            progressed = False
            for _ in range(len(senders)):
                st = senders.popleft()
                if self.streams.get(st.id) is not st:
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
                st.last_activity = self.loop.now
                progressed = True
                if end:
                    st.body = None
                    self._arm_read_timer(st)
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
        data, end, error = pipe.take(limit)
        if error is not None:
            err = RequestBodyError(f"reading the request body failed: {error!r}")
            err.__cause__ = error
            self._fail_stream(st, err)
            return 0
        declared = pipe.declared_length
        if declared is not None and (pipe.taken > declared or (end and pipe.taken != declared)):
            self._fail_stream(
                st,
                RequestBodyError(
                    f"request body is {'longer' if pipe.taken > declared else 'shorter'} "
                    f"than its Content-Length {declared}"
                ),
            )
            return 0
        if not data and not end:
            return 0  # the producer will post _resume_upload when it has more
        try:
            self.h2.send_data(st.id, data, end_stream=end)
        except h2x.StreamClosedError:
            return 0  # reset by the peer; its StreamReset event settles it
        st.last_activity = self.loop.now
        if end:
            st.upload = None
            self._arm_read_timer(st)
        else:
            self._senders.append(st)
        return max(len(data), 1)

    def _resume_upload(self, st: H2Stream) -> None:
        if self.streams.get(st.id) is st and st.upload is not None and st not in self._senders:
            self._senders.append(st)
            self._pump_bodies()
            self.loop.mark_dirty(self)
