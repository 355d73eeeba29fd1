"""The drop-in on a socket of the caller's own: assigned to ``.sock``, made by a
``_create_connection`` replacement, or by a subclass's ``connect()`` (the usual way to
reach a Unix socket). Such a socket carries the requests exactly as http.client would
(the stdlib's own code runs over it, in the caller's thread); the engine is not used
for them, and comes back when an assigned socket is gone.
"""

from __future__ import annotations

import gc
import http.client
import http.server
import os
import socket
import socketserver
import ssl
import tempfile
import warnings
import weakref
from collections.abc import Iterator

import pytest
from servers.canned import canned
from servers.h1server import HELLO, H1Server
from servers.h2peer import server_tls_context
from servers.util import free_port, serve_in_thread

import h2pool
from h2pool import compat


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    compat.close_engines()


@pytest.fixture
def h1plain() -> Iterator[H1Server]:
    server = H1Server(None).start()
    yield server
    server.stop()


@pytest.mark.timeout(30)
def test_an_assigned_socket_carries_the_requests(h1plain):
    """The object names a port nothing listens on: the requests can only have gone
    over the socket given, and come back as the stdlib's responses."""
    c = h2pool.HTTPConnection("127.0.0.1", free_port(), timeout=10)
    mine = socket.create_connection(("127.0.0.1", h1plain.port))
    c.sock = mine
    assert c.sock is mine
    for _ in range(2):
        c.request("GET", "/hello")
        resp = c.getresponse()
        assert isinstance(resp, http.client.HTTPResponse)
        assert (resp.status, resp.read()) == (200, HELLO)
    assert h1plain.connections == 1  # one socket, kept alive
    c.close()
    assert mine.fileno() == -1  # closed with the object, as the stdlib does
    assert c.sock is None


@pytest.mark.timeout(30)
def test_when_the_assigned_socket_is_gone_the_engine_carries_on(h1plain):
    """A server closing the caller's socket (Connection: close) ends its use: the next
    request goes to the object's own host and port, through the engine."""
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst"
    with serve_in_thread(canned(answer, close_after=True)) as other:
        c = h2pool.HTTPConnection("127.0.0.1", h1plain.port, timeout=10)
        c.sock = socket.create_connection(("127.0.0.1", other.server_address[1]))
        c.request("GET", "/")
        first = c.getresponse()
        assert (first.will_close, first.read()) == (True, b"first")
        assert c.sock is None
        c.request("GET", "/hello")
        second = c.getresponse()
        assert not isinstance(second, http.client.HTTPResponse)  # the engine's
        assert second.read() == HELLO
        c.close()
    assert [r.path for r in h1plain.requests] == ["/hello"]


@pytest.mark.timeout(30)
def test_a_create_connection_hook_makes_every_socket(h1plain):
    """As in the stdlib, ``_create_connection`` is called with (host, port), timeout
    and source address, for the first request and after each close."""
    calls: list[tuple[object, ...]] = []

    def create(address, timeout=None, source_address=None):
        calls.append((address, timeout, source_address))
        return socket.create_connection(("127.0.0.1", h1plain.port))

    c = h2pool.HTTPConnection("origin.invalid", 8080, timeout=7)
    c._create_connection = create
    for path, body in (("/hello", HELLO), ("/eof-body", HELLO * 3), ("/hello", HELLO)):
        c.request("GET", path)
        assert c.getresponse().read() == body
    c.close()
    # /eof-body says Connection: close: the third request needed a second socket.
    assert calls == [(("origin.invalid", 8080), 7, None)] * 2
    assert h1plain.connections == 2
    assert all(r.headers.get("host") == "origin.invalid:8080" for r in h1plain.requests)


@pytest.mark.timeout(30)
def test_a_hook_socket_for_https_is_wrapped_in_tls(pki, ca_path):
    """An HTTPSConnection's own socket still gets TLS, verified with its context: a
    hook returns a plain TCP socket, as the stdlib's does."""
    ctx = server_tls_context(pki.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    server = H1Server(ctx).start()
    try:
        c = h2pool.HTTPSConnection(
            "localhost", server.port, context=ssl.create_default_context(cafile=ca_path)
        )
        c._create_connection = lambda address, *a, **k: socket.create_connection(address)
        c.request("GET", "/hello")
        assert c.getresponse().read() == HELLO
        assert isinstance(c.sock, ssl.SSLSocket)
        assert c.sock.version() is not None
        c.close()
        untrusted = h2pool.HTTPSConnection("localhost", server.port)  # certifi: no
        untrusted._create_connection = c._create_connection
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusted.request("GET", "/hello")
        untrusted.close()
    finally:
        server.stop()
    assert [r.path for r in server.requests] == ["/hello"]


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/bye":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args: object) -> None:
        pass


class UnixHTTPConnection(h2pool.HTTPConnection):
    """The pattern Docker's and systemd's clients use with http.client."""

    def __init__(self, path: str, port: int | None = None) -> None:
        super().__init__("127.0.0.1", port)
        self.path = path
        self.dials = 0

    def connect(self) -> None:
        self.dials += 1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@pytest.mark.timeout(30)
def test_a_subclass_connect_reaches_a_unix_socket(h1plain):
    """Every request goes over the Unix socket: after a Connection: close, after
    close() and reuse, after an explicit connect(); none ever reaches host:port (a TCP
    server listens there) through the engine."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "http.sock")
        with serve_in_thread(_UnixServer(path, _Hello)):
            c = UnixHTTPConnection(path, h1plain.port)
            c.connect()
            got = []
            for target in ("/a", "/b", "/bye", "/c"):
                c.request("GET", target)
                got.append(c.getresponse().read())
            c.close()
            c.request("GET", "/d")
            got.append(c.getresponse().read())
            c.close()
    assert got == [b"/a", b"/b", b"/bye", b"/c", b"/d"]
    assert c.dials == 3  # the first; after /bye closed it; after close()
    assert h1plain.connections == 0


@pytest.mark.timeout(30)
def test_a_failed_subclass_connect_is_never_retried_elsewhere(h1plain):
    """The socket is not there yet: the error is connect()'s, as in the stdlib, and no
    request goes to host:port instead."""
    with tempfile.TemporaryDirectory() as tmp:
        c = UnixHTTPConnection(os.path.join(tmp, "absent.sock"), h1plain.port)
        for _ in range(2):
            with pytest.raises((FileNotFoundError, http.client.CannotSendRequest)):
                c.request("GET", "/hello")
        c.close()
    assert h1plain.connections == 0


class NoDelayConnection(h2pool.HTTPConnection):
    """A subclass tuning the socket the stdlib's connect() made."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@pytest.mark.timeout(30)
def test_a_subclass_connect_calling_super_gets_a_socket(h1plain):
    c = NoDelayConnection("127.0.0.1", h1plain.port)
    c.request("GET", "/hello")
    assert c.getresponse().read() == HELLO
    assert c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    # No timeout given: h2pool's read timeout, not none (nothing hangs).
    assert c.sock.gettimeout() == h2pool.Timeout().read
    c.close()
    assert h1plain.connections == 1


@pytest.mark.timeout(30)
def test_a_dropped_object_closes_its_socket_at_once(h1plain):
    """No reference cycle holds an object of the caller's socket: dropping it closes the
    socket without waiting for the cycle collector (the server sees the close)."""
    c = h2pool.HTTPConnection("127.0.0.1", free_port(), timeout=10)
    mine = socket.create_connection(("127.0.0.1", h1plain.port))
    c.sock = mine
    c.request("GET", "/hello")
    assert c.getresponse().read() == HELLO
    refs = weakref.ref(c), weakref.ref(mine)
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # unclosed: the point here
            del c, mine
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()


@pytest.mark.timeout(30)
def test_set_tunnel_after_the_assigned_socket_is_gone_tunnels_through_the_engine():
    """The tunnel applies to the engine's requests too: the proxy gets a CONNECT."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    with (
        serve_in_thread(canned(answer)) as proxy,
        serve_in_thread(canned(closing, close_after=True)) as other,
    ):
        c = h2pool.HTTPConnection("127.0.0.1", proxy.server_address[1], timeout=10)
        c.sock = socket.create_connection(("127.0.0.1", other.server_address[1]))
        c.request("GET", "/first")
        assert c.getresponse().read() == b""
        assert c.sock is None  # the server closed it
        c.set_tunnel("origin.example", 80)
        c.request("GET", "/second")
        assert c.getresponse().read() == b""
        c.close()
    assert proxy.heads[0].startswith(b"CONNECT origin.example:80 ")
    assert proxy.heads[1].startswith(b"GET /second ")


@pytest.mark.timeout(30)
def test_tls_that_picks_h2_on_an_own_socket_is_a_clear_error(nginx, ca_path):
    """A context given to the engine offers h2 by ALPN; the stdlib code speaks HTTP/1.1
    on the object's own sockets, so a server choosing h2 there is refused at connect,
    before a byte of HTTP/1.1 goes into an HTTP/2 connection."""
    ctx = ssl.create_default_context(cafile=ca_path)
    engine_user = h2pool.HTTPSConnection("localhost", nginx.https_port, context=ctx)
    engine_user.request("GET", "/13b")
    assert engine_user.getresponse().read() == b"Hello, world!"
    engine_user.close()
    c = h2pool.HTTPSConnection("localhost", nginx.https_port, context=ctx)
    c._create_connection = lambda address, *a, **k: socket.create_connection(address)
    with pytest.raises(compat.BadResponse, match="ALPN"):
        c.request("GET", "/13b")
    c.close()
    # Without a context of the caller's, the own socket offers http/1.1 only.
    plain = h2pool.HTTPSConnection("localhost", nginx.https_port)
    plain._create_connection = c._create_connection
    with pytest.raises(ssl.SSLCertVerificationError):  # certifi's roots: not the test CA
        plain.request("GET", "/13b")
    plain.close()
