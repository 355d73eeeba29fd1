"""Bad input from users and security defaults (RELIABILITY.md §4, rows F1-F5 and G3,
G4, G6, G10).

Rejections must be ``InvalidURL``/``InvalidHeader`` (both ``ValueError``), raised in the
caller's thread by ``request()`` and ``submit()`` alike, with nothing on the wire: a
sniffing listener records every byte it is sent.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hyperframe.frame import HeadersFrame, SettingsFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers.rawpeer import RawConnection, serve_ok

import h2pool

HELLO = b"Hello, world!"
FAST = h2pool.Timeout(connect=3, read=3, write=3, pool=3)
HYP = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


class Sniffer:
    """A TCP listener on 127.0.0.1 that records every byte each connection sends."""

    def __init__(self, port: int = 0, eof_after_first: bool = False) -> None:
        self.eof_after_first = eof_after_first
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytearray] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name="sniffer")
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            buf = bytearray()
            with self._lock:
                self.received.append(buf)
                self._conns.append(c)
            self._spawn(self._read, c, buf)

    def _read(self, c: socket.socket, buf: bytearray) -> None:
        with contextlib.suppress(OSError):
            while data := c.recv(65536):
                with self._lock:
                    buf += data
                if self.eof_after_first:
                    break
        with contextlib.suppress(OSError):
            c.close()  # the client sees EOF

    def total(self) -> int:
        with self._lock:
            return sum(len(b) for b in self.received)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def sniffer() -> Iterator[Sniffer]:
    s = Sniffer()
    yield s
    s.close()


def assert_rejected(client: Any, exc_type: Any, method: Any, url: Any, **kw: Any) -> None:
    """Both entry points refuse the input synchronously, in this thread."""
    with pytest.raises(exc_type) as info:
        client.request(method, url, **kw)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, h2pool.H2PoolError)
    with pytest.raises(exc_type):
        client.submit(method, url, **kw)  # raised here, not through a future


# -- strategies --------------------------------------------------------------------------------

_TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BAD_NAME_CHARS = st.sampled_from(list('\x00\r\n\t "(),/:;<=>?@[\\]{}\x7f\x01é\u2028'))
_BAD_VALUE_CHARS = st.sampled_from(["\r", "\n", "\x00", "\x01", "\x1f", "\x7f", "\r\n"])


def _with_bad(base: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> Any:
    return st.tuples(base, bad, base).map(lambda t: t[0] + t[1] + t[2])


_token = st.text(alphabet=_TOKEN, max_size=8)
_printable_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12
)
bad_names = st.one_of(
    _with_bad(_token, _BAD_NAME_CHARS),
    st.just(""),
    st.sampled_from([":path", ":method", ":authority", ":scheme", ":status", ":x"]),
)
bad_values = _with_bad(_printable_value, _BAD_VALUE_CHARS)
bad_methods = st.one_of(
    st.just(""),
    _with_bad(st.text(alphabet="GETPOSTgetpost", max_size=5), _BAD_NAME_CHARS),
    st.sampled_from(["GET\r\nX: y", "G ET", "GET\x00", "GÉT", "GET /x HTTP/1.1"]),
)
_URL_BAD = st.sampled_from([*"\x00\r\n\t \x7f\x0b\x1f\\", "\r\nX-Injected: 1"])
bad_urls = st.one_of(
    _with_bad(st.just("http://127.0.0.1:1/a"), _URL_BAD),
    _with_bad(st.just("http://"), _URL_BAD).map(lambda u: u + "host/"),
    st.integers(65536, 10**12).map(lambda p: f"http://127.0.0.1:{p}/"),
    st.integers(-(10**6), -1).map(lambda p: f"http://127.0.0.1:{p}/"),
    st.sampled_from(
        [
            "http://user:pw@127.0.0.1/",
            "http:///x",
            "http://:80/",
            "ftp://127.0.0.1/",
            "127.0.0.1/x",
            "http://[::1/",
            "http://[zz::1]/",
            "http://127.0.0.1:0/",
            "http://exa mple.org/",
            "http://a\\b/",
        ]
    ),
)


# -- F1 / F3 / F4: nothing malformed reaches the wire -------------------------------------------


@pytest.mark.timeout(60)
def test_f1_f3_f4_rejections_send_nothing(sniffer, make_client):
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    url = f"http://127.0.0.1:{sniffer.port}/x"

    @HYP
    @given(name=bad_names, value=_printable_value)
    def names(name: str, value: str) -> None:
        assert_rejected(client, h2pool.InvalidHeader, "GET", url, headers={name: value})
        assert_rejected(client, h2pool.InvalidHeader, "GET", url, headers=[(name.encode(), b"v")])

    @HYP
    @given(value=bad_values, as_bytes=st.booleans())
    def values(value: str, as_bytes: bool) -> None:
        v: Any = value.encode() if as_bytes else value
        assert_rejected(client, h2pool.InvalidHeader, "GET", url, headers=[("x-test", v)])

    @HYP
    @given(method=bad_methods)
    def methods(method: str) -> None:
        assert_rejected(client, h2pool.InvalidHeader, method, url)

    @HYP
    @given(bad=bad_urls)
    def urls(bad: str) -> None:
        assert_rejected(client, h2pool.InvalidURL, "GET", bad)

    for run in (names, values, methods, urls):
        run()
    assert sniffer.received == []  # not even a connection
    assert client.stats()["connections"] == 0


@pytest.mark.timeout(60)
def test_f1_rejections_on_a_live_connection(rawpeer, make_client):
    peer = rawpeer()
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    url = peer.url + "/x"
    assert client.get(url).content == HELLO
    conn = peer.wait_connections(1)[0]
    # The client's ACK of our SETTINGS is the last thing it owes us.
    assert conn.wait_for(lambda c: any("ACK" in f.flags for f in c.frames_of(SettingsFrame)))
    received = conn.received

    @HYP
    @given(name=bad_names, value=bad_values, method=bad_methods)
    def run(name: str, value: str, method: str) -> None:
        assert_rejected(client, h2pool.InvalidHeader, "GET", url, headers={name: "v"})
        assert_rejected(client, h2pool.InvalidHeader, "GET", url, headers={"x-v": value})
        assert_rejected(client, h2pool.InvalidHeader, method, url)

    run()
    assert conn.received == received  # not one byte since the good request
    assert client.get(url).content == HELLO
    assert len(conn.frames_of(HeadersFrame)) == 2
    for headers in conn.requests.values():
        for n, v in headers:
            assert not any(c in n + v for c in "\r\n\x00")


@pytest.mark.timeout(60)
def test_f3_accepted_paths_are_clean_on_the_wire(rawpeer, make_client):
    peer = rawpeer()
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    base = f"http://127.0.0.1:{peer.port}"

    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(path=st.text(max_size=20))
    def run(path: str) -> None:
        try:
            fut = client.submit("GET", f"{base}/{path}")
        except h2pool.InvalidURL:
            return
        assert fut.result(timeout=5).content == HELLO

    run()
    conn = peer.wait_connections(1)[0]
    assert conn.requests
    for headers in conn.requests.values():
        h = dict(headers)
        assert h[":authority"] == f"127.0.0.1:{peer.port}"
        assert h[":path"].startswith("/")
        assert all(0x21 <= ord(c) <= 0x7E for c in h[":path"]), h[":path"]


# -- F2: connection-specific headers -----------------------------------------------------------


@pytest.mark.timeout(30)
def test_f2_connection_specific_headers_are_dropped(rawpeer, make_client):
    peer = rawpeer()
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    cases = [
        ("Connection", "close"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("TE", "gzip"),
    ]
    for name, value in cases:
        try:
            r = client.get(peer.url + "/x", headers=[(name, value), ("x-keep", "1")])
        except h2pool.InvalidHeader:
            continue  # refusing is also allowed (Go refuses all but close/keep-alive)
        assert r.content == HELLO
    r = client.get(peer.url + "/te", headers={"TE": "trailers"})
    assert r.content == HELLO
    conn = peer.wait_connections(1)[0]
    banned = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
    for sid, headers in conn.requests.items():
        names = [n for n, _ in headers]
        assert not banned & set(names), (sid, headers)
        te = [v for n, v in headers if n == "te"]
        assert te in ([], ["trailers"])
    last = conn.requests[max(conn.requests)]
    assert ("te", "trailers") in last


# -- F5: oversized request headers -------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shape", ["1MiB-value", "100k-headers"])
def test_f5_huge_request_headers_rejected_before_sending(sniffer, make_client, shape):
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    url = f"http://127.0.0.1:{sniffer.port}/x"
    if shape == "1MiB-value":
        headers: Any = {"x-big": "a" * (1 << 20)}
    else:
        headers = [(f"x-h{i}", "v") for i in range(100_000)]
    assert_rejected(client, h2pool.InvalidHeader, "GET", url, headers=headers)
    assert sniffer.received == []


@pytest.mark.timeout(30)
def test_f5_over_the_peers_max_header_list_size(rawpeer, make_client):
    def script(conn: RawConnection) -> None:
        conn.greet({0x6: 1024})  # SETTINGS_MAX_HEADER_LIST_SIZE
        serve_ok_after_greet(conn)

    peer = rawpeer(script)
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    assert client.get(peer.url + "/x").content == HELLO  # the peer's SETTINGS are in
    conn = peer.wait_connections(1)[0]
    with pytest.raises(h2pool.InvalidHeader) as info:
        client.get(peer.url + "/big", headers={"x-big": "a" * 2000})
    assert "1024" in str(info.value)
    assert client.get(peer.url + "/y").content == HELLO
    paths = [dict(h)[":path"] for h in conn.requests.values()]
    assert paths == ["/x", "/y"]  # the oversized request never reached the wire


def serve_ok_after_greet(conn: RawConnection) -> None:
    while True:
        sid, _ = conn.expect_request()
        conn.respond(sid, 200, HELLO)


# -- G: TLS failures and logs ------------------------------------------------------------------


def _tls_peer_context(ca: Any, **kw: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1", **kw).configure_cert(ctx)
    ctx.set_alpn_protocols(["h2"])
    return ctx


@pytest.mark.timeout(30)
def test_g3_expired_certificate(rawpeer, ca, make_client):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    ctx = _tls_peer_context(ca, not_before=past - datetime.timedelta(days=30), not_after=past)
    peer = rawpeer(tls=ctx)
    client = make_client(timeout=FAST)
    with pytest.raises(h2pool.TLSError):
        client.get(peer.url + "/x")
    assert peer.connections == []  # no handshake completed, no request seen


@pytest.mark.timeout(30)
def test_g4_tls11_only_server(rawpeer, ca, make_client):
    ctx = _tls_peer_context(ca)
    with contextlib.suppress(ValueError, ssl.SSLError):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    peer = rawpeer(tls=ctx)
    client = make_client(timeout=FAST)
    with pytest.raises(h2pool.TLSError):
        client.get(peer.url + "/x")
    assert peer.connections == []


@pytest.mark.timeout(30)
def test_g6_no_cleartext_fallback(make_client):
    """A failing https origin is never retried in cleartext: on its port (the sniffer
    answers a ClientHello with EOF) or on port 80."""
    sniffer = Sniffer(eof_after_first=True)
    port80: Sniffer | None = None
    with contextlib.suppress(OSError):
        port80 = Sniffer(80)
    try:
        for http1 in (True, False):
            client = make_client(timeout=FAST, http1=http1)
            with pytest.raises(h2pool.ConnectError):
                client.get(f"https://127.0.0.1:{sniffer.port}/x")
            with pytest.raises(h2pool.ConnectError):
                client.get(f"https://localhost:{sniffer.port}/x")
        assert sniffer.received
        for data in sniffer.received:
            assert data[:1] == b"\x16", bytes(data[:16])  # a TLS handshake record
            assert b"PRI * HTTP/2.0" not in data
            assert b"HTTP/1.1" not in data
        if port80 is not None:
            assert port80.received == []
    finally:
        sniffer.close()
        if port80 is not None:
            port80.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "logger",
    [
        "h2pool",
        "",  # the root logger: every library's DEBUG, as logging.basicConfig(DEBUG) does
    ],
)
def test_g10_secrets_not_in_logs(rawpeer, make_client, caplog, logger):
    def script(conn: RawConnection) -> None:
        conn.greet()
        sid, _ = conn.expect_request()
        conn.respond(sid, 200, HELLO)
        sid, _ = conn.expect_request()
        conn.send_headers(sid, [("X-Bad", "1")], end_stream=True)  # a protocol error
        serve_ok(conn)

    secrets = {
        "authorization": "Bearer s3cr3t-t0k3n-AUTHZ-0123456789",
        "cookie": "session=s3cr3t-c00k13-SESSION-0123456789abcdef",
        "proxy-authorization": "Basic cHJveHk6czNjcjN0LVBST1hZ",
    }
    body = b"s3cr3t-b0dy-PAYLOAD"
    caplog.set_level(logging.DEBUG, logger=logger or None)
    peer = rawpeer(script)
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    assert client.post(peer.url + "/a", body=body, headers=secrets).content == HELLO
    with pytest.raises(h2pool.ProtocolError):
        client.post(peer.url + "/b", body=body, headers=secrets)
    assert client.post(peer.url + "/c", body=body, headers=secrets).content == HELLO
    client.close()
    # The scripted peer runs in this process and logs through hpack too: only the
    # records of the client's threads count.
    records = [r for r in caplog.records if not r.threadName.startswith("rawpeer")]
    text = "\n".join(r.getMessage() + repr(r.args) + (r.exc_text or "") for r in records)
    assert records  # the engine did log (the protocol error at least)
    for value in [*secrets.values(), body.decode()]:
        assert value not in text
        assert value.split()[-1] not in text
