"""A scripted HTTP/2 server peer, for behaviour real servers cannot be made to show.

Thread model: one accept thread, plus one thread per accepted connection that
owns that socket and its ``h2.connection.H2Connection``. Handlers run on the
connection thread. A test thread may also drive a connection (release a
stalled stream, send GOAWAY) through the verbs on :class:`PeerConnection`:
each verb takes the connection's lock, which guards the h2 state and the
socket writes and is never held while blocking on a read.

What the peer does is chosen per request path with a *route*: either a verb
string or a callable ``handler(conn, stream_id, request)``::

    peer = H2Peer(routes={"/stall": "stall_headers", "/fast": "respond_13b"})

Verb strings:

``respond_13b`` (alias ``fast``)
    200 with ``b"Hello, world!"``.
``bytes:<n>``
    200 with ``n`` deterministic bytes (flow-controlled).
``stall_headers`` (alias ``stall``)
    never answer.
``stall_body``
    send 200 headers with ``content-length: 13`` and then nothing.
``rst:<code>``
    RST_STREAM with an int code or an ``ErrorCodes`` name (``rst:CANCEL``).
``goaway_after:<n>``
    answer like ``respond_13b``; on the n-th request of a connection, send
    GOAWAY(last_stream_id = that stream, NO_ERROR) and close the connection.
``close``
    drop the TCP connection at once.
``echo``
    200 with the request body.

Whole-peer modes (``mode=``): ``"h2"`` (default), ``"silent"`` (accept TCP and
never send a byte, not even a TLS handshake) and ``"no_accept"`` (listen with a
backlog and never call ``accept``: the kernel completes the TCP handshake, the
client then waits forever for the first byte).

The peer records what it saw, for assertions: ``requests`` (every request, in
arrival order), ``resets`` (RST_STREAM frames received), ``goaways`` (GOAWAY
frames received), ``settings_acks`` (the client applied our SETTINGS),
``connections`` (accepted connections), ``pings`` (conn_index of each PING
received, ACKs excluded) and ``errors`` (exceptions in handlers or h2).
:meth:`H2Peer.wait_for` blocks on a condition over these instead of sleeping.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Union

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

HELLO = b"Hello, world!"

Handler = Callable[["PeerConnection", int, "Request"], None]
Route = Union[str, Handler]  # a runtime alias: "str | Handler" fails on 3.10


@dataclass
class Request:
    """One request as the peer received it."""

    conn_index: int  # which accepted connection (0-based)
    stream_id: int
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # END_STREAM seen

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def method(self) -> str:
        return self.header(":method") or ""

    @property
    def path(self) -> str:
        return self.header(":path") or ""


@dataclass(frozen=True)
class Reset:
    conn_index: int
    stream_id: int
    error_code: int


@dataclass(frozen=True)
class GoAway:
    conn_index: int
    last_stream_id: int
    error_code: int


def deterministic_bytes(n: int) -> bytes:
    """``n`` bytes that depend only on ``n``: sha256 counter-mode blocks."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


def _error_code(text: str) -> int:
    if text.isdigit():
        return int(text)
    return int(h2.errors.ErrorCodes[text.upper()])


class PeerConnection:
    """One accepted connection. Verbs may be called from any thread."""

    def __init__(self, peer: H2Peer, sock: socket.socket, index: int) -> None:
        self.peer = peer
        self.sock = sock
        self.index = index
        self.lock = threading.RLock()  # guards h2, _pending, socket writes; never held on recv
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        if peer.settings:
            values = {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: (
                    self.h2.DEFAULT_MAX_HEADER_LIST_SIZE
                ),
                **peer.settings,
            }
            # Replace rather than update_settings(): the values must be in the
            # very first SETTINGS frame, before the client opens any stream.
            self.h2.local_settings = h2.settings.Settings(client=False, initial_values=values)
        self._pending: dict[int, tuple[bytearray, bool]] = {}  # stream -> (data, end_stream)
        self._streams: dict[int, Request] = {}
        self.request_count = 0
        self.closed = False  # the connection thread stops reading
        self.write_closed = False  # FIN sent: write nothing more

    # -- verbs -------------------------------------------------------------

    def send_headers(
        self,
        stream_id: int,
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
        end_stream: bool = False,
    ) -> None:
        with self.lock:
            self.h2.send_headers(
                stream_id, [(":status", str(status)), *headers], end_stream=end_stream
            )
            self._flush_locked()

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue body bytes; they go out as the client grants flow-control window."""
        with self.lock:
            buf, _ = self._pending.get(stream_id, (bytearray(), False))
            buf += data
            self._pending[stream_id] = (buf, end_stream)
            self._pump_locked()

    def respond(
        self,
        stream_id: int,
        status: int = 200,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        hdrs = [("content-length", str(len(body))), *headers]
        if body:
            self.send_headers(stream_id, status, hdrs)
            self.send_data(stream_id, body, end_stream=True)
        else:
            self.send_headers(stream_id, status, hdrs, end_stream=True)

    def reset(self, stream_id: int, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        with self.lock:
            self._pending.pop(stream_id, None)
            self.h2.reset_stream(stream_id, error_code)
            self._flush_locked()

    def goaway(
        self, error_code: int = h2.errors.ErrorCodes.NO_ERROR, last_stream_id: int | None = None
    ) -> None:
        with self.lock:
            self.h2.close_connection(error_code=error_code, last_stream_id=last_stream_id)
            self._flush_locked()

    def raw_goaway(
        self, last_stream_id: int, error_code: int = h2.errors.ErrorCodes.NO_ERROR
    ) -> None:
        """Write a GOAWAY frame without telling h2.

        h2 closes its own state machine when it sends GOAWAY, after which it
        refuses to answer the streams the GOAWAY promised to finish; a raw
        frame lets the peer keep serving them, as nginx does.
        """
        frame = hyperframe.frame.GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = error_code
        with self.lock:
            self._flush_locked()
            if not self.write_closed:
                try:
                    self.sock.sendall(frame.serialize())
                except OSError:
                    self.write_closed = True

    def ping(self, opaque: bytes = b"h2peer!!") -> None:
        with self.lock:
            self.h2.ping(opaque)
            self._flush_locked()

    def update_settings(self, values: dict[int, int]) -> None:
        with self.lock:
            self.h2.update_settings(values)
            self._flush_locked()

    def close(self, graceful: bool = False) -> None:
        """Close the connection, waking the connection thread.

        ``graceful``: send FIN after what was written and keep reading until
        the client closes too, so nothing it has in flight provokes an RST.
        Otherwise shut down both directions at once.
        """
        with self.lock:
            self.write_closed = True
            if not graceful:
                self.closed = True
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_WR if graceful else socket.SHUT_RDWR)

    # -- internals (lock held) ---------------------------------------------

    def _flush_locked(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.write_closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.write_closed = True

    def _pump_locked(self) -> None:
        for stream_id in list(self._pending):
            buf, end = self._pending[stream_id]
            try:
                while buf:
                    window = min(
                        self.h2.local_flow_control_window(stream_id),
                        self.h2.max_outbound_frame_size,
                    )
                    if window <= 0:
                        break
                    chunk = bytes(buf[:window])
                    del buf[:window]
                    self.h2.send_data(stream_id, chunk)
                if not buf:
                    del self._pending[stream_id]
                    if end:
                        self.h2.end_stream(stream_id)
            except (h2.exceptions.StreamClosedError, KeyError):
                self._pending.pop(stream_id, None)
        self._flush_locked()

    # -- the connection thread ---------------------------------------------

    def run(self) -> None:
        try:
            with self.lock:
                self.h2.initiate_connection()
                self._flush_locked()
            while not self.closed:
                try:
                    data = self.sock.recv(65536)
                except (OSError, ValueError):
                    break
                if not data:
                    break
                with self.lock:
                    try:
                        events = self.h2.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        self.peer._record_error(exc)
                        self._flush_locked()
                        break
                    for event in events:
                        self._on_event(event)
                    self._flush_locked()
        except Exception as exc:
            self.peer._record_error(exc)
        finally:
            self.closed = self.write_closed = True
            with contextlib.suppress(OSError):
                self.sock.close()
            self.peer._notify()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            headers = [
                (
                    k.decode() if isinstance(k, bytes) else k,
                    v.decode() if isinstance(v, bytes) else v,
                )
                for k, v in event.headers
            ]
            req = Request(self.index, event.stream_id, headers)
            self._streams[event.stream_id] = req
            self.request_count += 1
            self.peer._record_request(req)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            req = self._streams.get(event.stream_id)
            if req is not None and event.data:
                req.body += event.data
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            req = self._streams.get(event.stream_id)
            if req is not None:
                req.complete = True
                self._dispatch(req)
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            self._pending.pop(event.stream_id, None)
            if event.remote_reset:
                self.peer._record_reset(
                    Reset(self.index, event.stream_id, int(event.error_code or 0))
                )
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._pump_locked()
        elif isinstance(event, h2.events.SettingsAcknowledged):
            # The client has applied our SETTINGS (it acks only after that).
            self.peer._record_settings_ack(self.index)
        elif isinstance(event, h2.events.PingReceived):
            self.peer._record_ping(self.index)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.peer._record_goaway(
                GoAway(self.index, int(event.last_stream_id or 0), int(event.error_code or 0))
            )

    def _dispatch(self, req: Request) -> None:
        route = self.peer.route_for(req.path)
        try:
            if callable(route):
                route(self, req.stream_id, req)
            else:
                self._run_verb(route, req)
        except Exception as exc:
            self.peer._record_error(exc)

    def _run_verb(self, verb: str, req: Request) -> None:
        name, _, arg = verb.partition(":")
        sid = req.stream_id
        if name in ("respond_13b", "fast"):
            self.respond(sid, 200, HELLO)
        elif name == "bytes":
            self.respond(sid, 200, deterministic_bytes(int(arg)))
        elif name in ("stall_headers", "stall"):
            pass
        elif name == "stall_body":
            self.send_headers(sid, 200, [("content-length", str(len(HELLO)))])
        elif name == "rst":
            self.reset(sid, _error_code(arg or "INTERNAL_ERROR"))
        elif name == "goaway_after":
            self.respond(sid, 200, HELLO)
            if self.request_count >= int(arg):
                self.goaway(last_stream_id=sid)
                self.close(graceful=True)
        elif name == "close":
            self.close()
        elif name == "echo":
            self.respond(sid, 200, bytes(req.body))
        else:
            raise ValueError(f"unknown h2peer verb {verb!r}")


class H2Peer:
    """A scripted h2 server on 127.0.0.1:0 (h2c with prior knowledge, or TLS)."""

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        default: Route = "respond_13b",
        *,
        tls: ssl.SSLContext | None = None,
        settings: dict[int, int] | None = None,
        mode: str = "h2",
    ) -> None:
        if mode not in ("h2", "silent", "no_accept"):
            raise ValueError(f"unknown mode {mode!r}")
        self.routes: dict[str, Route] = dict(routes or {})
        self.default = default
        self.tls = tls
        self.settings = dict(settings or {})
        self.mode = mode
        self.requests: list[Request] = []
        self.resets: list[Reset] = []
        self.goaways: list[GoAway] = []
        self.errors: list[BaseException] = []
        self.settings_acks: list[int] = []  # conn_index of each SETTINGS ACK received
        self.pings: list[int] = []  # conn_index of each PING received (not ACKs)
        self.connections: list[PeerConnection] = []
        self._raw_socks: list[socket.socket] = []  # accepted sockets of "silent" mode
        self._cond = threading.Condition()  # guards the lists above
        self._threads: list[threading.Thread] = []
        self._accepted = 0  # owned by the accept thread
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> H2Peer:
        self._listener.listen(128)
        if self.mode != "no_accept":
            self._spawn(self._accept_loop, "h2peer-accept")
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        for t in list(self._threads):
            if t.name == "h2peer-accept":
                t.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._cond:
            conns = list(self.connections)
            raw = list(self._raw_socks)
        for conn in conns:
            conn.close()
        for s in raw:
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(5)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"h2peer threads did not stop: {alive}")

    def __enter__(self) -> H2Peer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def h2c_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def route_for(self, path: str) -> Route:
        return self.routes.get(path.split("?", 1)[0], self.default)

    # -- waiting -----------------------------------------------------------

    def wait_for(self, predicate: Callable[[H2Peer], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(self)`` is true (re-checked on each event)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        if not self.wait_for(lambda p: len(p.requests) >= n, timeout):
            raise AssertionError(f"peer saw {len(self.requests)} requests, wanted {n}")
        with self._cond:
            return list(self.requests)

    def requests_for(self, path: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.path == path]

    # -- recording (any thread) --------------------------------------------

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _record_request(self, req: Request) -> None:
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def _record_reset(self, reset: Reset) -> None:
        with self._cond:
            self.resets.append(reset)
            self._cond.notify_all()

    def _record_goaway(self, goaway: GoAway) -> None:
        with self._cond:
            self.goaways.append(goaway)
            self._cond.notify_all()

    def _record_settings_ack(self, index: int) -> None:
        with self._cond:
            self.settings_acks.append(index)
            self._cond.notify_all()

    def _record_ping(self, index: int) -> None:
        with self._cond:
            self.pings.append(index)
            self._cond.notify_all()

    def _record_error(self, exc: BaseException) -> None:
        with self._cond:
            self.errors.append(exc)
            self._cond.notify_all()

    # -- threads -----------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            if self._stopping.is_set():
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.mode == "silent":
                self._accepted += 1
                with self._cond:
                    self._raw_socks.append(sock)
                    self._cond.notify_all()
                continue
            index = self._accepted
            self._accepted += 1
            self._spawn(self._serve, f"h2peer-conn-{index}", sock, index)

    def _serve(self, sock: socket.socket, index: int) -> None:
        if self.tls is not None:
            try:
                sock.settimeout(10)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                self._record_error(exc)
                sock.close()
                return
        conn = PeerConnection(self, sock, index)
        with self._cond:
            if self._stopping.is_set():
                sock.close()
                return
            self.connections.append(conn)
            self._cond.notify_all()
        conn.run()


def server_tls_context(ca: object, *hostnames: str) -> ssl.SSLContext:
    """A server-side TLS context with ALPN h2, a leaf from the trustme ``ca``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(hostnames or ("localhost", "127.0.0.1"))).configure_cert(ctx)  # type: ignore[attr-defined]
    ctx.set_alpn_protocols(["h2"])
    return ctx
