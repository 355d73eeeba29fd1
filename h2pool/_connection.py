"""What the pool sees of a connection, and what both connection kinds share.

The pool (``_pool.py``) talks to HTTP/2 (``_http2/connection.py``) and HTTP/1.1
(``_http11.py``) connections only through `Connection`; a connection talks
back only through `Origin`. Both kinds build on `ConnectionBase`: the
lifecycle (`ConnState`, a transition table), the output buffer with its
"possibly sent" accounting (`OutputBuffer`), per-request bookkeeping
(`StreamRecord`) and the request-body length check.

Everything here runs on the I/O thread, except ``post_consumed``/``post_cancel``,
which streamed-response readers call and which only post work to the I/O thread.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypedDict, TypeVar

from ._errors import H2PoolError, ProtocolError, RequestBodyError, detached
from ._headers import Headers
from ._response import Response
from ._sockio import direct_tls, read_probe, send_some

if TYPE_CHECKING:
    from ._config import Limits
    from ._loop import IOLoop
    from ._request import Request
    from ._retry import Fact
    from ._stream import BodyPipe, UploadPipe

log = logging.getLogger("h2pool")

__all__ = [
    "BY_REFERENCE_MIN",
    "ConnState",
    "Connection",
    "ConnectionBase",
    "ConnectionInfo",
    "IllegalTransition",
    "Origin",
    "OutputBuffer",
    "StreamRecord",
    "by_reference",
    "take_upload",
]


class ConnState(enum.Enum):
    """A connection's lifecycle. ``OPEN`` and ``HANDSHAKE`` take new requests."""

    #: HTTP/2: our preface is out, the server's SETTINGS have not arrived yet. Requests
    #: may start (RFC 9113 §3.4 lets the client send at once) within assumed limits.
    HANDSHAKE = "handshake"
    OPEN = "open"
    #: No new requests: GOAWAY received or sent, ``Connection: close``, the client is
    #: closing. Requests already on the connection finish.
    DRAINING = "draining"
    CLOSED = "closed"


# Every allowed transition; any pair not listed is a bug (like h2's state machine).
# Staying in the same state is always allowed and is not a transition.
TRANSITIONS: frozenset[tuple[ConnState, ConnState]] = frozenset(
    [
        (ConnState.HANDSHAKE, ConnState.OPEN),
        (ConnState.HANDSHAKE, ConnState.DRAINING),
        (ConnState.HANDSHAKE, ConnState.CLOSED),
        (ConnState.OPEN, ConnState.DRAINING),
        (ConnState.OPEN, ConnState.CLOSED),
        (ConnState.DRAINING, ConnState.CLOSED),
    ]
)


class IllegalTransition(RuntimeError):
    """A connection was asked to move between states the table does not allow."""


class ConnectionInfo(TypedDict):
    """Per-connection state in ``Client.stats()["per_origin"][...]["connections"]``."""

    http_version: str
    active_streams: int
    resetting_streams: int
    max_streams: int
    stream_window: int  # the receive window new streams get now (grows on long links)
    goaway_received: bool
    idle_since: float | None
    requests: int
    bytes_sent: int
    bytes_received: int
    peer: str  # "address:port" the socket is connected to (the proxy's when tunnelled)
    tls_version: str | None  # "TLSv1.3", or None in cleartext
    tls_cipher: str | None


class Origin(Protocol):
    """What a connection may call on its pool entry (all calls on the I/O thread)."""

    @property
    def stall_timeout(self) -> float | None:
        """Close a connection whose socket writes make no progress this long."""
        ...

    def on_slot_free(self, conn: Connection) -> None:
        """A request slot may have opened (a stream ended, limits rose, SETTINGS)."""

    def on_conn_closed(self, conn: Connection) -> None:
        """The connection is closed; every request on it has been settled."""

    @property
    def peer_max_streams(self) -> int | None:
        """The MAX_CONCURRENT_STREAMS this origin's last HTTP/2 SETTINGS announced
        (None before any): a new connection assumes it until its own SETTINGS arrive."""
        ...

    def remember_peer_settings(self, max_streams: int) -> None:
        """A connection received SETTINGS: remember them for the next connection."""

    def retry(self, req: Request, fact: Fact, cause: H2PoolError) -> bool:
        """``req`` could not complete here for the reason ``fact``. True: the pool has
        taken it back (sent again, or failed it itself). False: the connection fails it
        with ``cause``. The decision is `h2pool._retry.RetryPolicy.judge`'s."""
        ...


class Connection(Protocol):
    """What the pool may call and read on a connection (I/O thread only)."""

    label: str
    idle_since: float

    @property
    def http_version(self) -> str: ...
    @property
    def streams(self) -> Mapping[int, StreamRecord]: ...
    @property
    def state(self) -> ConnState: ...
    @property
    def closed(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    @property
    def free_slots(self) -> int:
        """How many more requests ``start`` may be given now."""
        ...

    @property
    def bytes_sent(self) -> int: ...
    @property
    def bytes_received(self) -> int: ...
    @property
    def resets_sent(self) -> int: ...

    def start(self, req: Request) -> None:
        """Send ``req``; the caller checked ``free_slots``."""

    def cancel(self, req: Request) -> None:
        """The caller cancelled ``req``: stop it and free its slot."""

    def drain(self) -> None:
        """Take no new requests; close once the ones in flight have finished."""

    def close(self) -> None:
        """Close now; requests still in flight fail with ``ClientClosed``."""

    def abort(self, exc: BaseException) -> None:
        """The I/O thread is dying: fail every request with ``exc``, close the socket,
        call back nobody."""

    def describe(self) -> ConnectionInfo: ...


# Request-body payloads from this size on are queued by reference (see OutputBuffer).
# Each costs one short TLS record (whatever precedes it, ending with its frame header
# or chunk size line) and so one more send(); copying 64 KiB costs about as much.
BY_REFERENCE_MIN = 64 * 1024


def by_reference(data: bytes | memoryview) -> memoryview | None:
    """``data`` as a view the output buffer may keep, if it is large and immutable
    (bytes, or a view of bytes: the caller's bytearray or memoryview was copied into
    bytes when the request was built, so later writes to it cannot reach the wire)."""
    if len(data) < BY_REFERENCE_MIN:
        return None
    if type(data) is bytes:
        return memoryview(data)
    if type(data) is memoryview and type(data.obj) is bytes:
        return data
    return None


class OutputBuffer:
    """Bytes generated for the socket and not yet sent, and how far sending got.

    ``written`` counts bytes the kernel took; ``written_hi`` bytes that *may* have
    reached it (a TLS ``send`` that raised may have put whole records in the kernel,
    see ``_sockio``). A request whose first byte lies at or beyond both was provably
    never sent, and only then may it be retried after a connection loss.

    The bytes are ``data[pos:]`` followed by the chunks of ``tail``. A large request-body
    payload arrives as a read-only view of the caller's immutable bytes and is queued
    there by reference: copying it into one buffer was one pass over every uploaded
    byte (half of the process's ``memmove`` on a 64 MiB upload, ``perf``), on top of
    the copies TLS and the kernel make anyway. Small pieces are still copied together,
    so small frames keep going out as full TLS records, one ``send()`` each.
    """

    __slots__ = (
        "cap",
        "data",
        "generated",
        "pos",
        "tail",
        "tail_bytes",
        "tls",
        "written",
        "written_hi",
    )

    def __init__(self, tls: bool, cap: int) -> None:
        self.data: bytearray | memoryview = bytearray()
        self.pos = 0  # data[:pos] is sent; compacted when it passes ``cap``
        self.tail: deque[bytearray | memoryview] = deque()  # what follows ``data``
        self.tail_bytes = 0
        self.cap = cap
        self.tls = tls
        self.written = 0
        self.written_hi = 0
        self.generated = 0  # bytes ever appended: a request's offset on the wire

    @property
    def pending(self) -> int:
        return len(self.data) - self.pos + self.tail_bytes

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``. A bytearray is taken over (the caller must not touch it
        again), and a memoryview is kept by reference: it must view immutable bytes."""
        n = len(data)
        if not n:
            return
        self.generated += n
        if self.pos >= len(self.data):
            # Nothing pending (``send`` moves on to the tail as each chunk is done).
            if type(data) is bytearray or type(data) is memoryview:
                self.data = data  # taken, no copy
            elif type(self.data) is bytearray:
                self.data += data
            else:
                self.data = bytearray(data)
            self.pos = 0
            return
        tail = self.tail
        if type(data) is memoryview:
            tail.append(data)
        elif not tail and type(self.data) is bytearray:
            self.data += data
            return
        elif tail and type(tail[-1]) is bytearray:
            tail[-1] += data
        else:
            tail.append(data if type(data) is bytearray else bytearray(data))
        self.tail_bytes += n

    def send(self, sock: socket.socket) -> tuple[int, OSError | None]:
        """Send as much as the socket takes: (bytes sent, error)."""
        total = 0
        tail = self.tail
        while True:
            data = self.data
            start = self.pos
            pos, hi, error = send_some(sock, data, start, self.tls)
            self.written_hi = max(self.written_hi, self.written + hi - start)
            sent = pos - start
            self.written += sent
            total += sent
            if pos < len(data):
                if pos > self.cap and type(data) is bytearray:
                    del data[:pos]
                    pos = 0
                self.pos = pos
                return total, error
            self.pos = 0
            if not tail:
                if type(data) is bytearray:
                    data.clear()
                else:
                    self.data = bytearray()  # let the caller's bytes go
                return total, error
            self.data = nxt = tail.popleft()
            self.tail_bytes -= len(nxt)
            if error is not None:
                return total, error

    def possibly_sent(self, offset: int) -> bool:
        """Whether any byte at ``offset`` or later may have reached the kernel."""
        return max(self.written, self.written_hi) > offset

    def clear(self) -> None:
        self.data = bytearray()
        self.pos = 0
        self.tail.clear()
        self.tail_bytes = 0


class StreamRecord:
    """What every connection kind keeps per request in flight (I/O thread only):
    the response as it arrives and the request body as it leaves."""

    __slots__ = (
        "body",
        "body_pos",
        "chunks",
        "headers",
        "headers_at",
        "id",
        "last_activity",
        "pipe",
        "req",
        "status",
        "upload",
    )

    def __init__(self, sid: int, req: Request, now: float) -> None:
        self.id = sid
        self.req = req
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.headers_at = 0.0  # loop time the response headers arrived (Response.elapsed)
        self.chunks: list[bytes] = []
        self.pipe: BodyPipe | None = None
        self.body: memoryview | None = None
        self.body_pos = 0
        self.upload: UploadPipe | None = req.upload
        self.last_activity = now

    def streamed_response(self, http_version: str, pipe: BodyPipe) -> Response:
        """The Response handed out when the headers arrive; its body follows by ``pipe``."""
        assert self.headers is not None
        return Response._from_wire(
            self.status,
            Headers._from_raw(self.headers),
            http_version,
            None,
            pipe,
            None,
            self.req,
            self.headers_at,
        )

    def buffered_response(self, http_version: str, trailers: Headers | None) -> Response:
        """The Response of a completed, buffered exchange."""
        assert self.headers is not None
        chunks = self.chunks
        return Response._from_wire(
            self.status,
            Headers._from_raw(self.headers),
            http_version,
            chunks[0] if len(chunks) == 1 else b"".join(chunks),
            None,
            trailers,
            self.req,
            self.headers_at,
        )


def take_upload(
    pipe: UploadPipe, limit: int
) -> tuple[bytes | memoryview, bool, RequestBodyError | None]:
    """Up to ``limit`` bytes of a streamed request body: (data, at end, error). The error
    is the producer's own (chained) or a body that disagrees with its Content-Length
    (never send more than declared: RFC 9110 §8.6)."""
    data, end, error = pipe.take(limit)
    if error is not None:
        err = RequestBodyError(f"reading the request body failed: {error!r}")
        err.__cause__ = error
        return b"", True, err
    declared = pipe.declared_length
    if declared is not None and (pipe.taken > declared or (end and pipe.taken != declared)):
        longer = "longer" if pipe.taken > declared else "shorter"
        msg = f"request body is {longer} than its Content-Length {declared}"
        return b"", True, RequestBodyError(msg)
    return data, end, None


S = TypeVar("S", bound=StreamRecord)


class ConnectionBase(Generic[S]):
    """The state and plumbing both connection kinds share. I/O thread only.

    A subclass names its protocol, first state and output cap as class attributes and
    sets up its own state in ``_setup``."""

    http_version: ClassVar[str]
    initial_state: ClassVar[ConnState]
    out_cap: ClassVar[int]  # unsent bytes above which no more is generated

    def __init__(
        self, loop: IOLoop, origin: Origin, sock: socket.socket, limits: Limits, label: str
    ) -> None:
        self.loop = loop
        self.origin = origin
        self.sock = sock
        # After a short read: does another read have anything to take? (_sockio)
        self._more_waiting = read_probe(sock)
        # The socket whose TLS object the read paths call directly, or None (_sockio).
        self._tls_sock = direct_tls(sock)
        self.label = label
        self.limits = limits
        self._state = self.initial_state
        # Derived from the state by _move_to; plain attributes because the hot paths
        # read them several times per request (a property call each time was measured).
        self.closed = False
        self.draining = self.initial_state is not ConnState.OPEN and (
            self.initial_state is not ConnState.HANDSHAKE
        )
        self.streams: dict[int, S] = {}
        self.out = OutputBuffer(isinstance(sock, ssl.SSLSocket), self.out_cap)
        self.idle_since = loop.now
        self.bytes_received = 0
        self.requests_started = 0
        self.resets_sent = 0
        self.goaway_received = False
        # Read once: fixed for the connection's life, and stats() must not do syscalls.
        try:
            peer = sock.getpeername()
            host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
            self._peer = f"{host}:{peer[1]}"
        except (OSError, IndexError, TypeError):
            self._peer = ""
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            self._tls: tuple[str | None, str | None] = (
                sock.version(),
                cipher[0] if cipher else None,
            )
        else:
            self._tls = (None, None)
        self._setup()

    def _setup(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"<{kind} {self.label} streams={len(self.streams)} {self._state.name}>"

    max_streams = 1  # concurrent requests the peer allows now

    @property
    def resetting_streams(self) -> int:
        return 0

    @property
    def stream_window(self) -> int:
        return self.limits.stream_window

    def describe(self) -> ConnectionInfo:
        """Per-connection state for ``Client.stats()`` (like Go's ClientConnState)."""
        return {
            "http_version": self.http_version,
            "active_streams": len(self.streams),
            "resetting_streams": self.resetting_streams,
            "max_streams": self.max_streams,
            "stream_window": self.stream_window,
            "goaway_received": self.goaway_received,
            "idle_since": None if self.streams else self.idle_since,
            "requests": self.requests_started,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "peer": self._peer,
            "tls_version": self._tls[0],
            "tls_cipher": self._tls[1],
        }

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def state(self) -> ConnState:
        return self._state

    def _move_to(self, new: ConnState) -> None:
        old = self._state
        if old is not new:
            if (old, new) not in TRANSITIONS:
                raise IllegalTransition(f"{self!r}: {old.name} -> {new.name}")
            self._state = new
            self.closed = new is ConnState.CLOSED
            # No new requests: draining or closed.
            self.draining = new is not ConnState.OPEN and new is not ConnState.HANDSHAKE

    @property
    def bytes_sent(self) -> int:
        return self.out.written

    # -- from readers (any thread: these only post) ------------------------------------------
    def post_consumed(self, stream_id: int, nbytes: int) -> None:
        """Reader thread: ``nbytes`` of a streamed body were consumed."""
        self.loop.call_soon_threadsafe(self._ack, stream_id, nbytes)

    def post_cancel(self, stream_id: int, unread: int) -> None:
        """Reader thread: the reader went away before the end of the body."""
        self.loop.call_soon_threadsafe(self._reader_gone, stream_id, unread)

    def _ack(self, stream_id: int, nbytes: int) -> None:
        raise NotImplementedError

    def _reader_gone(self, stream_id: int, unread: int) -> None:
        raise NotImplementedError

    # -- the end ----------------------------------------------------------------------------
    def drain(self) -> None:
        """No new requests (the client is closing); close once those in flight end."""
        if self.closed:
            return
        self._move_to(ConnState.DRAINING)
        if not self.streams:
            self.close()

    def close(self) -> None:
        raise NotImplementedError

    def _shutdown(self, err: H2PoolError, lost: bool) -> None:
        """Close and settle every request: each reports its ``Fact`` to the pool
        (``lost``: the connection failed under us, so unsent requests may go again)."""
        raise NotImplementedError

    def _lost(self, err: H2PoolError, cause: BaseException | None) -> None:
        if cause is not None:
            err.__cause__ = detached(cause)
        log.info("connection %s lost: %s", self.label, err)
        self._shutdown(err, lost=True)

    def fail_internal(self, exc: BaseException) -> None:
        """A bug in our own handling (``IOLoop._contain``): fail this connection's
        requests, keep the loop."""
        err = ProtocolError(f"internal error on connection {self.label}: {exc!r}")
        err.__cause__ = exc
        self._shutdown(err, lost=False)

    def _close_socket(self) -> None:
        """Mark closed, unregister and close the socket (the first step of every end)."""
        self._move_to(ConnState.CLOSED)
        with contextlib.suppress(KeyError, ValueError):
            self.loop.selector.unregister(self.sock)
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self, exc: BaseException) -> None:
        """The I/O thread is dying: fail every request with ``exc``, close the socket."""
        records = list(self.streams.values())
        self.streams.clear()
        for st in records:
            if st.pipe is not None:
                st.pipe.feed_error(exc)
            st.req.fail(exc)
        with contextlib.suppress(OSError):
            self.sock.close()
