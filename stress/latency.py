#!/usr/bin/env python3
"""Large downloads over a long link: h2pool and httpx at several round-trip times.

    python stress/latency.py                  # RTT 0/50/100 ms, 50 MB, 3 reps (~2-3 min)
    python stress/latency.py --quick          # 20 MB, 1 rep
    PYTHONPATH=/some/tree python stress/latency.py   # measure that tree's h2pool

Starts its own nginx (stress/_servers.py, HTTP/2 over TLS on loopback) and puts
stress/faultproxy.py in front of it with a one-way delay of RTT/2 in each direction
and a 64 MiB relay buffer per direction (a link with a large bandwidth-delay
product; the relay's default 256 KiB would cap every client at 256 KiB per delay).
For each RTT, each variant downloads one body of ``--size-mb`` MB of random bytes
per repetition, in its own subprocess, on a warm connection, from the request call
to the last byte; size and sha256 are checked after the clock stops. The variants
run interleaved (the order rotates), and the script prints MB/s (10^6 bytes/s,
median and best) per variant and the h2pool/httpx ratios per RTT. It asserts
nothing about speed. Results go to ``stress/results/latency-<ts>.json``.
See stress/README.md ("Long links").

h2pool is imported normally (no path tricks): whatever ``import h2pool`` finds is
measured, and its ``__file__`` is printed first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _workers  # noqa: E402  (stress/ is on sys.path now)

MIB = 1024 * 1024
RELAY_HIGH_WATER = 64 * MIB  # bytes the relay may hold per direction per connection
BIG_WINDOW = 8 * MIB
# httpcore 1.0 opens each HTTP/2 stream's receive window by 2**24 on top of the
# protocol's initial 65 535 (httpcore/_sync/http2.py, increment_flow_control_window).
HTTPX_STREAM_WINDOW = 2**24 + 65535

# name -> (client, how the body is read, h2pool stream_window or None)
VARIANTS: dict[str, tuple[str, str, int | None]] = {
    "h2pool-stream": ("h2pool", "stream", None),
    "h2pool-content": ("h2pool", "content", None),
    "h2pool-stream-8MiB": ("h2pool", "stream", BIG_WINDOW),
    # The second download on the same connection: what a long-lived Client sees once
    # its receive windows have grown to the link (h2pool/_http2/flow.py).
    "h2pool-stream-2nd": ("h2pool", "stream-2nd", None),
    "httpx-stream": ("httpx", "stream", None),
    "httpx-stream-2nd": ("httpx", "stream-2nd", None),
}
LABELS = {
    "h2pool-stream": "h2pool stream",
    "h2pool-content": "h2pool .content",
    "h2pool-stream-8MiB": "h2pool stream_window=8MiB",
    "h2pool-stream-2nd": "h2pool stream, 2nd",
    "httpx-stream": "httpx stream",
    "httpx-stream-2nd": "httpx stream, 2nd",
}
RATIOS = (
    ("h2pool-stream", "httpx-stream"),
    ("h2pool-content", "httpx-stream"),
    ("h2pool-stream-2nd", "httpx-stream-2nd"),
    ("h2pool-stream-8MiB", "httpx-stream"),
)
PROBES = 3  # small GETs after the warm-up one: the smallest is the RTT seen by the client


# --------------------------------------------------------------------------- worker


def _probe(get: Callable[[], object]) -> list[float]:
    """One warm-up small GET, then PROBES timed ones (seconds each)."""
    get()
    times = []
    for _ in range(PROBES):
        t0 = time.perf_counter()
        get()
        times.append(time.perf_counter() - t0)
    return times


def worker_download(spec: dict[str, Any]) -> dict[str, Any]:
    """One client, one warm-up GET, PROBES timed small GETs, one timed download."""
    client_name, how, window = VARIANTS[spec["variant"]]
    url, small, ca, timeout = spec["url"], spec["small_url"], spec["ca"], spec["timeout"]
    chunks: list[bytes] = []
    res: dict[str, Any] = {"variant": spec["variant"]}
    if client_name == "h2pool":
        import h2pool

        res["h2pool_file"] = h2pool.__file__
        limits = h2pool.Limits() if window is None else h2pool.Limits(stream_window=window)
        res["stream_window"] = limits.stream_window
        res["connection_window"] = limits.connection_window
        client = h2pool.Client(verify=ca, timeout=timeout, limits=limits)
        probes = _probe(lambda: client.get(small).content)
        if how == "stream-2nd":  # a first, untimed download on the same connection
            with client.stream("GET", url) as r:
                for _chunk in r.iter_bytes():
                    pass
        t0 = time.perf_counter()
        if how in ("stream", "stream-2nd"):
            with client.stream("GET", url) as r:
                for chunk in r.iter_bytes():
                    chunks.append(chunk)
        else:
            r = client.get(url)
            chunks.append(r.content)
        elapsed = time.perf_counter() - t0
        status, proto = r.status, str(r.http_version)
        res["stats"] = client.stats()
        client.close()
    else:
        import ssl

        import httpx

        res["stream_window"] = HTTPX_STREAM_WINDOW
        ctx = ssl.create_default_context(cafile=ca)
        hx = httpx.Client(http2=True, verify=ctx, timeout=timeout)
        probes = _probe(lambda: hx.get(small).content)
        if how == "stream-2nd":  # a first, untimed download on the same connection
            with hx.stream("GET", url) as rx:
                for _chunk in rx.iter_bytes():
                    pass
        t0 = time.perf_counter()
        with hx.stream("GET", url) as rx:
            for chunk in rx.iter_bytes():
                chunks.append(chunk)
        elapsed = time.perf_counter() - t0
        status, proto = rx.status_code, rx.http_version
        hx.close()
    got = sum(len(c) for c in chunks)
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    if status != 200 or got != spec["size"] or h.hexdigest() != spec["sha256"]:
        raise RuntimeError(
            f"bad download: status={status} got={got} of {spec['size']} "
            f"sha256 {'ok' if h.hexdigest() == spec['sha256'] else 'MISMATCH'}"
        )
    res.update(
        protocol=proto,
        time_s=elapsed,
        mb_s=got / elapsed / 1e6,
        chunks=len(chunks),
        probe_ms=min(probes) * 1000,
    )
    return res


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent handles Ctrl-C
    try:
        res = worker_download(spec)
    except BaseException as e:  # report, never traceback-and-hang
        import traceback

        res = {
            "fatal": f"{type(e).__name__}: {e}"[:300],
            "traceback": traceback.format_exc()[-2000:],
        }
    sys.stdout.write("RESULT " + json.dumps(res, default=str) + "\n")
    sys.stdout.flush()
    os._exit(0)  # don't wait for threads a client may have left behind


# --------------------------------------------------------------------------- parent side


def run_worker(spec: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Run one download in a fresh interpreter; kill it after ``deadline`` seconds."""
    return _workers.run_worker(__file__, spec, deadline)


def make_body(path: Path, size: int) -> str:
    """Write ``size`` bytes (one random MiB repeated, cut to size); return the sha256."""
    block = os.urandom(MIB)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            part = block[: min(left, MIB)]
            f.write(part)
            h.update(part)
            left -= len(part)
    return h.hexdigest()


def start_nginx(size: int) -> tuple[Any, str]:
    """The bench nginx plus ``location = /lat`` serving a body of ``size`` bytes.

    Like stress/soak.py: nginx.conf is rewritten and reloaded, so _servers.py stays
    as it is.
    """
    from _servers import CONF, NGINX, Nginx

    ng = Nginx().start()
    sha = make_body(ng.tmp / "www" / "lat", size)
    conf = CONF.replace(
        "        location = /1g {{",
        "        location = /lat {{\n            root {tmp}/www;\n        }}\n"
        "        location = /1g {{",
    )
    (ng.tmp / "nginx.conf").write_text(
        conf.format(tmp=ng.tmp, port=ng.port, status_port=ng.status_port, workers=ng.workers)
    )
    subprocess.run(
        [NGINX, "-p", str(ng.tmp), "-c", str(ng.tmp / "nginx.conf"), "-s", "reload"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # the reloaded workers serve /lat; the old ones leave once idle
    deadline = time.monotonic() + 10
    while True:
        try:
            if _status(ng.port, "/lat", ng.ca_path) == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            ng.stop()
            raise RuntimeError("nginx did not serve /lat after the reload")
        time.sleep(0.1)
    ng.new_log_lines()  # skip start-up notices and the 404s of probes before the reload
    return ng, sha


def _status(port: int, path: str, ca: str) -> int:
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection("localhost", port, timeout=5, context=ctx)
    try:
        conn.request("HEAD", path)
        return conn.getresponse().status
    finally:
        conn.close()


def machine_info() -> dict[str, Any]:
    def ver(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {p: ver(p) for p in ("h2", "hpack", "httpx", "httpcore")},
    }


def h2pool_info() -> dict[str, Any]:
    """Where ``import h2pool`` leads, and that tree's git HEAD (if it is a checkout)."""
    try:
        import h2pool
    except Exception as e:
        return {"available": False, "error": f"{type(e).__name__}: {e}"}
    tree = Path(h2pool.__file__).resolve().parent.parent
    info: dict[str, Any] = {"available": True, "file": h2pool.__file__}
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "h2pool"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode == 0:
            info["git_head"] = head.stdout.strip()
            info["dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def summarize(runs: list[dict[str, Any]], rtt: int, variant: str) -> dict[str, Any] | None:
    ok = [r for r in runs if r["rtt_ms"] == rtt and r["variant"] == variant and "mb_s" in r]
    if not ok:
        return None
    mbs = [r["mb_s"] for r in ok]
    return {
        "runs": len(ok),
        "median_mb_s": _median(mbs),
        "best_mb_s": max(mbs),
        "probe_ms": _median([r["probe_ms"] for r in ok]),
        "stream_window": ok[0].get("stream_window"),
    }


def window_bound(window: int | None, rtt: int) -> str:
    """MB/s if the receive window were the only limit: one window per round trip."""
    if not window or not rtt:
        return "-"
    return f"{window / (rtt / 1000) / 1e6:.0f}"


def print_table(
    summary: dict[int, dict[str, Any]], rtts: list[int], variants: list[str], reps: int
) -> None:
    print(f"\n== MB/s per variant ({reps} run(s) each; median / best) ==")
    print(
        f"{'RTT ms':>6}  {'variant':<26} {'median':>8} {'best':>8} "
        f"{'probe ms':>8} {'window/RTT':>10}  runs"
    )
    for rtt in rtts:
        for v in variants:
            s = summary[rtt].get(v)
            if s is None:
                print(f"{rtt:>6}  {LABELS[v]:<26} {'FAILED':>8}")
                continue
            print(
                f"{rtt:>6}  {LABELS[v]:<26} {s['median_mb_s']:>8.1f} {s['best_mb_s']:>8.1f} "
                f"{s['probe_ms']:>8.1f} {window_bound(s['stream_window'], rtt):>10}  {s['runs']}"
            )
    pairs = [(a, b) for a, b in RATIOS if a in variants and b in variants]
    if not pairs:
        return
    print("\n== ratios of medians (best in parentheses) ==")
    heads = [f"{a.replace('-stream', '')}/{b.replace('-stream', '')}" for a, b in pairs]
    print(f"{'RTT ms':>6}  " + "  ".join(f"{h:>26}" for h in heads))
    for rtt in rtts:
        cells = []
        for a, b in pairs:
            x, y = summary[rtt].get(a), summary[rtt].get(b)
            if x and y:
                med = x["median_mb_s"] / y["median_mb_s"]
                best = x["best_mb_s"] / y["best_mb_s"]
                cells.append(f"{med:.2f} ({best:.2f})")
            else:
                cells.append("-")
        print(f"{rtt:>6}  " + "  ".join(f"{c:>26}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtts", default="0,50,100", help="round-trip times in ms (default 0,50,100)")
    ap.add_argument("--size-mb", type=float, help="body size in MB of 10^6 bytes (default 50)")
    ap.add_argument("--reps", type=int, help="downloads per variant and RTT (default 3)")
    ap.add_argument("--rate", type=float, help="relay bandwidth cap, bytes/s per direction")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per download (120)")
    ap.add_argument("--quick", action="store_true", help="20 MB, 1 rep")
    ap.add_argument("--json", help="result file (default stress/results/latency-<ts>.json)")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        worker_main(args._worker)
        return 0

    rtts = [int(x) for x in args.rtts.split(",") if x.strip()]
    size = int((args.size_mb or (20 if args.quick else 50)) * 1e6)
    reps = args.reps or (1 if args.quick else 3)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    h2 = h2pool_info()
    if h2["available"]:
        where = h2["file"]
        if "git_head" in h2:
            where += f" (git {h2['git_head']}{', uncommitted changes' if h2['dirty'] else ''})"
        print(f"h2pool: {where}")
        variants = list(VARIANTS)
    else:
        print(f"h2pool: not available ({h2['error']})")
        variants = [v for v in VARIANTS if VARIANTS[v][0] != "h2pool"]
    machine = machine_info()
    print(
        f"machine: {machine['nproc']} cpus, load {machine['loadavg'][0]:.2f}, "
        f"Python {machine['python']}, h2 {machine['packages']['h2']}, "
        f"httpx {machine['packages']['httpx']}, httpcore {machine['packages']['httpcore']}"
    )
    out_path = (
        Path(args.json)
        if args.json
        else HERE / "results" / f"latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    t_start = time.time()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "machine": machine,
        "h2pool": h2,
        "settings": {
            "rtts_ms": rtts,
            "size": size,
            "reps": reps,
            "rate": args.rate,
            "timeout": args.timeout,
            "relay_high_water": RELAY_HIGH_WATER,
            "variants": variants,
        },
        "runs": [],
    }
    from faultproxy import FaultProxy

    ng = None
    proxy = None
    stats_shown = False
    try:
        ng, sha = start_nginx(size)
        proxy = FaultProxy(("127.0.0.1", ng.port), high_water=RELAY_HIGH_WATER).start()
        base = f"https://localhost:{proxy.port}"
        print(
            f"nginx {ng.base} behind relay {base} (high water {RELAY_HIGH_WATER // MIB} MiB, "
            f"rate {args.rate or 'unlimited'}); body /lat {size / 1e6:g} MB, sha256 {sha[:16]}"
        )
        for i, rtt in enumerate(rtts):
            proxy.set(delay=rtt / 2, rate=args.rate)
            print(f"\n-- RTT {rtt} ms (delay {rtt / 2:g} ms each way) --", flush=True)
            for rep in range(reps):
                k = (i + rep) % len(variants)
                for v in variants[k:] + variants[:k]:  # rotate: nobody always goes first
                    spec = {
                        "variant": v,
                        "url": base + "/lat",
                        "small_url": base + "/13b",
                        "ca": ng.ca_path,
                        "size": size,
                        "sha256": sha,
                        "timeout": args.timeout,
                    }
                    r = run_worker(spec, deadline=args.timeout + 30)
                    r.update(variant=v, rtt_ms=rtt, rep=rep)
                    log = ng.new_log_lines()
                    if log:
                        r["nginx_log"] = log[:20]
                    results["runs"].append(r)
                    if "fatal" in r:
                        print(f"  {LABELS[v]:<26} FAILED: {r['fatal']}")
                        if r.get("stderr"):
                            print("    " + r["stderr"].strip().splitlines()[-1][:200])
                        continue
                    print(
                        f"  {LABELS[v]:<26} {r['mb_s']:>7.1f} MB/s  {r['time_s']:6.2f} s  "
                        f"probe {r['probe_ms']:5.1f} ms  {r['protocol']}",
                        flush=True,
                    )
                    if h2["available"] and r.get("h2pool_file", h2["file"]) != h2["file"]:
                        print(f"  WARNING: the worker imported h2pool from {r['h2pool_file']}")
                    if not stats_shown and "stats" in r:
                        stats_shown = True
                        print(f"  h2pool stats() after that download: {r['stats']}")
    except KeyboardInterrupt:
        print("\ninterrupted; partial results follow", file=sys.stderr)
        results["interrupted"] = True
        _workers.kill_current()
    finally:
        if proxy is not None:
            results["relay"] = proxy.stats()
            proxy.stop()
        if ng is not None:
            ng.stop()
        summary = {rtt: {v: summarize(results["runs"], rtt, v) for v in variants} for rtt in rtts}
        results["summary"] = {str(rtt): s for rtt, s in summary.items()}
        ratios: dict[str, dict[str, Any]] = {}
        for rtt in rtts:
            for a, b in RATIOS:
                x, y = summary[rtt].get(a), summary[rtt].get(b)
                if x and y:
                    ratios.setdefault(str(rtt), {})[f"{a}/{b}"] = {
                        "median": x["median_mb_s"] / y["median_mb_s"],
                        "best": x["best_mb_s"] / y["best_mb_s"],
                    }
        results["ratios"] = ratios
        print_table(summary, rtts, variants, reps)
        results["elapsed_s"] = round(time.time() - t_start, 1)
        results["machine"]["loadavg_end"] = os.getloadavg()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nresults written to {out_path} ({results['elapsed_s']} s)")
    return 130 if results.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
