"""A scripted HTTP/2 peer that writes raw frames, for protocol abuse no h2 server emits.

Thread model: one accept thread; per accepted connection one *script* thread that runs
``script(conn)`` and one *reader* thread that parses what the client sends and records
it. Frames are built with ``hyperframe.frame.*Frame(...).serialize()`` and header
blocks with an ``hpack.Encoder`` (like h2's own test FrameFactory); nothing checks that
what the script sends is legal, which is the point.

h2c with prior knowledge on 127.0.0.1:0 (or TLS with ``tls=``)::

    def script(conn):
        conn.greet()                                   # server SETTINGS (+ ACK theirs)
        sid, headers = conn.expect_request()
        conn.send_headers(sid, [(":status", "200")], end_stream=True)
        conn.stall()                                   # until the peer stops

    peer = RawPeer(script).start()
    ...
    peer.stop()

Verbs on :class:`RawConnection` (call them from the script; ``send*`` are safe from any
thread): ``greet(settings=..., ack=True)``, ``send(frame_or_bytes)``,
``send_headers(sid, headers, end_stream=, end_headers=)``, ``send_data``,
``send_settings``, ``respond``, ``expect(FrameClass)``, ``expect_request()``,
``pause_reading()``, ``stall()``, ``close()``. Every ``send`` returns ``False`` once the
connection is broken or the peer stops, so flood loops end by themselves. The reader
answers the client's PINGs unless the peer is made with ``ping_ack=False``.

Recorded, for assertions: ``RawConnection.frames`` (every frame received, in order),
``requests`` (decoded request header lists by stream id), ``received`` (bytes count),
``sent`` (bytes count); ``RawPeer.connections``, ``errors`` (exceptions raised by
scripts, other than the connection breaking).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Script = Callable[["RawConnection"], None]


def settings_frame(settings: dict[int, int] | None = None, ack: bool = False) -> SettingsFrame:
    f = SettingsFrame(0)
    if ack:
        f.flags.add("ACK")
    else:
        f.settings = dict(settings or {})
    return f


def raw_frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """Any frame, well-formed or not: a 9-byte header and ``payload``."""
    n = len(payload)
    return (
        n.to_bytes(3, "big")
        + bytes([ftype & 0xFF, flags & 0xFF])
        + (stream_id & 0xFFFFFFFF).to_bytes(4, "big")
        + payload
    )


class PeerStopped(Exception):
    """Raised inside a script when the peer is stopping or the connection broke."""


class RawConnection:
    """One accepted connection, driven by a script."""

    def __init__(self, peer: RawPeer, sock: socket.socket, index: int) -> None:
        self.peer = peer
        self.sock = sock
        self.index = index
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self.frames: list[Frame] = []
        self.requests: dict[int, list[tuple[str, str]]] = {}
        self.received = 0
        self.sent = 0
        self.preface_ok: bool | None = None
        self.eof = False  # the client closed (or the socket broke)
        self.broken = False  # a write failed
        self._wlock = threading.Lock()
        self._cond = threading.Condition()
        self._reading = threading.Event()
        self._reading.set()
        self._cursor = 0  # frames before this index were consumed by expect()

    # -- sending -----------------------------------------------------------

    def send(self, frame: Frame | bytes | bytearray) -> bool:
        """Write one frame (or raw bytes). ``False`` if the connection is broken."""
        data = frame.serialize() if isinstance(frame, Frame) else bytes(frame)
        with self._wlock:
            if self.broken or self.peer.stopping:
                return False
            try:
                self.sock.sendall(data)
            except (OSError, ValueError):
                self.broken = True
                with self._cond:
                    self._cond.notify_all()
                return False
            self.sent += len(data)
        return True

    def send_settings(self, settings: dict[int, int] | None = None, ack: bool = False) -> bool:
        return self.send(settings_frame(settings, ack))

    def greet(self, settings: dict[int, int] | None = None, ack: bool = True) -> bool:
        """The server preface (a SETTINGS frame), then an ACK of the client's SETTINGS."""
        ok = self.send_settings(settings)
        if ack:
            ok = self.send_settings(ack=True) and ok
        return ok

    def header_block(self, headers: Iterable[tuple[Any, Any]]) -> bytes:
        return self.encoder.encode(list(headers))

    def send_headers(
        self,
        stream_id: int,
        headers: Iterable[tuple[Any, Any]] = (),
        end_stream: bool = False,
        end_headers: bool = True,
        block: bytes | None = None,
        split: int = 16384,
    ) -> bool:
        """HEADERS (plus CONTINUATION frames when the block exceeds ``split`` bytes).

        ``block`` sends a ready HPACK block instead of encoding ``headers``; with
        ``end_headers=False`` the last frame lacks END_HEADERS.
        """
        data = self.header_block(headers) if block is None else block
        pieces = [data[i : i + split] for i in range(0, len(data), split)] or [b""]
        f = HeadersFrame(stream_id)
        f.data = pieces[0]
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers and len(pieces) == 1:
            f.flags.add("END_HEADERS")
        out = bytearray(f.serialize())
        for i, piece in enumerate(pieces[1:], 2):
            c = ContinuationFrame(stream_id)
            c.data = piece
            if end_headers and i == len(pieces):
                c.flags.add("END_HEADERS")
            out += c.serialize()
        return self.send(out)

    def send_continuation(self, stream_id: int, block: bytes, end_headers: bool = False) -> bool:
        f = ContinuationFrame(stream_id)
        f.data = block
        if end_headers:
            f.flags.add("END_HEADERS")
        return self.send(f)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        f = DataFrame(stream_id)
        f.data = data
        if end_stream:
            f.flags.add("END_STREAM")
        return self.send(f)

    def respond(
        self,
        stream_id: int,
        status: int | str = 200,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> bool:
        hdrs = [(":status", str(status)), ("content-length", str(len(body))), *headers]
        if not body:
            return self.send_headers(stream_id, hdrs, end_stream=True)
        return self.send_headers(stream_id, hdrs) and self.send_data(
            stream_id, body, end_stream=True
        )

    # -- receiving ---------------------------------------------------------

    def expect(self, frame_type: type[Frame] | None = None, timeout: float = 10.0) -> Frame:
        """The next received frame of ``frame_type`` (any type if None) not yet returned.

        Frames of other types are skipped (they stay in ``frames``). Raises
        :class:`PeerStopped` if the connection ends first, ``TimeoutError`` on timeout.
        """
        with self._cond:
            while True:
                while self._cursor < len(self.frames):
                    f = self.frames[self._cursor]
                    self._cursor += 1
                    if frame_type is None or isinstance(f, frame_type):
                        return f
                if self.eof or self.peer.stopping:
                    raise PeerStopped(f"connection {self.index} ended")
                if not self._cond.wait(timeout):
                    raise TimeoutError(f"no {frame_type} within {timeout} s")

    def expect_request(self, timeout: float = 10.0) -> tuple[int, list[tuple[str, str]]]:
        """Wait for the next request HEADERS; return (stream id, decoded headers)."""
        f = self.expect(HeadersFrame, timeout)
        with self._cond:
            if not self._cond.wait_for(lambda: f.stream_id in self.requests or self.eof, timeout):
                raise TimeoutError("request header block incomplete")
            if f.stream_id not in self.requests:
                raise PeerStopped("connection ended inside a header block")
            return f.stream_id, self.requests[f.stream_id]

    def wait_for(self, predicate: Callable[[RawConnection], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def frames_of(self, frame_type: type[Frame]) -> list[Frame]:
        with self._cond:
            return [f for f in self.frames if isinstance(f, frame_type)]

    def pause_reading(self) -> None:
        """Stop reading the socket (the reader may finish one ``recv`` in progress)."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def pace(self, seconds: float) -> bool:
        """Wait ``seconds`` (a script's pacing, e.g. a drip); False as soon as the
        connection ends or the peer stops, True otherwise."""
        with self._cond:
            self._cond.wait_for(lambda: self.eof or self.broken or self.peer.stopping, seconds)
            return not (self.eof or self.broken or self.peer.stopping)

    def stall(self) -> None:
        """Block until the peer stops or the client closes the connection."""
        with self._cond:
            self._cond.wait_for(lambda: self.eof or self.broken or self.peer.stopping)

    def close(self) -> None:
        """Drop the connection (both directions) at once."""
        with self._wlock:
            self.broken = True
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        with self._cond:
            self._cond.notify_all()

    def close_write(self) -> None:
        """Send FIN after everything written; keep reading."""
        with self._wlock:
            self.broken = True
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_WR)

    # -- the reader thread -------------------------------------------------

    def _read_loop(self) -> None:
        buf = bytearray()
        block: list[Frame] = []
        try:
            while not self.peer.stopping:
                self._reading.wait()
                if self.peer.stopping:
                    break
                try:
                    data = self.sock.recv(65536)
                except (OSError, ValueError):
                    break
                if not data:
                    break
                self.received += len(data)
                buf += data
                if self.preface_ok is None:
                    if len(buf) < len(PREFACE):
                        continue
                    self.preface_ok = bytes(buf[: len(PREFACE)]) == PREFACE
                    if not self.preface_ok:
                        break
                    del buf[: len(PREFACE)]
                parsed: list[Frame] = []
                at = 0
                while len(buf) - at >= 9:
                    f, length = Frame.parse_frame_header(memoryview(buf[at : at + 9]))
                    if len(buf) - at < 9 + length:
                        break
                    f.parse_body(memoryview(bytes(buf[at + 9 : at + 9 + length])))
                    at += 9 + length
                    parsed.append(f)
                del buf[:at]
                if parsed:
                    self._on_frames(parsed, block)
        except Exception as exc:
            self.peer._record_error(exc)
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def _on_frames(self, frames: list[Frame], block: list[Frame]) -> None:
        # One wake-up per recv(), not per frame: a flood of 100k tiny frames woke every
        # waiter 100k times, and each waiter's predicate scans ``frames``; with threads
        # switching every microsecond that quadratic cost took tens of seconds.
        if self.peer.ping_ack:
            for f in frames:
                if isinstance(f, PingFrame) and "ACK" not in f.flags:
                    ack = PingFrame(0)
                    ack.flags.add("ACK")
                    ack.opaque_data = f.opaque_data
                    self.send(ack)
        with self._cond:
            for f in frames:
                self.frames.append(f)
                if isinstance(f, (HeadersFrame, ContinuationFrame)):
                    block.append(f)
                    if "END_HEADERS" in f.flags:
                        data = b"".join(x.data for x in block)
                        sid = block[0].stream_id
                        block.clear()
                        headers = self.decoder.decode(data, raw=True)
                        self.requests[sid] = [
                            (n.decode("latin-1"), v.decode("latin-1")) for n, v in headers
                        ]
            self._cond.notify_all()


class RawPeer:
    """Listens on 127.0.0.1:0; runs ``script(conn)`` for every accepted connection."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
        ping_ack: bool = True,
    ) -> None:
        self.script = script or serve_ok
        self.ping_ack = ping_ack
        self.tls = tls
        self.rcvbuf = rcvbuf
        self.sndbuf = sndbuf
        self.connections: list[RawConnection] = []
        self.errors: list[BaseException] = []
        self.stopping = False
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:  # inherited by accepted sockets; must precede listen()
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> RawPeer:
        self._listener.listen(64)
        self._spawn(self._accept_loop, "rawpeer-accept")
        return self

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with self._cond:
            conns = list(self.connections)
            socks = list(self._socks)
        for conn in conns:
            conn._reading.set()  # wake a paused reader so it sees ``stopping``
            with conn._cond:
                conn._cond.notify_all()
        for s in socks:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(s, socket.SHUT_RDWR)
        for t in list(self._threads):
            t.join(10)
        with contextlib.suppress(OSError):
            self._listener.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"rawpeer threads did not stop: {alive}")

    def __enter__(self) -> RawPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_connections(self, n: int, timeout: float = 10.0) -> list[RawConnection]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.connections) >= n, timeout):
                raise AssertionError(f"{len(self.connections)} connections, wanted {n}")
            return list(self.connections)

    def _record_error(self, exc: BaseException) -> None:
        with self._cond:
            self.errors.append(exc)

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._cond:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        index = 0
        while not self.stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            if self.stopping:
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.sndbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            with self._cond:
                self._socks.append(sock)
            self._spawn(self._serve, f"rawpeer-conn-{index}", sock, index)
            index += 1

    def _serve(self, sock: socket.socket, index: int) -> None:
        if self.tls is not None:
            try:
                sock.settimeout(10)
                tls_sock = self.tls.wrap_socket(sock, server_side=True)
                tls_sock.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                self._record_error(exc)
                return
            with self._cond:
                self._socks.append(tls_sock)
            sock = tls_sock
        conn = RawConnection(self, sock, index)
        with self._cond:
            if self.stopping:
                return
            self.connections.append(conn)
            self._cond.notify_all()
        self._spawn(conn._read_loop, f"rawpeer-read-{index}")
        try:
            self.script(conn)
        except PeerStopped:
            pass
        except Exception as exc:
            if not (conn.broken or conn.eof or self.stopping):
                self._record_error(exc)


def serve_ok(conn: RawConnection) -> None:
    """Default script: greet, then answer every request 200 ``Hello, world!``."""
    conn.greet()
    while True:
        sid, _ = conn.expect_request()
        conn.respond(sid, 200, b"Hello, world!")


def hostile_first(script: Script) -> Script:
    """Run ``script`` on the first connection only; later ones get :func:`serve_ok`, so a
    test can check that the client recovers on a fresh connection."""

    def run(conn: RawConnection) -> None:
        if conn.index == 0:
            script(conn)
        else:
            serve_ok(conn)

    return run
