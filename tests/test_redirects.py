"""Redirects: not followed by default; ``follow_redirects=True`` follows 301/302/303 as
GET, 307/308 with method and body, strips credentials across origins, refuses
https -> http, stops at ``max_redirects``; against nginx ``return 30x`` locations and
scripted peers."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from servers.h2peer import PeerConnection, Request

import h2pool


def _redirect_to(
    location: str, status: int = 302
) -> Callable[[PeerConnection, int, Request], None]:
    def handler(conn: PeerConnection, sid: int, req: Request) -> None:
        conn.respond(sid, status, b"moved\n", [("location", location)])

    return handler


def test_not_followed_by_default(nginx, make_client):
    r = make_client().get(nginx.https_url + "/r/301")
    assert r.status == 301
    assert r.headers["location"].endswith("/echo-headers")
    assert r.history == []


@pytest.mark.parametrize("status", [301, 302, 303])
def test_301_302_303_become_get_without_body(nginx, make_client, status):
    client = make_client()
    r = client.post(
        nginx.https_url + f"/r/{status}",
        body=b"form=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=True,
    )
    assert r.status == 200
    assert r.headers["x-echo-method"] == "GET"
    assert r.content == b"echo\n"
    assert [h.status for h in r.history] == [status]
    assert r.history[0].url == nginx.https_url + f"/r/{status}"
    assert r.url.endswith("/echo-headers")


def test_head_stays_head(nginx, make_client):
    r = make_client().head(nginx.https_url + "/r/303", follow_redirects=True)
    assert r.status == 200
    assert r.headers["x-echo-method"] == "HEAD"


@pytest.mark.parametrize("status", [307, 308])
def test_307_308_keep_method_and_body(nginx, make_client, status, tmp_path):
    client = make_client()
    r = client.post(nginx.https_url + f"/r/{status}", body=b"x" * 1000, follow_redirects=True)
    assert r.status == 200
    assert r.headers["x-echo-method"] == "POST"
    assert r.content == b"discarded\n"
    path = tmp_path / "body"
    path.write_bytes(b"y" * 100_000)
    with path.open("rb") as f:
        r = client.put(nginx.https_url + f"/r/{status}", body=f, follow_redirects=True)
    assert (r.status, r.headers["x-echo-method"]) == (200, "PUT")


def test_307_body_replayed_byte_for_byte(h2peer, make_client):
    peer = h2peer(routes={"/old": _redirect_to("/new", 307), "/new": "echo"})
    client = make_client(http2_prior_knowledge=True)
    body = io.BytesIO(b"0123456789" * 1000)
    body.read(10)  # the body starts where the file is, and so does the replay
    r = client.post(peer.h2c_url + "/old", body=body, follow_redirects=True)
    assert r.content == b"0123456789" * 999
    assert [q.path for q in peer.requests] == ["/old", "/new"]


def test_307_with_an_iterator_body_cannot_be_replayed(nginx, make_client):
    def gen() -> Iterator[bytes]:
        yield b"chunk"

    with pytest.raises(h2pool.RedirectError, match="replayed") as info:
        make_client().post(nginx.https_url + "/r/307", body=gen(), follow_redirects=True)
    assert info.value.response.status == 307


def test_too_many_redirects(nginx, make_client):
    client = make_client()
    with pytest.raises(h2pool.TooManyRedirects) as info:
        client.get(nginx.https_url + "/r/loop", follow_redirects=True, max_redirects=5)
    assert info.value.response.status == 302
    assert isinstance(info.value, h2pool.RedirectError)
    with pytest.raises(h2pool.TooManyRedirects):
        client.get(nginx.https_url + "/r/loop", follow_redirects=True)  # default 20
    r = client.get(nginx.https_url + "/r/chain3", follow_redirects=True, max_redirects=3)
    assert r.content == b"Hello, world!"
    assert [h.url.rsplit("/", 1)[1] for h in r.history] == ["chain3", "chain2", "chain1"]


def test_client_default_and_per_request_override(nginx, make_client):
    client = make_client(follow_redirects=True)
    assert client.get(nginx.https_url + "/r/302").status == 200
    assert client.get(nginx.https_url + "/r/302", follow_redirects=False).status == 302
    with client.stream("GET", nginx.https_url + "/r/chain1") as r:
        assert r.read() == b"Hello, world!"
        assert len(r.history) == 1


def test_same_origin_keeps_credentials(nginx, make_client):
    r = make_client().get(
        nginx.https_url + "/r/302",
        headers={"authorization": "Bearer s3cret", "cookie": "a=b"},
        follow_redirects=True,
    )
    assert r.headers["x-echo-authorization"] == "Bearer s3cret"
    assert r.headers["x-echo-cookie"] == "a=b"


def test_cross_origin_strips_credentials(h2peer, make_client):
    other = h2peer()
    peer = h2peer(routes={"/go": _redirect_to(other.h2c_url + "/landing")})
    client = make_client(
        http2_prior_knowledge=True, headers={"proxy-authorization": "Basic cHJveHk6cHc="}
    )
    r = client.get(
        peer.h2c_url + "/go",
        headers={"Authorization": "Bearer s3cret", "Cookie": "sid=1", "X-Keep": "yes"},
        follow_redirects=True,
    )
    assert r.content == b"Hello, world!"
    first, landed = peer.requests[0], other.requests[0]
    assert first.header("authorization") == "Bearer s3cret"
    assert first.header("proxy-authorization") == "Basic cHJveHk6cHc="
    assert landed.path == "/landing"
    assert landed.header("x-keep") == "yes"
    for name in ("authorization", "cookie", "proxy-authorization"):
        assert landed.header(name) is None, name


def test_https_to_http_downgrade_is_refused(h2peer, make_client):
    plain = h2peer()
    peer = h2peer(routes={"/go": _redirect_to(plain.h2c_url + "/")}, tls=True)
    client = make_client(http2_prior_knowledge=True)
    with pytest.raises(h2pool.RedirectError, match="https to http") as info:
        client.get(peer.https_url + "/go", follow_redirects=True)
    assert info.value.response.status == 302
    assert plain.requests == []


def test_relative_and_bad_locations(h2peer, make_client):
    peer = h2peer(
        routes={
            "/a/b": _redirect_to("../c?x=1#frag"),
            "/bad": _redirect_to("ftp://example.org/"),
        }
    )
    client = make_client(http2_prior_knowledge=True)
    r = client.get(peer.h2c_url + "/a/b", follow_redirects=True)
    assert r.status == 200
    assert peer.requests[1].path == "/c?x=1"
    with pytest.raises(h2pool.RedirectError, match="ftp"):
        client.get(peer.h2c_url + "/bad", follow_redirects=True)
