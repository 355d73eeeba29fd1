"""The http.client drop-in against real servers, on both classes.

Behaviour ported from CPython's ``Lib/test/test_httplib.py`` where it applies to a
client talking to a real server: response surface (status, reason, version, headers),
``read(amt)``/``readinto``/``read1``/``peek``/``readline`` semantics, ``isclosed()`` vs
``closed``, HEAD and bodiless answers, host:port parsing, and the misuse errors
(``ResponseNotReady``, ``CannotSendRequest``, ``CannotSendHeader``).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import http.client
import io
import socket
import ssl
import threading

import pytest
from servers.h1server import H1Server, pattern
from servers.h2peer import server_tls_context
from servers.util import serve_in_thread

import h2pool
from h2pool import compat

HELLO = b"Hello, world!"
LINES = b"first line\nsecond\n\nlast without newline"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _close_engines():
    yield
    compat.close_engines()  # before the leak check looks at threads


def _ctx(ca_path: str) -> ssl.SSLContext:
    # One context per class: the engine sets ALPN on the context it is given.
    return ssl.create_default_context(cafile=ca_path)


@pytest.fixture(params=["HTTP20Connection-h2", "HTTPConnection-h2", "HTTPConnection-h1"])
def conn(request, nginx, ca_path):
    """A connection object to nginx: (object, expected version)."""
    cls_name, proto = request.param.split("-")
    cls = getattr(h2pool, cls_name)
    port = nginx.https_port if proto == "h2" else nginx.http1_tls_port
    c = cls("localhost", port, ssl_context=_ctx(ca_path), timeout=10)
    yield c, 20 if proto == "h2" else 11
    c.close()


@pytest.fixture
def h1echo(pki):
    server = H1Server(_server_ctx(pki)).start()
    yield server
    server.stop()


def _server_ctx(pki):
    ctx = server_tls_context(pki.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@pytest.fixture(params=["HTTP20Connection-nghttpd", "HTTPConnection-nghttpd", "HTTPConnection-h1"])
def echo_conn(request, ca_path, h1echo):
    """A connection object to a server that echoes POST bodies: (object, path)."""
    cls_name, server = request.param.split("-")
    cls = getattr(h2pool, cls_name)
    if server == "nghttpd":
        echo = request.getfixturevalue("nghttpd_echo")
        c = cls("localhost", echo.https_port, ssl_context=_ctx(ca_path), timeout=10)
        yield c, "/13b"  # nghttpd echoes the body of a POST to an existing file
    else:
        c = cls("localhost", h1echo.port, ssl_context=_ctx(ca_path), timeout=10)
        yield c, "/echo"
    c.close()


# -- the response surface --------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/13b", "/1m"])
def test_get_body_and_surface(conn, content, path):
    c, version = conn
    sid = c.request("GET", path)
    assert isinstance(sid, int)
    resp = c.getresponse()
    assert isinstance(resp, io.BufferedIOBase)
    assert resp.status == 200
    assert resp.reason == "OK"
    assert resp.version == version
    assert isinstance(resp.msg, http.client.HTTPMessage)
    assert resp.headers is resp.msg
    assert resp.getheader("Content-Length") == str(content.size[path])
    assert resp.length == content.size[path]
    assert not resp.isclosed()
    body = resp.read()
    assert sha256(body) == content.sha256[path]
    assert resp.isclosed()
    assert not resp.closed  # http.client: closed only after close()
    assert resp.read() == b""
    resp.close()
    assert resp.closed


@pytest.mark.timeout(30)
def test_partial_reads(conn, content):
    c, _ = conn
    c.request("GET", "/13b")
    resp = c.getresponse()
    assert resp.read(0) == b""
    assert resp.read(2) == b"He"
    assert resp.length == 11
    assert resp.read(5) == b"llo, "
    assert not resp.isclosed()
    assert resp.read(100) == b"world!"  # fewer only at the end
    assert resp.isclosed()  # Content-Length reached
    assert resp.read(2) == b""
    resp.close()


@pytest.mark.timeout(30)
def test_readinto(conn, content):
    c, _ = conn
    c.request("GET", "/1m")
    resp = c.getresponse()
    out = bytearray()
    buf = bytearray(100_000)
    view = memoryview(buf)
    while True:
        n = resp.readinto(view)
        if not n:
            break
        out += view[:n]
    assert bytes(out) == content.data["/1m"]
    assert resp.isclosed()
    c.request("GET", "/13b")
    resp = c.getresponse()
    small = bytearray(5)
    assert resp.readinto(small) == 5
    assert bytes(small) == b"Hello"
    big = bytearray(100)
    assert resp.readinto(big) == 8
    assert bytes(big[:8]) == b", world!"
    assert resp.readinto(big) == 0


@pytest.mark.timeout(30)
def test_read1_and_peek(conn, content):
    c, _ = conn
    c.request("GET", "/1m")
    resp = c.getresponse()
    peeked = resp.peek(10)
    assert len(peeked) >= 1
    assert content.data["/1m"].startswith(peeked)
    got = bytearray()
    first = resp.read1(7)
    assert 1 <= len(first) <= 7
    got += first
    while chunk := resp.read1(65536):
        assert len(chunk) <= 65536
        got += chunk
    assert bytes(got) == content.data["/1m"]


@pytest.mark.timeout(30)
def test_close_leaves_a_will_close_response_readable(h1echo, ca_path):
    """A response whose body ends with its connection (``will_close``) stays readable
    after the connection object's close(), as in the stdlib."""
    c = h2pool.HTTPConnection("localhost", h1echo.port, ssl_context=_ctx(ca_path), timeout=10)
    c.request("GET", "/eof-body-notify")  # ends with TLS close_notify: a complete body
    resp = c.getresponse()
    assert (resp.will_close, resp.chunked, resp.length) == (True, False, None)
    c.close()
    assert resp.read() == HELLO * 3
    assert resp.isclosed()


@pytest.mark.timeout(30)
def test_head_has_no_body(conn, content):
    c, _ = conn
    c.request("HEAD", "/1m")
    resp = c.getresponse()
    assert resp.status == 200
    assert resp.getheader("content-length") == str(content.size["/1m"])
    assert resp.length == 0  # as the stdlib: nothing follows a HEAD answer
    assert not resp.isclosed()  # not until a read has found the end, as the stdlib
    assert resp.read() == b""
    assert resp.isclosed()
    assert not resp.closed
    resp.close()
    assert resp.closed


@pytest.mark.timeout(30)
def test_204_and_404(conn):
    c, _ = conn
    c.request("GET", "/204")
    resp = c.getresponse()
    assert (resp.status, resp.reason) == (204, "No Content")
    assert (resp.length, resp.isclosed()) == (0, False)
    assert resp.read() == b""
    assert resp.isclosed()
    c.request("GET", "/404")
    resp = c.getresponse()
    assert (resp.status, resp.reason) == (404, "Not Found")
    assert b"404" in resp.read()


@pytest.mark.timeout(30)
def test_headers(conn):
    c, _ = conn
    c.request("GET", "/echo-headers", headers={"X-Test": "drop-in", "User-Agent": "ua/1"})
    resp = c.getresponse()
    assert resp.getheader("x-echo-test") == "drop-in"
    assert resp.getheader("X-ECHO-UA") == "ua/1"
    assert resp.getheader("x-missing") is None
    assert resp.getheader("x-missing", "dflt") == "dflt"
    # As the stdlib's: an iterable default other than a string comes back joined.
    assert resp.getheader("x-missing", ["a", "b"]) == "a, b"
    assert resp.getheader("x-missing", ("c",)) == "c"
    assert resp.getheader("x-missing", 7) == 7
    pairs = resp.getheaders()
    assert all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
    assert ("x-echo-method", "GET") in [(n.lower(), v) for n, v in pairs]
    assert resp.info() is resp.msg
    assert resp.getcode() == 200
    assert resp.read() == b"echo\n"


@pytest.mark.timeout(30)
def test_multiplexed_requests_any_order(conn, content):
    c, version = conn
    paths = ["/13b", "/1m", "/index.html", "/data.json"] * 3
    ids = [c.request("GET", p) for p in paths]
    assert len(set(ids)) == len(ids)
    for sid, path in reversed(list(zip(ids, paths, strict=True))):
        resp = c.getresponse(sid)
        assert resp.stream_id == sid
        assert resp.version == version
        assert sha256(resp.read()) == content.sha256[path]
    with pytest.raises(http.client.ResponseNotReady):
        c.getresponse()


@pytest.mark.timeout(30)
def test_getresponse_default_is_oldest(conn, content):
    c, _ = conn
    c.request("GET", "/index.html")
    c.request("GET", "/13b")
    assert c.getresponse().read() == content.data["/index.html"]
    assert c.getresponse().read() == HELLO


@pytest.mark.timeout(30)
def test_putrequest_api(conn):
    c, _ = conn
    c.putrequest("GET", "/echo-headers")
    c.putheader("X-Test", "put")
    c.putheader("User-Agent", "a", "b")
    c.endheaders()
    resp = c.getresponse()
    assert resp.getheader("x-echo-test") == "put"
    assert resp.getheader("x-echo-ua") == "a, b"


@pytest.mark.timeout(30)
def test_misuse_errors(conn):
    c, _ = conn
    with pytest.raises(http.client.ResponseNotReady):
        c.getresponse()
    with pytest.raises(http.client.CannotSendHeader):
        c.putheader("X", "y")
    with pytest.raises(http.client.CannotSendHeader):
        c.endheaders()
    c.putrequest("GET", "/13b")
    with pytest.raises(http.client.CannotSendRequest):
        c.putrequest("GET", "/13b")
    with pytest.raises(http.client.CannotSendRequest):
        c.request("GET", "/13b")
    with pytest.raises(http.client.ResponseNotReady):
        c.getresponse()  # headers not finished
    c.endheaders()
    with pytest.raises(http.client.CannotSendHeader):
        c.putheader("X", "late")
    assert c.getresponse().read() == HELLO
    with pytest.raises(http.client.ResponseNotReady):
        c.getresponse(999)


@pytest.mark.timeout(30)
def test_close_closes_returned_responses_and_cancels_others(conn):
    """As the stdlib's close(): the response it returned on a connection that stays
    open is closed with it (its read() then gives b"")."""
    c, _ = conn
    c.request("GET", "/1m")
    resp = c.getresponse()
    first = resp.read(10)
    c.request("GET", "/13b")  # never collected
    c.close()
    assert len(first) == 10
    assert (resp.isclosed(), resp.closed) == (True, True)
    assert resp.read() == b""
    with pytest.raises(http.client.ResponseNotReady):
        c.getresponse()
    # Usable again after close(), like http.client (which reconnects).
    c.request("GET", "/13b")
    assert c.getresponse().read() == HELLO


@pytest.mark.timeout(30)
def test_line_reading(echo_conn):
    c, path = echo_conn
    c.request("POST", path, body=LINES)
    resp = c.getresponse()
    assert resp.readline() == b"first line\n"
    assert list(resp) == [b"second\n", b"\n", b"last without newline"]
    assert resp.readline() == b""


# -- request bodies --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_bodies(echo_conn):
    c, path = echo_conn
    blob = pattern(300_000)
    cases = [
        (blob, blob),
        ("caf\xe9", b"caf\xe9"),  # str bodies are ISO-8859-1, like http.client
        (io.BytesIO(blob), blob),
        (iter([blob[:1000], blob[1000:]]), blob),
    ]
    for body, expected in cases:
        c.request("POST", path, body=body)
        resp = c.getresponse()
        assert resp.status == 200
        assert resp.read() == expected


@pytest.mark.timeout(30)
def test_send_with_content_length_streams(echo_conn):
    c, path = echo_conn
    blob = pattern(2_000_000)
    c.putrequest("POST", path)
    c.putheader("Content-Length", len(blob))
    c.endheaders(blob[:1000])
    for i in range(1000, len(blob), 100_000):
        c.send(blob[i : i + 100_000])
    resp = c.getresponse()
    assert sha256(resp.read()) == sha256(blob)


@pytest.mark.timeout(30)
def test_send_without_length_is_collected(echo_conn):
    c, path = echo_conn
    c.putrequest("POST", path)
    c.endheaders()
    c.send(b"abc")
    c.send(io.BytesIO(b"def"))
    resp = c.getresponse()
    assert resp.read() == b"abcdef"


def chunk_encoded(*parts: bytes, split: int = 7) -> list[bytes]:
    """``parts`` chunk-encoded as a caller of http.client does it, cut into pieces of
    ``split`` bytes that fall anywhere (inside a size line, a chunk, a CRLF)."""
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return [wire[i : i + split] for i in range(0, len(wire), split)]


@pytest.mark.timeout(30)
def test_send_chunked(echo_conn):
    """As http.client: with Transfer-Encoding: chunked put by the caller, the caller
    chunk-encodes what it sends; with ``encode_chunked=True`` the connection does."""
    c, path = echo_conn
    parts = (b"x" * 70_000, b"y" * 5, b"z")
    c.putrequest("POST", path)
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    for piece in chunk_encoded(*parts, split=4096):
        c.send(piece)
    resp = c.getresponse()
    assert resp.read() == b"".join(parts)
    c.putrequest("POST", path)
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders(encode_chunked=True)
    for part in parts:
        c.send(part)
    resp = c.getresponse()
    assert resp.read() == b"".join(parts)


@pytest.mark.timeout(30)
def test_a_body_the_caller_chunk_encoded_is_sent_as_its_content(echo_conn):
    """http.client sends a body as given when the caller's headers say
    Transfer-Encoding: chunked: the server must receive the content, not the chunk
    framing as data (h2pool frames bodies itself, and HTTP/2 has no chunked coding)."""
    c, path = echo_conn
    te = {"Transfer-Encoding": "chunked"}
    payload = (b"abc", pattern(20_000), b"d")
    for body in (
        b"".join(chunk_encoded(*payload)),
        iter(chunk_encoded(*payload)),
        io.BytesIO(b"".join(chunk_encoded(*payload))),
    ):
        c.request("POST", path, body=body, headers=te)
        assert c.getresponse().read() == b"".join(payload)
    # The stdlib's other case: encode_chunked=True means the body is the content.
    c.request("POST", path, body=iter([b"ab", b"c"]), headers=te, encode_chunked=True)
    assert c.getresponse().read() == b"abc"


@pytest.mark.timeout(30)
def test_bad_chunk_framing_from_the_caller_is_refused(h1echo, ca_path):
    c = h2pool.HTTPConnection("localhost", h1echo.port, ssl_context=_ctx(ca_path), timeout=10)
    te = {"Transfer-Encoding": "chunked"}
    for bad in (b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcd\r\n0\r\n\r\n", b"3\r\nabc\r\n"):
        with pytest.raises(ValueError):
            c.request("POST", "/echo", body=bad, headers=te)
    assert h1echo.requests == []  # refused before anything was sent
    # Cut short as a stream: the request fails rather than ending as if complete.
    c.request("POST", "/echo", body=iter([b"3\r\nabc\r\n"]), headers=te)
    with pytest.raises(h2pool.H2PoolError):
        c.getresponse().read()
    c.close()


# -- construction, engines, errors -------------------------------------------------------------


def test_host_port_parsing():
    # (host, port) -> (host, port, secure) for each class: HTTP20Connection is TLS on
    # every port, HTTPSConnection always, HTTPConnection never unless asked.
    cases = [
        (
            "example.org",
            None,
            "example.org",
            {"h2": (443, True), "h": (80, False), "s": (443, True)},
        ),
        (
            "example.org:8443",
            None,
            "example.org",
            {"h2": (8443, True), "h": (8443, False), "s": (8443, True)},
        ),
        (
            "example.org",
            443,
            "example.org",
            {"h2": (443, True), "h": (443, False), "s": (443, True)},
        ),
        ("example.org", 80, "example.org", {"h2": (80, True), "h": (80, False), "s": (80, True)}),
        ("[::1]:8080", None, "::1", {"h2": (8080, True), "h": (8080, False), "s": (8080, True)}),
        ("[::1]", None, "::1", {"h2": (443, True), "h": (80, False), "s": (443, True)}),
        (
            "example.org:",
            None,
            "example.org",
            {"h2": (443, True), "h": (80, False), "s": (443, True)},
        ),
    ]
    classes = {
        "h2": h2pool.HTTP20Connection,
        "h": h2pool.HTTPConnection,
        "s": h2pool.HTTPSConnection,
    }
    for host, port, want_host, want in cases:
        for kind, cls in classes.items():
            c = cls(host, port)
            assert (c.host, c.port, c.secure) == (want_host, *want[kind]), (kind, host, port)
    with pytest.raises(http.client.InvalidURL):
        h2pool.HTTPConnection("example.org:http")
    assert h2pool.HTTPConnection("example.org", 8080, secure=True).secure
    assert h2pool.HTTPConnection("example.org", context=ssl.create_default_context()).port == 443
    assert h2pool.HTTP20Connection("example.org", secure=False).port == 80
    assert h2pool.HTTP20Connection("example.org", 8080, secure=False).secure is False
    with pytest.raises(ValueError):
        h2pool.HTTPConnection("example.org", secure=False, context=ssl.create_default_context())
    assert h2pool.HTTPSConnection("example.org", timeout=2.5).timeout == 2.5
    assert h2pool.HTTPSConnection("example.org", timeout=socket.getdefaulttimeout()).timeout is None


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore:key_file, cert_file and check_hostname:DeprecationWarning")
@pytest.mark.parametrize(
    "make",
    [
        lambda port: h2pool.HTTP20Connection("127.0.0.1", port, timeout=1),
        lambda port: h2pool.HTTPSConnection("127.0.0.1", port, timeout=1),
        lambda port: h2pool.HTTPSConnection("127.0.0.1", port, timeout=1, check_hostname=False),
        lambda port: h2pool.HTTPConnection("127.0.0.1", port, secure=True, timeout=1),
        lambda port: h2pool.HTTPConnection(
            "127.0.0.1", port, context=ssl.create_default_context(), timeout=1
        ),
    ],
    ids=[
        "HTTP20Connection",
        "HTTPSConnection",
        "HTTPSConnection-nocheck",
        "secure=True",
        "context=",
    ],
)
def test_a_secure_connection_object_never_sends_in_clear_on_any_port(make):
    """Before, HTTP20Connection(host, 8443) and HTTPConnection(host, 8443) with no
    context sent the request, Authorization included, in cleartext."""
    from test_bad_input import Sniffer

    sniffer = Sniffer()
    try:
        c = make(sniffer.port)
        with pytest.raises((h2pool.ConnectError, TimeoutError)):
            # Failing to connect raises from request(), as in http.client.
            c.request("GET", "/private", headers={"Authorization": "Basic c2VjcmV0OnNlY3JldA=="})
        c.close()
        assert sniffer.total() > 0
        first = bytes(sniffer.received[0])
        assert first[0] == 0x16, first[:40]  # a TLS handshake record, not PRI/GET
        assert b"c2VjcmV0" not in first and b"/private" not in first
    finally:
        sniffer.close()


@pytest.mark.timeout(30)
def test_http20_refuses_http1_server(nginx, ca_path):
    c = h2pool.HTTP20Connection("localhost", nginx.http1_tls_port, ssl_context=_ctx(ca_path))
    with pytest.raises(h2pool.ConnectError) as info:
        c.request("GET", "/13b")
    assert isinstance(info.value, OSError)
    with pytest.raises(http.client.ResponseNotReady):
        c.getresponse()  # the failed request is not outstanding
    c.close()


@pytest.mark.timeout(30)
def test_cleartext(nginx, pki):
    h1 = H1Server(None).start()
    try:
        c = h2pool.HTTPConnection("127.0.0.1", h1.port)
        assert not c.secure
        c.request("GET", "/hello")
        resp = c.getresponse()
        assert (resp.version, resp.read()) == (11, HELLO)
        c.close()
    finally:
        h1.stop()
    c = h2pool.HTTP20Connection("127.0.0.1", nginx.h2c_port, secure=False)
    c.request("GET", "/13b")
    resp = c.getresponse()
    assert (resp.version, resp.read()) == (20, HELLO)
    c.close()


@pytest.mark.timeout(30)
def test_timeout_maps_to_read_timeout(ca_path, pki):
    server = H1Server(_server_ctx(pki)).start()
    try:
        c = h2pool.HTTPConnection("localhost", server.port, ssl_context=_ctx(ca_path), timeout=0.5)
        c.request("GET", "/stall")
        with pytest.raises(TimeoutError) as info:
            c.getresponse()
        assert isinstance(info.value, h2pool.ReadTimeout)
        c.close()
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_many_objects_share_one_engine(nginx, ca_path, content):
    ctx = _ctx(ca_path)
    barrier = threading.Barrier(32)

    def worker() -> int:
        conns = [h2pool.HTTP20Connection("localhost", nginx.https_port, ssl_context=ctx)]
        conns += [h2pool.HTTP20Connection("localhost", nginx.https_port, ssl_context=ctx)]
        barrier.wait(10)
        ok = 0
        for c in conns:
            for _ in range(5):
                c.request("GET", "/1m")
                if sha256(c.getresponse().read()) == content.sha256["/1m"]:
                    ok += 1
        engines.update(id(c._lease.engine.client) for c in conns)
        barrier.wait(10)  # every object is alive here: one engine serves them all
        live.append(len(compat._engines))
        for c in conns:
            c.close()
        return ok

    engines: set[int] = set()
    live: list[int] = []
    with cf.ThreadPoolExecutor(32) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(worker) for _ in range(32)]]
    assert results == [10] * 32
    assert len(engines) == 1
    assert set(live) == {1}
    # The last object closed: the engine and its thread are gone.
    assert not compat._engines


@pytest.mark.timeout(30)
def test_set_debuglevel_connect_and_repr(nginx, ca_path):
    c = h2pool.HTTPConnection("localhost", nginx.https_port, ssl_context=_ctx(ca_path))
    c.set_debuglevel(1)
    c.connect()
    assert "localhost" in repr(c)
    with pytest.raises(RuntimeError):
        c.set_tunnel("proxy.example", 3128)  # after connect(), as in http.client
    c.request("GET", "/13b")
    resp = c.getresponse()
    assert "200" in repr(resp)
    assert resp.read() == HELLO
    c.close()


@pytest.mark.timeout(60)
def test_a_collection_while_an_engine_is_built_does_not_deadlock(nginx, ca_path, monkeypatch):
    """A garbage collection inside _acquire (building a Client allocates) may run the
    finalizer of an old connection object, which releases its engine: before, _acquire
    held the engines lock while building and the finalizer waited for it forever (the
    stdlib's test_httplib hung in 3 of 5 runs)."""
    import gc

    old = h2pool.HTTPConnection("localhost", nginx.https_port, ssl_context=_ctx(ca_path))
    old.request("GET", "/13b")
    assert old.getresponse().read() == HELLO
    engine = old._lease.engine
    old.cycle = old  # freed only by the cycle collector
    del old
    real_client = compat._EngineClient

    def client_after_a_collection(*args, **kwargs):
        gc.collect()  # the old object's finalizer runs here, inside _acquire
        return real_client(*args, **kwargs)

    monkeypatch.setattr(compat, "_EngineClient", client_after_a_collection)
    gc.disable()
    try:
        done = threading.Event()
        new: list[h2pool.HTTPConnection] = []

        def open_new() -> None:
            c = h2pool.HTTPConnection("localhost", nginx.https_port, ssl_context=_ctx(ca_path))
            c.connect()  # acquires an engine: a new context, a new Client
            new.append(c)
            done.set()

        t = threading.Thread(target=open_new, daemon=True)
        t.start()
        assert done.wait(20), "deadlock: _acquire and a finalizer's _release"
    finally:
        gc.enable()
    assert engine not in compat._engines.values()  # the old engine was released and closed
    assert engine.client._runtime.closed
    monkeypatch.setattr(compat, "_EngineClient", real_client)
    new[0].request("GET", "/13b")
    assert new[0].getresponse().read() == HELLO
    new[0].close()


# -- errors are the stdlib's too, raised where the stdlib raises them ----------------------


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cls", [h2pool.HTTPConnection, h2pool.HTTPSConnection])
def test_connection_refused_is_raised_by_request_as_oserror(cls):
    """Before, request() returned and getresponse() raised an h2pool.ConnectError that
    no ``except OSError`` caught."""
    import errno

    c = cls("127.0.0.1", _closed_port(), timeout=5)
    with pytest.raises(ConnectionRefusedError) as info:
        c.request("GET", "/")
    assert isinstance(info.value, h2pool.ConnectError)
    assert info.value.errno == errno.ECONNREFUSED
    assert isinstance(info.value.__cause__, h2pool.ConnectError)
    with pytest.raises(http.client.ResponseNotReady):
        c.getresponse()
    c.close()


@pytest.mark.timeout(30)
def test_unknown_host_is_a_gaierror_from_request():
    c = h2pool.HTTPConnection("no-such-host.invalid", 80, timeout=10)
    with pytest.raises(socket.gaierror) as info:
        c.request("GET", "/")
    assert isinstance(info.value, h2pool.ConnectError)
    c.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cls", [h2pool.HTTPSConnection, h2pool.HTTP20Connection])
def test_untrusted_certificate_is_ssl_error_from_request(cls, nginx, untrusted_ca_path, ca_path):
    """The stdlib's test_local_unknown_cert: ssl.SSLError with reason
    CERTIFICATE_VERIFY_FAILED from request(); before, an h2pool.TLSError from
    getresponse()."""
    c = cls("localhost", nginx.https_port, context=_ctx(untrusted_ca_path), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        c.request("GET", "/13b")
    err = info.value
    assert isinstance(err, ssl.SSLError) and isinstance(err, h2pool.TLSError)
    assert err.reason == "CERTIFICATE_VERIFY_FAILED"
    assert err.verify_code != 0
    c.close()
    # Once an origin has answered, request() no longer waits: a trusted object still works.
    good = cls("localhost", nginx.https_port, context=_ctx(ca_path), timeout=10)
    good.request("GET", "/13b")
    assert good.getresponse().read() == HELLO
    good.close()


@pytest.fixture
def h1plain():
    server = H1Server(None).start()
    yield server
    server.stop()


@pytest.mark.timeout(30)
def test_close_before_the_response_is_remote_disconnected(h1plain):
    c = h2pool.HTTPConnection("127.0.0.1", h1plain.port, timeout=10)
    c.request("GET", "/hello")  # reaches the origin: later requests do not wait
    assert c.getresponse().read() == HELLO
    c.request("POST", "/drop", body=b"x")
    with pytest.raises(http.client.RemoteDisconnected) as info:
        c.getresponse()
    assert isinstance(info.value, ConnectionResetError)
    assert isinstance(info.value, h2pool.ConnectionLost)
    c.close()


@pytest.mark.timeout(30)
def test_truncated_body_is_incomplete_read(h1plain):
    c = h2pool.HTTPConnection("127.0.0.1", h1plain.port, timeout=10)
    c.request("GET", "/truncated")  # Content-Length 100, 10 bytes, close
    resp = c.getresponse()
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert isinstance(info.value, h2pool.H2PoolError)
    assert len(info.value.partial) == 10
    assert info.value.expected == 90  # the bytes still missing, as the stdlib counts
    c.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("first", [0, 4], ids=["read-all", "after-read-4"])
def test_incomplete_read_counts_what_is_missing_as_the_stdlib_does(h1plain, first):
    """``IncompleteRead(partial, expected)``: ``expected`` is what the read still
    lacked, whatever was read before it; compared with the stdlib on the same server."""
    seen = []
    for cls in (http.client.HTTPConnection, h2pool.HTTPConnection):
        c = cls("127.0.0.1", h1plain.port, timeout=10)
        c.request("GET", "/truncated")  # Content-Length 100, 10 bytes, close
        resp = c.getresponse()
        head = resp.read(first) if first else b""
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        seen.append((head, info.value.partial, info.value.expected, repr(info.value)))
        c.close()
    assert seen[0] == seen[1]
    assert seen[1][2] == 100 - 10


@pytest.mark.timeout(30)
def test_http11_header_names_keep_the_servers_case(h1plain):
    """The stdlib's getheaders() and msg keep the names as the server wrote them, so
    ``dict(resp.getheaders())["Content-Type"]`` works; lookups stay case-insensitive."""
    got = []
    for cls in (http.client.HTTPConnection, h2pool.HTTPConnection):
        c = cls("127.0.0.1", h1plain.port, timeout=10)
        c.request("GET", "/mixed-case")
        resp = c.getresponse()
        got.append((resp.getheaders(), list(resp.msg.keys()), resp.getheader("x-request-ID")))
        assert resp.read() == HELLO
        c.close()
    assert got[0] == got[1]
    assert dict(got[1][0])["Content-Type"] == "text/plain"
    with h2pool.Client() as client:
        r = client.get(f"http://127.0.0.1:{h1plain.port}/mixed-case")
    assert ("X-Request-Id", "7") in r.headers.items()
    assert r.headers["x-request-id"] == "7" and "content-type" in r.headers


@pytest.mark.timeout(30)
def test_malformed_response_is_an_http_exception(h1plain):
    c = h2pool.HTTPConnection("127.0.0.1", h1plain.port, timeout=10)
    c.request("GET", "/malformed")
    with pytest.raises(http.client.HTTPException) as info:
        c.getresponse()
    assert isinstance(info.value, h2pool.ProtocolError)
    c.close()


@pytest.mark.timeout(30)
def test_control_characters_are_refused_before_anything_is_sent(h1plain):
    c = h2pool.HTTPConnection("127.0.0.1", h1plain.port, timeout=10)
    c.putrequest("GET", "/hello")
    for name, value in [
        (b"Invalid\r\nName", b"v"),
        (b"Invalid:Name", b"v"),
        (b" Name", b"v"),
        (b"Name", b"Invalid\r\nValue"),
        (b"Name", b"Value\n"),
        ("Name", "a\rb"),
    ]:
        with pytest.raises(ValueError, match="Invalid header"):
            c.putheader(name, value)
    c.putheader("X-Fine", "yes")
    c.endheaders()
    assert c.getresponse().read() == HELLO
    with pytest.raises(ValueError) as info:
        c.request("GET", "/hello", headers={"X-Bad": "a\r\nInjected: 1"})
    assert isinstance(info.value, h2pool.InvalidHeader)
    with pytest.raises(ValueError, match="method can't contain control characters"):
        c.request("GET\r\nX-Injected: 1", "/hello")
    with pytest.raises(http.client.InvalidURL):
        c.request("GET", "/hello HTTP/1.1\r\nX-Injected: 1")
    with pytest.raises(TypeError):
        c.request("POST", "/echo", body=object())
    # Only the one well-formed request reached the server.
    assert [(r.method, r.path) for r in h1plain.requests] == [("GET", "/hello")]
    c.close()


# -- urllib.request, xmlrpc.client, set_tunnel ----------------------------------------------


@pytest.mark.timeout(30)
def test_urllib_through_the_handlers(nginx, ca_path, h1plain):
    """urllib sets r.msg = r.reason and passes its default-timeout sentinel: before,
    getheader() then failed on the reason string."""
    import urllib.error
    import urllib.request

    opener = compat.build_opener(compat.HTTPSHandler(context=_ctx(ca_path)))
    with opener.open(f"https://localhost:{nginx.https_port}/13b") as r:
        assert isinstance(r, compat.HTTP20Response)
        assert (r.status, r.msg, r.version) == (200, "OK", 20)
        assert r.getheader("Content-Length") == "13"
        assert r.info()["content-length"] == "13"
        assert r.read() == HELLO
    with opener.open(f"http://127.0.0.1:{h1plain.port}/echo", data=b"posted") as r:
        assert (r.version, r.read()) == (11, b"posted")
    assert h1plain.requests[-1].method == "POST"
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(f"https://localhost:{nginx.https_port}/404")
    assert info.value.code == 404
    with pytest.raises(urllib.error.URLError) as refused:
        opener.open(f"http://127.0.0.1:{_closed_port()}/")
    assert isinstance(refused.value.reason, ConnectionRefusedError)


@pytest.fixture
def xmlrpc_server():
    from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

    class Handler(SimpleXMLRPCRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as xmlrpc.client expects

    server = SimpleXMLRPCServer(("127.0.0.1", 0), Handler, logRequests=False)
    server.register_function(lambda a, b: a + b, "add")
    server.register_function(lambda data: data[::-1], "reverse")
    with serve_in_thread(server):
        yield server


@pytest.mark.timeout(30)
def test_xmlrpc_transport(xmlrpc_server):
    import xmlrpc.client

    port = xmlrpc_server.server_address[1]
    transport = compat.Transport()
    proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/", transport=transport)
    assert proxy.add(2, 3) == 5
    blob = "x" * 100_000 + "y"
    assert proxy.reverse(blob) == blob[::-1]
    assert isinstance(transport._connection[1], h2pool.HTTPConnection)
    with pytest.raises(xmlrpc.client.Fault):
        proxy.missing()
    proxy("close")()


@pytest.mark.timeout(30)
def test_xmlrpc_safe_transport_speaks_tls(pki, ca_path):
    """SafeTransport on HTTPSConnection: TLS to an HTTP/1.1 server (the h11 one answers
    the XML-RPC POST at /echo with the body it got, which is XML the client parses)."""
    import xmlrpc.client

    server = H1Server(_server_ctx(pki)).start()
    try:
        transport = compat.SafeTransport(context=_ctx(ca_path))
        proxy = xmlrpc.client.ServerProxy(
            f"https://localhost:{server.port}/echo", transport=transport
        )
        # The echoed <methodCall> parses as its own params: what matters is that it
        # went over TLS, whole, to the server and came back.
        assert proxy.ping("hello") == "hello"
        seen = server.requests[-1]
        assert (seen.method, seen.path) == ("POST", "/echo")
        assert b"<methodName>ping</methodName>" in seen.body
        assert seen.headers["content-type"] == "text/xml"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tunnel_proxy(tmp_path_factory, nginx):
    from servers.tinyproxy import start_tinyproxy, tinyproxy_installed

    if not tinyproxy_installed():
        pytest.skip("tinyproxy is not installed")
    server = start_tinyproxy(
        tmp_path_factory.mktemp("tinyproxy"), [nginx.https_port], basic_auth=("al", "pw1")
    )
    yield server
    server.stop()


@pytest.mark.timeout(30)
def test_set_tunnel_goes_through_the_connect_proxy(nginx, ca_path, tunnel_proxy):
    """Before, set_tunnel raised NotImplementedError."""
    import base64

    c = h2pool.HTTPSConnection("127.0.0.1", tunnel_proxy.port, context=_ctx(ca_path))
    token = base64.b64encode(b"al:pw1").decode()
    c.set_tunnel("localhost", nginx.https_port, headers={"Proxy-Authorization": f"Basic {token}"})
    c.request("GET", "/13b")
    resp = c.getresponse()
    assert (resp.status, resp.version, resp.read()) == (200, 20, HELLO)  # h2 end to end
    log = tunnel_proxy.wait_for_log(f"CONNECT localhost:{nginx.https_port} ")
    assert f"CONNECT localhost:{nginx.https_port} " in log
    with pytest.raises(RuntimeError):
        c.set_tunnel("localhost", nginx.https_port)
    c.close()
    # Without the credentials the proxy refuses the tunnel: an OSError from request().
    bad = h2pool.HTTPSConnection("127.0.0.1", tunnel_proxy.port, context=_ctx(ca_path))
    bad.set_tunnel("localhost", nginx.https_port)
    with pytest.raises(OSError) as info:
        bad.request("GET", "/13b")
    assert isinstance(info.value, h2pool.ConnectError)
    bad.close()


@pytest.mark.timeout(30)
def test_header_strings_are_latin1_like_the_stdlibs():
    """http.client decodes header bytes as ISO-8859-1; code re-encodes them that way
    (urllib and requests do for Location). Before, non-ASCII values came out UTF-8-decoded."""
    server = H1Server(None).start()
    try:
        conn = h2pool.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/latin1")
        resp = conn.getresponse()
        assert resp.status == 302
        location = resp.getheader("Location")
        assert location == "/š".encode().decode("latin-1")
        assert location.encode("latin-1") == "/š".encode()
        assert resp.msg["Location"] == location
        resp.read()
        conn.close()
    finally:
        server.stop()


def test_constructor_arguments_in_the_stdlibs_positional_order():
    """``HTTPConnection(host, port, timeout)`` and ``HTTPSConnection(host, port,
    key_file, cert_file, timeout)`` as in http.client; before, timeout was keyword-only."""
    conn = h2pool.HTTPConnection("127.0.0.1", 8080, 7.5, ("127.0.0.1", 0), 4096)
    assert (conn.port, conn.timeout, conn.source_address, conn.blocksize) == (
        8080,
        7.5,
        ("127.0.0.1", 0),
        4096,
    )
    sconn = h2pool.HTTPSConnection("127.0.0.1", 8443, None, None, 3)
    assert (sconn.port, sconn.timeout) == (8443, 3)


def test_deprecated_tls_arguments_warn_and_never_touch_the_shared_context(pki, tmp_path):
    cert = pki.ca.issue_cert("client.example")
    pem = tmp_path / "client.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with pytest.warns(DeprecationWarning, match="check_hostname are deprecated"):
        plain = h2pool.HTTPSConnection("127.0.0.1", 8443, check_hostname=False)
    with pytest.warns(DeprecationWarning):
        with_cert = h2pool.HTTPSConnection("127.0.0.1", 8443, cert_file=str(pem))
    shared = h2pool.HTTPSConnection("127.0.0.1", 8443).ssl_context
    assert with_cert.ssl_context is not shared
    assert plain.ssl_context is not shared  # its own check_hostname=False default
    assert with_cert.ssl_context.post_handshake_auth is False  # RFC 8740


@pytest.mark.timeout(30)
def test_source_address_binds_the_connection():
    """http.client's source_address: the server sees the request come from it. Before,
    NotImplementedError."""
    server = H1Server(None).start()
    try:
        conn = h2pool.HTTPConnection("127.0.0.1", server.port, 10, ("127.0.0.3", 0))
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"Hello, world!"
        conn.close()
    finally:
        server.stop()
    assert [host for host, _ in server.peers] == ["127.0.0.3"]


@pytest.mark.timeout(30)
def test_an_absolute_target_for_another_host_is_refused_not_rewritten(h1plain):
    """http.client sends ``GET http://other/x`` as given (a request for an HTTP proxy).
    The engine would send ``GET /x`` to this host instead: a different request. It is
    refused before anything is sent; an absolute target naming this host is sent."""
    c = h2pool.HTTPConnection("127.0.0.1", h1plain.port, timeout=10)
    with pytest.raises(NotImplementedError, match="absolute form"):
        c.request("GET", "http://elsewhere.example/q?x=1")
    with pytest.raises(NotImplementedError, match="absolute form"):
        c.putrequest("GET", f"http://127.0.0.1:{h1plain.port + 1}/q")
    assert h1plain.requests == []
    c.request("GET", f"http://127.0.0.1:{h1plain.port}/hello")
    assert c.getresponse().read() == HELLO
    assert h1plain.paths() == ["/hello"]
    c.close()
