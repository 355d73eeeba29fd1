"""Client lifecycle: close with requests in flight, context manager, leaks, cancel, GOAWAY."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time

import h2.errors
import h2.settings
import pytest

import h2pool

HELLO = b"Hello, world!"
CANCEL = h2.errors.ErrorCodes.CANCEL
MCS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS


# -- close ----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_close_fails_stalled_requests_in_time(h2peer, make_client):
    peer = h2peer(routes={"/stall": "stall_headers"})
    client = make_client(http2_prior_knowledge=True, timeout=30.0)
    futs = [client.submit("GET", peer.h2c_url + "/stall") for _ in range(5)]
    peer.wait_requests(5)
    start = time.monotonic()
    client.close(timeout=0.5)
    for fut in futs:
        exc = fut.exception(timeout=2)
        assert isinstance(exc, (h2pool.ClientClosed, h2pool.ConnectionLost)), repr(exc)
    assert time.monotonic() - start < 2.5
    # GOAWAY was sent to the server.
    assert peer.wait_for(lambda p: len(p.goaways) >= 1, timeout=2)
    # New requests are refused; closing again is fine.
    with pytest.raises(h2pool.ClientClosed):
        client.get(peer.h2c_url + "/fast")
    try:
        fut = client.submit("GET", peer.h2c_url + "/fast")
    except h2pool.ClientClosed:
        pass
    else:
        assert isinstance(fut.exception(timeout=2), h2pool.ClientClosed)
    client.close()
    client.close(timeout=0)
    assert len(peer.requests) == 5


@pytest.mark.timeout(30)
def test_close_lets_in_flight_requests_finish(h2peer, make_client):
    held: list[tuple[object, int]] = []
    held_lock = threading.Lock()

    def hold(conn, stream_id, request):
        with held_lock:
            held.append((conn, stream_id))

    peer = h2peer(routes={"/slow": hold})
    client = make_client(http2_prior_knowledge=True, timeout=30.0)
    futs = [client.submit("GET", peer.h2c_url + "/slow") for _ in range(3)]
    peer.wait_requests(3)
    with cf.ThreadPoolExecutor(1) as pool:
        closing = pool.submit(client.close, timeout=10)
        # A graceful close sends GOAWAY first; answer the held streams once it
        # arrives (or after 2 s if this engine sends it later).
        peer.wait_for(lambda p: len(p.goaways) >= 1, timeout=2)
        with held_lock:
            for conn, stream_id in held:
                conn.respond(stream_id, 200, HELLO)
        closing.result(timeout=15)
    assert [f.result(timeout=1).content for f in futs] == [HELLO] * 3


@pytest.mark.timeout(30)
def test_close_idle_client_is_quick(nginx, make_client):
    client = make_client()
    assert client.get(nginx.https_url + "/13b").content == HELLO
    start = time.monotonic()
    client.close()
    assert time.monotonic() - start < 2.0
    with pytest.raises(h2pool.ClientClosed):
        client.get(nginx.https_url + "/13b")


@pytest.mark.timeout(30)
def test_close_unused_client(ca_path):
    client = h2pool.Client(verify=ca_path)
    client.close()
    client.close()
    with pytest.raises(h2pool.ClientClosed):
        client.get("https://localhost:1/x")


@pytest.mark.timeout(30)
def test_context_manager(nginx, ca_path, content):
    with h2pool.Client(verify=ca_path) as client:
        r = client.get(nginx.https_url + "/1m")
        assert r.status == 200
        assert len(r.content) == content.size["/1m"]
    with pytest.raises(h2pool.ClientClosed):
        client.get(nginx.https_url + "/13b")


@pytest.mark.timeout(30)
def test_stream_context_manager_inside_client_context(nginx, ca_path):
    with (
        h2pool.Client(verify=ca_path) as client,
        client.stream("GET", nginx.https_url + "/13b") as r,
    ):
        assert r.read() == HELLO


# -- leaks ----------------------------------------------------------------------


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait_back_to(baseline_threads: set[threading.Thread], baseline_fds: int) -> tuple[list, int]:
    deadline = time.monotonic() + 2.0
    for t in threading.enumerate():
        if t not in baseline_threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
    fds = _fd_count()
    while fds > baseline_fds and time.monotonic() < deadline:
        time.sleep(0.01)  # nothing to wait on for another thread's close(2)
        fds = _fd_count()
    return [t for t in threading.enumerate() if t not in baseline_threads], fds


@pytest.mark.no_leak_check  # does its own, explicitly
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["tls", "h2c"])
def test_no_thread_or_fd_leak_after_close(nginx, ca_path, kind):
    if kind == "tls":
        base, kwargs = nginx.https_url, {}
    else:
        base, kwargs = nginx.h2c_url, {"http2_prior_knowledge": True}
    threads_before = set(threading.enumerate())
    fds_before = _fd_count()
    client = h2pool.Client(verify=ca_path, **kwargs)
    futs = [client.submit("GET", base + "/13b") for _ in range(25)]
    results = [client.get(base + "/1m").status for _ in range(25)]
    assert [f.result(timeout=30).content for f in futs] == [HELLO] * 25
    assert results == [200] * 25
    assert client.stats()["connections"] >= 1
    assert len(threading.enumerate()) > len(threads_before)  # the I/O thread exists
    client.close()
    extra, fds = _wait_back_to(threads_before, fds_before)
    assert extra == []
    assert fds == fds_before


@pytest.mark.timeout(60)
def test_failed_connects_leak_nothing(make_client):
    # Refused connections must close their sockets too (the autouse check counts fds).
    from servers.util import free_port

    client = make_client(timeout=5.0)
    port = free_port()
    for _ in range(20):
        with pytest.raises(h2pool.ConnectError):
            client.get(f"https://127.0.0.1:{port}/x")


# -- cancel ---------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_in_flight_sends_rst_cancel(h2peer, make_client):
    peer = h2peer(routes={"/stall": "stall_headers"})
    client = make_client(http2_prior_knowledge=True, timeout=30.0)
    fut = client.submit("GET", peer.h2c_url + "/stall")
    (req,) = peer.wait_requests(1)
    assert fut.cancel() is True
    assert fut.cancelled()
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=1)
    assert peer.wait_for(lambda p: any(r.stream_id == req.stream_id for r in p.resets))
    (reset,) = peer.resets
    assert reset.error_code == CANCEL
    # The connection survives the cancel and serves the next request.
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    assert len(peer.connections) == 1
    assert client.stats()["open_streams"] == 0


@pytest.mark.timeout(30)
def test_cancel_many_frees_their_slots(h2peer, make_client):
    # With MAX_CONCURRENT_STREAMS=2 and one connection, cancelled streams
    # must give their slots back or the next request would hit PoolTimeout.
    peer = h2peer(routes={"/stall": "stall_headers"}, settings={MCS: 2})
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(max_connections_per_origin=1),
        timeout=h2pool.Timeout(connect=5, read=30, write=5, pool=5),
    )
    for round_ in range(5):
        futs = [client.submit("GET", peer.h2c_url + "/stall") for _ in range(2)]
        peer.wait_requests(2 * (round_ + 1))
        assert all(f.cancel() for f in futs)
        assert peer.wait_for(lambda p, n=2 * (round_ + 1): len(p.resets) >= n)
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    assert {r.error_code for r in peer.resets} == {CANCEL}
    assert len(peer.connections) == 1


@pytest.mark.timeout(30)
def test_cancel_after_completion_returns_false(nginx, make_client):
    client = make_client()
    fut = client.submit("GET", nginx.https_url + "/13b")
    assert fut.result(timeout=10).content == HELLO
    assert fut.cancel() is False


# -- GOAWAY and server limits ------------------------------------------------------


@pytest.mark.timeout(60)
def test_nginx_goaway_every_100_requests_sequential(nginx, make_client):
    client = make_client()
    for i in range(250):
        r = client.get(nginx.goaway100_url + "/13b")
        assert (i, r.content) == (i, HELLO)


@pytest.mark.timeout(120)
def test_nginx_goaway_every_100_requests_concurrent(nginx, make_client):
    client = make_client(timeout=h2pool.Timeout(connect=10, read=30, write=30, pool=60))
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(
            pool.map(lambda _: client.get(nginx.goaway100_url + "/13b").content, range(1000))
        )
    assert results == [HELLO] * 1000


@pytest.mark.timeout(60)
def test_peer_goaway_after_requests(h2peer, make_client):
    peer = h2peer(default="goaway_after:3")
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    for _ in range(10):
        assert client.get(peer.h2c_url + "/x").content == HELLO
    assert len(peer.requests) == 10  # each processed exactly once
    assert len(peer.connections) >= 4


@pytest.mark.timeout(60)
def test_server_max_concurrent_streams_respected(nginx, make_client, content):
    client = make_client(limits=h2pool.Limits(max_connections_per_origin=1))
    futs = [client.submit("GET", nginx.mcs4_url + "/1m") for _ in range(32)]
    for fut in futs:
        assert fut.result(timeout=60).status == 200
    assert {len(f.result().content) for f in futs} == {content.size["/1m"]}
    assert client.stats()["connections"] == 1


@pytest.mark.timeout(60)
def test_peer_max_concurrent_streams_never_exceeded(h2peer, make_client):
    peer = h2peer(settings={MCS: 3})
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(max_connections_per_origin=1),
        timeout=10.0,
    )
    # Until the server's SETTINGS arrive a client may assume 100 streams
    # (RFC 9113 §5.1.2), so warm up first: from then on the limit binds.
    assert client.get(peer.h2c_url + "/warm").content == HELLO
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 1)
    futs = [client.submit("GET", peer.h2c_url + f"/{i}") for i in range(60)]
    assert [f.result(timeout=30).content for f in futs] == [HELLO] * 60
    assert not peer.errors  # h2 on the peer raises if the client opens a 4th stream
    assert len(peer.connections) == 1


# -- transparent retries (API.md: "provably did not process") ----------------------


@pytest.mark.timeout(30)
def test_goaway_below_in_flight_streams_retries_the_rest(h2peer, make_client):
    held: list[int] = []

    def first_conn_holds(conn, stream_id, request):
        if conn.index == 0:
            held.append(stream_id)
        else:
            conn.respond(stream_id, 200, request.path.encode())

    peer = h2peer(default=first_conn_holds)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    futs = [client.submit("GET", peer.h2c_url + f"/{i}") for i in range(5)]
    peer.wait_requests(5)
    conn = peer.connections[0]
    with conn.lock:  # the handler runs under this lock: all five are held now
        sids = sorted(held)
    assert len(sids) == 5
    # GOAWAY promising only the two lowest streams, then answer those two.
    conn.raw_goaway(last_stream_id=sids[1])
    for sid in sids[:2]:
        conn.respond(sid, 200, HELLO)
    results = [f.result(timeout=10).content for f in futs]
    first = {r.stream_id: r.path for r in peer.requests if r.conn_index == 0}
    answered = {first[sid] for sid in sids[:2]}
    for i, body in enumerate(results):
        assert body == (HELLO if f"/{i}" in answered else f"/{i}".encode())
    # The three unprocessed requests ran once more, on a new connection.
    retried = sorted(r.path for r in peer.requests if r.conn_index != 0)
    assert retried == sorted(first[sid] for sid in sids[2:])
    assert len(peer.requests) == 8


@pytest.mark.timeout(30)
def test_refused_stream_is_retried(h2peer, make_client):
    seen: list[int] = []

    def refuse_once(conn, stream_id, request):
        seen.append(stream_id)
        if len(seen) == 1:
            conn.reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        else:
            conn.respond(stream_id, 200, HELLO)

    peer = h2peer(default=refuse_once)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    assert client.post(peer.h2c_url + "/once", body=b"not processed").content == HELLO
    assert [r.path for r in peer.requests] == ["/once", "/once"]


@pytest.mark.timeout(30)
def test_processed_request_then_connection_drop_is_not_resent(h2peer, make_client):
    peer = h2peer(routes={"/charge": "close"})
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    with pytest.raises(h2pool.ConnectionLost):
        client.post(peer.h2c_url + "/charge", body=b"pay 10")
    assert len(peer.requests_for("/charge")) == 1  # never sent twice
    # The client recovers on a new connection.
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    assert len(peer.connections) == 2
