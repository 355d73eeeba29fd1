"""The h2 state machine as h2pool uses it, and per-stream bookkeeping. I/O thread only.

``_H2`` subclasses h2's ``H2Connection`` (through ``fastpath.FastPaths``, the fast paths
for plain DATA and request HEADERS) to change a few behaviours, each for a reason given
where it is done; everything else is h2's own. ``h2<5`` is pinned in pyproject.toml
because these override private methods and read h2 internals.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import h2.exceptions as h2x
from h2.config import H2Configuration
from h2.connection import ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from h2.stream import STREAM_OPEN as _STREAM_OPEN
from h2.stream import StreamState
from hyperframe.frame import RstStreamFrame, WindowUpdateFrame

from .._connection import StreamRecord
from .fastpath import FastPaths
from .health import NO_DEADLINE, Deadline
from .hpack import CachingDecoder, CachingEncoder, HeaderListTooLarge

# The largest step in which stream credit goes back. A quarter window is few updates for
# a 2 MiB window, but once a window has grown to 16 MiB a 4 MiB step leaves up to 4 MiB
# per round trip unused on a long link (measured at 100 ms RTT: ~0.5 RTT lost per
# window); 1 MiB keeps updates to one per MiB read.
_ACK_STEP = 1 << 20

if TYPE_CHECKING:
    from .._request import Request

__all__ = ["BodyLengthMismatch", "H2Stream", "new_h2_connection"]

_CONFIG = H2Configuration(
    client_side=True,
    header_encoding=None,
    # Request headers were validated and lower-cased in the caller's thread.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=True,
    normalize_inbound_headers=True,
)


class BodyLengthMismatch:
    """Our event for a response body that disagrees with its Content-Length."""

    def __init__(self, stream_id: int, flow: int, message: str, reset_sent: bool = False) -> None:
        self.stream_id = stream_id
        self.flow = flow
        self.message = message
        self.reset_sent = reset_sent  # the RST_STREAM is already among h2's frames


class _H2(FastPaths):
    """h2 moves to CLOSED on receiving GOAWAY and then rejects every frame, but RFC 9113
    §6.8 lets streams up to last_stream_id complete. Keep the connection open for them
    (the owner takes no new streams), and keep output h2 would discard (a SETTINGS ACK
    queued earlier in the same read)."""

    preserved = b""
    _gc_at = 64

    def pending_output(self) -> int:
        """Bytes generated but not yet taken by ``data_to_send()``."""
        return len(self._data_to_send) + self.sealed_bytes

    def take_sealed(self) -> list[bytearray | memoryview]:
        """The output that precedes ``take_output()``'s, handed over (usually none)."""
        out = self.sealed
        self.sealed = []
        self.sealed_bytes = 0
        return out

    def take_output(self) -> bytearray:
        """``data_to_send()`` without its copy: hand over h2's buffer, start a new one.
        Whatever ``take_sealed()`` holds goes out before it."""
        out = self._data_to_send
        self._data_to_send = bytearray()
        return out

    def data_to_send(self, amount: int | None = None) -> bytes:
        """h2's, with the sealed output in front (only slow paths come here)."""
        if self.sealed:
            whole = bytearray().join(self.take_sealed())
            whole += self._data_to_send
            self._data_to_send = whole
        return super().data_to_send(amount)

    def clear_outbound_data_buffer(self) -> None:
        self.take_sealed()
        super().clear_outbound_data_buffer()

    def take_partial_frame(self) -> bytearray:
        """The bytes of an incomplete frame h2 holds from the last read, handed over
        (the connection reads the next bytes after them into the loop's buffer)."""
        carry: bytearray = self.incoming_buffer._data
        if carry:  # else h2 keeps its empty buffer: no new one per read
            self.incoming_buffer._data = bytearray()
        return carry

    def keep_partial_frame(self, data: bytes | memoryview) -> None:
        """Give h2 back an incomplete frame nothing new arrived for."""
        self.incoming_buffer._data += data

    def in_header_block(self) -> bool:
        """Inside a header block (HEADERS without END_HEADERS, CONTINUATION pending)."""
        return bool(getattr(self.incoming_buffer, "_headers_buffer", None))

    def take_preserved(self) -> bytes:
        """Output generated before a GOAWAY that h2 would have discarded (see below)."""
        out, self.preserved = self.preserved, b""
        return out

    def grant_stream(self, stream_id: int, increment: int) -> bool:
        """Open a stream's receive window by ``increment`` (WINDOW_UPDATE); False if
        h2 has closed or already forgotten the stream. (h2's own
        ``increment_flow_control_window`` indexes ``self.streams`` and raises
        KeyError for a stream it has purged, which no H2Error handler catches.)"""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.open or increment <= 0:
            return False
        try:
            self.state_machine.process_input(ConnectionInputs.SEND_WINDOW_UPDATE)
            frames = stream.increase_flow_control_window(increment)
        except h2x.H2Error:
            return False
        self._prepare_for_sending(frames)
        return True

    def ack_connection(self, nbytes: int) -> None:
        """Return connection-level flow-control credit only (h2 has no public call
        that separates the two levels)."""
        increment = self._inbound_flow_control_window_manager.process_bytes(nbytes)
        if increment:
            f = WindowUpdateFrame(0)
            f.window_increment = increment
            self._prepare_for_sending([f])

    def ack_stream(self, nbytes: int, stream_id: int) -> None:
        """Return stream-level flow-control credit only; nothing for a closed stream.

        h2 hands credit back once half the window is consumed, so a window-limited
        stream has between a half and a whole window in flight: on a long link it
        delivers ~3/4 of a window per round trip. Credit goes back in quarter-window
        steps here instead (a WINDOW_UPDATE per quarter window: four per window's
        worth of data, still few), and at most every ``_ACK_STEP`` bytes for grown windows."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.open:
            return
        frames = stream.acknowledge_received_data(nbytes)
        if not frames:
            manager = stream._inbound_window_manager
            pending = manager._bytes_processed
            if pending >= min(manager.max_window_size >> 2, _ACK_STEP):
                increment = min(pending, manager.max_window_size - manager.current_window_size)
                manager._bytes_processed = 0
                if increment > 0:
                    manager.current_window_size += increment
                    f = WindowUpdateFrame(stream_id)
                    f.window_increment = increment
                    frames = [f]
        self._prepare_for_sending(frames)

    @property
    def open_outbound_streams(self) -> int:
        """h2 counts open streams (and forgets closed ones) by scanning every stream on
        each new stream: ~4% of the I/O thread at 64 streams in flight. H2Conn enforces
        MAX_CONCURRENT_STREAMS itself, counting more strictly than h2 (reset streams
        too), so scan only when enough streams have accumulated to need forgetting."""
        streams = self.streams
        if len(streams) < self._gc_at:
            return 0
        n = self._forget_closed_streams()
        self._gc_at = max(64, 2 * len(streams))
        return n

    def _forget_closed_streams(self) -> int:
        """h2's ``_open_streams(1)`` (count the open client streams, forget the closed
        ones into ``_closed_streams``) with its per-stream Python calls taken out: the
        ``open``, ``closed`` and ``closed_by`` properties read as the state they
        return, and the size limit of ``_closed_streams`` (a ``SizeLimitDict``, whose
        ``__setitem__`` checks it on every insertion) applied once at the end, which
        leaves the same entries in the same order. Four Python calls per request."""
        streams = self.streams
        count = 0
        closed: list[int] = []
        for stream_id, stream in streams.items():
            state = stream.state_machine.state
            if _STREAM_OPEN[state]:
                if stream_id % 2 == 1:
                    count += 1
            elif state is StreamState.CLOSED:
                closed.append(stream_id)
        if closed:
            record: Any = self._closed_streams  # h2 4.x: a SizeLimitDict
            put = OrderedDict.__setitem__
            for stream_id in closed:
                put(record, stream_id, streams.pop(stream_id).state_machine.stream_closed_by)
            record._check_size_limit()
        return count

    def _receive_frame(self, frame: Any) -> Any:
        """h2's own ``_receive_frame`` minus its trace log, whose eager ``repr(frame)``
        hex-dumps every DATA payload: measured at 24% of the I/O thread's time on a
        100 MiB download. The logic is otherwise h2 4.x's, unchanged."""
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2x.StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except h2x.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2x.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    # h2 raises InvalidBodyLengthError out of receive_data, which would make a bad
    # Content-Length fatal to every stream of the connection (and lose the other
    # events of the read). It concerns one stream: turn it into an event for that one.
    def _receive_data_frame(self, frame: Any) -> Any:
        try:
            return super()._receive_data_frame(frame)
        except h2x.InvalidBodyLengthError as exc:
            return [], [BodyLengthMismatch(frame.stream_id, frame.flow_controlled_length, str(exc))]

    def _receive_headers_frame(self, frame: Any) -> Any:
        try:
            return super()._receive_headers_frame(frame)
        except h2x.InvalidBodyLengthError as exc:
            return [], [BodyLengthMismatch(frame.stream_id, 0, str(exc))]
        except HeaderListTooLarge as exc:
            # Decoded in full, so the HPACK state is intact: only this stream fails.
            # h2 had not yet applied the frame to any state machine (it decodes first).
            sid = frame.stream_id
            stream = self.streams.get(sid)
            if stream is None or sid % 2 == 0:
                if sid % 2 and sid < self.highest_outbound_stream_id + 2:
                    return [], []  # a stream we already closed: nothing to fail
                raise h2x.ProtocolError(f"response headers: {exc}") from exc
            if stream.closed:
                return [], []  # we reset it already: nothing to fail
            msg = f"sent {exc} (Limits.max_header_list_size)"
            rst_frames = stream.reset_stream(ErrorCodes.PROTOCOL_ERROR)
            return rst_frames, [BodyLengthMismatch(sid, 0, msg, reset_sent=True)]
        except h2x.ProtocolError as exc:
            # A malformed response (bad header name or value, misplaced pseudo-header)
            # is a *stream* error (RFC 9113 §8.1.1). h2 raises it as a connection error.
            # Only plain ProtocolErrors without a cause come from header validation;
            # HPACK decoding failures (cause set) and size limits corrupt or endanger
            # the connection's shared state and stay connection errors.
            if type(exc) is not h2x.ProtocolError or exc.__cause__ is not None:
                raise
            sid = frame.stream_id
            stream = self.streams.get(sid)
            if stream is None or sid % 2 == 0:
                raise  # not one of our requests (a server cannot open streams)
            frames: list[Any]
            if stream.closed:  # the bad HEADERS carried END_STREAM: h2 cannot reset it
                rst = RstStreamFrame(sid)
                rst.error_code = ErrorCodes.PROTOCOL_ERROR
                frames = [rst]
            else:
                try:
                    frames = stream.reset_stream(ErrorCodes.PROTOCOL_ERROR)
                except h2x.ProtocolError:
                    raise exc from None
            event = BodyLengthMismatch(sid, 0, f"is malformed: {exc}", reset_sent=True)
            return frames, [event]

    def _receive_goaway_frame(self, frame: Any) -> Any:
        self.preserved += self.data_to_send()
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = ConnectionState.CLIENT_OPEN
        return result


class H2Stream(StreamRecord):
    """Per-stream bookkeeping, owned by the I/O thread."""

    __slots__ = (
        "deadline_kind",
        "expected",
        "no_body",
        "opened_as",
        "received",
        "trailers",
        "window",
        "wire_offset",
    )

    def __init__(self, sid: int, req: Request, now: float) -> None:
        super().__init__(sid, req, now)
        self.trailers: list[tuple[bytes, bytes]] | None = None
        # Which timeout runs now. The connection's single tick timer (health.Health)
        # enforces it lazily from last_activity: no timer operation per stream.
        self.deadline_kind: Deadline = NO_DEADLINE
        self.expected: int | None = None  # Content-Length of the response, if any
        self.received = 0  # response body bytes so far
        self.no_body = False  # 204/304: DATA is an error
        self.wire_offset = -1  # first byte of the batch holding our HEADERS; -1: not flushed
        self.opened_as = 0  # streams open on the connection when it opened, itself included
        self.window = 0  # the receive window granted to the server (see flow.WindowTuner)


class _FrameBuffer(FrameBuffer):
    """h2's FrameBuffer waits for a whole frame before checking its length, so a
    header announcing 16 MiB makes us buffer 16 MiB first. Refuse it from the 9-byte
    header (RFC 9113 §4.2: FRAME_SIZE_ERROR)."""

    def __next__(self) -> Any:
        data = self._data
        if len(data) >= 9:
            self._validate_frame_length((data[0] << 16) | (data[1] << 8) | data[2])
        return super().__next__()


def new_h2_connection(max_header_list_size: int) -> _H2:
    conn = _H2(config=_CONFIG)
    conn.incoming_buffer = _FrameBuffer(server=False)
    conn.encoder = CachingEncoder()
    # h2 applies a local MAX_HEADER_LIST_SIZE to its HPACK decoder only when a *changed*
    # setting is ACKed; ours is an initial value, so set the decoder's limit directly.
    conn.decoder = CachingDecoder(max_header_list_size)
    return conn
