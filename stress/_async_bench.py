"""asyncio benchmarks for stress/bench.py: small GETs from N coroutines on one event
loop, one client object per library (h2pool.AsyncClient, httpx.AsyncClient(http2=True),
niquests.AsyncSession, pyreqwest's async Client), and a mixed run where 32 threads and
256 coroutines share one h2pool Client.

Each run is a worker subprocess (bench.py's ``run_worker``), so libraries never share
an interpreter. Whole-process CPU seconds are taken from ``resource.getrusage``.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

SMALL_LEN = 13
REQ_TIMEOUT = 20.0
ASYNC_CLIENTS = ("h2pool", "httpx", "niquests", "pyreqwest")

Fetch = Callable[[str], Awaitable[str]]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _check(status: int, body: bytes) -> None:
    if status != 200 or len(body) != SMALL_LEN:
        raise RuntimeError(f"bad response: {status} len={len(body)}")


async def _make(name: str, ca: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    if name == "h2pool":
        import h2pool

        ac = h2pool.AsyncClient(verify=ca, timeout=REQ_TIMEOUT)

        async def fetch(url: str) -> str:
            r = await ac.get(url)
            _check(r.status, r.content)
            return r.http_version

        return fetch, ac.aclose
    if name == "httpx":
        import httpx

        hc = httpx.AsyncClient(
            http2=True,
            verify=ssl.create_default_context(cafile=ca),
            timeout=REQ_TIMEOUT,
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
        )

        async def fetch_httpx(url: str) -> str:
            r = await hc.get(url)
            _check(r.status_code, r.content)
            return r.http_version

        return fetch_httpx, hc.aclose
    if name == "niquests":
        import niquests

        s = niquests.AsyncSession()

        async def fetch_niquests(url: str) -> str:
            r = await s.get(url, verify=ca, timeout=REQ_TIMEOUT)
            _check(r.status_code or 0, r.content or b"")
            return str(r.http_version)

        return fetch_niquests, s.close
    if name == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        with open(ca, "rb") as f:
            pem = f.read()
        pc = ClientBuilder().add_root_certificate_pem(pem).build()

        async def fetch_pyreqwest(url: str) -> str:
            r = await pc.get(url).build().send()
            body = await r.bytes()
            _check(r.status, bytes(body))
            return str(r.version)

        return fetch_pyreqwest, pc.close
    raise ValueError(f"unknown async client {name!r}")


def _summary(lats: list[float], duration: float) -> dict[str, Any]:
    lats.sort()

    def pct(q: float) -> float:
        if not lats:
            return float("nan")
        return lats[min(len(lats) - 1, round(q * (len(lats) - 1)))] * 1000

    return {
        "requests": len(lats),
        "rps": len(lats) / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": lats[-1] * 1000 if lats else float("nan"),
    }


def worker_async_load(spec: dict[str, Any]) -> dict[str, Any]:
    """N coroutines on one loop share one client object; closed loop over a window."""
    name, url, n = spec["client"], spec["url"], spec["coroutines"]
    warmup, duration = spec["warmup"], spec["duration"]

    async def main() -> dict[str, Any]:
        fetch, aclose = await _make(name, spec["ca"])
        probe = await fetch(url)
        lats: list[float] = []
        errors = Counter[str]()
        pc = time.perf_counter
        start = pc()
        meas, end = start + warmup, start + warmup + duration
        cpu: list[float] = []

        async def run() -> None:
            while True:
                t0 = pc()
                if t0 >= end:
                    return
                try:
                    await fetch(url)
                except Exception as e:
                    if meas <= pc() <= end:
                        errors[f"{type(e).__name__}: {str(e)[:120]}"] += 1
                    await asyncio.sleep(0.001)
                    continue
                t1 = pc()
                if meas <= t1 <= end:
                    lats.append(t1 - t0)

        async def mark() -> None:
            await asyncio.sleep(max(0.0, meas - pc()))
            cpu.append(_cpu())
            await asyncio.sleep(max(0.0, end - pc()))
            cpu.append(_cpu())

        await asyncio.gather(mark(), *(run() for _ in range(n)))
        await aclose()
        res = _summary(lats, duration)
        res.update(
            protocol=probe,
            errors=sum(errors.values()),
            error_kinds=dict(errors.most_common(5)),
            cpu_s_per_10k=(cpu[1] - cpu[0]) / max(1, len(lats)) * 10_000 if len(cpu) == 2 else None,
        )
        return res

    res = asyncio.run(main())
    res.update(client=name, coroutines=n)
    return res


def worker_mixed(spec: dict[str, Any]) -> dict[str, Any]:
    """32 threads and 256 coroutines (one loop) on one h2pool Client, for a fixed time:
    both kinds of caller complete requests over the same few connections."""
    import h2pool

    url, duration = spec["url"], spec["duration"]
    client = h2pool.Client(verify=spec["ca"], timeout=REQ_TIMEOUT)
    client.get(url)
    end = time.perf_counter() + duration
    counts = {"threads": 0, "coroutines": 0, "errors": 0}
    lock = threading.Lock()

    def thread_work() -> None:
        done = 0
        while time.perf_counter() < end:
            try:
                _check(*(lambda r: (r.status, r.content))(client.get(url)))
                done += 1
            except Exception:
                with lock:
                    counts["errors"] += 1
        with lock:
            counts["threads"] += done

    async def coroutines() -> None:
        ac = h2pool.AsyncClient(client=client)

        async def run() -> None:
            while time.perf_counter() < end:
                try:
                    r = await ac.get(url)
                    _check(r.status, r.content)
                    counts["coroutines"] += 1  # one loop thread: no lock needed
                except Exception:
                    with lock:
                        counts["errors"] += 1

        await asyncio.gather(*(run() for _ in range(spec["coroutines"])))

    threads = [threading.Thread(target=thread_work) for _ in range(spec["threads"])]
    for t in threads:
        t.start()
    asyncio.run(coroutines())
    for t in threads:
        t.join(REQ_TIMEOUT + 5)
    stats = client.stats()
    client.close()
    return {
        **counts,
        "rps": (counts["threads"] + counts["coroutines"]) / duration,
        "connections_opened": stats["connections_opened"],
        "threads_n": spec["threads"],
        "coroutines_n": spec["coroutines"],
    }


def available(name: str) -> bool:
    import importlib.util

    module = {"h2pool": "h2pool", "httpx": "h2", "niquests": "niquests", "pyreqwest": "pyreqwest"}
    return importlib.util.find_spec(module[name]) is not None


def section_async(
    results: dict[str, Any],
    ng: Any,
    run_worker: Callable[[dict[str, Any], float], dict[str, Any]],
    counts: list[int],
    warmup: float,
    duration: float,
    reps: int,
) -> None:
    url = ng.base + "/13b"
    clients = [c for c in ASYNC_CLIENTS if available(c)]
    missing = [c for c in ASYNC_CLIENTS if c not in clients]
    print(
        f"\n== asyncio small GET {url}: N coroutines on one loop, one client object, "
        f"{warmup}s warm-up + {duration}s measured =="
        + (f" (not installed: {', '.join(missing)})" if missing else "")
    )
    print(
        f"{'coros':>7}  {'client':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'CPU s/10k':>10}"
    )
    best: dict[tuple[int, str], dict[str, Any]] = {}
    rows = results.setdefault("async", [])
    for n in counts:
        for rep in range(reps):
            k = rep % len(clients)
            for name in clients[k:] + clients[:k]:
                spec = {
                    "what": "async_load",
                    "client": name,
                    "url": url,
                    "ca": ng.ca_path,
                    "coroutines": n,
                    "warmup": warmup,
                    "duration": duration,
                }
                r = run_worker(spec, warmup + duration + REQ_TIMEOUT + 60)
                r.update(client=name, coroutines=n, rep=rep)
                rows.append(r)
                if "fatal" in r:
                    print(f"{n:>7}  {name:<10} FAILED: {r['fatal'][:150]}")
                    continue
                cpu = r.get("cpu_s_per_10k")
                print(
                    f"{n:>7}  {name:<10} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                    f"{r['errors']:>7} {cpu if cpu is None else round(cpu, 2)!s:>10}",
                    flush=True,
                )
                for kind, cnt in r.get("error_kinds", {}).items():
                    print(f"{'':>19}{cnt} x {kind}")
                b = best.get((n, name))
                if b is None or r["rps"] > b["rps"]:
                    best[(n, name)] = r
    print("\n   ratios (req/s, best of reps):")
    summary = []
    for n in counts:
        ours = best.get((n, "h2pool"))
        row: dict[str, Any] = {"coroutines": n}
        parts = []
        for other in clients:
            if other == "h2pool":
                continue
            theirs = best.get((n, other))
            ratio = ours["rps"] / theirs["rps"] if ours and theirs and theirs["rps"] else None
            row[f"h2pool/{other}"] = ratio
            parts.append(f"h2pool/{other} {ratio:.2f}" if ratio else f"h2pool/{other} -")
        summary.append(row)
        print(f"   {n:>7}  " + "   ".join(parts))
    results["async_summary"] = summary
    spec = {
        "what": "mixed",
        "url": url,
        "ca": ng.ca_path,
        "threads": 32,
        "coroutines": 256,
        "duration": duration,
    }
    r = run_worker(spec, duration + REQ_TIMEOUT + 60)
    results["mixed"] = r
    if "fatal" in r:
        print(f"\n   mixed run FAILED: {r['fatal'][:150]}")
    else:
        print(
            f"\n   mixed: 32 threads + 256 coroutines on one Client: {r['rps']:.0f} req/s "
            f"({r['threads']} by threads, {r['coroutines']} by coroutines), "
            f"{r['errors']} errors, {r['connections_opened']} connection(s) opened"
        )
