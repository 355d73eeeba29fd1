"""Pool and connection lifecycle: saturation, server limits, PING health,
keep-alive expiry, cancellation, write stalls, fork, ``stats()``.

Real servers where they can show the behaviour (nginx ``http2_max_concurrent_streams
4``; nghttpd and nginx for the cancel storm), the scripted peer for what they cannot
(SETTINGS changing the limit mid-connection, a peer that stops reading or answering
PINGs). Every test asserts counts: requests sent (server side), succeeded, retried,
connections opened. GOAWAY, resets and retries are in ``test_goaway.py``.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import socket
import threading
import time
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.settings
import pytest
from servers.h2peer import H2Peer
from servers.util import wait_until

import h2pool

HELLO = b"Hello, world!"
MCS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
CANCEL = h2.errors.ErrorCodes.CANCEL


class Holder:
    """A peer handler that holds every request until the test answers it, and
    records how many streams were open on its connection when each one arrived."""

    def __init__(self, answer_now: bool = False) -> None:
        self.cond = threading.Condition()
        self.held: list[tuple[object, int, str]] = []  # (conn, stream id, path)
        self.open: dict[int, int] = {}  # conn index -> streams received, not answered
        self.arrivals: list[tuple[int, int]] = []  # (conn index, open incl. this one)
        self.answer_now = answer_now

    def __call__(self, conn, stream_id, request) -> None:
        with self.cond:
            n = self.open.get(conn.index, 0) + 1
            self.arrivals.append((conn.index, n))
            if not self.answer_now:
                self.open[conn.index] = n
                self.held.append((conn, stream_id, request.path))
                self.cond.notify_all()
                return
        conn.respond(stream_id, 200, HELLO)

    def wait_held(self, n: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.held) >= n, timeout), len(self.held)

    def release_all(self) -> int:
        with self.cond:
            held, self.held = self.held, []
        for conn, sid, _ in held:
            with self.cond:
                self.open[conn.index] -= 1
            conn.respond(sid, 200, HELLO)
        return len(held)


def _origin(stats: dict, url: str) -> dict:
    (entry,) = [v for k, v in stats["per_origin"].items() if url.startswith(k)]
    return entry


# -- dials: as many connections as the server's stream limit needs -----------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_256_streams_at_nginx_128_per_connection_open_two_connections(nginx, make_client, warm):
    # 256 streams held open at once; nginx allows 128 per connection. The pool counted
    # the dials in flight at 100 streams each (and, cold, dialled before any SETTINGS
    # told it the limit), so it opened a third connection, cold or warm.
    n = 256
    client = make_client(
        limits=h2pool.Limits(stream_window=65535),  # 256 unread 1 MiB bodies stay small
        timeout=h2pool.Timeout(10, pool=30),
    )
    if warm:
        assert client.get(nginx.https_url + "/13b").content == b"Hello, world!"
    barrier = threading.Barrier(n)

    def open_stream(_: int) -> h2pool.Response:
        barrier.wait(10)
        return client.request("GET", nginx.https_url + "/1m", stream=True)

    with cf.ThreadPoolExecutor(n) as ex:
        responses = list(ex.map(open_stream, range(n)))
    try:
        assert [r.status for r in responses] == [200] * n
        stats = client.stats()
        entry = _origin(stats, nginx.https_url)
        assert sorted(c["active_streams"] for c in entry["connections"]) == [128, 128]
        assert stats["connections_opened"] == 2
    finally:
        for r in responses:
            r.close()


# -- nginx http2_max_concurrent_streams 4 ------------------------------------------------


def _run_threads(client, url: str, threads: int, per_thread: int) -> tuple[int, list]:
    def worker(_: int) -> tuple[int, list]:
        ok, errs = 0, []
        for _ in range(per_thread):
            try:
                r = client.get(url)
                ok += r.status == 200 and r.content == HELLO
            except h2pool.H2PoolError as exc:
                errs.append(exc)
        return ok, errs

    with cf.ThreadPoolExecutor(threads) as ex:
        results = list(ex.map(worker, range(threads)))
    return sum(r[0] for r in results), [e for r in results for e in r[1]]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("limits", "max_opened"),
    [
        (h2pool.Limits(), h2pool.Limits().max_connections_per_origin),
        (h2pool.Limits(max_connections_per_origin=1), 1),
        (h2pool.Limits(strict_max_streams=True), 1),
    ],
    ids=["default", "one-connection", "strict"],
)
def test_nginx_mcs4_32_threads(nginx, make_client, limits, max_opened):
    client = make_client(limits=limits, timeout=h2pool.Timeout(10, pool=60))
    ok, errors = _run_threads(client, nginx.mcs4_url + "/13b", 32, 50)
    stats = client.stats()
    assert errors == []
    assert ok == 32 * 50
    # nginx never closes these connections, so "opened" bounds what was ever open.
    assert 1 <= stats["connections_opened"] <= max_opened
    if max_opened == 1:
        assert stats["connections_opened"] == 1  # saturation queued, never dialled
    entry = _origin(stats, nginx.mcs4_url)
    assert {c["max_streams"] for c in entry["connections"]} == {4}
    assert stats["open_streams"] == 0 and stats["queued"] == 0


# -- SETTINGS_MAX_CONCURRENT_STREAMS changed mid-connection --------------------------------


def _warm(client, peer: H2Peer, acks: int = 1) -> None:
    """One request, then wait until the client acknowledged our SETTINGS: from then on
    the peer's h2 enforces its own limits (and raises if the client exceeds them)."""
    assert client.get(peer.h2c_url + "/warm").content == HELLO
    assert peer.wait_for(lambda p: len(p.settings_acks) >= acks)


@pytest.mark.timeout(30)
def test_lowered_max_concurrent_streams_is_respected_after_ack(h2peer, make_client):
    holder = Holder()
    peer = h2peer(routes={"/warm": "respond_13b"}, default=holder)
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(max_connections_per_origin=1),
        timeout=10.0,
    )
    _warm(client, peer)
    first = [client.submit("GET", peer.h2c_url + f"/a{i}") for i in range(20)]
    holder.wait_held(20)
    conn = peer.connections[0]
    conn.update_settings({MCS: 1})
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 2)  # the client applied it
    with holder.cond:
        mark = len(holder.arrivals)
        holder.answer_now = True
    later = [client.submit("GET", peer.h2c_url + f"/b{i}") for i in range(20)]
    assert wait_until(lambda: client.stats()["queued"] == 20)  # none may start yet
    assert len(peer.requests) == 1 + 20
    assert holder.release_all() == 20  # the 20 in flight finish normally
    assert [f.result(timeout=10).content for f in first + later] == [HELLO] * 40
    # After the ACK every new stream arrived alone: never more open than the new limit.
    after = holder.arrivals[mark:]
    assert len(after) == 20
    assert max(n for _, n in after) == 1
    assert peer.errors == []  # the peer's h2 raises if a stream exceeds its limit
    stats = client.stats()
    assert stats["connections_opened"] == 1 == len(peer.connections)
    assert _origin(stats, peer.h2c_url)["connections"][0]["max_streams"] == 1
    assert stats["retries"] == 0


@pytest.mark.timeout(30)
def test_zero_max_concurrent_streams_then_raised(h2peer, make_client):
    peer = h2peer()
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(strict_max_streams=True),
        timeout=h2pool.Timeout(10, pool=20),
    )
    _warm(client, peer)
    peer.connections[0].update_settings({MCS: 0})
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 2)
    futs = [client.submit("GET", peer.h2c_url + f"/{i}") for i in range(10)]
    assert wait_until(lambda: client.stats()["queued"] == 10)  # waiting, not failing
    assert not any(f.done() for f in futs)
    assert len(peer.requests) == 1
    peer.connections[0].update_settings({MCS: 10})
    assert [f.result(timeout=10).content for f in futs] == [HELLO] * 10
    assert len(peer.requests) == 11
    assert peer.errors == []
    stats = client.stats()
    assert stats["connections_opened"] == 1 == len(peer.connections)  # strict: no dial
    assert stats["retries"] == 0


@pytest.mark.timeout(30)
def test_zero_max_concurrent_streams_forever_is_a_pool_timeout(h2peer, make_client):
    peer = h2peer()
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(max_connections_per_origin=1),
        timeout=h2pool.Timeout(10, pool=1.0),
    )
    _warm(client, peer)
    peer.connections[0].update_settings({MCS: 0})
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 2)
    t0 = time.monotonic()
    with pytest.raises(h2pool.PoolTimeout):
        client.get(peer.h2c_url + "/never")
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 2.5
    assert len(peer.requests) == 1  # only the warm-up reached the server
    stats = client.stats()
    assert stats["queued"] == 0
    assert stats["connections_opened"] == 1 == len(peer.connections)


# -- PING health check ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_peer_that_stops_reading_fails_ping_health_check(h2peer, make_client):
    release = threading.Event()

    def deaf(conn, stream_id, request):
        # Runs on the peer's connection thread: blocking here stops it reading its
        # socket, so the client's PING is never seen, let alone acknowledged.
        release.wait(20)

    peer = h2peer(routes={"/deaf": deaf})
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(ping_interval=0.5, ping_timeout=0.5),
        timeout=h2pool.Timeout(10, read=30),
    )
    try:
        t0 = time.monotonic()
        with pytest.raises(h2pool.ConnectionLost, match="PING"):
            client.get(peer.h2c_url + "/deaf")
        elapsed = time.monotonic() - t0
    finally:
        release.set()
    # ping_interval of read silence, then ping_timeout without an ACK.
    assert 0.8 <= elapsed < 2.5
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    stats = client.stats()
    assert stats["connections_opened"] == 2 == len(peer.connections)
    assert stats["connections_closed"] == 1
    assert len(peer.requests) == 2  # the sent request was not retried
    assert stats["retries"] == 0


@pytest.mark.timeout(30)
def test_no_ping_when_health_check_disabled(h2peer, make_client):
    holder = Holder()
    peer = h2peer(default=holder)
    quiet = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(ping_interval=None),
        timeout=h2pool.Timeout(10, read=30),
    )
    pinging = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(ping_interval=0.2, ping_timeout=0.2),
        timeout=h2pool.Timeout(10, read=30),
    )
    f_quiet = quiet.submit("GET", peer.h2c_url + "/quiet")
    holder.wait_held(1)  # peer connection 0 belongs to ``quiet``
    f_ping = pinging.submit("GET", peer.h2c_url + "/pinging")
    holder.wait_held(2)
    # The pinging client is the clock: three acknowledged PINGs on its connection
    # (at least 0.6 s of silence) while both streams are open...
    assert peer.wait_for(lambda p: p.pings.count(1) >= 3, timeout=10)
    # ...and none on the connection whose health check is off.
    assert peer.pings.count(0) == 0
    assert holder.release_all() == 2
    assert f_quiet.result(timeout=10).content == HELLO
    assert f_ping.result(timeout=10).content == HELLO  # ACKed PINGs keep it alive
    assert peer.pings.count(0) == 0
    for client in (quiet, pinging):
        assert client.stats()["connections_opened"] == 1
    assert len(peer.connections) == 2 and len(peer.requests) == 2


@pytest.mark.timeout(30)
def test_pings_follow_ping_interval_after_an_ack(h2peer, make_client):
    # ping_timeout longer than ping_interval: each ACK restarts the read-idle interval,
    # so PINGs come every ~0.2 s while the stream stays silent, not every 5 s.
    holder = Holder()
    peer = h2peer(default=holder)
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(ping_interval=0.2, ping_timeout=5.0),
        timeout=h2pool.Timeout(10, read=30),
    )
    fut = client.submit("GET", peer.h2c_url + "/held")
    holder.wait_held(1)
    t0 = time.monotonic()
    reached = peer.wait_for(lambda p: len(p.pings) >= 3, timeout=3)
    elapsed = time.monotonic() - t0
    assert holder.release_all() == 1
    assert fut.result(timeout=10).content == HELLO
    assert reached, peer.pings
    assert elapsed < 2.0
    assert client.stats()["connections_opened"] == 1


# -- keep-alive expiry -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_idle_connection_closed_after_keepalive_expiry(h2peer, make_client):
    idle_peer = h2peer()
    holder = Holder()
    busy_peer = h2peer(default=holder)
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(keepalive_expiry=0.5),
        timeout=10.0,
    )
    busy = client.submit("GET", busy_peer.h2c_url + "/busy")
    holder.wait_held(1)
    assert client.get(idle_peer.h2c_url + "/fast").content == HELLO
    t_idle = time.monotonic()
    assert client.stats()["connections"] == 2
    # The idle connection goes after the expiry; the busy one stays however long.
    wait_until(lambda: idle_peer.h2c_url not in str(client.stats()["origins"]), timeout=5)
    assert time.monotonic() - t_idle >= 0.45
    stats = client.stats()
    assert stats["connections"] == 1
    assert _origin(stats, busy_peer.h2c_url)["connections"][0]["active_streams"] == 1
    # The server saw the close: a GOAWAY, then EOF.
    assert idle_peer.wait_for(lambda p: p.goaways and p.connections[0].closed)
    assert idle_peer.goaways[0].error_code == 0
    assert holder.release_all() == 1
    assert busy.result(timeout=10).content == HELLO
    wait_until(lambda: client.stats()["connections"] == 0, timeout=5)
    assert busy_peer.wait_for(lambda p: p.connections[0].closed)
    # A later request opens a new connection.
    assert client.get(idle_peer.h2c_url + "/fast").content == HELLO
    stats = client.stats()
    assert stats["connections_opened"] == 3
    assert stats["connections_closed"] == 2
    assert len(idle_peer.connections) == 2 and len(idle_peer.requests) == 2
    assert len(busy_peer.connections) == 1 and len(busy_peer.requests) == 1


# -- cancellation ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_in_flight_requests_resets_each_and_connection_serves_on(h2peer, make_client):
    peer = h2peer(routes={"/stall": "stall_headers"})
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    futs = [client.submit("GET", peer.h2c_url + "/stall") for _ in range(10)]
    reqs = peer.wait_requests(10)
    assert all(f.cancel() for f in futs)
    assert all(f.cancelled() for f in futs)
    assert peer.wait_for(lambda p: len(p.resets) >= 10)
    assert sorted(r.stream_id for r in peer.resets) == sorted(r.stream_id for r in reqs)
    assert {r.error_code for r in peer.resets} == {CANCEL}
    wait_until(lambda: client.stats()["open_streams"] == 0)
    for _ in range(3):
        assert client.get(peer.h2c_url + "/fast").content == HELLO
    stats = client.stats()
    assert stats["connections_opened"] == 1 == len(peer.connections)
    assert len(peer.requests) == 13
    assert len(peer.resets) == 10  # nothing else was reset
    assert stats["resets_sent"] == 10
    assert stats["retries"] == 0


@pytest.mark.timeout(30)
def test_reset_streams_hold_their_slots_until_a_ping_ack(h2peer, make_client):
    # RELIABILITY.md D11 (Go f35fec92): after cancelling both streams of a connection
    # limited to 2, the next stream may open only once a PING sent after the
    # RST_STREAMs is acknowledged (the server has surely processed them).
    pings_at_arrival: list[int] = []

    def record(conn, stream_id, request):
        pings_at_arrival.append(conn.peer.pings.count(conn.index))
        conn.respond(stream_id, 200, HELLO)

    peer = h2peer(routes={"/warm": "respond_13b", "/stall": "stall_headers"}, default=record)
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(max_connections_per_origin=1, ping_interval=None),
        timeout=10.0,
    )
    _warm(client, peer)
    peer.connections[0].update_settings({MCS: 2})
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 2)
    futs = [client.submit("GET", peer.h2c_url + "/stall") for _ in range(2)]
    peer.wait_requests(3)
    assert all(f.cancel() for f in futs)
    assert client.get(peer.h2c_url + "/next").content == HELLO
    # One PING at least (a second one if the first ACK came between the two resets).
    assert len(pings_at_arrival) == 1 and pings_at_arrival[0] >= 1, pings_at_arrival
    assert len(peer.resets) == 2 and len(peer.connections) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", ["nghttpd", "nginx"])
def test_cancel_storm_leaves_client_working(request, make_client, content, server):
    srv = request.getfixturevalue(server)
    client = make_client(timeout=10.0)
    url = srv.https_url + "/1m"
    assert len(client.get(url).content) == content.size["/1m"]
    cancelled = completed = 0
    futs = []
    for _ in range(500):
        fut = client.submit("GET", url)
        if fut.cancel():
            cancelled += 1
        futs.append(fut)
    for fut in futs:
        if not fut.cancelled():
            assert len(fut.result(timeout=30).content) == content.size["/1m"]
            completed += 1
    assert cancelled + completed == 500
    assert cancelled > 0
    wait_until(lambda: client.stats()["open_streams"] == 0)
    # The client still works, on the connection(s) it had.
    results = [len(client.get(url).content) for _ in range(20)]
    assert results == [content.size["/1m"]] * 20
    stats = client.stats()
    assert 1 <= stats["connections_opened"] <= h2pool.Limits().max_connections_per_origin
    assert stats["connections"] >= 1
    # Requests cancelled while still queued send nothing; the others one RST each.
    assert 0 < stats["resets_sent"] <= cancelled
    assert stats["retries"] == 0


# -- write stalls ------------------------------------------------------------------------


class StallPeer(H2Peer):
    """An h2c peer whose first connection sends SETTINGS granting huge flow-control
    windows and then never reads; later connections are served normally."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        # A small receive buffer, inherited by accepted sockets, fills quickly.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.deaf_accepted = threading.Event()

    def _serve(self, sock: socket.socket, index: int) -> None:
        if index != 0:
            super()._serve(sock, index)
            return
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                MCS: 100,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1,
            },
        )
        h2c.initiate_connection()
        h2c.increment_flow_control_window(2**31 - 1 - 65535)
        with self._cond:
            self._raw_socks.append(sock)  # closed by stop()
        sock.sendall(h2c.data_to_send())
        self.deaf_accepted.set()
        self._stopping.wait()


@pytest.fixture
def stall_peer():
    peer = StallPeer().start()
    yield peer
    peer.stop()


@pytest.mark.timeout(30)
def test_stalled_writes_fail_the_upload_and_close_the_connection(stall_peer, make_client):
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=5, read=5, write=1, pool=5)
    )
    t0 = time.monotonic()
    with pytest.raises((h2pool.WriteTimeout, h2pool.ConnectionLost)):
        client.post(stall_peer.h2c_url + "/upload", body=b"\0" * (32 << 20))
    assert 0.9 <= time.monotonic() - t0 < 4.0
    # The connection whose writes stalled is closed (stall limit = write timeout).
    wait_until(lambda: client.stats()["connections"] == 0, timeout=5)
    assert time.monotonic() - t0 < 5.0
    stats = client.stats()
    assert stats["connections_opened"] == 1 == stats["connections_closed"]
    assert stats["bytes_sent"] < (32 << 20)


@pytest.mark.timeout(30)
def test_request_stuck_behind_a_stalled_write_is_retried_on_a_new_connection(
    stall_peer, make_client
):
    # The client-level write timeout (3 s) also bounds write stalls of a connection;
    # the upload's own write timeout (0.5 s) fails it first. A GET submitted then must
    # not wait on the stuck connection: either it goes straight to a new connection
    # (the stuck one has a large unsent backlog, so it takes no new stream), or, queued
    # behind the stuck bytes, it is retried when that connection is closed (no byte of
    # it was written).
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=5, read=10, write=3, pool=10)
    )
    with pytest.raises(h2pool.WriteTimeout):
        client.post(
            stall_peer.h2c_url + "/upload",
            body=b"\0" * (32 << 20),
            timeout=h2pool.Timeout(connect=5, read=10, write=0.5, pool=10),
        )
    t0 = time.monotonic()
    r = client.get(stall_peer.h2c_url + "/after")
    assert r.content == HELLO
    assert time.monotonic() - t0 < 5.0
    assert [(q.conn_index, q.path) for q in stall_peer.requests] == [(1, "/after")]
    # The stuck connection is closed by the stall limit (3 s) if it was not already.
    wait_until(lambda: client.stats()["connections_closed"] == 1, timeout=6)
    stats = client.stats()
    assert stats["retries"] <= 1
    assert stats["connections_opened"] == 2
    assert stats["connections_closed"] == 1
    assert stats["connections"] == 1


# -- fork --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* fork:DeprecationWarning")  # 3.12+
def test_fork_with_a_stream_in_flight_over_tls(h2peer, make_client):
    # Extends test_engine_failures' fork test: TLS (a child writing on the parent's TLS
    # session would corrupt it), a stream in flight in the parent at fork time, and a
    # child that closes the client (no GOAWAY may reach the parent's connection).
    holder = Holder()
    peer = h2peer(tls=True, routes={"/fast": "respond_13b"}, default=holder)
    client = make_client()
    url = peer.https_url
    assert client.get(url + "/fast").content == HELLO
    in_flight = client.submit("GET", url + "/held")
    holder.wait_held(1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report, close the client, exit without pytest's cleanup
        code = 3
        try:
            resp = client.get(url + "/fast", timeout=10)
            opened = client.stats()["connections_opened"]
            client.close()
            os.write(w, f"{resp.status} {resp.content.decode()} {opened}".encode())
            code = 0 if resp.content == HELLO else 4
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert report == "200 Hello, world! 1"  # the child dialled its own connection
    # The child's close sent GOAWAY on its own connection only.
    assert peer.wait_for(lambda p: any(g.conn_index == 1 for g in p.goaways))
    assert [g.conn_index for g in peer.goaways] == [1]
    # The parent's in-flight stream and TLS session are intact.
    assert holder.release_all() == 1
    assert in_flight.result(timeout=10).content == HELLO
    assert client.get(url + "/fast").content == HELLO
    stats = client.stats()
    assert stats["connections_opened"] == 1
    assert len(peer.connections) == 2
    assert [q.conn_index for q in peer.requests] == [0, 0, 1, 0]


# -- stats() -------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_stats_shape_and_per_connection_details(nginx, make_client, content):
    client = make_client()
    url = nginx.https_url
    assert client.get(url + "/13b").content == HELLO
    # /100m: far more than the 2 MiB stream window, so the stream stays open.
    with client.stream("GET", url + "/100m") as resp:
        assert len(resp.read(1000)) == 1000
        stats = client.stats()
        for key in (
            "connections",
            "origins",
            "open_streams",
            "queued",
            "bytes_sent",
            "bytes_received",
            "connections_opened",
            "connections_closed",
            "retries",
            "resets_sent",
            "per_origin",
        ):
            assert key in stats, key
        assert stats["connections"] == 1 and stats["open_streams"] == 1
        assert stats["origins"] == {url: 1}
        entry = stats["per_origin"][url]
        assert entry["queued"] == 0 and entry["dialing"] == 0
        assert entry["connections_opened"] == 1
        (conn,) = entry["connections"]
        assert conn["http_version"] == "HTTP/2"
        assert conn["active_streams"] == 1
        assert conn["max_streams"] == 128  # nginx's http2_max_concurrent_streams
        assert conn["goaway_received"] is False
        assert conn["idle_since"] is None  # busy
        assert conn["requests"] == 2
        assert conn["bytes_sent"] > 0 and conn["bytes_received"] > 1000
        assert conn["peer"] == f"127.0.0.1:{nginx.https_port}"
        assert conn["tls_version"] in ("TLSv1.2", "TLSv1.3") and conn["tls_cipher"]
    # Closing the response early resets its stream; the connection is idle again.
    wait_until(lambda: client.stats()["open_streams"] == 0)
    stats = client.stats()
    (conn,) = stats["per_origin"][url]["connections"]
    assert conn["active_streams"] == 0
    assert isinstance(conn["idle_since"], float)
    assert stats["bytes_received"] >= conn["bytes_received"] > 1000
    assert stats["bytes_sent"] >= conn["bytes_sent"] > 0
    assert stats["connections_opened"] == 1 and stats["connections_closed"] == 0
    assert stats["retries"] == 0
    assert stats["resets_sent"] == 1  # the early close
    assert len(client.get(url + "/1m").content) == content.size["/1m"]
    assert client.stats()["connections_opened"] == 1


@pytest.mark.timeout(30)
def test_stats_shows_goaway_received_while_draining(h2peer, make_client):
    holder = Holder()
    peer = h2peer(routes={"/fast": "respond_13b"}, default=holder)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    fut = client.submit("GET", peer.h2c_url + "/held")
    holder.wait_held(1)
    with holder.cond:
        conn, sid, _ = holder.held[0]
    conn.raw_goaway(last_stream_id=sid)

    def draining():
        conns = client.stats()["per_origin"].get(peer.h2c_url, {}).get("connections", [])
        return conns and conns[0]["goaway_received"] and conns[0]

    state = wait_until(draining)
    assert state["active_streams"] == 1
    assert state["idle_since"] is None
    assert holder.release_all() == 1
    assert fut.result(timeout=10).content == HELLO
    # Drained: closed once its last stream ended; the next request dials anew.
    wait_until(lambda: client.stats()["connections"] == 0)
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    stats = client.stats()
    assert stats["connections_opened"] == 2 == len(peer.connections)
    assert stats["connections_closed"] == 1


@pytest.mark.timeout(30)
def test_unanswered_ping_does_not_kill_a_connection_delivering_frames(rawpeer, make_client):
    # A download receives 4 KiB every 100 ms. A sibling stream stalls and hits its read
    # timeout; the client resets it and sends a PING, whose ACK (on a slow link) queues
    # behind the data in flight: here the peer answers it only after 2.5 s, well past
    # ping_timeout. Frames keep arriving all along, so the connection is alive and the
    # download must complete.
    from hyperframe.frame import PingFrame

    chunk, count = b"d" * 4096, 30
    answered = threading.Event()

    def script(conn):
        conn.greet()
        sid1, _ = conn.expect_request()
        length = str(len(chunk) * count)
        conn.send_headers(sid1, [(":status", "200"), ("content-length", length)])
        conn.expect_request()  # the sibling: never answered, it stalls
        for _ in range(count - 1):
            conn.send_data(sid1, chunk)
            if not conn.pace(0.1):
                return
        pings = [f for f in conn.frames_of(PingFrame) if "ACK" not in f.flags]
        for ping in pings:
            ack = PingFrame(0)
            ack.flags.add("ACK")
            ack.opaque_data = ping.opaque_data
            conn.send(ack)
        answered.set()
        conn.send_data(sid1, chunk, end_stream=True)
        conn.stall()

    peer = rawpeer(script, ping_ack=False)
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(ping_interval=5.0, ping_timeout=1.0),
        timeout=h2pool.Timeout(connect=5, read=10, write=5, pool=5),
    )
    with client.stream("GET", peer.url + "/download") as r:
        stalled = client.submit("GET", peer.url + "/stall", timeout=h2pool.Timeout(read=0.5))
        exc = stalled.exception(timeout=10)
        assert isinstance(exc, h2pool.ReadTimeout)
        body = r.read()
    assert answered.is_set()
    assert body == chunk * count
    stats = client.stats()
    assert stats["connections_opened"] == 1
    assert stats["resets_sent"] == 1


@pytest.mark.timeout(30)
def test_reset_slot_is_held_until_a_ping_sent_after_the_reset_is_answered(rawpeer, make_client):
    # MAX_CONCURRENT_STREAMS 2, two requests held. Cancelling the first sends RST_STREAM
    # and PING 1; cancelling the second while PING 1 is out sends only RST_STREAM. The
    # ACK of PING 1 proves the server saw the first reset, not the second: one slot
    # opens (one queued request starts), and the other only after a second PING, sent
    # by the client after that ACK, is answered.
    from hyperframe.frame import PingFrame, RstStreamFrame

    acked: list[bytes] = []

    def ack(conn, ping) -> None:
        f = PingFrame(0)
        f.flags.add("ACK")
        f.opaque_data = ping.opaque_data
        acked.append(ping.opaque_data)
        conn.send(f)

    def pings(conn):
        return [f for f in conn.frames_of(PingFrame) if "ACK" not in f.flags]

    def script(conn):
        conn.greet({MCS: 2})
        conn.stall()

    peer = rawpeer(script, ping_ack=False)
    client = make_client(
        http2_prior_knowledge=True,
        timeout=10.0,
        limits=h2pool.Limits(max_connections_per_origin=1),  # the slots of one connection
    )
    a = client.submit("GET", peer.url + "/a")
    b = client.submit("GET", peer.url + "/b")
    (conn,) = peer.wait_connections(1)
    assert conn.wait_for(lambda c: len(c.requests) == 2)
    a.cancel()
    assert conn.wait_for(lambda c: len(pings(c)) == 1)
    b.cancel()
    assert conn.wait_for(lambda c: len(c.frames_of(RstStreamFrame)) == 2)
    c_fut = client.submit("GET", peer.url + "/c")
    d_fut = client.submit("GET", peer.url + "/d")
    ack(conn, pings(conn)[0])
    # One slot opens: /c starts; a second PING goes out for the second reset.
    assert conn.wait_for(lambda c: len(c.requests) == 3 and len(pings(c)) == 2)
    assert not conn.wait_for(lambda c: len(c.requests) > 3, timeout=0.3)
    ack(conn, pings(conn)[1])
    assert conn.wait_for(lambda c: len(c.requests) == 4)
    for fut in (c_fut, d_fut):
        fut.cancel()


# -- stream IDs ----------------------------------------------------------------------------


def _on_io_thread(client: h2pool.Client, fn: Any) -> Any:
    """Run ``fn()`` on the client's I/O thread, which owns every connection's state."""
    done: cf.Future[Any] = cf.Future()

    def call() -> None:
        try:
            done.set_result(fn())
        except BaseException as exc:  # handed to the test thread
            done.set_exception(exc)

    client._runtime.loop.call_soon_threadsafe(call)  # type: ignore[union-attr]
    return done.result(timeout=10)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("queued", [False, True], ids=["one-by-one", "queued-behind"])
def test_a_connection_out_of_stream_ids_hands_over_to_a_new_one(nginx, make_client, queued):
    """RFC 9113 §5.1.1: stream IDs are never reused, and 2**31-1 is the last. The
    request that takes it completes; later ones, including those already queued for
    that connection, go to a new one. (Reaching it for real takes 2**30 requests on one
    connection; here the connection is advanced to just before it.)"""
    client = make_client(limits=h2pool.Limits(max_connections_per_origin=1))
    url = nginx.https_url + "/13b"
    assert client.get(url).content == HELLO

    def advance() -> None:
        (origin,) = client._runtime.pool.origins.values()  # type: ignore[union-attr]
        (conn,) = origin.conns
        conn.h2.highest_outbound_stream_id = 2**31 - 3  # the next stream is the last

    _on_io_thread(client, advance)
    if queued:
        futures = [client.submit("GET", url) for _ in range(20)]
        bodies = [f.result(timeout=10).content for f in futures]
    else:
        bodies = [client.get(url).content for _ in range(3)]
    assert bodies == [HELLO] * len(bodies)
    stats = client.stats()
    assert stats["connections_opened"] == 2
    assert stats["retries"] == 0
