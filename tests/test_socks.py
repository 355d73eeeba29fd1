"""SOCKS5 proxies (RFC 1928, username/password RFC 1929) through a real Dante on loopback,
and a scripted SOCKS5 peer for the bytes on the wire and for proxies that misbehave.

TLS runs end to end through the tunnel (ALPN h2), ``http://`` origins are tunnelled
too; ``socks5h://`` lets the proxy resolve the origin's name, ``socks5://`` sends the
address the client resolved.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from servers.dante import DanteProxy, dante_installed, start_dante, system_user
from servers.h1server import H1Server, pattern
from servers.nginx import NginxServer
from servers.util import free_port

import h2pool
from h2pool._config import Proxies, ProxyConfig

pytestmark = pytest.mark.timeout(60)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def socks(tmp_path_factory: pytest.TempPathFactory, nginx: NginxServer) -> Iterator[DanteProxy]:
    """Dante without authentication; it refuses, by rule, tunnels to nginx's
    http1_tls_port (reply 2)."""
    if not dante_installed():
        pytest.skip("dante-server (danted) is not installed")
    server = start_dante(tmp_path_factory.mktemp("dante"), blocked_ports=(nginx.http1_tls_port,))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_socks(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DanteProxy, tuple[str, str]]]:
    """Dante with ``socksmethod: username``, and the system user it accepts."""
    if not dante_installed():
        pytest.skip("dante-server (danted) is not installed")
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("Dante's username method checks system users: needs root to create one")
    with system_user() as user:
        server = start_dante(tmp_path_factory.mktemp("dante-auth"), socksmethod="username")
        yield server, user
        server.stop()


@pytest.fixture
def h1() -> Iterator[H1Server]:
    """A cleartext HTTP/1.1 origin on 127.0.0.1."""
    server = H1Server(None).start()
    yield server
    server.stop()


class FakeSocks:
    """A scripted SOCKS5 peer: accepts one connection and runs ``script(self)`` on it in
    a thread, with verbs to read exactly so many bytes and to answer."""

    def __init__(self, script: Callable[[FakeSocks], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(20)
        self.port: int = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.error: BaseException | None = None
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, args=(script,), name="fake-socks")
        self._thread.start()

    def url(self, scheme: str = "socks5h", auth: str = "") -> str:
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    def _run(self, script: Callable[[FakeSocks], None]) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(20)
                self._conn = conn
                script(self)
        except BaseException as exc:
            self.error = exc

    def want(self, n: int) -> bytes:
        """Read exactly ``n`` bytes (fewer only if the client closes) and record them."""
        assert self._conn is not None
        data = b""
        while len(data) < n:
            chunk = self._conn.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        self.received.append(data)
        return data

    def want_connect(self) -> bytes:
        """Read one CONNECT request, however its address is encoded."""
        head = self.want(5)
        atyp = head[3]
        rest = {1: 4 - 1, 4: 16 - 1, 3: head[4]}[atyp] + 2
        self.received.pop()
        body = self.want(rest)
        self.received[-1] = head + body
        return head + body

    def want_http_head(self) -> bytes:
        assert self._conn is not None
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self._conn.recv(4096)
            if not chunk:
                break
            data += chunk
        self.received.append(data)
        return data

    def send(self, data: bytes) -> None:
        assert self._conn is not None
        self._conn.sendall(data)

    def done(self) -> None:
        self._thread.join(20)
        self.listener.close()
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture
def fake_socks() -> Iterator[Callable[[Callable[[FakeSocks], None]], FakeSocks]]:
    peers: list[FakeSocks] = []

    def make(script: Callable[[FakeSocks], None]) -> FakeSocks:
        peer = FakeSocks(script)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.done()


def _accept_no_auth(peer: FakeSocks) -> None:
    assert peer.want(3) == b"\x05\x01\x00"
    peer.send(b"\x05\x00")


OK_REPLY = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"  # bound to 127.0.0.1:1080
HELLO_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


# -- through Dante -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_https_through_socks_is_h2_end_to_end(nginx, socks, content, make_client, scheme):
    client = make_client(proxy=socks.url(scheme))
    for path in ("/13b", "/1m"):
        r = client.get(nginx.https_url + path)
        assert r.status == 200
        assert r.http_version == "HTTP/2"
        assert sha256(r.content) == content.sha256[path]
    # Both requests shared one tunnel. (Dante logs the address it connected to either
    # way; what each scheme puts on the wire is checked against the scripted peer below.)
    assert client.stats()["connections_opened"] == 1


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_cleartext_h2c_origin_is_tunnelled(nginx, socks, content, make_client, scheme):
    client = make_client(proxy=socks.url(scheme), http2_prior_knowledge=True)
    r = client.get(nginx.h2c_url + "/1m")
    assert (r.status, r.http_version) == (200, "HTTP/2")
    assert sha256(r.content) == content.sha256["/1m"]


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_cleartext_http1_origin_is_tunnelled(socks, h1, make_client, scheme):
    client = make_client(proxy=socks.url(scheme))
    r = client.get(f"http://localhost:{h1.port}/bytes/300000")
    assert (r.status, r.http_version) == (200, "HTTP/1.1")
    assert r.content == pattern(300000)
    assert h1.paths() == ["/bytes/300000"]


def test_many_threads_through_socks(nginx, socks, content, make_client):
    client = make_client(proxy=socks.url("socks5h"))
    futures = [client.submit("GET", nginx.https_url + "/1m") for _ in range(20)]
    for fut in futures:
        assert sha256(fut.result(timeout=30).content) == content.sha256["/1m"]


def test_tls_verification_uses_the_origin_name(nginx, socks, untrusted_ca_path, make_client):
    client = make_client(proxy=socks.url("socks5h"), verify=untrusted_ca_path)
    with pytest.raises(h2pool.TLSError):
        client.get(nginx.https_url + "/13b")


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_closed_port_is_refused_with_the_reply_named(socks, make_client, scheme):
    port = free_port()  # nothing listens: Dante's connect is refused
    client = make_client(proxy=socks.url(scheme))
    with pytest.raises(h2pool.ConnectError) as info:
        client.get(f"https://127.0.0.1:{port}/")
    assert str(info.value) == (
        f"SOCKS5 proxy 127.0.0.1:{socks.port} refused CONNECT 127.0.0.1:{port}:"
        " connection refused (reply 5)"
    )
    assert not isinstance(info.value, h2pool.TLSError)


def test_locally_resolved_name_is_named_in_the_refusal(socks, make_client):
    port = free_port()
    client = make_client(proxy=socks.url("socks5"))
    with pytest.raises(
        h2pool.ConnectError,
        match=rf"refused CONNECT localhost:{port} \(resolved here to 127\.0\.0\.1\):"
        r" connection refused \(reply 5\)",
    ):
        client.get(f"https://localhost:{port}/")


def test_ruleset_refusal(nginx, socks, make_client):
    client = make_client(proxy=socks.url("socks5h"))
    with pytest.raises(
        h2pool.ConnectError,
        match=r"refused CONNECT localhost:\d+: connection not allowed by ruleset \(reply 2\)",
    ):
        client.get(nginx.http1_tls_url + "/13b")


def test_socks_proxy_down(nginx, make_client):
    client = make_client(proxy=f"socks5h://127.0.0.1:{free_port()}")
    with pytest.raises(h2pool.ConnectError, match=r"cannot connect to SOCKS5 proxy 127.0.0.1:"):
        client.get(nginx.https_url + "/13b")


# -- authentication (Dante's username method) ----------------------------------------------


def test_username_password_auth(nginx, auth_socks, content, make_client, caplog):
    caplog.set_level(logging.DEBUG, logger="h2pool")
    proxy, (user, password) = auth_socks
    client = make_client(proxy=proxy.url("socks5h", (user, password)))
    r = client.get(nginx.https_url + "/1m")
    assert r.http_version == "HTTP/2"
    assert sha256(r.content) == content.sha256["/1m"]
    assert password not in caplog.text
    assert password not in repr(client._proxies)


def test_wrong_password(nginx, auth_socks, make_client, caplog):
    caplog.set_level(logging.DEBUG, logger="h2pool")
    proxy, (user, _) = auth_socks
    client = make_client(proxy=proxy.url("socks5", (user, "wrong-pw")))
    with pytest.raises(h2pool.ConnectError, match=r"rejected the credentials") as info:
        client.get(nginx.https_url + "/13b")
    assert f"SOCKS5 proxy 127.0.0.1:{proxy.port}" in str(info.value)
    assert "wrong-pw" not in str(info.value)
    assert "wrong-pw" not in caplog.text


def test_auth_required_without_credentials(nginx, auth_socks, make_client):
    proxy, _ = auth_socks
    client = make_client(proxy=proxy.url("socks5h"))
    with pytest.raises(h2pool.ConnectError, match=r"requires authentication"):
        client.get(nginx.https_url + "/13b")


# -- the bytes on the wire (scripted peer) -------------------------------------------------


def test_socks5h_sends_the_name_and_keeps_bytes_after_the_reply(fake_socks, make_client):
    """ATYP 3 with the origin's name; a reply with a name as BND.ADDR is read to its end
    exactly, and the origin's first bytes in the same segment belong to the tunnel."""

    def script(peer: FakeSocks) -> None:
        _accept_no_auth(peer)
        peer.want_connect()
        peer.send(b"\x05\x00\x00\x03\x0bproxy.local\x1f\x90" + HELLO_RESPONSE)
        peer.want_http_head()

    peer = fake_socks(script)
    client = make_client(proxy=peer.url("socks5h"), timeout=10.0)
    r = client.get("http://origin.test:8080/x")
    assert (r.status, r.content, r.http_version) == (200, b"hello", "HTTP/1.1")
    client.close()
    peer.done()
    assert peer.received[1] == b"\x05\x01\x00\x03\x0borigin.test\x1f\x90"
    assert peer.received[2].startswith(b"GET /x HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("scheme", "host", "wire"),
    [
        ("socks5", "localhost", b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"),
        ("socks5h", "127.0.0.1", b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"),
        ("socks5h", "[::1]", b"\x05\x01\x00\x04" + b"\x00" * 15 + b"\x01\x00\x50"),
    ],
)
def test_addresses_are_sent_as_addresses(fake_socks, make_client, scheme, host, wire):
    def script(peer: FakeSocks) -> None:
        _accept_no_auth(peer)
        peer.want_connect()
        peer.send(b"\x05\x00\x00\x04" + b"\x00" * 16 + b"\x00\x00" + HELLO_RESPONSE)
        peer.want_http_head()

    peer = fake_socks(script)
    client = make_client(proxy=peer.url(scheme), timeout=10.0)
    assert client.get(f"http://{host}:80/").content == b"hello"
    client.close()
    peer.done()
    assert peer.received[1] == wire


def test_credentials_offer_and_rfc1929_message(fake_socks, make_client):
    def script(peer: FakeSocks) -> None:
        peer.want(4)
        peer.send(b"\x05\x02")
        peer.want(2 + 5 + 1 + 4)
        peer.send(b"\x01\x00")
        peer.want_connect()
        peer.send(OK_REPLY + HELLO_RESPONSE)
        peer.want_http_head()

    peer = fake_socks(script)
    # Percent-encoded in the URL, sent as UTF-8.
    client = make_client(proxy=peer.url("socks5h", "al%40ce:p%C3%A9!@"), timeout=10.0)
    assert client.get("http://origin.test/").content == b"hello"
    client.close()
    peer.done()
    assert peer.received[0] == b"\x05\x02\x00\x02"
    assert peer.received[1] == b"\x01\x05al@ce\x04p\xc3\xa9!"


def test_env_all_proxy_socks5h(fake_socks, make_client, monkeypatch):
    def script(peer: FakeSocks) -> None:
        _accept_no_auth(peer)
        peer.want_connect()
        peer.send(OK_REPLY + HELLO_RESPONSE)
        peer.want_http_head()

    peer = fake_socks(script)
    monkeypatch.setenv("all_proxy", peer.url("socks5h"))
    client = make_client(timeout=10.0)
    assert client.get("http://origin.test:8080/").content == b"hello"
    client.close()
    peer.done()
    assert peer.received[1] == b"\x05\x01\x00\x03\x0borigin.test\x1f\x90"


# -- misbehaving proxies (scripted peer) ---------------------------------------------------


def _greeted_then(answer: bytes) -> Callable[[FakeSocks], None]:
    def script(peer: FakeSocks) -> None:
        peer.want(3)
        if answer:
            peer.send(answer)

    return script


def _connect_then(answer: bytes) -> Callable[[FakeSocks], None]:
    def script(peer: FakeSocks) -> None:
        _accept_no_auth(peer)
        peer.want_connect()
        if answer:
            peer.send(answer)

    return script


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (_greeted_then(b"HTTP/1.1 400 Bad Request\r\n\r\n"), r"answered the greeting with b'HT'"),
        (_greeted_then(b""), r"closed the connection during the SOCKS5 exchange"),
        (_greeted_then(b"\x05"), r"closed the connection during the SOCKS5 exchange"),
        (_greeted_then(b"\x05\xff"), r"requires authentication \(give user:password"),
        (_greeted_then(b"\x05\x02"), r"chose authentication method username/password, which"),
        (_greeted_then(b"\x05\x01"), r"chose authentication method 0x01, which was not offered"),
        (_connect_then(b""), r"closed the connection during the SOCKS5 exchange"),
        (_connect_then(OK_REPLY[:6]), r"closed the connection during the SOCKS5 exchange"),
        (_connect_then(b"\x04\x5a\x00\x00"), r"answered CONNECT origin.test:443 with b'\\x04"),
        (_connect_then(b"\x05\x00\x00\x07abcdef"), r"unknown address type 7 \(not SOCKS5\)"),
        (_connect_then(b"\x05\x01"), r"general SOCKS server failure \(reply 1\)"),
        (_connect_then(b"\x05\x03"), r"network unreachable \(reply 3\)"),
        (_connect_then(b"\x05\x04"), r"host unreachable \(reply 4\)"),
        (_connect_then(b"\x05\x06"), r"TTL expired \(reply 6\)"),
        (_connect_then(b"\x05\x07"), r"command not supported \(reply 7\)"),
        (_connect_then(b"\x05\x08"), r"address type not supported \(reply 8\)"),
        (_connect_then(b"\x05\x42"), r"unassigned reply code \(reply 66\)"),
    ],
)
def test_misbehaving_proxy(fake_socks, make_client, script, message):
    peer = fake_socks(script)
    client = make_client(proxy=peer.url("socks5h"), timeout=10.0)
    with pytest.raises(h2pool.ConnectError, match=rf"^SOCKS5 proxy 127.0.0.1:{peer.port} ") as info:
        client.get("https://origin.test/")
    assert not isinstance(info.value, h2pool.ConnectTimeout)
    assert re.search(message, str(info.value)), str(info.value)


def test_wrong_password_on_scripted_peer(fake_socks, make_client):
    def script(peer: FakeSocks) -> None:
        peer.want(4)
        peer.send(b"\x05\x02")
        peer.want(2 + 1 + 1 + 9)
        peer.send(b"\x01\x01")

    peer = fake_socks(script)
    client = make_client(proxy=peer.url("socks5", "u:s3cret-pw@"), timeout=10.0)
    with pytest.raises(
        h2pool.ConnectError, match=r"rejected the credentials from the proxy URL \(status 1\)"
    ) as info:
        client.get("https://127.0.0.1/")
    assert "s3cret" not in str(info.value)


def test_silent_socks_proxy_times_out(make_client):
    with socket.socket() as listener:  # accepts (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        client = make_client(proxy=f"socks5h://127.0.0.1:{port}", timeout=h2pool.Timeout(0.5))
        with pytest.raises(h2pool.ConnectTimeout, match=r"through SOCKS5 proxy 127.0.0.1:"):
            client.get("https://origin.test/")
        client.close()


def test_unresolvable_origin_with_socks5(fake_socks, make_client):
    """socks5:// resolves the origin beside the proxy's dial and greeting; a name that
    does not resolve fails where the CONNECT would go, after the greeting (as PySocks
    does: requests' own tests count the proxy's connections), and no CONNECT is sent."""

    def script(peer: FakeSocks) -> None:
        _accept_no_auth(peer)
        peer.want(1)  # the client closes instead of sending a CONNECT

    peer = fake_socks(script)
    client = make_client(proxy=peer.url("socks5"), timeout=10.0)
    with pytest.raises(h2pool.ConnectError, match=r"cannot resolve 'nonexistent\.invalid'"):
        client.get("https://nonexistent.invalid/")
    peer.done()
    assert peer.received == [b"\x05\x01\x00", b""]


def test_socks5_proxy_down_is_reported_before_the_origin_name(make_client):
    client = make_client(proxy=f"socks5://127.0.0.1:{free_port()}", timeout=10.0)
    with pytest.raises(h2pool.ConnectError, match="refused"):
        client.get("https://nonexistent.invalid/")


# -- URL parsing and selection (no network) ------------------------------------------------


def test_socks_url_parsing():
    p = ProxyConfig.parse("socks5://us%40er:p%3Ass@proxy.example")
    assert (p.kind, p.host, p.port, p.label) == (
        "socks5",
        "proxy.example",
        1080,
        "proxy.example:1080",
    )
    assert p.credentials == ("us@er", "p:ss")
    assert p.auth is None  # no Proxy-Authorization header for SOCKS
    assert "p:ss" not in repr(p)
    assert ProxyConfig.parse("SOCKS5H://[::1]:9050") == ProxyConfig("::1", 9050, "socks5h")
    assert ProxyConfig.parse("http://h:1").kind == "http"
    for bad in ("socks4://h:1", "socks://h:1", f"socks5://{'u' * 256}:p@h", "socks5://:p@h"):
        with pytest.raises(ValueError):
            ProxyConfig.parse(bad)


def test_socks_proxies_from_env():
    env = {"all_proxy": "socks5h://s:1", "http_proxy": "socks5://u:p@h"}
    proxies = Proxies.build(None, True, env)
    assert proxies.for_origin("https", "example.org") == ProxyConfig("s", 1, "socks5h")
    assert proxies.for_origin("http", "example.org") == ProxyConfig("h", 1080, "socks5", ("u", "p"))
    assert proxies.for_origin("https", "localhost") is None
