#!/usr/bin/env python3
"""h2pool benchmark: the single source of truth for h2pool's speed.

    python stress/bench.py            # full run (~6 min)
    python stress/bench.py --quick    # ~1.5 min

Starts its own nginx (HTTP/2 over TLS, loopback, throw-away CA) and measures:

1. small GETs (13-byte body) from N threads sharing ONE client object, for
   h2pool, httpx (http2=True) and niquests, with h2load as the physical limit;
2. the pure-h2 client-side ceiling (in-memory h2 client <-> h2 server);
3. a single 100 MiB download (h2pool stream/buffered, httpx, niquests, curl);
4. 16 threads each downloading 1 MiB x 50 through one client (h2pool, httpx);
5. a 64 MiB upload, from bytes and from an iterator (h2pool, httpx);
6. peak RSS of a 1 GiB streamed download read by a slow reader (h2pool, httpx);
7. RSS per in-flight request: 1,000 and 10,000 outstanding h2pool submit()s to an
   in-process h2c server that never answers.

Small GETs run at 1/8/64/256/1000 threads (quick: 1/8/64); niquests is skipped
above 256. If matplotlib is importable, a PNG chart (req/s vs threads) is written
next to the JSON; otherwise "chart skipped".

Every client measurement runs in its own subprocess (``--_worker``) so a client
that hangs, crashes or leaks threads cannot poison the next one; the parent
kills it after its deadline. Results go to ``stress/results/bench-<ts>.json``.
See stress/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the working-tree h2pool, not an installed one
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _async_bench  # noqa: E402  (stress/ is on sys.path now)
import _workers  # noqa: E402

SMALL_LEN = 13
BIG_SIZE = 100 * 1024 * 1024
PY_CLIENTS = ("h2pool", "httpx", "niquests")
# "h2pool-args": the same client and URL, each GET with params= (the
# everyday arguments' cost in the caller's thread; compare with "h2pool").
ALL_CLIENTS = (*PY_CLIENTS, "h2pool-args", "h2load")
DL_KINDS = ("h2pool-stream", "h2pool-content", "httpx-stream", "niquests-stream", "curl")
REQ_TIMEOUT = 20.0
# niquests opens one connection per busy thread (its pool caps at 10, the rest of the
# threads queue for those): above this many threads it is skipped, not measured.
NIQUESTS_MAX_THREADS = 256


# --------------------------------------------------------------------------- clients
# Each factory returns (fetch(url) -> protocol string, close()). fetch raises on any
# failure, including a wrong status or body length.


def _ssl_ctx(ca: str) -> Any:
    import ssl

    return ssl.create_default_context(cafile=ca)


def make_h2pool(ca: str) -> tuple[Any, Any]:
    import h2pool

    client = h2pool.Client(verify=ca, timeout=REQ_TIMEOUT)

    def fetch(url: str) -> str:
        r = client.get(url)
        body = r.content
        if r.status != 200 or len(body) != SMALL_LEN:
            raise RuntimeError(f"bad response: {r.status} len={len(body)}")
        return str(r.http_version)

    def stats() -> Any:
        try:
            return client.stats()
        except Exception as e:
            return f"stats() failed: {e!r}"

    fetch.stats = stats  # type: ignore[attr-defined]
    return fetch, client.close


def make_httpx(ca: str) -> tuple[Any, Any]:
    import httpx

    client = httpx.Client(http2=True, verify=_ssl_ctx(ca), timeout=REQ_TIMEOUT)

    def fetch(url: str) -> str:
        r = client.get(url)
        if r.status_code != 200 or len(r.content) != SMALL_LEN:
            raise RuntimeError(f"bad response: {r.status_code} len={len(r.content)}")
        return r.http_version

    return fetch, client.close


def _niquests_proto(r: Any) -> str:
    v = getattr(r, "http_version", None)
    if v is None and getattr(r, "raw", None) is not None:
        v = getattr(r.raw, "version", None)
    return {10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2", 30: "HTTP/3"}.get(v, repr(v))


def make_niquests(ca: str) -> tuple[Any, Any]:
    import niquests

    session = niquests.Session()

    def fetch(url: str) -> str:
        r = session.get(url, verify=ca, timeout=REQ_TIMEOUT)
        if r.status_code != 200 or len(r.content or b"") != SMALL_LEN:
            raise RuntimeError(f"bad response: {r.status_code} len={len(r.content or b'')}")
        return _niquests_proto(r)

    return fetch, session.close


def make_h2pool_args(ca: str) -> tuple[Any, Any]:
    import h2pool

    client = h2pool.Client(verify=ca, timeout=REQ_TIMEOUT)

    def fetch(url: str) -> str:
        r = client.get(url, params={"page": 2, "q": "a b"})
        body = r.content
        if r.status != 200 or len(body) != SMALL_LEN:
            raise RuntimeError(f"bad response: {r.status} len={len(body)}")
        return str(r.http_version)

    return fetch, client.close


FACTORIES = {
    "h2pool": make_h2pool,
    "h2pool-args": make_h2pool_args,
    "httpx": make_httpx,
    "niquests": make_niquests,
}


# --------------------------------------------------------------------------- workers


def _pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def _err_key(e: BaseException) -> str:
    return f"{type(e).__module__}.{type(e).__name__}: {str(e)[:160]}"


def worker_load(spec: dict[str, Any]) -> dict[str, Any]:
    """N threads share one client; closed loop; count completions in the window."""
    name, url, n = spec["client"], spec["url"], spec["threads"]
    warmup, duration = spec["warmup"], spec["duration"]
    t_setup = time.perf_counter()
    fetch, close = FACTORIES[name](spec["ca"])
    probe = fetch(url)  # one request before the clock: fails fast if the client is broken
    setup_s = time.perf_counter() - t_setup

    lats: list[list[float]] = [[] for _ in range(n)]
    errs = [0] * n
    warm_errs = [0] * n
    err_kinds: Counter[str] = Counter()
    protos: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)
    box: dict[str, float] = {}

    def run(i: int) -> None:
        my = lats[i]
        local_protos: Counter[str] = Counter()
        barrier.wait()
        t_meas, t_end = box["meas"], box["end"]
        pc = time.perf_counter
        while True:
            t0 = pc()
            if t0 >= t_end:
                break
            try:
                proto = fetch(url)
            except Exception as e:
                t1 = pc()
                if t_meas <= t1 <= t_end:
                    errs[i] += 1
                else:
                    warm_errs[i] += 1  # during warm-up or after the window
                with lock:
                    err_kinds[_err_key(e)] += 1
                if t1 - t0 < 0.001:
                    time.sleep(0.001)  # don't spin on an instantly failing client
                continue
            t1 = pc()
            if t_meas <= t1 <= t_end:
                my.append(t1 - t0)
                local_protos[proto] += 1
        with lock:
            protos.update(local_protos)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    box["meas"] = start + warmup
    box["end"] = start + warmup + duration
    barrier.wait()
    time.sleep(max(0.0, box["end"] - time.perf_counter()))
    stats_at_end = fetch.stats() if hasattr(fetch, "stats") else None
    join_deadline = box["end"] + REQ_TIMEOUT + 5
    for t in threads:
        t.join(max(0.0, join_deadline - time.perf_counter()))
    stuck = sum(t.is_alive() for t in threads)
    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    closer.join(10)
    all_lats = sorted(x for lst in lats for x in lst)
    count = len(all_lats)
    res: dict[str, Any] = {
        "client": name,
        "threads": n,
        "duration": duration,
        "requests": count,
        "rps": count / duration,
        "errors": sum(errs),
        "errors_outside_window": sum(warm_errs),
        "error_kinds": dict(err_kinds.most_common(5)),
        "stuck_threads": stuck,
        "close_hung": closer.is_alive(),
        "protocols": dict(protos),
        "probe_protocol": probe,
        "setup_s": round(setup_s, 4),
        "stats_at_end": repr(stats_at_end) if stats_at_end is not None else None,
    }
    if count:
        res["mean_ms"] = 1000 * sum(all_lats) / count
        for label, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)):
            if label == "p999" and count < 5000:
                continue
            res[f"{label}_ms"] = 1000 * _pct(all_lats, q)
        res["max_ms"] = 1000 * all_lats[-1]
    return res


def worker_download(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm the connection with a small GET, then time full 100 MiB downloads."""
    kind, url, small, ca, runs = (
        spec["kind"],
        spec["url"],
        spec["small_url"],
        spec["ca"],
        spec["runs"],
    )
    times: list[float] = []
    proto = "?"
    if kind.startswith("h2pool"):
        import h2pool

        client = h2pool.Client(verify=ca, timeout=60.0)
        client.get(small).content  # noqa: B018
        for _ in range(runs):
            t0 = time.perf_counter()
            if kind == "h2pool-stream":
                got = 0
                with client.stream("GET", url) as r:
                    for chunk in r.iter_bytes():
                        got += len(chunk)
            else:
                r = client.get(url)
                got = len(r.content)
            times.append(time.perf_counter() - t0)
            proto = str(r.http_version)
            if r.status != 200 or got != BIG_SIZE:
                raise RuntimeError(f"bad download: status={r.status} got={got}")
            del r
        client.close()
    elif kind == "httpx-stream":
        import httpx

        client = httpx.Client(http2=True, verify=_ssl_ctx(ca), timeout=60.0)
        client.get(small).content  # noqa: B018
        for _ in range(runs):
            t0 = time.perf_counter()
            got = 0
            with client.stream("GET", url) as r:
                for chunk in r.iter_bytes():
                    got += len(chunk)
            times.append(time.perf_counter() - t0)
            proto = r.http_version
            if r.status_code != 200 or got != BIG_SIZE:
                raise RuntimeError(f"bad download: status={r.status_code} got={got}")
        client.close()
    elif kind == "niquests-stream":
        import niquests

        s = niquests.Session()
        s.get(small, verify=ca).content  # noqa: B018
        for _ in range(runs):
            t0 = time.perf_counter()
            got = 0
            r = s.get(url, verify=ca, stream=True, timeout=60)
            for chunk in r.iter_content(chunk_size=None):
                got += len(chunk)
            r.close()
            times.append(time.perf_counter() - t0)
            proto = _niquests_proto(r)
            if r.status_code != 200 or got != BIG_SIZE:
                raise RuntimeError(f"bad download: status={r.status_code} got={got}")
        s.close()
    else:
        raise ValueError(kind)
    best = min(times)
    return {
        "kind": kind,
        "protocol": proto,
        "times_s": times,
        "best_s": best,
        "mb_s": BIG_SIZE / best / 1e6,
    }


# --------------------------------------------------------------------------- flow control
# Many threads downloading through one client, uploads, and the memory of a slow reader.

THREADS_N = 16  # threads sharing one client ...
THREADS_EACH = 50  # ... each downloading /1m this many times
UPLOAD_SIZE = 64 * 1024 * 1024
GIB = 1024 * 1024 * 1024
SLOW_CHUNK = 64 * 1024  # the slow reader sleeps 1 ms per 64 KiB
MIB = 1024 * 1024


def _proc_status(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _flow_client(name: str, ca: str) -> tuple[Any, Any]:
    """(client, close) with the same settings for every flow benchmark."""
    if name == "h2pool":
        import h2pool

        client = h2pool.Client(verify=ca, timeout=60.0)
        return client, client.close
    if name == "httpx":
        import httpx

        client = httpx.Client(http2=True, verify=_ssl_ctx(ca), timeout=60.0)
        return client, client.close
    raise ValueError(name)


def worker_threads(spec: dict[str, Any]) -> dict[str, Any]:
    """THREADS_N threads share one client; each GETs /1m THREADS_EACH times (buffered)."""
    name, url, n, each, runs = (
        spec["client"],
        spec["url"],
        spec["threads"],
        spec["each"],
        spec["runs"],
    )
    client, close = _flow_client(name, spec["ca"])

    def get() -> int:
        r = client.get(url)
        body = r.content
        status = r.status if name == "h2pool" else r.status_code
        if status != 200 or len(body) != MIB:
            raise RuntimeError(f"bad response: {status} len={len(body)}")
        return len(body)

    get()  # connection up before the clock
    times: list[float] = []
    errors: Counter[str] = Counter()
    for _ in range(runs):
        barrier = threading.Barrier(n + 1)
        got = [0] * n

        def run(i: int, barrier: threading.Barrier = barrier, got: list[int] = got) -> None:
            barrier.wait()
            for _ in range(each):
                try:
                    got[i] += get()
                except Exception as e:
                    errors[_err_key(e)] += 1

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        times.append(time.perf_counter() - t0)
        if sum(got) != n * each * MIB:
            raise RuntimeError(f"{sum(got)} bytes, expected {n * each * MIB}; {dict(errors)}")
    stats = client.stats() if name == "h2pool" else None
    close()
    best = min(times)
    return {
        "client": name,
        "times_s": times,
        "best_s": best,
        "mb_s": n * each * MIB / best / 1e6,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "connections": stats["connections_opened"] if stats else None,
    }


def worker_upload(spec: dict[str, Any]) -> dict[str, Any]:
    """PUT 64 MiB (from bytes, or an iterator of 1 MiB pieces) to nginx's DAV location."""
    kind, base, runs = spec["kind"], spec["base"], spec["runs"]
    name, how = kind.split("-")
    client, close = _flow_client(name, spec["ca"])
    block = os.urandom(MIB)
    data = block * (UPLOAD_SIZE // MIB)
    view = memoryview(data)

    def body() -> Any:
        if how == "bytes":
            return data
        return (view[i : i + MIB] for i in range(0, UPLOAD_SIZE, MIB))

    client.get(base + "/13b")  # connection up before the clock
    times: list[float] = []
    names: list[str] = []
    for i in range(runs):
        target = f"{kind}-{i}"
        t0 = time.perf_counter()
        if name == "h2pool":
            r = client.put(f"{base}/upload/{target}", body=body())
            status = r.status
        else:
            r = client.put(f"{base}/upload/{target}", content=body())
            status = r.status_code
        times.append(time.perf_counter() - t0)
        if status not in (201, 204):
            raise RuntimeError(f"PUT answered {status}")
        names.append(target)
    close()
    best = min(times)
    return {
        "kind": kind,
        "times_s": times,
        "best_s": best,
        "mb_s": UPLOAD_SIZE / best / 1e6,
        "files": names,
    }


def worker_rss(spec: dict[str, Any]) -> dict[str, Any]:
    """Stream /1g with a reader that sleeps 1 ms per 64 KiB; peak RSS (VmHWM)."""
    import gc

    name, url = spec["client"], spec["url"]
    client, close = _flow_client(name, spec["ca"])
    client.get(spec["small_url"])
    gc.collect()
    base = _proc_status("VmRSS")
    hwm_before = _proc_status("VmHWM")
    got = 0
    t0 = time.perf_counter()
    with client.stream("GET", url) as r:
        for chunk in r.iter_bytes(SLOW_CHUNK):
            got += len(chunk)
            time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    hwm = _proc_status("VmHWM")
    close()
    if got != GIB:
        raise RuntimeError(f"got {got} bytes, expected {GIB}")
    return {
        "client": name,
        "rss_before_mib": base / MIB,
        "peak_rss_mib": hwm / MIB,
        "growth_mib": (hwm - base) / MIB,
        "peak_before_mib": hwm_before / MIB,
        "elapsed_s": elapsed,
    }


# --------------------------------------------------------------------------- in-flight memory
# N outstanding submit()s against an h2c server that accepts every request and never
# answers it (nginx cannot be made to stall), in the worker's own process.

INFLIGHT_COUNTS = (1_000, 10_000)
STALL_MAX_STREAMS = 128  # like nginx's http2_max_concurrent_streams here


class StallServer:
    """Cleartext HTTP/2 (prior knowledge) on 127.0.0.1 that never answers ``/stall``.

    ``/ok`` gets a 13-byte 200 (the client's warm-up). One thread per connection runs
    the h2 state machine, so SETTINGS, PINGs and WINDOW_UPDATEs are handled and the
    client sees a live server whose streams simply never complete.
    """

    def __init__(self, max_streams: int = STALL_MAX_STREAMS) -> None:
        import socket

        self.max_streams = max_streams
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True, name="stall-accept").start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: Any) -> None:
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings

        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams},
        )
        conn.initiate_connection()
        with contextlib.suppress(OSError):
            sock.sendall(conn.data_to_send())
            while not self._stop:
                data = sock.recv(65536)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers).get(b":path")
                        with self._lock:
                            self.requests += 1
                        if path == b"/ok":
                            conn.send_headers(
                                ev.stream_id,
                                [(b":status", b"200"), (b"content-length", b"13")],
                            )
                            conn.send_data(ev.stream_id, b"hello, world\n", end_stream=True)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        sock.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def worker_inflight(spec: dict[str, Any]) -> dict[str, Any]:
    """RSS before and after N submit()s that never complete; then cancel all and close."""
    import gc

    import h2pool

    n = spec["n"]
    server = StallServer()
    client = h2pool.Client(http2_prior_knowledge=True, timeout=300.0)
    r = client.get(server.base + "/ok")  # connection and I/O thread up before measuring
    if r.status != 200 or r.content != b"hello, world\n":
        raise RuntimeError(f"warm-up: {r.status}")
    gc.collect()
    time.sleep(0.2)
    rss0 = _proc_status("VmRSS")
    t0 = time.perf_counter()
    url = server.base + "/stall"
    futs = [client.submit("GET", url) for _ in range(n)]
    submit_s = time.perf_counter() - t0
    # wait until the I/O thread has taken every request (on a stream or in the queue)
    deadline = time.monotonic() + 60
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = client.stats()
        if st["open_streams"] + st["queued"] >= n and server.requests >= st["open_streams"]:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    st = client.stats()
    gc.collect()
    rss1 = _proc_status("VmRSS")
    done_early = sum(f.done() for f in futs)
    t1 = time.perf_counter()
    cancelled = sum(f.cancel() for f in futs)
    cancel_s = time.perf_counter() - t1
    del futs
    t2 = time.perf_counter()
    client.close(timeout=5.0)
    close_s = time.perf_counter() - t2
    server.close()
    delta = (rss1 - rss0) / MIB
    return {
        "n": n,
        "rss_before_mib": rss0 / MIB,
        "rss_after_mib": rss1 / MIB,
        "delta_mib": delta,
        "per_1000_mib": delta * 1000 / n,
        "connections": st.get("connections"),
        "open_streams": st.get("open_streams"),
        "queued": st.get("queued"),
        "server_connections": server.connections,
        "server_requests": server.requests - 1,  # minus the warm-up
        "server_max_streams": STALL_MAX_STREAMS,
        "done_before_cancel": done_early,
        "cancelled": cancelled,
        "submit_s": submit_s,
        "cancel_s": cancel_s,
        "close_s": close_s,
    }


WORKERS = {
    "load": worker_load,
    "async_load": _async_bench.worker_async_load,
    "mixed": _async_bench.worker_mixed,
    "download": worker_download,
    "threads": worker_threads,
    "upload": worker_upload,
    "rss": worker_rss,
    "inflight": worker_inflight,
}


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent handles Ctrl-C
    try:
        fn = WORKERS[spec["what"]]
        res = fn(spec)
    except BaseException as e:  # report, never traceback-and-hang
        import traceback

        res = {"fatal": _err_key(e), "traceback": traceback.format_exc()[-2000:]}
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")
    sys.stdout.flush()
    os._exit(0)  # don't wait for non-daemon threads a client may have left behind


# --------------------------------------------------------------------------- parent side


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    return _workers.run_worker(__file__, spec, timeout, cwd=ROOT)


def run_h2load(url: str, warmup: float, duration: float, streams: int = 100) -> dict[str, Any]:
    exe = shutil.which("h2load")
    if not exe:
        return {"fatal": "h2load not installed"}
    cmd = [
        exe,
        "-c",
        "1",
        "-t",
        "1",
        "-m",
        str(streams),
        "-D",
        str(max(1, round(duration))),
        "--warm-up-time",
        str(max(1, round(warmup))),
        url,
    ]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 30)
    except subprocess.TimeoutExpired:
        return {"fatal": "h2load timed out"}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", p.stdout)
    r = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored",
        p.stdout,
    )
    t = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", p.stdout)
    proto = re.search(r"Application protocol: (\S+)", p.stdout)
    if not m:
        return {
            "fatal": f"h2load output not understood (rc={p.returncode})",
            "stderr": (p.stdout + p.stderr)[-2000:],
        }
    res: dict[str, Any] = {
        "client": "h2load",
        "rps": float(m.group(3)),
        "cmd": " ".join(cmd),
        "protocols": {proto.group(1) if proto else "?": 1},
    }
    if r:
        res["requests"] = int(r.group(2))
        failed = int(r.group(4)) + int(r.group(5))
        # with -D, the streams still in flight when the clock stops count as "errored"
        res["aborted_at_end"] = min(failed, streams)
        res["errors"] = failed - res["aborted_at_end"]
    if t:
        res["mean_ms"] = _dur_ms(t.group(3))
        res["max_ms"] = _dur_ms(t.group(2))
    return res


def _dur_ms(s: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", s)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def run_curl(url: str, ca: str, runs: int) -> dict[str, Any]:
    exe = shutil.which("curl")
    if not exe:
        return {"fatal": "curl not installed"}
    times: list[float] = []
    proto = "?"
    for _ in range(runs):
        p = subprocess.run(
            [
                exe,
                "--http2",
                "-sS",
                "-o",
                "/dev/null",
                "--cacert",
                ca,
                "-w",
                "%{http_version} %{size_download} %{time_appconnect} %{time_total}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        parts = p.stdout.split()
        if p.returncode or len(parts) != 4 or int(float(parts[1])) != BIG_SIZE:
            return {"fatal": f"curl failed rc={p.returncode}: {p.stdout} {p.stderr[-500:]}"}
        proto = "HTTP/" + parts[0]
        times.append(float(parts[3]) - float(parts[2]))  # exclude TCP+TLS setup
    best = min(times)
    return {
        "kind": "curl",
        "protocol": proto,
        "times_s": times,
        "best_s": best,
        "mb_s": BIG_SIZE / best / 1e6,
    }


# --------------------------------------------------------------------------- h2 ceiling


def h2_ceiling(authority: str, fast: bool, budget_s: float, batch: int = 100) -> dict[str, Any]:
    """Client-side cost of a small GET in pure h2, bytes passed in memory.

    Only the client's work is timed: send_headers + data_to_send for a batch of
    streams, then receive_data of the server's response bytes, event handling,
    acknowledge_received_data and the resulting data_to_send.
    """
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import DataReceived, RequestReceived, ResponseReceived, StreamEnded

    kw: dict[str, Any] = {"header_encoding": None}
    if fast:
        kw.update(validate_outbound_headers=False, normalize_outbound_headers=False)
    client = H2Connection(H2Configuration(client_side=True, **kw))
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # SETTINGS ack

    req = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", b"/13b"),
        (b"user-agent", b"h2pool-bench/1"),
        (b"accept", b"*/*"),
    ]
    resp_headers = [
        (b":status", b"200"),
        (b"server", b"nginx/1.22.1"),
        (b"date", b"Thu, 01 Jan 2026 00:00:00 GMT"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"13"),
    ]
    body = b"hello, world\n"
    pc = time.perf_counter
    client_t = 0.0
    done = 0
    wall0 = pc()
    while pc() - wall0 < budget_s or done == 0:
        t = pc()
        for _ in range(batch):
            sid = client.get_next_available_stream_id()
            client.send_headers(sid, req, end_stream=True)
        out = client.data_to_send()
        client_t += pc() - t

        for ev in server.receive_data(out):
            if isinstance(ev, RequestReceived):
                server.send_headers(ev.stream_id, resp_headers)
                server.send_data(ev.stream_id, body, end_stream=True)
        out = server.data_to_send()

        t = pc()
        got = 0
        status = b""
        for ev in client.receive_data(out):
            if isinstance(ev, ResponseReceived):
                status = ev.headers[0][1]
            elif isinstance(ev, DataReceived):
                got += len(ev.data)
                client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, StreamEnded):
                done += 1
        out = client.data_to_send()
        client_t += pc() - t
        if got != batch * len(body) or status != b"200":
            raise RuntimeError("h2 ceiling: bad exchange")
        if out:
            server.receive_data(out)
    return {
        "config": "fast" if fast else "default",
        "requests": done,
        "client_s": client_t,
        "rps": done / client_t,
        "us_per_req": 1e6 * client_t / done,
        "batch": batch,
    }


# --------------------------------------------------------------------------- reporting


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return fmt.format(v)


def small_row(threads: int, name: str, r: dict[str, Any]) -> str:
    if "fatal" in r:
        return f"{threads:>7}  {name:<9} FAILED: {r['fatal']}"
    protos = ",".join(f"{k}" for k in r.get("protocols", {})) or r.get("probe_protocol", "?")
    conns = r.get("connections")
    return (
        f"{threads:>7}  {name:<9} {r['rps']:>9.0f} {_f(r.get('p50_ms')):>8} "
        f"{_f(r.get('p99_ms')):>8} {_f(r.get('p999_ms')):>8} {_f(r.get('mean_ms')):>8} "
        f"{r.get('errors', 0):>6} {('-' if conns is None else conns):>5}  {protos}"
        + (
            f"  (+{r['errors_outside_window']} errors outside the window)"
            if r.get("errors_outside_window")
            else ""
        )
        + (f"  stuck={r['stuck_threads']}" if r.get("stuck_threads") else "")
        + ("  close() hung" if r.get("close_hung") else "")
    )


SMALL_HEADER = (
    f"{'threads':>7}  {'client':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'p999 ms':>8} {'mean ms':>8} {'errors':>6} {'conns':>5}  proto"
)


def machine_info(ng: Any = None) -> dict[str, Any]:
    def ver(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    def cmd_out(*cmd: str) -> str | None:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception:
            return None

    git = cmd_out("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = cmd_out("git", "-C", str(ROOT), "status", "--porcelain", "--", "h2pool")
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": os.getloadavg(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": {
            p: ver(p)
            for p in (
                "h2",
                "hpack",
                "hyperframe",
                "httpx",
                "httpcore",
                "niquests",
                "urllib3-future",
                "jh2",
                "certifi",
            )
        },
        "nginx": cmd_out(shutil.which("nginx") or "/usr/sbin/nginx", "-v"),
        "h2load": cmd_out("h2load", "--version"),
        "curl": cmd_out("curl", "--version"),
        "git_head": git,
        "h2pool_dirty": bool(dirty),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def h2pool_available() -> tuple[bool, str]:
    p = subprocess.run(
        [sys.executable, "-c", "import h2pool; h2pool.Client; print(h2pool.__file__)"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if p.returncode == 0:
        return True, p.stdout.strip()
    return False, (p.stderr.strip().splitlines() or ["?"])[-1]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter run (~1.5 min)")
    ap.add_argument(
        "--threads", help="comma-separated thread counts (default 1,8,64,256,1000; quick 1,8,64)"
    )
    ap.add_argument("--clients", help=f"comma-separated subset of {','.join(ALL_CLIENTS)}")
    ap.add_argument("--duration", type=float, help="measured seconds per run (8; quick 3)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per run (1.5; quick 0.5)")
    ap.add_argument(
        "--reps",
        type=int,
        default=1,
        help="round-robin repetitions per thread count; best rps is reported",
    )
    ap.add_argument("--nginx-workers", default="1", help="nginx worker_processes (default 1)")
    ap.add_argument("--no-small", action="store_true", help="skip the small-GET benchmark")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the pure-h2 ceiling")
    ap.add_argument("--no-download", action="store_true", help="skip the 100 MiB download")
    ap.add_argument(
        "--no-threads", action="store_true", help="skip 16 threads x 50 x 1 MiB through one client"
    )
    ap.add_argument("--no-upload", action="store_true", help="skip the 64 MiB upload")
    ap.add_argument(
        "--no-rss", action="store_true", help="skip the slow reader's peak RSS on 1 GiB"
    )
    ap.add_argument(
        "--no-inflight",
        action="store_true",
        help="skip the RSS of 1,000 / 10,000 outstanding submit()s",
    )
    ap.add_argument(
        "--no-async", action="store_true", help="skip the asyncio clients and the mixed run"
    )
    ap.add_argument(
        "--coroutines",
        default="1,64,1000",
        help="comma-separated coroutine counts for the asyncio section (default 1,64,1000)",
    )
    ap.add_argument("--no-chart", action="store_true", help="don't write the PNG chart")
    ap.add_argument("--json", help="result file (default stress/results/bench-<ts>.json)")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        worker_main(args._worker)
        return 0

    quick = args.quick
    threads = [
        int(x) for x in (args.threads or ("1,8,64" if quick else "1,8,64,256,1000")).split(",")
    ]
    clients = [c.strip() for c in (args.clients or ",".join(ALL_CLIENTS)).split(",") if c.strip()]
    unknown = [c for c in clients if c not in ALL_CLIENTS]
    if unknown:
        ap.error(f"unknown clients {unknown}; choose from {ALL_CLIENTS}")
    duration = args.duration or (3.0 if quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.5)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # even if started with SIGINT ignored (e.g. `cmd &` from a script), Ctrl-C/kill -INT
    # must reach the cleanup below
    signal.signal(signal.SIGINT, signal.default_int_handler)

    ok, where = h2pool_available()
    print(f"h2pool: {'available at ' + where if ok else 'not available (' + where + ')'}")
    if not ok:
        clients = [c for c in clients if c != "h2pool"]

    from _servers import Nginx

    t_start = time.time()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "mode": "quick" if quick else "full",
        "machine": machine_info(),
        "h2pool_available": ok,
        "settings": {
            "threads": threads,
            "clients": clients,
            "duration": duration,
            "warmup": warmup,
            "reps": args.reps,
            "nginx_workers": args.nginx_workers,
        },
        "small": [],
        "ceiling": [],
        "download": [],
        "threads": [],
        "upload": [],
        "rss": [],
        "inflight": [],
    }
    m = results["machine"]
    print(
        f"machine: {m['nproc']} cpus ({m['cpu']}), load {m['loadavg'][0]:.2f}, "
        f"Python {m['python']}, h2 {m['packages']['h2']}, httpx {m['packages']['httpx']}, "
        f"niquests {m['packages']['niquests']}"
    )
    out_path = (
        Path(args.json)
        if args.json
        else (HERE / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    )

    try:
        with Nginx(workers=args.nginx_workers) as ng:
            ng.new_log_lines()  # skip the start-up notices
            print(f"nginx: {ng.base} (worker_processes {args.nginx_workers}), CA {ng.ca_path}")
            if not args.no_ceiling:
                section_ceiling(results, ng, quick)
            if not args.no_small and clients:
                section_small(results, ng, clients, threads, warmup, duration, args.reps)
            if not args.no_download:
                section_download(results, ng, ok, quick)
            if not args.no_threads:
                section_threads(results, ng, ok, quick)
            if not args.no_upload:
                section_upload(results, ng, ok, quick)
            if not args.no_rss:
                section_rss(results, ng, ok, quick)
            if not args.no_inflight:
                section_inflight(results, ok)
            if not args.no_async and ok:
                counts = [int(x) for x in args.coroutines.split(",")]
                _async_bench.section_async(
                    results, ng, run_worker, counts, warmup, duration, args.reps
                )
    except KeyboardInterrupt:
        print("\ninterrupted; partial results follow", file=sys.stderr)
        results["interrupted"] = True
        _workers.kill_current()
    finally:
        results["elapsed_s"] = round(time.time() - t_start, 1)
        results["machine"]["loadavg_end"] = os.getloadavg()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nresults written to {out_path} ({results['elapsed_s']} s)")
        if not args.no_chart:
            try:
                write_chart(results, out_path.with_suffix(".png"))
            except Exception as e:  # a chart must never cost the results
                print(f"chart failed: {_err_key(e)}")
    return 130 if results.get("interrupted") else 0


def section_ceiling(results: dict[str, Any], ng: Any, quick: bool) -> None:
    print("\n== pure-h2 client-side ceiling (in-memory, 100 streams/batch, one core) ==")
    budget = 1.5 if quick else 3.0
    for fast in (False, True):
        r = h2_ceiling(f"localhost:{ng.port}", fast, budget)
        results["ceiling"].append(r)
        label = "validate/normalize_outbound_headers=False" if fast else "h2 default config"
        print(f"  {label:<44} {r['rps']:>9.0f} req/s  ({r['us_per_req']:.1f} us/request)")


def section_small(
    results: dict[str, Any],
    ng: Any,
    clients: list[str],
    threads: list[int],
    warmup: float,
    duration: float,
    reps: int,
) -> None:
    url = ng.base + "/13b"
    print(
        f"\n== small GET {url}: one shared client, N threads, {warmup}s warm-up + "
        f"{duration}s measured =="
    )
    print(SMALL_HEADER)
    table: dict[tuple[int, str], dict[str, Any]] = {}
    for ti, n in enumerate(threads):
        for rep in range(reps):
            k = (ti + rep) % len(clients)
            order = clients[k:] + clients[:k]  # rotate so no client always goes first
            for name in order:
                if name == "niquests" and n > NIQUESTS_MAX_THREADS:
                    if rep == 0:
                        print(
                            f"{n:>7}  {name:<9} skipped: more than {NIQUESTS_MAX_THREADS} "
                            "threads (one connection per busy thread, pool of 10)"
                        )
                        results["small"].append(
                            {"threads": n, "client": name, "rep": rep, "skipped": True}
                        )
                    continue
                before = ng.accepts()
                if name == "h2load":
                    r = run_h2load(url, warmup, duration)
                else:
                    spec = {
                        "what": "load",
                        "client": name,
                        "url": url,
                        "ca": ng.ca_path,
                        "threads": n,
                        "warmup": warmup,
                        "duration": duration,
                    }
                    r = run_worker(spec, timeout=warmup + duration + REQ_TIMEOUT + 60)
                after = ng.accepts()
                if before is not None and after is not None:
                    r["connections"] = after - before - 1  # minus our own status request
                log = ng.new_log_lines()
                if log:
                    r["nginx_log"] = log[:20]
                    r["nginx_log_lines"] = len(log)
                r.update(threads=n, client=name, rep=rep)
                results["small"].append(r)
                print(small_row(n, name, r), flush=True)
                if r.get("error_kinds"):
                    for kind, cnt in r["error_kinds"].items():
                        print(f"{'':>18}{cnt} x {kind}")
                for line in r.get("nginx_log", [])[:2]:
                    print(f"{'':>18}nginx: {line.split('] ', 1)[-1][:150]}")
                if "fatal" in r and r.get("stderr"):
                    print("    " + r["stderr"].strip().splitlines()[-1][:200])
                best = table.get((n, name))
                if "fatal" not in r and (best is None or r["rps"] > best.get("rps", -1)):
                    table[(n, name)] = r
    # ratios
    print("\n   ratios (req/s, best of reps):")
    print(
        f"   {'threads':>7}  {'h2pool/httpx':>12} {'h2pool/niquests':>15} "
        f"{'h2pool/h2load':>13} {'httpx/niquests':>14} {'h2pool/h2pool@64':>16} "
        f"{'h2pool errors':>13} {'h2pool conns':>12}"
    )
    summary = []
    at64 = table.get((64, "h2pool"))
    for n in threads:

        def rps(c: str, n: int = n) -> float | None:
            r = table.get((n, c))
            return r["rps"] if r else None

        def ratio(a: str, b: str) -> float | None:
            x, y = rps(a), rps(b)
            return x / y if x is not None and y else None

        row = {
            "threads": n,
            **{c: rps(c) for c in ALL_CLIENTS},
            "h2pool/httpx": ratio("h2pool", "httpx"),
            "h2pool/niquests": ratio("h2pool", "niquests"),
            "h2pool/h2load": ratio("h2pool", "h2load"),
            "httpx/niquests": ratio("httpx", "niquests"),
            "h2pool-args/h2pool": ratio("h2pool-args", "h2pool"),
        }
        ours = table.get((n, "h2pool"))
        row["h2pool/h2pool@64"] = ours["rps"] / at64["rps"] if ours and at64 else None
        row["h2pool_errors"] = ours.get("errors") if ours else None
        row["h2pool_connections"] = ours.get("connections") if ours else None
        summary.append(row)
        print(
            f"   {n:>7}  {_f(row['h2pool/httpx']):>12} {_f(row['h2pool/niquests']):>15} "
            f"{_f(row['h2pool/h2load'], '{:.3f}'):>13} {_f(row['httpx/niquests']):>14} "
            f"{_f(row['h2pool/h2pool@64']):>16} {_f(row['h2pool_errors'], '{}'):>13} "
            f"{_f(row['h2pool_connections'], '{}'):>12}"
            + (
                f"   h2pool-args/h2pool {_f(row['h2pool-args/h2pool'])}"
                if row["h2pool-args/h2pool"] is not None
                else ""
            )
        )
    results["small_summary"] = summary


def section_download(results: dict[str, Any], ng: Any, h2pool_ok: bool, quick: bool) -> None:
    url, small = ng.base + "/100m", ng.base + "/13b"
    runs = 2
    print(f"\n== 100 MiB single-stream download {url} (best of {runs}, warm connection) ==")
    kinds = [k for k in DL_KINDS if h2pool_ok or not k.startswith("h2pool")]
    if not h2pool_ok:
        print("  h2pool: not available")
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        if kind == "curl":
            r = run_curl(url, ng.ca_path, runs)
        else:
            spec = {
                "what": "download",
                "kind": kind,
                "url": url,
                "small_url": small,
                "ca": ng.ca_path,
                "runs": runs,
            }
            r = run_worker(spec, timeout=180)
        r["kind"] = kind
        log = ng.new_log_lines()
        if log:
            r["nginx_log"] = log[:20]
        results["download"].append(r)
        by_kind[kind] = r
        if "fatal" in r:
            print(f"  {kind:<16} FAILED: {r['fatal']}")
            if r.get("stderr"):
                print("    " + r["stderr"].strip().splitlines()[-1][:200])
        else:
            times = ", ".join(f"{t:.3f}" for t in r["times_s"])
            print(
                f"  {kind:<16} {r['mb_s']:>8.1f} MB/s  {r['protocol']:<8} (runs: {times} s)",
                flush=True,
            )

    def mbs(k: str) -> float | None:
        r = by_kind.get(k)
        return r.get("mb_s") if r else None

    ratios = {}
    for a, b in (
        ("h2pool-stream", "httpx-stream"),
        ("h2pool-content", "httpx-stream"),
        ("h2pool-content", "h2pool-stream"),  # buffered vs streamed: target >= 0.9
        ("h2pool-stream", "curl"),
    ):
        x, y = mbs(a), mbs(b)
        if x and y:
            ratios[f"{a}/{b}"] = x / y
            print(f"  ratio {a}/{b}: {x / y:.2f}")
    results["download_ratios"] = ratios


def _flow_clients(h2pool_ok: bool) -> list[str]:
    if not h2pool_ok:
        print("  h2pool: not available")
    return [c for c in ("h2pool", "httpx") if h2pool_ok or c != "h2pool"]


def _report_fatal(label: str, r: dict[str, Any]) -> bool:
    if "fatal" not in r:
        return False
    print(f"  {label:<16} FAILED: {r['fatal']}")
    if r.get("stderr"):
        print("    " + r["stderr"].strip().splitlines()[-1][:200])
    return True


def section_threads(results: dict[str, Any], ng: Any, h2pool_ok: bool, quick: bool) -> None:
    url = ng.base + "/1m"
    runs = 1 if quick else 2
    print(
        f"\n== {THREADS_N} threads x {THREADS_EACH} GETs of {url}, one shared client "
        f"(best of {runs}) =="
    )
    mbs: dict[str, float] = {}
    for name in _flow_clients(h2pool_ok):
        before = ng.accepts()
        spec = {
            "what": "threads",
            "client": name,
            "url": url,
            "ca": ng.ca_path,
            "threads": THREADS_N,
            "each": THREADS_EACH,
            "runs": runs,
        }
        r = run_worker(spec, timeout=300)
        after = ng.accepts()
        if before is not None and after is not None:
            r["connections"] = after - before - 1  # minus our own status request
        r["client"] = name
        log = ng.new_log_lines()
        if log:
            r["nginx_log"] = log[:20]
        results["threads"].append(r)
        if _report_fatal(name, r):
            continue
        mbs[name] = r["mb_s"]
        times = ", ".join(f"{t:.2f}" for t in r["times_s"])
        print(
            f"  {name:<16} {r['mb_s']:>8.1f} MB/s  conns {r.get('connections', '-')}  "
            f"errors {r['errors']}  (runs: {times} s)",
            flush=True,
        )
        for kind, cnt in r.get("error_kinds", {}).items():
            print(f"{'':>18}{cnt} x {kind}")
    if mbs.get("h2pool") and mbs.get("httpx"):
        ratio = mbs["h2pool"] / mbs["httpx"]
        results["threads_ratio"] = {"h2pool/httpx": ratio}
        print(f"  ratio h2pool/httpx: {ratio:.2f}")


def section_upload(results: dict[str, Any], ng: Any, h2pool_ok: bool, quick: bool) -> None:
    runs = 3 if quick else 5
    print(
        f"\n== 64 MiB upload: PUT {ng.base}/upload/NAME (nginx WebDAV stores the whole "
        f"body before answering; best of {runs}, warm connection) =="
    )
    mbs: dict[str, float] = {}
    for name in _flow_clients(h2pool_ok):
        for how in ("bytes", "iter"):
            kind = f"{name}-{how}"
            spec = {"what": "upload", "kind": kind, "base": ng.base, "ca": ng.ca_path, "runs": runs}
            r = run_worker(spec, timeout=300)
            r["kind"] = kind
            # nginx must have stored every byte: the upload was timed to its end.
            for f in r.get("files", []):
                path = ng.upload_dir / f
                size = path.stat().st_size if path.exists() else None
                path.unlink(missing_ok=True)
                if size != UPLOAD_SIZE and "fatal" not in r:
                    r["fatal"] = f"nginx stored {size} bytes of {f}, not {UPLOAD_SIZE}"
            log = ng.new_log_lines()
            if log:
                r["nginx_log"] = log[:20]
            results["upload"].append(r)
            if _report_fatal(kind, r):
                continue
            mbs[kind] = r["mb_s"]
            times = ", ".join(f"{t:.3f}" for t in r["times_s"])
            print(f"  {kind:<16} {r['mb_s']:>8.1f} MB/s  (runs: {times} s)", flush=True)
    ratios = {}
    for how in ("bytes", "iter"):
        x, y = mbs.get(f"h2pool-{how}"), mbs.get(f"httpx-{how}")
        if x and y:
            ratios[f"h2pool-{how}/httpx-{how}"] = x / y
            print(f"  ratio h2pool-{how}/httpx-{how}: {x / y:.2f}")
    results["upload_ratios"] = ratios


def section_rss(results: dict[str, Any], ng: Any, h2pool_ok: bool, quick: bool) -> None:
    url = ng.base + "/1g"
    print(f"\n== peak RSS: stream {url} (1 GiB), reader sleeps 1 ms per 64 KiB ==")
    clients = _flow_clients(h2pool_ok)
    if quick:
        clients = [c for c in clients if c == "h2pool"] or clients[:1]
    growth: dict[str, float] = {}
    peak: dict[str, float] = {}
    for name in clients:
        spec = {
            "what": "rss",
            "client": name,
            "url": url,
            "small_url": ng.base + "/13b",
            "ca": ng.ca_path,
        }
        r = run_worker(spec, timeout=300)
        r["client"] = name
        results["rss"].append(r)
        if _report_fatal(name, r):
            continue
        growth[name] = r["growth_mib"]
        peak[name] = r["peak_rss_mib"]
        print(
            f"  {name:<16} peak RSS {r['peak_rss_mib']:>7.1f} MiB  (before the download "
            f"{r['rss_before_mib']:.1f} MiB, growth {r['growth_mib']:.1f} MiB; "
            f"{r['elapsed_s']:.1f} s)",
            flush=True,
        )
    ours, theirs = peak.get("h2pool"), peak.get("httpx")
    if ours and theirs:
        results["rss_ratio"] = {"peak h2pool/httpx": ours / theirs}
        print(
            f"  ratio peak RSS h2pool/httpx: {ours / theirs:.2f}  (growth during the download: "
            f"h2pool {growth['h2pool']:.1f} MiB, httpx {growth['httpx']:.1f} MiB)"
        )


def section_inflight(results: dict[str, Any], h2pool_ok: bool) -> None:
    print(
        f"\n== memory per in-flight request: N outstanding h2pool submit()s to an in-process "
        f"h2c server that never answers (MAX_CONCURRENT_STREAMS {STALL_MAX_STREAMS}, "
        f"default Limits: 8 connections, the rest queue) =="
    )
    if not h2pool_ok:
        print("  h2pool: not available")
        return
    for n in INFLIGHT_COUNTS:
        r = run_worker({"what": "inflight", "n": n}, timeout=180)
        r["n"] = n
        results["inflight"].append(r)
        if _report_fatal(f"N={n}", r):
            continue
        print(
            f"  N={n:<6} RSS +{r['delta_mib']:6.1f} MiB  ({r['per_1000_mib']:.2f} MiB per 1,000; "
            f"{r['rss_before_mib']:.1f} -> {r['rss_after_mib']:.1f} MiB)  "
            f"conns {r['connections']}  on streams {r['open_streams']}  queued {r['queued']}  "
            f"submit {r['submit_s'] * 1000:.0f} ms, cancel {r['cancel_s'] * 1000:.0f} ms, "
            f"close {r['close_s'] * 1000:.0f} ms",
            flush=True,
        )


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Requests/s vs threads, one line per client (best of reps), log-x; needs matplotlib."""
    rows = [r for r in results.get("small", []) if "rps" in r and "fatal" not in r]
    if not rows:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        print("chart skipped (matplotlib is not installed)")
        return
    best: dict[str, dict[int, float]] = {}
    for r in rows:
        per = best.setdefault(r["client"], {})
        per[r["threads"]] = max(per.get(r["threads"], 0.0), r["rps"])
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    for client in ALL_CLIENTS:
        if client not in best:
            continue
        xs = sorted(best[client])
        label = "h2load (1 conn, 100 streams: the limit)" if client == "h2load" else client
        ax.plot(xs, [best[client][x] for x in xs], marker="o", label=label)
    ax.set_xscale("log")
    if "h2load" in best:
        ax.set_yscale("log")
    xs_all = sorted({x for per in best.values() for x in per})
    ax.set_xticks(xs_all)
    ax.set_xticklabels([str(x) for x in xs_all])
    ax.minorticks_off()
    ax.set_xlabel("caller threads sharing one client")
    ax.set_ylabel("requests/s (13-byte GET)")
    m = results.get("machine", {})
    ax.set_title(
        f"small GET, nginx h2 TLS loopback, {m.get('nproc')} cpus, "
        f"{results.get('started', '')[:10]} ({m.get('git_head')})",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    # Beside the plot, never over a line.
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"chart written to {path}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
