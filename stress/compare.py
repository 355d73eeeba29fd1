#!/usr/bin/env python3
"""h2pool against the HTTP clients people pick today, measured in the same run.

    python stress/compare.py --reps 3   # full run, about 11 minutes
    python stress/compare.py --quick    # about 2 minutes

Starts the throw-away nginx of ``stress/_servers.py`` (HTTP/2 and HTTP/1.1 over TLS
on loopback, ALPN picks) and measures, each client in a fresh subprocess:

(a) small GETs of the 13-byte ``/13b`` from 1, 8 and 64 caller threads for a fixed
    duration: requests/s, errors, connections nginx accepted, the worker process's
    CPU seconds (user + system, every thread) per 1000 requests, and the p50 and p99
    latency of one request (each thread times its own calls, no lock);
(b) one 100 MiB download of ``/100m`` (the best of two per worker): MB/s (10^6
    bytes/s), sha256 checked;
(c) one 64 MiB upload (the best of two per worker), ``PUT /upload/NAME`` of the same
    bytes from memory for every client (nginx's WebDAV stores the body before it
    answers): MB/s; after each worker the parent checks the size and sha256 of every
    file nginx stored, then deletes them.

Clients: h2pool (one shared ``h2pool.Client``), httpx (one shared
``httpx.Client(http2=True)``), niquests (one shared ``Session``), requests (one
shared ``Session`` with ``HTTPAdapter(pool_maxsize=threads)``), urllib3 (one
``PoolManager(maxsize=threads)``), pycurl (one ``Curl`` handle per thread,
``CURL_HTTP_VERSION_2TLS``), curl_cffi (one ``Session`` per thread, HTTP/2),
pyreqwest (one shared ``SyncClient``, ``http2(True)``) and pyqwest (one shared
``SyncClient``). niquests depends on urllib3-future, which installs itself as the
``urllib3`` package; so requests and urllib3 run in a separate virtual environment
(``stress/results/compare-venv``, made on first use) with the real urllib3.

Clients run round-robin inside each thread count, the order rotating between thread
counts and repetitions. Each table shows the median of ``--reps`` and its ratio to
h2pool's median (h2pool = 1.00); every repetition is kept in
``stress/results/compare-<timestamp>.json``. ``--no-download`` and ``--no-upload``
skip (b) and (c). See stress/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the working-tree h2pool, not an installed one
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _workers  # noqa: E402  (stdlib only: the venv's python imports it too)

CLIENTS = (
    "h2pool",
    "httpx",
    "niquests",
    "requests",
    "urllib3",
    "pycurl",
    "curl_cffi",
    "pyreqwest",
    "pyqwest",
)
VENV_CLIENTS = ("requests", "urllib3")  # measured with the real urllib3
# Not a client: h2pool's design with no protocol library (stress/_floor.py), small GETs
# only, measured when asked for (--clients floor,h2pool,pyreqwest).
OPT_IN = ("floor",)
VENV = HERE / "results" / "compare-venv"
SMALL_BODY = b"hello, world\n"
BIG_SIZE = 100 * 1024 * 1024
MIB = 1024 * 1024
UPLOAD_SIZE = 64 * MIB
UPLOAD_SEED = 64  # of the pseudo-random MiB every client uploads (see upload_body)
REQ_TIMEOUT = 20.0
UPLOAD_TIMEOUT = 120.0  # per PUT: 64 MiB must not fail on a loaded machine at 1 MB/s
READ_CHUNK = MIB  # for the clients whose streaming API asks for a size
TRANSFER_RUNS = 2  # downloads / uploads per worker, the best kept

UNREPORTED = "unreported"  # a response that does not say its protocol
Fetch = Callable[[str], str]  # GET url, check status 200 + 13 bytes, return the protocol
Upload = Callable[[str, bytes], str]  # PUT the bytes to url, check 201/204, return the protocol


def _mod(name: str) -> Any:
    """Import a client module as Any: stubs differ by client and by interpreter."""
    return importlib.import_module(name)


def _check(status: int, body: bytes | bytearray | memoryview) -> None:
    if status != 200 or bytes(body) != SMALL_BODY:
        raise RuntimeError(f"bad response: status={status} len={len(body)}")


def _check_put(status: int) -> None:
    # nginx's WebDAV PUT answers 201 for a new file (204 would mean it overwrote one)
    if status not in (201, 204):
        raise RuntimeError(f"PUT answered {status}")


def upload_body() -> bytes:
    """The 64 MiB every client uploads: one pseudo-random MiB (fixed seed), repeated.

    Built the same way in each worker and in the parent, so the parent knows the
    sha256 nginx must have stored without 64 MiB crossing a pipe; random, so nothing
    on the way can shrink it.
    """
    import random

    return random.Random(UPLOAD_SEED).randbytes(MIB) * (UPLOAD_SIZE // MIB)


def _curl_proto(v: int) -> str:
    # CURLINFO_HTTP_VERSION: CURL_HTTP_VERSION_1_0 = 1, 1_1 = 2, 2_0 = 3, 3 = 30
    return {1: "HTTP/1.0", 2: "HTTP/1.1", 3: "HTTP/2", 30: "HTTP/3"}.get(v, f"curl {v}")


def _int_proto(v: Any) -> str:
    # urllib3 / niquests report 10, 11, 20, 30
    return {10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2", 30: "HTTP/3"}.get(v, repr(v))


def _text_proto(v: Any) -> str:
    s = str(v).upper().replace("HTTPVERSION.", "")
    return {
        "HTTP/2.0": "HTTP/2",
        "HTTP2": "HTTP/2",
        "HTTP/2": "HTTP/2",
        "HTTP1": "HTTP/1.1",
        "HTTP/1.1": "HTTP/1.1",
        "HTTP3": "HTTP/3",
    }.get(s, str(v))


# --------------------------------------------------------------------------- clients
# make(ca, threads) -> Client(per_thread, close, upload). Each caller thread calls
# per_thread() once, before the clock starts, and gets its fetch: the same function for
# a shared client, a fresh handle for the clients whose handles may not be shared
# (pycurl, curl_cffi). upload(url, data) PUTs on the same client, or on the first
# thread's handle, so the upload worker warms it with one fetch first.


class Client:
    def __init__(
        self, per_thread: Callable[[], Fetch], close: Callable[[], None], upload: Upload
    ) -> None:
        self.per_thread = per_thread
        self.close = close
        self.upload = upload


def _shared(fetch: Fetch, close: Callable[[], object], upload: Upload) -> Client:
    def close_it() -> None:
        close()

    return Client(lambda: fetch, close_it, upload)


def make_h2pool(ca: str, threads: int) -> Client:
    h2pool = _mod("h2pool")
    client = h2pool.Client(verify=ca, timeout=REQ_TIMEOUT)

    def fetch(url: str) -> str:
        r = client.get(url)
        _check(r.status, r.content)
        return str(r.http_version)

    def upload(url: str, data: bytes) -> str:
        r = client.put(url, body=data, timeout=UPLOAD_TIMEOUT)
        _check_put(r.status)
        return str(r.http_version)

    return _shared(fetch, client.close, upload)


def make_httpx(ca: str, threads: int) -> Client:
    import ssl

    httpx = _mod("httpx")
    client = httpx.Client(
        http2=True, verify=ssl.create_default_context(cafile=ca), timeout=REQ_TIMEOUT
    )

    def fetch(url: str) -> str:
        r = client.get(url)
        _check(r.status_code, r.content)
        return str(r.http_version)

    def upload(url: str, data: bytes) -> str:
        r = client.put(url, content=data, timeout=UPLOAD_TIMEOUT)
        _check_put(r.status_code)
        return str(r.http_version)

    return _shared(fetch, client.close, upload)


def make_niquests(ca: str, threads: int) -> Client:
    niquests = _mod("niquests")
    session = niquests.Session()

    def fetch(url: str) -> str:
        r = session.get(url, verify=ca, timeout=REQ_TIMEOUT)
        _check(r.status_code or 0, r.content or b"")
        return _int_proto(r.raw.version if r.raw is not None else None)

    def upload(url: str, data: bytes) -> str:
        r = session.put(url, data=data, verify=ca, timeout=UPLOAD_TIMEOUT)
        _check_put(r.status_code or 0)
        return _int_proto(r.raw.version if r.raw is not None else None)

    return _shared(fetch, session.close, upload)


def make_requests(ca: str, threads: int) -> Client:
    requests = _mod("requests")
    adapters = _mod("requests.adapters")
    session = requests.Session()
    session.mount("https://", adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads))

    def fetch(url: str) -> str:
        # verify= per request: a Session.verify loses to REQUESTS_CA_BUNDLE in the env
        r = session.get(url, verify=ca, timeout=REQ_TIMEOUT)
        _check(r.status_code, r.content)
        return _int_proto(r.raw.version)

    def upload(url: str, data: bytes) -> str:
        r = session.put(url, data=data, verify=ca, timeout=UPLOAD_TIMEOUT)
        _check_put(r.status_code)
        return _int_proto(r.raw.version)

    return _shared(fetch, session.close, upload)


def make_urllib3(ca: str, threads: int) -> Client:
    urllib3 = _mod("urllib3")
    pm = urllib3.PoolManager(
        maxsize=threads, cert_reqs="CERT_REQUIRED", ca_certs=ca, timeout=REQ_TIMEOUT
    )

    def fetch(url: str) -> str:
        r = pm.request("GET", url)
        _check(r.status, r.data)
        return _int_proto(r.version)

    def upload(url: str, data: bytes) -> str:
        r = pm.request("PUT", url, body=data, timeout=UPLOAD_TIMEOUT)
        _check_put(r.status)
        return _int_proto(r.version)

    return _shared(fetch, pm.clear, upload)


def make_pycurl(ca: str, threads: int) -> Client:
    pycurl = _mod("pycurl")
    handles: list[Any] = []
    lock = threading.Lock()

    def per_thread() -> Fetch:
        c = pycurl.Curl()
        c.setopt(pycurl.CAINFO, ca)
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        c.setopt(pycurl.TIMEOUT_MS, int(REQ_TIMEOUT * 1000))
        c.setopt(pycurl.NOSIGNAL, 1)  # threads: no SIGALRM for timeouts
        with lock:
            handles.append(c)
        chunks: list[bytes] = []
        c.setopt(pycurl.WRITEFUNCTION, chunks.append)

        def fetch(url: str) -> str:
            chunks.clear()
            c.setopt(pycurl.URL, url)
            c.perform()
            _check(c.getinfo(pycurl.RESPONSE_CODE), b"".join(chunks))
            return _curl_proto(c.getinfo(pycurl.INFO_HTTP_VERSION))

        return fetch

    def upload(url: str, data: bytes) -> str:
        # pycurl's documented PUT: UPLOAD + a file-like READDATA + its size (without
        # INFILESIZE libcurl would send the body chunked over HTTP/1.1).
        c = handles[0]
        c.setopt(pycurl.UPLOAD, 1)
        c.setopt(pycurl.READDATA, io.BytesIO(data))
        c.setopt(pycurl.INFILESIZE_LARGE, len(data))
        c.setopt(pycurl.TIMEOUT_MS, int(UPLOAD_TIMEOUT * 1000))
        c.setopt(pycurl.URL, url)
        try:
            c.perform()
        finally:  # the handle GETs again afterwards
            c.setopt(pycurl.UPLOAD, 0)
            c.setopt(pycurl.TIMEOUT_MS, int(REQ_TIMEOUT * 1000))
        _check_put(c.getinfo(pycurl.RESPONSE_CODE))
        return _curl_proto(c.getinfo(pycurl.INFO_HTTP_VERSION))

    def close() -> None:
        for c in handles:
            c.close()

    return Client(per_thread, close, upload)


def make_curl_cffi(ca: str, threads: int) -> Client:
    cr = _mod("curl_cffi.requests")
    version = _mod("curl_cffi").CurlHttpVersion.V2TLS
    sessions: list[Any] = []
    lock = threading.Lock()

    def per_thread() -> Fetch:
        s = cr.Session(verify=ca, http_version=version, timeout=REQ_TIMEOUT)
        with lock:
            sessions.append(s)

        def fetch(url: str) -> str:
            r = s.get(url)
            _check(r.status_code, r.content)
            return _curl_proto(r.http_version)

        return fetch

    def upload(url: str, data: bytes) -> str:
        r = sessions[0].put(url, data=data, timeout=UPLOAD_TIMEOUT)
        _check_put(r.status_code)
        return _curl_proto(r.http_version)

    def close() -> None:
        for s in sessions:
            s.close()

    return Client(per_thread, close, upload)


def make_pyreqwest(ca: str, threads: int) -> Client:
    from datetime import timedelta

    builder = _mod("pyreqwest.client").SyncClientBuilder()
    client = (
        builder.add_root_certificate_pem(Path(ca).read_bytes())
        .http2(True)  # off by default in pyreqwest; with it ALPN offers h2
        .timeout(timedelta(seconds=REQ_TIMEOUT))
        .build()
    )

    def fetch(url: str) -> str:
        r = client.get(url).build().send()
        _check(r.status, r.bytes())
        return _text_proto(r.version)

    def upload(url: str, data: bytes) -> str:
        req = client.put(url).body_bytes(data).timeout(timedelta(seconds=UPLOAD_TIMEOUT))
        r = req.build().send()
        r.bytes()
        _check_put(r.status)
        return _text_proto(r.version)

    return _shared(fetch, client.close, upload)


def _pyqwest_client(ca: str) -> tuple[Any, Any]:
    pyqwest = _mod("pyqwest")
    transport = pyqwest.SyncHTTPTransport(tls_ca_cert=Path(ca).read_bytes(), timeout=REQ_TIMEOUT)
    return pyqwest.SyncClient(transport), transport


def make_pyqwest(ca: str, threads: int) -> Client:
    client, transport = _pyqwest_client(ca)

    def fetch(url: str) -> str:
        # The buffered get() (what users call) returns a FullResponse, which has no
        # http_version: the protocol is read from a streamed probe instead.
        r = client.get(url)
        _check(r.status, r.content)
        return UNREPORTED

    def probe(url: str) -> str:
        with client.stream("GET", url) as r:
            body = b"".join(bytes(c) for c in r.content)
            _check(r.status, body)
            return _text_proto(r.http_version)

    def upload(url: str, data: bytes) -> str:
        # stream(), not put(): only a streamed response says its protocol
        with client.stream("PUT", url, content=data, timeout=UPLOAD_TIMEOUT) as r:
            for _ in r.content:
                pass
            _check_put(r.status)
            return _text_proto(r.http_version)

    c = _shared(fetch, transport.close, upload)
    c.probe = probe  # type: ignore[attr-defined]
    return c


def make_floor(ca: str, threads: int) -> Client:
    import _floor

    made: list[Any] = []
    lock = threading.Lock()

    def fetch(url: str) -> str:
        if not made:
            with lock:  # connects on the first request: the origin comes with the URL
                if not made:
                    made.append(_floor.FloorClient(ca, url))
        status, body = made[0].get(url)
        _check(status, body)
        return "HTTP/2"

    def close() -> None:
        if made:
            made[0].close()

    def upload(url: str, data: bytes) -> str:
        raise NotImplementedError("the floor measures small GETs only")

    return _shared(fetch, close, upload)


FACTORIES: dict[str, Callable[[str, int], Client]] = {
    "floor": make_floor,
    "h2pool": make_h2pool,
    "httpx": make_httpx,
    "niquests": make_niquests,
    "requests": make_requests,
    "urllib3": make_urllib3,
    "pycurl": make_pycurl,
    "curl_cffi": make_curl_cffi,
    "pyreqwest": make_pyreqwest,
    "pyqwest": make_pyqwest,
}


# --------------------------------------------------------------------------- downloads
# download(url, small_url, ca, runs) -> (times_s, chunks of the last run, protocol).
# The clock runs from the request call to the last byte; the chunks are hashed after.


def _timed(runs: int, once: Callable[[], tuple[list[Any], str]]) -> tuple[list[float], Any, str]:
    times: list[float] = []
    chunks: list[Any] = []
    proto = "?"
    for _ in range(runs):
        chunks = []
        t0 = time.perf_counter()
        chunks, proto = once()
        times.append(time.perf_counter() - t0)
    return times, chunks, proto


def dl_h2pool(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    client = _mod("h2pool").Client(verify=ca, timeout=120.0)
    client.get(small).content  # noqa: B018  (warm connection)

    def once() -> tuple[list[Any], str]:
        with client.stream("GET", url) as r:
            return list(r.iter_bytes()), str(r.http_version)

    try:
        return _timed(runs, once)
    finally:
        client.close()


def dl_httpx(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    import ssl

    client = _mod("httpx").Client(
        http2=True, verify=ssl.create_default_context(cafile=ca), timeout=120.0
    )
    client.get(small).content  # noqa: B018

    def once() -> tuple[list[Any], str]:
        with client.stream("GET", url) as r:
            return list(r.iter_bytes()), str(r.http_version)

    try:
        return _timed(runs, once)
    finally:
        client.close()


def _dl_session(
    module: str, chunk: int | None, url: str, small: str, ca: str, runs: int
) -> tuple[list[float], Any, str]:
    """niquests and requests: the same Session API, each read the way its docs show."""
    s = _mod(module).Session()
    s.get(small, verify=ca).content  # noqa: B018

    def once() -> tuple[list[Any], str]:
        r = s.get(url, verify=ca, stream=True, timeout=120)
        chunks = list(r.iter_content(chunk_size=chunk))
        r.close()
        return chunks, _int_proto(r.raw.version)

    try:
        return _timed(runs, once)
    finally:
        s.close()


def dl_niquests(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    return _dl_session("niquests", None, url, small, ca, runs)


def dl_requests(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    return _dl_session("requests", READ_CHUNK, url, small, ca, runs)


def dl_urllib3(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    pm = _mod("urllib3").PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca, timeout=120.0)
    pm.request("GET", small).data  # noqa: B018

    def once() -> tuple[list[Any], str]:
        r = pm.request("GET", url, preload_content=False)
        chunks = list(r.stream(READ_CHUNK))
        r.release_conn()
        return chunks, _int_proto(r.version)

    try:
        return _timed(runs, once)
    finally:
        pm.clear()


def dl_pycurl(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    pycurl = _mod("pycurl")
    c = pycurl.Curl()
    c.setopt(pycurl.CAINFO, ca)
    c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
    box: list[list[bytes]] = [[]]
    c.setopt(pycurl.WRITEFUNCTION, lambda b: box[0].append(b))
    c.setopt(pycurl.URL, small)
    c.perform()

    def once() -> tuple[list[Any], str]:
        box[0] = []
        c.setopt(pycurl.URL, url)
        c.perform()
        return box[0], _curl_proto(c.getinfo(pycurl.INFO_HTTP_VERSION))

    try:
        return _timed(runs, once)
    finally:
        c.close()


def dl_curl_cffi(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    cr = _mod("curl_cffi.requests")
    version = _mod("curl_cffi").CurlHttpVersion.V2TLS
    s = cr.Session(verify=ca, http_version=version, timeout=120)
    s.get(small).content  # noqa: B018

    def once() -> tuple[list[Any], str]:
        r = s.get(url, stream=True)
        chunks = list(r.iter_content())
        r.close()
        return chunks, _curl_proto(r.http_version)

    try:
        return _timed(runs, once)
    finally:
        s.close()


def dl_pyreqwest(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    from datetime import timedelta

    client = (
        _mod("pyreqwest.client")
        .SyncClientBuilder()
        .add_root_certificate_pem(Path(ca).read_bytes())
        .http2(True)
        .timeout(timedelta(seconds=120))
        .build()
    )
    client.get(small).build().send().bytes()

    def once() -> tuple[list[Any], str]:
        chunks: list[Any] = []
        with client.get(url).build_streamed() as r:
            reader = r.body_reader
            while (chunk := reader.read_chunk()) is not None:
                chunks.append(chunk)
            return chunks, _text_proto(r.version)

    try:
        return _timed(runs, once)
    finally:
        client.close()


def dl_pyqwest(url: str, small: str, ca: str, runs: int) -> tuple[list[float], Any, str]:
    client, transport = _pyqwest_client(ca)
    client.get(small)

    def once() -> tuple[list[Any], str]:
        with client.stream("GET", url) as r:
            return list(r.content), _text_proto(r.http_version)

    try:
        return _timed(runs, once)
    finally:
        transport.close()


DOWNLOADS: dict[str, Callable[[str, str, str, int], tuple[list[float], Any, str]]] = {
    "h2pool": dl_h2pool,
    "httpx": dl_httpx,
    "niquests": dl_niquests,
    "requests": dl_requests,
    "urllib3": dl_urllib3,
    "pycurl": dl_pycurl,
    "curl_cffi": dl_curl_cffi,
    "pyreqwest": dl_pyreqwest,
    "pyqwest": dl_pyqwest,
}


# --------------------------------------------------------------------------- workers


def _err_key(e: BaseException) -> str:
    return f"{type(e).__module__}.{type(e).__name__}: {str(e)[:160]}"


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return ru.ru_utime + ru.ru_stime


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest rank: a latency some request really had, not an interpolation."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _latency_ms(per_thread: list[array[float]]) -> dict[str, Any]:
    ordered = sorted(t for samples in per_thread for t in samples)
    if not ordered:
        return {"latency_n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    out: dict[str, Any] = {"latency_n": len(ordered)}
    for key, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("max_ms", 1.0)):
        out[key] = 1000 * _percentile(ordered, q)
    return out


def worker_load(spec: dict[str, Any]) -> dict[str, Any]:
    """N threads share one client (or one handle each); closed loop for a fixed time.

    Each thread times its own calls into its own array: an append of a float per
    request, no lock and no shared list, so measuring latency does not slow the loop.
    The timed call is the whole fetch (request, response, 13-byte check).
    """
    name, url, n = spec["client"], spec["url"], spec["threads"]
    warmup, duration = spec["warmup"], spec["duration"]
    client = FACTORIES[name](spec["ca"], n)
    probe_fn = getattr(client, "probe", None) or client.per_thread()
    probe = probe_fn(url)  # before the clock: a broken client fails fast

    counts = [0] * n
    lats = [array("d") for _ in range(n)]  # seconds per successful request in the window
    errs = [0] * n
    warm_errs = [0] * n
    err_kinds: Counter[str] = Counter()
    protos: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)
    box: dict[str, float] = {}
    setup_errors: list[str] = []

    def run(i: int) -> None:
        try:
            fetch = client.per_thread()
        except Exception as e:
            setup_errors.append(_err_key(e))
            barrier.wait()
            return
        local: Counter[str] = Counter()
        lat = lats[i]
        barrier.wait()
        t_meas, t_end = box["meas"], box["end"]
        pc = time.perf_counter
        while (t0 := pc()) < t_end:
            try:
                proto = fetch(url)
            except Exception as e:
                t1 = pc()
                if t_meas <= t1 <= t_end:
                    errs[i] += 1
                else:
                    warm_errs[i] += 1
                with lock:
                    err_kinds[_err_key(e)] += 1
                time.sleep(0.001)  # don't spin on an instantly failing client
                continue
            t1 = pc()
            if t_meas <= t1 <= t_end:
                counts[i] += 1
                lat.append(t1 - t0)
                local[proto] += 1
        with lock:
            protos.update(local)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    box["meas"] = start + warmup
    box["end"] = start + warmup + duration
    barrier.wait()
    time.sleep(max(0.0, box["meas"] - time.perf_counter()))
    cpu0 = _cpu_s()
    time.sleep(max(0.0, box["end"] - time.perf_counter()))
    cpu1 = _cpu_s()
    join_deadline = box["end"] + REQ_TIMEOUT + 5
    for t in threads:
        t.join(max(0.0, join_deadline - time.perf_counter()))
    stuck = sum(t.is_alive() for t in threads)
    closer = threading.Thread(target=client.close, daemon=True)
    closer.start()
    closer.join(10)
    total = sum(counts)
    return {
        "client": name,
        "threads": n,
        "duration": duration,
        "requests": total,
        "rps": total / duration,
        "errors": sum(errs),
        "errors_outside_window": sum(warm_errs),
        "setup_errors": setup_errors,
        "error_kinds": dict(err_kinds.most_common(5)),
        "stuck_threads": stuck,
        "close_hung": closer.is_alive(),
        "protocols": dict(protos),
        "probe_protocol": probe,
        "cpu_s": cpu1 - cpu0,
        "cpu_s_per_1000": 1000 * (cpu1 - cpu0) / total if total else None,
        **_latency_ms(lats),
    }


def _transfer_result(
    name: str, proto: str, times: list[float], size: int, **extra: Any
) -> dict[str, Any]:
    """A transfer worker's result: the best of its runs, in MB/s (10^6 bytes/s)."""
    best = min(times)
    result = {"client": name, "protocol": proto, "times_s": times, "best_s": best}
    result["mb_s"] = size / best / 1e6
    return {**result, **extra}


def worker_download(spec: dict[str, Any]) -> dict[str, Any]:
    name = spec["client"]
    times, chunks, proto = DOWNLOADS[name](spec["url"], spec["small_url"], spec["ca"], spec["runs"])
    h = hashlib.sha256()
    got = 0
    for c in chunks:
        h.update(c)
        got += len(c)
    return _transfer_result(name, proto, times, BIG_SIZE, bytes=got, sha256=h.hexdigest())


def worker_upload(spec: dict[str, Any]) -> dict[str, Any]:
    """PUT the same 64 MiB ``runs`` times on one warm client, each to a fresh name.

    The clock runs from the call to the PUT's answer, which nginx sends only once it
    has stored the whole body; the parent checks the stored files afterwards.
    """
    name, base, prefix = spec["client"], spec["base"], spec["prefix"]
    data = upload_body()  # before the clock, once: every run sends these bytes
    client = FACTORIES[name](spec["ca"], 1)
    client.per_thread()(spec["small_url"])  # connection up before the clock
    files: list[str] = []

    def once() -> tuple[list[Any], str]:
        files.append(f"{prefix}-{len(files)}")
        return [], client.upload(f"{base}/upload/{files[-1]}", data)

    try:
        times, _, proto = _timed(spec["runs"], once)
    finally:
        client.close()
    return _transfer_result(name, proto, times, UPLOAD_SIZE, files=files)


def worker_versions(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable}
    for p in spec["packages"]:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    with contextlib.suppress(Exception):
        out["urllib3 module"] = _mod("urllib3").__version__
    return out


WORKERS = {
    "load": worker_load,
    "download": worker_download,
    "upload": worker_upload,
    "versions": worker_versions,
}


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent handles Ctrl-C
    try:
        res = WORKERS[spec["what"]](spec)
    except BaseException as e:  # report, never traceback-and-hang
        import traceback

        res = {"fatal": _err_key(e), "traceback": traceback.format_exc()[-2000:]}
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")
    sys.stdout.flush()
    os._exit(0)  # don't wait for non-daemon threads a client may have left behind


# --------------------------------------------------------------------------- parent side


def venv_python(log: Callable[[str], None]) -> str:
    """The venv's python with the real urllib3 and requests, made on first use."""
    py = VENV / "bin" / "python"
    if not py.exists():
        log(f"making {VENV} (pip install urllib3 requests) ...")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "urllib3", "requests"],
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
    check = subprocess.run(
        [str(py), "-c", "import urllib3, requests; print(urllib3.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        raise RuntimeError(f"{py}: {check.stderr.strip()[-300:]}")
    try:
        fut = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; m.version('urllib3-future')"],
            capture_output=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        fut = None
    if fut is not None and fut.returncode == 0:
        raise RuntimeError(f"{py} has urllib3-future: not the real urllib3")
    return str(py)


def run(spec: dict[str, Any], timeout: float, python: str | None = None) -> dict[str, Any]:
    return _workers.run_worker(__file__, spec, timeout, cwd=ROOT, python=python)


def _cmd_out(*cmd: str) -> str | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception:
        return None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


MAIN_PACKAGES = (
    "h2pool",
    "h2",
    "httpx",
    "httpcore",
    "niquests",
    "urllib3-future",
    "pycurl",
    "curl_cffi",
    "pyreqwest",
    "pyqwest",
)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": _cpu_model(),
        "loadavg": os.getloadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "nginx": _cmd_out(shutil.which("nginx") or "/usr/sbin/nginx", "-v"),
        "git_head": _cmd_out("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
        "h2pool_dirty": bool(
            _cmd_out("git", "-C", str(ROOT), "status", "--porcelain", "--", "h2pool")
        ),
    }
    return info


def _fmt(v: float | None, spec: str = "{:,.0f}") -> str:
    return "-" if v is None else spec.format(v)


def _median(vals: list[float]) -> float | None:
    return statistics.median(vals) if vals else None


def _failure(r: dict[str, Any]) -> str | None:
    if "fatal" in r:
        return str(r["fatal"])
    return None


def summarize_load(rows: list[dict[str, Any]], clients: list[str], threads: int) -> list[str]:
    """The table of one thread count: median of reps, ratio to h2pool's median."""
    by: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    for r in rows:
        if r["threads"] == threads and r["client"] in by:
            by[r["client"]].append(r)
    med: dict[str, float | None] = {}
    for c, rs in by.items():
        ok = [r for r in rs if "fatal" not in r]
        med[c] = _median([r["rps"] for r in ok]) if ok else None
    base = med.get("h2pool")
    out = [
        f"\n-- {threads} thread{'s' if threads > 1 else ''}: small GET, median of "
        f"{max(len(v) for v in by.values()) if by else 0} --",
        f"{'client':<10} {'proto':<9} {'req/s':>9} {'vs h2pool':>9} {'best':>9} "
        f"{'errors':>7} {'conns':>5} {'CPU s/1k':>8} {'p50 ms':>7} {'p99 ms':>7}",
    ]
    for c in clients:
        rs = by[c]
        ok = [r for r in rs if "fatal" not in r]
        if not ok:
            why = next((_failure(r) for r in rs if _failure(r)), "not run")
            out.append(f"{c:<10} FAILED: {why}")
            continue
        m = med[c]
        ratio = (m / base) if (m is not None and base) else None
        errs = sum(r["errors"] + r["errors_outside_window"] + len(r["setup_errors"]) for r in ok)
        conns = [int(r["conns"]) for r in ok if r.get("conns") is not None]
        cpu = _median([r["cpu_s_per_1000"] for r in ok if r["cpu_s_per_1000"] is not None])
        p50, p99 = (
            _median([r[k] for r in ok if r.get(k) is not None]) for k in ("p50_ms", "p99_ms")
        )
        protos = sorted({p for r in ok for p in r["protocols"]} | {r["probe_protocol"] for r in ok})
        proto = ",".join(p for p in protos if p != UNREPORTED) or "?"
        line = (
            f"{c:<10} {proto:<9} {_fmt(m):>9} {_fmt(ratio, '{:.2f}'):>9} "
            f"{_fmt(max(r['rps'] for r in ok)):>9} {errs:>7} "
            f"{_fmt(max(conns) if conns else None):>5} {_fmt(cpu, '{:.3f}'):>8} "
            f"{_fmt(p50, '{:.2f}'):>7} {_fmt(p99, '{:.2f}'):>7}"
        )
        failed = len(rs) - len(ok)
        if failed:
            line += f"  ({failed} rep(s) FAILED: {next(_failure(r) for r in rs if _failure(r))})"
        out.append(line)
        kinds: Counter[str] = Counter()
        for r in ok:
            kinds.update(r["error_kinds"])
            for s in r["setup_errors"]:
                kinds[s] += 1
            if r["stuck_threads"]:
                kinds[f"{r['stuck_threads']} thread(s) stuck past the deadline"] += 1
        for k, v in kinds.most_common(3):
            out.append(f"{'':<10}   {v} x {k}")
    return out


def summarize_transfer(
    rows: list[dict[str, Any]], clients: list[str], title: str, check: str
) -> list[str]:
    """The download or upload table: median MB/s of the reps whose bytes checked out."""
    by: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    for r in rows:
        by.setdefault(r["client"], []).append(r)

    def good(r: dict[str, Any]) -> bool:
        return "fatal" not in r and not r.get("mismatch")

    med = {c: _median([r["mb_s"] for r in rs if good(r)]) for c, rs in by.items()}
    base = med.get("h2pool")
    reps = max((len(v) for v in by.values()), default=0)
    out = [
        f"\n-- {title}, MB/s (10^6 B/s), median of {reps} (each the best of {TRANSFER_RUNS}) --",
        f"{'client':<10} {'proto':<9} {'MB/s':>9} {'vs h2pool':>9} {'best':>9}  {check}",
    ]
    for c in clients:
        rs = by.get(c, [])
        ok = [r for r in rs if good(r)]
        if not ok:
            why = next((_failure(r) or r.get("mismatch") for r in rs), None)
            out.append(f"{c:<10} FAILED: {why or 'not run'}")
            continue
        m = med[c]
        ratio = m / base if (m is not None and base) else None
        proto = ",".join(sorted({r["protocol"] for r in ok}))
        out.append(
            f"{c:<10} {proto:<9} {_fmt(m):>9} {_fmt(ratio, '{:.2f}'):>9} "
            f"{_fmt(max(r['mb_s'] for r in ok)):>9}  ok"
            + (f"  ({len(rs) - len(ok)} rep(s) FAILED)" if len(rs) > len(ok) else "")
        )
    return out


@dataclass
class Plan:
    """Which clients run, with which python, in which order; shared by every section."""

    clients: list[str]
    pythons: dict[str, str | None]
    broken: dict[str, str]  # client -> why it cannot run (its rows say FAILED)
    turn: int = 0

    def rotation(self) -> list[str]:
        """The clients in the order of this round, which starts one further along each
        time: no client always runs first (a quiet machine) or last."""
        k = self.turn % len(self.clients)
        self.turn += 1
        return self.clients[k:] + self.clients[:k]


def measure_transfers(
    rows: list[dict[str, Any]],
    what: str,
    title: str,
    plan: Plan,
    reps: int,
    spec: Callable[[str, int], dict[str, Any]],
    check: Callable[[dict[str, Any]], str],
    ng: Any,
) -> None:
    """``reps`` rounds of one download or upload worker per client, appended to ``rows``
    as they finish (so an interrupted run keeps them).

    ``spec(client, rep)`` is the worker's spec; ``check(row)`` runs after every worker,
    failed ones included (an upload may have left a file behind), marks a row whose
    bytes are wrong with ``mismatch`` and returns what to print about the bytes.
    """
    for rep in range(reps):
        print(f"\n== {title}, rep {rep + 1}/{reps} ==")
        for c in plan.rotation():
            if c in plan.broken:
                r: dict[str, Any] = {"fatal": plan.broken[c]}
            else:
                job = {"what": what, "client": c, "ca": ng.ca_path, "runs": TRANSFER_RUNS}
                deadline = TRANSFER_RUNS * UPLOAD_TIMEOUT + 60  # every run may take its timeout
                r = run({**job, **spec(c, rep)}, timeout=deadline, python=plan.pythons[c])
            r.setdefault("client", c)
            r["rep"] = rep
            note = check(r)
            rows.append(r)
            if "fatal" in r:
                print(f"  {c:<10} FAILED: {r['fatal']}")
            else:
                print(f"  {c:<10} {r['mb_s']:>7,.0f} MB/s  {r['protocol']}  {note}")
            for line in ng.new_log_lines()[:3]:
                print(f"    nginx: {line[:200]}")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def check_download(expected: str) -> Callable[[dict[str, Any]], str]:
    def check(r: dict[str, Any]) -> str:
        if "fatal" in r:
            return ""
        r["sha_ok"] = r["sha256"] == expected and r["bytes"] == BIG_SIZE
        if not r["sha_ok"]:
            r["mismatch"] = f"sha256 mismatch ({r['bytes']} bytes)"
        return "sha256 " + ("ok" if r["sha_ok"] else "MISMATCH")

    return check


def upload_prefix(client: str, rep: int) -> str:
    """The file names of one upload worker: ``<prefix>-0``, ``<prefix>-1``, ..."""
    return f"{client}-rep{rep}"


def check_upload(upload_dir: Path, expected: str) -> Callable[[dict[str, Any]], str]:
    """After each upload worker: every file it PUT must be the 64 MiB it sent.

    The timed PUT only counts if nginx stored every byte; the files are then deleted,
    and so is whatever a failed worker left under its prefix.
    """

    def check(r: dict[str, Any]) -> str:
        stored = []
        for name in r.get("files", []):
            path = upload_dir / name
            size = path.stat().st_size if path.exists() else None
            sha_ok = size == UPLOAD_SIZE and _sha256_file(path) == expected
            stored.append({"file": name, "bytes": size, "ok": sha_ok})
            if size != UPLOAD_SIZE:
                r.setdefault("mismatch", f"nginx stored {size} bytes of {name}, not {UPLOAD_SIZE}")
            elif not sha_ok:
                r.setdefault("mismatch", f"nginx stored other bytes in {name} (sha256 differs)")
        for path in upload_dir.glob(f"{upload_prefix(r['client'], r['rep'])}-*"):
            path.unlink(missing_ok=True)
        r["stored"] = stored
        r["stored_ok"] = bool(stored) and "mismatch" not in r
        return "stored " + ("ok" if r["stored_ok"] else f"MISMATCH: {r.get('mismatch')}")

    return check


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 2 minutes")
    ap.add_argument(
        "--clients",
        help=f"comma-separated subset of {','.join(CLIENTS)}; also 'floor' (stress/_floor.py)",
    )
    ap.add_argument("--threads", help="comma-separated thread counts (default 1,8,64)")
    ap.add_argument("--duration", type=float, help="measured seconds per run (5; quick 2)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per run (1; quick 0.5)")
    ap.add_argument("--reps", type=int, help="round-robin repetitions (default 1); median shown")
    ap.add_argument("--no-download", action="store_true", help="skip the 100 MiB download")
    ap.add_argument("--no-upload", action="store_true", help="skip the 64 MiB upload")
    ap.add_argument("--json", help="result file (default stress/results/compare-<ts>.json)")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        worker_main(args._worker)
        return 0

    quick = args.quick
    clients = [c.strip() for c in (args.clients or ",".join(CLIENTS)).split(",") if c.strip()]
    unknown = [c for c in clients if c not in CLIENTS + OPT_IN]
    if unknown:
        ap.error(f"unknown clients {unknown}; choose from {','.join(CLIENTS + OPT_IN)}")
    threads = [int(x) for x in (args.threads or "1,8,64").split(",")]
    duration = args.duration or (2.0 if quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    reps = args.reps or 1

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    t_start = time.time()
    out_path = (
        Path(args.json)
        if args.json
        else HERE / "results" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "command": " ".join(["python", "stress/compare.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "settings": {
            "clients": clients,
            "threads": threads,
            "duration": duration,
            "warmup": warmup,
            "reps": reps,
            "transfer_runs": TRANSFER_RUNS,
            "upload_bytes": UPLOAD_SIZE,
            "summary": "median of reps; ratio = client median / h2pool median",
        },
        "versions": {},
        "load": [],
        "download": [],
        "upload": [],
    }
    m = results["machine"]
    print(
        f"machine: {m['nproc']} cpus ({m['cpu']}), load {m['loadavg'][0]:.2f} "
        f"{m['loadavg'][1]:.2f} {m['loadavg'][2]:.2f}, Python {m['python']}, {m['nginx']}, "
        f"git {m['git_head']}{' (h2pool/ modified)' if m['h2pool_dirty'] else ''}"
    )
    pythons: dict[str, str | None] = {c: None for c in clients}
    broken: dict[str, str] = {}
    lines: list[str] = []
    try:
        if any(c in VENV_CLIENTS for c in clients):
            try:
                vpy = venv_python(print)
                for c in VENV_CLIENTS:
                    pythons[c] = vpy
                results["versions"]["venv"] = run(
                    {"what": "versions", "packages": ["urllib3", "requests", "urllib3-future"]},
                    60,
                    python=vpy,
                )
            except Exception as e:
                for c in VENV_CLIENTS:
                    broken[c] = f"no venv with the real urllib3: {_err_key(e)}"
        results["versions"]["main"] = run({"what": "versions", "packages": list(MAIN_PACKAGES)}, 60)
        for label, code in (
            ("libcurl (pycurl)", "import pycurl; print(pycurl.version)"),
            ("libcurl (curl_cffi)", "import curl_cffi; print(curl_cffi.__curl_version__)"),
        ):
            with contextlib.suppress(Exception):
                results["versions"]["main"][label] = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
                ).stdout.strip()
        v_main, v_venv = results["versions"]["main"], results["versions"].get("venv", {})
        print(
            "versions: "
            + ", ".join(f"{p} {v_main.get(p)}" for p in MAIN_PACKAGES)
            + f"; venv ({v_venv.get('executable', '-')}): urllib3 {v_venv.get('urllib3')}, "
            f"requests {v_venv.get('requests')}, urllib3-future {v_venv.get('urllib3-future')}"
        )
        from _servers import Nginx

        with Nginx() as ng:
            print(f"nginx: {ng.base} (worker_processes 1), CA {ng.ca_path}")
            small_url = f"{ng.base}/13b"
            plan = Plan(list(clients), pythons, broken)
            for rep in range(reps):
                for n in threads:
                    print(f"\n== rep {rep + 1}/{reps}, {n} threads ==")
                    for c in plan.rotation():
                        if c in broken:
                            r: dict[str, Any] = {"fatal": broken[c]}
                        else:
                            a0 = ng.accepts()
                            r = run(
                                {
                                    "what": "load",
                                    "client": c,
                                    "url": small_url,
                                    "ca": ng.ca_path,
                                    "threads": n,
                                    "warmup": warmup,
                                    "duration": duration,
                                },
                                timeout=warmup + duration + REQ_TIMEOUT + 60,
                                python=pythons[c],
                            )
                            a1 = ng.accepts()
                            if a0 is not None and a1 is not None:
                                r["conns"] = a1 - a0 - 1  # minus our own status request
                        r.setdefault("client", c)
                        r.setdefault("threads", n)
                        r["rep"] = rep
                        results["load"].append(r)
                        if "fatal" in r:
                            print(f"  {c:<10} FAILED: {r['fatal']}")
                        else:
                            print(
                                f"  {c:<10} {r['rps']:>9,.0f} req/s  errors {r['errors']}"
                                f"  conns {r.get('conns')}  {r['probe_protocol']}"
                                f"  CPU {_fmt(r['cpu_s_per_1000'], '{:.3f}')} s/1k"
                                f"  p50 {_fmt(r['p50_ms'], '{:.2f}')} ms"
                                f"  p99 {_fmt(r['p99_ms'], '{:.2f}')} ms"
                            )
                        for line in ng.new_log_lines()[:3]:
                            print(f"    nginx: {line[:200]}")
            for n in threads:
                lines += summarize_load(results["load"], clients, n)
            # The floor makes small GETs only.
            movers = [c for c in clients if c not in OPT_IN]
            plan = Plan(movers, pythons, broken)
            if not args.no_download:
                measure_transfers(
                    results["download"],
                    "download",
                    "100 MiB download",
                    plan,
                    reps,
                    lambda c, rep: {"url": f"{ng.base}/100m", "small_url": small_url},
                    check_download(_sha256_file(ng.tmp / "www" / "100m")),
                    ng,
                )
                lines += summarize_transfer(
                    results["download"], movers, "100 MiB download", "sha256"
                )
            if not args.no_upload:
                measure_transfers(
                    results["upload"],
                    "upload",
                    f"64 MiB upload: PUT {ng.base}/upload/NAME",
                    plan,
                    reps,
                    lambda c, rep: {
                        "base": ng.base,
                        "small_url": small_url,
                        "prefix": upload_prefix(c, rep),
                    },
                    check_upload(ng.upload_dir, hashlib.sha256(upload_body()).hexdigest()),
                    ng,
                )
                lines += summarize_transfer(
                    results["upload"], movers, "64 MiB upload (PUT from bytes)", "stored"
                )
    except KeyboardInterrupt:
        print("\ninterrupted; partial results follow", file=sys.stderr)
        results["interrupted"] = True
        _workers.kill_current()
    finally:
        results["elapsed_s"] = round(time.time() - t_start, 1)
        results["machine"]["loadavg_end"] = os.getloadavg()
        # the working tree is what the h2pool workers import: note edits made during the run
        results["machine"]["h2pool_dirty_end"] = bool(
            _cmd_out("git", "-C", str(ROOT), "status", "--porcelain", "--", "h2pool")
        )
        if not lines and results["load"]:
            for n in threads:
                lines += summarize_load(results["load"], clients, n)
        results["tables"] = lines
        print("\n".join(lines))
        la0, la1 = results["machine"]["loadavg"], results["machine"]["loadavg_end"]
        print(
            f"\nload average {la0[0]:.2f} at the start, {la1[0]:.2f} at the end "
            f"({os.cpu_count()} cpus)"
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {out_path} ({results['elapsed_s']} s)")
    return 130 if results.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
