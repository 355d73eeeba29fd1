"""Self-tests of the server fixtures, driven by a bare ``h2`` client (no h2pool).

They keep the fixtures honest independently of the engine: if one of these
fails, the h2pool tests that use the same fixture say nothing about h2pool.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import h2.config
import h2.connection
import h2.errors
import h2.events
import hyperframe.frame
import pytest

from .h2peer import HELLO, deterministic_bytes


class RawClient:
    """A blocking, single-threaded h2 client for fixture checks."""

    def __init__(self, sock: socket.socket, authority: str) -> None:
        self.sock = sock
        self.authority = authority
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.headers: dict[int, dict[str, str]] = {}
        self.bodies: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.eof = False

    def send(self, path: str, method: str = "GET", body: bytes | None = None) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            sid,
            [
                (":method", method),
                (":scheme", "https" if isinstance(self.sock, ssl.SSLSocket) else "http"),
                (":authority", self.authority),
                (":path", path),
            ],
            end_stream=body is None,
        )
        if body is not None:
            self.h2.send_data(sid, body, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        self.bodies[sid] = bytearray()
        return sid

    def pump(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            self.eof = True
            return
        for ev in self.h2.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                self.headers[ev.stream_id] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                self.bodies[ev.stream_id] += ev.data
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.resets[ev.stream_id] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        self.sock.sendall(self.h2.data_to_send())

    def wait(self, sid: int) -> tuple[dict[str, str], bytes]:
        while sid not in self.ended and sid not in self.resets and not self.eof:
            self.pump()
        return self.headers.get(sid, {}), bytes(self.bodies[sid])

    def get(self, path: str) -> tuple[dict[str, str], bytes]:
        return self.wait(self.send(path))


@contextmanager
def raw_client(port: int, tls_ca: str | None = None) -> Iterator[RawClient]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if tls_ca is not None:
            ctx = ssl.create_default_context(cafile=tls_ca)
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2"
        yield RawClient(sock, f"localhost:{port}")
    finally:
        sock.close()


def test_nginx_serves_content_over_tls_and_h2c(nginx, content, ca_path):
    with raw_client(nginx.https_port, ca_path) as c:
        headers, body = c.get("/1m")
        assert headers[":status"] == "200"
        assert hashlib.sha256(body).hexdigest() == content.sha256["/1m"]
        assert c.get("/404")[0][":status"] == "404"
        headers, _ = c.get("/echo-headers")
        assert headers["x-echo-host"] == "localhost"
    with raw_client(nginx.h2c_port) as c:
        assert c.get("/13b")[1] == b"Hello, world!" == content.data["/13b"]


def test_nginx_http1_listener_does_not_offer_h2(nginx, ca_path):
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", nginx.http1_tls_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        assert s.selected_alpn_protocol() in (None, "http/1.1")


def test_nginx_goaway_after_100_requests(nginx, ca_path):
    # nginx sends GOAWAY(last_stream_id = the 100th stream) when that stream's
    # HEADERS arrive, before answering it.
    with raw_client(nginx.goaway100_port, ca_path) as c:
        for _ in range(99):
            assert c.get("/13b")[1] == HELLO
        last = c.send("/13b")
        # h2 drops its connection state on GOAWAY and then raises on the
        # HEADERS of the stream nginx still answers, so read the raw frames.
        buf = b""
        frames = []
        while not any(isinstance(f, hyperframe.frame.GoAwayFrame) for f in frames):
            data = c.sock.recv(65536)
            assert data, "connection closed without GOAWAY"
            buf += data
            while len(buf) >= 9:
                frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buf[:9]))
                if len(buf) < 9 + length:
                    break
                frame.parse_body(memoryview(buf[9 : 9 + length]))
                frames.append(frame)
                buf = buf[9 + length :]
        goaway = next(f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame))
        assert goaway.last_stream_id == last == 199
        assert goaway.error_code == 0


@pytest.mark.parametrize("which", ["https", "h2c"])
def test_nghttpd_serves_content(nghttpd, content, ca_path, which):
    if which == "https":
        ctx = raw_client(nghttpd.https_port, ca_path)
    else:
        ctx = raw_client(nghttpd.h2c_port)
    with ctx as c:
        assert hashlib.sha256(c.get("/1m")[1]).hexdigest() == content.sha256["/1m"]


def test_nghttpd_echo_upload(nghttpd_echo, ca_path):
    with raw_client(nghttpd_echo.https_port, ca_path) as c:
        assert c.wait(c.send("/", "POST", b"some body bytes"))[1] == b"some body bytes"


def test_content_sizes(content):
    assert content.size == {
        "/13b": 13,
        "/1m": 1 << 20,
        "/100m": 100 << 20,
        "/index.html": len(content.data["/index.html"]),
        "/data.json": len(content.data["/data.json"]),
    }
    assert (content.root / "100m").stat().st_size == 100 << 20


def test_peer_routes_and_counts(h2peer):
    peer = h2peer(
        routes={
            "/stall": "stall_headers",
            "/fast": "respond_13b",
            "/rst": "rst:INTERNAL_ERROR",
            "/big": "bytes:200000",
            "/echo": "echo",
            "/half": "stall_body",
        }
    )
    with raw_client(peer.port) as c:
        stalled = c.send("/stall")
        assert c.get("/fast") == ({":status": "200", "content-length": "13"}, HELLO)
        assert c.get("/big")[1] == deterministic_bytes(200000)  # beyond the 64 KiB window
        assert c.wait(c.send("/echo", "POST", b"xyz"))[1] == b"xyz"
        rst = c.send("/rst")
        c.wait(rst)
        assert c.resets[rst] == h2.errors.ErrorCodes.INTERNAL_ERROR
        half = c.send("/half")
        while half not in c.headers:
            c.pump()
        assert c.headers[half][":status"] == "200" and half not in c.ended
        c.h2.reset_stream(stalled, h2.errors.ErrorCodes.CANCEL)
        c.sock.sendall(c.h2.data_to_send())
        assert peer.wait_for(lambda p: len(p.resets) == 1)
        assert peer.resets[0].stream_id == stalled
        assert peer.resets[0].error_code == h2.errors.ErrorCodes.CANCEL
    assert [r.path for r in peer.requests] == ["/stall", "/fast", "/big", "/echo", "/rst", "/half"]
    assert peer.requests_for("/echo")[0].body == b"xyz"
    assert not peer.errors


def test_peer_settings_and_goaway_after(h2peer):
    peer = h2peer(
        default="goaway_after:2", settings={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1}
    )
    with raw_client(peer.port) as c:
        assert c.get("/a")[1] == HELLO
        assert c.h2.remote_settings.max_concurrent_streams == 1
        assert c.get("/b")[1] == HELLO
        while c.goaway is None and not c.eof:
            c.pump()
        assert c.goaway is not None and c.goaway.last_stream_id == 3
    assert len(peer.requests) == 2


def test_peer_tls(h2peer, ca_path):
    peer = h2peer(tls=True)
    with raw_client(peer.port, ca_path) as c:
        assert c.get("/anything")[1] == HELLO


@pytest.mark.parametrize("mode", ["silent", "no_accept"])
def test_peer_never_speaks(h2peer, mode):
    peer = h2peer(mode=mode)
    with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")
        s.settimeout(0.2)
        with pytest.raises(socket.timeout):
            s.recv(1)
