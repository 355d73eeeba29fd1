"""The drop-in on a socket of the caller's own: assigned to ``.sock``, made by a
``_create_connection`` replacement, or by a subclass's ``connect()`` (the usual way to
reach a Unix socket). Such a socket carries the requests exactly as http.client would
(the stdlib's own code runs over it, in the caller's thread); the engine is not used
for them, and comes back when an assigned socket is gone.
"""

from __future__ import annotations

import http.client
import http.server
import os
import socket
import socketserver
import ssl
import tempfile
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

    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path
        self.dials = 0

    def connect(self) -> None:
        self.dials += 1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        self.sock = sock


@pytest.mark.timeout(30)
def test_a_subclass_connect_reaches_a_unix_socket():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "http.sock")
        with serve_in_thread(_UnixServer(path, _Hello)):
            c = UnixHTTPConnection(path)
            got = []
            for target in ("/a", "/b", "/bye", "/c"):
                c.request("GET", target)
                got.append(c.getresponse().read())
            c.close()
    assert got == [b"/a", b"/b", b"/bye", b"/c"]
    assert c.dials == 2  # kept alive until /bye closed it; connect() made the next one
