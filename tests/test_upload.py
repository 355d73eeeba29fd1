"""Streaming request bodies: sources, hashes, backpressure, failures, early answers.

Uploads go to :class:`~servers.hashpeer.HashPeer`, a scripted h2 server
that hashes each body as it arrives (it keeps nothing, so the process's RSS measures
the client) and answers with what it received; concurrency with downloads runs
against nghttpd ``--echo-upload``; nginx answers a PUT to ``/204`` without reading
the body. Every body is hash-checked on the server side.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.exceptions
import h2.settings
import pytest
from servers.h2peer import PeerConnection, Request
from servers.util import rss, wait_until

import h2pool

MIB = 1 << 20
KIB = 1 << 10
UPLOAD = 64 * MIB
CANCEL = int(h2.errors.ErrorCodes.CANCEL)
NO_ERROR = int(h2.errors.ErrorCodes.NO_ERROR)

_BASE = random.Random(7).randbytes(MIB)


def chunks(total: int, size: int = MIB, seed: int = 0) -> Iterator[bytes]:
    """Deterministic, pairwise-distinct chunks (a counter stamped on a random block)."""
    for i in range(total // size):
        yield (seed * 1_000_003 + i).to_bytes(8, "big") + _BASE[8:size]


def sha256_of(total: int, size: int = MIB, seed: int = 0) -> str:
    digest = hashlib.sha256()
    for chunk in chunks(total, size, seed):
        digest.update(chunk)
    return digest.hexdigest()


UPLOAD_SHA = sha256_of(UPLOAD)


class ReadOnly:
    """A file-like source with nothing but ``read()``: its size is unknown."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        out = self._data[self._pos : end].tobytes()
        self._pos += len(out)
        return out


class Counted:
    """An iterable of 64 KiB chunks that counts how many were pulled."""

    def __init__(self, total: int, size: int = 64 * KIB) -> None:
        self.total = total // size
        self.size = size
        self.pulled = 0
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self.total):
            with self._lock:
                self.pulled += 1
            yield i.to_bytes(8, "big") + _BASE[8 : self.size]


def pump_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "h2pool-body-pump"]


# -- 64 MiB from each kind of source ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "source,via",
    [
        ("bytes", "request"),
        ("file", "request"),
        ("generator", "request"),
        ("readonly", "request"),
        ("file", "submit"),
        ("generator", "submit"),
    ],
)
def test_upload_64m_server_hash(hashpeer, make_client, tmp_path, source, via):
    """The server's sha256 of what it received equals ours; Content-Length is sent
    when the size is known (bytes, a real file) and not otherwise."""
    peer = hashpeer(tls=True)
    client = make_client()
    url = peer.https_url + "/upload"
    body: Any
    if source == "bytes":
        body = b"".join(chunks(UPLOAD))
    elif source == "file":
        path = tmp_path / "body"
        with path.open("wb") as f:
            for chunk in chunks(UPLOAD):
                f.write(chunk)
        body = path.open("rb")
    elif source == "readonly":
        body = ReadOnly(b"".join(chunks(UPLOAD)))
    else:
        body = chunks(UPLOAD)
    try:
        if via == "request":
            r = client.put(url, body=body)
        else:
            r = client.submit("PUT", url, body=body).result(timeout=100)
    finally:
        if source == "file":
            body.close()
    assert r.status == 200
    seen = r.json()
    assert seen["length"] == UPLOAD
    assert seen["sha256"] == UPLOAD_SHA
    known = source in ("bytes", "file")
    assert seen["content_length"] == (str(UPLOAD) if known else None)
    assert peer.requests_for("/upload")[0].complete
    assert client.stats()["connections_opened"] == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_upload_memory_stays_bounded(hashpeer, make_client):
    """A 256 MiB generator upload: RSS, sampled inside the generator, grows < 32 MiB."""
    total = 256 * MIB
    peer = hashpeer()
    client = make_client(http2_prior_knowledge=True)
    assert client.post(peer.h2c_url + "/warm", body=b"x" * MIB).json()["length"] == MIB
    base = rss()
    peak = [base]

    def body() -> Iterator[bytes]:
        for i, chunk in enumerate(chunks(total, seed=1)):
            if i % 16 == 0:
                peak.append(rss())
            yield chunk

    r = client.post(peer.h2c_url + "/big", body=body())
    peak.append(rss())
    assert r.json() == {"sha256": sha256_of(total, seed=1), "length": total, "content_length": None}
    assert max(peak) - base < 32 * MIB, [(p - base) // KIB for p in peak]


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_concurrent_uploads_and_downloads_one_connection(nghttpd_echo, content, make_client):
    """4 uploads of 16 MiB (echoed back by nghttpd) and 4 downloads of 100 MiB share
    one connection; every body hashes right."""
    client = make_client(timeout=h2pool.Timeout(10.0, read=60.0, write=60.0))
    base = nghttpd_echo.https_url
    assert client.get(base + "/13b").status == 200
    up = 16 * MIB
    uploads = [
        client.submit("POST", base + "/echo", body=chunks(up, seed=10 + i)) for i in range(2)
    ] + [
        client.submit("PUT", base + "/echo", body=b"".join(chunks(up, seed=10 + i)))
        for i in range(2, 4)
    ]
    downloads = [client.submit("GET", base + "/100m") for _ in range(4)]
    for i, fut in enumerate(uploads):
        r = fut.result(timeout=150)
        assert r.status == 200
        assert len(r.content) == up
        assert hashlib.sha256(r.content).hexdigest() == sha256_of(up, seed=10 + i)
    for fut in downloads:
        r = fut.result(timeout=150)
        assert hashlib.sha256(r.content).hexdigest() == content.sha256["/100m"]
    stats = client.stats()
    assert stats["connections"] == 1
    assert stats["connections_opened"] == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_big_upload_does_not_starve_small_requests(hashpeer, make_client):
    """DATA is scheduled round-robin: small requests on the same connection complete
    while a 256 MiB upload is still running."""
    total = 256 * MIB
    peer = hashpeer()
    client = make_client(http2_prior_knowledge=True)
    url = peer.h2c_url
    running = threading.Event()

    def body() -> Iterator[bytes]:
        for i, chunk in enumerate(chunks(total, seed=2)):
            if i == 8:
                running.set()
            yield chunk

    upload = client.submit("PUT", url + "/big", body=body())
    assert running.wait(30)
    for i in range(5):
        small = client.post(url + f"/small{i}", body=b"small")
        assert small.json()["sha256"] == hashlib.sha256(b"small").hexdigest()
    assert not upload.done(), "the small requests waited for the whole upload"
    assert upload.result(timeout=100).json()["sha256"] == sha256_of(total, seed=2)
    assert len(peer.connections) == 1


# -- a failing body source --------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("via", ["request", "submit"])
def test_generator_raising_fails_only_that_request(hashpeer, make_client, via):
    """RequestBodyError chained to the user's exception; the stream is reset, the
    server never sees END_STREAM, and the connection serves the next request."""
    peer = hashpeer()
    client = make_client(http2_prior_knowledge=True)
    url = peer.h2c_url
    boom = ValueError("the disk is on fire")

    def body() -> Iterator[bytes]:
        yield from chunks(4 * MIB, size=64 * KIB)
        raise boom

    with pytest.raises(h2pool.RequestBodyError) as info:
        if via == "request":
            client.post(url + "/fail", body=body())
        else:
            client.submit("POST", url + "/fail", body=body()).result(timeout=30)
    assert info.value.__cause__ is boom
    req = peer.requests_for("/fail")[0]
    assert peer.wait_for(lambda p: any(x.stream_id == req.stream_id for x in p.resets))
    assert [x.error_code for x in peer.resets] == [CANCEL]
    assert not req.complete
    assert len(req.body) <= 4 * MIB
    after = client.post(url + "/after", body=b"still here")
    assert after.json()["sha256"] == hashlib.sha256(b"still here").hexdigest()
    assert len(peer.connections) == 1
    assert client.stats()["connections_opened"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("actual", [8 * MIB, 3 * MIB], ids=["longer", "shorter"])
def test_declared_length_disagrees_with_generator(hashpeer, make_client, actual):
    """Content-Length 4 MiB, generator of 8 or 3 MiB: RequestBodyError; the server never
    receives more than declared nor an END_STREAM, and the connection carries on."""
    declared = 4 * MIB
    peer = hashpeer()
    client = make_client(http2_prior_knowledge=True)
    url = peer.h2c_url
    with pytest.raises(h2pool.RequestBodyError):
        client.put(
            url + "/cl",
            body=chunks(actual, size=64 * KIB),
            headers={"content-length": str(declared)},
        )
    req = peer.requests_for("/cl")[0]
    assert req.header("content-length") == str(declared)
    assert peer.wait_for(lambda p: any(x.stream_id == req.stream_id for x in p.resets))
    assert not req.complete
    assert len(req.body) <= declared
    if actual < declared:
        assert len(req.body) <= actual
    assert client.get(url + "/after").json()["length"] == 0
    assert len(peer.connections) == 1


# -- a server that answers before reading the body ----------------------------------------


def _answer_at_headers(conn: PeerConnection, sid: int, req: Request) -> None:
    conn.respond(sid, 200, b"early")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("via", ["request", "submit"])
def test_early_answer_stops_the_upload(hashpeer, make_client, via):
    """The server answers 200 + END_STREAM right after the HEADERS of a 64 MiB PUT:
    the response is delivered, the stream is reset with NO_ERROR (RFC 9113 §8.1) and
    the generator stops being pulled long before its end."""
    peer = hashpeer(routes={"/early": "stall"}, early_routes={"/early": _answer_at_headers})
    client = make_client(http2_prior_knowledge=True)
    url = peer.h2c_url
    source = Counted(UPLOAD)
    t0 = time.monotonic()
    if via == "request":
        r = client.put(url + "/early", body=source)
    else:
        r = client.submit("PUT", url + "/early", body=source).result(timeout=30)
    elapsed = time.monotonic() - t0
    pulled = source.pulled
    assert (r.status, r.content) == (200, b"early")
    for t in pump_threads():
        t.join(10)  # the submit() pump must stop too
    assert not pump_threads()
    assert source.pulled <= pulled + 1
    assert source.pulled < source.total // 8, (source.pulled, source.total, elapsed)
    req = peer.requests_for("/early")[0]
    assert peer.wait_for(lambda p: any(x.stream_id == req.stream_id for x in p.resets))
    assert [x.error_code for x in peer.resets] == [NO_ERROR]
    assert not req.complete
    assert client.get(url + "/after").json()["length"] == 0
    assert len(peer.connections) == 1


@pytest.mark.timeout(60)
def test_early_answer_from_nginx(nginx, make_client):
    """nginx answers ``return 204`` without reading a PUT body."""
    client = make_client()
    source = Counted(UPLOAD)
    r = client.put(nginx.https_url + "/204", body=source)
    assert r.status == 204
    assert r.content == b""
    assert source.pulled < source.total // 8
    assert client.get(nginx.https_url + "/13b").content == b"Hello, world!"
    assert client.stats()["connections_opened"] == 1


def _as_source(data: bytes, source: str) -> Any:
    if source == "bytearray":
        return bytearray(data)
    if source == "memoryview":
        return memoryview(bytearray(data))
    if source == "generator":
        return (data[i : i + 700 * KIB] for i in range(0, len(data), 700 * KIB))
    return data


@pytest.mark.timeout(90)
@pytest.mark.parametrize("version", ["HTTP/2", "HTTP/1.1"])
@pytest.mark.parametrize("source", ["bytes", "bytearray", "memoryview", "generator"])
def test_large_bodies_reach_nginx_byte_exact_among_small_requests(
    nginx, make_client, source, version
):
    """Large payloads are queued by reference: over HTTP/2 between the frames of the
    other requests on the connection (nginx allows DATA frames of megabytes), over
    HTTP/1.1 between h11's framing (a generator's body goes chunked). nginx stores each
    PUT body; a GET of it must hash to what was sent, and every small GET must succeed."""
    client = make_client()
    base = nginx.https_url if version == "HTTP/2" else nginx.http1_tls_url
    bodies = {
        f"/put/{version[5]}-{source}-{i}": random.Random(i).randbytes(size)
        for i, size in enumerate((3 * MIB + 1, 9 * MIB + 17, 200 * KIB))
    }
    puts = [client.submit("PUT", base + p, body=_as_source(d, source)) for p, d in bodies.items()]
    gets = [client.submit("GET", base + "/13b") for _ in range(90 if version == "HTTP/2" else 8)]
    done = [f.result(timeout=60) for f in puts]
    assert [(r.status in (201, 204), r.http_version) for r in done] == [(True, version)] * 3
    assert {f.result(timeout=60).content for f in gets} == {b"Hello, world!"}
    for path, data in bodies.items():
        got = client.get(base + path).content
        assert (len(got), hashlib.sha256(got).hexdigest()) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
    if version == "HTTP/2":
        assert client.stats()["connections_opened"] == 1


@pytest.mark.timeout(60)
def test_a_frame_sent_by_reference_stays_ahead_of_the_rest_of_its_turn(h2peer, make_client):
    """One flush holding a large DATA frame sent by reference and, after it, the small
    last frame of the same body (and other streams' frames): the wire must keep that
    order. The peer allows 64 KiB frames and opens both windows wide, so a body of one
    full frame plus 100 bytes goes out in one turn; were the small frame written ahead
    of the large one, the peer would see a wrong body length and reset the connection."""

    def widen(conn: PeerConnection, sid: int, req: Request) -> None:
        conn.h2.max_inbound_frame_size = 64 * KIB  # our SETTINGS replaced h2's defaults
        conn.h2.increment_flow_control_window(1 << 30)
        conn.respond(sid, 200, b"wide")

    peer = h2peer(
        routes={"/widen": widen},
        default="echo",
        settings={
            h2.settings.SettingCodes.MAX_FRAME_SIZE: 64 * KIB,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1,
        },
    )
    client = make_client(http2_prior_knowledge=True)
    assert client.get(peer.h2c_url + "/widen").content == b"wide"
    for round_ in range(5):
        bodies = [
            random.Random(round_ * 8 + i).randbytes(64 * KIB + 100 + 37 * i) for i in range(4)
        ]
        posts = [
            client.submit("POST", peer.h2c_url + f"/p{i}", body=b) for i, b in enumerate(bodies)
        ]
        gets = [client.submit("GET", peer.h2c_url + "/g") for _ in range(10)]
        assert [hashlib.sha256(f.result(timeout=20).content).hexdigest() for f in posts] == [
            hashlib.sha256(b).hexdigest() for b in bodies
        ]
        assert [len(f.result(timeout=20).content) for f in gets] == [0] * 10
    assert peer.errors == []
    assert client.stats()["connections_opened"] == 1


def _read_then_reset(listener: socket.socket, limit: int, h2c: bool) -> None:
    """A scripted server: accept one connection, take ``limit`` bytes of the request
    (over h2c with wide windows, or as plain bytes for HTTP/1.1), then reset the TCP
    connection (SO_LINGER 0) mid-upload."""
    sock, _ = listener.accept()
    with sock:
        conn = None
        if h2c:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            conn.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1},
            )
            conn.initiate_connection()
            conn.increment_flow_control_window(1 << 30)
            sock.sendall(conn.data_to_send())
        received = 0
        while received < limit:
            data = sock.recv(1 << 16)
            if not data:
                return
            received += len(data)
            if conn is not None:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    conn.receive_data(data)
                sock.sendall(conn.data_to_send())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", ["HTTP/2", "HTTP/1.1"])
@pytest.mark.parametrize("via", ["request", "submit"])
def test_a_failed_uploads_body_is_let_go_without_the_cyclic_gc(make_client, via, version):
    """A 64 MiB body lost with its connection mid-upload is freed once the request has
    failed, with the cyclic garbage collector off: nothing on the I/O thread (the closed
    connection's output, an error's traceback, the future's cancel hook) keeps it."""
    listener = socket.create_server(("127.0.0.1", 0))
    h2c = version == "HTTP/2"
    server = threading.Thread(target=_read_then_reset, args=(listener, MIB, h2c), daemon=True)
    server.start()
    client = make_client(http2_prior_knowledge=True) if h2c else make_client(http1=True)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/up"
    body = random.Random(3).randbytes(UPLOAD)
    baseline = sys.getrefcount(body)
    gc.disable()
    try:
        if via == "request":
            with pytest.raises(h2pool.ConnectionLost):
                client.post(url, body=body)
        else:
            fut = client.submit("POST", url, body=body)
            with pytest.raises(h2pool.ConnectionLost):
                fut.result(timeout=30)
        # The caller wakes as the request fails; the I/O thread lets go just after.
        wait_until(lambda: sys.getrefcount(body) == baseline, timeout=10)
    finally:
        gc.enable()
        listener.close()
    server.join(10)
