"""HTTP/1.1 fallback: nginx without h2 on its TLS listener, and a scripted h11 server.

Every body is checked by length and sha256; every concurrent run counts successes and
the connections it used.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import threading
import time

import pytest
from servers.canned import canned
from servers.h1server import HELLO, H1Server, pattern
from servers.h2peer import server_tls_context
from servers.util import serve_in_thread, wait_until

import h2pool

FAST = h2pool.Timeout(connect=5, read=5, write=5, pool=10)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def h1server(pki):
    """Factory for started :class:`H1Server` instances (``tls=True``: ALPN http/1.1)."""
    servers: list[H1Server] = []

    def make(tls: bool = True, alpn: tuple[str, ...] = ("http/1.1",)) -> H1Server:
        ctx = None
        if tls:
            ctx = server_tls_context(pki.ca)
            ctx.set_alpn_protocols(list(alpn))  # () means: no ALPN extension at all
        server = H1Server(ctx).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# -- nginx, TLS without h2 ----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["/13b", "/1m", pytest.param("/100m", marks=pytest.mark.slow)])
def test_get_body_hash(nginx, make_client, content, path):
    client = make_client(timeout=FAST)
    r = client.get(nginx.http1_tls_url + path)
    assert r.status == 200
    assert r.reason == "OK"
    assert r.http_version == "HTTP/1.1"
    assert len(r.content) == content.size[path]
    assert sha256(r.content) == content.sha256[path]
    assert r.headers["Content-Length"] == str(content.size[path])


@pytest.mark.timeout(30)
def test_keepalive_reuses_one_connection(nginx, make_client, content):
    client = make_client(timeout=FAST)
    for _ in range(20):
        assert client.get(nginx.http1_tls_url + "/13b").content == HELLO
    stats = client.stats()
    assert stats["connections"] == 1
    assert stats["connections_opened"] == 1
    assert stats["bytes_received"] > 20 * len(HELLO)


@pytest.mark.timeout(60)
def test_threads_share_bounded_connections(nginx, make_client, content):
    limit = 4
    client = make_client(timeout=FAST, limits=h2pool.Limits(max_connections_per_origin=limit))
    url = nginx.http1_tls_url + "/1m"
    digest = content.sha256["/1m"]
    ok = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal ok
        for _ in range(50):
            r = client.get(url)
            assert r.http_version == "HTTP/1.1"
            assert sha256(r.content) == digest
            with lock:
                ok += 1

    with cf.ThreadPoolExecutor(16) as pool:
        for fut in [pool.submit(worker) for _ in range(16)]:
            fut.result(timeout=60)
    assert ok == 16 * 50
    stats = client.stats()
    assert 1 <= stats["connections"] <= limit
    assert stats["connections_opened"] <= limit


@pytest.mark.timeout(30)
def test_head_and_204(nginx, make_client, content):
    client = make_client(timeout=FAST)
    r = client.head(nginx.http1_tls_url + "/1m")
    assert r.status == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(content.size["/1m"])
    r = client.get(nginx.http1_tls_url + "/204")
    assert r.status == 204
    assert r.content == b""
    # The connection survived both bodiless answers.
    assert client.get(nginx.http1_tls_url + "/13b").content == HELLO
    assert client.stats()["connections_opened"] == 1


@pytest.mark.timeout(60)
def test_streamed_read_is_bounded(nginx, make_client, content):
    window = 256 * 1024
    client = make_client(timeout=FAST, limits=h2pool.Limits(stream_window=window))
    digest = hashlib.sha256()
    with client.stream("GET", nginx.http1_tls_url + "/100m") as r:
        assert r.http_version == "HTTP/1.1"
        first = r.read(65536)
        digest.update(first)
        # A reader that stops: the engine must stop reading the socket near one window.
        pipe = r._pipe
        deadline = time.monotonic() + 5
        last = -1
        while time.monotonic() < deadline:
            size = pipe._size
            if size == last:
                break
            last = size
            time.sleep(0.2)
        assert pipe._size <= window + 2 * 256 * 1024  # a window plus a read or two
        for chunk in r.iter_bytes(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == content.sha256["/100m"]


@pytest.mark.timeout(30)
def test_streamed_response_closed_early_frees_the_origin(nginx, make_client, content):
    client = make_client(timeout=FAST, limits=h2pool.Limits(max_connections_per_origin=1))
    with client.stream("GET", nginx.http1_tls_url + "/100m") as r:
        assert len(r.read(1000)) == 1000
    # The half-read connection was closed; the single slot serves the next request.
    r = client.get(nginx.http1_tls_url + "/1m")
    assert sha256(r.content) == content.sha256["/1m"]


@pytest.mark.timeout(30)
def test_http1_disabled_is_connect_error(nginx, make_client, h1server):
    client = make_client(http1=False, timeout=FAST)
    # nginx refuses the handshake when we offer only h2 (no_application_protocol alert).
    with pytest.raises(h2pool.ConnectError):
        client.get(nginx.http1_tls_url + "/13b")
    # A server without ALPN completes the handshake: we refuse to speak HTTP/1.1.
    server = h1server(alpn=())
    with pytest.raises(h2pool.ConnectError) as info:
        client.get(server.url + "/hello")
    assert not isinstance(info.value, h2pool.TLSError)
    assert "http1=False" in str(info.value)
    assert server.paths() == []


@pytest.mark.timeout(30)
def test_no_alpn_at_all_speaks_http1(h1server, make_client):
    server = h1server(alpn=())
    client = make_client(timeout=FAST)
    r = client.get(server.url + "/hello")
    assert r.http_version == "HTTP/1.1"
    assert r.content == HELLO


@pytest.mark.timeout(30)
def test_h2_listener_still_speaks_h2(nginx, make_client):
    client = make_client(timeout=FAST)
    assert client.get(nginx.https_url + "/13b").http_version == "HTTP/2"
    assert client.get(nginx.http1_tls_url + "/13b").http_version == "HTTP/1.1"


@pytest.mark.timeout(30)
def test_server_closing_idle_keepalive(nginx, make_client):
    """RELIABILITY D12: nginx closes the idle connection after 1 s; the next GET works."""
    client = make_client(timeout=FAST)
    assert client.get(nginx.http1_tls_url + "/ka1").content == b"short keep-alive\n"
    time.sleep(2)  # let nginx's keepalive_timeout (1 s) expire: the point of the test
    assert client.get(nginx.http1_tls_url + "/ka1").content == b"short keep-alive\n"
    assert client.stats()["connections_opened"] == 2


@pytest.mark.timeout(30)
def test_post_body_to_nginx(nginx, make_client):
    client = make_client(timeout=FAST)
    r = client.post(nginx.http1_tls_url + "/discard", body=b"x" * 1_000_000)
    assert r.status == 200
    assert r.content == b"discarded\n"
    assert r.headers["x-echo-method"] == "POST"


# -- the scripted HTTP/1.1 server ------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "cleartext"])
def test_chunked_upload_from_generator(h1server, make_client, tls):
    server = h1server(tls=tls)
    client = make_client(timeout=FAST)
    parts = [pattern(100_000 + i) for i in range(20)]
    expected = b"".join(parts)

    def gen():
        yield from parts

    r = client.post(server.url + "/echo", body=gen())
    assert r.http_version == "HTTP/1.1"
    assert r.headers["x-request-te"] == "chunked"
    assert r.headers["x-request-cl"] == ""
    assert r.headers["x-body-sha256"] == sha256(expected)
    assert r.content == expected


@pytest.mark.timeout(30)
def test_bytes_upload_has_content_length(h1server, make_client):
    server = h1server()
    client = make_client(timeout=FAST)
    body = pattern(3_000_000)
    r = client.put(server.url + "/echo", body=body)
    assert r.headers["x-request-cl"] == str(len(body))
    assert r.headers["x-request-te"] == ""
    assert sha256(r.content) == sha256(body)
    seen = server.requests[-1]
    assert seen.method == "PUT"
    assert seen.headers["host"] == f"localhost:{server.port}"


@pytest.mark.timeout(30)
def test_stale_keepalive_is_retried(h1server, make_client):
    """The server drops the reused connection when the request arrives (no response):
    an idempotent request is retried transparently on a new connection."""
    server = h1server()
    client = make_client(timeout=FAST)
    assert client.get(server.url + "/stale").content == HELLO
    r = client.get(server.url + "/hello")
    assert r.content == HELLO
    assert server.dropped == 1
    assert server.connections == 2
    assert server.paths() == ["/stale", "/hello"]


@pytest.mark.timeout(30)
def test_stale_keepalive_post_is_not_replayed(h1server, make_client):
    """A POST may have been processed: it fails with ConnectionLost instead (Go's rule)."""
    server = h1server()
    client = make_client(timeout=FAST)
    assert client.get(server.url + "/stale").content == HELLO
    with pytest.raises(h2pool.ConnectionLost):
        client.post(server.url + "/echo", body=b"once")
    assert server.dropped == 1


@pytest.mark.timeout(30)
def test_close_after_response_without_saying_so(h1server, make_client):
    server = h1server()
    client = make_client(timeout=FAST)
    for _ in range(5):
        assert client.get(server.url + "/close-after").content == HELLO
    assert server.connections == 5
    assert client.stats()["connections"] == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("tls", [True, False], ids=["tls-close-notify", "tcp"])
def test_body_delimited_by_eof(h1server, make_client, tls):
    """Over plain TCP the close is the body's end; over TLS, with a close_notify (a
    bare TCP close there is test_errors_tls's case)."""
    server = h1server(tls=tls)
    client = make_client(timeout=FAST)
    r = client.get(server.url + ("/eof-body-notify" if tls else "/eof-body"))
    assert r.content == HELLO * 3
    assert client.get(server.url + "/hello").content == HELLO
    assert server.connections == 2


@pytest.mark.timeout(30)
def test_chunked_response_with_trailers(h1server, make_client):
    server = h1server()
    client = make_client(timeout=FAST)
    r = client.get(server.url + "/trailers")
    assert r.content == HELLO
    assert r.trailers["x-checksum"] == "abc"
    with client.stream("GET", server.url + "/trailers") as r:
        assert r.read() == HELLO
        assert r.trailers["X-Checksum"] == "abc"


@pytest.mark.timeout(30)
def test_truncated_body_is_connection_lost(h1server, make_client):
    server = h1server()
    client = make_client(timeout=FAST)
    with pytest.raises(h2pool.ConnectionLost) as info:
        client.get(server.url + "/truncated")
    assert info.value.__cause__ is not None
    with client.stream("GET", server.url + "/truncated") as r, pytest.raises(h2pool.ConnectionLost):
        r.read()


@pytest.mark.timeout(30)
def test_malformed_response_is_protocol_error(h1server, make_client):
    server = h1server()
    client = make_client(timeout=FAST)
    with pytest.raises(h2pool.ProtocolError) as info:
        client.get(server.url + "/malformed")
    assert type(info.value.__cause__).__name__ == "RemoteProtocolError"
    assert client.get(server.url + "/hello").content == HELLO  # a new connection works


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["head", "trailers"])
@pytest.mark.parametrize("limit", [8_000, 64 * 1024])
def test_header_block_over_the_limit_is_protocol_error(make_client, where, limit):
    """max_header_list_size holds on HTTP/1 too, even when the whole head arrives in
    one read (h11 itself bounds only a head still incomplete); one byte under passes."""
    # RFC 9113's measure: name + value + 32 per field; the head also has content-length.
    room = limit - (len("x-big") + 32) - (len("content-length") + 1 + 32 if where == "head" else 0)
    for size, ok in ((room, True), (room + 1, False)):
        block = b"x-big: " + b"v" * size + b"\r\n"
        if where == "head":
            answer = b"HTTP/1.1 200 OK\r\n" + block + b"content-length: 2\r\n\r\nok"
        else:
            answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
            answer += block + b"\r\n"
        with serve_in_thread(canned(answer, close_after=True)) as server:
            client = make_client(timeout=FAST, limits=h2pool.Limits(max_header_list_size=limit))
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            if ok:
                assert client.get(url).content == b"ok"
            else:
                with pytest.raises(h2pool.ProtocolError, match="max_header_list_size"):
                    client.get(url)


@pytest.mark.timeout(30)
def test_read_timeout(h1server, make_client):
    server = h1server()
    client = make_client(timeout=h2pool.Timeout(connect=5, read=0.5, write=5, pool=5))
    t0 = time.monotonic()
    with pytest.raises(h2pool.ReadTimeout):
        client.get(server.url + "/stall")
    assert time.monotonic() - t0 < 4
    assert client.get(server.url + "/hello").content == HELLO


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/endless-1xx", "/trickled-head"])
def test_read_timeout_covers_the_whole_response_head(h1server, make_client, path):
    """Bytes of a head that never completes are not progress: 1xx responses every 0.1 s
    or a header line every 0.1 s still end in ReadTimeout, as over HTTP/2."""
    server = h1server()
    client = make_client(timeout=h2pool.Timeout(connect=5, read=1.0, write=5, pool=5))
    t0 = time.monotonic()
    with pytest.raises(h2pool.ReadTimeout):
        client.get(server.url + path)
    assert 0.9 < time.monotonic() - t0 < 5
    assert client.get(server.url + "/hello").content == HELLO


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/204-with-body", "/head-with-body"])
def test_bytes_after_a_bodiless_response_close_the_connection(h1server, make_client, path):
    """A body sent with a 204, or with the answer to a HEAD, belongs to no request: the
    connection is not reused, so the next response is not read after those bytes."""
    server = h1server()
    client = make_client(timeout=FAST)
    method = "HEAD" if path == "/head-with-body" else "GET"
    r = client.request(method, server.url + path)
    assert (r.status, r.content) == ((204, b"") if method == "GET" else (200, b""))
    r = client.post(server.url + "/echo", body=b"next")
    assert (r.status, r.content) == (200, b"next")
    assert server.connections == 2
    assert [seen.conn_index for seen in server.requests] == [0, 1]


@pytest.mark.timeout(30)
def test_a_response_on_an_idle_connection_closes_it(h1server, make_client):
    """A 408 (or anything) sent while no request is in flight answers nothing: the
    connection closes at once instead of holding its slot until keepalive_expiry."""
    server = h1server()
    client = make_client(
        timeout=h2pool.Timeout(connect=5, read=5, write=5, pool=2),
        limits=h2pool.Limits(max_connections_per_origin=1),
    )
    assert client.get(server.url + "/then-408").content == HELLO
    wait_until(lambda: client.stats()["connections"] == 0, timeout=10)
    assert client.get(server.url + "/hello").content == HELLO
    assert server.connections == 2


@pytest.mark.timeout(30)
def test_early_response_during_upload(h1server, make_client):
    server = h1server()
    client = make_client(timeout=FAST)
    body = pattern(32 * 1024 * 1024)
    r = client.post(server.url + "/early", body=body)
    assert r.status == 413
    assert r.content == b"big!"
    assert client.get(server.url + "/hello").content == HELLO


@pytest.mark.timeout(30)
def test_cancel_in_flight_closes_connection(h1server, make_client):
    server = h1server()
    client = make_client(timeout=FAST)
    fut = client.submit("GET", server.url + "/stall")
    assert server.wait_for(lambda s: "/stall" in s.paths())
    assert fut.cancel()
    assert client.get(server.url + "/hello").content == HELLO
    assert server.connections == 2


@pytest.mark.timeout(30)
def test_server_drop_before_response_on_fresh_connection(h1server, make_client):
    """A fresh connection dropped after the request was written: not provably unprocessed,
    and not a reused connection, so it is not retried."""
    server = h1server()
    client = make_client(timeout=FAST)
    with pytest.raises(h2pool.ConnectionLost):
        client.get(server.url + "/drop")
    assert server.dropped == 1


@pytest.mark.timeout(30)
def test_large_response_headers_over_limit(h1server, make_client):
    server = h1server()
    client = make_client(timeout=FAST, limits=h2pool.Limits(max_header_list_size=65536))
    r = client.get(server.url + "/bytes/10")
    assert r.content == pattern(10)


@pytest.mark.timeout(30)
def test_write_error_before_any_body_byte_retries_with_a_live_body(
    h1server, make_client, monkeypatch
):
    # The first send of a connection fails (a server that closed an idle keep-alive
    # connection as we wrote): nothing was written, so the request goes again on a new
    # connection. Its streamed body had not produced a byte yet; the retry must carry
    # that body, not a pipe already given up (which left the request waiting forever).
    from h2pool import _connection

    real_send = _connection.OutputBuffer.send
    failed: list[int] = []

    def send_once_failing(self, sock):
        if not failed:
            failed.append(1)
            return 0, BrokenPipeError(32, "Broken pipe")
        return real_send(self, sock)

    monkeypatch.setattr(_connection.OutputBuffer, "send", send_once_failing)

    def body():
        time.sleep(0.3)  # a producer whose first chunk comes a little later
        yield b"hello "
        yield b"world"

    server = h1server(tls=False)
    client = make_client(timeout=h2pool.Timeout(3.0))
    r = client.post(server.url + "/echo", body=body())
    assert r.status == 200
    assert r.content == b"hello world"
    assert failed == [1]
    assert client.stats()["retries"] == 1


@pytest.mark.timeout(30)
def test_header_names_go_out_in_canonical_case(h1server, make_client):
    """HTTP/1.1 servers and code written against http.client see ``Host``,
    ``Content-Length``, ``Transfer-Encoding``, and the user's own names capitalised
    per word; before, every name went out lower-case as HTTP/2 requires."""
    server = h1server(tls=False)
    client = make_client(timeout=FAST)
    r = client.post(
        server.url + "/echo",
        headers={"x-trace-id": "1", "AUTHORIZATION": "Bearer t"},
        body=b"abc",
    )
    assert r.status == 200
    names = server.requests[-1].raw_names
    assert names[0] == b"Host"
    for want in (b"User-Agent", b"Accept", b"Content-Length", b"X-Trace-Id", b"Authorization"):
        assert want in names
    assert all(n[:1].isupper() for n in names), names

    def gen():
        yield b"abc"

    client.post(server.url + "/echo", body=gen())
    assert b"Transfer-Encoding" in server.requests[-1].raw_names


@pytest.mark.timeout(30)
def test_close_inside_the_response_head_is_connection_lost(h1server, make_client):
    """A server that closes after part of the head: ConnectionLost, marked as a begun
    response (the stdlib-shaped layers report it as a short body)."""
    server = h1server(tls=False)
    client = make_client(timeout=FAST)
    with pytest.raises(h2pool.ConnectionLost, match="response head") as info:
        client.get(server.url + "/half-head")
    assert info.value._partial_response is True
    with pytest.raises(h2pool.ConnectionLost) as info:
        client.get(server.url + "/drop")
    assert info.value._partial_response is False


@pytest.fixture
def http10_server():
    """The stdlib's own HTTP server, as it answers by default: HTTP/1.0, Content-Length,
    the connection closed after each response."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"one-oh:" + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with serve_in_thread(server):
        yield server


@pytest.mark.timeout(30)
def test_an_http10_response_says_so_and_its_connection_is_not_reused(http10_server):
    port = http10_server.server_address[1]
    with h2pool.Client(timeout=FAST) as client:
        for i in range(3):
            r = client.get(f"http://127.0.0.1:{port}/{i}")
            assert (r.status, r.http_version, r.content) == (
                200,
                "HTTP/1.0",
                f"one-oh:/{i}".encode(),
            )
        assert client.stats()["connections_opened"] == 3
    conn = h2pool.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/x")
        resp = conn.getresponse()
        # http.client's integer form: 10, as the stdlib's HTTPResponse.version says
        assert (resp.status, resp.version, resp.read()) == (200, 10, b"one-oh:/x")
    finally:
        conn.close()
