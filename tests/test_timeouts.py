"""Timeouts against the scripted peer: connect, read (per stream), pool, write.

Each timeout must fire near its configured value (not early, not more than
about twice late) and be both an ``h2pool.TimeoutError`` and a builtin
``TimeoutError``.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from collections.abc import Iterator

import h2.settings
import pytest

import h2pool

HELLO = b"Hello, world!"
MCS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
INITIAL_WINDOW = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE


def assert_timeout(exc: BaseException, kind: type[BaseException]) -> None:
    assert isinstance(exc, kind), repr(exc)
    assert isinstance(exc, h2pool.TimeoutError)
    assert isinstance(exc, builtins.TimeoutError)
    assert isinstance(exc, h2pool.H2PoolError)


def timed(fn):
    start = time.monotonic()
    try:
        fn()
    except BaseException as exc:
        return exc, time.monotonic() - start
    raise AssertionError("no exception raised")


# -- connect --------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["silent", "no_accept"])
def test_connect_timeout_tls_never_completes(h2peer, make_client, mode):
    # TCP connects (the kernel completes it even without accept()), but the
    # TLS handshake never gets an answer: the handshake counts as connect.
    peer = h2peer(mode=mode)
    client = make_client(timeout=h2pool.Timeout(connect=1.0, read=10, write=10, pool=10))
    exc, elapsed = timed(lambda: client.get(peer.https_url + "/x"))
    assert_timeout(exc, h2pool.ConnectTimeout)
    assert 0.9 <= elapsed < 2.0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["silent", "no_accept"])
def test_single_number_timeout_reports_a_stuck_handshake_as_connect(h2peer, make_client, mode):
    # Timeout(1.0): the pool wait and the dial end together; the cause is the dial.
    peer = h2peer(mode=mode)
    client = make_client(timeout=1.0)
    exc, elapsed = timed(lambda: client.get(peer.https_url + "/x"))
    assert_timeout(exc, h2pool.ConnectTimeout)
    assert 0.9 <= elapsed < 2.0
    futs = [client.submit("GET", peer.https_url + f"/{i}") for i in range(3)]
    for fut in futs:
        assert_timeout(fut.exception(timeout=5), h2pool.ConnectTimeout)


@pytest.mark.timeout(30)
def test_pool_timeout_shorter_than_connect_is_still_a_pool_timeout(h2peer, make_client):
    peer = h2peer(mode="silent")
    client = make_client(timeout=h2pool.Timeout(connect=10, read=10, write=10, pool=0.5))
    exc, elapsed = timed(lambda: client.get(peer.https_url + "/x"))
    assert_timeout(exc, h2pool.PoolTimeout)
    assert elapsed < 2.0


@pytest.mark.timeout(30)
def test_connect_timeout_via_submit(h2peer, make_client):
    peer = h2peer(mode="silent")
    client = make_client(timeout=h2pool.Timeout(connect=0.5, read=10, write=10, pool=10))
    futs = [client.submit("GET", peer.https_url + f"/{i}") for i in range(5)]
    for fut in futs:
        assert_timeout(fut.exception(timeout=5), h2pool.ConnectTimeout)


@pytest.mark.timeout(30)
def test_h2c_server_never_speaks(h2peer, make_client):
    # Cleartext: TCP completes, the server never sends its SETTINGS. Either
    # the connect or the read timeout may fire, within its bound.
    peer = h2peer(mode="silent")
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=1.0, read=1.0, write=5, pool=5)
    )
    exc, elapsed = timed(lambda: client.get(peer.h2c_url + "/x"))
    assert_timeout(exc, (h2pool.ConnectTimeout, h2pool.ReadTimeout))
    assert elapsed < 3.0


# -- read -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_read_timeout_is_per_stream(h2peer, make_client):
    peer = h2peer(routes={"/stall": "stall_headers", "/fast": "respond_13b"})
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    )
    start = time.monotonic()
    stalled = client.submit("GET", peer.h2c_url + "/stall")
    peer.wait_requests(1)
    # While /stall waits, /fast on the same connection succeeds.
    for _ in range(5):
        r = client.get(peer.h2c_url + "/fast")
        assert r.status == 200
        assert r.content == HELLO
    assert_timeout(stalled.exception(timeout=5), h2pool.ReadTimeout)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 2.5
    assert len(peer.connections) == 1
    assert {r.conn_index for r in peer.requests} == {0}
    # And the connection is still good after the timeout.
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    assert len(peer.connections) == 1


@pytest.mark.timeout(30)
def test_read_timeout_on_stalled_body(h2peer, make_client):
    peer = h2peer(routes={"/half": "stall_body"})
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    )
    exc, elapsed = timed(lambda: client.get(peer.h2c_url + "/half"))
    assert_timeout(exc, h2pool.ReadTimeout)
    assert 0.9 <= elapsed < 2.5


@pytest.mark.timeout(30)
def test_read_timeout_while_streaming_body(h2peer, make_client):
    peer = h2peer(routes={"/half": "stall_body"})
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    )
    with client.stream("GET", peer.h2c_url + "/half") as r:
        assert r.status == 200  # headers arrived
        exc, elapsed = timed(r.read)
    assert_timeout(exc, h2pool.ReadTimeout)
    assert 0.9 <= elapsed < 2.5


@pytest.mark.timeout(30)
def test_per_request_timeout_overrides_client(h2peer, make_client):
    peer = h2peer(routes={"/stall": "stall_headers"})
    client = make_client(http2_prior_knowledge=True, timeout=30.0)
    exc, elapsed = timed(lambda: client.get(peer.h2c_url + "/stall", timeout=0.5))
    assert_timeout(exc, h2pool.ReadTimeout)
    assert 0.45 <= elapsed < 1.5
    exc, elapsed = timed(
        lambda: client.get(
            peer.h2c_url + "/stall", timeout=h2pool.Timeout(connect=5, read=0.5, write=5, pool=5)
        )
    )
    assert_timeout(exc, h2pool.ReadTimeout)
    assert elapsed < 1.5


@pytest.mark.timeout(30)
def test_float_timeout_on_tls(h2peer, make_client):
    peer = h2peer(routes={"/stall": "stall_headers"}, tls=True)
    client = make_client(timeout=1.0)
    exc, elapsed = timed(lambda: client.get(peer.https_url + "/stall"))
    assert_timeout(exc, h2pool.ReadTimeout)
    assert 0.9 <= elapsed < 2.5
    assert client.get(peer.https_url + "/fast").content == HELLO


# -- pool -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_pool_timeout(h2peer, make_client):
    peer = h2peer(routes={"/stall": "stall_headers"}, settings={MCS: 1})
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(max_connections_per_origin=1),
        timeout=h2pool.Timeout(connect=5, read=20, write=5, pool=1.0),
    )
    first = client.submit("GET", peer.h2c_url + "/stall")
    peer.wait_requests(1)
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 1)  # the client knows MCS=1
    exc, elapsed = timed(lambda: client.get(peer.h2c_url + "/fast"))
    assert_timeout(exc, h2pool.PoolTimeout)
    assert 0.9 <= elapsed < 2.5
    # The queued request never reached the wire; the first is unaffected.
    assert len(peer.requests) == 1
    assert len(peer.connections) == 1
    assert not first.done()
    assert first.cancel()


@pytest.mark.timeout(30)
def test_pool_slot_frees_after_completion(h2peer, make_client):
    # Same limits, but nothing stalls: requests queue for the single slot
    # and all complete in turn.
    peer = h2peer(settings={MCS: 1})
    client = make_client(
        http2_prior_knowledge=True,
        limits=h2pool.Limits(max_connections_per_origin=1),
        timeout=h2pool.Timeout(connect=5, read=10, write=5, pool=10),
    )
    # Until the server's SETTINGS arrive a client may assume 100 streams
    # (RFC 9113 §5.1.2), so warm up first: from then on the limit binds.
    assert client.get(peer.h2c_url + "/warm").content == HELLO
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 1)
    futs = [client.submit("GET", peer.h2c_url + f"/{i}") for i in range(20)]
    assert [f.result(timeout=20).content for f in futs] == [HELLO] * 20
    assert len(peer.connections) == 1
    assert len(peer.requests) == 21
    assert not peer.errors  # never more than one stream open at a time


# -- write ----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_write_timeout_when_window_stays_shut(h2peer, make_client):
    # The peer grants no stream window and never sends WINDOW_UPDATE: the
    # upload cannot progress. A body-less request on the same connection works.
    peer = h2peer(routes={"/up": "echo"}, settings={INITIAL_WINDOW: 0})
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=5, read=10, write=1.0, pool=5)
    )
    # Before the SETTINGS are acknowledged the client may send 64 KiB on the
    # RFC default window (which this strict peer would call a flow-control
    # error), so warm up first.
    assert client.get(peer.h2c_url + "/warm").content == HELLO
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 1)
    upload = client.submit("PUT", peer.h2c_url + "/up", body=b"u" * (1 << 20))
    peer.wait_requests(2)
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    assert_timeout(upload.exception(timeout=5), h2pool.WriteTimeout)
    assert len(peer.connections) == 1
    assert peer.requests_for("/up")[0].body == b""  # not one byte got through


# -- interrupted callers ----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_keyboard_interrupt_while_blocked_resets_the_stream(h2peer, make_client):
    """Ctrl-C in a thread blocked in ``get()`` raises KeyboardInterrupt there, resets the
    stream (CANCEL) and leaves the client and its connection working."""
    import os
    import signal
    import threading

    peer = h2peer(routes={"/stall": "stall_headers", "/fast": "respond_13b"})
    client = make_client(http2_prior_knowledge=True, timeout=20.0)
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.get(peer.h2c_url + "/stall")
    finally:
        timer.cancel()
    assert time.monotonic() - start < 5.0
    assert peer.wait_for(lambda p: any(r.error_code == 8 for r in p.resets), 5.0)
    assert client.get(peer.h2c_url + "/fast").content == HELLO
    assert len(peer.connections) == 1
    assert client.stats()["open_streams"] == 0


# -- a slow producer is not a write timeout ----------------------------------------------


def _slow_body(pause: float) -> Iterator[bytes]:
    """1 KiB, then the caller's own source pauses (longer than the write timeout), then
    1 KiB more: the server accepts everything it is given, at once."""
    yield b"a" * 1024
    time.sleep(pause)  # the slow producer under test, not a wait for the client
    yield b"b" * 1024


SLOW_BODY_SHA = hashlib.sha256(b"a" * 1024 + b"b" * 1024).hexdigest()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("via", ["request", "submit"])
def test_slow_body_producer_is_not_a_write_timeout_h2(hashpeer, make_client, via):
    peer = hashpeer()
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=5, read=10, write=0.5, pool=5)
    )
    url = peer.h2c_url + "/upload"
    if via == "request":
        r = client.post(url, body=_slow_body(1.5))
    else:
        r = client.submit("POST", url, body=_slow_body(1.5)).result(timeout=20)
    assert r.status == 200
    assert r.json()["sha256"] == SLOW_BODY_SHA
    assert r.json()["length"] == 2048


@pytest.mark.timeout(30)
def test_slow_body_producer_is_not_a_write_timeout_h1(make_client):
    from servers.h1server import H1Server

    server = H1Server(None).start()
    try:
        client = make_client(timeout=h2pool.Timeout(connect=5, read=10, write=0.5, pool=5))
        r = client.post(server.url + "/echo", body=_slow_body(1.5))
        assert r.status == 200
        assert r.content == b"a" * 1024 + b"b" * 1024
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_write_timeout_still_fires_when_the_server_stops_accepting(h2peer, make_client):
    # The counterpart: the producer has everything ready, the server's window is shut.
    peer = h2peer(routes={"/up": "echo"}, settings={INITIAL_WINDOW: 0})
    client = make_client(
        http2_prior_knowledge=True, timeout=h2pool.Timeout(connect=5, read=10, write=0.5, pool=5)
    )
    assert client.get(peer.h2c_url + "/warm").content == HELLO
    assert peer.wait_for(lambda p: len(p.settings_acks) >= 1)
    fut = client.submit("PUT", peer.h2c_url + "/up", body=iter([b"x" * 65536] * 4))
    assert_timeout(fut.exception(timeout=10), h2pool.WriteTimeout)


@pytest.mark.timeout(30)
def test_pool_timeout_defers_to_a_dial_at_most_once(make_client):
    # A server that accepts and never answers TLS, a connect timeout below the moment a
    # pool timeout defers to a dial, and enough waiters for two dials in flight: every
    # failed dial starts another, and each would postpone the pool timeout again.
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        port = listener.getsockname()[1]
        client = make_client(timeout=h2pool.Timeout(connect=0.04, read=1, write=1, pool=1.0))
        futs = [client.submit("GET", f"https://127.0.0.1:{port}/{i}") for i in range(150)]
        kinds = {type(f.exception(timeout=5)).__name__ for f in futs}
        assert kinds <= {"PoolTimeout", "ConnectTimeout"}, kinds
        client.close()
    finally:
        stop.set()
        t.join(5)
        listener.close()
        for s in held:
            s.close()
