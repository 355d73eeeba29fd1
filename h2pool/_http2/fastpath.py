"""Fast paths through h2 for the frames that dominate the I/O thread. I/O thread only.

Profiling (docs/performance.md) put most of the I/O thread's time into h2's generic
machinery for three kinds of frame: DATA received (a hyperframe object, three payload
copies and two state machines per frame), DATA sent (the same in reverse) and a new
request's HEADERS (str conversion, frame objects, serialisation). ``FastPaths`` handles
the plain cases of those three itself, changing exactly the h2 state h2 would change
(windows, content-length counts, stream states, in h2's order), and hands everything
else to h2. A response's plain HEADERS frame is parsed here and handed to h2's own
handler (``PlainHeaders``). Inbound header validation and HPACK blocks are remembered
per connection.

Each path is checked against h2's own method by ``tests/test_fastpath.py`` (same bytes
in, same events, errors, windows, states and bytes out). They read and write h2
internals, which is one reason ``h2<5`` is pinned.
"""

from __future__ import annotations

import struct
from typing import Any, cast

import h2.exceptions as h2x
from h2.connection import (
    ConnectionInputs,
    ConnectionState,
    H2Connection,
    _decode_headers,
)
from h2.errors import ErrorCodes
from h2.events import ResponseReceived
from h2.settings import SettingCodes
from h2.stream import H2Stream as _H2StreamBase
from h2.stream import StreamClosedBy, StreamInputs, StreamState
from h2.utilities import HeaderValidationFlags, is_informational_response
from hyperframe.exceptions import InvalidPaddingError

from .._connection import by_reference

__all__ = ["FastData", "FastPaths", "PlainHeaders"]


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


def _before(events: list[Any], run: list[memoryview], sid: int, length: int) -> list[Any]:
    """The events of the frames before one h2 rejected, the DATA run being merged
    included: a response completed earlier in the same read is still delivered
    (``H2Conn._receive``). The run is copied out of the read buffer here."""
    if run:
        events.append(FastData(sid, b"".join(run), length))
    return events


class PlainHeaders:
    """A HEADERS frame parsed here instead of by hyperframe: END_HEADERS set, nothing but
    END_STREAM besides (no padding, no priority), on a stream h2 knows. h2's handler
    reads only these three attributes of such a frame (``flags`` is tested with ``in``),
    so it is handed to h2's own ``_receive_headers_frame`` unchanged in effect; only
    hyperframe's objects (frame, flags, padding, priority: ~16% of the I/O thread at
    8 threads, py-spy) are not built."""

    __slots__ = ("data", "flags", "stream_id")

    _END_HEADERS = frozenset(("END_HEADERS",))
    _END_BOTH = frozenset(("END_HEADERS", "END_STREAM"))

    def __init__(self, stream_id: int, data: bytes, end_stream: int) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flags = self._END_BOTH if end_stream else self._END_HEADERS


# A frame header (RFC 9113 §4.1): length as 16 + 8 bits, type, flags, stream id.
_unpack_header = struct.Struct(">HBBBL").unpack_from
_FAST_STATES = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)  # may receive DATA
# What h2's _build_hdr_validation_flags gives a client's stream for a ResponseReceived.
_RESPONSE_FLAGS = HeaderValidationFlags(
    is_client=True, is_trailer=False, is_response_header=True, is_push_promise=False
)
# Plain ints: IntEnum members hash and compare as these, so they find either key kind.
_INITIAL_WINDOW = int(SettingCodes.INITIAL_WINDOW_SIZE)
_MAX_STREAMS = int(SettingCodes.MAX_CONCURRENT_STREAMS)
_NO_STREAM_LIMIT = 2**32 + 1  # what Settings.max_concurrent_streams gives for "none"
_CLIENT_OPEN = ConnectionState.CLIENT_OPEN
_OPEN = StreamState.OPEN
_CLOSED = StreamState.CLOSED
_HALF_CLOSED_LOCAL = StreamState.HALF_CLOSED_LOCAL
_SEND_STATES = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)  # may send DATA


class _ValidatingStream(_H2StreamBase):
    """h2's stream, with inbound header validation remembered per connection.

    h2 validates and normalises every received header list through a chain of
    generators (~9% of the I/O thread on small GETs). The result depends only on the
    list and the validation flags, and servers repeat their response headers, so the
    result is kept (only for lists that passed, and only small ones) in a dict the
    connection owns."""

    _validated: dict[Any, tuple[Any, ...]]

    def receive_headers(self, headers: Any, end_stream: bool, header_encoding: Any) -> Any:
        """h2's, except for an informational response on a stream we reset. h2's state
        machine has no transition for a 1xx on a closed stream and raises a
        ProtocolError, an error of the whole connection; but a 1xx the server sent
        before it saw our RST_STREAM is as legitimate as any frame in flight then, and
        must be ignored (RFC 9113 §5.1). It is handled the way h2 handles a final
        HEADERS there: ignored and answered with RST_STREAM (the header block was
        decoded first, so HPACK stays in step)."""
        sm = self.state_machine
        if (
            sm.state is _CLOSED
            and sm.stream_closed_by is StreamClosedBy.SEND_RST_STREAM
            and not end_stream  # a 1xx with END_STREAM is malformed: h2 says so first
            and is_informational_response(headers)
        ):
            raise h2x.StreamClosedError(self.stream_id)
        return super().receive_headers(headers, end_stream, header_encoding)

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


class FastPaths(H2Connection):
    """The fast paths, as a base of ``protocol._H2`` (which adds h2pool's behaviour
    changes; ``receive_data`` calls its ``_receive_frame`` for frames h2 handles)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._validated: dict[Any, tuple[Any, ...]] = {}  # see _ValidatingStream
        # Output that precedes ``_data_to_send``: h2's buffer as it stood before a large
        # DATA payload, then the payload itself by reference (see ``send_data``).
        self.sealed: list[bytearray | memoryview] = []
        self.sealed_bytes = 0
        # h2 dispatches on the frame's class: ours goes where its HeadersFrame goes.
        table: dict[Any, Any] = self._frame_dispatch_table
        table[PlainHeaders] = self._receive_headers_frame

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = _ValidatingStream
        stream._validated = self._validated  # type: ignore[attr-defined]
        return stream

    def _open_request_stream(self, stream_id: int) -> Any:
        """h2's ``_begin_new_stream`` for the next client stream, which the caller
        checked is above every stream opened so far and odd: without its three debug
        calls to a logger that discards them and its checks, already made."""
        stream = _ValidatingStream(
            stream_id,
            config=self.config,
            # Settings.initial_window_size without its property and __getitem__ (two
            # Python calls each): the setting always has a value (h2's defaults).
            inbound_window_size=self.local_settings._settings[_INITIAL_WINDOW][0],
            outbound_window_size=self.remote_settings._settings[_INITIAL_WINDOW][0],
        )
        stream.max_outbound_frame_size = self.max_outbound_frame_size
        stream._validated = self._validated
        self.streams[stream_id] = stream
        self.highest_outbound_stream_id = stream_id
        return stream

    def _receive_headers_frame(self, frame: Any) -> Any:
        """h2's handler, with a fast path for the common case: a plain HEADERS frame
        (``PlainHeaders``) carrying the final response on a stream awaiting it while
        the connection is open. Then h2's connection transition (CLIENT_OPEN stays
        CLIENT_OPEN), its stream lookup and its validation flags (always the same for
        a response) are known; the decoding, the stream's transitions, the
        Content-Length and the header validation are h2's own, in h2's order."""
        stream: Any = self.streams.get(frame.stream_id)
        if (
            frame.__class__ is not PlainHeaders
            or stream is None
            or self.state_machine.state is not _CLIENT_OPEN
        ):
            return super()._receive_headers_frame(frame)
        sm = stream.state_machine
        state = sm.state
        if (
            sm.headers_received
            or not sm.client
            or (state is not _HALF_CLOSED_LOCAL and state is not _OPEN)
        ):
            return super()._receive_headers_frame(cast(Any, frame))  # h2 reads 3 attributes
        headers = _decode_headers(self.decoder, frame.data)
        end_stream = "END_STREAM" in frame.flags
        if is_informational_response(headers):
            return stream.receive_headers(headers, end_stream, self.config.header_encoding)
        # The stream's RECV_HEADERS: OPEN and HALF_CLOSED_LOCAL stay as they are, and
        # response_received marks the headers received.
        sm.headers_received = True
        event = ResponseReceived(stream_id=frame.stream_id)
        events: list[Any] = [event]
        if end_stream:
            ended = sm.process_input(StreamInputs.RECV_END_STREAM)
            event.stream_ended = ended[0]
            events += ended
        stream._initialize_content_length(headers)
        event.headers = stream._process_received_headers(
            headers, _RESPONSE_FLAGS, self.config.header_encoding
        )
        return [], events

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
        self.send_request(stream_id, headers, end_stream, method, authority)

    def send_request(
        self,
        stream_id: int,
        headers: list[tuple[bytes, bytes]],
        end_stream: bool,
        method: bytes | None,
        authority: bytes | None,
    ) -> None:
        """``send_headers`` for a request's headers as ``RequestBuilder`` makes them:
        every name and value bytes, validated, and the first ``:method`` and
        ``:authority`` already known, so the list is not scanned again: 3.2% of the
        whole process's instructions per small GET with one caller thread (callgrind:
        285.6k to 276.6k)."""
        if stream_id in self.streams:
            super().send_headers(stream_id, headers, end_stream)  # trailers: h2's path
            return
        # Settings.max_concurrent_streams without its three Python calls: h2's default
        # when the server sent none (the entry is missing, or None until acknowledged).
        entry = self.remote_settings._settings.get(_MAX_STREAMS)
        limit = _NO_STREAM_LIMIT if entry is None or entry[0] is None else entry[0]
        if (
            self.open_outbound_streams + 1 > limit
            or stream_id <= self.highest_outbound_stream_id
            or not stream_id & 1
        ):
            super().send_headers(stream_id, headers, end_stream)  # raises as h2 does
            return
        # h2's transitions, which change nothing else here: the connection's SEND_HEADERS
        # (CLIENT_OPEN stays CLIENT_OPEN) and the stream's (IDLE -> OPEN, request_sent).
        # Each process_input costs an Enum.__hash__ in Python per lookup.
        if self.state_machine.state is not _CLIENT_OPEN:
            self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        stream = self._open_request_stream(stream_id)
        sm = stream.state_machine
        sm.state = _OPEN
        sm.client = True
        sm.headers_sent = True
        block = self.encoder.encode(headers)
        if end_stream:
            sm.state = _HALF_CLOSED_LOCAL  # h2's OPEN -> HALF_CLOSED_LOCAL, no callback
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
        view = by_reference(data)
        if view is not None:
            # A large payload of immutable bytes goes out by reference, after the
            # frames generated so far: not copied into the buffer (see OutputBuffer).
            self.sealed += (out, view)
            self.sealed_bytes += len(out) + n
            self._data_to_send = bytearray()
        else:
            out += data
        self.outbound_flow_control_window -= n
        stream.outbound_flow_control_window -= n
        if end_stream:
            # h2's own transition (OPEN -> HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE -> CLOSED)
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)

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
        # The stream whose state (not its windows) passed the fast path's checks, while
        # no frame has been through h2 since: its next frames skip those checks (a
        # download is a run of one stream's DATA frames).
        checked: Any = None
        try:
            while end - pos >= 9:
                # One C call for the 9-byte header (a third of the time of indexing it).
                high, low, ftype, flags, sid = _unpack_header(data, pos)
                length = (high << 8) | low
                if length > max_size:
                    buf._validate_frame_length(length)  # raises FRAME_SIZE_ERROR
                stop = pos + 9 + length
                if stop > end:
                    break
                sid &= 0x7FFFFFFF  # the reserved bit is ignored (RFC 9113 §4.1)
                end_stream = flags & 0x01
                if ftype == 0 and not (flags & 0x08) and (length or end_stream):
                    stream = streams.get(sid)
                    if (
                        stream is not None
                        and (
                            stream is checked
                            or (
                                not buf._headers_buffer
                                and stream.state_machine.state in _FAST_STATES
                                and stream.state_machine.headers_received
                                and self.state_machine.state is ConnectionState.CLIENT_OPEN
                            )
                        )
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
                        checked = stream
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
                            checked = None
                            events.append(FastData(sid, b"".join(run), run_len, True))
                            run = []
                            run_len = 0
                        continue
                if run:
                    events.append(FastData(run_sid, b"".join(run), run_len))
                    run = []
                    run_len = 0
                checked = None  # what follows goes through h2, which may change any state
                if (
                    ftype == 1
                    and flags & 0x04
                    and not (flags & ~0x05)
                    and not buf._headers_buffer
                    and sid in streams
                ):
                    # A plain response HEADERS: parsed here, handled by h2.
                    plain: Any = PlainHeaders(sid, bytes(view[pos + 9 : stop]), flags & 1)
                    pos = stop
                    events.extend(self._receive_frame(plain))
                    continue
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
            err = h2x.ProtocolError("Received frame with invalid padding.")
            err.events_before = _before(events, run, run_sid, run_len)  # type: ignore[attr-defined]
            raise err from exc
        except h2x.ProtocolError as exc:
            self._terminate_connection(exc.error_code)
            exc.events_before = _before(events, run, run_sid, run_len)  # type: ignore[attr-defined]
            raise
        finally:
            view.release()
        return events
