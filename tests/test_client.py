"""The Client against real servers: bodies, concurrency, futures, streaming, validation.

Written against /shared/API.md. Every body is checked by sha256 against the
generated content tree; every concurrent run counts its successes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
import io
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import h2pool
from h2pool._headers import Headers

HELLO = b"Hello, world!"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["nginx-tls", "nginx-h2c", "nghttpd-tls", "nghttpd-h2c"])
def origin(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """(base URL, extra Client kwargs) for each real server and transport."""
    server_name, transport = request.param.split("-")
    server = request.getfixturevalue(server_name)
    if transport == "h2c":
        return server.h2c_url, {"http2_prior_knowledge": True}
    return server.https_url, {}


# -- bodies from real servers -------------------------------------------------


@pytest.mark.parametrize("path", ["/13b", "/1m", pytest.param("/100m", marks=[pytest.mark.slow])])
def test_get_body_hash(origin, make_client, content, path):
    base, kwargs = origin
    client = make_client(**kwargs)
    r = client.get(base + path)
    assert r.status == 200
    assert r.reason == "OK"
    assert r.http_version == "HTTP/2"
    assert r.url == base + path
    assert len(r.content) == content.size[path]
    assert sha256(r.content) == content.sha256[path]
    assert r.headers["content-length"] == str(content.size[path])
    assert r.headers["Content-Length"] == str(content.size[path])  # case-insensitive


def test_small_body_text_and_json(nginx, make_client, content):
    client = make_client()
    r = client.get(nginx.https_url + "/13b")
    assert r.content == content.data["/13b"] == HELLO
    assert r.text == "Hello, world!"
    r = client.get(nginx.https_url + "/data.json")
    assert r.json() == {"name": "h2pool", "numbers": [1, 2, 3], "ok": True}
    assert len(r.trailers) == 0


def test_request_method_spelling(nginx, make_client):
    client = make_client()
    r = client.request("GET", nginx.https_url + "/echo-headers")
    assert r.status == 200
    assert r.headers["x-echo-method"] == "GET"
    assert r.content == b"echo\n"


def test_headers_multidict(nginx, make_client):
    client = make_client()
    r = client.get(nginx.https_url + "/13b")
    assert "content-length" in r.headers
    assert "CONTENT-LENGTH" in r.headers
    assert r.headers.get("x-not-there") is None
    assert r.headers.get("x-not-there", "dflt") == "dflt"
    assert r.headers.get_all("content-length") == ["13"]
    names = [name.lower() for name in r.headers]
    assert "content-length" in names
    assert ("content-length", "13") in [(k.lower(), v) for k, v in r.headers.items()]


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~", min_size=1)


_VALUE = st.one_of(st.binary(max_size=12), st.text(max_size=6).map(str.encode))


@pytest.mark.timeout(60)
@settings(max_examples=300, deadline=None)
@given(fields=st.lists(st.tuples(_TOKEN, _VALUE), max_size=8), data=st.data())
def test_received_headers_answer_the_same_before_and_after_decoding(fields, data):
    """A response's fields stay bytes until looked at, and a lookup by name then compares
    bytes: it must find exactly what the decoded headers find, values decoded alike."""
    names = [n for n, _ in fields] + ["content-encoding", "k", "\u212a"]
    asked = data.draw(st.sampled_from(names).map(lambda n: n.upper() if len(n) % 2 else n))
    raw = [(n.encode(), v) for n, v in fields]
    fresh = Headers._from_raw(list(raw))
    decoded = Headers._from_raw(list(raw))
    list(decoded.items())  # decode every field first
    assert fresh.get_all(asked) == decoded.get_all(asked)
    assert list(fresh.items()) == list(decoded.items())  # the lookup changed nothing


@pytest.mark.timeout(240)
def test_many_threads_share_one_client(nginx, make_client):
    """64 threads x 200 GETs of /13b on one client: all succeed over a few connections."""
    threads, per_thread = 64, 200
    client = make_client(timeout=h2pool.Timeout(connect=10, read=60, write=60, pool=60))
    url = nginx.https_url + "/13b"
    barrier = threading.Barrier(threads)
    ok = [0] * threads
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            try:
                r = client.get(url)
            except BaseException as exc:
                errors.append(exc)
                return
            if r.status == 200 and r.content == HELLO:
                ok[i] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    assert sum(ok) == threads * per_thread == 12800
    stats = client.stats()
    # nginx allows 128 concurrent streams, so 64 callers fit on one connection;
    # a couple more may be dialled while the first is still connecting.
    assert 1 <= stats["connections"] <= 4


def test_submit_as_completed(origin, make_client, content):
    base, kwargs = origin
    client = make_client(**kwargs)
    paths = ["/13b", "/1m"] * 20
    futures = {client.submit("GET", base + p): p for p in paths}
    done = 0
    for fut in cf.as_completed(futures, timeout=60):
        r = fut.result()
        assert r.status == 200
        assert sha256(r.content) == content.sha256[futures[fut]]
        done += 1
    assert done == len(paths)


@pytest.mark.timeout(60)
def test_a_body_in_many_small_tls_records_arrives_whole(h2peer, make_client):
    """Each DATA frame is written alone, so it is one small TLS record, and they come
    in bursts: a read of one such record must not end the reading while more wait in
    the socket, nor wait for a next select() that says nothing new."""
    parts = [bytes([i % 251]) * (1 + i % 97) for i in range(1500)]
    body = b"".join(parts)

    def trickle(conn, sid, req):
        conn.send_headers(sid, 200, [("content-length", str(len(body)))])
        for part in parts:
            with conn.lock:
                conn.h2.send_data(sid, part)
                conn._flush_locked()  # one sendall, so one TLS record, per frame
        with conn.lock:
            conn.h2.end_stream(sid)
            conn._flush_locked()

    peer = h2peer(routes={"/small-records": trickle}, tls=True)
    client = make_client(timeout=20.0)
    for _ in range(3):
        r = client.get(peer.url + "/small-records")
        assert r.status == 200
        assert sha256(r.content) == sha256(body)


def test_submit_returns_without_waiting(h2peer, make_client):
    peer = h2peer(routes={"/stall": "stall_headers"})
    client = make_client(http2_prior_knowledge=True)
    fut = client.submit("GET", peer.h2c_url + "/stall")
    assert isinstance(fut, cf.Future)
    peer.wait_requests(1)
    assert not fut.done()
    assert fut.cancel()


def test_asyncio_wrap_future(nginx, make_client, content):
    client = make_client()
    url = nginx.https_url + "/1m"

    async def main() -> list[h2pool.Response]:
        futs = [asyncio.wrap_future(client.submit("GET", url)) for _ in range(16)]
        return await asyncio.wait_for(asyncio.gather(*futs), timeout=60)

    responses = asyncio.run(main())
    assert len(responses) == 16
    assert all(r.status == 200 for r in responses)
    assert {sha256(r.content) for r in responses} == {content.sha256["/1m"]}


# -- streaming ------------------------------------------------------------------


def test_stream_iter_bytes(origin, make_client, content):
    base, kwargs = origin
    client = make_client(**kwargs)
    digest, total, chunks = hashlib.sha256(), 0, 0
    with client.stream("GET", base + "/1m") as r:
        assert r.status == 200
        assert r.http_version == "HTTP/2"
        for chunk in r.iter_bytes():
            assert isinstance(chunk, bytes)
            digest.update(chunk)
            total += len(chunk)
            chunks += 1
    assert total == 1 << 20
    assert digest.hexdigest() == content.sha256["/1m"]


def test_stream_iter_bytes_chunk_size(nginx, make_client, content):
    client = make_client()
    digest, total = hashlib.sha256(), 0
    with client.stream("GET", nginx.https_url + "/1m") as r:
        for chunk in r.iter_bytes(chunk_size=10_000):
            assert 0 < len(chunk) <= 10_000
            digest.update(chunk)
            total += len(chunk)
    assert total == 1 << 20
    assert digest.hexdigest() == content.sha256["/1m"]


def test_stream_read_amt(nginx, make_client, content):
    client = make_client()
    digest, total = hashlib.sha256(), 0
    with client.stream("GET", nginx.https_url + "/1m") as r:
        while True:
            chunk = r.read(65536)
            assert len(chunk) <= 65536
            if not chunk:
                break
            digest.update(chunk)
            total += len(chunk)
        assert r.read(65536) == b""
    assert total == 1 << 20
    assert digest.hexdigest() == content.sha256["/1m"]


def test_request_stream_true_then_read_all(nghttpd, make_client, content):
    client = make_client()
    r = client.request("GET", nghttpd.https_url + "/1m", stream=True)
    try:
        assert r.status == 200
        assert sha256(r.read()) == content.sha256["/1m"]
    finally:
        r.close()


@pytest.mark.slow
def test_stream_100m_iter_bytes(nginx, make_client, content):
    client = make_client()
    digest, total = hashlib.sha256(), 0
    with client.stream("GET", nginx.https_url + "/100m") as r:
        for chunk in r.iter_bytes():
            digest.update(chunk)
            total += len(chunk)
    assert total == 100 << 20
    assert digest.hexdigest() == content.sha256["/100m"]


def test_stream_closed_early_keeps_client_usable(nginx, make_client):
    client = make_client()
    with client.stream("GET", nginx.https_url + "/100m") as r:
        assert len(r.read(1000)) == 1000
    # Leaving the block without reading the rest resets the stream; the
    # connection stays usable for the next request.
    assert client.get(nginx.https_url + "/13b").content == HELLO
    # What was left of the body is gone: reading it raises rather than passing a
    # body cut short for a complete (empty) one.
    for read in (lambda: r.content, r.read, lambda: r.read(10), lambda: list(r.iter_bytes())):
        with pytest.raises(h2pool.StreamClosed):
            read()
    assert isinstance(h2pool.StreamClosed("x"), RuntimeError)


def test_a_closed_response_that_lost_nothing_reads_as_before(nginx, make_client):
    """Read to its end, or with no body at all: closing discards nothing, and the
    reads after it say so with b"" as they did."""
    client = make_client()
    with client.stream("GET", nginx.https_url + "/13b") as r:
        assert r.read() == HELLO
    assert r.content == b"" and r.read() == b""
    for _ in range(20):  # closed at once: the end of the stream may not be seen yet
        with client.stream("HEAD", nginx.https_url + "/13b") as r:
            pass
        assert r.content == b""
    with client.stream("GET", nginx.https_url + "/13b") as r:
        assert r.read(5) == HELLO[:5]
    with pytest.raises(h2pool.StreamClosed):
        r.read()


# -- module-level API -----------------------------------------------------------


@pytest.mark.no_leak_check  # the default client lives until interpreter exit
def test_default_client_is_shared():
    assert h2pool.default_client() is h2pool.default_client()
    assert isinstance(h2pool.default_client(), h2pool.Client)


@pytest.mark.no_leak_check  # the default client lives until interpreter exit
def test_module_get_verifies_with_default_trust(nginx):
    # The default client trusts certifi's bundle, not the test CA: proof that
    # the module-level functions verify certificates by default.
    with pytest.raises(h2pool.TLSError):
        h2pool.get(nginx.https_url + "/13b")
    with pytest.raises(h2pool.TLSError):
        h2pool.request("GET", nginx.https_url + "/13b")


# -- request headers ------------------------------------------------------------


def test_default_headers_are_sent(nginx, make_client):
    client = make_client(headers={"User-Agent": "h2pool-test/1.0", "X-Test": "default"})
    r = client.get(nginx.https_url + "/echo-headers")
    assert r.headers["x-echo-ua"] == "h2pool-test/1.0"
    assert r.headers["x-echo-test"] == "default"
    r = client.get(nginx.https_url + "/echo-headers", headers={"X-Test": "per-request"})
    assert r.headers["x-echo-test"] == "per-request"
    assert r.headers["x-echo-ua"] == "h2pool-test/1.0"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Test": "value-1"},
        [("X-Test", "value-1")],
        [(b"x-test", b"value-1")],
        h2pool.Headers([("X-Test", "value-1")]),
    ],
    ids=["dict", "pairs", "bytes", "Headers"],
)
def test_header_argument_types(nginx, make_client, headers):
    client = make_client()
    r = client.get(nginx.https_url + "/echo-headers", headers=headers)
    assert r.headers["x-echo-test"] == "value-1"


def test_host_header_override(nginx, make_client):
    client = make_client()
    r = client.get(nginx.https_url + "/echo-headers")
    assert r.headers["x-echo-host"] == "localhost"
    r = client.get(nginx.https_url + "/echo-headers", headers={"Host": "example.invalid"})
    assert r.status == 200
    assert r.headers["x-echo-host"] == "example.invalid"


def test_peer_sees_method_path_and_authority(h2peer, make_client):
    peer = h2peer()
    client = make_client(http2_prior_knowledge=True)
    assert client.get(peer.h2c_url + "/a/b?x=1&y=2").content == HELLO
    (req,) = peer.wait_requests(1)
    assert req.method == "GET"
    assert req.path == "/a/b?x=1&y=2"
    assert req.header(":scheme") == "http"
    assert req.header(":authority") == f"127.0.0.1:{peer.port}"


# -- status codes and methods ---------------------------------------------------


def test_raise_for_status(nginx, make_client):
    client = make_client()
    r = client.get(nginx.https_url + "/404")
    assert r.status == 404
    assert r.reason == "Not Found"
    with pytest.raises(h2pool.HTTPStatusError) as info:
        r.raise_for_status()
    assert info.value.response.status == 404
    assert isinstance(info.value, h2pool.H2PoolError)
    with pytest.raises(h2pool.HTTPStatusError) as info:
        client.get(nginx.https_url + "/500").raise_for_status()
    assert info.value.response.status == 500
    client.get(nginx.https_url + "/13b").raise_for_status()  # 2xx: no error
    client.get(nginx.https_url + "/204").raise_for_status()


def test_204_no_content(nginx, make_client):
    client = make_client()
    r = client.get(nginx.https_url + "/204")
    assert r.status == 204
    assert r.content == b""


def test_head_has_no_body(origin, make_client):
    base, kwargs = origin
    client = make_client(**kwargs)
    r = client.head(base + "/1m")
    assert r.status == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(1 << 20)


def test_options_and_delete_reach_server(h2peer, make_client):
    peer = h2peer()
    client = make_client(http2_prior_knowledge=True)
    assert client.options(peer.h2c_url + "/o").status == 200
    assert client.delete(peer.h2c_url + "/d").status == 200
    assert [(r.method, r.path) for r in peer.wait_requests(2)] == [
        ("OPTIONS", "/o"),
        ("DELETE", "/d"),
    ]


# -- request bodies ---------------------------------------------------------------


def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize(
    "make_body",
    [
        lambda data: data,
        lambda data: io.BytesIO(data),
        lambda data: _chunks(data, 7000),
        lambda data: [data[:10], b"", data[10:]],
    ],
    ids=["bytes", "file", "generator", "list"],
)
@pytest.mark.parametrize("size", [13, 1 << 20])
def test_post_echo(nghttpd_echo, make_client, make_body, size):
    data = hashlib.sha256(b"seed").digest() * (size // 32) + b"x" * (size % 32)
    client = make_client()
    r = client.post(nghttpd_echo.https_url + "/", body=make_body(data))
    assert r.status == 200
    assert len(r.content) == size
    assert sha256(r.content) == sha256(data)


def test_post_str_body_is_utf8(nghttpd_echo, make_client):
    client = make_client()
    text = "héllo wörld — ☃"
    r = client.post(nghttpd_echo.https_url + "/", body=text)
    assert r.content == text.encode("utf-8")


def test_put_echo(nghttpd_echo, make_client):
    client = make_client()
    r = client.put(nghttpd_echo.https_url + "/", body=b"payload-put")
    assert r.content == b"payload-put"


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_body_methods_reach_peer(h2peer, make_client, method):
    # nghttpd echoes only POST and PUT; the peer echoes any method.
    peer = h2peer(routes={"/up": "echo"})
    client = make_client(http2_prior_knowledge=True)
    r = getattr(client, method)(peer.h2c_url + "/up", body=b"payload-" + method.encode())
    assert r.content == b"payload-" + method.encode()
    (req,) = peer.wait_requests(1)
    assert req.method == method.upper()


def test_post_to_nginx(nginx, make_client):
    client = make_client()
    r = client.post(nginx.https_url + "/discard", body=b"z" * (1 << 20))
    assert r.status == 200
    assert r.headers["x-echo-method"] == "POST"
    assert r.content == b"discarded\n"


def test_peer_receives_body_bytes(h2peer, make_client):
    peer = h2peer(routes={"/up": "echo"})
    client = make_client(http2_prior_knowledge=True)
    body = bytes(range(256)) * 1000
    r = client.post(peer.h2c_url + "/up", body=body)
    assert r.content == body
    (req,) = peer.requests_for("/up")
    assert req.body == body
    assert req.header("content-length") in (None, str(len(body)))


# -- stats ------------------------------------------------------------------------


def test_stats_snapshot(nginx, make_client):
    client = make_client()
    assert client.stats()["connections"] == 0
    for _ in range(3):
        assert client.get(nginx.https_url + "/1m").status == 200
    stats = client.stats()
    assert stats["connections"] == 1
    assert sum(stats["origins"].values()) == 1
    assert stats["open_streams"] == 0
    assert stats["queued"] == 0
    assert stats["bytes_received"] >= 3 << 20
    assert stats["bytes_sent"] > 0


# -- validation in the caller's thread ----------------------------------------------

BAD_URLS = [
    "ftp://localhost/x",
    "localhost/x",
    "//localhost/x",
    "http:///path",
    "https://",
    "http://:8080/x",
    "http://local host/x",
    "http://localhost/a b",
    "http://localhost/a\r\nX-Injected: 1",
    "http://localhost/a\nb",
    "http://localhost/\x00",
    "http://localhost:99999/",
    "http://localhost:abc/",
    "http://localhost:-1/",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_invalid_url(make_client, url):
    client = make_client()
    with pytest.raises(h2pool.InvalidURL) as info:
        client.get(url)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, h2pool.H2PoolError)
    with pytest.raises(h2pool.InvalidURL):
        client.submit("GET", url)  # raised in the caller, not through the future
    assert client.stats()["connections"] == 0


BAD_HEADERS = [
    ("", "v"),
    ("x:y", "v"),
    (":path", "/evil"),
    ("x y", "v"),
    ("x\ty", "v"),
    ("x\x01", "v"),
    ("x\x7f", "v"),
    ("x(y)", "v"),
    ("x@y", "v"),
    ("x\r\ny", "v"),
    ("x-test", "a\rb"),
    ("x-test", "a\nb"),
    ("x-test", "a\r\nX-Injected: 1"),
    ("x-test", "a\x00b"),
    (b"x-test", b"a\nb"),
    (b"x y", b"v"),
]


@pytest.mark.parametrize("name,value", BAD_HEADERS)
def test_invalid_header_nothing_sent(h2peer, make_client, name, value):
    peer = h2peer()
    client = make_client(http2_prior_knowledge=True)
    url = peer.h2c_url + "/x"
    with pytest.raises(h2pool.InvalidHeader) as info:
        client.get(url, headers={name: value})
    assert isinstance(info.value, ValueError)
    with pytest.raises(h2pool.InvalidHeader):
        client.submit("GET", url, headers=[(name, value)])
    # The client still works and the server saw exactly the good request.
    assert client.get(url).content == HELLO
    reqs = peer.wait_requests(1)
    assert len(reqs) == 1


@pytest.mark.parametrize("name,value", BAD_HEADERS[:4])
def test_invalid_default_header_rejected(make_client, nginx, name, value):
    # Either the constructor rejects it, or every request does; never the wire.
    try:
        client = make_client(headers={name: value})
    except h2pool.InvalidHeader:
        return
    with pytest.raises(h2pool.InvalidHeader):
        client.get(nginx.https_url + "/13b")


@pytest.mark.timeout(30)
def test_stats_has_one_shape_before_during_and_after(nginx, make_client):
    import typing

    keys = set(typing.get_type_hints(h2pool.Stats))
    client = make_client()
    before = client.stats()
    assert set(before) == keys
    assert before["retries"] == before["resets_sent"] == before["connections_closed"] == 0
    assert before["per_origin"] == {}
    assert client.get(nginx.https_url + "/13b").status == 200
    during = client.stats()
    assert set(during) == keys
    (origin,) = during["per_origin"].values()
    assert set(origin) == set(typing.get_type_hints(h2pool._pool.OriginStats))
    (conn,) = origin["connections"]
    assert conn["http_version"] == "HTTP/2" and conn["requests"] == 1
    client.close()
    after = client.stats()
    assert set(after) == keys
    assert after["connections"] == 0 and after["connections_opened"] == 1


@pytest.mark.timeout(30)
def test_stats_racing_close_answers_at_once(nginx, make_client, monkeypatch):
    """stats() that saw the loop running, then queued its question after the loop's
    last turn, is answered by the drain of the stopped queue (the counters as they
    stand), not after its 10 s timeout with zeros."""
    import time

    from h2pool._loop import IOLoop

    client = make_client()
    assert client.get(nginx.https_url + "/13b").status == 200
    loop = client._runtime.loop
    client.close()  # the loop has stopped and its thread is joined
    real = IOLoop.stopping
    seen: list[bool] = []

    def stopping(self: IOLoop) -> bool:
        if self is loop and not seen:
            seen.append(True)
            return False  # the first look: just before close() stopped the loop
        return bool(real.fget(self))  # type: ignore[attr-defined]

    monkeypatch.setattr(IOLoop, "stopping", property(stopping))
    t0 = time.monotonic()
    snap = client.stats()
    assert time.monotonic() - t0 < 2.0
    assert snap["connections_opened"] == 1 and snap["connections"] == 0
    assert snap["bytes_received"] > 0


@pytest.mark.timeout(30)
def test_local_address_binds_each_connection(make_client):
    """Client(local_address=...) binds the socket before connecting: the server sees
    that source address (127.0.0.2 is loopback on Linux). Before, there was no way to."""
    from servers.h1server import H1Server

    server = H1Server(None).start()
    try:
        client = make_client(local_address="127.0.0.2")
        r = client.get(f"http://127.0.0.1:{server.port}/hello")
        assert r.content == b"Hello, world!"
    finally:
        server.stop()
    assert [host for host, _ in server.peers] == ["127.0.0.2"]


def test_local_address_is_checked_at_construction():
    with pytest.raises(ValueError, match="IP address"):
        h2pool.Client(local_address="localhost")
    with pytest.raises(TypeError):
        h2pool.Client(local_address=("127.0.0.1", "80"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        h2pool.Client(local_address=("127.0.0.1", 70000))


@pytest.mark.timeout(60)
def test_waiter_completes_once_whoever_races():
    """The blocking path's Waiter: a response and a cancel (Ctrl-C in the waiting
    thread) racing on it complete it once: either the caller gets the result or the
    I/O thread's set_result is refused and the stream reset hook runs, never both."""
    import concurrent.futures as _cf
    import sys
    import threading as _th

    from h2pool._request import Waiter

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        outcomes = {"result": 0, "cancelled": 0}
        for _ in range(2000):
            w = Waiter()
            hooks: list[int] = []
            w._on_cancel = lambda hooks=hooks: hooks.append(1)
            refused: list[bool] = []

            def complete(w=w, refused=refused):
                try:
                    w.set_result("r")
                except _cf.InvalidStateError:
                    refused.append(True)

            t = _th.Thread(target=complete)
            t.start()
            cancelled = w.cancel()
            t.join()
            if cancelled:
                assert refused == [True] and hooks == [1]
                outcomes["cancelled"] += 1
            else:
                assert refused == [] and hooks == [] and w.wait() == "r"
                outcomes["result"] += 1
        assert sum(outcomes.values()) == 2000
    finally:
        sys.setswitchinterval(old)
    w = Waiter()
    w.set_exception(h2pool.ReadTimeout("slow"))
    with pytest.raises(h2pool.ReadTimeout):
        w.wait()
