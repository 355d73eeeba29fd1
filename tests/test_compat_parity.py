"""The http.client drop-in next to the stdlib's own, on the same bytes.

A cleartext server answers every request with one canned HTTP/1 response, exactly as
written; each scenario runs once through ``http.client.HTTPConnection`` and once through
``h2pool.HTTPConnection``, and both must report the same thing (the stdlib is the
oracle; each test also states what that is, so a change in either shows). These are the
parts of a response no well-behaved server varies: the reason phrase as written, the
framing attributes (``length``, ``chunked``, ``will_close``), ``isclosed()`` and the
exception types for a head that is not HTTP/1.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from servers.canned import canned
from servers.util import serve_in_thread

import h2pool
from h2pool import compat

CLASSES = {"stdlib": http.client.HTTPConnection, "h2pool": h2pool.HTTPConnection}


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    compat.close_engines()


def both(
    answer: bytes, scenario: Callable[[Any], object], close_after: bool = False
) -> dict[str, object]:
    """``scenario(conn)``'s result (or the exception's stdlib class) for each class."""
    seen: dict[str, object] = {}
    for label, cls in CLASSES.items():
        with serve_in_thread(canned(answer, close_after)) as server:
            conn = cls("127.0.0.1", server.server_address[1], timeout=5)
            try:
                seen[label] = scenario(conn)
            except http.client.HTTPException as exc:
                # The nearest class of http.client's own hierarchy.
                seen[label] = next(
                    k.__name__ for k in type(exc).__mro__ if k.__module__ == "http.client"
                )
            finally:
                conn.close()
    return seen


def _get(method: str = "GET") -> Callable[[Any], object]:
    def scenario(conn: Any) -> object:
        conn.request(method, "/")
        r = conn.getresponse()
        before = (r.status, r.reason, r.version, r.length, r.chunked, r.will_close)
        closed_before = r.isclosed()
        body = r.read()
        return before, closed_before, body, r.length, r.isclosed()

    return scenario


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            b"HTTP/1.1 200 All Good Here\r\nContent-Length: 5\r\n\r\nhello",
            ((200, "All Good Here", 11, 5, False, False), False, b"hello", 0, True),
            id="own-reason",
        ),
        pytest.param(
            b"HTTP/1.1 499 Client Closed\r\nContent-Length: 0\r\n\r\n",
            ((499, "Client Closed", 11, 0, False, False), False, b"", 0, True),
            id="unregistered-status",
        ),
        pytest.param(
            b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
            ((200, "", 11, 2, False, False), False, b"ok", 0, True),
            id="no-reason",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ((200, "OK", 11, None, True, False), False, b"hello", None, True),
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
            ((200, "OK", 11, 5, False, True), False, b"hello", 0, True),
            id="connection-close",
        ),
        pytest.param(
            b"HTTP/1.1 204 No Content\r\n\r\n",
            ((204, "No Content", 11, 0, False, False), False, b"", 0, True),
            id="204",
        ),
    ],
)
def test_response_surface_matches_the_stdlib(answer: bytes, expected: object) -> None:
    seen = both(answer, _get())
    assert seen == {"stdlib": expected, "h2pool": expected}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("amt", "closed"), [(5, False), (10, True)])
def test_chunked_is_closed_when_a_read_comes_up_short(amt: int, closed: bool) -> None:
    """read(amt) getting fewer than amt bytes has met the last chunk: closed, as the
    stdlib; exactly the rest leaves the end for the next read."""

    def scenario(conn: Any) -> object:
        conn.request("GET", "/")
        r = conn.getresponse()
        return r.read(amt), r.isclosed(), r.read(), r.isclosed()

    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    expected = (b"hello", closed, b"", True)
    assert both(answer, scenario) == {"stdlib": expected, "h2pool": expected}


@pytest.mark.timeout(30)
def test_head_matches_the_stdlib() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    expected = ((200, "OK", 11, 0, False, False), False, b"", 0, True)
    assert both(answer, _get("HEAD")) == {"stdlib": expected, "h2pool": expected}


@pytest.mark.timeout(30)
def test_eof_delimited_body_matches_the_stdlib() -> None:
    answer = b"HTTP/1.1 200 OK\r\n\r\nhello, until the end"
    expected = ((200, "OK", 11, None, False, True), False, b"hello, until the end", None, True)
    seen = both(answer, _get(), close_after=True)
    assert seen == {"stdlib": expected, "h2pool": expected}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(b"garbage\r\n\r\n", "BadStatusLine", id="not-http"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", "BadStatusLine", id="status-not-a-number"),
        pytest.param(b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "UnknownProtocol", id="v2"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
            "LineTooLong",
            id="line-too-long",
        ),
    ],
)
def test_bad_heads_raise_the_stdlib_types(answer: bytes, expected: str) -> None:
    seen = both(answer, _get(), close_after=True)
    assert seen == {"stdlib": expected, "h2pool": expected}


@pytest.mark.timeout(30)
def test_bad_status_line_is_also_a_protocol_error() -> None:
    """Code written for h2pool catches its own types through the drop-in too."""
    with serve_in_thread(canned(b"garbage\r\n\r\n", close_after=True)) as server:
        conn = h2pool.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        conn.request("GET", "/")
        with pytest.raises(http.client.BadStatusLine) as info:
            conn.getresponse()
        conn.close()
    assert isinstance(info.value, h2pool.ProtocolError)
    assert info.value.line == "garbage"


@pytest.mark.timeout(30)
def test_close_closes_an_unread_keep_alive_response_as_the_stdlib() -> None:
    def scenario(conn: Any) -> object:
        conn.request("GET", "/")
        r = conn.getresponse()
        conn.close()
        return r.isclosed(), r.closed, r.read()

    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert both(answer, scenario) == {"stdlib": (True, True, b""), "h2pool": (True, True, b"")}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_request_head_matches_the_stdlib(method: str) -> None:
    """The same fields as the stdlib sends, none of h2pool's own (User-Agent, Accept)."""
    heads: dict[str, list[bytes]] = {}
    for label, cls in CLASSES.items():
        with serve_in_thread(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
            port = server.server_address[1]
            conn = cls("127.0.0.1", port, timeout=5)
            body = b"abc" if method == "POST" else None
            conn.request(method, "/p?q=1", body=body, headers={"X-A": "1"})
            assert conn.getresponse().read() == b""
            conn.close()
            (head,) = server.heads
            lines = head.replace(str(port).encode(), b"PORT").split(b"\r\n")
            heads[label] = [lines[0], *sorted(lines[1:])]
    assert heads["h2pool"] == heads["stdlib"]
    assert not any(line.lower().startswith((b"user-agent", b"accept:")) for line in heads["h2pool"])
