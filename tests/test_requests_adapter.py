"""The requests adapter: a ``requests.Session`` with HTTP2Adapter mounted, against nginx,
nghttpd, the scripted h2 peer and the scripted HTTP/1.1 server."""

from __future__ import annotations

import concurrent.futures as cf
import datetime
import hashlib
import threading

import pytest
from servers.h1server import HELLO, H1Server, pattern
from servers.h2peer import server_tls_context
from servers.util import free_port

import h2pool

requests = pytest.importorskip("requests")
from h2pool.contrib.requests import HTTP2Adapter  # noqa: E402


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def session(ca_path):
    s = requests.Session()
    s.trust_env = False  # no proxies or CA bundles from the environment
    s.verify = ca_path
    adapter = HTTP2Adapter(timeout=h2pool.Timeout(10))
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    yield s
    s.close()  # closes the adapter and its clients


@pytest.fixture
def h1s(pki):
    ctx = server_tls_context(pki.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    server = H1Server(ctx).start()
    yield server
    server.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["/13b", "/1m", pytest.param("/100m", marks=pytest.mark.slow)])
def test_get_hash(session, nginx, content, path):
    r = session.get(nginx.https_url + path)
    assert r.status_code == 200
    assert r.reason == "OK"
    assert r.ok
    assert isinstance(r.headers, requests.structures.CaseInsensitiveDict)
    assert r.headers["Content-Length"] == str(content.size[path])
    assert sha256(r.content) == content.sha256[path]
    assert r.url == nginx.https_url + path
    assert r.request.method == "GET"
    assert isinstance(r.connection, HTTP2Adapter)
    assert isinstance(r.elapsed, datetime.timedelta)
    assert r.raw.version == 20


@pytest.mark.timeout(30)
def test_http1_listener(session, nginx, content):
    r = session.get(nginx.http1_tls_url + "/1m")
    assert r.raw.version == 11
    assert sha256(r.content) == content.sha256["/1m"]


@pytest.mark.timeout(30)
def test_text_json_and_status(session, nginx):
    r = session.get(nginx.https_url + "/data.json")
    assert r.json() == {"name": "h2pool", "numbers": [1, 2, 3], "ok": True}
    r = session.get(nginx.https_url + "/404")
    assert r.status_code == 404
    with pytest.raises(requests.HTTPError):
        r.raise_for_status()
    r = session.head(nginx.https_url + "/1m")
    assert r.content == b""


@pytest.mark.timeout(60)
def test_stream_iter_content(session, nginx, content):
    digest = hashlib.sha256()
    sizes = set()
    with session.get(nginx.https_url + "/100m", stream=True) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(chunk_size=1 << 20):
            sizes.add(len(chunk))
            digest.update(chunk)
    assert digest.hexdigest() == content.sha256["/100m"]
    assert max(sizes) <= 1 << 20
    with session.get(nginx.https_url + "/1m", stream=True) as r:
        assert b"".join(r.iter_content(chunk_size=None)) == content.data["/1m"]
    with session.get(nginx.https_url + "/1m", stream=True) as r:
        assert r.raw.read(10) == content.data["/1m"][:10]
        assert r.raw.read() == content.data["/1m"][10:]


@pytest.mark.timeout(30)
def test_stream_closed_early_frees_connection(session, nginx, content):
    for _ in range(20):
        with session.get(nginx.https_url + "/100m", stream=True) as r:
            assert len(next(r.iter_content(65536))) == 65536
    assert sha256(session.get(nginx.https_url + "/1m").content) == content.sha256["/1m"]


@pytest.mark.timeout(30)
def test_post_bodies_echoed(session, nghttpd_echo, h1s):
    blob = pattern(500_000)

    def gen():
        yield blob[:100]
        yield blob[100:]

    for base, path in ((nghttpd_echo.https_url, "/13b"), (h1s.url, "/echo")):
        url = base + path
        assert session.post(url, data=blob).content == blob
        assert session.put(url, data=gen()).content == blob
        assert session.post(url, json={"a": [1, 2]}).json() == {"a": [1, 2]}
        assert session.post(url, data={"k": "v w"}).content == b"k=v+w"
    seen = [r for r in h1s.requests if r.method == "PUT"]
    assert seen[0].headers.get("transfer-encoding") == "chunked"


@pytest.mark.timeout(60)
def test_session_shared_by_32_threads(session, nginx, content):
    url = nginx.https_url + "/1m"
    digest = content.sha256["/1m"]
    ok = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal ok
        for _ in range(10):
            r = session.get(url)
            assert r.status_code == 200
            assert sha256(r.content) == digest
            with lock:
                ok += 1

    with cf.ThreadPoolExecutor(32) as pool:
        for f in [pool.submit(worker) for _ in range(32)]:
            f.result(timeout=60)
    assert ok == 320
    client = session.get_adapter("https://").client_for(session.verify)
    assert client.stats()["connections"] <= 8


@pytest.mark.timeout(30)
def test_content_encoding_decoded(session, h1s):
    for path in ("/gzip", "/deflate"):
        r = session.get(h1s.url + path)
        assert r.headers["content-encoding"] == path[1:]
        assert r.content == pattern(100_000)
        with session.get(h1s.url + path, stream=True) as r:
            raw = r.raw.read()
            assert raw != pattern(100_000) and len(raw) < 100_000
    sent = h1s.requests[0].headers["accept-encoding"]
    assert sent == "gzip, deflate"


@pytest.mark.timeout(30)
def test_cookies_and_redirects_stay_with_requests(session, h1s):
    r = session.get(h1s.url + "/cookie")
    assert r.cookies["a"] == "1"
    assert session.cookies["b"] == "2"
    r = session.get(h1s.url + "/redirect")
    assert r.status_code == 200
    assert r.content == HELLO
    assert [h.status_code for h in r.history] == [302]
    cookie_header = h1s.requests[-1].headers.get("cookie", "")
    assert "a=1" in cookie_header and "b=2" in cookie_header


# -- exception mapping -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_connection_refused(session):
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        session.get(f"https://127.0.0.1:{free_port()}/x")
    assert isinstance(info.value.__cause__, h2pool.ConnectError)
    assert info.value.request is not None


@pytest.mark.timeout(30)
def test_connect_timeout(session, h2peer):
    peer = h2peer(mode="no_accept", tls=True)
    with pytest.raises(requests.exceptions.ConnectTimeout) as info:
        session.get(peer.https_url + "/x", timeout=(0.3, 5))
    assert isinstance(info.value, requests.exceptions.ConnectionError)
    assert isinstance(info.value, requests.exceptions.Timeout)


@pytest.mark.timeout(30)
def test_read_timeout(session, h2peer):
    peer = h2peer(routes={"/stall": "stall_headers", "/body": "stall_body"}, tls=True)
    with pytest.raises(requests.exceptions.ReadTimeout) as info:
        session.get(peer.https_url + "/stall", timeout=(5, 0.3))
    assert "Read timed out" in info.value.args[0].args[0]  # urllib3's words, matched by users
    # Mid-body: requests reports ConnectionError there; ours is also a ReadTimeout.
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        session.get(peer.https_url + "/body", timeout=(5, 0.3))
    assert isinstance(info.value, requests.exceptions.ReadTimeout)
    assert "Read timed out" in str(info.value)


@pytest.mark.timeout(30)
def test_ssl_error(session, nginx, untrusted_ca_path):
    with pytest.raises(requests.exceptions.SSLError) as info:
        session.get(nginx.https_url + "/13b", verify=untrusted_ca_path)
    assert isinstance(info.value, requests.exceptions.ConnectionError)
    assert isinstance(info.value.__cause__, h2pool.TLSError)
    # The session's own CA still works: one client per TLS configuration.
    assert session.get(nginx.https_url + "/13b").content == HELLO


@pytest.mark.timeout(30)
def test_verify_false_per_call(session, nginx):
    with pytest.warns(h2pool.InsecureRequestWarning):
        r = session.get(nginx.https_url + "/13b", verify=False)
    assert r.content == HELLO


@pytest.mark.timeout(30)
def test_truncated_body_is_chunked_encoding_error(session, h1s):
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(h1s.url + "/truncated")


@pytest.mark.timeout(30)
def test_an_unreachable_proxy_is_a_proxy_error(session, nginx):
    with pytest.raises(requests.exceptions.ProxyError):
        session.get(nginx.https_url + "/13b", proxies={"https": "http://127.0.0.1:9"})


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "proxy, kind",
    [
        ("http:/badproxyurl:3128", "InvalidProxyURL"),
        ("http://:8080", "InvalidProxyURL"),
        ("https://", "InvalidProxyURL"),
        ("ftp://127.0.0.1:21", "InvalidSchema"),
    ],
)
def test_malformed_proxy_urls_are_refused_before_any_connection(session, nginx, proxy, kind):
    with pytest.raises(getattr(requests.exceptions, kind)):
        session.get(nginx.https_url + "/13b", proxies={"https": proxy})


@pytest.mark.timeout(30)
def test_shared_client_is_not_closed(nginx, ca_path):
    with h2pool.Client(verify=ca_path) as client:
        adapter = HTTP2Adapter(client)
        s = requests.Session()
        s.trust_env = False
        s.mount("https://", adapter)
        assert s.get(nginx.https_url + "/13b").content == HELLO
        assert adapter.client_for(True) is client
        s.close()
        assert client.get(nginx.https_url + "/13b").content == HELLO
    with pytest.raises(TypeError):
        HTTP2Adapter(verify=False)


@pytest.mark.timeout(30)
def test_cleartext_http1(session):
    server = H1Server(None).start()
    try:
        r = session.get(server.url + "/hello")
        assert (r.status_code, r.content, r.raw.version) == (200, HELLO, 11)
    finally:
        server.stop()


# -- what requests' own HTTPAdapter accepts -------------------------------------------------


@pytest.mark.timeout(30)
def test_credentials_in_the_url_become_basic_auth(session, h1s):
    """Before: InvalidURL 'credentials in the URL are not supported'."""
    import base64

    r = session.get(f"https://us%40er:p%3Ass@localhost:{h1s.port}/hello")
    assert (r.status_code, r.content) == (200, HELLO)
    seen = h1s.requests[-1]
    assert seen.path == "/hello"
    want = "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert seen.headers["authorization"] == want


@pytest.mark.timeout(30)
def test_tls_settings_are_ignored_for_http(session, tmp_path):
    """Before: cert= (a directory here) broke plain http:// with IsADirectoryError."""
    server = H1Server(None).start()
    try:
        r = session.get(f"http://127.0.0.1:{server.port}/hello", cert=str(tmp_path))
        assert (r.status_code, r.content) == (200, HELLO)
        r = session.get(f"http://127.0.0.1:{server.port}/hello", verify=str(tmp_path / "no"))
        assert r.content == HELLO
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_invalid_ca_path_is_an_oserror(session, nginx):
    """Before: ValueError; requests raises OSError."""
    with pytest.raises(OSError, match="invalid path"):
        session.get(nginx.https_url + "/13b", verify="/nonexistent/ca.pem")


@pytest.mark.timeout(30)
def test_urllib3_timeout_objects(session, h1s):
    """Before: rejected with a TypeError."""
    from urllib3.util import Timeout as Urllib3Timeout

    r = session.get(f"https://localhost:{h1s.port}/hello", timeout=Urllib3Timeout(5, 5))
    assert r.content == HELLO
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(f"https://localhost:{h1s.port}/stall", timeout=Urllib3Timeout(5, read=0.3))


@pytest.mark.timeout(30)
def test_header_strings_are_latin1_as_http_client_gives_them(session):
    """requests re-encodes a Location as ISO-8859-1 and decodes it as UTF-8; before, the
    adapter's UTF-8-decoded strings made that raise UnicodeEncodeError."""
    server = H1Server(None).start()
    try:
        r = session.get(server.url + "/latin1")
        assert r.status_code == 404  # the target does not exist; the redirect was followed
        assert r.history[0].headers["Location"] == "/š".encode().decode("latin-1")
        assert server.requests[-1].path == "/%C5%A1"
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_broken_responses_raise_what_requests_raises(session):
    """A close inside the head: ChunkedEncodingError (http.client ends the head at EOF
    and finds the chunked body short); two Content-Lengths: InvalidHeader. Before, both
    were ConnectionError."""
    server = H1Server(None).start()
    try:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            session.get(server.url + "/half-head")
        with pytest.raises(requests.exceptions.InvalidHeader):
            session.get(server.url + "/two-lengths")
        with pytest.raises(requests.exceptions.ConnectionError) as info:
            session.get(server.url + "/drop")  # no response at all
        assert not isinstance(info.value, requests.exceptions.ChunkedEncodingError)
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_header_names_keep_requests_casing_on_http1(session):
    server = H1Server(None).start()
    try:
        session.post(server.url + "/echo", data=b"x", headers={"Host": "sample-host"})
        names = server.requests[-1].raw_names
        assert names.count(b"Host") == 1 and b"host" not in names
        assert server.requests[-1].headers["host"] == "sample-host"
        assert b"Content-Length" in names and b"User-Agent" in names
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_a_session_with_the_adapter_pickles(session, nginx, content):
    """Before: TypeError, cannot pickle '_thread.lock'. The copy builds its own clients."""
    import pickle

    assert session.get(nginx.https_url + "/13b").content == HELLO
    copy = pickle.loads(pickle.dumps(session))
    try:
        adapter = copy.get_adapter(nginx.https_url)
        assert isinstance(adapter, HTTP2Adapter)
        assert adapter is not session.get_adapter(nginx.https_url)
        r = copy.get(nginx.https_url + "/1m")
        assert sha256(r.content) == content.sha256["/1m"]
    finally:
        copy.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("timeout", ["foo", (1, "x"), True, -1])
def test_invalid_timeouts_are_value_errors_with_urllib3s_words(session, nginx, timeout):
    with pytest.raises(ValueError, match=r"int, float or None|less than or equal to 0"):
        session.get(nginx.https_url + "/13b", timeout=timeout)


@pytest.mark.timeout(30)
def test_missing_client_certificate_files_are_oserrors(session, nginx, tmp_path):
    with pytest.raises(OSError, match="TLS certificate file, invalid path"):
        session.get(nginx.https_url + "/13b", cert=str(tmp_path / "nope.pem"))
    existing = tmp_path / "c.pem"
    existing.write_text("")
    with pytest.raises(OSError, match="TLS key file, invalid path"):
        session.get(nginx.https_url + "/13b", cert=(str(existing), str(tmp_path / "k.pem")))
