"""One HTTP/1.1 connection: a socket, an ``h11`` state machine and at most one request.

The sibling of `H2Conn` for origins whose ALPN did not
pick h2 (or ``http://`` without prior knowledge). It offers the pool the same
`Connection` interface, so queueing, timeouts, retries and
``stats()`` work unchanged; the pool dials one connection per concurrent request
instead of multiplexing. Like H2Conn it reports a ``Fact`` when a request cannot
complete and leaves the retry decision to the pool (``h2pool._retry``).

Everything here runs on the I/O thread, except ``post_consumed``/``post_cancel``,
which streamed-response readers call and which only post work to the I/O thread.
"""

from __future__ import annotations

import ast
import itertools
import logging
import re
import selectors
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import h11

from ._connection import (
    ConnectionBase,
    ConnState,
    StreamRecord,
    by_reference,
    take_upload,
)
from ._errors import (
    ClientClosed,
    ConnectionLost,
    H2PoolError,
    InvalidHeader,
    ProtocolError,
    ReadTimeout,
    WriteTimeout,
    detached,
)
from ._headers import Headers
from ._response import WireHead
from ._retry import Fact
from ._sockio import TLS_RECORD, is_ragged_eof
from ._stream import BodyPipe

if TYPE_CHECKING:
    from ._loop import Timer
    from ._request import Request

log = logging.getLogger("h2pool")

_RECV_SIZE = 256 * 1024
_READS_PER_TURN = 64
# Request-body bytes generated ahead of the socket: enough to keep the kernel's send
# buffer full, small enough that a 1 GiB body is never copied whole.
_OUT_CAP = 1024 * 1024
_BODY_CHUNK = 256 * 1024

# Header names go out on HTTP/1.1 in their canonical form (``Content-Type``, as Go's
# net/http writes them and as servers and tests written against http.client expect);
# HTTP/2 requires lower case, which is how requests carry them (RFC 9113 §8.2.1).
# Memoised: programs send the same few names; bounded against one that invents many.
_CANONICAL: dict[bytes, bytes] = {}


def _canonical(name: bytes) -> bytes:
    out = _CANONICAL.get(name)
    if out is None:
        out = b"-".join(part[:1].upper() + part[1:] for part in name.split(b"-"))
        if len(_CANONICAL) < 512:
            _CANONICAL[name] = out
    return out


_BAD_STATUS_LINE = re.compile(r"illegal status line: (?:bytearray\()?(b(['\"]).*\2)")


def _head_error(message: str) -> tuple[str, str] | None:
    """Which part of the response head h11 refused (see ``ProtocolError._head_error``)."""
    if message.startswith("Receive buffer too long"):
        return ("too long", "")
    match = _BAD_STATUS_LINE.match(message)
    if match is None:
        return None
    try:
        line = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return ("status line", "")
    return ("status line", bytes(line).decode("latin-1"))


def _wire_head(event: h11.Response, until_close: bool) -> WireHead:
    """The drop-in's view of a response head, by http.client's rules: the connection
    will close after an HTTP/1.0 answer, one saying ``Connection: close``, or a body
    delimited by the connection's end."""
    tokens = b",".join(v for n, v in event.headers if n == b"connection").lower()
    closing = b"close" in (t.strip() for t in tokens.split(b","))
    coding = b",".join(v for n, v in event.headers if n == b"transfer-encoding").lower()
    chunked = coding.rsplit(b",", 1)[-1].strip() == b"chunked"
    will_close = closing or until_close or event.http_version == b"1.0"
    return WireHead(event.reason.decode("latin-1"), will_close, chunked)


class H1Stream(StreamRecord):
    """The one request in flight on an `H1Conn`; owned by the I/O thread."""

    __slots__ = (
        "got_bytes",
        "head",
        "timer",
        "unconsumed",
        "until_close",
        "version",
        "wire_start",
    )

    def __init__(self, sid: int, req: Request, now: float) -> None:
        super().__init__(sid, req, now)
        self.timer: Timer | None = None
        self.got_bytes = False  # any byte of the response arrived
        self.unconsumed = 0  # bytes fed to the pipe and not yet reported read
        self.wire_start = 0  # offset of the request's first byte in our output
        self.until_close = False  # the response's body ends where the connection does
        self.version = "HTTP/1.1"  # as the response's status line says (1.0 or 1.1)
        self.head: WireHead | None = None  # the status line's phrase and the framing


class H1Conn(ConnectionBase[H1Stream]):
    """An HTTP/1.1 connection carrying one request at a time. I/O thread only."""

    http_version = "HTTP/1.1"
    initial_state = ConnState.OPEN
    out_cap = _OUT_CAP

    def _setup(self) -> None:
        limit = self.limits.max_header_list_size
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=limit)
        self._ids = itertools.count(1)
        self._events = selectors.EVENT_READ
        self._reading = True  # False while a slow reader has a full stream window
        self._eof = False
        self.loop.selector.register(self.sock, self._events, self._on_io)

    @property
    def free_slots(self) -> int:
        if self.closed or self.draining or self.streams:
            return 0
        return 1 if self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE else 0

    # -- starting a request ----------------------------------------------------------------
    def start(self, req: Request) -> None:
        """Send ``req``'s head and start its body. The caller checked ``free_slots``."""
        st = H1Stream(next(self._ids), req, self.loop.now)
        self.streams[st.id] = st
        req.conn = self
        self.requests_started += 1
        st.wire_start = self.out.generated
        try:
            head = self.h11.send(
                h11.Request(
                    method=req.method.encode("ascii"),
                    target=req.url.target,
                    headers=self._h1_headers(req),
                )
            )
        except h11.LocalProtocolError as exc:
            # Our validation let through something h11 refuses; h11 is now in ERROR, so
            # this connection cannot carry anything else.
            err = InvalidHeader(f"request cannot be sent as HTTP/1.1: {exc}")
            err.__cause__ = detached(exc)
            self._fail_stream(st, err)
            return
        self._emit(head or b"")
        if req.body:
            st.body = memoryview(req.body)
        upload = st.upload
        if upload is not None:
            loop = self.loop
            upload.bind(lambda: loop.call_soon_threadsafe(self._resume_upload, st))
        if st.body is not None or upload is not None:
            if req.timeout.write is not None:
                st.timer = self.loop.call_later(req.timeout.write, self._on_write_timer, st)
            self._pump_body()
        else:
            self._emit(self.h11.send(h11.EndOfMessage()) or b"")
            self._arm_read_timer(st)
        self.loop.mark_dirty(self)

    @staticmethod
    def _h1_headers(req: Request) -> list[tuple[bytes, bytes]]:
        """HTTP/2-shaped header list → HTTP/1.1: ``:authority`` becomes ``Host`` (first,
        RFC 9112 §3.2), other pseudo-headers go into the request line."""
        host = req.url.authority
        out: list[tuple[bytes, bytes]] = []
        for name, value in req.headers:
            if name[:1] == b":":
                if name == b":authority":
                    host = value
                continue
            if name == b"te":
                continue  # "TE: trailers" is for HTTP/2 (see _prepare)
            out.append((_canonical(name), value))
        out.insert(0, (b"Host", host))
        upload = req.upload
        if upload is not None and upload.declared_length is None:
            # RFC 9112 §6.1: a body of unknown length is sent chunked.
            out.append((b"Transfer-Encoding", b"chunked"))
        return out

    def _emit(self, data: bytes) -> None:
        self.out.append(data)

    def _emit_body(self, data: bytes | memoryview) -> None:
        """Body bytes, a large payload of immutable bytes by reference (h11 hands the
        very object back among its framing pieces): see OutputBuffer."""
        view = by_reference(data)
        if view is None:
            self._emit(self.h11.send(h11.Data(data=bytes(data))) or b"")
            return
        # h11 only measures the payload and passes it through (its typing says bytes).
        event = h11.Data(data=cast(bytes, view))
        for piece in self.h11.send_with_data_passthrough(event) or ():
            self.out.append(piece)

    def _arm_read_timer(self, st: H1Stream) -> None:
        read = st.req.timeout.read
        if read is not None and self.streams.get(st.id) is st:
            st.last_activity = self.loop.now
            if st.timer is not None:
                st.timer.cancel()
            st.timer = self.loop.call_later(read, self._on_read_timer, st)

    def _pump_body(self) -> None:
        """Generate request-body bytes while less than ``_OUT_CAP`` waits for the socket."""
        st = self._current()
        if st is None or self.closed:
            return
        while st.body is not None or st.upload is not None:
            budget = _OUT_CAP - self.out.pending
            if budget <= 0:
                return
            limit = min(budget, _BODY_CHUNK)
            body = st.body
            if body is not None:
                pos = st.body_pos
                n = min(limit, len(body) - pos)
                self._emit_body(body[pos : pos + n])
                st.body_pos = pos + n
                if st.body_pos >= len(body):
                    st.body = None
                    self._end_body(st)
                continue
            upload = st.upload
            assert upload is not None
            data, end, error = take_upload(upload, limit)
            if error is not None:
                self._fail_stream(st, error)
                return
            if data:
                st.last_activity = self.loop.now
                self._emit_body(data)
            if end:
                st.upload = None
                self._end_body(st)
            elif not data:
                # Waiting on the caller's own producer, not on the server: the write
                # timeout stops until _resume_upload.
                if st.timer is not None:
                    st.timer.cancel()
                    st.timer = None
                return

    def _end_body(self, st: H1Stream) -> None:
        if self.h11.our_state is h11.SEND_BODY:
            self._emit(self.h11.send(h11.EndOfMessage()) or b"")
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        if st.pipe is None:  # a delivered streamed response is timed by its reader
            self._arm_read_timer(st)

    def _resume_upload(self, st: H1Stream) -> None:
        if self.streams.get(st.id) is st and st.upload is not None:
            write = st.req.timeout.write
            if st.timer is None and write is not None:
                st.last_activity = self.loop.now
                st.timer = self.loop.call_later(write, self._on_write_timer, st)
            self._pump_body()
            self.loop.mark_dirty(self)

    def _current(self) -> H1Stream | None:
        for st in self.streams.values():
            return st
        return None

    # -- socket I/O ------------------------------------------------------------------------
    def _on_io(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._write()
        if mask & selectors.EVENT_READ and not self.closed and self._reading:
            self._on_readable()

    def _on_readable(self) -> None:
        sock = self.sock
        # The C-level TLS object, called without ssl.py's wrappers (_sockio.direct_tls).
        tls = self._tls_sock
        obj = tls._sslobj if tls is not None else None  # type: ignore[attr-defined]
        recv = obj.read if obj is not None else sock.recv
        for _ in range(_READS_PER_TURN):
            try:
                data = recv(_RECV_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if tls is not None and isinstance(exc, ssl.SSLError) and is_ragged_eof(tls, exc):
                    self._on_eof(ragged=True)
                else:
                    self._on_socket_error(exc)
                return
            if not data:
                self._on_eof()
                return
            self.bytes_received += len(data)
            st = self._current()
            if st is None:
                self._unsolicited()
                return
            st.got_bytes = True
            if st.status:
                # Progress for the read timeout is body bytes: until the final response
                # head is complete the timeout covers the head as a whole, so a server
                # sending endless 1xx responses or trickling header lines still times
                # out (as over HTTP/2).
                st.last_activity = self.loop.now
            self.h11.receive_data(data)
            self._process_events()
            if self.closed or not self._reading:
                return
            if len(data) < TLS_RECORD and not self._more_waiting():
                break  # the socket is empty: no read that would only raise EAGAIN
        # Data may remain inside the TLS layer, where select() cannot see it.
        pending = obj.pending if obj is not None else None
        if pending is None and isinstance(sock, ssl.SSLSocket):
            pending = sock.pending
        if pending is not None and pending():
            self.loop.call_soon_threadsafe(self._on_readable_again)

    def _on_readable_again(self) -> None:
        if not self.closed and self._reading:
            self._on_readable()

    def _unsolicited(self) -> None:
        """Bytes with no request in flight (a server's 408 before it closes an idle
        connection, or the rest of a response that said it had no body): they answer
        nothing, and the next request's response would be read after them. Close."""
        log.debug("%s sent data with no request in flight; closing the connection", self.label)
        self._shutdown(ClientClosed(f"connection to {self.label} closed"), lost=False)

    def _on_eof(self, ragged: bool = False) -> None:
        st = self._current()
        if ragged and st is not None and st.until_close:
            # RFC 9112 §9.8: a body delimited by the connection's end is complete over
            # TLS only with a closure alert. Without one the TCP close may be anyone's
            # (an attacker's FIN, a cut): the body may be cut short, so it is not
            # handed over as complete.
            self._lost(
                ConnectionLost(
                    f"connection to {self.label} closed without TLS close_notify before the "
                    "end of a body delimited by the connection's end"
                ),
                None,
            )
            return
        self._eof = True
        self.h11.receive_data(b"")
        self._process_events()
        if not self.closed:
            # Nothing more can come: an idle connection just ends, a request in flight
            # was cut (h11 reports that as an error, handled above, in most states).
            self._lost(ConnectionLost(f"connection to {self.label} closed by the server"), None)

    def _on_socket_error(self, exc: OSError) -> None:
        self._lost(ConnectionLost(f"connection to {self.label} failed: {exc}"), exc)

    def flush(self) -> None:
        """Write pending output (called by the loop at the end of a turn)."""
        if self.closed:
            return
        if self.out.pending and not (self._events & selectors.EVENT_WRITE):
            self._write()

    def _write(self) -> None:
        out = self.out
        sock = self.sock
        while True:
            sent, error = out.send(sock)
            if sent:
                st = self._current()
                if st is not None and (st.body is not None or st.upload is not None):
                    st.last_activity = self.loop.now
            if error is not None or out.pending:
                break
            # Everything went out: generate more of the request body, if any.
            before = out.generated
            self._pump_body()
            if self.closed or out.generated == before:
                break
        if self.closed:
            return
        if error is not None:
            self._on_write_error(error)
            return
        self._set_events(
            (selectors.EVENT_WRITE if out.pending else 0)
            | (selectors.EVENT_READ if self._reading else 0)
        )

    def _on_write_error(self, exc: OSError) -> None:
        # A server may answer early (413, 401) and close before reading the whole body;
        # its response may already wait in our receive buffer. Read it before giving up.
        self.out.clear()
        st = self._current()
        if st is not None:
            # Nothing more is sent; the upload pipe stays with the request, so that
            # _shutdown lets the pool judge a retry (an aborted pipe cannot be re-sent:
            # a retry would wait on a producer that has stopped) and aborts it otherwise.
            st.body = None
        self._on_readable()
        if not self.closed:
            self._lost(ConnectionLost(f"connection to {self.label} failed: {exc}"), exc)

    def _set_events(self, want: int) -> None:
        if want == self._events:
            return
        selector = self.loop.selector
        if self._events == 0:
            selector.register(self.sock, want, self._on_io)
        elif want == 0:
            selector.unregister(self.sock)
        else:
            selector.modify(self.sock, want, self._on_io)
        self._events = want

    # -- h11 events --------------------------------------------------------------------------
    def _process_events(self) -> None:
        h = self.h11
        while not self.closed:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                self._on_remote_error(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                self._on_data(event)
            elif isinstance(event, h11.Response):
                self._on_response(event)
            elif isinstance(event, h11.EndOfMessage):
                self._on_end(event)
            elif isinstance(event, h11.ConnectionClosed):
                self._on_closed_by_peer()
                return
            # InformationalResponse (100 Continue, 103): nothing to do.

    def _on_response(self, event: h11.Response) -> None:
        st = self._current()
        if st is None:
            return
        if not event.http_version.startswith(b"1."):
            # h11 reads any digit.digit; an "HTTP/2.0" status line on this framing is
            # not HTTP/1 (RFC 9112 §2.3: a minor version above 1 reads as HTTP/1.1).
            version = "HTTP/" + event.http_version.decode("ascii")
            err = ProtocolError(f"{self.label} answered in {version}, not HTTP/1.x")
            err._head_error = ("version", version)
            self._shutdown(err, lost=False)
            return
        if self._too_large(event.headers):
            return
        st.status = event.status_code
        st.headers_at = st.last_activity = self.loop.now
        if event.http_version == b"1.0":
            st.version = "HTTP/1.0"  # h11 already treats the connection as not reusable
        # h11's framing rule (RFC 9112 §6.3): no Transfer-Encoding and no Content-Length
        # on a response that has a body means the body runs to the connection's end.
        if st.req.method != "HEAD" and event.status_code not in (204, 304):
            names = {n for n, _ in event.headers}
            st.until_close = b"transfer-encoding" not in names and b"content-length" not in names
        st.head = _wire_head(event, st.until_close)
        # The names as the server wrote them (h11's own list is lower-cased): lookups
        # are case-insensitive anyway, and items() and the http.client drop-in's
        # getheaders() keep the server's case, as the stdlib does.
        st.headers = event.headers.raw_items()
        req = st.req
        if req.stream:
            pipe = BodyPipe(self, st.id, self.limits.stream_window, req.timeout.read)
            st.pipe = pipe
            resp = st.streamed_response(st.version, pipe)
            resp._wire_head = st.head
            # From here the reader's own waits enforce the read timeout; a reader that
            # pauses must not be blamed on the server.
            if st.timer is not None and st.body is None and st.upload is None:
                st.timer.cancel()
                st.timer = None
            if not req.resolve(resp):
                pipe.close()

    def _too_large(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Fail the connection if a header block is above ``max_header_list_size``,
        measured as HTTP/2 does (RFC 9113 §6.5.2: name, value and 32 per field). h11
        bounds only a head still incomplete; one that arrived whole in a single read
        is checked here."""
        limit = self.limits.max_header_list_size
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
        if size <= limit:
            return False
        err = ProtocolError(
            f"{self.label} sent a header block of {size} bytes, above the"
            f" max_header_list_size of {limit}"
        )
        err._head_error = ("too long", "")
        self._shutdown(err, lost=False)
        return True

    def _on_data(self, event: h11.Data) -> None:
        st = self._current()
        if st is None:
            return
        data = bytes(event.data)
        pipe = st.pipe
        if pipe is None:
            st.chunks.append(data)
            return
        if pipe.feed(data):
            st.unconsumed += len(data)
            if st.unconsumed >= self.limits.stream_window and self._reading:
                # A slow reader: stop reading the socket so TCP pushes back on the server
                # and memory stays bounded by about one stream window.
                self._reading = False
                self._set_events(self._events & ~selectors.EVENT_READ)

    def _on_end(self, event: h11.EndOfMessage) -> None:
        st = self._current()
        if st is None:
            return
        if event.headers and self._too_large(event.headers):
            return
        req = st.req
        self._drop_stream(st)
        trailers = Headers._from_raw(event.headers.raw_items()) if event.headers else None
        if st.pipe is not None:
            st.pipe.feed_eof(trailers)
        else:
            resp = st.buffered_response(st.version, trailers)
            resp._wire_head = st.head
            req.resolve(resp)
        self._next_cycle()

    def _next_cycle(self) -> None:
        """The response is complete: reuse the connection if both sides allow it."""
        if not self._reading:
            self._reading = True
            self._set_events(self._events | selectors.EVENT_READ)
            self.loop.call_soon_threadsafe(self._on_readable_again)
        h = self.h11
        self.idle_since = self.loop.now
        if (
            h.our_state is h11.DONE
            and h.their_state is h11.DONE
            and not self.draining
            # Bytes after the end of the response belong to no request: a HEAD or 204
            # answered with a body, or a server's garbage. The next response would be
            # read after them (and one exchange's bytes shown in another's error).
            and not h.trailing_data[0]
        ):
            try:
                h.start_next_cycle()
            except h11.LocalProtocolError:
                pass
            else:
                self.origin.on_slot_free(self)
                return
        # Connection: close, a body we had not finished sending (an early response), a
        # response delimited by EOF, or the client is closing.
        self._shutdown(ClientClosed(f"connection to {self.label} closed"), lost=False)

    def _on_closed_by_peer(self) -> None:
        if self.streams:
            self._lost(ConnectionLost(f"connection to {self.label} closed by the server"), None)
        else:
            self._shutdown(ClientClosed(f"connection to {self.label} closed"), lost=False)

    def _on_remote_error(self, exc: h11.RemoteProtocolError) -> None:
        if self._eof:
            # The server closed in the middle of a response (truncated body) or before
            # answering at all (the keep-alive race): a lost connection, not bad syntax.
            st = self._current()
            if st is not None and st.got_bytes and not st.status:
                lost = ConnectionLost(
                    f"connection to {self.label} closed by the server in the middle of the"
                    " response head"
                )
                lost._partial_response = True
            else:
                lost = ConnectionLost(f"connection to {self.label} closed by the server")
            self._lost(lost, exc)
            return
        # The exception text may quote received header values (cookies): only its type
        # at WARNING, the text at DEBUG.
        log.warning("protocol error on %s: %s", self.label, type(exc).__name__)
        log.debug("protocol error on %s: %s", self.label, exc)
        err = ProtocolError(f"HTTP/1.1 protocol error from {self.label}: {exc}")
        err.__cause__ = detached(exc)
        err._head_error = _head_error(str(exc))
        self._shutdown(err, lost=False)

    # -- completing and failing ----------------------------------------------------------------
    def _drop_stream(self, st: H1Stream) -> None:
        self.streams.pop(st.id, None)
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        st.body = None
        if st.upload is not None:
            st.upload.abort()  # releases a producer blocked on a full pipe
            st.upload = None
        if st.req.conn is self:
            st.req.conn = None

    def _fail_stream(self, st: H1Stream, exc: H2PoolError) -> None:
        """HTTP/1.1 cannot abandon one request and keep the connection: the request
        fails and the connection closes."""
        self._shutdown(exc, lost=False)

    def _on_read_timer(self, st: H1Stream) -> None:
        st.timer = None
        if self.streams.get(st.id) is not st:
            return
        read = st.req.timeout.read
        assert read is not None
        due = st.last_activity + read
        if due > self.loop.now:
            st.timer = self.loop.call_at(due, self._on_read_timer, st)
            return
        self._fail_stream(st, ReadTimeout(f"no response data from {self.label} for {read} s"))

    def _on_write_timer(self, st: H1Stream) -> None:
        st.timer = None
        if self.streams.get(st.id) is not st or (st.body is None and st.upload is None):
            return
        write = st.req.timeout.write
        assert write is not None
        due = st.last_activity + write
        if due > self.loop.now:
            st.timer = self.loop.call_at(due, self._on_write_timer, st)
            return
        self._fail_stream(st, WriteTimeout(f"request body made no progress for {write} s"))

    # -- from the pool and from readers ------------------------------------------------------
    def cancel(self, req: Request) -> None:
        """The caller cancelled. HTTP/1.1 has no RST_STREAM: close the connection."""
        st = self._current()
        if st is not None and st.req is req:
            self._fail_stream(st, ClientClosed("request cancelled"))

    def _ack(self, stream_id: int, nbytes: int) -> None:
        st = self.streams.get(stream_id)
        if st is None or self.closed:
            return
        st.unconsumed -= nbytes
        if not self._reading and st.unconsumed < self.limits.stream_window // 2:
            self._reading = True
            self._set_events(self._events | selectors.EVENT_READ)
            # Bytes may already wait inside the TLS layer, invisible to select().
            self._on_readable_again()

    def _reader_gone(self, stream_id: int, unread: int) -> None:
        st = self.streams.get(stream_id)
        if st is not None and not self.closed:
            # The rest of the body would have to be read and thrown away to reuse the
            # connection; closing costs one handshake and bounds the waste.
            self._fail_stream(st, ClientClosed("response closed before its end"))

    # -- connection end --------------------------------------------------------------------

    def _fact(self, st: H1Stream, lost: bool) -> Fact:
        """What is known about ``st`` as the connection ends (Go's
        ``shouldRetryRequest`` distinguishes the same cases)."""
        if st.got_bytes or st.status:
            return Fact.RESPONSE_BEGUN
        if not lost:
            return Fact.BROKEN
        if not self.out.possibly_sent(st.wire_start):
            return Fact.LOST_UNSENT
        if self.requests_started > 1:
            return Fact.KEEPALIVE_RACE  # the server closed it as idle while we sent
        return Fact.LOST_AFTER_SEND

    def _shutdown(self, err: H2PoolError, lost: bool) -> None:
        if self.closed:
            return
        streams = list(self.streams.values())
        self.streams.clear()
        self._close_socket()
        for st in streams:
            if st.timer is not None:
                st.timer.cancel()
                st.timer = None
            req = st.req
            req.conn = None
            upload, st.upload = st.upload, None  # the pool decides whether it can replay
            if self.origin.retry(req, self._fact(st, lost), err):
                continue
            if upload is not None:
                upload.abort()
            if st.pipe is not None:
                st.pipe.feed_error(err)
            req.fail(err)
        self.origin.on_conn_closed(self)

    def close(self) -> None:
        """Close now; a request still in flight fails with `ClientClosed`."""
        self._shutdown(ClientClosed(f"connection to {self.label} closed"), lost=False)

    def _close_socket(self) -> None:
        self.out.clear()
        super()._close_socket()
