"""Hostile HTTP/2 peers (RELIABILITY.md §4, rows A1-A16 and A18).

Each test scripts a raw-frame peer (tests/servers/rawpeer.py) and asserts: the affected
request fails with a documented ``H2PoolError`` subclass (or, where the protocol allows,
succeeds), within a bounded time, with bounded memory, and a fresh request on the same
client succeeds afterwards. The autouse fixture checks threads and fds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import hpack
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    PingFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers.rawpeer import (
    PREFACE,
    RawConnection,
    RawPeer,
    hostile_first,
    raw_frame,
    serve_ok,
)
from servers.util import rss as vmrss

import h2pool

HELLO = b"Hello, world!"
FAST = h2pool.Timeout(connect=5, read=5, write=5, pool=5)
MiB = 1024 * 1024


def h2c(make_client: Callable[..., Any], **kwargs: Any) -> Any:
    kwargs.setdefault("timeout", FAST)
    return make_client(http2_prior_knowledge=True, **kwargs)


def goaway_codes(conn: RawConnection, timeout: float = 5.0) -> list[int]:
    """Error codes of the GOAWAY frames the client sent on ``conn`` (waits for one)."""
    conn.wait_for(lambda c: bool(c.frames_of(GoAwayFrame)) or c.eof, timeout)
    return [f.error_code for f in conn.frames_of(GoAwayFrame)]


def recovers(client: Any, peer: RawPeer) -> None:
    """A fresh request on the same client succeeds (on a new connection if needed)."""
    r = client.get(peer.url + "/after", timeout=FAST)
    assert r.status == 200
    assert r.content == HELLO


def timed_failure(call: Callable[[], Any], exc_type: Any) -> tuple[BaseException, float]:
    t0 = time.monotonic()
    with pytest.raises(exc_type) as info:
        call()
    return info.value, time.monotonic() - t0


class Peak:
    """tracemalloc peak over a block (every thread's Python allocations)."""

    def __enter__(self) -> Peak:
        tracemalloc.start()
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = tracemalloc.get_traced_memory()[1] - self.base
        tracemalloc.stop()


# -- A1 / A2: CONTINUATION flood and drip ---------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [0, 16384])
def test_a1_continuation_flood(rawpeer, make_client, size):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        conn.send_headers(sid, [(":status", "200")], end_headers=False)
        junk = b"\x00" * size
        while conn.send_continuation(sid, junk):
            pass

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    with Peak() as mem:
        exc, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 5
    assert exc.__cause__ is not None  # h2's reason is kept
    # h2's CONTINUATION_BACKLOG (64 frames) bounds the buffered block; what dominates
    # is the I/O thread's per-turn read (up to 64 x 256 KiB, joined once).
    assert mem.peak < 36 * MiB, mem.peak
    codes = goaway_codes(peer.connections[0])
    assert codes and codes[0] in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.ENHANCE_YOUR_CALM)
    recovers(client, peer)


def _drip(conn: RawConnection) -> None:
    conn.greet()
    sid, _ = conn.expect_request()
    conn.send_headers(sid, [(":status", "200")], end_headers=False)
    # One empty CONTINUATION every 100 ms: bytes keep arriving, the block never ends.
    while conn.pace(0.1) and conn.send_continuation(sid, b""):
        pass


@pytest.mark.timeout(30)
def test_a2_continuation_drip_hits_read_timeout(rawpeer, make_client):
    peer = rawpeer(_drip, ping_ack=False)  # a PING ACK inside the block would end it early
    client = h2c(make_client)
    t = h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    exc, elapsed = timed_failure(lambda: client.get(peer.url + "/x", timeout=t), h2pool.ReadTimeout)
    assert 0.9 <= elapsed < 3.0, elapsed
    assert isinstance(exc, TimeoutError)


@pytest.mark.timeout(30)
def test_a2_connection_inside_header_block_is_not_reused(rawpeer, make_client):
    peer = rawpeer(hostile_first(_drip), ping_ack=False)
    client = h2c(make_client, limits=h2pool.Limits(ping_timeout=1.0))
    t = h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    with pytest.raises(h2pool.ReadTimeout):
        client.get(peer.url + "/x", timeout=t)
    recovers(client, peer)
    assert goaway_codes(peer.connections[0], timeout=1.0)


# -- A3 / A4: HPACK bomb, header lists over the limit ---------------------------------------


@pytest.mark.timeout(30)
def test_a3_hpack_bomb(rawpeer, make_client):
    refs = 30000  # each one byte, each decoding to a 4 KiB header: ~120 MB inflated

    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        enc = hpack.Encoder()
        block = enc.encode([(":status", "200"), ("x-bomb", "A" * 4000)], huffman=False)
        block += b"\xbe" * refs  # indexed field 62: the newest dynamic-table entry
        conn.send_headers(sid, block=block, end_stream=True)
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    with Peak() as mem:
        exc, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 1.5
    assert mem.peak < 2 * MiB + refs * 2
    assert exc.__cause__ is not None
    assert goaway_codes(peer.connections[0])
    recovers(client, peer)


def _many_headers(n: int, value_size: int) -> list[tuple[str, str]]:
    return [(":status", "200")] + [(f"x-h{i}", "v" * value_size) for i in range(n)]


def _send_literal(conn: RawConnection, sid: int, headers: list[tuple[str, str]]) -> None:
    enc = hpack.Encoder()
    enc.header_table_size = 0  # literals only, no dynamic table
    conn.send_headers(sid, block=enc.encode(headers, huffman=False), end_stream=True)


@pytest.mark.timeout(30)
def test_a4_header_list_over_default_limit(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        _send_literal(conn, sid, _many_headers(2000, 100))  # ~270 KB listed
        serve_ok(conn)  # the connection goes on: only that stream failed

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    exc, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 3
    assert "header" in str(exc).lower()
    # The client advertised the default limit: 64 KiB.
    first = peer.connections[0].frames_of(SettingsFrame)[0]
    assert first.settings.get(SettingCodes.MAX_HEADER_LIST_SIZE) == 64 * 1024
    recovers(client, peer)
    # Decoded in full, the HPACK state intact: the stream failed, not the connection.
    assert len(peer.connections) == 1


@pytest.mark.timeout(30)
def test_a4_header_list_just_under_limit_is_fine(rawpeer, make_client):
    headers = _many_headers(400, 100)  # 400 * (5 + 100 + 32) = ~55 KB < 64 KiB

    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        _send_literal(conn, sid, headers)
        serve_ok(conn)

    peer = rawpeer(script)
    client = h2c(make_client)
    r = client.get(peer.url + "/x")
    assert r.status == 200
    assert r.headers.get_all("x-h399") == ["v" * 100]
    assert len(r.headers.items()) == 400
    recovers(client, peer)


@pytest.mark.timeout(30)
def test_a4_configured_smaller_limit_is_enforced(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        _send_literal(conn, sid, _many_headers(230, 100))  # ~31 KB listed
        serve_ok(conn)

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client, limits=h2pool.Limits(max_header_list_size=16384))
    try:
        client.get(peer.url + "/x")
    except h2pool.ProtocolError:
        pass
    else:
        pytest.fail("a 31 KB header list passed a 16 KiB limit")
    first = peer.connections[0].frames_of(SettingsFrame)[0]
    assert first.settings.get(SettingCodes.MAX_HEADER_LIST_SIZE) == 16384
    recovers(client, peer)
    assert len(peer.connections) == 1


# -- A5: 1xx flood ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a5_many_1xx_then_final_is_bounded(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        one = raw_frame(1, 0x4, sid, conn.header_block([(":status", "103"), ("link", "</a>")]))
        burst = bytearray()
        for _ in range(10000):
            burst += raw_frame(1, 0x4, sid, conn.header_block([(":status", "103")]))
        conn.send(one + burst)
        conn.respond(sid, 200, HELLO)
        serve_ok(conn)

    peer = rawpeer(script)
    client = h2c(make_client)
    t0 = time.monotonic()
    with Peak() as mem:
        try:
            r = client.get(peer.url + "/x")
        except h2pool.ProtocolError:
            r = None
    assert time.monotonic() - t0 < 10
    assert mem.peak < 8 * MiB
    if r is not None:
        assert r.status == 200
        assert r.content == HELLO
    recovers(client, peer)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", ["103", "200"])
def test_headers_on_a_stream_the_client_reset_are_ignored(rawpeer, make_client, status, caplog):
    """RFC 9113 §5.1: frames that were in flight when the client reset a stream are
    ignored. A 1xx is no exception (h2 itself has no transition for one on a closed
    stream and would make it an error of the whole connection): the connection goes
    on serving the next request."""
    caplog.set_level(logging.DEBUG, logger="h2pool")  # a failure then shows h2's reason
    greeted = threading.Event()
    done = threading.Event()

    def script(conn: RawConnection) -> None:
        conn.greet()
        greeted.set()
        sid, _ = conn.expect_request()
        conn.wait_for(lambda c: any(f.stream_id == sid for f in c.frames_of(RstStreamFrame)))
        # Sent after the reset arrived, as if it had crossed it on the wire.
        conn.send(raw_frame(1, 0x4, sid, conn.header_block([(":status", status)])))
        done.set()
        while True:
            sid, _ = conn.expect_request()
            conn.respond(sid, 200, HELLO)

    peer = rawpeer(script)
    client = h2c(make_client)
    fut = client.submit("GET", peer.url + "/x")
    conn = peer.wait_connections(1)[0]
    assert conn.wait_for(lambda c: bool(c.requests))
    # The peer's reader answers the PING that follows the reset at once: before the
    # script's SETTINGS, a loaded machine would make that PING ACK the server's first
    # frame, which the client rightly refuses as a preface.
    assert greeted.wait(10)
    assert fut.cancel()
    assert done.wait(10)
    for _ in range(3):
        r = client.get(peer.url + "/after", timeout=FAST)
        assert r.status == 200
        assert r.content == HELLO
    assert len(peer.connections) == 1, "the late HEADERS cost the connection"
    assert conn.frames_of(GoAwayFrame) == []


@pytest.mark.timeout(30)
def test_a5_endless_1xx_is_not_progress(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        frame = raw_frame(1, 0x4, sid, conn.header_block([(":status", "103")]))
        burst = frame * 200
        # Until the client resets the stream (or the connection).
        while not any(f.stream_id == sid for f in conn.frames_of(RstStreamFrame)):
            if not (conn.send(burst) and conn.pace(0.01)):
                return
        serve_ok(conn)

    # The client may check the flooding connection with a PING and move on to a fresh
    # one: later connections are well-behaved.
    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    t = h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    rss0 = vmrss()
    t0 = time.monotonic()
    with pytest.raises((h2pool.ReadTimeout, h2pool.ProtocolError)):
        client.get(peer.url + "/x", timeout=t)
    assert time.monotonic() - t0 < 3.0
    assert vmrss() - rss0 < 50 * MiB
    recovers(client, peer)


# -- A6 / A7: SETTINGS and PING floods --------------------------------------------------------


class _CountingCondition(threading.Condition):
    notifies = 0

    def notify_all(self) -> None:
        self.notifies += 1
        super().notify_all()


@pytest.mark.timeout(30)
def test_peer_wakes_its_waiters_once_per_read_not_once_per_frame(rawpeer):
    # The floods below send 100k frames. When the peer's reader woke the waiters once
    # per frame, each waiter re-ran a predicate that scans every frame received: with
    # threads switching every microsecond (--switch-interval 1e-6) the A6 test's wait
    # for 100k SETTINGS ACKs took over a minute. One wake-up per recv() keeps it linear.
    n = 5000
    ready = threading.Event()
    counting = _CountingCondition()

    def script(conn: RawConnection) -> None:
        conn._cond = counting
        ready.set()
        conn.stall()

    peer = rawpeer(script)
    with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
        assert ready.wait(10)
        sock.sendall(PREFACE + SettingsFrame(0).serialize() * n)
        conn = peer.connections[0]
        assert conn.wait_for(lambda c: len(c.frames) >= n, 10)
        assert counting.notifies <= n * 9 // 1024 + 8  # at most one per KiB received


@pytest.mark.timeout(40)
@pytest.mark.parametrize("shape", ["100k-empty", "2400-entries-x50"])
def test_a6_settings_flood(rawpeer, make_client, shape):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        if shape == "100k-empty":
            flood = SettingsFrame(0).serialize() * 100_000
        else:
            # 2400 entries (CVE-2020-11080): legal values, the same few repeated.
            payload = b"".join(
                (SettingCodes.HEADER_TABLE_SIZE if i % 2 else 0xF0 + i % 8).to_bytes(2, "big")
                + (4096).to_bytes(4, "big")
                for i in range(2400)
            )
            flood = raw_frame(4, 0, 0, payload) * 50
        conn.send(flood)
        conn.respond(sid, 200, HELLO)
        serve_ok(conn)

    peer = rawpeer(script)
    client = h2c(make_client)
    rss0 = vmrss()
    t0 = time.monotonic()
    try:
        r = client.get(peer.url + "/x", timeout=h2pool.Timeout(10))
    except h2pool.ProtocolError:
        r = None  # a flood GOAWAY is allowed
    assert time.monotonic() - t0 < 10
    assert vmrss() - rss0 < 64 * MiB
    if r is not None:
        assert r.content == HELLO
        conn = peer.connections[0]
        n = 100_000 if shape == "100k-empty" else 50
        acked = conn.wait_for(
            lambda c: sum("ACK" in f.flags for f in c.frames_of(SettingsFrame)) >= n, 10
        )
        assert acked
    recovers(client, peer)


def _ping_flood(total: int) -> Any:
    unit = PingFrame(0)
    unit.opaque_data = b"flooding"
    burst = unit.serialize() * 4096

    def script(conn: RawConnection) -> None:
        conn.greet()
        conn.expect_request()
        conn.pause_reading()  # from now on the client's ACKs pile up on its side
        while conn.sent < total and conn.send(burst):
            pass
        conn.stall()

    return hostile_first(script)


@pytest.mark.timeout(60)
def test_a7_ping_flood_while_peer_does_not_read(rawpeer, make_client):
    cap = 256 * MiB  # what the peer would send if nothing pushed back
    peer = rawpeer(_ping_flood(cap), rcvbuf=64 * 1024, ping_ack=False)
    t = h2pool.Timeout(connect=5, read=2.0, write=2.0, pool=5)
    client = h2c(make_client, timeout=t, limits=h2pool.Limits(ping_timeout=1.0))
    rss0 = vmrss()
    with pytest.raises((h2pool.ReadTimeout, h2pool.ConnectionLost)):
        client.get(peer.url + "/x")
    growth = vmrss() - rss0
    conn = peer.wait_connections(1)[0]
    # The client stopped reading (TCP backpressure) or closed: the peer could not push
    # anywhere near ``cap``.
    assert conn.sent < 64 * MiB, conn.sent
    assert growth < 96 * MiB, growth
    recovers(client, peer)


@pytest.mark.timeout(60)
def test_a7_ping_flood_does_not_starve_timers(rawpeer, make_client):
    peer = rawpeer(_ping_flood(6 * MiB), rcvbuf=64 * 1024, ping_ack=False)
    t = h2pool.Timeout(connect=5, read=1.0, write=1.0, pool=5)
    client = h2c(make_client, timeout=t, limits=h2pool.Limits(ping_timeout=1.0))
    _, elapsed = timed_failure(
        lambda: client.get(peer.url + "/x"), (h2pool.ReadTimeout, h2pool.ConnectionLost)
    )
    assert elapsed < 2.5, elapsed


# -- A8 / A9: RST_STREAM / WINDOW_UPDATE storms, empty DATA ----------------------------------


@pytest.mark.timeout(40)
def test_a8_storm_on_closed_stream(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        conn.respond(sid, 200, HELLO)
        sid2, _ = conn.expect_request()
        rst = RstStreamFrame(sid)
        rst.error_code = ErrorCodes.CANCEL
        wu = WindowUpdateFrame(sid)
        wu.window_increment = 1
        conn.send((rst.serialize() + wu.serialize()) * 50_000)  # 100 k frames
        conn.respond(sid2, 200, HELLO)
        serve_ok(conn)

    peer = rawpeer(script)
    client = h2c(make_client)
    assert client.get(peer.url + "/1").content == HELLO
    t0 = time.monotonic()
    try:
        r = client.get(peer.url + "/2", timeout=h2pool.Timeout(10))
        assert r.content == HELLO
    except h2pool.ProtocolError:
        pass  # a flood GOAWAY is allowed
    assert time.monotonic() - t0 < 10
    recovers(client, peer)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("frame", ["rst", "window_update"])
def test_a8_storm_on_idle_stream(rawpeer, make_client, frame):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        if frame == "rst":
            f: Any = RstStreamFrame(101)
            f.error_code = ErrorCodes.CANCEL
        else:
            f = WindowUpdateFrame(101)
            f.window_increment = 1
        conn.send(f.serialize() * 100_000)
        conn.respond(sid, 200, HELLO)
        serve_ok(conn)

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    # RFC 9113 §5.1 makes these connection errors; h2 ignores RST_STREAM on an idle
    # stream, which A8 also allows ("ignored cheaply"). Either way: bounded, no hang.
    t0 = time.monotonic()
    try:
        assert client.get(peer.url + "/x").content == HELLO
    except h2pool.ProtocolError:
        assert goaway_codes(peer.connections[0])
    assert time.monotonic() - t0 < 5
    recovers(client, peer)


def _empty_data_flood(conn: RawConnection) -> None:
    conn.greet()
    sid, _ = conn.expect_request()
    conn.send_headers(sid, [(":status", "200")])
    conn.send_data(sid, b"abc")
    empty = DataFrame(sid).serialize() * 100
    while not any(f.stream_id == sid for f in conn.frames_of(RstStreamFrame)):
        if not (conn.send(empty) and conn.pace(0.005)):
            return
    serve_ok(conn)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ping_ack", [True, False], ids=["ping-answered", "ping-unanswered"])
def test_a9_empty_data_flood_buffered(rawpeer, make_client, ping_ack):
    # The flood comes on the first connection only. After the read timeout the client
    # resets the stream and, no stream having progressed, holds the connection back
    # until a PING is answered; the recovery request then goes to whichever comes
    # first, the ACK (same connection) or a new connection. With the PING unanswered
    # it is always a new one. (A peer flooding every connection made this a race the
    # recovery could lose, on a second flooding connection.)
    peer = rawpeer(hostile_first(_empty_data_flood), ping_ack=ping_ack)
    client = h2c(make_client)
    t = h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    _, elapsed = timed_failure(lambda: client.get(peer.url + "/x", timeout=t), h2pool.ReadTimeout)
    assert 0.9 <= elapsed < 3.0
    recovers(client, peer)
    if not ping_ack:
        assert len(peer.connections) == 2
        assert sorted(peer.connections[0].requests) == [1]


@pytest.mark.timeout(30)
def test_a9_empty_data_flood_streamed(rawpeer, make_client):
    peer = rawpeer(hostile_first(_empty_data_flood))
    client = h2c(make_client)
    t = h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    r = client.request("GET", peer.url + "/x", timeout=t, stream=True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(r.read)
        try:
            exc = fut.exception(timeout=2.5)
        except concurrent.futures.TimeoutError:
            client.close()  # unblocks the reader so the worker can end
            fut.exception(timeout=10)
            pytest.fail("streamed read() did not time out under an empty-DATA flood")
    assert isinstance(exc, h2pool.ReadTimeout)
    recovers(client, peer)


# -- A10 / A11: WINDOW_UPDATE overflow and zero ---------------------------------------------


def _two_streams_then(action: Callable[[RawConnection, int, int], None]) -> Any:
    def script(conn: RawConnection) -> None:
        conn.greet()
        a, _ = conn.expect_request()
        b, _ = conn.expect_request()
        action(conn, a, b)
        conn.stall()

    return hostile_first(script)


@pytest.mark.timeout(30)
def test_a10_window_update_overflow_on_stream_fails_that_stream_only(rawpeer, make_client):
    def action(conn: RawConnection, a: int, b: int) -> None:
        wu = WindowUpdateFrame(a)
        wu.window_increment = 2**31 - 1  # 65535 + this > 2^31 - 1
        conn.send(wu)
        # The sibling still gets its answer on the same connection.
        conn.wait_for(lambda c: any(f.stream_id == a for f in c.frames_of(RstStreamFrame)))
        conn.respond(b, 200, HELLO)

    peer = rawpeer(_two_streams_then(action))
    client = h2c(make_client)
    fa = client.submit("GET", peer.url + "/a")
    peer.wait_connections(1)[0].wait_for(lambda c: len(c.requests) >= 1)
    fb = client.submit("GET", peer.url + "/b")
    exc = fa.exception(timeout=5)
    assert isinstance(exc, (h2pool.StreamReset, h2pool.ProtocolError)), exc
    assert fb.result(timeout=5).content == HELLO
    conn = peer.connections[0]
    rsts = [f for f in conn.frames_of(RstStreamFrame) if f.stream_id == 1]
    assert rsts and rsts[0].error_code == ErrorCodes.FLOW_CONTROL_ERROR
    assert not conn.frames_of(GoAwayFrame)
    assert len(peer.connections) == 1


@pytest.mark.timeout(30)
def test_a10_window_update_overflow_on_connection_fails_all(rawpeer, make_client):
    def action(conn: RawConnection, a: int, b: int) -> None:
        wu = WindowUpdateFrame(0)
        wu.window_increment = 2**31 - 1
        conn.send(wu)

    peer = rawpeer(_two_streams_then(action))
    client = h2c(make_client)
    fa = client.submit("GET", peer.url + "/a")
    peer.wait_connections(1)[0].wait_for(lambda c: len(c.requests) >= 1)
    fb = client.submit("GET", peer.url + "/b")
    for fut in (fa, fb):
        exc = fut.exception(timeout=5)
        assert isinstance(exc, (h2pool.ProtocolError, h2pool.ConnectionLost)), exc
    assert goaway_codes(peer.connections[0]) == [ErrorCodes.FLOW_CONTROL_ERROR]
    recovers(client, peer)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scope", ["stream", "connection"])
def test_a11_window_update_zero(rawpeer, make_client, scope):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        # hyperframe refuses to serialize an increment of 0: build the frame by hand.
        conn.send(raw_frame(8, 0, sid if scope == "stream" else 0, (0).to_bytes(4, "big")))
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    # RFC 9113 §6.9: a stream error or a connection error; h2 makes both connection errors.
    _, elapsed = timed_failure(
        lambda: client.get(peer.url + "/x"), (h2pool.ProtocolError, h2pool.StreamReset)
    )
    assert elapsed < 3
    recovers(client, peer)


# -- A12 / A13: preface and frame size -------------------------------------------------------


def _ping_bytes(flags: int = 0) -> bytes:
    return raw_frame(6, flags, 0, b"12345678")


FIRST_FRAMES = {
    "ping": _ping_bytes(),
    "window_update": raw_frame(8, 0, 0, (1000).to_bytes(4, "big")),
    "headers": raw_frame(1, 0x5, 1, hpack.Encoder().encode([(":status", "200")])),
    "goaway": raw_frame(7, 0, 0, bytes(8)),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("first", sorted(FIRST_FRAMES))
def test_a12_frame_before_settings(rawpeer, make_client, first):
    def script(conn: RawConnection) -> None:
        conn.expect_request()
        conn.send(FIRST_FRAMES[first] + SettingsFrame(0).serialize())
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    exc, elapsed = timed_failure(
        lambda: client.get(peer.url + "/x"), (h2pool.ProtocolError, h2pool.ConnectionLost)
    )
    assert elapsed < 3
    assert isinstance(exc, h2pool.ProtocolError), exc
    recovers(client, peer)


@pytest.mark.timeout(30)
def test_a12_non_settings_preface_split_across_reads(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        sid, _ = conn.expect_request()
        ping = _ping_bytes(flags=0x04)
        conn.send(ping[:1])
        conn.pace(0.3)  # let the client read the first byte on its own
        conn.send(ping[1:])
        conn.greet()
        conn.respond(sid, 200, HELLO)
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    with pytest.raises(h2pool.ProtocolError):
        client.get(peer.url + "/x")


@pytest.mark.timeout(30)
def test_a13_oversized_frame(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        conn.send_headers(sid, [(":status", "200")])
        conn.send(raw_frame(0, 0, sid, b"x" * 20000))  # > our 16384 MAX_FRAME_SIZE
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    _, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 3
    assert goaway_codes(peer.connections[0]) == [ErrorCodes.FRAME_SIZE_ERROR]
    recovers(client, peer)


def _giant_frame_header(conn: RawConnection) -> None:
    conn.greet()
    sid, _ = conn.expect_request()
    conn.send_headers(sid, [(":status", "200")])
    # Announce a 16 MiB - 1 DATA frame, send 1 MiB of it and stop.
    header = raw_frame(0, 0, sid, b"")
    conn.send((2**24 - 1).to_bytes(3, "big") + header[3:] + b"x" * MiB)
    conn.stall()


@pytest.mark.timeout(30)
def test_a13_oversized_frame_header_then_stall_is_bounded(rawpeer, make_client):
    peer = rawpeer(hostile_first(_giant_frame_header), ping_ack=False)
    t = h2pool.Timeout(connect=5, read=1.0, write=5, pool=5)
    client = h2c(make_client, timeout=t, limits=h2pool.Limits(ping_timeout=1.0))
    _, elapsed = timed_failure(
        lambda: client.get(peer.url + "/x"), (h2pool.ProtocolError, h2pool.ReadTimeout)
    )
    assert elapsed < 3
    # The connection is wedged inside a frame; the unanswered PING ends it.
    assert peer.connections[0].wait_for(lambda c: c.eof, 5)
    recovers(client, peer)


@pytest.mark.timeout(30)
def test_a13_oversized_frame_header_is_refused_at_once(rawpeer, make_client):
    peer = rawpeer(hostile_first(_giant_frame_header))
    client = h2c(make_client)  # read timeout 5 s
    _, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 2


# -- A14: frames on wrong streams -------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a14_data_on_idle_stream(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        conn.expect_request()
        conn.send_data(7, b"stray")  # stream 7 was never opened
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    _, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 3
    assert goaway_codes(peer.connections[0]) == [ErrorCodes.PROTOCOL_ERROR]
    recovers(client, peer)


@pytest.mark.timeout(30)
def test_a14_data_on_closed_stream_then_sibling_answer_in_same_segment(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        conn.respond(sid, 200, HELLO)
        sid2, _ = conn.expect_request()
        stray = raw_frame(0, 0, sid, b"late")  # stream 1 ended with END_STREAM
        block = conn.header_block([(":status", "200"), ("content-length", "13")])
        conn.send(stray + raw_frame(1, 0x4, sid2, block) + raw_frame(0, 0x1, sid2, HELLO))
        serve_ok(conn)

    peer = rawpeer(script)
    client = h2c(make_client)
    assert client.get(peer.url + "/1").content == HELLO
    t = h2pool.Timeout(connect=5, read=2.0, write=5, pool=5)
    # RFC 9113 §5.1: STREAM_CLOSED, as a stream or a connection error. Either way the
    # sibling's answer, in the same read, must not be left waiting in h2's buffer.
    try:
        r = client.get(peer.url + "/2", timeout=t)
        assert r.content == HELLO
    except h2pool.ProtocolError:
        pass
    recovers(client, peer)


@pytest.mark.timeout(30)
def test_a14_headers_on_even_stream(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        conn.expect_request()
        conn.send_headers(2, [(":status", "200")], end_stream=True)
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    _, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 3
    assert goaway_codes(peer.connections[0]) == [ErrorCodes.PROTOCOL_ERROR]
    recovers(client, peer)


# -- A15: server push -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a15_push_promise_while_disabled(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        pp = PushPromiseFrame(sid)
        pp.promised_stream_id = 2
        pp.data = conn.header_block(
            [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/p")]
        )
        pp.flags.add("END_HEADERS")
        conn.send(pp)
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    _, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 3
    first = peer.connections[0].frames_of(SettingsFrame)[0]
    assert first.settings.get(SettingCodes.ENABLE_PUSH) == 0
    assert goaway_codes(peer.connections[0]) == [ErrorCodes.PROTOCOL_ERROR]
    recovers(client, peer)


@pytest.mark.timeout(30)
def test_a15_enable_push_from_server(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet({SettingCodes.ENABLE_PUSH: 1})
        conn.expect_request()
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    _, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 3
    assert goaway_codes(peer.connections[0]) == [ErrorCodes.PROTOCOL_ERROR]
    recovers(client, peer)


# -- A16: invalid SETTINGS --------------------------------------------------------------------


def _setting(code: int, value: int) -> bytes:
    return code.to_bytes(2, "big") + value.to_bytes(4, "big")


BAD_SETTINGS = {
    "max_frame_size_0": raw_frame(4, 0, 0, _setting(SettingCodes.MAX_FRAME_SIZE, 0)),
    "max_frame_size_16383": raw_frame(4, 0, 0, _setting(SettingCodes.MAX_FRAME_SIZE, 16383)),
    "max_frame_size_2^24": raw_frame(4, 0, 0, _setting(SettingCodes.MAX_FRAME_SIZE, 2**24)),
    "initial_window_2^31": raw_frame(4, 0, 0, _setting(SettingCodes.INITIAL_WINDOW_SIZE, 2**31)),
    "enable_push_2": raw_frame(4, 0, 0, _setting(SettingCodes.ENABLE_PUSH, 2)),
    "length_not_multiple_of_6": raw_frame(4, 0, 0, b"\x00\x03\x00\x00\x00"),
    "on_stream_1": raw_frame(4, 0, 1, b""),
    "ack_with_payload": raw_frame(4, 0x1, 0, _setting(SettingCodes.ENABLE_PUSH, 0)),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
@pytest.mark.parametrize("when", ["preface", "later"])
def test_a16_invalid_settings(rawpeer, make_client, case, when):
    def script(conn: RawConnection) -> None:
        if when == "later":
            conn.greet()
        sid, _ = conn.expect_request()
        conn.send(BAD_SETTINGS[case])
        conn.pace(0.2)  # if the client accepted it, this answer would succeed
        conn.respond(sid, 200, HELLO)
        conn.stall()

    peer = rawpeer(hostile_first(script))
    client = h2c(make_client)
    _, elapsed = timed_failure(lambda: client.get(peer.url + "/x"), h2pool.ProtocolError)
    assert elapsed < 3
    recovers(client, peer)


@pytest.mark.timeout(30)
def test_a16_unknown_setting_is_ignored(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.send(raw_frame(4, 0, 0, _setting(0xFA, 12345) + _setting(0x0, 4096)))
        serve_ok(conn)

    peer = rawpeer(script)
    client = h2c(make_client)
    assert client.get(peer.url + "/x").content == HELLO
    recovers(client, peer)


# -- A18: fuzz ---------------------------------------------------------------------------------

_frame_strategy = st.builds(
    raw_frame,
    st.integers(0, 12),  # DATA .. ORIGIN, and a few unknown types
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 2**31 - 1]),
    st.binary(max_size=40),
)
_fuzz_strategy = st.one_of(
    st.binary(min_size=1, max_size=200),
    st.lists(_frame_strategy, min_size=1, max_size=6).map(b"".join),
)


@pytest.mark.timeout(120)
def test_a18_fuzz_after_valid_preface(rawpeer, make_client):
    """Random frames and bytes after SETTINGS: every request resolves within 5 s with a
    Response or an H2PoolError, and the client keeps working."""
    current: dict[str, Any] = {}

    def script(conn: RawConnection) -> None:
        conn.greet()
        conn.expect_request()
        conn.send(current["payload"])
        if current["then_close"]:
            conn.close_write()
        conn.stall()

    peer = rawpeer(script)
    t = h2pool.Timeout(connect=5, read=0.5, write=1, pool=5)

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(payload=_fuzz_strategy, then_close=st.booleans())
    def run(payload: bytes, then_close: bool) -> None:
        current.update(payload=payload, then_close=then_close)
        client = make_client(http2_prior_knowledge=True, timeout=t)
        try:
            fut = client.submit("GET", peer.url + "/fuzz")
            exc = fut.exception(timeout=5)
            assert exc is None or isinstance(exc, h2pool.H2PoolError), repr(exc)
            if exc is None:
                assert isinstance(fut.result(), h2pool.Response)
        finally:
            client.close(timeout=1)

    run()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "headers", [_many_headers(1, 100_000), _many_headers(10_000, 1)], ids=["100KB", "10000fields"]
)
def test_a4_oversized_headers_fail_only_their_stream(rawpeer, make_client, headers):
    # The block is decoded in full and the HPACK state stays in step with the server's:
    # only that stream fails (RST_STREAM PROTOCOL_ERROR); its sibling on the same
    # connection completes, and the connection carries the next request.
    enc = hpack.Encoder()

    def script(conn: RawConnection) -> None:
        conn.greet()
        sid1, _ = conn.expect_request()
        sid3, _ = conn.expect_request()
        conn.send_headers(sid1, block=enc.encode(headers), end_stream=True)
        conn.send_headers(sid3, block=enc.encode([(":status", "200")]), end_stream=False)
        conn.send_data(sid3, HELLO, end_stream=True)
        while True:
            sid, _ = conn.expect_request()
            conn.send_headers(sid, block=enc.encode([(":status", "200")]), end_stream=False)
            conn.send_data(sid, HELLO, end_stream=True)

    peer = rawpeer(script)
    client = h2c(make_client)
    big = client.submit("GET", peer.url + "/big")
    small = client.submit("GET", peer.url + "/small")
    exc = big.exception(timeout=10)
    assert isinstance(exc, h2pool.ProtocolError)
    assert "header list" in str(exc)
    assert small.result(timeout=10).content == HELLO
    assert client.get(peer.url + "/after").content == HELLO
    conn = peer.connections[0]
    assert conn.wait_for(lambda c: bool(c.frames_of(RstStreamFrame)))
    (rst,) = conn.frames_of(RstStreamFrame)
    assert rst.error_code == 1  # PROTOCOL_ERROR, on that stream only
    assert not conn.frames_of(GoAwayFrame)
    assert len(peer.connections) == 1
