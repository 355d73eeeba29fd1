"""Response decompression: gzip/deflate from nginx and scripted peers, br and zstd when
their packages are installed, chains, the chain limit, corrupt and truncated bodies,
raw access, and decompression bombs read with bounded memory in the caller's thread."""

from __future__ import annotations

import gzip
import hashlib
import threading
import zlib
from collections.abc import Callable

import pytest
from servers.h2peer import PeerConnection, Request
from servers.util import rss

import h2pool
from h2pool import _decoders

DATA = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(4096)) * 4  # 512 KiB


def _have(name: str) -> bool:
    return name in _decoders.SUPPORTED


def _compress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "deflate-raw":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if encoding == "br":
        import brotli

        return bytes(brotli.compress(data))
    if encoding == "zstd":
        return bytes(_decoders._zstd.compress(data))
    raise AssertionError(encoding)


def _encode_chain(codings: list[str], data: bytes) -> bytes:
    for coding in codings:  # applied in the order listed (RFC 9110 §8.4)
        data = _compress(coding, data)
    return data


def _serve(body: bytes, encoding: str) -> Callable[[PeerConnection, int, Request], None]:
    def handler(conn: PeerConnection, sid: int, req: Request) -> None:
        conn.respond(sid, 200, body, [("content-encoding", encoding)])

    return handler


def _needs(*codings: str) -> list[pytest.MarkDecorator]:
    missing = [c for c in codings if c in ("br", "zstd") and not _have(c)]
    return [pytest.mark.skip(reason=f"{missing} not installed")] if missing else []


# -- nginx gzip ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/index.html", "/data.json", "/1m"])
@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
def test_nginx_gzip_is_decoded(nginx, content, make_client, path, streamed):
    client = make_client()
    with client.stream("GET", nginx.https_url + "/gzip" + path) as r:
        assert r.headers["content-encoding"] == "gzip"
        body = b"".join(r.iter_bytes(1000)) if streamed else r.content
    assert body == content.data[path]
    r = client.get(nginx.https_url + "/gzip" + path)
    assert r.content == content.data[path]
    if path == "/data.json":
        assert r.json() == {"name": "h2pool", "numbers": [1, 2, 3], "ok": True}


def test_nginx_raw_access_keeps_the_gzip_bytes(nginx, content, make_client):
    client = make_client()
    with client.stream("GET", nginx.https_url + "/gzip/1m") as r:
        raw = b"".join(r.iter_raw())
    assert raw != content.data["/1m"]
    assert gzip.decompress(raw) == content.data["/1m"]
    r = client.get(nginx.https_url + "/gzip/index.html")
    assert gzip.decompress(r.read_raw()) == content.data["/index.html"]


def test_user_accept_encoding_wins(nginx, content, make_client):
    client = make_client()
    r = client.get(nginx.https_url + "/gzip/index.html", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers
    assert r.content == content.data["/index.html"]
    client2 = make_client(headers={"accept-encoding": "identity"})
    assert "content-encoding" not in client2.get(nginx.https_url + "/gzip/index.html").headers


def test_head_and_304_are_not_decoded(nginx, make_client):
    client = make_client()
    r = client.head(nginx.https_url + "/gzip/index.html")
    assert r.headers["content-encoding"] == "gzip"
    assert r.content == b""
    etag = r.headers["etag"]
    r = client.get(nginx.https_url + "/gzip/index.html", headers={"if-none-match": etag})
    assert r.status == 304
    assert r.content == b""


# -- scripted peer: every coding, chains, limits -------------------------------------------


def test_accept_encoding_names_only_what_we_decode(h2peer, make_client):
    peer = h2peer()
    make_client(http2_prior_knowledge=True).get(peer.h2c_url + "/")
    sent = peer.requests[0].header("accept-encoding")
    assert sent is not None
    assert [t.strip() for t in sent.split(",")] == list(_decoders.SUPPORTED)
    assert {"gzip", "deflate"} <= set(_decoders.SUPPORTED)


@pytest.mark.parametrize(
    "codings",
    [
        pytest.param(["gzip"], id="gzip"),
        pytest.param(["deflate"], id="deflate"),
        pytest.param(["br"], id="br", marks=_needs("br")),
        pytest.param(["zstd"], id="zstd", marks=_needs("zstd")),
        pytest.param(["gzip", "deflate", "gzip"], id="chain3"),
        pytest.param(
            ["gzip", "br", "zstd", "deflate", "gzip"], id="chain5", marks=_needs("br", "zstd")
        ),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
def test_codings_and_chains(h2peer, make_client, codings, streamed):
    body = _encode_chain(codings, DATA)
    peer = h2peer(routes={"/x": _serve(body, ", ".join(codings))})
    client = make_client(http2_prior_knowledge=True)
    r = client.request("GET", peer.h2c_url + "/x", stream=streamed)
    parts = []
    while chunk := r.read(4096):
        assert len(chunk) <= 4096
        parts.append(chunk)
    assert b"".join(parts) == DATA
    r = client.request("GET", peer.h2c_url + "/x", stream=streamed)
    assert r.content == DATA
    assert r.text == DATA.decode("utf-8", errors="replace")


def test_raw_deflate_and_multi_member_gzip(h2peer, make_client):
    peer = h2peer(
        routes={
            "/raw": _serve(_compress("deflate-raw", DATA), "deflate"),
            "/members": _serve(gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]), "gzip"),
            "/xgzip": _serve(gzip.compress(DATA), "x-gzip"),
            "/split": _serve(gzip.compress(DATA), "identity, gzip"),
        }
    )
    client = make_client(http2_prior_knowledge=True)
    for path in ("/raw", "/members", "/xgzip", "/split"):
        assert client.get(peer.h2c_url + path).content == DATA, path


def test_unknown_coding_is_passed_through(h2peer, make_client):
    peer = h2peer(routes={"/x": _serve(b"\x1f\x9dLZW", "compress")})
    r = make_client(http2_prior_knowledge=True).get(peer.h2c_url + "/x")
    assert r.content == b"\x1f\x9dLZW"


def test_six_codings_are_refused(h2peer, make_client):
    body = _encode_chain(["gzip"] * 6, b"hi")
    peer = h2peer(routes={"/x": _serve(body, ", ".join(["gzip"] * 6))})
    client = make_client(http2_prior_knowledge=True)
    r = client.get(peer.h2c_url + "/x")
    with pytest.raises(h2pool.DecodingError, match="at most 5"):
        r.content  # noqa: B018
    assert issubclass(h2pool.DecodingError, h2pool.ProtocolError)
    with client.stream("GET", peer.h2c_url + "/x") as r, pytest.raises(h2pool.DecodingError):
        r.read(10)
    assert client.get(peer.h2c_url + "/x").read_raw() == body  # raw access still works
    # Asked again, the same response refuses again (it never hands out the raw body).
    r = client.get(peer.h2c_url + "/x")
    for _ in range(2):
        with pytest.raises(h2pool.DecodingError, match="at most 5"):
            r.read(10)


@pytest.mark.parametrize("codings", [["gzip"], ["deflate"]])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_bad_bodies_raise_decoding_error(h2peer, make_client, codings, damage):
    good = _encode_chain(codings, DATA)
    body = good[: len(good) // 2] if damage == "truncated" else b"\x00garbage" + good
    peer = h2peer(routes={"/x": _serve(body, codings[0])})
    client = make_client(http2_prior_knowledge=True)
    with pytest.raises(h2pool.DecodingError):
        client.get(peer.h2c_url + "/x").content  # noqa: B018
    with client.stream("GET", peer.h2c_url + "/x") as r, pytest.raises(h2pool.DecodingError):
        for _ in r.iter_bytes(65536):
            pass
    assert client.get(peer.h2c_url + "/").content == b"Hello, world!"  # connection fine


def test_decoding_runs_on_the_callers_thread(h2peer, make_client, monkeypatch):
    seen: set[str] = set()
    pull = _decoders.ChainDecoder.pull

    def spy(self: _decoders.ChainDecoder, limit: int) -> bytes:
        seen.add(threading.current_thread().name)
        return pull(self, limit)

    monkeypatch.setattr(_decoders.ChainDecoder, "pull", spy)
    peer = h2peer(routes={"/x": _serve(gzip.compress(DATA), "gzip")})
    client = make_client(http2_prior_knowledge=True)
    assert client.get(peer.h2c_url + "/x").content == DATA
    with client.stream("GET", peer.h2c_url + "/x") as r:
        assert b"".join(r.iter_bytes()) == DATA
    assert seen == {threading.current_thread().name}


# -- bombs ---------------------------------------------------------------------------------


def _bomb(coding: str, gib: int) -> bytes:
    """``gib`` GiB of zeros, compressed (cheaply: the compressor sees 1 MiB at a time)."""
    zeros = bytes(1 << 20)
    if coding == "gzip":
        member = gzip.compress(zeros, 9)  # one 1 MiB member, ~1 KiB; RFC 1952 allows many
        return member * (gib << 10)
    if coding == "br":
        import brotli

        c = brotli.Compressor(quality=1)
        return b"".join([c.process(zeros) for _ in range(gib << 10)] + [c.finish()])
    c = _decoders._zstd.ZstdCompressor(level=1)
    return bytes(b"".join([c.compress(zeros) for _ in range(gib << 10)] + [c.flush()]))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "coding,gib",
    [
        pytest.param("gzip", 4, id="gzip-4GiB"),
        pytest.param("br", 2, id="br-2GiB", marks=_needs("br")),
        pytest.param("zstd", 2, id="zstd-2GiB", marks=_needs("zstd")),
    ],
)
def test_bomb_streamed_in_64k_reads_keeps_memory_bounded(h2peer, make_client, coding, gib):
    body = _bomb(coding, gib)
    assert len(body) < 8 << 20
    peer = h2peer(routes={"/bomb": _serve(body, coding)})
    client = make_client(http2_prior_knowledge=True)
    base = rss()
    peak = base
    total = 0
    with client.stream("GET", peer.h2c_url + "/bomb") as r:
        n = 0
        while chunk := r.read(65536):
            assert len(chunk) <= 65536
            total += len(chunk)
            n += 1
            if n % 1024 == 0:
                peak = max(peak, rss())
    assert total == gib << 30
    assert peak - base < 64 << 20, f"RSS grew by {(peak - base) >> 20} MiB"


def test_a_decoding_error_is_raised_again_not_hidden(h2peer, make_client):
    """After a truncated body raised DecodingError, reading on must raise again, not
    return b"" as if the body had ended cleanly."""
    good = _encode_chain(["gzip"], DATA)
    peer = h2peer(routes={"/x": _serve(good[: len(good) // 2], "gzip")})
    r = make_client(http2_prior_knowledge=True).get(peer.h2c_url + "/x")
    for _ in range(2):
        with pytest.raises(h2pool.DecodingError):
            r.read()


def test_buffered_body_iterates_in_chunks_exactly(h2peer, make_client):
    """A buffered response read in small chunks yields exactly its body (read by offset,
    not by slicing the rest off each time)."""
    body = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4
    peer = h2peer(routes={"/x": _serve(body, "identity")})
    r = make_client(http2_prior_knowledge=True).get(peer.h2c_url + "/x")
    chunks = list(r.iter_bytes(65536))
    assert [len(c) for c in chunks] == [65536] * 16 + [4]
    assert b"".join(chunks) == body
    assert r.read() == b""
