"""Invalid and odd responses (RELIABILITY.md §4, rows B1-B9).

A raw-frame peer (tests/servers/rawpeer.py) sends each response shape; the client must
raise ``ProtocolError`` for malformed ones (never hand a bad header or a truncated body
to the caller), accept every legal shape exactly, and keep working afterwards.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame, HeadersFrame, RstStreamFrame, WindowUpdateFrame
from servers.rawpeer import RawConnection

import h2pool

HELLO = b"Hello, world!"
FAST = h2pool.Timeout(connect=5, read=3, write=5, pool=5)

Handler = Callable[[RawConnection, int], None]


def routed(routes: dict[str, Handler]) -> Callable[[RawConnection], None]:
    """A script answering each request by its path; unknown paths get 200 HELLO."""

    def script(conn: RawConnection) -> None:
        conn.greet()
        while True:
            sid, headers = conn.expect_request()
            path = dict(headers)[":path"]
            handler = routes.get(path)
            if handler is None:
                conn.respond(sid, 200, HELLO)
            else:
                handler(conn, sid)

    return script


def h2c(make_client: Callable[..., Any]) -> Any:
    return make_client(http2_prior_knowledge=True, timeout=FAST)


def headers_only(headers: list[tuple[Any, Any]], end_stream: bool = True) -> Handler:
    def handler(conn: RawConnection, sid: int) -> None:
        conn.send_headers(sid, headers, end_stream=end_stream)

    return handler


def then_data(headers: list[tuple[Any, Any]], *chunks: bytes) -> Handler:
    def handler(conn: RawConnection, sid: int) -> None:
        conn.send_headers(sid, headers)
        for i, chunk in enumerate(chunks):
            conn.send_data(sid, chunk, end_stream=i == len(chunks) - 1)

    return handler


# -- B1-B4: malformed header blocks ----------------------------------------------------------

S200 = (":status", "200")
MALFORMED: dict[str, Handler] = {
    # B1 / B2: :status
    "no-status": headers_only([("content-type", "text/plain")]),
    "status-2x0": headers_only([(":status", "2x0")]),
    "status-99": headers_only([(":status", "99")]),
    "status-1000": headers_only([(":status", "1000")]),
    "status-600": headers_only([(":status", "600")]),
    "status-empty": headers_only([(":status", "")]),
    "status-dup": headers_only([S200, (":status", "204")]),
    # B3: names
    "upper-name": headers_only([S200, ("X-Upper", "1")]),
    "pseudo-after-regular": headers_only([("x-a", "1"), S200]),
    "unknown-pseudo": headers_only([S200, (":foo", "1")]),
    "request-pseudo": headers_only([S200, (":path", "/")]),
    "connection": headers_only([S200, ("connection", "keep-alive")]),
    "transfer-encoding": headers_only([S200, ("transfer-encoding", "chunked")]),
    "keep-alive": headers_only([S200, ("keep-alive", "timeout=5")]),
    "upgrade": headers_only([S200, ("upgrade", "h2c")]),
    "proxy-connection": headers_only([S200, ("proxy-connection", "close")]),
    "name-with-space": headers_only([S200, ("x y", "1")]),
    "name-with-colon": headers_only([S200, ("x:y", "1")]),
    "empty-name": headers_only([S200, ("", "1")]),
    # B4: values
    "value-cr": headers_only([S200, ("x-v", "a\rb")]),
    "value-lf": headers_only([S200, ("x-v", "a\nInjected: 1")]),
    "value-nul": headers_only([S200, ("x-v", "a\x00b")]),
    "value-leading-space": headers_only([S200, ("x-v", " a")]),
    "value-trailing-tab": headers_only([S200, ("x-v", "a\t")]),
}


@pytest.mark.timeout(60)
def test_b1_b4_malformed_headers(rawpeer, make_client):
    peer = rawpeer(routed({f"/{k}": v for k, v in MALFORMED.items()}))
    client = h2c(make_client)
    accepted = []
    for name in MALFORMED:
        try:
            r = client.get(f"{peer.url}/{name}")
        except h2pool.ProtocolError:
            pass
        else:
            accepted.append((name, r.status, r.headers.items()))
        # Each failure leaves the client working.
        assert client.get(peer.url + "/ok").content == HELLO
    assert accepted == []


@pytest.mark.timeout(30)
def test_b3_malformed_response_fails_only_its_stream(rawpeer, make_client):
    def slow(conn: RawConnection, sid: int) -> None:
        conn.wait_for(lambda c: len(c.requests) >= 2)
        conn.respond(sid + 2, 200, b"", [("X-Upper", "1")])
        conn.respond(sid, 200, HELLO)

    peer = rawpeer(routed({"/sibling": slow, "/bad": lambda conn, sid: None}))
    client = h2c(make_client)
    sibling = client.submit("GET", peer.url + "/sibling")
    peer.wait_connections(1)[0].wait_for(lambda c: len(c.requests) >= 1)
    bad = client.submit("GET", peer.url + "/bad")
    assert isinstance(bad.exception(timeout=5), h2pool.ProtocolError)
    assert sibling.result(timeout=5).content == HELLO
    conn = peer.connections[0]
    # The peer records frames on its own reader thread: wait for the RST to be seen.
    assert conn.wait_for(lambda c: any(f.stream_id == 3 for f in c.frames_of(RstStreamFrame)), 5)
    assert not conn.frames_of(GoAwayFrame)


# -- B5: Content-Length ----------------------------------------------------------------------


def _trailers_cut_short(conn: RawConnection, sid: int) -> None:
    conn.send_headers(sid, [S200, ("content-length", "20")])
    conn.send_data(sid, HELLO)
    conn.send_headers(sid, [("x-t", "1")], end_stream=True)


CL: dict[str, Handler] = {
    "longer": then_data([S200, ("content-length", "5")], HELLO),
    "shorter": then_data([S200, ("content-length", "20")], HELLO),
    "shorter-split": then_data([S200, ("content-length", "20")], b"Hello", b", world!"),
    "conflicting": then_data([S200, ("content-length", "13"), ("content-length", "14")], HELLO),
    "plus-sign": then_data([S200, ("content-length", "+13")], HELLO),
    "negative": then_data([S200, ("content-length", "-1")], HELLO),
    "not-a-number": then_data([S200, ("content-length", "abc")], HELLO),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stream", [False, True])
def test_b5_content_length_mismatch(rawpeer, make_client, stream):
    peer = rawpeer(routed({f"/{k}": v for k, v in CL.items()}))
    client = h2c(make_client)
    accepted = []
    for name in CL:
        try:
            r = client.request("GET", f"{peer.url}/{name}", stream=stream)
            body = r.content
        except h2pool.ProtocolError:
            pass
        else:
            accepted.append((name, body))
        assert client.get(peer.url + "/ok").content == HELLO
    assert accepted == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stream", [False, True])
def test_b5_body_short_of_content_length_then_trailers(rawpeer, make_client, stream):
    peer = rawpeer(routed({"/x": _trailers_cut_short}))
    client = h2c(make_client)
    with pytest.raises(h2pool.ProtocolError):
        client.request("GET", peer.url + "/x", stream=stream).content  # noqa: B018


@pytest.mark.timeout(30)
def test_b5_length_mismatch_fails_only_its_stream(rawpeer, make_client):
    def both(conn: RawConnection, sid: int) -> None:
        conn.wait_for(lambda c: len(c.requests) >= 2)
        then_data([S200, ("content-length", "5")], HELLO)(conn, sid + 2)
        conn.respond(sid, 200, HELLO)

    peer = rawpeer(routed({"/sibling": both, "/bad": lambda conn, sid: None}))
    client = h2c(make_client)
    sibling = client.submit("GET", peer.url + "/sibling")
    peer.wait_connections(1)[0].wait_for(lambda c: len(c.requests) >= 1)
    bad = client.submit("GET", peer.url + "/bad")
    assert isinstance(bad.exception(timeout=5), h2pool.ProtocolError)
    assert sibling.result(timeout=5).content == HELLO
    assert len(peer.connections) == 1


# -- B6: DATA in the wrong place -------------------------------------------------------------


def _data_before_headers(conn: RawConnection, sid: int) -> None:
    conn.send_data(sid, HELLO)
    conn.respond(sid, 200, HELLO)


def _data_after_1xx(conn: RawConnection, sid: int) -> None:
    conn.send_headers(sid, [(":status", "103")])
    conn.send_data(sid, HELLO)
    conn.respond(sid, 200, HELLO)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["data-before-headers", "data-after-1xx"])
def test_b6_data_out_of_place(rawpeer, make_client, case):
    routes = {"/data-before-headers": _data_before_headers, "/data-after-1xx": _data_after_1xx}
    peer = rawpeer(routed(routes))
    client = h2c(make_client)
    with pytest.raises(h2pool.ProtocolError):
        client.get(f"{peer.url}/{case}")
    assert client.get(peer.url + "/ok").content == HELLO


# -- B7: the response-shape matrix -----------------------------------------------------------

INFO = {
    "none": [],
    "100": [[(":status", "100")]],
    "103+100": [[(":status", "103")], [(":status", "100")]],
}
BODIES = {"none": [], "one": [HELLO], "three": [b"Hel", b"lo, w", b"orld!"]}
TRAILERS = {
    "none": [],
    "one": [("x-checksum", "abc")],
    "two": [("x-checksum", "abc"), ("x-n", "2")],
}
SHAPES = list(itertools.product(INFO, [False, True], BODIES, TRAILERS))


def _shape_handler(info: str, split: bool, body: str, trailers: str) -> Handler:
    def handler(conn: RawConnection, sid: int) -> None:
        cut = 3 if split else 16384  # split: HEADERS + CONTINUATIONs of 3 bytes each
        for block in INFO[info]:
            conn.send_headers(sid, block, split=cut)
        chunks = BODIES[body]
        tr = TRAILERS[trailers]
        final = [S200, ("x-shape", f"{info}/{split}/{body}/{trailers}")]
        conn.send_headers(sid, final, end_stream=not chunks and not tr, split=cut)
        for i, chunk in enumerate(chunks):
            conn.send_data(sid, chunk, end_stream=i == len(chunks) - 1 and not tr)
        if tr:
            conn.send_headers(sid, tr, end_stream=True, split=cut)

    return handler


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stream", [False, True])
def test_b7_response_shape_matrix(rawpeer, make_client, stream):
    routes = {f"/{i}": _shape_handler(*shape) for i, shape in enumerate(SHAPES)}
    peer = rawpeer(routed(routes))
    client = h2c(make_client)
    for i, (info, split, body, trailers) in enumerate(SHAPES):
        r = client.request("GET", f"{peer.url}/{i}", stream=stream)
        assert r.status == 200
        assert r.headers["x-shape"] == f"{info}/{split}/{body}/{trailers}"
        content = b"".join(r.iter_bytes()) if stream else r.content
        assert content == b"".join(BODIES[body]), (info, split, body, trailers)
        assert dict(r.trailers.items()) == dict(TRAILERS[trailers]), (info, split, body)
    assert len(peer.connections) == 1  # every shape was legal: one connection throughout


def _empty_data_mid_body(conn: RawConnection, sid: int) -> None:
    conn.send_headers(sid, [S200, ("content-length", "13")])
    conn.send_data(sid, b"Hello")
    conn.send_data(sid, b"")  # legal: an empty DATA frame without END_STREAM
    conn.send_data(sid, b", world!", end_stream=True)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["buffered", "read", "read-amt"])
def test_b7_empty_data_frame_mid_body(rawpeer, make_client, how):
    peer = rawpeer(routed({"/x": _empty_data_mid_body}))
    client = h2c(make_client)
    if how == "buffered":
        assert client.get(peer.url + "/x").content == HELLO
    else:
        with client.stream("GET", peer.url + "/x") as r:
            if how == "read":
                assert r.read() == HELLO
            else:
                parts = []
                while chunk := r.read(4):
                    parts.append(chunk)
                assert b"".join(parts) == HELLO


@pytest.mark.timeout(30)
def test_b7_empty_data_frame_mid_body_iter_bytes(rawpeer, make_client):
    got_first = threading.Event()

    def handler(conn: RawConnection, sid: int) -> None:
        conn.send_headers(sid, [S200, ("content-length", "13")])
        conn.send_data(sid, b"Hello")
        got_first.wait(5)  # the reader holds b"Hello" and waits for more
        conn.send_data(sid, b"")
        conn.pace(0.3)  # the empty frame arrives on its own
        conn.send_data(sid, b", world!", end_stream=True)

    peer = rawpeer(routed({"/x": handler}))
    client = h2c(make_client)
    parts = []
    with client.stream("GET", peer.url + "/x") as r:
        for chunk in r.iter_bytes():
            parts.append(chunk)
            got_first.set()
    got_first.set()
    assert b"".join(parts) == HELLO


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", [204, 304])
def test_b9_204_304_with_data(rawpeer, make_client, status):
    def handler(conn: RawConnection, sid: int) -> None:
        conn.send_headers(sid, [(":status", str(status))])
        conn.send_data(sid, HELLO, end_stream=True)

    peer = rawpeer(routed({"/x": handler}))
    client = h2c(make_client)
    try:
        r = client.get(peer.url + "/x")
    except h2pool.ProtocolError:
        return
    assert r.content == b""


# -- B8: bad trailers ------------------------------------------------------------------------


def _trailers(trailers: list[tuple[str, str]], end_stream: bool = True) -> Handler:
    def handler(conn: RawConnection, sid: int) -> None:
        conn.send_headers(sid, [S200])
        conn.send_data(sid, HELLO)
        conn.send_headers(sid, trailers, end_stream=end_stream)
        if not end_stream:
            conn.send_data(sid, b"", end_stream=True)

    return handler


BAD_TRAILERS: dict[str, Handler] = {
    "pseudo": _trailers([(":status", "200")]),
    "uppercase": _trailers([("X-Checksum", "abc")]),
    "binary": _trailers([("x-checksum", "a\x00\r\nb")]),
    "connection-specific": _trailers([("transfer-encoding", "chunked")]),
    "no-end-stream": _trailers([("x-checksum", "abc")], end_stream=False),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stream", [False, True])
def test_b8_bad_trailers(rawpeer, make_client, stream):
    peer = rawpeer(routed({f"/{k}": v for k, v in BAD_TRAILERS.items()}))
    client = h2c(make_client)
    accepted = []
    for name in BAD_TRAILERS:
        try:
            r = client.request("GET", f"{peer.url}/{name}", stream=stream)
            r.content  # noqa: B018
        except h2pool.ProtocolError:
            pass
        else:
            accepted.append((name, r.trailers.items()))
        assert client.get(peer.url + "/ok").content == HELLO
    assert accepted == []


# -- B9: HEAD / 204 / 304 with DATA ------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method,status", [("HEAD", 200), ("HEAD", 204)])
def test_b9_no_content_response_with_data(rawpeer, make_client, method, status):
    def handler(conn: RawConnection, sid: int) -> None:
        conn.send_headers(sid, [(":status", str(status)), ("content-length", "13")])
        conn.send_data(sid, HELLO, end_stream=True)

    peer = rawpeer(routed({"/x": handler}))
    client = h2c(make_client)
    try:
        r = client.request(method, peer.url + "/x")
    except h2pool.ProtocolError:
        pass
    else:  # discarded per RFC 9110 §6.4.1: never a body for these
        assert r.status == status
        assert r.content == b""
    assert client.get(peer.url + "/ok").content == HELLO


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method,status", [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_b9_no_content_response_without_data(rawpeer, make_client, method, status):
    def handler(conn: RawConnection, sid: int) -> None:
        conn.send_headers(
            sid, [(":status", str(status)), ("content-length", "13")], end_stream=True
        )

    peer = rawpeer(routed({"/x": handler}))
    client = h2c(make_client)
    r = client.request(method, peer.url + "/x")
    assert r.status == status
    assert r.content == b""
    assert r.headers["content-length"] == "13"


# -- errors found inside one read, and resets h2 makes itself --------------------------------


@pytest.mark.timeout(30)
def test_a_response_completed_before_a_connection_error_in_the_same_read(rawpeer, make_client):
    """HEADERS(200, END_STREAM) and then, in the same write, a second HEADERS on that
    closed stream (a connection error): the response is delivered whatever the TCP
    segmentation, and the request in flight beside it fails with a ProtocolError that
    names the error."""

    def both(conn: RawConnection, sid: int) -> None:
        conn.wait_for(lambda c: len(c.requests) >= 2)
        done = HeadersFrame(sid, flags=["END_HEADERS", "END_STREAM"])
        done.data = conn.header_block([S200, ("content-length", "0")])
        again = HeadersFrame(sid, flags=["END_HEADERS", "END_STREAM"])
        again.data = b"\x88"  # :status 200 from the static table
        conn.send(done.serialize() + again.serialize())

    peer = rawpeer(routed({"/first": both, "/second": lambda conn, sid: None}))
    client = h2c(make_client)
    first = client.submit("GET", peer.url + "/first")
    peer.wait_connections(1)[0].wait_for(lambda c: len(c.requests) >= 1)
    second = client.submit("GET", peer.url + "/second")
    assert first.result(timeout=5).status == 200
    exc = second.exception(timeout=5)
    assert isinstance(exc, h2pool.ProtocolError)
    assert "StreamClosedError on stream 1" in str(exc)
    assert client.get(peer.url + "/next").content == HELLO


@pytest.mark.timeout(30)
def test_a_stream_h2_resets_for_the_servers_fault_is_a_protocol_error(rawpeer, make_client):
    """A WINDOW_UPDATE taking a stream's send window past 2^31-1: h2 resets the stream
    with FLOW_CONTROL_ERROR. The server broke the rule; the client reset the stream."""

    def overflow(conn: RawConnection, sid: int) -> None:
        conn.send(WindowUpdateFrame(sid, window_increment=2**31 - 1))

    peer = rawpeer(routed({"/overflow": overflow}))
    client = h2c(make_client)
    with pytest.raises(h2pool.ProtocolError, match="FLOW_CONTROL_ERROR") as info:
        client.get(peer.url + "/overflow")
    assert not isinstance(info.value, h2pool.StreamReset)
    assert client.stats()["resets_sent"] == 1
    conn = peer.connections[0]
    assert conn.wait_for(
        lambda c: (
            [(f.stream_id, f.error_code) for f in c.frames_of(RstStreamFrame)]
            == [(1, ErrorCodes.FLOW_CONTROL_ERROR)]
        ),
        5,
    )
    assert client.get(peer.url + "/next").content == HELLO  # the connection carries on
