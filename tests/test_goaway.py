"""GOAWAY, stream resets and transparent retries (RELIABILITY.md D1-D5, D8).

Real servers where they can show the behaviour (nginx ``keepalive_requests 100``
sends GOAWAY after every 100th stream; a private nginx is killed and restarted),
the scripted peer for what they cannot: a GOAWAY below streams in flight, an error
GOAWAY, REFUSED_STREAM on every attempt, a reset after the response headers.

Every test asserts counts: requests sent (server side), succeeded, retried and
connections opened (``stats()["retries"]`` counts resubmissions: a request that
fails after MAX_ATTEMPTS was retried MAX_ATTEMPTS - 1 times).
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import threading
import time
from pathlib import Path

import h2.errors
import pytest

import h2pool
from h2pool._retry import MAX_ATTEMPTS

HELLO = b"Hello, world!"
E = h2.errors.ErrorCodes


def _hammer(client, url: str, threads: int, per_thread: int) -> tuple[int, list[BaseException]]:
    """``threads`` threads each send ``per_thread`` GETs; returns (successes, errors)."""
    ok = 0
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        nonlocal ok
        start.wait()
        mine = 0
        for _ in range(per_thread):
            try:
                r = client.get(url)
            except h2pool.H2PoolError as exc:
                with lock:
                    errors.append(exc)
                continue
            if r.status == 200 and r.content == HELLO:
                mine += 1
        with lock:
            ok += mine

    workers = [threading.Thread(target=worker, name=f"hammer-{i}") for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return ok, errors


class Held:
    """A peer handler that holds requests on chosen connections, answers the others
    with their path, and counts how many times each path was answered (processed)."""

    def __init__(self, hold_conns: set[int] | None = None) -> None:
        self.hold_conns = {0} if hold_conns is None else hold_conns
        self.lock = threading.Condition()
        self.held: dict[int, tuple[object, str]] = {}  # stream id -> (conn, path)
        self.processed: collections.Counter[str] = collections.Counter()
        self.bodies: dict[str, list[bytes]] = collections.defaultdict(list)

    def __call__(self, conn, stream_id, request) -> None:
        with self.lock:
            self.bodies[request.path].append(bytes(request.body))
            if conn.index in self.hold_conns:
                self.held[stream_id] = (conn, request.path)
                self.lock.notify_all()
                return
            self.processed[request.path] += 1
        conn.respond(stream_id, 200, request.path.encode())

    def wait_held(self, n: int, timeout: float = 10.0) -> dict[int, str]:
        """Wait until ``n`` requests are held; returns {stream id: path}."""
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.held) >= n, timeout), self.held
            return {sid: path for sid, (_, path) in self.held.items()}

    def answer(self, stream_id: int, body: bytes | None = None) -> None:
        with self.lock:
            conn, path = self.held.pop(stream_id)
            self.processed[path] += 1
        conn.respond(stream_id, 200, path.encode() if body is None else body)


# -- D1: nginx keepalive_requests 100, under load ------------------------------------


@pytest.mark.timeout(120)
def test_nginx_goaway_every_100_streams_64_threads(nginx, make_client):
    threads, per_thread = 64, 200
    client = make_client(timeout=h2pool.Timeout(connect=10, read=30, write=30, pool=60))
    ok, errors = _hammer(client, nginx.goaway100_url + "/13b", threads, per_thread)
    stats = client.stats()
    assert errors == []
    assert ok == threads * per_thread == 12_800
    # nginx serves at most 100 streams per connection: 128 connections at least.
    assert stats["connections_opened"] >= 128
    assert stats["connections"] <= h2pool.Limits().max_connections_per_origin
    assert stats["open_streams"] == 0 and stats["queued"] == 0
    # Streams sent beyond a connection's 100th before its GOAWAY arrived were bounced
    # (nginx allows 128 concurrent streams) and retried elsewhere.
    assert stats["retries"] > 0


@pytest.mark.timeout(180)
def test_nginx_goaway_every_100_streams_256_threads(nginx, make_client):
    # RELIABILITY.md D1: 256 threads x 40 GETs, 0 errors; two rounds.
    threads, per_thread, rounds = 256, 40, 2
    client = make_client(timeout=h2pool.Timeout(connect=10, read=30, write=30, pool=60))
    ok, errors = 0, []
    for _ in range(rounds):
        n, errs = _hammer(client, nginx.goaway100_url + "/13b", threads, per_thread)
        ok += n
        errors += errs
        if errors:
            break
    stats = client.stats()
    assert errors == []
    assert ok == rounds * threads * per_thread
    assert stats["connections_opened"] >= ok // 100
    assert stats["connections"] <= h2pool.Limits().max_connections_per_origin


@pytest.mark.timeout(180)
def test_low_stream_limit_with_rotation_no_refusal_storm(nginx, make_client, capsys):
    # nginx with http2_max_concurrent_streams 16 and keepalive_requests 100. A new
    # connection must not burst past the limit it will learn (the origin's last
    # SETTINGS are remembered), and a refusal of a stream opened beyond a limit learned
    # later is a bounce, not a failed attempt: 0 errors, few retries.
    threads, per_thread = 256, 40
    client = make_client(timeout=h2pool.Timeout(connect=10, read=30, write=30, pool=60))
    t0 = time.monotonic()
    ok, errors = _hammer(client, nginx.low16_url + "/13b", threads, per_thread)
    elapsed = time.monotonic() - t0
    stats = client.stats()
    with capsys.disabled():
        print(
            f"\n  low-limit storm: {ok} ok, {len(errors)} errors, {stats['retries']} retries, "
            f"{stats['connections_opened']} connections, {ok / elapsed:.0f} req/s"
        )
    assert errors == []
    assert ok == threads * per_thread
    # Rotation alone costs ~16 bounces per 100 requests (the streams in flight when
    # nginx's GOAWAY arrives); the storm cost 0.77 retries per request.
    assert stats["retries"] <= 0.25 * ok
    assert stats["open_streams"] == 0 and stats["queued"] == 0


# -- D2: GOAWAY with last_stream_id below streams in flight -----------------------------


@pytest.mark.timeout(30)
def test_goaway_below_in_flight_retries_post_exactly_once(h2peer, make_client):
    handler = Held(hold_conns={0})
    peer = h2peer(default=handler)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    # Submitted in order on one connection: stream ids follow submission order, so
    # the POSTs are among the streams above last_stream_id.
    futs = {
        "/g0": client.submit("GET", peer.h2c_url + "/g0"),
        "/g1": client.submit("GET", peer.h2c_url + "/g1"),
        "/p2": client.submit("POST", peer.h2c_url + "/p2", body=b"pay 2"),
        "/g3": client.submit("GET", peer.h2c_url + "/g3"),
        "/p4": client.submit("POST", peer.h2c_url + "/p4", body=b"pay 4" * 1000),
    }
    by_sid = handler.wait_held(5)
    sids = sorted(by_sid)
    assert [by_sid[s] for s in sids] == list(futs)  # precondition: POSTs above last id
    conn0 = peer.connections[0]
    conn0.raw_goaway(last_stream_id=sids[1])
    for sid in sids[:2]:
        handler.answer(sid)
    results = {path: f.result(timeout=10) for path, f in futs.items()}
    assert {p: r.content for p, r in results.items()} == {p: p.encode() for p in futs}
    # Each request was processed exactly once: two on the first connection, three
    # (the unprocessed ones, POSTs included) retried once on a second connection.
    assert handler.processed == dict.fromkeys(futs, 1)
    retried = sorted(r.path for r in peer.requests if r.conn_index == 1)
    assert retried == ["/g3", "/p2", "/p4"]
    assert len(peer.requests) == 5 + 3
    assert handler.bodies["/p2"] == [b"pay 2", b"pay 2"]  # the body was replayed intact
    assert handler.bodies["/p4"] == [b"pay 4" * 1000] * 2
    stats = client.stats()
    assert stats["connections_opened"] == 2 == len(peer.connections)
    assert stats["connections_closed"] >= 1  # the drained connection was closed
    assert stats["retries"] == 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
def test_goaway_naming_a_stream_whose_response_began(h2peer, make_client, streamed):
    # Streams 1 and 3 complete; stream 5 (a POST) has its response headers and half its
    # body when GOAWAY(last_stream_id=1) arrives, and the server then finishes it. Its
    # response began, so it was processed: it finishes on the draining connection and
    # is never sent again (a resent POST would be processed twice; a streamed reader
    # would be left with no writer).
    handler = Held(hold_conns={0})
    peer = h2peer(default=handler)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    body = bytes(range(256)) * 80  # 20 KiB, within the initial windows
    f1 = client.submit("GET", peer.h2c_url + "/g1")
    f3 = client.submit("GET", peer.h2c_url + "/g3")
    f5 = client.submit("POST", peer.h2c_url + "/p5", body=b"pay 5", stream=streamed)
    sids = sorted(handler.wait_held(3))
    handler.answer(sids[0])
    handler.answer(sids[1])
    with handler.lock:
        conn, path = handler.held.pop(sids[2])
        handler.processed[path] += 1
    conn.send_headers(sids[2], 200, [("content-length", str(len(body)))])
    conn.send_data(sids[2], body[: len(body) // 2])
    if streamed:
        r = f5.result(timeout=10)  # the headers arrived before the GOAWAY
    conn.raw_goaway(last_stream_id=sids[0])
    conn.send_data(sids[2], body[len(body) // 2 :], end_stream=True)
    if streamed:
        with r:
            assert r.read() == body
    else:
        r = f5.result(timeout=10)
        assert r.content == body
    assert r.status == 200
    assert f1.result(timeout=10).content == b"/g1"
    assert f3.result(timeout=10).content == b"/g3"
    assert handler.processed == {"/g1": 1, "/g3": 1, "/p5": 1}
    assert len(peer.requests_for("/p5")) == 1
    assert len(peer.requests) == 3
    stats = client.stats()
    assert stats["retries"] == 0
    assert stats["open_streams"] == 0


# -- D3: error GOAWAY -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_error_goaway_on_fresh_connection_is_not_retried(h2peer, make_client):
    burst = 5
    arrived: collections.Counter[int] = collections.Counter()  # connection -> /burst requests

    def refuse(conn, stream_id, request):
        # The burst is refused only once all of it has arrived on one connection: a
        # GOAWAY sent at the first request let a burst request submitted after it dial
        # a fourth connection (a fresh request, rightly; seen with threads switching
        # every microsecond), and the count below is about retries, not submit timing.
        if request.path.startswith("/burst"):
            arrived[conn.index] += 1  # handlers run on the connection's own thread
            if arrived[conn.index] < burst:
                return
        conn.goaway(error_code=E.PROTOCOL_ERROR, last_stream_id=0)

    peer = h2peer(default=refuse)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    for attempt in (1, 2):
        t0 = time.monotonic()
        with pytest.raises(h2pool.ProtocolError):
            client.get(peer.h2c_url + f"/refused{attempt}")
        assert time.monotonic() - t0 < 2.0
        # Exactly one connection and one request per call: the engine fails a fresh
        # connection's error GOAWAY at once (_on_goaway: fresh_error), no retry loop.
        assert len(peer.requests) == attempt
        assert len(peer.connections) == attempt
    # Several requests on one fresh connection all fail, none is retried.
    futs = [client.submit("GET", peer.h2c_url + f"/burst{i}") for i in range(burst)]
    for f in futs:
        assert isinstance(f.exception(timeout=10), h2pool.ProtocolError)
    assert len(peer.connections) == 3
    assert arrived == {2: burst}
    assert len(peer.requests) == 2 + burst
    stats = client.stats()
    assert stats["connections_opened"] == 3
    assert stats["retries"] == 0


@pytest.mark.timeout(30)
def test_error_goaway_after_responses_retries_only_unprocessed(h2peer, make_client):
    # A connection that already served a response: an error GOAWAY fails the streams
    # up to last_stream_id (maybe processed) and retries those above it.
    handler = Held(hold_conns={0})
    peer = h2peer(routes={"/warm": "respond_13b"}, default=handler)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    assert client.get(peer.h2c_url + "/warm").content == HELLO
    futs = [client.submit("GET", peer.h2c_url + f"/{i}") for i in range(3)]
    held = handler.wait_held(3)
    sids = sorted(held)
    first_path = held[sids[0]]
    peer.connections[0].raw_goaway(last_stream_id=sids[0], error_code=E.INTERNAL_ERROR)
    outcomes = {}
    for i, f in enumerate(futs):
        exc = f.exception(timeout=10)
        outcomes[f"/{i}"] = type(exc).__name__ if exc else f.result().content
    assert outcomes[first_path] == "ProtocolError"
    others = {p: v for p, v in outcomes.items() if p != first_path}
    assert others == {p: p.encode() for p in others}
    assert handler.processed == dict.fromkeys(others, 1)
    assert len(peer.requests) == 1 + 3 + 2
    stats = client.stats()
    assert stats["connections_opened"] == 2 == len(peer.connections)
    assert stats["retries"] == 2


# -- D4: REFUSED_STREAM on every attempt ------------------------------------------------


@pytest.mark.timeout(30)
def test_refused_stream_every_attempt_is_bounded(h2peer, make_client):
    peer = h2peer(routes={"/refuse": "rst:REFUSED_STREAM"})
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    t0 = time.monotonic()
    with pytest.raises(h2pool.StreamReset) as info:
        client.post(peer.h2c_url + "/refuse", body=b"never processed")
    elapsed = time.monotonic() - t0
    assert info.value.error_code == E.REFUSED_STREAM == 7
    assert len(peer.requests_for("/refuse")) == MAX_ATTEMPTS == 6
    assert elapsed < 5.0  # bounded, well inside the 10 s deadline
    # The connection is healthy: the next request succeeds on it.
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    stats = client.stats()
    assert stats["connections_opened"] == len(peer.connections) == 1
    assert stats["retries"] == MAX_ATTEMPTS - 1


@pytest.mark.timeout(60)
def test_refused_stream_retries_back_off(h2peer, make_client):
    arrivals: list[float] = []

    def refuse(conn, stream_id, request):
        arrivals.append(time.monotonic())
        conn.reset(stream_id, E.REFUSED_STREAM)

    peer = h2peer(default=refuse)
    client = make_client(http2_prior_knowledge=True, timeout=30.0)
    with pytest.raises(h2pool.StreamReset):
        client.get(peer.h2c_url + "/refuse")
    assert len(arrivals) == MAX_ATTEMPTS
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Immediate resubmission spans a few milliseconds on loopback; a backoff spaces
    # the attempts out, more and more, and still ends well inside the deadline.
    assert sum(gaps) >= 0.05, gaps
    assert gaps[-1] > gaps[0], gaps
    assert sum(gaps) < 5.0, gaps
    assert client.stats()["retries"] == MAX_ATTEMPTS - 1


# -- D5: RST_STREAM with an error code ----------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
@pytest.mark.parametrize(
    ("code", "after_headers"),
    [(E.INTERNAL_ERROR, True), (E.INTERNAL_ERROR, False), (E.PROTOCOL_ERROR, True)],
    ids=["internal-after-headers", "internal-before-headers", "protocol-after-headers"],
)
def test_reset_with_error_is_not_retried_and_sibling_completes(
    h2peer, make_client, code, after_headers, stream
):
    sibling: list[tuple[object, int]] = []

    def boom(conn, stream_id, request):
        if after_headers:
            conn.send_headers(stream_id, 200, [("content-length", "100")])
            conn.send_data(stream_id, b"x" * 10)
        conn.reset(stream_id, code)

    def hold(conn, stream_id, request):
        sibling.append((conn, stream_id))

    peer = h2peer(routes={"/boom": boom, "/sibling": hold})
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    sib = client.submit("GET", peer.h2c_url + "/sibling")
    peer.wait_requests(1)
    if stream and after_headers:
        r = client.request("GET", peer.h2c_url + "/boom", stream=True)
        with pytest.raises(h2pool.StreamReset) as info:
            r.read()
        r.close()
    else:
        with pytest.raises(h2pool.StreamReset) as info:
            client.request("GET", peer.h2c_url + "/boom", stream=stream)
    assert info.value.error_code == code
    assert not sib.done()  # the sibling on the same connection is untouched
    conn, sid = sibling[0]
    conn.respond(sid, 200, HELLO)
    assert sib.result(timeout=10).content == HELLO
    assert len(peer.requests_for("/boom")) == 1  # not retried
    assert len(peer.requests) == 2
    stats = client.stats()
    assert stats["connections_opened"] == 1 == len(peer.connections)
    assert stats["retries"] == 0
    assert not peer.resets  # the server reset it: the client sends no RST back


# -- retry accounting ---------------------------------------------------------------


@pytest.mark.timeout(30)
def test_stats_counts_transparent_retries(h2peer, make_client):
    seen: collections.Counter[str] = collections.Counter()

    def refuse_first(conn, stream_id, request):
        seen[request.path] += 1
        if seen[request.path] == 1:
            conn.reset(stream_id, E.REFUSED_STREAM)
        else:
            conn.respond(stream_id, 200, HELLO)

    peer = h2peer(default=refuse_first)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    for i in range(3):
        assert client.get(peer.h2c_url + f"/{i}").content == HELLO
    assert len(peer.requests) == 6
    assert client.stats()["retries"] == 3


# -- D8: server killed (SIGKILL) and restarted on the same port ------------------------


def _kill_nginx(server) -> None:
    """SIGKILL nginx's master and workers (a killed master leaves workers serving)."""
    pids = [server.proc.pid]
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        children = (task / "children").read_text().split()
        pids += [int(p) for p in children]
    # The master first: killed after a worker, it could fork a replacement worker
    # (which keeps the listening socket) in between, and the test's "nothing listens
    # now" request was then answered.
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.proc.wait(timeout=10)
    for pid in pids[1:]:
        while Path(f"/proc/{pid}").exists():  # workers are not our children: poll
            time.sleep(0.01)


@pytest.mark.timeout(60)
def test_nginx_killed_and_restarted(tmp_path, pki, content, make_client):
    from servers.nginx import restart_nginx, start_nginx

    server = start_nginx(tmp_path / "nginx", content.root, pki.server)
    try:
        client = make_client(timeout=h2pool.Timeout(connect=5, read=10, write=10, pool=10))
        url = server.https_url
        assert [client.get(url + "/13b").content for _ in range(5)] == [HELLO] * 5
        # Two downloads in flight, their response headers received: both were sent,
        # so neither may be retried.
        streams = [client.request("GET", url + "/100m", stream=True) for _ in range(2)]
        for r in streams:
            assert r.status == 200 and len(r.read(65536)) == 65536
        _kill_nginx(server)
        for r in streams:
            with pytest.raises(h2pool.ConnectionLost):
                while r.read(1 << 20):
                    pass
            r.close()
        with pytest.raises(h2pool.ConnectError):
            client.get(url + "/13b")  # nothing listens now
        server = restart_nginx(server)
        assert [client.get(url + "/13b").content for _ in range(5)] == [HELLO] * 5
        stats = client.stats()
        assert stats["connections_opened"] == 2
        assert stats["connections"] == 1
        assert stats["retries"] == 0
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_nginx_killed_under_load(tmp_path, pki, content, make_client):
    # Eight threads keep requesting while nginx is killed and restarted: every request
    # ends as a success or a typed error (ConnectionLost if it was in flight,
    # ConnectError while nothing listens), and all succeed again after the restart.
    from servers.nginx import restart_nginx, start_nginx

    server = start_nginx(tmp_path / "nginx", content.root, pki.server)
    try:
        client = make_client(timeout=h2pool.Timeout(connect=5, read=10, write=10, pool=10))
        url = server.https_url + "/1m"
        outcomes: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()
        phase = {"stop": False}
        warm = threading.Barrier(9)

        def worker() -> None:
            n = 0
            while not phase["stop"]:
                try:
                    r = client.get(url)
                    key = "ok" if len(r.content) == content.size["/1m"] else "short"
                except h2pool.H2PoolError as exc:
                    key = type(exc).__name__
                with lock:
                    outcomes[key] += 1
                n += 1
                if n == 3:
                    warm.wait()

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        warm.wait()  # every worker has completed three requests
        _kill_nginx(server)
        server = restart_nginx(server)
        with lock:
            before = outcomes["ok"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if outcomes["ok"] >= before + 40:
                    break
            time.sleep(0.01)  # polling the workers' progress counter
        phase["stop"] = True
        for t in threads:
            t.join()
        assert outcomes["ok"] >= before + 40, outcomes
        assert set(outcomes) <= {"ok", "ConnectionLost", "ConnectError"}, outcomes
        assert outcomes["ConnectionLost"] <= 8  # at most the requests in flight at the kill
        assert client.get(url).status == 200
        assert client.stats()["connections_opened"] >= 2
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_goaway_retry_replays_a_seekable_file_body_not_a_generator(h2peer, make_client):
    """A seekable file body is replayable (read again from where it started);
    a generator that has been pulled is not."""
    import io

    handler = Held(hold_conns={0})
    peer = h2peer(default=handler)
    client = make_client(http2_prior_knowledge=True, timeout=10.0)
    blob = bytes(range(256)) * 4096  # 1 MiB
    f = io.BytesIO(b"prefix-not-sent" + blob)
    f.seek(len(b"prefix-not-sent"))  # the body starts where the file is

    def gen():
        yield b"gen-"
        yield blob

    futs = {
        "/g0": client.submit("GET", peer.h2c_url + "/g0"),
        "/file": client.submit("POST", peer.h2c_url + "/file", body=f),
        "/gen": client.submit("POST", peer.h2c_url + "/gen", body=gen()),
    }
    by_sid = handler.wait_held(3)
    sids = sorted(by_sid)
    assert [by_sid[s] for s in sids] == list(futs)
    peer.connections[0].raw_goaway(last_stream_id=sids[0])
    handler.answer(sids[0])
    assert futs["/g0"].result(timeout=10).content == b"/g0"
    assert futs["/file"].result(timeout=10).content == b"/file"
    assert isinstance(futs["/gen"].exception(timeout=10), h2pool.ConnectionLost)
    assert handler.bodies["/file"] == [blob, blob]  # replayed from its start, intact
    assert handler.processed["/file"] == 1
    assert "/gen" not in handler.processed
    assert client.stats()["retries"] == 1


@pytest.mark.timeout(30)
def test_close_during_retry_backoff_fails_the_request(h2peer, make_client):
    """A refused request waits 25-200 ms before its next attempt. A Client closed in
    that window must fail it (ClientClosed), not leave its caller waiting forever."""
    import threading

    third = threading.Event()
    arrivals: list[float] = []

    def refuse(conn, stream_id, request):
        arrivals.append(time.monotonic())
        conn.reset(stream_id, E.REFUSED_STREAM)
        if len(arrivals) == 3:
            third.set()

    peer = h2peer(default=refuse)
    client = make_client(http2_prior_knowledge=True, timeout=20.0)
    fut = client.submit("GET", peer.h2c_url + "/refuse")
    assert third.wait(10)
    # The third refusal arms a 50 ms backoff before attempt 4: close inside it.
    client.close(timeout=1.0)
    exc = fut.exception(timeout=5)
    assert isinstance(exc, h2pool.ClientClosed), repr(exc)
    assert len(arrivals) == 3
