"""``_H2.receive_data``'s DATA fast path must be indistinguishable from h2's own parser.

The fast path parses plain DATA frames itself and updates h2's counters by hand. These
tests feed the same server bytes, cut at the same arbitrary places, to one connection
through the fast path and to another through h2's unmodified ``receive_data``, and
compare everything observable: the body bytes and flow-controlled lengths per stream,
every other event, the exception raised, the flow-control windows, Content-Length
accounting, stream states and the frames the client would send back. No sockets: this
is a state-machine equivalence check; the end-to-end behaviour is covered against nginx
and nghttpd in test_flow.py and against hostile peers in test_hostile.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import h2.events as ev
import h2.exceptions as h2x
import pytest
from h2.config import H2Configuration
from h2.connection import AllowedStreamIDs, H2Connection
from h2.settings import SettingCodes, Settings
from h2.stream import H2Stream, StreamClosedBy, StreamInputs, StreamState
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2pool._connection import BY_REFERENCE_MIN
from h2pool._http2.fastpath import FastData
from h2pool._http2.protocol import new_h2_connection

pytestmark = pytest.mark.timeout(120)

SIDS = (1, 3, 5, 9)  # GETs (half-closed local) and, 9, a POST whose body is still open


def _request(method: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]


def _pair() -> tuple[Any, Any, bytes]:
    """Two identical client connections with three GETs open, and the server's bytes
    (preface, SETTINGS, response HEADERS; stream 3 announces Content-Length 30000)."""
    clients = []
    for _ in range(2):
        c = new_h2_connection(65536)
        c.initiate_connection()
        for sid in SIDS:
            c.send_headers(sid, _request(b"GET"), end_stream=sid != 9)
        clients.append(c)
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    server.receive_data(clients[0].data_to_send())
    clients[1].data_to_send()
    for sid in SIDS:
        headers = [(b":status", b"200")]
        if sid == 3:
            headers.append((b"content-length", b"30000"))
        server.send_headers(sid, headers)
    return clients[0], clients[1], server.data_to_send()


def _frame(kind: str, sid: int, size: int, pad: int | None, end: bool) -> bytes:
    if kind == "ping":
        return PingFrame(0, opaque_data=b"12345678").serialize()
    if kind == "trailers":  # a header block split over CONTINUATION, DATA may not interleave
        sid = sid or 1
        server_hpack = b"\x88"  # :status 200 is not a valid trailer, but h2 decides that
        h = HeadersFrame(sid, data=server_hpack[:0], flags=["END_STREAM"])
        c = ContinuationFrame(sid, data=server_hpack, flags=["END_HEADERS"])
        return h.serialize() + c.serialize()
    if kind == "headers":  # response headers, trailers or a bad block, in every framing
        # :status 200; a literal x: y added to the dynamic table; an HPACK integer that
        # never ends (a connection error); an empty block.
        block = (b"\x88", b"\x40\x01x\x01y", b"\xff\xff\xff", b"")[size % 4]
        flags = 0x4 | (0x1 if end else 0)
        shape = None if pad is None else pad % 3
        body = block
        if shape == 0:  # PADDED: hyperframe's path
            flags |= 0x8
            body = b"\x02" + block + b"\0\0"
        elif shape == 1:  # PRIORITY: hyperframe's path
            flags |= 0x20
            body = b"\x00\x00\x00\x00\x10" + block
        head = len(body).to_bytes(3, "big") + bytes([1, flags & ~(0x4 if shape == 2 else 0)])
        frame = head + sid.to_bytes(4, "big") + body
        if shape == 2:  # the block's end in a CONTINUATION
            frame += bytes([0, 0, 0, 9, 0x4]) + sid.to_bytes(4, "big")
        return frame
    # Built by hand: hyperframe refuses to serialise DATA on stream 0.
    flags = 0x1 if end else 0
    body = bytes([sid]) * size
    if pad is not None:
        flags |= 0x8
        body = bytes([pad]) + body + b"\0" * pad
    return len(body).to_bytes(3, "big") + bytes([0, flags]) + sid.to_bytes(4, "big") + body


def _feed(conn: Any, chunks: list[bytes], reference: bool) -> tuple[list[Any], str | None, str]:
    events: list[Any] = []
    for chunk in chunks:
        try:
            if reference:
                events.extend(H2Connection.receive_data(conn, chunk))
            else:
                events.extend(conn.receive_data(chunk))
        except h2x.ProtocolError as exc:
            return events, type(exc).__name__, str(exc)
    return events, None, ""


# h2's stream state machine has no transition for a 1xx on a closed stream and raises a
# bare ProtocolError; on a stream the client reset, h2pool ignores that HEADERS as h2
# ignores a final one there (and goes on with the frames after it).
_H2_1XX_ON_CLOSED = f"{StreamInputs.RECV_INFORMATIONAL_HEADERS} in state {StreamState.CLOSED}"


def _normalise(events: list[Any]) -> list[tuple]:
    """Merge runs of body events per stream (the fast path merges frames, h2 does not)."""
    out: list[list[Any]] = []
    for e in events:
        if isinstance(e, (ev.DataReceived, FastData)):
            if out and out[-1][0] == "data" and out[-1][1] == e.stream_id:
                out[-1][2] += e.data
                out[-1][3] += e.flow_controlled_length
            else:
                out.append(["data", e.stream_id, bytes(e.data), e.flow_controlled_length])
            if e.stream_ended is not None:
                out.append(["ended", e.stream_id])
        elif isinstance(e, ev.StreamEnded):
            # h2 reports END_STREAM both on DataReceived.stream_ended and as its own event.
            if not (out and out[-1] == ["ended", e.stream_id]):
                out.append(["ended", e.stream_id])
        else:
            headers = getattr(e, "headers", None)
            extra = [tuple(headers)] if headers is not None else []
            out.append([type(e).__name__, getattr(e, "stream_id", None), *extra])
    return [tuple(x) for x in out]


def _state(conn: Any, failed: bool) -> tuple:
    streams = {
        sid: (
            s.state_machine.state,
            s.state_machine.stream_closed_by,
            s._inbound_window_manager.current_window_size,
            s._actual_content_length,
            s._expected_content_length,
            s.state_machine.headers_received,
            s.state_machine.trailers_received,
        )
        for sid, s in conn.streams.items()
    }
    return (
        conn.state_machine.state,
        conn._inbound_flow_control_window_manager.current_window_size,
        streams,
        # After a connection error the unparsed rest is irrelevant (and h2 keeps more).
        b"" if failed else bytes(conn.incoming_buffer._data),
        conn.data_to_send(),
    )


def _check(frames: list[bytes], cuts: list[int], pair: Any = None) -> None:
    fast, ref, head = (pair or _pair)()
    wire = head + b"".join(frames)
    bounds = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    chunks = [wire[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    got, got_exc, _ = _feed(fast, chunks, reference=False)
    want, want_exc, want_msg = _feed(ref, chunks, reference=True)
    if want_exc == "ProtocolError" and want_msg.endswith(_H2_1XX_ON_CLOSED):
        # Up to that frame, the same events; h2 stopped there, h2pool did not.
        assert _normalise(got)[: len(_normalise(want))] == _normalise(want)
        return
    assert got_exc == want_exc
    assert _normalise(got) == _normalise(want)
    assert _state(fast, got_exc is not None) == _state(ref, want_exc is not None)


_frames = st.lists(
    st.tuples(
        st.sampled_from(["data"] * 8 + ["ping", "trailers", "headers", "headers"]),
        st.sampled_from((*SIDS, 7, 0)),
        st.integers(0, 17000),
        st.none() | st.integers(0, 255),
        st.booleans(),
    ).map(lambda t: _frame(*t)),
    max_size=14,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=_frames, cuts=st.lists(st.integers(0, 200_000), max_size=12))
def test_fast_path_matches_h2(frames: list[bytes], cuts: list[int]) -> None:
    _check(frames, cuts)


@pytest.mark.parametrize(
    "between",
    [
        _frame("data", 1, 100, 0, True),  # PADDED with END_STREAM: h2's path ends the stream
        _frame("headers", 1, 0, None, True),  # trailers: h2's path ends the stream
        _frame("trailers", 1, 0, None, True),  # a header block in two frames
    ],
    ids=["padded-end", "trailers", "continued-trailers"],
)
def test_a_stream_ended_through_h2_is_checked_again(between: bytes) -> None:
    """DATA after a frame h2 handled for the same stream, in one read: the state that
    frame changed is checked again, not remembered from the DATA before it."""
    frames = [_frame("data", 1, 100, None, False), between, _frame("data", 1, 100, None, False)]
    _check(frames, [])


def test_fast_path_merges_a_run_of_frames_and_respects_windows() -> None:
    """Frames filling the default 65,535-byte windows exactly come out as one event; one
    byte more is a FLOW_CONTROL_ERROR, as h2 has it."""
    frames = [_frame("data", 1, 16384, None, False) for _ in range(3)]
    frames.append(_frame("data", 1, 16383, None, False))
    fast, _ref, head = _pair()
    events = fast.receive_data(head + b"".join(frames))
    bodies = [
        (e.stream_id, e.data, e.flow_controlled_length) for e in events if isinstance(e, FastData)
    ]
    assert bodies == [(1, b"\x01" * 65535, 65535)]
    with pytest.raises(h2x.FlowControlError):
        fast.receive_data(_frame("data", 1, 1, None, False))
    _check([*frames, _frame("data", 1, 1, None, False)], [])


def test_fast_path_content_length_overrun_is_a_stream_event() -> None:
    frames = [_frame("data", 3, 16000, None, False), _frame("data", 3, 16000, None, False)]
    _check(frames, [])
    fast, _ref, head = _pair()
    events = fast.receive_data(head + b"".join(frames))
    assert [type(e).__name__ for e in events[-2:]] == ["FastData", "BodyLengthMismatch"]


# -- sending --------------------------------------------------------------------------


def _uploading_pair(big_frames: bool = False) -> tuple[Any, Any]:
    """Two identical client connections with two POSTs open (HEADERS sent, no body yet)
    and the server's SETTINGS received. ``big_frames``: the server allows frames and
    windows of megabytes, as nginx does, so payloads from ``BY_REFERENCE_MIN`` on are
    sent by reference."""
    out = []
    for _ in range(2):
        c = new_h2_connection(65536)
        c.initiate_connection()
        for sid in (1, 3):
            c.send_headers(sid, _request(b"POST"))
        out.append(c)
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    if big_frames:
        server.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_FRAME_SIZE: 2**24 - 1,
                SettingCodes.INITIAL_WINDOW_SIZE: 600_000,
            },
        )
    server.initiate_connection()
    if big_frames:
        server.increment_flow_control_window(1_000_000)
    server.receive_data(out[0].data_to_send())
    out[1].data_to_send()
    settings_bytes = server.data_to_send()
    for c in out:
        c.receive_data(settings_bytes)
        c.data_to_send()  # the SETTINGS ACK
    return out[0], out[1]


def _send_outcome(
    conn: Any, reference: bool, ops: list[tuple[int, int, bool]], take: bool = False
) -> list[Any]:
    """``take``: read the output as ``H2Conn.flush`` does (sealed chunks, then the
    buffer), after every operation; else through ``data_to_send()`` at the end."""
    result: list[Any] = []
    send = (lambda *a: H2Connection.send_data(conn, *a)) if reference else conn.send_data
    wire = bytearray()
    for sid, size, end in ops:
        try:
            send(sid, memoryview(bytes([sid]) * size), end)
            result.append(None)
        except (h2x.ProtocolError, h2x.StreamClosedError, KeyError) as exc:
            result.append(type(exc).__name__)
        if take:
            assert conn.pending_output() == sum(map(len, conn.sealed)) + len(conn._data_to_send)
            for chunk in conn.take_sealed():
                wire += chunk
            wire += conn.take_output()
    streams = {
        s: (
            st.state_machine.state,
            st.state_machine.stream_closed_by,
            st.outbound_flow_control_window,
        )
        for s, st in conn.streams.items()
    }
    wire += conn.data_to_send()
    result.append((conn.outbound_flow_control_window, streams, bytes(wire)))
    return result


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from([1, 3, 5]), st.integers(0, 20000), st.booleans()), max_size=12
    )
)
def test_send_fast_path_matches_h2(ops: list[tuple[int, int, bool]]) -> None:
    """Same frames on the wire, same windows, same errors (window exceeded, frame too
    large, stream already ended, unknown stream) as h2's own send_data."""
    fast, ref = _uploading_pair()
    assert _send_outcome(fast, False, ops) == _send_outcome(ref, True, ops)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from([1, 3, 5]),
            st.one_of(st.integers(0, 20000), st.integers(BY_REFERENCE_MIN - 2, 700_000)),
            st.booleans(),
        ),
        max_size=10,
    ),
    take=st.booleans(),
)
def test_send_fast_path_by_reference_matches_h2(
    ops: list[tuple[int, int, bool]], take: bool
) -> None:
    """Against a server allowing frames of megabytes: the payloads sent by reference
    come out where h2 would have put them, whichever way the output is read."""
    fast, ref = _uploading_pair(big_frames=True)
    assert _send_outcome(fast, False, ops, take) == _send_outcome(ref, True, ops)


# -- remembered header validation -----------------------------------------------------

_RESPONSES = [
    [(b":status", b"200"), (b"content-type", b"text/plain")],
    [(b":status", b"200"), (b"Content-Type", b"text/plain")],  # upper case: malformed
    [(b":status", b"200"), (b"connection", b"close")],  # connection-specific: malformed
    [(b"content-type", b"text/plain")],  # no :status
    [(b":status", b"200"), (b":status", b"204")],  # duplicate pseudo-header
    [(b":status", b"204"), (b"x-a", b" padded ")],  # surrounding whitespace
    [(b":status", b"200"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
]


def _headers_outcome(conn: Any, blocks: list[bytes], reference: bool) -> list[Any]:
    from hpack import Encoder

    receive = (lambda d: H2Connection.receive_data(conn, d)) if reference else conn.receive_data

    out: list[Any] = []
    enc = Encoder()
    for i, headers in enumerate(blocks):
        sid = 1 + 2 * i
        conn.send_headers(
            sid,
            _request(b"GET"),
            end_stream=True,
        )
        frame = HeadersFrame(sid, data=enc.encode(headers), flags=["END_HEADERS", "END_STREAM"])
        try:
            events = receive(frame.serialize())
        except h2x.ProtocolError as exc:
            out.append(type(exc).__name__)
            break
        out.append(
            [
                (type(e).__name__, [tuple(h) for h in getattr(e, "headers", None) or []])
                for e in events
            ]
        )
        out.append(conn.streams[sid].state_machine.state)
    out.append(conn.data_to_send()[-200:])
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(_RESPONSES))), min_size=1, max_size=10))
def test_remembered_validation_matches_h2(picks: list[int]) -> None:
    """A malformed response is refused every time, also after a valid one that differs
    only slightly, and valid ones come out the same as h2's own validation."""
    import types

    from h2.connection import H2Connection

    mine, ref = new_h2_connection(65536), new_h2_connection(65536)
    ref._begin_new_stream = types.MethodType(H2Connection._begin_new_stream, ref)
    ref._open_request_stream = lambda sid: ref._begin_new_stream(sid, AllowedStreamIDs.ODD)
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    hello = server.data_to_send()
    for c in (mine, ref):
        c.initiate_connection()
        c.receive_data(hello)
        c.data_to_send()
    blocks = [_RESPONSES[i] for i in picks]
    assert _headers_outcome(mine, blocks, False) == _headers_outcome(ref, blocks, True)
    assert type(ref.streams[1]).__name__ == "H2Stream"  # the reference really is h2's
    assert type(mine.streams[1]).__name__ == "_ValidatingStream"


# -- receiving a response's HEADERS ---------------------------------------------------

# Stateless blocks (a fresh encoder each, literals never indexed), so any order of them
# decodes the same in both connections. Final responses, informational ones, and every
# way h2 refuses one: bad or conflicting Content-Length, an upper-case or
# connection-specific name, a request pseudo-header, no :status at all.
_RESPONSE_LISTS = [
    [(b":status", b"200")],
    [(b":status", b"200"), (b"content-length", b"0")],
    [(b":status", b"200"), (b"content-length", b"13"), (b"server", b"nginx")],
    [(b":status", b"200"), (b"content-length", b"x1")],
    [(b":status", b"200"), (b"content-length", b"5"), (b"content-length", b"6")],
    [(b":status", b"103"), (b"link", b"</a>")],
    [(b":status", b"100")],
    [(b":status", b"204")],
    [(b":status", b"200"), (b"Bad", b"x")],
    [(b"server", b"x")],
    [(b":status", b"200"), (b":path", b"/")],
    [(b":status", b"200"), (b"connection", b"close")],
    [(b"x-trailer", b"1")],
]


def _block(index: int) -> bytes:
    from hpack import Encoder, NeverIndexedHeaderTuple

    headers = [NeverIndexedHeaderTuple(n, v) for n, v in _RESPONSE_LISTS[index]]
    return Encoder().encode(headers, huffman=False)


def _response_frame(kind: int, sid: int, index: int, end: bool, shape: int) -> bytes:
    if kind == 0:  # DATA of index bytes (0..12): the body after the headers
        flags = 0x1 if end else 0
        return index.to_bytes(3, "big") + bytes([0, flags]) + sid.to_bytes(4, "big") + b"d" * index
    block = _block(index)
    flags = 0x4 | (0x1 if end else 0)
    body = block
    if shape == 1:  # PADDED: h2's own path
        flags |= 0x8
        body = b"\x01" + block + b"\0"
    elif shape == 2:  # PRIORITY: h2's own path
        flags |= 0x20
        body = b"\x00\x00\x00\x00\x10" + block
    return len(body).to_bytes(3, "big") + bytes([1, flags]) + sid.to_bytes(4, "big") + body


def _awaiting_pair() -> tuple[Any, Any, bytes]:
    """Two identical client connections awaiting responses on a GET (1), a HEAD (3), a
    second GET (5) and a POST whose body is still open (9); the second holds h2's own
    streams and is fed through h2's parser. The server's bytes: its preface."""
    import types

    clients = []
    for reference in (False, True):
        c = new_h2_connection(65536)
        if reference:
            c._begin_new_stream = types.MethodType(H2Connection._begin_new_stream, c)
            c._open_request_stream = lambda sid, c=c: c._begin_new_stream(sid, AllowedStreamIDs.ODD)
        c.initiate_connection()
        for sid, method in ((1, b"GET"), (3, b"HEAD"), (5, b"GET"), (9, b"POST")):
            c.send_headers(sid, _request(method), end_stream=sid != 9)
        clients.append(c)
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    server.receive_data(clients[0].data_to_send())
    clients[1].data_to_send()
    assert type(clients[1].streams[1]).__name__ == "H2Stream"  # really h2's own
    return clients[0], clients[1], server.data_to_send()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 1]),
            st.sampled_from((1, 3, 5, 9, 7)),
            st.integers(0, len(_RESPONSE_LISTS) - 1),
            st.booleans(),
            st.sampled_from([0, 0, 0, 1, 2]),
        ).map(lambda t: _response_frame(*t)),
        max_size=8,
    ),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_response_headers_fast_path_matches_h2(frames: list[bytes], cuts: list[int]) -> None:
    """A response's first HEADERS through the fast path: the same events (headers as
    validated, informational responses, END_STREAM), the same stream errors and
    connection errors, and the same stream states, Content-Length and output as h2."""
    _check(frames, cuts, _awaiting_pair)


# -- sending HEADERS ------------------------------------------------------------------

_REQ_HEADERS = st.lists(
    st.sampled_from(
        [
            (b"accept", b"*/*"),
            (b"x-big", b"v" * 19000),  # Huffman: > 16 KiB, so CONTINUATION follows
            (b"user-agent", b"h2pool"),
            ("x-str", "text"),  # str: h2's path
            (b"cookie", b"a=1"),
        ]
    ),
    max_size=4,
)


@settings(max_examples=100, deadline=None)
@given(
    requests=st.lists(
        st.tuples(
            st.integers(-2, 3), st.sampled_from([b"GET", b"HEAD"]), _REQ_HEADERS, st.booleans()
        ),
        min_size=1,
        max_size=8,
    ),
    peer_streams=st.sampled_from([None, 0, 1, 2, 3]),
    peer_window=st.sampled_from([None, 1000, 70000]),
    our_window=st.sampled_from([None, 5000, 1 << 20]),
)
def test_send_headers_fast_path_matches_h2(
    requests: list, peer_streams: int | None, peer_window: int | None, our_window: int | None
) -> None:
    """Same bytes (HEADERS and CONTINUATION), same stream states and windows, same HPACK
    table and the same errors (stream id too low, an existing stream, more streams than
    the server's SETTINGS_MAX_CONCURRENT_STREAMS) as h2's send_headers, whatever the
    settings of either side."""
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    peer = {SettingCodes.MAX_CONCURRENT_STREAMS: peer_streams}
    peer[SettingCodes.INITIAL_WINDOW_SIZE] = peer_window
    server.local_settings = Settings(
        client=False, initial_values={k: v for k, v in peer.items() if v is not None}
    )
    server.initiate_connection()
    server_bytes = server.data_to_send()
    conns = []
    for _ in range(2):
        c = new_h2_connection(65536)
        if our_window is not None:
            c.local_settings = Settings(
                client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: our_window}
            )
        c.initiate_connection()
        c.receive_data(server_bytes)
        c.data_to_send()
        conns.append(c)
    results: list[list[Any]] = [[], []]
    for which, conn in enumerate(conns):
        sid = 1
        for step, method, extra, end in requests:
            sid = max(1, sid + 2 * step)
            headers = [
                (b":method", method),
                (b":scheme", b"https"),
                (b":authority", b"example.com"),
                (b":path", b"/"),
                *extra,
            ]
            try:
                if which == 0:
                    conn.send_headers(sid, headers, end_stream=end)
                else:
                    H2Connection.send_headers(conn, sid, headers, end_stream=end)
                results[which].append(conn.data_to_send())
            except h2x.ProtocolError as exc:
                results[which].append(type(exc).__name__)
        results[which].append(
            {
                s: (
                    x.inbound_flow_control_window,
                    x.state_machine.state,
                    x._authority,
                    x.request_method,
                    x.state_machine.client,
                    x.state_machine.headers_sent,
                    x.outbound_flow_control_window,
                    x._inbound_window_manager.current_window_size,
                    x.max_outbound_frame_size,
                )
                for s, x in conn.streams.items()
            }
        )
        results[which].append((conn.highest_outbound_stream_id, conn.state_machine.state))
        results[which].append(list(conn.encoder.header_table.dynamic_entries))
    assert results[0] == results[1]


def test_grant_on_a_stream_h2_has_forgotten_is_refused_not_raised() -> None:
    # h2 purges closed streams when 64 or more have accumulated (on the next new
    # stream); its increment_flow_control_window then raises KeyError for them, which
    # escaped every H2Error handler and failed the whole connection. grant_stream says no.
    conn = new_h2_connection(65536)
    conn.initiate_connection()
    conn.receive_data(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # the server's SETTINGS
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/")]
    for _ in range(64):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, list(request), end_stream=True)
        conn.reset_stream(sid)
    live = conn.get_next_available_stream_id()
    conn.send_headers(live, list(request), end_stream=True)
    assert 1 not in conn.streams  # forgotten
    assert conn.grant_stream(1, 1000) is False
    conn.data_to_send()
    assert conn.grant_stream(live, 1000) is True
    assert conn.data_to_send()[3] == 0x8  # a WINDOW_UPDATE frame


def test_grown_stream_window_returns_credit_every_mib_not_every_quarter() -> None:
    # A 16 MiB window returning credit in quarter steps left up to 4 MiB per round trip
    # unused on a long link; credit now goes back at least every 1 MiB consumed.
    conn = new_h2_connection(65536)
    conn.initiate_connection()
    conn.receive_data(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # the server's SETTINGS
    conn.send_headers(1, _request(b"GET"), end_stream=True)
    conn.data_to_send()
    manager = conn.streams[1]._inbound_window_manager
    manager.max_window_size = 16 << 20
    manager.current_window_size = (16 << 20) - (1 << 20)  # 1 MiB received and unacked
    conn.ack_stream(1 << 20, 1)
    out = conn.data_to_send()
    assert out[3] == 0x8 and int.from_bytes(out[5:9], "big") == 1  # WINDOW_UPDATE, stream 1
    assert int.from_bytes(out[9:13], "big") == 1 << 20
    conn.ack_stream(1 << 19, 1)  # half a MiB more: not yet
    assert conn.data_to_send() == b""


# -- forgetting closed streams --------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    streams=st.lists(
        st.tuples(st.sampled_from(list(StreamState)), st.sampled_from([None, *StreamClosedBy])),
        max_size=60,
    ),
    remembered=st.integers(0, 30),
    limit=st.integers(1, 40),
)
def test_forgetting_closed_streams_matches_h2(
    streams: list[tuple[StreamState, StreamClosedBy | None]], remembered: int, limit: int
) -> None:
    """``_forget_closed_streams`` against h2's ``_open_streams(1)``: the same count of
    open client streams, the same streams kept, and the same closed streams remembered
    in the same order under the same size limit (including ones remembered before)."""
    conns = []
    for _ in range(2):
        c = new_h2_connection(65536)
        c._closed_streams._size_limit = limit
        for i in range(remembered):
            c._closed_streams[1001 + 2 * i] = StreamClosedBy.RECV_END_STREAM
        for i, (state, by) in enumerate(streams):
            sid = 2 * i + (2 if i % 4 == 3 else 1)  # some even (server-initiated) ids
            stream = H2Stream(
                sid, config=c.config, inbound_window_size=65535, outbound_window_size=65535
            )
            stream.state_machine.state = state
            stream.state_machine.stream_closed_by = by
            c.streams[sid] = stream
        conns.append(c)
    fast, ref = conns
    assert fast._forget_closed_streams() == H2Connection._open_streams(ref, 1)
    assert list(fast.streams) == list(ref.streams)
    assert list(fast._closed_streams.items()) == list(ref._closed_streams.items())
