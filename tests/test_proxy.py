"""Proxy support: HTTP CONNECT tunnels through a real tinyproxy on loopback.

TLS runs end to end through the tunnel (the origin's name for SNI and verification,
ALPN h2); ``http://`` origins are tunnelled too. ``https_proxy`` / ``no_proxy`` are
read when the Client is created.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from servers.nginx import NginxServer
from servers.tinyproxy import TinyProxy, start_tinyproxy, tinyproxy_installed
from servers.util import free_port

import h2pool
from h2pool._config import Proxies, ProxyConfig

PROXY_ENV = (
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


def _start(tmp_path_factory: pytest.TempPathFactory, nginx: NginxServer, **kw: object) -> TinyProxy:
    if not tinyproxy_installed():
        pytest.skip("tinyproxy is not installed")
    # Not http1_tls_port: the tests use it as the port this proxy refuses.
    ports = [nginx.https_port, nginx.h2c_port]
    return start_tinyproxy(tmp_path_factory.mktemp("tinyproxy"), ports, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, nginx: NginxServer) -> Iterator[TinyProxy]:
    server = _start(tmp_path_factory, nginx)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_proxy(tmp_path_factory: pytest.TempPathFactory, nginx: NginxServer) -> Iterator[TinyProxy]:
    server = _start(tmp_path_factory, nginx, basic_auth=("alice", "s3cret-pw"))
    yield server
    server.stop()


def _connects(proxy: TinyProxy, port: int) -> int:
    return proxy.log().count(f"CONNECT localhost:{port} ")


# -- through the proxy ----------------------------------------------------------------------


def test_get_through_proxy_is_h2_end_to_end(nginx, proxy, content, make_client):
    before = _connects(proxy, nginx.https_port)
    client = make_client(proxy=proxy.url)
    for path in ("/13b", "/1m"):
        r = client.get(nginx.https_url + path)
        assert r.status == 200
        assert r.http_version == "HTTP/2"
        assert sha256(r.content) == content.sha256[path]
    # Both requests shared one tunnelled connection: one CONNECT.
    log = proxy.wait_for_log(f"CONNECT localhost:{nginx.https_port} ", before + 1)
    assert log.count(f"CONNECT localhost:{nginx.https_port} ") == before + 1


def test_many_threads_through_proxy(nginx, proxy, content, make_client):
    client = make_client(proxy=proxy.url)
    futures = [client.submit("GET", nginx.https_url + "/1m") for _ in range(20)]
    for fut in futures:
        r = fut.result(timeout=30)
        assert sha256(r.content) == content.sha256["/1m"]


def test_cleartext_origin_is_tunnelled(nginx, proxy, content, make_client):
    before = proxy.log().count(f"CONNECT 127.0.0.1:{nginx.h2c_port} ")
    client = make_client(proxy=proxy.url, http2_prior_knowledge=True)
    r = client.get(nginx.h2c_url + "/13b")
    assert r.status == 200 and r.http_version == "HTTP/2"
    assert r.content == content.data["/13b"]
    log = proxy.wait_for_log(f"CONNECT 127.0.0.1:{nginx.h2c_port} ", before + 1)
    assert log.count(f"CONNECT 127.0.0.1:{nginx.h2c_port} ") == before + 1


def test_tls_verification_uses_the_origin_name(nginx, proxy, untrusted_ca_path, make_client):
    client = make_client(proxy=proxy.url, verify=untrusted_ca_path)
    with pytest.raises(h2pool.TLSError):
        client.get(nginx.https_url + "/13b")


# -- environment --------------------------------------------------------------------------


def test_env_proxy_never_applies_to_loopback(nginx, proxy, content, make_client, monkeypatch):
    # Go's ProxyFromEnvironment rule: a machine-wide https_proxy does not capture calls
    # to this host (env pick-up itself: test_proxy_selection_from_env).
    monkeypatch.setenv("https_proxy", proxy.url)
    before = _connects(proxy, nginx.https_port)
    r = make_client().get(nginx.https_url + "/1m")
    assert sha256(r.content) == content.sha256["/1m"]
    assert _connects(proxy, nginx.https_port) == before
    # An explicit proxy= still applies to loopback.
    r = make_client(proxy=proxy.url).get(nginx.https_url + "/13b")
    assert r.content == content.data["/13b"]
    proxy.wait_for_log(f"CONNECT localhost:{nginx.https_port} ", before + 1)


@pytest.mark.parametrize("no_proxy", ["localhost", "example.org, .localhost,x", "*"])
def test_no_proxy_bypasses(nginx, content, make_client, monkeypatch, no_proxy):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: only a bypass succeeds
    monkeypatch.setenv("HTTPS_PROXY", dead)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    r = make_client().get(nginx.https_url + "/13b")
    assert r.content == content.data["/13b"]


def test_trust_env_false_ignores_env(nginx, content, make_client, monkeypatch):
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{free_port()}")
    r = make_client(trust_env=False).get(nginx.https_url + "/13b")
    assert r.content == content.data["/13b"]


def test_dead_env_proxy_is_not_used_for_loopback(nginx, content, make_client, monkeypatch):
    monkeypatch.setenv("all_proxy", f"http://127.0.0.1:{free_port()}")
    r = make_client().get(nginx.https_url + "/13b")
    assert r.content == content.data["/13b"]


# -- failures -----------------------------------------------------------------------------


def test_proxy_refusing_the_port(nginx, proxy, make_client):
    client = make_client(proxy=proxy.url)
    with pytest.raises(h2pool.ConnectError, match=r"refused CONNECT .*: 403") as info:
        client.get(nginx.http1_tls_url + "/13b")
    assert not isinstance(info.value, h2pool.TLSError)


def test_proxy_down(nginx, make_client):
    client = make_client(proxy=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(h2pool.ConnectError, match=r"cannot connect to proxy 127.0.0.1:"):
        client.get(nginx.https_url + "/13b")


def test_silent_proxy_times_out(nginx, make_client):
    with socket.socket() as listener:  # accepts (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        client = make_client(proxy=f"http://127.0.0.1:{port}", timeout=h2pool.Timeout(connect=0.5))
        with pytest.raises(h2pool.ConnectTimeout, match=r"through proxy 127.0.0.1"):
            client.get(nginx.https_url + "/13b")
        client.close()


def test_invalid_proxy_urls():
    for bad in ("https://127.0.0.1:3128", "socks4://h:1", "http://", "http://h:1/path"):
        with pytest.raises(ValueError):
            h2pool.Client(proxy=bad)


# -- authentication -----------------------------------------------------------------------


def test_proxy_authorization(nginx, auth_proxy, content, make_client, caplog):
    caplog.set_level(logging.DEBUG, logger="h2pool")
    client = make_client(proxy=auth_proxy.url)
    r = client.get(nginx.https_url + "/1m")
    assert r.http_version == "HTTP/2"
    assert sha256(r.content) == content.sha256["/1m"]
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in repr(client._proxies)


def test_proxy_requires_authentication(nginx, auth_proxy, make_client):
    client = make_client(proxy=f"http://127.0.0.1:{auth_proxy.port}")
    with pytest.raises(h2pool.ConnectError, match=r"requires authentication.*407"):
        client.get(nginx.https_url + "/13b")


def test_proxy_rejects_credentials(nginx, auth_proxy, make_client, caplog):
    caplog.set_level(logging.DEBUG, logger="h2pool")
    client = make_client(proxy=f"http://alice:wrong-pw@127.0.0.1:{auth_proxy.port}")
    with pytest.raises(h2pool.ConnectError, match=r"rejected the credentials.*40[17]") as info:
        client.get(nginx.https_url + "/13b")
    assert "wrong-pw" not in str(info.value)
    assert "wrong-pw" not in caplog.text


# -- proxy selection (no network) -----------------------------------------------------------


def test_proxy_url_parsing():
    p = ProxyConfig.parse("http://us%40er:p%3Ass@proxy.example:3128")
    assert (p.host, p.port, p.label) == ("proxy.example", 3128, "proxy.example:3128")
    assert p.auth == b"Basic dXNAZXI6cDpzcw=="  # base64("us@er:p:ss")
    assert "p:ss" not in repr(p) and "dXNA" not in repr(p)
    assert ProxyConfig.parse("10.0.0.1").port == 80
    assert ProxyConfig.parse("http://[::1]:8080").label == "[::1]:8080"


def test_proxy_selection_from_env():
    env = {
        "https_proxy": "http://s:1",
        "HTTP_PROXY": "http://h:2",
        "no_proxy": "internal.example, 10.0.0.0/8,[::1]:443, *.corp",
    }
    proxies = Proxies.build(None, True, env)
    assert proxies.for_origin("https", "example.org") == ProxyConfig("s", 1)
    assert proxies.for_origin("http", "example.org") == ProxyConfig("h", 2)
    for host in ("internal.example", "a.internal.example", "10.1.2.3", "::1", "x.corp"):
        assert proxies.for_origin("https", host) is None, host
    # Like Go: a proxy from the environment never applies to loopback.
    for host in ("localhost", "a.localhost", "127.0.0.1", "127.1.2.3", "::1"):
        assert proxies.for_origin("https", host) is None, host
    assert proxies.for_origin("https", "notinternal.example") is not None
    # httpoxy: HTTP_PROXY is not trusted inside a CGI request.
    cgi = Proxies.build(None, True, {**env, "REQUEST_METHOD": "GET"})
    assert cgi.for_origin("http", "example.org") is None
    # all_proxy is the fallback for both schemes; an explicit proxy wins over the env.
    assert Proxies.build(None, True, {"ALL_PROXY": "a:3"}).http == ProxyConfig("a", 3)
    explicit = Proxies.build("http://e:4", True, env)
    assert explicit.for_origin("https", "example.org") == ProxyConfig("e", 4)
    assert explicit.for_origin("https", "localhost") == ProxyConfig("e", 4)
    assert explicit.for_origin("https", "internal.example") is None  # no_proxy still applies
    assert Proxies.build(None, False, env) == Proxies()


# -- bytes after the CONNECT answer ---------------------------------------------------------


def _listen(backlog: int = 4) -> tuple[socket.socket, int]:
    """A scripted proxy's listener on 127.0.0.1 and its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener, listener.getsockname()[1]


def _read_head(conn: socket.socket) -> bytes:
    """What the client sent up to its blank line (a CONNECT's head, or the head of the
    request sent through the tunnel)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_bytes_after_the_connect_answer_are_kept(make_client, eol):
    """A proxy may pass on the tunnelled peer's first bytes in the same segment as its
    200: they belong to the tunnel, not to the CONNECT answer. Its lines may end in a
    bare LF (RFC 9112 §2.2); that answer used to wait out the timeout."""
    listener, port = _listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            seen.append(_read_head(conn))
            # The 200 and the origin's whole HTTP/1.1 response in one write.
            conn.sendall(
                b"HTTP/1.1 200 Connection established"
                + eol
                + b"Proxy-Agent: t"
                + eol
                + eol
                + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            )
            seen.append(_read_head(conn))  # the tunnelled request's head

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = make_client(proxy=f"http://127.0.0.1:{port}", timeout=5.0)
        r = client.get("http://origin.test:8080/x")
        assert (r.status, r.content, r.http_version) == (200, b"hello", "HTTP/1.1")
        client.close()
    finally:
        thread.join(10)
        listener.close()
    assert seen[0].startswith(b"CONNECT origin.test:8080 HTTP/1.1\r\nHost: origin.test:8080\r\n")
    assert seen[1].startswith(b"GET /x HTTP/1.1\r\n")


@pytest.mark.parametrize("interim", [1, 8, 9])
def test_interim_answers_before_the_connect_200_are_skipped(make_client, interim):
    """1xx answers before the final one are read and skipped (RFC 9110 §15.2), up to a
    bound: a proxy that keeps sending them fails the dial instead of holding it."""
    listener, port = _listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            _read_head(conn)
            conn.sendall(
                b"HTTP/1.1 100 Continue\r\n\r\n" * interim
                + b"HTTP/1.1 200 Connection established\r\n\r\n"
                + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            )
            # Until the client closes: with unread answers left it resets the socket.
            with contextlib.suppress(OSError):
                conn.recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = make_client(proxy=f"http://127.0.0.1:{port}", timeout=5.0)
        if interim <= 8:
            r = client.get("http://origin.test:8080/x")
            assert (r.status, r.content) == (200, b"hello")
        else:
            with pytest.raises(h2pool.ConnectError, match=r"refused CONNECT .*: 100"):
                client.get("http://origin.test:8080/x")
        client.close()
    finally:
        thread.join(10)
        listener.close()


def test_requests_adapter_sends_through_the_proxy_requests_chose(nginx, proxy, content, ca_path):
    """requests' ``proxies=`` (or its environment) picks the proxy; the adapter tunnels
    through it. Before, any proxy raised ProxyError."""
    requests = pytest.importorskip("requests")
    from h2pool.contrib.requests import HTTP2Adapter

    session = requests.Session()
    session.trust_env = False
    session.mount("https://", HTTP2Adapter())
    try:
        before = _connects(proxy, nginx.https_port)
        r = session.get(nginx.https_url + "/1m", proxies={"https": proxy.url}, verify=ca_path)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == content.sha256["/1m"]
        log = proxy.wait_for_log(f"CONNECT localhost:{nginx.https_port} ", before + 1)
        assert log.count(f"CONNECT localhost:{nginx.https_port} ") == before + 1
        # Without proxies= the same session goes direct: no new CONNECT.
        assert session.get(nginx.https_url + "/13b", verify=ca_path).status_code == 200
        assert _connects(proxy, nginx.https_port) == before + 1
    finally:
        session.close()


# -- a proxy that lies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 2\xb2 OK", b"HTTP/1.1 \xb2\xb2\xb2 OK", b"HTTP/1.1 OK", b"SOCKS5"],
    ids=["superscript-digit", "superscripts", "no-status", "not-http"],
)
def test_an_invalid_connect_answer_fails_that_dial_only(make_client, answer):
    """A status line that is not HTTP's (a Latin-1 '²' passes str.isdigit() but not
    int()) is a ConnectError for the requests that waited on that dial; the client and
    its I/O thread carry on, so the next request fails the same way, not with
    ClientClosed."""
    listener, port = _listen(4)

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                _read_head(conn)
                conn.sendall(answer + b"\r\n\r\n")
                conn.recv(1)  # until the client closes

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = make_client(proxy=f"http://127.0.0.1:{port}", timeout=5.0)
        for _ in range(2):
            with pytest.raises(h2pool.ConnectError, match="invalid CONNECT response"):
                client.get("http://origin.test:8080/x")
    finally:
        thread.join(10)
        listener.close()


def test_a_bug_in_one_dial_fails_that_dial_not_the_client(make_client, monkeypatch, caplog):
    """A defect in the dialer's own code (simulated) fails the requests waiting on that
    dial with a ConnectError and is logged with its traceback; the I/O thread lives on."""
    import h2pool._dial as dial

    real = dial.Dialer._on_connect_response

    def broken(self: dial.Dialer, head: bytes) -> None:
        raise RuntimeError("simulated defect")

    monkeypatch.setattr(dial.Dialer, "_on_connect_response", broken)
    listener, port = _listen(4)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            _read_head(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
            conn.recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = make_client(proxy=f"http://127.0.0.1:{port}", timeout=5.0)
        with (
            caplog.at_level(logging.ERROR, logger="h2pool"),
            pytest.raises(h2pool.ConnectError, match="simulated defect"),
        ):
            client.get("http://origin.test:8080/x")
        assert any(r.exc_info for r in caplog.records)
        monkeypatch.setattr(dial.Dialer, "_on_connect_response", real)
        assert client._runtime.loop is not None and client._runtime.loop.thread.is_alive()
    finally:
        thread.join(10)
        listener.close()
