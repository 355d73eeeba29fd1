"""The h2 state machine as h2pool uses it, and per-stream bookkeeping. I/O thread only.

``_H2`` subclasses ``h2.connection.H2Connection`` to change four behaviours, each for a
reason given where it is done; everything else is h2's own. ``h2<5`` is pinned in
pyproject.toml because two of them override private methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h2.exceptions as h2x
from h2.config import H2Configuration
from h2.connection import AllowedStreamIDs, ConnectionInputs, ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from h2.stream import H2Stream as _H2StreamBase
from h2.stream import StreamClosedBy, StreamInputs, StreamState
from hyperframe.exceptions import InvalidPaddingError
from hyperframe.frame import RstStreamFrame, WindowUpdateFrame

from ._hpack import CachingDecoder, CachingEncoder
from ._request import StreamRecord

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["BodyLengthMismatch", "H2Stream", "new_h2_connection"]

# Which timeout runs on a stream now (H2Stream.deadline_kind).
NO_DEADLINE, READ, WRITE = 0, 1, 2

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

    def __init__(self, stream_id: int, flow: int, message: str) -> None:
        self.stream_id = stream_id
        self.flow = flow
        self.message = message


class FastData:
    """A run of DATA frames for one stream taken by ``_H2``'s fast path; handled like
    h2's ``DataReceived`` (same attributes)."""

    __slots__ = ("data", "flow_controlled_length", "stream_ended", "stream_id")

    def __init__(self, stream_id: int, data: bytes, flow: int, ended: bool = False) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flow_controlled_length = flow
        # h2's DataReceived.stream_ended is a StreamEnded event or None; only "is not
        # None" is ever asked of it.
        self.stream_ended = True if ended else None


_FAST_STATES = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)  # may receive DATA
_SEND_STATES = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)  # may send DATA


class _ValidatingStream(_H2StreamBase):
    """h2's stream, with inbound header validation remembered per connection.

    h2 validates and normalises every received header list through a chain of
    generators (~9% of the I/O thread on small GETs). The result depends only on the
    list and the validation flags, and servers repeat their response headers, so the
    result is kept (only for lists that passed, and only small ones) in a dict the
    connection owns."""

    _validated: dict[Any, tuple[Any, ...]]

    def _process_received_headers(
        self, headers: Any, header_validation_flags: Any, header_encoding: Any
    ) -> Any:
        if header_encoding is not None or type(headers) is not list:
            return super()._process_received_headers(
                headers, header_validation_flags, header_encoding
            )
        cache = self._validated
        key = (tuple(headers), header_validation_flags)
        hit = cache.get(key)
        if hit is not None:
            return list(hit)
        out = super()._process_received_headers(headers, header_validation_flags, None)
        if sum(len(n) + len(v) for n, v in headers) <= _MAX_VALIDATED:
            if len(cache) >= 64:
                cache.clear()
            cache[key] = tuple(out)
        return out


_MAX_VALIDATED = 4096  # bytes of header list worth remembering


class _H2(H2Connection):
    """h2 moves to CLOSED on receiving GOAWAY and then rejects every frame, but RFC 9113
    §6.8 lets streams up to last_stream_id complete. Keep the connection open for them
    (the owner takes no new streams), and keep output h2 would discard (a SETTINGS ACK
    queued earlier in the same read)."""

    preserved = b""
    _gc_at = 64
    _validated: dict[Any, tuple[Any, ...]]  # see _ValidatingStream

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = _ValidatingStream
        stream._validated = self._validated  # type: ignore[attr-defined]
        return stream

    def pending_output(self) -> int:
        """Bytes generated but not yet taken by ``data_to_send()``."""
        return len(self._data_to_send)

    def take_output(self) -> bytearray:
        """``data_to_send()`` without its copy: hand over h2's buffer, start a new one."""
        out = self._data_to_send
        self._data_to_send = bytearray()
        return out

    def send_headers(
        self,
        stream_id: int,
        headers: Any,
        end_stream: bool = False,
        priority_weight: Any = None,
        priority_depends_on: Any = None,
        priority_exclusive: Any = None,
    ) -> None:
        """h2's ``send_headers`` for a new request, without what h2 does for headers we
        do not have: converting str to bytes (ours are bytes, validated in the caller's
        thread), outbound validation flags (validation is off), a HeadersFrame object
        and its serialisation (~35% of the I/O thread on small GETs). The state machines
        run as in h2, in h2's order (the transition before the irreversible HPACK
        encoding). Priority, an existing stream (trailers), str headers or too many
        streams go through h2."""
        if (
            stream_id in self.streams
            or priority_weight is not None
            or priority_depends_on is not None
            or priority_exclusive is not None
            or type(headers) is not list
        ):
            super().send_headers(
                stream_id,
                headers,
                end_stream,
                priority_weight,
                priority_depends_on,
                priority_exclusive,
            )
            return
        method = authority = None
        for header in headers:
            name, value = header
            if type(name) is not bytes or type(value) is not bytes:
                super().send_headers(stream_id, headers, end_stream)
                return
            if name == b":method" and method is None:
                method = value
            elif name == b":authority" and authority is None:
                authority = value
        if self.open_outbound_streams + 1 > self.remote_settings.max_concurrent_streams:
            super().send_headers(stream_id, headers, end_stream)  # raises as h2 does
            return
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        stream = self._begin_new_stream(stream_id, AllowedStreamIDs(self.config.client_side))
        sm = stream.state_machine
        sm.process_input(StreamInputs.SEND_HEADERS)
        block = self.encoder.encode(headers)
        if end_stream:
            sm.process_input(StreamInputs.SEND_END_STREAM)
        # HEADERS, then CONTINUATION frames if the block exceeds the peer's frame size;
        # END_STREAM on the first frame, END_HEADERS on the last (RFC 9113 §6.2, §6.10).
        size = self.max_outbound_frame_size
        sid = stream_id.to_bytes(4, "big")
        out = self._data_to_send
        for start in range(0, len(block) or 1, size):
            chunk = block[start : start + size]
            flags = 0x4 if start + size >= len(block) else 0
            if start == 0:
                kind = 0x1
                if end_stream:
                    flags |= 0x1
            else:
                kind = 0x9
            out += len(chunk).to_bytes(3, "big") + bytes((kind, flags)) + sid + chunk
        stream._authority = authority
        stream.request_method = method

    def send_data(
        self,
        stream_id: int,
        data: bytes | memoryview,
        end_stream: bool = False,
        pad_length: Any = None,
    ) -> None:
        """h2's ``send_data`` builds a DataFrame and serialises it, copying the payload
        three times: most of the I/O thread's time on an upload (nginx allows frames up
        to the window, so these can be megabytes). A frame on a stream h2 has open,
        within both windows and the frame size, changes nothing in h2 but the two
        windows and, with END_STREAM, the stream state (h2's own transition is run):
        written here straight into h2's output buffer. Anything else goes through h2."""
        n = len(data)
        stream = self.streams.get(stream_id)
        if (
            pad_length is not None
            or not (n or end_stream)
            or stream is None
            or stream.state_machine.state not in _SEND_STATES
            or self.state_machine.state is not ConnectionState.CLIENT_OPEN
            or n > self.max_outbound_frame_size
            or n > self.outbound_flow_control_window
            or n > stream.outbound_flow_control_window
        ):
            super().send_data(stream_id, data, end_stream, pad_length)
            return
        out = self._data_to_send
        flags = b"\1" if end_stream else b"\0"
        out += n.to_bytes(3, "big") + b"\0" + flags + stream_id.to_bytes(4, "big")
        out += data
        self.outbound_flow_control_window -= n
        stream.outbound_flow_control_window -= n
        if end_stream:
            # h2's own transition (OPEN -> HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE -> CLOSED)
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)

    def ack_connection(self, nbytes: int) -> None:
        """Return connection-level flow-control credit only (h2 has no public call
        that separates the two levels)."""
        increment = self._inbound_flow_control_window_manager.process_bytes(nbytes)
        if increment:
            f = WindowUpdateFrame(0)
            f.window_increment = increment
            self._prepare_for_sending([f])

    def ack_stream(self, nbytes: int, stream_id: int) -> None:
        """Return stream-level flow-control credit only; nothing for a closed stream."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.open:
            self._prepare_for_sending(stream.acknowledge_received_data(nbytes))

    @property
    def open_outbound_streams(self) -> int:
        """h2 counts open streams (and forgets closed ones) by scanning every stream on
        each new stream: ~4% of the I/O thread at 64 streams in flight. H2Conn enforces
        MAX_CONCURRENT_STREAMS itself, counting more strictly than h2 (reset streams
        too), so scan only when enough streams have accumulated to need forgetting."""
        if len(self.streams) < self._gc_at:
            return 0
        n: int = self._open_streams(1)  # client-initiated streams are odd
        self._gc_at = max(64, 2 * len(self.streams))
        return n

    def receive_data(self, data: Any) -> list[Any]:
        """h2's ``receive_data`` with a fast path for the frames a download is made of.

        h2 turns every DATA frame into a hyperframe object (three copies of the payload),
        runs two state machines and builds an event: ~20 us per 8 KiB frame, which was
        most of the I/O thread on a download. A DATA frame with no flags, on a stream h2
        has open and has seen headers on, within both flow-control windows and the
        Content-Length, changes nothing in h2 but those counters; it is parsed here,
        the counters are updated as h2 would, and consecutive frames of one stream are
        merged into one ``FastData`` event. Every other frame (END_STREAM, PADDED,
        anything h2 would reject, anything inside a header block) is fed to h2's own
        parser one frame at a time, in order.
        """
        buf = self.incoming_buffer
        max_size = buf.max_frame_size = self.max_inbound_frame_size
        pending = buf._data
        if pending:
            data = b"".join((pending, data))
            pending.clear()
        events: list[Any] = []
        view = data = memoryview(data)  # bytes, or a slice of the loop's read buffer
        end = len(data)
        pos = 0
        run_sid = 0  # the stream of the run of fast DATA payloads being merged
        run: list[memoryview] = []
        run_len = 0
        streams = self.streams
        conn_window = self._inbound_flow_control_window_manager
        try:
            while end - pos >= 9:
                length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
                if length > max_size:
                    buf._validate_frame_length(length)  # raises FRAME_SIZE_ERROR
                stop = pos + 9 + length
                if stop > end:
                    break
                flags = data[pos + 4]
                end_stream = flags & 0x01
                if data[pos + 3] == 0 and not (flags & 0x08) and (length or end_stream):
                    sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                    stream = streams.get(sid)
                    if (
                        stream is not None
                        and not buf._headers_buffer
                        and stream.state_machine.state in _FAST_STATES
                        and stream.state_machine.headers_received
                        and self.state_machine.state is ConnectionState.CLIENT_OPEN
                        and conn_window.current_window_size >= length
                        and stream._inbound_window_manager.current_window_size >= length
                        and (
                            stream._expected_content_length is None
                            or (
                                stream._actual_content_length + length
                                == stream._expected_content_length
                                if end_stream
                                else stream._actual_content_length + length
                                <= stream._expected_content_length
                            )
                        )
                    ):
                        conn_window.current_window_size -= length
                        stream._inbound_window_manager.current_window_size -= length
                        stream._actual_content_length += length
                        if run and sid != run_sid:
                            events.append(FastData(run_sid, b"".join(run), run_len))
                            run = []
                            run_len = 0
                        run_sid = sid
                        if length:
                            run.append(view[pos + 9 : stop])
                            run_len += length
                        pos = stop
                        if end_stream:
                            # h2's RECV_END_STREAM: OPEN -> HALF_CLOSED_REMOTE,
                            # HALF_CLOSED_LOCAL -> CLOSED, closed by the peer's END_STREAM.
                            sm = stream.state_machine
                            if sm.state is StreamState.OPEN:
                                sm.state = StreamState.HALF_CLOSED_REMOTE
                            else:
                                sm.state = StreamState.CLOSED
                                sm.stream_closed_by = StreamClosedBy.RECV_END_STREAM
                            events.append(FastData(sid, b"".join(run), run_len, True))
                            run = []
                            run_len = 0
                        continue
                if run:
                    events.append(FastData(run_sid, b"".join(run), run_len))
                    run = []
                    run_len = 0
                # h2's own path for this one frame; its buffer holds nothing else.
                buf._data += view[pos:stop]
                pos = stop
                for frame in buf:
                    events.extend(self._receive_frame(frame))
            if run:
                events.append(FastData(run_sid, b"".join(run), run_len))
            if pos < end:
                buf._data += view[pos:]
                if end - pos >= 9:
                    # h2 rejects a bad frame header before its body arrives: so do we.
                    for frame in buf:  # pragma: no cover - the frame is incomplete
                        events.extend(self._receive_frame(frame))
        except InvalidPaddingError as exc:  # as h2's receive_data handles both
            self._terminate_connection(ErrorCodes.PROTOCOL_ERROR)
            raise h2x.ProtocolError("Received frame with invalid padding.") from exc
        except h2x.ProtocolError as exc:
            self._terminate_connection(exc.error_code)
            raise
        finally:
            view.release()
        return events

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
            return frames, [BodyLengthMismatch(frame.stream_id, 0, f"is malformed: {exc}")]

    def _receive_goaway_frame(self, frame: Any) -> Any:
        self.preserved += self.data_to_send()
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = ConnectionState.CLIENT_OPEN
        return result


class H2Stream(StreamRecord):
    """Per-stream bookkeeping, owned by the I/O thread."""

    __slots__ = ("deadline_kind", "expected", "no_body", "received", "trailers", "wire_offset")

    def __init__(self, sid: int, req: Request, now: float) -> None:
        super().__init__(sid, req, now)
        self.trailers: list[tuple[bytes, bytes]] | None = None
        # Which timeout runs now: NO_DEADLINE, _READ or _WRITE. The connection's single
        # tick timer enforces it lazily from last_activity: no timer operation per stream.
        self.deadline_kind = NO_DEADLINE
        self.expected: int | None = None  # Content-Length of the response, if any
        self.received = 0  # response body bytes so far
        self.no_body = False  # 204/304: DATA is an error
        self.wire_offset = -1  # first byte of the batch holding our HEADERS; -1: not flushed


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
    conn._validated = {}
    conn.incoming_buffer = _FrameBuffer(server=False)
    conn.encoder = CachingEncoder()
    # h2 applies a local MAX_HEADER_LIST_SIZE to its HPACK decoder only when a *changed*
    # setting is ACKed; ours is an initial value, so set the decoder's limit directly.
    conn.decoder = CachingDecoder(max_header_list_size)
    return conn
