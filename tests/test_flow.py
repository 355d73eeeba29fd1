"""Flow control on downloads: bounded memory for slow readers, no starvation, trailers.

Large bodies come from nginx and nghttpd (``/100m`` from the content tree,
the generated sparse ``/256m`` and ``/1g``); behaviour a real server cannot be made
to show (closing mid-body and checking the RST_STREAM it provokes, wrong
Content-Length) comes from the scripted peer. Every body is hash-checked; memory is
the process's VmRSS, sampled while the reader pauses.
"""

from __future__ import annotations

import gc
import hashlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import h2.errors
import pytest
from servers.h2peer import HELLO, PeerConnection, Request
from servers.hashpeer import blob_route
from servers.util import rss

import h2pool

MIB = 1 << 20
KIB = 1 << 10
CANCEL = int(h2.errors.ErrorCodes.CANCEL)
PROTOCOL_ERROR = int(h2.errors.ErrorCodes.PROTOCOL_ERROR)
# What RSS may grow beyond the buffered window: allocator slack, h2/TLS buffers,
# bytes objects in flight between the I/O thread and the reader.
RSS_SLACK = 16 * MIB


def received(client: h2pool.Client) -> int:
    return int(client.stats()["bytes_received"])


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (a state no event announces, such as byte counters)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


def hash_stream(chunks: Iterator[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    n = 0
    for chunk in chunks:
        digest.update(chunk)
        n += len(chunk)
    return digest.hexdigest(), n


def read_loop(r: h2pool.Response, amt: int) -> Iterator[bytes]:
    while chunk := r.read(amt):
        assert len(chunk) <= amt
        yield chunk


@pytest.fixture(params=["nginx-tls", "nginx-h2c", "nghttpd-tls"])
def big_origin(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    server_name, transport = request.param.split("-")
    server = request.getfixturevalue(server_name)
    if transport == "h2c":
        return server.h2c_url, {"http2_prior_knowledge": True}
    return server.https_url, {}


# -- large streamed downloads ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_streamed_100m_sha256(big_origin, content, make_client):
    base, kwargs = big_origin
    client = make_client(**kwargs)
    with client.stream("GET", base + "/100m") as r:
        assert r.status == 200
        assert r.headers["content-length"] == str(100 * MIB)
        digest, n = hash_stream(r.iter_bytes())
    assert n == 100 * MIB
    assert digest == content.sha256["/100m"]
    assert client.stats()["connections_opened"] == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["iter_bytes-64k", "read-100000"])
def test_streamed_100m_chunked_reads(nginx, content, make_client, how):
    """Fixed-size reads that straddle DATA frames: every chunk is exactly the size asked
    for, except the last one."""
    client = make_client()
    with client.stream("GET", nginx.https_url + "/100m") as r:
        if how == "iter_bytes-64k":
            sizes = []
            digest = hashlib.sha256()
            for chunk in r.iter_bytes(64 * KIB):
                sizes.append(len(chunk))
                digest.update(chunk)
            assert set(sizes) == {64 * KIB}  # 100 MiB is a multiple of 64 KiB
            result = digest.hexdigest(), sum(sizes)
        else:
            result = hash_stream(read_loop(r, 100_000))
        assert r.read() == b""
    assert result == (content.sha256["/100m"], 100 * MIB)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_streamed_1g_sha256_bounded_memory(nginx, bigfiles, make_client):
    """1 GiB (generated, sparse) through one stream; RSS stays within a window of it."""
    client = make_client()
    assert client.get(nginx.https_url + "/13b").content == HELLO  # connection up first
    gc.collect()
    base = rss()
    peak = base
    digest = hashlib.sha256()
    n = 0
    with client.stream("GET", nginx.https_url + "/1g") as r:
        assert r.headers["content-length"] == str(1 << 30)
        for chunk in r.iter_bytes():
            digest.update(chunk)
            n += len(chunk)
            if n % (64 * MIB) < len(chunk):
                peak = max(peak, rss())
    assert n == 1 << 30
    assert digest.hexdigest() == bigfiles.sha256["/1g"]
    assert peak - base < h2pool.Limits().stream_window + RSS_SLACK, (base, peak)


# -- slow readers ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("window", [None, 256 * KIB], ids=["default-window", "256k-window"])
def test_slow_reader_holds_at_most_one_window(nginx, bigfiles, make_client, window):
    """Read 1 MiB of a 256 MiB body, pause 3 s: the server can only have sent one stream
    window beyond what was read, and RSS does not grow by more than that (plus slack).
    Then the rest reads to the right hash."""
    limits = h2pool.Limits() if window is None else h2pool.Limits(stream_window=window)
    window = limits.stream_window
    client = make_client(limits=limits)
    assert client.get(nginx.https_url + "/13b").content == HELLO
    gc.collect()
    base_rss = rss()
    base_rx = received(client)
    digest = hashlib.sha256()
    with client.stream("GET", nginx.https_url + "/256m") as r:
        first = r.read(MIB)
        assert len(first) == MIB
        digest.update(first)
        samples = []
        for _ in range(6):
            time.sleep(0.5)  # we are the slow reader
            samples.append((rss(), received(client) - base_rx))
        for chunk in r.iter_bytes():  # resume
            digest.update(chunk)
    assert digest.hexdigest() == bigfiles.sha256["/256m"]
    rss_growth = max(s[0] for s in samples) - base_rss
    rx = [s[1] for s in samples]
    # One window beyond the MiB read, plus frame headers (9 bytes per 16 KiB frame)
    # and the response HEADERS.
    assert max(rx) <= MIB + window + 16 * KIB, rx
    assert rx[-1] == rx[-2] == rx[-3], f"data kept flowing to a paused reader: {rx}"
    assert rss_growth < window + RSS_SLACK, (base_rss, samples)


# -- stalled and abandoned streams ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_stalled_stream_does_not_block_sibling(nginx, content, bigfiles, make_client):
    """A stream nobody reads fills its own window only: a sibling on the same
    connection downloads 100 MiB (buffered and streamed) to the right hash meanwhile,
    and the stalled one still reads to its end afterwards."""
    client = make_client()
    with client.stream("GET", nginx.https_url + "/256m") as stalled:
        assert stalled.status == 200
        r = client.get(nginx.https_url + "/100m")
        assert hashlib.sha256(r.content).hexdigest() == content.sha256["/100m"]
        with client.stream("GET", nginx.https_url + "/100m") as s:
            assert hash_stream(s.iter_bytes()) == (content.sha256["/100m"], 100 * MIB)
        stats = client.stats()
        assert stats["connections"] == 1
        assert stats["connections_opened"] == 1
        assert stats["open_streams"] == 1  # the stalled one
        assert hash_stream(stalled.iter_bytes()) == (bigfiles.sha256["/256m"], 256 * MIB)
    assert client.stats()["connections_opened"] == 1


# A dropped streamed Response is collected (the I/O thread keeps no reference to it)
# and its weakref.finalize resets the stream.
GC = "gc"

BLOB = random.Random(3).randbytes(MIB)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
BIG_BLOB = random.Random(4).randbytes(8 * MIB)  # more than one default stream window


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["close", "context-exit", GC])
def test_closing_mid_body_resets_with_cancel(h2peer, make_client, how):
    """Closing (or dropping) a half-read streamed response sends RST_STREAM(CANCEL)
    for that stream, and the connection goes on serving."""
    peer = h2peer(routes={"/blob": blob_route(BIG_BLOB)})
    client = make_client(http2_prior_knowledge=True)
    url = peer.h2c_url + "/blob"
    if how == "context-exit":
        with client.stream("GET", url) as r:
            assert r.read(1000) == BIG_BLOB[:1000]
    else:
        r = client.request("GET", url, stream=True)
        assert r.read(1000) == BIG_BLOB[:1000]
        if how == "close":
            r.close()
            with pytest.raises(h2pool.StreamClosed):  # the rest was discarded
                r.read()
        else:
            del r
            gc.collect()
    sid = peer.requests_for("/blob")[0].stream_id
    assert peer.wait_for(lambda p: any(x.stream_id == sid for x in p.resets), timeout=5)
    assert [(x.stream_id, x.error_code) for x in peer.resets] == [(sid, CANCEL)]
    again = client.get(url)
    assert again.content == BIG_BLOB
    assert len(peer.connections) == 1
    assert client.stats()["connections_opened"] == 1
    assert not peer.errors


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["close", GC])
def test_closing_mid_body_real_server(nginx, content, make_client, how):
    client = make_client()
    r = client.request("GET", nginx.https_url + "/100m", stream=True)
    assert len(r.read(MIB)) == MIB
    if how == "close":
        r.close()
    else:
        del r
        gc.collect()
    wait_until(lambda: client.stats()["open_streams"] == 0, timeout=5)
    again = client.get(nginx.https_url + "/1m")
    assert hashlib.sha256(again.content).hexdigest() == content.sha256["/1m"]
    stats = client.stats()
    assert stats["connections_opened"] == 1
    assert stats["connections"] == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["close", GC])
def test_abandoned_streams_never_starve_the_connection(h2peer, make_client, how):
    """50 streams in a row, each left with a full window of unread data, then closed
    (or dropped): their unread bytes' connection credit comes back each time. With a
    1 MiB connection window and 256 KiB stream windows, four unreturned windows would
    stall the connection; the 51st download must still complete."""
    window = 256 * KIB
    peer = h2peer(routes={"/blob": blob_route(BLOB)})
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(stream_window=window, connection_window=MIB),
        timeout=h2pool.Timeout(10.0, read=5.0),  # a starved stream fails fast
    )
    url = peer.h2c_url + "/blob"
    assert client.get(peer.h2c_url + "/13b").content == HELLO
    for _ in range(50):
        before = received(client)
        r = client.request("GET", url, stream=True)
        assert r.read(1) == BLOB[:1]
        # The peer sends until the stream window is full (nothing was read back).
        wait_until(lambda before=before: received(client) - before >= window, timeout=5)
        if how == "close":
            r.close()
        else:
            del r
            gc.collect()
    assert peer.wait_for(lambda p: len(p.resets) == 50)
    sids = [q.stream_id for q in peer.requests_for("/blob")]
    assert sorted((x.stream_id, x.error_code) for x in peer.resets) == [(s, CANCEL) for s in sids]
    last = client.get(url)
    assert hashlib.sha256(last.content).hexdigest() == BLOB_SHA
    assert len(peer.connections) == 1
    assert client.stats()["connections_opened"] == 1


@pytest.mark.timeout(60)
def test_many_stalled_streams_do_not_starve_a_sibling(nginx, content, make_client):
    """connection_window // stream_window unread streamed responses (16 with the
    defaults): each is bounded by its own window, so memory stays bounded however many
    there are, and they must not also take the whole connection window from a sibling
    (connection credit comes back on receipt, stream credit on consumption)."""
    limits = h2pool.Limits()
    n = limits.connection_window // limits.stream_window
    client = make_client(timeout=h2pool.Timeout(10.0, read=5.0))
    base = received(client)
    stalled = [client.request("GET", nginx.https_url + "/100m", stream=True) for _ in range(n)]
    try:
        wait_until(lambda: received(client) - base >= n * limits.stream_window)
        r = client.get(nginx.https_url + "/1m")
        assert hashlib.sha256(r.content).hexdigest() == content.sha256["/1m"]
        assert client.stats()["connections_opened"] == 1
    finally:
        for s in stalled:
            s.close()


# -- trailers ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["/1m", pytest.param("/100m", marks=pytest.mark.slow)])
@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
def test_trailers_from_nghttpd(nghttpd_trailer, content, make_client, path, streamed):
    client = make_client()
    url = nghttpd_trailer.https_url + path
    if streamed:
        with client.stream("GET", url) as r:
            assert hash_stream(r.iter_bytes()) == (content.sha256[path], content.size[path])
            trailers = r.trailers
    else:
        r = client.get(url)
        assert hashlib.sha256(r.content).hexdigest() == content.sha256[path]
        trailers = r.trailers
    assert trailers["x-checksum"] == "abc"
    assert trailers.get_all("X-Checksum") == ["abc"]
    assert "x-checksum" not in r.headers


def test_no_trailers_is_empty(nghttpd, make_client):
    client = make_client()
    with client.stream("GET", nghttpd.https_url + "/1m") as r:
        r.read()
        assert len(r.trailers) == 0


# -- Content-Length enforcement ----------------------------------------------------------


def _wrong_length(actual: int, end: bool) -> Callable[[PeerConnection, int, Request], None]:
    def handler(conn: PeerConnection, sid: int, req: Request) -> None:
        conn.send_headers(sid, 200, [("content-length", "100")])
        conn.send_data(sid, b"x" * actual, end_stream=end)

    return handler


def _half_body(conn: PeerConnection, sid: int, req: Request) -> None:
    conn.send_headers(sid, 200, [("content-length", str(2 * len(HELLO)))])
    conn.send_data(sid, HELLO)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "actual,end", [(150, False), (150, True), (50, True)], ids=["longer", "longer-ended", "shorter"]
)
@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
def test_content_length_mismatch_fails_only_that_stream(h2peer, make_client, actual, end, streamed):
    """A body longer or shorter than its Content-Length is a ProtocolError on that
    stream; a sibling stream that is mid-body on the same connection completes.
    ``longer``: the server keeps the stream open after the excess, so the client must
    reset it (PROTOCOL_ERROR) rather than wait for more."""
    peer = h2peer(routes={"/bad": _wrong_length(actual, end), "/sibling": _half_body})
    client = make_client(http2_prior_knowledge=True)
    sibling = client.submit("GET", peer.h2c_url + "/sibling", stream=True)
    sib = sibling.result(timeout=10)
    assert sib.read(len(HELLO)) == HELLO  # mid-body now
    if streamed:
        with client.stream("GET", peer.h2c_url + "/bad") as r, pytest.raises(h2pool.ProtocolError):
            r.read()
    else:
        with pytest.raises(h2pool.ProtocolError):
            client.get(peer.h2c_url + "/bad")
    bad_sid = peer.requests_for("/bad")[0].stream_id
    if not end:
        assert peer.wait_for(lambda p: any(x.stream_id == bad_sid for x in p.resets))
        assert [x.error_code for x in peer.resets if x.stream_id == bad_sid] == [PROTOCOL_ERROR]
    sib_sid = peer.requests_for("/sibling")[0].stream_id
    peer.connections[0].send_data(sib_sid, HELLO, end_stream=True)
    assert sib.read() == HELLO
    sib.close()
    assert client.get(peer.h2c_url + "/13b").content == HELLO
    assert len(peer.connections) == 1
    assert client.stats()["connections_opened"] == 1
    assert not peer.goaways


@pytest.mark.timeout(60)
@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
def test_trailers_from_a_server_that_sends_them_only_when_asked(hypercorn, make_client, streamed):
    from servers.asgi import BODY

    client = make_client()
    url = hypercorn.https_url + "/"
    if streamed:
        with client.stream("GET", url) as r:
            assert r.read() == BODY
            trailers = r.trailers
    else:
        r = client.get(url)
        assert r.content == BODY
        trailers = r.trailers
    assert r.http_version == "HTTP/2"
    assert r.headers["x-seen-te"] == "trailers"
    assert trailers["x-checksum"] == "abc"


@pytest.mark.timeout(30)
def test_te_trailers_is_not_sent_over_http1(make_client):
    # HTTP/1.1 would need "Connection: TE" with it; h2pool leaves it out there.
    from servers.h1server import H1Server

    server = H1Server(None).start()
    try:
        client = make_client()
        r = client.get(server.url + "/hello")
        assert r.http_version == "HTTP/1.1"
        (seen,) = server.requests
        assert "te" not in {name.lower() for name in seen.headers}
        assert "user-agent" in {name.lower() for name in seen.headers}
    finally:
        server.stop()


# -- windows that grow to the bandwidth-delay product --------------------------------------


def test_window_tuner_rules():
    from h2pool._http2.flow import WindowTuner

    mib = 1 << 20
    t = WindowTuner(2 * mib, 16 * mib)
    t.start()
    t.count(mib)  # a third of the window in a round trip: the window is not the limit
    assert t.on_ack(0.05) is None and t.window == 2 * mib
    t.start()
    t.count(int(1.5 * mib))  # three quarters: window-limited, a new bandwidth maximum
    assert t.on_ack(0.05) == 6 * mib
    t.start()
    t.count(5 * mib)  # full again, but slower per second: only a burst
    assert t.on_ack(0.5) is None and t.window == 6 * mib
    t.start()
    t.count(12 * mib)  # capped at the maximum, then no more growing
    assert t.on_ack(0.05) == 16 * mib
    assert not t.growing
    assert WindowTuner(2 * mib, 2 * mib).growing is False


def test_window_tuner_burst_rules():
    """A first window read within a fraction of the round trip says how wide the link
    is (WindowTuner.on_burst); one that took longer says nothing."""
    from h2pool._http2.flow import WindowTuner

    mib = 1 << 20
    t = WindowTuner(2 * mib, 16 * mib)
    assert t.on_burst(2 * mib, 0.01) is None  # no round trip known yet
    t.observe_rtt(0.25)
    t.observe_rtt(0.125)
    t.observe_rtt(0.5)  # a slow answer: the shortest round trip counts
    assert t.rtt == 0.125
    assert t.on_burst(2 * mib, 0.25) is None  # two round trips: the window was enough
    assert t.window == 2 * mib
    assert t.on_burst(2 * mib, 0.0625) == 8 * mib  # half a round trip: 4 MiB, twice that
    assert t.on_burst(2 * mib, 0.0) == 16 * mib  # within one turn: the limit
    # PING samples can still grow a window that a burst set (their bandwidth maximum
    # is their own).
    t = WindowTuner(2 * mib, 32 * mib)
    t.observe_rtt(0.125)
    assert t.on_burst(2 * mib, 0.0625) == 8 * mib
    t.start()
    t.count(6 * mib)
    assert t.on_ack(0.125) == 24 * mib


@pytest.fixture
def relay(monkeypatch):
    """``relay(port, one_way_ms)``: the local port of a relay to ``port`` that delays
    every byte by ``one_way_ms`` each way (stress/faultproxy.py)."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "stress"))
    import faultproxy

    proxies = []

    def make(port: int, one_way_ms: float) -> int:
        # Model a link, not a small relay buffer: the relay holds what is in flight.
        p = faultproxy.FaultProxy(("127.0.0.1", port), high_water=64 << 20).start()
        p.set(delay=one_way_ms)
        proxies.append(p)
        return int(p.port)

    yield make
    for p in proxies:
        p.stop()


@pytest.fixture
def link(nginx, relay):
    def make(one_way_ms: float) -> str:
        return f"https://localhost:{relay(nginx.https_port, one_way_ms)}"

    return make


def _window_of(client) -> int:
    (origin,) = client.stats()["per_origin"].values()
    (conn,) = origin["connections"]
    return conn["stream_window"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
def test_window_grows_on_a_long_link(link, make_client, content, streamed):
    # 40 ms round trip: a 2 MiB window would carry at most ~50 MB/s, ~38 with credit
    # in half-window steps. The window grows to what the link carries per round trip.
    url = link(20) + "/100m"
    client = make_client(timeout=h2pool.Timeout(connect=10, read=20, write=10, pool=10))
    if streamed:
        with client.stream("GET", url) as r:
            got = hash_stream(r.iter_bytes())
    else:
        body = client.get(url).content
        got = (hashlib.sha256(body).hexdigest(), len(body))
    assert got == (content.sha256["/100m"], content.size["/100m"])
    assert _window_of(client) > h2pool.Limits().stream_window


@pytest.mark.timeout(60)
def test_window_stays_put_when_fixed_and_for_a_slow_reader(link, make_client, content):
    base = link(20)
    fixed = make_client(limits=h2pool.Limits(max_stream_window=h2pool.Limits().stream_window))
    assert hashlib.sha256(fixed.get(base + "/1m").content).hexdigest() == content.sha256["/1m"]
    assert _window_of(fixed) == h2pool.Limits().stream_window
    # A slow reader: what it holds unread stays bounded by its window.
    slow = make_client(timeout=h2pool.Timeout(connect=10, read=20, write=10, pool=10))
    with slow.stream("GET", base + "/100m") as r:
        for _ in range(20):
            assert len(r.read(64 * 1024)) == 64 * 1024
            time.sleep(0.05)  # the slow reader under test
        assert _window_of(slow) == h2pool.Limits().stream_window


def _held_route(first: int, held: dict[int, PeerConnection]) -> Callable[..., None]:
    """Headers for a body of len(BIG_BLOB) and its first ``first`` bytes; the rest is
    sent when the test says so (the stream id goes into ``held``)."""

    def handler(conn: PeerConnection, sid: int, req: Request) -> None:
        conn.send_headers(sid, 200, [("content-length", str(len(BIG_BLOB)))])
        conn.send_data(sid, BIG_BLOB[:first])
        held[sid] = conn

    return handler


def _peer_window(conn: PeerConnection, sid: int) -> int:
    with conn.lock:
        return int(conn.h2.local_flow_control_window(sid))


@pytest.mark.timeout(60)
def test_streamed_window_grows_when_its_reader_has_consumed_it(h2peer, relay, make_client):
    """Over a 200 ms round trip the server sends one stream window and holds the rest.
    Once the reader has consumed that window (and waits for more), the client grants
    more than it consumed, without any further DATA arriving (none could before the
    grant). First on a fresh connection, where only how fast that window came says
    the link is wide; then on the same connection, whose grown window a new stream
    gets as soon as its reader has consumed its first window."""
    from concurrent.futures import ThreadPoolExecutor

    limits = h2pool.Limits()
    window = limits.stream_window
    held: dict[int, PeerConnection] = {}
    peer = h2peer(routes={"/held": _held_route(window, held)})
    port = relay(peer.port, 100)
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=10, read=20, write=10, pool=10)
    )
    url = f"http://127.0.0.1:{port}/held"
    with ThreadPoolExecutor(1) as reader:
        for _ in range(2):
            with client.stream("GET", url) as r:
                body = reader.submit(r.read)  # the reader keeps up: it waits for more
                wait_until(lambda: bool(held))  # the handler has run
                sid = max(held)  # this request's stream
                conn = held[sid]
                wait_until(lambda conn=conn, sid=sid: _peer_window(conn, sid) > window, timeout=5)
                assert _peer_window(conn, sid) <= limits.stream_window_limit
                conn.send_data(sid, BIG_BLOB[window:], end_stream=True)
                assert body.result(timeout=20) == BIG_BLOB
            held.clear()
    assert len(peer.connections) == 1
    assert not peer.errors
