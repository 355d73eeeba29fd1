"""Connection and TLS failures map to the contract's exception tree.

No TLS or ALPN failure may fall back to cleartext, and none may leak a bare
``ssl.SSLError`` or ``OSError``.
"""

from __future__ import annotations

import hashlib
import ssl

import pytest
from servers.h2peer import server_tls_context
from servers.util import free_port

import h2pool

HELLO = b"Hello, world!"
FAST = h2pool.Timeout(connect=5, read=5, write=5, pool=5)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_connection_refused(make_client, scheme):
    port = free_port()  # nothing listens here
    client = make_client(timeout=FAST, http2_prior_knowledge=True)
    with pytest.raises(h2pool.ConnectError) as info:
        client.get(f"{scheme}://127.0.0.1:{port}/x")
    assert not isinstance(info.value, h2pool.TLSError)
    assert isinstance(info.value, h2pool.H2PoolError)
    fut = client.submit("GET", f"{scheme}://127.0.0.1:{port}/x")
    assert isinstance(fut.exception(timeout=10), h2pool.ConnectError)


@pytest.mark.timeout(30)
def test_untrusted_ca(nginx, make_client, untrusted_ca_path):
    client = make_client(verify=untrusted_ca_path, timeout=FAST)
    with pytest.raises(h2pool.TLSError) as info:
        client.get(nginx.https_url + "/13b")
    assert isinstance(info.value, h2pool.ConnectError)
    assert not isinstance(info.value, ssl.SSLError)  # wrapped, never bare


@pytest.mark.timeout(30)
def test_default_trust_store_rejects_test_ca(nginx, make_client):
    client = make_client(verify=True, timeout=FAST)
    with pytest.raises(h2pool.TLSError):
        client.get(nginx.https_url + "/13b")


@pytest.mark.timeout(30)
def test_server_cert_from_unknown_ca(h2peer, pki, make_client):
    peer = h2peer(tls=server_tls_context(pki.untrusted_ca))
    client = make_client(timeout=FAST)  # trusts only the main test CA
    with pytest.raises(h2pool.TLSError):
        client.get(peer.https_url + "/x")
    assert peer.requests == []


@pytest.mark.timeout(30)
def test_hostname_mismatch(h2peer, ca, make_client):
    # Signed by the trusted CA, but for other.test only.
    peer = h2peer(tls=server_tls_context(ca, "other.test"))
    client = make_client(timeout=FAST)
    with pytest.raises(h2pool.TLSError) as info:
        client.get(f"https://localhost:{peer.port}/x")
    assert isinstance(info.value, h2pool.ConnectError)
    with pytest.raises(h2pool.TLSError):
        client.get(f"https://127.0.0.1:{peer.port}/x")
    assert peer.requests == []


@pytest.mark.timeout(30)
def test_verify_accepts_ssl_context(nginx, make_client, ca_path):
    ctx = ssl.create_default_context(cafile=ca_path)
    client = make_client(verify=ctx)
    assert client.get(nginx.https_url + "/13b").content == HELLO


@pytest.mark.timeout(30)
def test_verify_false_works_and_warns(nginx):
    with pytest.warns(Warning):  # the contract names no category
        client = h2pool.Client(verify=False, timeout=FAST)
        try:
            r = client.get(nginx.https_url + "/13b")
            assert r.status == 200
            assert r.content == HELLO
            assert r.http_version == "HTTP/2"
        finally:
            client.close()


@pytest.mark.timeout(30)
def test_alpn_without_h2_and_http1_disabled(nginx, make_client):
    client = make_client(http1=False, timeout=FAST)
    with pytest.raises(h2pool.ConnectError) as info:
        client.get(nginx.http1_tls_url + "/13b")
    assert isinstance(info.value, h2pool.H2PoolError)


@pytest.mark.timeout(30)
def test_alpn_without_h2_falls_back_to_http1(nginx, make_client, content):
    client = make_client(http1=True, timeout=FAST)
    r = client.get(nginx.http1_tls_url + "/1m")
    assert r.status == 200
    assert r.http_version == "HTTP/1.1"
    assert len(r.content) == content.size["/1m"]
    assert hashlib.sha256(r.content).hexdigest() == content.sha256["/1m"]


@pytest.mark.timeout(30)
def test_h2c_to_tls_port_fails_cleanly(nginx, make_client):
    # Cleartext prior-knowledge h2 against a TLS listener: some typed error, no hang.
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    with pytest.raises(h2pool.H2PoolError):
        client.get(f"http://127.0.0.1:{nginx.https_port}/13b")


@pytest.mark.timeout(30)
def test_https_to_cleartext_port_is_tls_error(nginx, make_client):
    client = make_client(timeout=FAST)
    with pytest.raises(h2pool.ConnectError):
        client.get(f"https://localhost:{nginx.h2c_port}/13b")


@pytest.mark.timeout(30)
def test_stream_reset_by_server(h2peer, make_client):
    peer = h2peer(routes={"/rst": "rst:INTERNAL_ERROR", "/refused-forever": "rst:PROTOCOL_ERROR"})
    client = make_client(http2_prior_knowledge=True, timeout=FAST)
    with pytest.raises(h2pool.StreamReset) as info:
        client.get(peer.h2c_url + "/rst")
    assert info.value.error_code == 2  # INTERNAL_ERROR
    with pytest.raises(h2pool.StreamReset) as info:
        client.get(peer.h2c_url + "/refused-forever")
    assert info.value.error_code == 1  # PROTOCOL_ERROR
    # Not retried, and the connection survives for siblings.
    assert client.get(peer.h2c_url + "/ok").content == HELLO
    assert len(peer.requests_for("/rst")) == 1
    assert len(peer.requests_for("/refused-forever")) == 1
    assert len(peer.connections) == 1


# -- the end of a TLS connection without close_notify ---------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("whole", [True, False], ids=["whole-body", "cut-body"])
def test_h2_over_tls_closed_without_close_notify(rawpeer, pki, make_client, whole):
    """A TCP FIN with no TLS close_notify (a "ragged" EOF) ends the connection as any
    EOF does: a response already whole is delivered, one cut short is ConnectionLost,
    never a bare ssl error and never a short body."""
    body = hashlib.sha256(b"ragged").digest() * 400  # 12,800 bytes

    def script(conn):
        conn.greet()
        sid, _ = conn.expect_request()
        conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(body)))])
        conn.send_data(sid, body if whole else body[:5000], end_stream=whole)
        conn.close()  # shutdown(SHUT_RDWR) of the TCP socket under TLS: no close_notify

    peer = rawpeer(script, tls=server_tls_context(pki.ca))
    client = make_client(timeout=FAST)
    if whole:
        assert hashlib.sha256(client.get(peer.url + "/x").content).digest() == (
            hashlib.sha256(body).digest()
        )
    else:
        with pytest.raises(h2pool.ConnectionLost) as info:
            client.get(peer.url + "/x")
        assert "closed by the server" in str(info.value)
    assert peer.errors == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stream", [False, True])
def test_h1_over_tls_body_delimited_by_the_close(pki, make_client, stream):
    """HTTP/1.1 without a length ends its body with the connection. Over TLS that end
    is trusted only with a close_notify (RFC 9112 §9.8): a bare TCP close may be an
    attacker's FIN cutting the body short, so it is a ConnectionLost, never a body
    handed over as complete. Bodies with a length or chunked are unaffected."""
    from servers.h1server import HELLO as H1_HELLO
    from servers.h1server import H1Server

    ctx = server_tls_context(pki.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    server = H1Server(ctx).start()
    try:
        client = make_client(timeout=FAST)
        r = client.request("GET", server.url + "/eof-body-notify", stream=stream)
        assert r.http_version == "HTTP/1.1"
        assert r.read() == H1_HELLO * 3
        with pytest.raises(h2pool.ConnectionLost, match="close_notify"):
            r = client.request("GET", server.url + "/eof-body", stream=stream)  # close() alone
            r.read()
        assert client.get(server.url + "/hello").content == H1_HELLO
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_a_contexts_own_ssl_socket_class_keeps_its_methods(nginx, make_client, ca_path, content):
    """The connections call an ``ssl.SSLSocket``'s TLS object directly, for speed; a
    socket class of the user's own (``SSLContext.sslsocket_class``) is used through its
    methods instead, whatever they do."""
    calls = {"recv_into": 0, "send": 0}

    class Counting(ssl.SSLSocket):
        def recv_into(self, buffer, nbytes=None, flags=0):  # type: ignore[no-untyped-def]
            calls["recv_into"] += 1
            return super().recv_into(buffer, nbytes, flags)

        def send(self, data, flags=0):  # type: ignore[no-untyped-def]
            calls["send"] += 1
            return super().send(data, flags)

    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.sslsocket_class = Counting
    client = make_client(verify=ctx)
    assert client.get(nginx.https_url + "/13b").content == HELLO
    big = client.get(nginx.https_url + "/1m").content
    assert hashlib.sha256(big).hexdigest() == content.sha256["/1m"]
    assert calls["send"] >= 2
    assert calls["recv_into"] >= 64  # 1 MiB is at least 64 TLS records
