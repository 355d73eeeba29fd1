"""One HTTP/2 connection: a socket, an ``h2`` state machine and its streams.

``H2Conn`` reads and writes the socket, dispatches h2's events and ends the
connection. It owns a ``Health`` (every deadline, one timer) and a ``BodyScheduler``
(request bodies). When a request cannot complete here it reports a ``Fact`` to the
pool, which decides on a retry (``h2pool._retry``); nothing here decides one.

Everything here runs on the I/O thread, except ``post_consumed``/``post_cancel``
(``ConnectionBase``), which streamed-response readers call to hand work *to* it.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h2.events as ev
import h2.exceptions as h2x
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings

from .._connection import ConnectionBase, ConnState
from .._errors import (
    ClientClosed,
    ConnectionLost,
    H2PoolError,
    InvalidHeader,
    ProtocolError,
    StreamReset,
    detached,
)
from .._headers import Headers
from .._retry import Fact
from .._sockio import TLS_RECORD, is_ragged_eof
from .._stream import BodyPipe
from .fastpath import FastData
from .flow import WindowTuner
from .health import NO_DEADLINE, READ, Health
from .protocol import BodyLengthMismatch, H2Stream, new_h2_connection
from .send import OUT_CAP, BodyScheduler

if TYPE_CHECKING:
    from .._request import Request

log = logging.getLogger("h2pool")


def req_method_has_body(method: str) -> bool:
    """HEAD responses carry no body whatever their Content-Length says."""
    return method != "HEAD"


_LAST_STREAM_ID = 2**31 - 1  # the highest stream ID (RFC 9113 §5.1.1): odd, a client's
_RECV_SIZE = 64 * 1024  # per recv_into; TLS gives at most one 16 KiB record anyway
_READS_PER_TURN = 64  # then yield to other connections; level-triggered select resumes us
# Bytes handed to h2 per turn per connection. With the outbound cap (OUT_CAP: stop
# reading while the peer does not drain our ACKs) this bounds what a PING/SETTINGS
# flood costs in memory and keeps each turn short, so timers still fire on time.
_FEED_PER_TURN = 512 * 1024
_BACKLOG_LIMIT = 256 * 1024  # unsent bytes above which a connection takes no new stream
# Assumed until the peer's first SETTINGS (RFC 9113 §6.5.2), unless an earlier
# connection to the origin told us its limit (servers with 16-100 are common).
_DEFAULT_MAX_STREAMS = 100
_UNLIMITED_STREAMS = 1000  # when the peer's SETTINGS set no limit (Go does the same)


class H2Conn(ConnectionBase[H2Stream]):
    """An HTTP/2 connection. All state is owned by the I/O thread."""

    http_version = "HTTP/2"
    initial_state = ConnState.HANDSHAKE
    out_cap = OUT_CAP

    def _setup(self) -> None:
        loop, limits = self.loop, self.limits
        # A fact about the peer, not lifecycle: a connection may drain before SETTINGS.
        self.settings_seen = False
        self._preface_bytes = 0
        self._peer_header_limit: int | None = None
        self._peer_max_streams = self.origin.peer_max_streams or _DEFAULT_MAX_STREAMS
        self.max_streams = self._compute_max_streams()
        self._unflushed: list[H2Stream] = []  # streams started since the last flush
        self._events = selectors.EVENT_READ
        # False while the peer does not drain our output (above OUT_CAP): stop reading,
        # so a control-frame flood meets TCP backpressure instead of our memory.
        self._reading = True
        self.responses_completed = 0
        self.health = Health(self, loop, limits, self.origin.stall_timeout)
        self.tuner = WindowTuner(limits.stream_window, limits.stream_window_limit)
        # Streamed responses whose first window is being timed (WindowTuner.on_burst):
        # stream id -> loop time of its response headers.
        self._bursts: dict[int, float] = {}
        self.sender = BodyScheduler(self, loop)
        self.h2 = new_h2_connection(limits.max_header_list_size)
        self.h2.local_settings = Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            },
        )
        self.h2.initiate_connection()
        if limits.connection_window > 65535:
            self.h2.increment_flow_control_window(limits.connection_window - 65535)
        loop.selector.register(self.sock, self._events, self._on_io)
        loop.mark_dirty(self)

    # -- capacity --------------------------------------------------------------------------
    def _compute_max_streams(self) -> int:
        cap = self.limits.max_streams_per_connection
        return self._peer_max_streams if cap is None else min(cap, self._peer_max_streams)

    @property
    def free_slots(self) -> int:
        if self.draining:
            return 0
        health, out = self.health, self.out
        if health.suspect or out.pending > _BACKLOG_LIMIT:
            # Suspect: streams stalled and the health PING is unanswered. A large unsent
            # backlog: the peer is not draining our output. A new request would wait
            # and, if the connection then dies, could not be told apart from a sent
            # one: it goes elsewhere (or waits) instead.
            return 0
        return self.max_streams - len(self.streams) - health.pending_resets

    @property
    def unsent(self) -> int:
        return self.out.pending

    @property
    def resetting_streams(self) -> int:
        return self.health.pending_resets

    @property
    def stream_window(self) -> int:
        return self.tuner.window

    # -- starting a request ----------------------------------------------------------------
    def start(self, req: Request) -> None:
        """Open a stream for ``req``. The caller checked ``free_slots``."""
        limit = self._peer_header_limit
        if limit is not None and req.header_size > limit:
            # Go's ChecksRequestHeaderListSize: sending it would only earn a 431 or a reset.
            req.fail(
                InvalidHeader(
                    f"request headers ({req.header_size} bytes) exceed {self.label}'s "
                    f"SETTINGS_MAX_HEADER_LIST_SIZE of {limit}"
                )
            )
            return
        h2c = self.h2
        # h2's get_next_available_stream_id without its call to a discarding logger.
        highest = h2c.highest_outbound_stream_id
        sid = highest + 2 if highest else 1
        st = H2Stream(sid, req, self.loop.now)
        self.streams[sid] = st
        st.opened_as = len(self.streams)
        req.conn = self
        self.requests_started += 1
        self.health.started()
        body = req.body
        upload = st.upload
        # RequestBuilder puts :method first and :authority third (all bytes, validated).
        hdrs = req.headers
        h2c.send_request(sid, hdrs, not body and upload is None, hdrs[0][1], hdrs[2][1])
        st.window = window = self.limits.stream_window
        # This connection's link carries more per round trip (flow.WindowTuner), and the
        # caller wants the whole body: no slow reader to bound. A streamed response
        # earns the larger window once its reader shows it keeps up.
        grown = self.tuner.window
        if grown > window and not req.stream and h2c.grant_stream(sid, grown - window):
            st.window = grown
        self._unflushed.append(st)
        if upload is not None:
            loop = self.loop
            resume = self.sender.resume
            upload.bind(lambda: loop.call_soon_threadsafe(resume, st))
        if body or upload is not None:
            if body:
                st.body = memoryview(body)
            self.sender.add(st)
            self.health.arm_write(st)
        else:
            self.health.arm_read(st)
        self.loop.mark_dirty(self)
        if sid >= _LAST_STREAM_ID:
            # RFC 9113 §5.1.1: stream IDs cannot be reused; a client out of them opens a
            # new connection. This one takes no new request and closes once its streams
            # end; the pool dials another for the next.
            log.info("%s: stream IDs used up, moving to a new connection", self.label)
            self._move_to(ConnState.DRAINING)
            # Queued requests go elsewhere (a dial) after the pool's current call returns.
            self.loop.call_soon_threadsafe(self.origin.on_slot_free, self)

    # -- socket I/O ------------------------------------------------------------------------
    def _on_io(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._write()
        if mask & selectors.EVENT_READ and not self.closed:
            self._on_readable()

    def _on_readable(self) -> None:
        sock = self.sock
        # Read into the loop's shared buffer, after the partial frame (if any) left
        # over from the last read; everything is consumed before we return.
        buf = self.loop.read_buffer()
        carry = self.h2.take_partial_frame()
        filled = len(carry)
        if filled:
            buf[:filled] = carry
        start = filled
        limit = min(len(buf), filled + _FEED_PER_TURN)
        eof = False
        error: OSError | None = None
        # The C-level TLS object, called without ssl.py's wrappers (_sockio.direct_tls);
        # None for plain TCP, or once the socket is closed.
        tls = self._tls_sock
        obj = tls._sslobj if tls is not None else None  # type: ignore[attr-defined]
        read = obj.read if obj is not None else None
        # Whether TLS holds decrypted bytes select() cannot see (any SSLSocket).
        pending = obj.pending if obj is not None else None
        if pending is None and isinstance(sock, ssl.SSLSocket):
            pending = sock.pending
        for _ in range(_READS_PER_TURN):
            try:
                if read is not None:
                    # read() takes at most len(buffer), as recv_into does.
                    n = read(_RECV_SIZE, buf[filled : filled + _RECV_SIZE])
                else:
                    n = sock.recv_into(buf[filled : filled + _RECV_SIZE])
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                break
            except OSError as exc:
                if tls is not None and isinstance(exc, ssl.SSLError) and is_ragged_eof(tls, exc):
                    eof = True
                else:
                    error = exc
                break
            if not n:
                eof = True
                break
            filled += n
            if n < TLS_RECORD and not self._more_waiting():
                break  # the socket is empty: no read that would only raise EAGAIN
            if limit - filled < _RECV_SIZE:
                # Feed h2 in bounded slices: each control frame it reads may queue an
                # ACK, and a flood read whole would blow the outbound cap in one turn.
                if pending is not None and pending():
                    self.loop.call_soon_threadsafe(self._on_readable_again)
                break
        else:
            # Data may remain inside the TLS layer, where select() cannot see it.
            if pending is not None and pending():
                self.loop.call_soon_threadsafe(self._on_readable_again)
        if filled > start:
            self.bytes_received += filled - start
            self.health.last_read = self.loop.now
            self._receive(buf[:filled])
        elif filled:
            self.h2.keep_partial_frame(buf[:filled])  # nothing new: keep it
        if self.closed:
            return
        if error is not None:
            self._lost(ConnectionLost(f"connection to {self.label} failed: {error}"), error)
        elif eof:
            self._lost(ConnectionLost(f"connection to {self.label} closed by the server"), None)

    def _on_readable_again(self) -> None:
        if not self.closed and self._reading:
            self._on_readable()
            self.flush()

    def _receive(self, data: bytes | memoryview) -> None:
        if self._preface_bytes < 4:
            # RFC 9113 §3.4: the server's first frame must be SETTINGS (type, byte 3).
            at = 3 - self._preface_bytes
            if at < len(data) and data[at] != 0x4:
                self._protocol_error(h2x.ProtocolError("server preface is not a SETTINGS frame"))
                return
            self._preface_bytes += len(data)
        try:
            events = self.h2.receive_data(data)
        except h2x.ProtocolError as exc:
            self._deliver_before_error(getattr(exc, "events_before", []))
            self._protocol_error(exc)
            return
        handlers = _HANDLERS
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(self, event)
            if self.closed:
                return
        if self.sender.pending:
            self.sender.pump_if_pending()
        out = self.out
        if self.h2.pending_output() or out.pending:
            # Only then: most reads of small responses leave nothing to send (their
            # credit goes back in batches), and a flush would find nothing.
            self.loop.mark_dirty(self)

    def _deliver_before_error(self, events: list[Any]) -> None:
        """What the frames before a connection error said about our streams: a response
        that completed in the same read as the bad frame is delivered, whatever the
        TCP segmentation (the connection fails right after, its other streams with it).
        No new request may start here meanwhile: the connection drains first."""
        if not events or self.closed:
            return
        self._move_to(ConnState.DRAINING)
        for event in events:
            if type(event) in _STREAM_EVENTS:
                with contextlib.suppress(h2x.H2Error):  # h2 is closed: credit is moot
                    _HANDLERS[type(event)](self, event)
            if self.closed:
                return

    def flush(self) -> None:
        """Move h2's pending output to the socket: one ``send()`` per turn when possible."""
        if self.closed:
            return
        h2c = self.h2
        sealed = h2c.sealed
        data = h2c.take_output()
        out = self.out
        if data or sealed:
            if self._unflushed:
                offset = out.generated
                for st in self._unflushed:
                    st.wire_offset = offset
                self._unflushed.clear()
            if sealed:
                for chunk in h2c.take_sealed():
                    out.append(chunk)
            out.append(data)  # takes h2's buffer when nothing is pending: no copy
        if out.pending and not (self._events & selectors.EVENT_WRITE):
            self._write()

    def _write(self) -> None:
        out = self.out
        sent, error = out.send(self.sock)
        if error is not None:
            self._lost(ConnectionLost(f"connection to {self.label} failed: {error}"), error)
            return
        if sent:
            self.health.last_write_progress = self.loop.now
        pending = out.pending
        want = selectors.EVENT_WRITE if pending else 0
        # Stop reading while the peer does not drain our output (control-frame floods).
        self._reading = pending < OUT_CAP
        if self._reading:
            want |= selectors.EVENT_READ
        if want != self._events:
            self._events = want
            self.loop.selector.modify(self.sock, want or selectors.EVENT_READ, self._on_io)
        if pending:
            self.health.arm_if_idle()
        elif self.sender.senders:
            self.sender.pump()
            self.loop.mark_dirty(self)

    # -- h2 events -------------------------------------------------------------------------
    def _on_response(self, event: ev.ResponseReceived) -> None:
        st = self.streams.get(event.stream_id)
        if st is None:
            return
        now = self.loop.now
        req = st.req
        if not req.body and st.upload is None:
            # Sent at last_activity (Health.arm_read) and answered now: a round trip
            # plus the server's time, known before the first PING sample returns.
            self.tuner.observe_rtt(now - st.last_activity)
        st.last_activity = self.health.last_progress = now
        headers = event.headers
        status = 0
        raw = headers[0][1] if headers and headers[0][0] == b":status" else None
        if raw is None:
            for name, value in headers:
                if name == b":status":
                    raw = value
                    break
        if raw is not None and len(raw) == 3 and raw.isdigit():
            status = int(raw)
        if not 200 <= status <= 599:
            self._fail_stream(st, ProtocolError(f"invalid :status {raw!r} from {self.label}"))
            return
        st.status = status
        st.headers_at = self.loop.now
        # h2 has validated the list: pseudo-headers come first (RFC 9113 §8.3).
        first = 1 if raw is headers[0][1] else 0
        while first < len(headers) and headers[first][0][:1] == b":":
            first += 1
        st.headers = headers[first:]
        if status in (204, 304):
            st.no_body = True
        elif req_method_has_body(st.req.method):
            # h2 has parsed and checked it (one value, digits only). It forgets it when
            # trailers arrive (python-hyper/h2: receive_headers), possibly in the same
            # read as these headers: then it is read from the headers again, and kept.
            stream = self.h2.streams.get(st.id)
            if stream is not None and not stream.state_machine.trailers_received:
                st.expected = stream._expected_content_length
            else:
                for n, v in st.headers:
                    if n == b"content-length":
                        st.expected = int(v) if v.isdigit() else None
                        break
        if not req.stream and st.expected is not None and st.expected > st.window:
            # A large body the caller wants whole: open the window to the limit now
            # rather than over the round trips the estimate takes (the whole body is
            # held in memory anyway; the connection window still bounds the sum).
            window = min(self.limits.stream_window_limit, st.expected)
            if window > st.window and self.h2.grant_stream(st.id, window - st.window):
                st.window = window
        if req.stream:
            pipe = BodyPipe(self, st.id, self.limits.stream_window, req.timeout.read)
            st.pipe = pipe
            if st.window < self.tuner.maximum and (st.expected is None or st.expected > st.window):
                self._bursts[st.id] = now  # its first window is timed from here
            resp = st.streamed_response("HTTP/2", pipe)
            if event.stream_ended is not None:
                pipe.feed_eof(None)
            # Once the headers are delivered, the reader's own waits enforce the read
            # timeout; a reader that pauses must not be blamed on the server.
            if st.deadline_kind == READ:
                st.deadline_kind = NO_DEADLINE
            if not req.resolve(resp):
                pipe.close()
        if event.stream_ended is not None:
            self._complete(st)

    def _on_data(self, event: ev.DataReceived) -> None:
        sid = event.stream_id
        st = self.streams.get(sid)
        flow = event.flow_controlled_length
        if st is None:
            if flow:
                self.h2.acknowledge_received_data(flow, sid)
            return
        data = event.data
        if data:
            # Empty DATA frames are not progress: a peer dribbling them (CVE-2019-9518)
            # must still hit the read timeout.
            st.last_activity = self.health.last_progress = self.loop.now
            tuner = self.tuner
            if tuner.sampling:
                tuner.count(flow)
            elif st.received >= st.window >> 1:  # a bulk transfer, not a small answer
                if st.window < tuner.window:
                    self._grow_stream(st, tuner.window)
                elif tuner.growing and self.health.ping_sent_at is None:
                    self.health.send_ping()  # measures the link (flow.WindowTuner)
                    tuner.start()
            st.received += len(data)
            if st.no_body:
                if flow:
                    self.h2.acknowledge_received_data(flow, sid)
                # RFC 9110 §6.4.1: 204 and 304 responses have no content.
                self._fail_stream(
                    st,
                    ProtocolError(f"{self.label} sent DATA on a {st.status} response"),
                    code=ErrorCodes.PROTOCOL_ERROR,
                )
                return
        pipe = st.pipe
        if pipe is None:
            st.chunks.append(data)
            if flow:
                # The caller asked for the whole body: both levels of credit go back on
                # receipt (h2's acknowledge_received_data does both, more slowly). A
                # stream the peer has just ended needs no more stream credit.
                self.h2.ack_connection(flow)
                if event.stream_ended is None:
                    self.h2.ack_stream(flow, sid)
        else:
            # Connection credit goes back on receipt, stream credit as the reader
            # consumes: a stream buffers at most its window, and unread streams never
            # starve their siblings of the shared connection window.
            if flow:
                self.h2.ack_connection(flow)
            padding = flow - len(data)
            if data and not pipe.feed(data):
                padding = flow  # the reader is gone: give the stream window back now
            if padding:
                self.h2.ack_stream(padding, sid)
        if event.stream_ended is not None:
            self._complete(st)

    def _on_trailers(self, event: ev.TrailersReceived) -> None:
        st = self.streams.get(event.stream_id)
        if st is not None:
            st.trailers = list(event.headers)
            if event.stream_ended is not None:
                self._complete(st)

    def _on_stream_ended(self, event: ev.StreamEnded) -> None:
        st = self.streams.get(event.stream_id)
        if st is not None:
            self._complete(st)

    def _on_reset(self, event: ev.StreamReset) -> None:
        st = self.streams.get(event.stream_id)
        if st is None:
            return
        code = int(event.error_code)
        if code == ErrorCodes.REFUSED_STREAM and st.status == 0:
            # RFC 9113 §8.7: not processed. Opened beyond the limit we know now (we
            # assumed more before the server's SETTINGS): our overshoot, a bounce.
            beyond = st.opened_as > self.max_streams
            fact = Fact.REFUSED_BEYOND_LIMIT if beyond else Fact.REFUSED
            self._settle(st, fact, StreamReset("stream refused by the server", code))
            return
        try:
            name = ErrorCodes(code).name
        except ValueError:
            name = str(code)
        if not event.remote_reset:
            # h2 reset the stream itself (its RST_STREAM is queued): the server broke a
            # stream-level rule, e.g. a WINDOW_UPDATE past 2^31-1. The server's fault,
            # as for a malformed response; and our reset, held against its limit.
            self.resets_sent += 1
            self.health.reset_sent()
            exc: H2PoolError = ProtocolError(
                f"{self.label} broke HTTP/2 on stream {st.id}; reset with {name}"
            )
        else:
            exc = StreamReset(f"stream reset by the server: {name}", code)
        self._fail_stream(st, exc, send_rst=False)

    def _on_body_length(self, event: BodyLengthMismatch) -> None:
        if event.flow:
            self.h2.acknowledge_received_data(event.flow, event.stream_id)
        st = self.streams.get(event.stream_id)
        if st is not None:
            exc = ProtocolError(f"response from {self.label} {event.message}")
            reset = event.reset_sent
            if not reset:
                try:
                    self.h2.reset_stream(st.id, ErrorCodes.PROTOCOL_ERROR)
                    reset = True
                except h2x.H2Error:
                    pass
            if reset:
                # Held against the server's limit until a PING proves it saw the RST.
                self.resets_sent += 1
                self.health.reset_sent()
            self._fail_stream(st, exc, send_rst=False)

    def _on_settings(self, event: ev.RemoteSettingsChanged) -> None:
        changed = event.changed_settings
        push = changed.get(SettingCodes.ENABLE_PUSH)
        if push is not None and push.new_value != 0:
            # RFC 9113 §6.5.2: a server must not send SETTINGS_ENABLE_PUSH=1.
            self._protocol_error(h2x.ProtocolError("server sent SETTINGS_ENABLE_PUSH=1"))
            return
        first = not self.settings_seen
        self.settings_seen = True
        if first and self._state is ConnState.HANDSHAKE:
            self._move_to(ConnState.OPEN)
        mhl = changed.get(SettingCodes.MAX_HEADER_LIST_SIZE)
        if mhl is not None:
            self._peer_header_limit = mhl.new_value
        mcs = changed.get(SettingCodes.MAX_CONCURRENT_STREAMS)
        if mcs is not None:
            self._peer_max_streams = mcs.new_value
        elif first:
            # No limit announced: RFC 9113 says unlimited; like Go, assume a sane 1000.
            self._peer_max_streams = _UNLIMITED_STREAMS
        self.max_streams = self._compute_max_streams()
        self.origin.remember_peer_settings(self._peer_max_streams)
        if (first or SettingCodes.INITIAL_WINDOW_SIZE in changed) and self.sender:
            self.sender.pending = True
        self.origin.on_slot_free(self)

    def _on_window_update(self, event: ev.WindowUpdated) -> None:
        if self.sender:
            self.sender.pending = True  # pumped after the whole batch (see BodyScheduler)

    def _on_ping_ack(self, event: ev.PingAckReceived) -> None:
        sent = self.health.ping_sent_at
        self.health.on_ping_ack()
        tuner = self.tuner
        if sent is None:
            return
        if tuner.sampling:
            grown = tuner.on_ack(self.loop.now - sent)
            if grown is not None or tuner.window > self.limits.stream_window:
                # Also tops up streams that were behind at an earlier growth.
                self._grow_windows(tuner.window)
        else:
            tuner.observe_rtt(self.loop.now - sent)

    def _grow_windows(self, window: int) -> None:
        """Give streams whose reader keeps up the larger window (flow.WindowTuner): a
        buffered response, or a streamed one whose reader keeps up (_grow_stream)."""
        grew = False
        for st in self.streams.values():
            grew = self._grow_stream(st, window) or grew
        if grew:
            log.debug("stream window on %s grows to %d", self.label, window)

    def _grow_stream(self, st: H2Stream, window: int) -> bool:
        if st.window >= window:
            return False
        if st.pipe is not None and not self._keeps_up(st, st.pipe):
            return False
        if not self.h2.grant_stream(st.id, window - st.window):
            return False  # closed meanwhile
        st.window = window
        self.loop.mark_dirty(self)
        return True

    @staticmethod
    def _keeps_up(st: H2Stream, pipe: BodyPipe) -> bool:
        """A streamed body's reader has consumed a whole window and holds little of
        the next one unread: it keeps up. A reader that pauses earlier holds at most
        the window it has."""
        unread = pipe.buffered
        return st.received - unread >= st.window and unread < st.window // 4

    def _on_consumed(self, st: H2Stream, pipe: BodyPipe) -> None:
        """The reader of a streamed body posted credit: the moment it may show it
        keeps up. Growing here, not at the next DATA, saves a round trip: the server
        waits for this credit, so no DATA comes until it has arrived."""
        if not self._keeps_up(st, pipe):
            return
        tuner = self.tuner
        since = self._bursts.pop(st.id, None)
        if since is not None:
            tuner.on_burst(st.received - pipe.buffered, self.loop.now - since)
        self._grow_stream(st, tuner.window)

    def on_healthy(self) -> None:
        """Health: a PING was answered, so held-back slots may be free again."""
        self.origin.on_slot_free(self)

    def _on_goaway(self, event: ev.ConnectionTerminated) -> None:
        self._move_to(ConnState.DRAINING)
        self.goaway_received = True
        self.out.append(self.h2.take_preserved())
        last = event.last_stream_id if event.last_stream_id is not None else 2**31
        code = int(event.error_code) if event.error_code is not None else 0
        log.info("GOAWAY from %s: error_code=%s last_stream_id=%s", self.label, code, last)
        exc: H2PoolError
        # RFC 9113 §6.8: streams above last_stream_id were not processed.
        if code == 0:
            fact, exc = Fact.GOAWAY_GRACEFUL, ConnectionLost(f"GOAWAY from {self.label}")
        elif self.responses_completed:
            fact, exc = Fact.GOAWAY_ERROR, ConnectionLost(f"GOAWAY from {self.label}")
        else:
            fact = Fact.GOAWAY_ON_FIRST
            exc = ProtocolError(f"{self.label} refused the connection: GOAWAY error {code}")
        for st in [s for s in self.streams.values() if s.id > last]:
            if st.status:
                # Its response began, so the server processed it whatever the GOAWAY
                # says: it finishes here (the connection stays open for it, or for its
                # read timeout), and is never sent again.
                continue
            self._settle(st, fact, exc, quiet=True)
        if code != 0:
            exc = ProtocolError(f"{self.label} sent GOAWAY with error code {code}")
            for st in list(self.streams.values()):
                self._fail_stream(st, exc, send_rst=False)
        self.origin.on_slot_free(self)  # lets the pool move queued requests elsewhere
        if not self.streams:
            self.close()

    # -- completing streams ----------------------------------------------------------------
    def _complete(self, st: H2Stream) -> None:
        req = st.req
        if st.expected is not None and st.received != st.expected:
            self._fail_stream(
                st,
                ProtocolError(
                    f"response body from {self.label} has {st.received} bytes, its "
                    f"Content-Length says {st.expected}"
                ),
                send_rst=False,
            )
            return
        self.responses_completed += 1
        if st.body is not None or st.upload is not None:
            # The server sent its whole response before reading all of the body: stop
            # uploading and say so without error (RFC 9113 §8.1).
            with contextlib.suppress(h2x.H2Error):
                self.h2.reset_stream(st.id, ErrorCodes.NO_ERROR)
        self._drop_stream(st)
        trailers = Headers._from_raw(st.trailers) if st.trailers is not None else None
        if st.pipe is not None:
            st.pipe.feed_eof(trailers)
        elif st.status:
            req.resolve(st.buffered_response("HTTP/2", trailers))
        else:
            req.fail(ProtocolError(f"stream ended without a response from {self.label}"))
        self._after_stream_closed()

    def _drop_stream(self, st: H2Stream, retrying: bool = False) -> None:
        self.streams.pop(st.id, None)
        self._bursts.pop(st.id, None)
        st.deadline_kind = NO_DEADLINE
        st.body = None
        if st.upload is not None:
            if not retrying:
                st.upload.abort()  # releases a producer blocked on a full pipe
            st.upload = None
        if st.req.conn is self:
            st.req.conn = None

    def _after_stream_closed(self) -> None:
        if not self.streams:
            self.idle_since = self.loop.now
            if self.draining:
                self.close()
                return
        self.origin.on_slot_free(self)

    def _settle(self, st: H2Stream, fact: Fact, exc: H2PoolError, quiet: bool = False) -> None:
        """``st`` cannot complete here: the pool sends it again if the retry policy
        allows, else it fails with ``exc``. ``quiet``: the caller tells the pool about
        the slot itself (a GOAWAY settling many streams at once)."""
        self._drop_stream(st, retrying=True)
        if not self.origin.retry(st.req, fact, exc):
            self._fail_dropped(st, exc)
        if not quiet:
            self._after_stream_closed()

    def _fail_dropped(self, st: H2Stream, exc: H2PoolError) -> None:
        if st.upload is not None:
            st.upload.abort()
        if st.pipe is not None:
            st.pipe.feed_error(exc)
        st.req.fail(exc)

    def _fail_stream(
        self,
        st: H2Stream,
        exc: H2PoolError,
        send_rst: bool = True,
        code: int = ErrorCodes.CANCEL,
    ) -> None:
        """Fail one stream; the connection and its other streams carry on."""
        self._drop_stream(st)
        if send_rst:
            try:
                self.h2.reset_stream(st.id, code)
            except h2x.H2Error:
                pass
            else:
                self.resets_sent += 1
                self.health.reset_sent()
            self.loop.mark_dirty(self)
        self._fail_dropped(st, exc)
        self._after_stream_closed()

    def fail_stream(self, st: H2Stream, exc: H2PoolError) -> None:
        """Health and BodyScheduler: fail one stream with RST_STREAM(CANCEL)."""
        self._fail_stream(st, exc)

    # -- from the pool and from readers ------------------------------------------------------
    def cancel(self, req: Request) -> None:
        """The caller cancelled: RST_STREAM(CANCEL), free the slot (I/O thread)."""
        for st in self.streams.values():
            if st.req is req:
                exc = ClientClosed("request cancelled")
                self._fail_stream(st, exc)
                return

    def _ack(self, stream_id: int, nbytes: int) -> None:
        if not self.closed:
            self.h2.ack_stream(nbytes, stream_id)
            self.loop.mark_dirty(self)
            st = self.streams.get(stream_id)
            if st is not None and st.pipe is not None and st.window < self.tuner.maximum:
                self._on_consumed(st, st.pipe)

    def _reader_gone(self, stream_id: int, unread: int) -> None:
        if self.closed:
            return
        st = self.streams.get(stream_id)
        if st is not None:
            self._fail_stream(st, ClientClosed("response closed before its end"))
        # The unread bytes' connection credit went back on receipt; the stream is gone.
        self.loop.mark_dirty(self)

    # -- connection end --------------------------------------------------------------------
    def _protocol_error(self, exc: h2x.ProtocolError) -> None:
        # The exception text may quote received header values (cookies): only its type
        # at WARNING, the text at DEBUG.
        log.warning("protocol error on %s: %s", self.label, type(exc).__name__)
        log.debug("protocol error on %s: %s", self.label, exc)
        text = str(exc)
        if not text or text.isdigit():  # h2's StreamClosedError says only the stream id
            text = type(exc).__name__ + (f" on stream {text}" if text else "")
        err = ProtocolError(f"HTTP/2 protocol error from {self.label}: {text}")
        err.__cause__ = detached(exc)
        # h2 queued a GOAWAY for errors it detected; send one for ours too.
        if self.h2.state_machine.state != ConnectionState.CLOSED:
            try:
                self.h2.close_connection(error_code=ErrorCodes.PROTOCOL_ERROR)
            except h2x.H2Error:
                pass
        self.flush()
        self._shutdown(err, lost=False)

    def lost(self, err: H2PoolError) -> None:
        """Health: give the connection up as lost."""
        self._lost(err, None)

    def _shutdown(self, err: H2PoolError, lost: bool) -> None:
        if self.closed:
            return
        log.debug(
            "closing connection to %s (%s, %d streams open, %d requests served)",
            self.label,
            type(err).__name__,
            len(self.streams),
            self.requests_started,
        )
        streams = list(self.streams.values())
        self.streams.clear()
        self._close_socket()
        out = self.out
        for st in streams:
            st.deadline_kind = NO_DEADLINE
            st.req.conn = None
            if st.status:
                fact = Fact.RESPONSE_BEGUN
            elif not lost:
                fact = Fact.BROKEN
            elif st.wire_offset < 0 or not out.possibly_sent(st.wire_offset):
                fact = Fact.LOST_UNSENT  # no byte of it reached the kernel
            else:
                fact = Fact.LOST_AFTER_SEND
            if not self.origin.retry(st.req, fact, err):
                self._fail_dropped(st, err)
        # A closed connection may live on until the cyclic GC frees it: let go now of the
        # request bodies it refers to (views in the output buffer and h2's sealed chunks,
        # the streams' unsent bodies), which may be a caller's gigabyte.
        out.clear()
        self.h2.take_sealed()
        self.sender.senders.clear()
        for st in streams:
            st.body = None
        self.origin.on_conn_closed(self)

    def close(self) -> None:
        """Send GOAWAY and close. Streams still open fail with `ClientClosed`."""
        if self.closed:
            return
        with contextlib.suppress(h2x.H2Error):
            self.h2.close_connection(error_code=0)
        self.flush()
        self._shutdown(ClientClosed(f"connection to {self.label} closed"), lost=False)

    def _close_socket(self) -> None:
        self.health.stop()
        super()._close_socket()


# What a stream's own response is made of (see H2Conn._deliver_before_error).
_STREAM_EVENTS = frozenset(
    (ev.ResponseReceived, ev.DataReceived, FastData, ev.TrailersReceived, ev.StreamEnded)
)

_HANDLERS: dict[type, Callable[[H2Conn, Any], None]] = {
    ev.ResponseReceived: H2Conn._on_response,
    ev.DataReceived: H2Conn._on_data,
    FastData: H2Conn._on_data,
    ev.TrailersReceived: H2Conn._on_trailers,
    ev.StreamEnded: H2Conn._on_stream_ended,
    ev.StreamReset: H2Conn._on_reset,
    ev.RemoteSettingsChanged: H2Conn._on_settings,
    ev.WindowUpdated: H2Conn._on_window_update,
    ev.ConnectionTerminated: H2Conn._on_goaway,
    ev.PingAckReceived: H2Conn._on_ping_ack,
    BodyLengthMismatch: H2Conn._on_body_length,
}
