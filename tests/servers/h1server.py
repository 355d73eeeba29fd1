"""A scripted HTTP/1.1 server on h11, for what nginx cannot show (body echo with chunked
uploads, silent keep-alive drops, truncated or malformed responses).

Thread model: one accept thread plus one thread per connection that owns its socket
and ``h11.Connection``. Behaviour is chosen per request path::

    server = H1Server(tls=ctx).start()   # or tls=None for cleartext

``/hello``          200 with ``Hello, world!``
``/bytes/<n>``      200 with n deterministic bytes
``/echo``           200 with the request body; ``x-body-sha256``, ``x-request-te`` and
                    ``x-request-cl`` tell what arrived
``/stale``          200 with hello; the *next* request on that connection is dropped
                    (the connection closes without a response), like a server that
                    closed an idle keep-alive connection while the request was on its way
``/close-after``    200 with hello, then close without ``Connection: close``
``/eof-body``       200 without Content-Length, body delimited by closing
``/trailers``       chunked 200 with a trailer ``x-checksum: abc``
``/gzip``, ``/deflate``  ``pattern(100_000)`` with that Content-Encoding
``/cookie``         200 setting cookies ``a=1`` and ``b=2``
``/redirect``       302 to ``/hello``
``/early``          413 without reading the request body, then close
``/truncated``      Content-Length 100, 10 bytes, close
``/malformed``      a status line that is not HTTP
``/stall``          never answer (until the server stops)
``/drop``           close the connection at once, without a response
``/half-head``      a status line and one header field, then close (no blank line)
``/two-lengths``    two different Content-Length fields
``/latin1``         302 whose Location carries the UTF-8 bytes of ``/š`` (requests decodes
                    header strings as ISO-8859-1 and re-encodes them to read that)

Recorded for assertions: ``requests`` (``(conn_index, method, path, headers, body,
raw_names)``; ``raw_names`` are the header names as they came on the wire),
``peers`` (each connection's client address),
``connections`` (accepted count) and ``dropped`` (requests closed without a response).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import socket
import ssl
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import h11

HELLO = b"Hello, world!"


def pattern(n: int) -> bytes:
    """n deterministic bytes."""
    block = hashlib.sha256(b"h1server").digest() * 64  # 2 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n]


@dataclass
class Seen:
    conn_index: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    raw_names: list[bytes]


class _Drop(Exception):
    """Close the connection without answering."""


class H1Server:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.requests: list[Seen] = []
        self.connections = 0
        self.peers: list[tuple[str, int]] = []  # each accepted connection's client address
        self.dropped = 0
        self._cond = threading.Condition()  # guards the three records above
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = "localhost" if self.tls is not None else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> H1Server:
        self._listener.listen(128)
        self._spawn(self._accept_loop, "h1server-accept")
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._cond:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def wait_for(self, predicate: Callable[[H1Server], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def paths(self) -> list[str]:
        with self._cond:
            return [r.path for r in self.requests]

    # -- threads -----------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return
            with self._cond:
                index = self.connections
                self.connections += 1
                self.peers.append(peer)
                self._cond.notify_all()
            self._spawn(self._serve, f"h1server-conn-{index}", sock, index)

    def _serve(self, sock: socket.socket, index: int) -> None:
        try:
            if self.tls is not None:
                sock.settimeout(10)
                sock = self.tls.wrap_socket(sock, server_side=True)
            sock.settimeout(None)
            with self._cond:
                self._socks.append(sock)
            self._run(sock, index)
        except (OSError, _Drop, h11.ProtocolError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _run(self, sock: socket.socket, index: int) -> None:
        conn = h11.Connection(h11.SERVER)
        stale = False
        while not self._stopping.is_set():
            req, body = self._read_request(sock, conn, read_body=True)
            if req is None:
                return
            path = req.target.decode()
            if stale or path == "/drop":
                with self._cond:
                    self.dropped += 1
                    self._cond.notify_all()
                raise _Drop
            seen = Seen(
                index,
                req.method.decode(),
                path,
                {n.decode(): v.decode() for n, v in req.headers},
                body,
                [n for n, _ in req.headers.raw_items()],
            )
            with self._cond:
                self.requests.append(seen)
                self._cond.notify_all()
            keep = self._respond(sock, conn, seen)
            if not keep:
                return
            stale = path == "/stale"
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    def _read_request(
        self, sock: socket.socket, conn: h11.Connection, read_body: bool
    ) -> tuple[h11.Request | None, bytes]:
        req: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                if not data and req is None:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                req = event
                if req.target in (b"/early", b"/stall", b"/drop"):
                    return req, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return req, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    def _send(self, sock: socket.socket, conn: h11.Connection, *events: h11.Event) -> None:
        for ev in events:
            data = conn.send(ev)
            if data:
                sock.sendall(data)

    def _respond(self, sock: socket.socket, conn: h11.Connection, seen: Seen) -> bool:
        path = seen.path

        def simple(status: int, body: bytes, extra: list[tuple[str, str]] | None = None) -> None:
            headers = [("content-length", str(len(body))), *(extra or [])]
            self._send(
                sock,
                conn,
                h11.Response(status_code=status, headers=headers),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )

        if path in ("/hello", "/stale"):
            simple(200, HELLO)
        elif path.startswith("/bytes/"):
            simple(200, pattern(int(path.split("/")[2])))
        elif path == "/echo":
            simple(
                200,
                seen.body,
                [
                    ("x-body-sha256", hashlib.sha256(seen.body).hexdigest()),
                    ("x-request-te", seen.headers.get("transfer-encoding", "")),
                    ("x-request-cl", seen.headers.get("content-length", "")),
                ],
            )
        elif path in ("/gzip", "/deflate"):
            if path == "/gzip":
                blob = gzip.compress(pattern(100_000))
            else:
                blob = zlib.compress(pattern(100_000))
            simple(200, blob, [("content-encoding", path[1:])])
        elif path == "/then-408":
            # An answer, then, once the client is idle, the 408 a server sends before it
            # closes an idle connection; it keeps the connection open meanwhile.
            simple(200, HELLO)
            self._stopping.wait(0.3)
            sock.sendall(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
            self._stopping.wait(30)
            return False
        elif path in ("/204-with-body", "/head-with-body"):
            # A response that has no body by definition, sent with one anyway; the
            # server then carries on serving the connection.
            status = b"204 No Content" if path == "/204-with-body" else b"200 OK"
            sock.sendall(b"HTTP/1.1 " + status + b"\r\ncontent-length: 11\r\n\r\nsecret-body")
            conn.send(h11.Response(status_code=204, headers=[]))
            conn.send(h11.EndOfMessage())
        elif path in ("/endless-1xx", "/trickled-head"):
            # Never a final response head: a 103 (or one more header line) every 0.1 s.
            if path == "/trickled-head":
                sock.sendall(b"HTTP/1.1 200 OK\r\n")
            for i in range(300):
                if self._stopping.wait(0.1):
                    break
                if path == "/endless-1xx":
                    sock.sendall(b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n")
                else:
                    sock.sendall(b"x-filler-%d: y\r\n" % i)
            return False
        elif path == "/mixed-case":
            # Names in the case a typical server writes them; h11 sends them as given.
            simple(200, HELLO, [("Content-Type", "text/plain"), ("X-Request-Id", "7")])
        elif path == "/cookie":
            simple(200, HELLO, [("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2; Path=/")])
        elif path == "/redirect":
            simple(302, b"", [("location", "/hello")])
        elif path == "/close-after":
            simple(200, HELLO)
            return False
        elif path in ("/eof-body", "/eof-body-notify"):
            sock.sendall(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + HELLO * 3)
            if path == "/eof-body-notify" and isinstance(sock, ssl.SSLSocket):
                # A TLS close_notify before the TCP close (close() alone sends none).
                sock.settimeout(5)
                with contextlib.suppress(OSError, ValueError):
                    sock.unwrap()
            return False
        elif path == "/trailers":
            sock.sendall(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nHello\r\n8\r\n, world!\r\n0\r\nx-checksum: abc\r\n\r\n"
            )
            conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
            conn.send(h11.EndOfMessage())
        elif path == "/early":
            sock.sendall(
                b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 4\r\n"
                b"connection: close\r\n\r\nbig!"
            )
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            # Drain for a moment so the client sees our answer before any reset.
            sock.settimeout(2)
            with contextlib.suppress(OSError):
                while sock.recv(65536):
                    pass
            return False
        elif path == "/truncated":
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
            return False
        elif path == "/malformed":
            sock.sendall(b"HTTP/1.1 2x0 Nope\r\n\r\n")
            return False
        elif path == "/half-head":
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n")
            return False
        elif path == "/two-lengths":
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nContent-Length: 32\r\n\r\n" + b"x" * 32
            )
            return False
        elif path == "/latin1":
            location = "/š".encode()
            sock.sendall(
                b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nLocation: " + location + b"\r\n\r\n"
            )
            return False
        elif path == "/stall":
            self._stopping.wait(30)
            return False
        else:
            simple(404, b"not found\n")
        return True
