"""Soak test (RELIABILITY.md H1): one h2pool client shared by N threads against nginx.

Bounded and self-stopping. nginx (started here, on 127.0.0.1) sends GOAWAY every 300
streams (``keepalive_requests 300``) and is reloaded (``nginx -s reload``) once a
minute. The request mix: mostly small GETs, some 1 MiB downloads, 2 % slow readers
(streamed 1 MiB read in 64 KiB chunks with sleeps, some closed half-way), 1 % cancels
(``future.cancel()`` after 0-20 ms) and 1 % short read timeouts against ``/slow`` (a
64 KiB file behind ``limit_rate 4k``). Every request is accounted for: ok, cancelled,
an expected error of its kind, or unexpected; ``stats()["retries"]`` counts the
transparent retries (GOAWAY bounces, reloads) inside the ok ones. RSS, open fds and
threads are sampled every few seconds and their slopes printed. After
``client.close()`` the thread and fd counts must be back to the baseline.

    python stress/soak.py --quick          # ~1 minute
    python stress/soak.py                  # 10 minutes, 64 threads
    python stress/soak.py --duration 300 --threads 128

Exit status: 0 when the accounting closes, nothing hung and threads/fds are back to
baseline; 1 otherwise (2 with ``--strict`` when an unexpected error was seen).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import CONF, NGINX, Nginx  # noqa: E402

import h2pool  # noqa: E402

MIB = 1 << 20
SLOW_SIZE = 64 * 1024
HANG_LIMIT = 60.0  # a future unresolved this long after its submit is a hang

# The bench config, with GOAWAY every 300 streams and a rate-limited location. Applied
# by rewriting nginx.conf and reloading, so stress/_servers.py and bench.py are untouched.
SOAK_CONF = CONF.replace("keepalive_requests 100000000;", "keepalive_requests 300;").replace(
    "        location = /1g {{",
    "        location = /slow {{\n"
    "            root {tmp}/www;\n"
    "            limit_rate 4k;\n"
    "        }}\n"
    "        location = /1g {{",
)


class SoakNginx(Nginx):
    def start(self) -> SoakNginx:
        super().start()
        (self.tmp / "www" / "slow").write_bytes(os.urandom(SLOW_SIZE))
        conf = self.tmp / "nginx.conf"
        conf.write_text(
            SOAK_CONF.format(
                tmp=self.tmp, port=self.port, status_port=self.status_port, workers=self.workers
            )
        )
        self.reload()
        time.sleep(0.5)
        return self

    def reload(self) -> None:
        subprocess.run(
            [NGINX, "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf"), "-s", "reload"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def vm_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t seconds, value) in value per minute."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if not den:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in samples) / den


class Soak:
    def __init__(self, args: argparse.Namespace, nginx: SoakNginx) -> None:
        self.args = args
        self.nginx = nginx
        self.base = nginx.base
        self.lock = threading.Lock()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.kinds: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.submitted = 0
        self.hangs = 0
        self.unresolved: list[Future[Any]] = []
        self.samples: list[tuple[float, int, int, int]] = []  # t, rss, fds, threads
        self.stop_at = 0.0
        self.reloads = 0

    def record(self, kind: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.kinds[kind] += 1
            self.outcomes[outcome] += 1
            if detail:
                self.errors[f"{kind}: {detail}"] += 1

    def one(self, client: h2pool.Client, rng: random.Random) -> None:
        x = rng.random()
        if x < 0.01:
            self.cancel(client, rng)
        elif x < 0.02:
            self.short_timeout(client)
        elif x < 0.04:
            self.slow_reader(client, rng)
        elif x < 0.10:
            self.get(client, "big", "/1m", MIB)
        else:
            self.get(client, "small", "/13b", 13)

    def _count_submit(self) -> None:
        with self.lock:
            self.submitted += 1

    def _wait(self, kind: str, fut: Future[Any]) -> Any:
        try:
            return fut.result(timeout=HANG_LIMIT)
        except FutureTimeout as exc:
            # On Python >= 3.11 concurrent.futures.TimeoutError IS the builtin
            # TimeoutError, which h2pool's ReadTimeout & co. also derive from.
            if isinstance(exc, h2pool.H2PoolError):
                raise
            with self.lock:
                self.hangs += 1
                self.unresolved.append(fut)
            self.record(kind, "HANG", "future unresolved after 60 s")
            return None

    def get(self, client: h2pool.Client, kind: str, path: str, size: int) -> None:
        self._count_submit()
        try:
            fut = client.submit("GET", self.base + path)
        except h2pool.H2PoolError as exc:
            self.record(kind, "unexpected error", repr(exc)[:120])
            return
        try:
            r = self._wait(kind, fut)
        except h2pool.H2PoolError as exc:
            self.record(kind, "unexpected error", f"{type(exc).__name__}: {exc}"[:120])
            return
        if r is None:
            return
        if r.status == 200 and len(r.content) == size:
            self.record(kind, "ok")
        else:
            self.record(kind, "unexpected error", f"status {r.status}, {len(r.content)} B")

    def cancel(self, client: h2pool.Client, rng: random.Random) -> None:
        kind = "cancel"
        self._count_submit()
        fut = client.submit("GET", self.base + rng.choice(["/1m", "/13b", "/slow"]))
        time.sleep(rng.uniform(0, 0.02))
        if fut.cancel():
            self.record(kind, "cancelled")
            return
        try:
            r = self._wait(kind, fut)
        except h2pool.H2PoolError as exc:
            self.record(kind, "unexpected error", f"{type(exc).__name__}: {exc}"[:120])
            return
        except Exception as exc:  # CancelledError raced in
            self.record(kind, "cancelled" if "Cancelled" in type(exc).__name__ else "bug")
            return
        if r is not None:
            self.record(kind, "ok (done before cancel)")

    def short_timeout(self, client: h2pool.Client) -> None:
        kind = "short read timeout"
        self._count_submit()
        fut = client.submit(
            "GET", self.base + "/slow", timeout=h2pool.Timeout(connect=10.0, read=0.2, pool=30.0)
        )
        try:
            r = self._wait(kind, fut)
        except h2pool.ReadTimeout:
            self.record(kind, "expected ReadTimeout")
            return
        except h2pool.H2PoolError as exc:
            self.record(kind, "unexpected error", f"{type(exc).__name__}: {exc}"[:120])
            return
        if r is not None:
            ok = r.status == 200 and len(r.content) == SLOW_SIZE
            self.record(kind, "ok" if ok else "unexpected error")

    def slow_reader(self, client: h2pool.Client, rng: random.Random) -> None:
        kind = "slow reader"
        self._count_submit()
        early = rng.random() < 0.25
        fut = client.submit("GET", self.base + "/1m", stream=True)
        try:
            r = self._wait(kind, fut)
            if r is None:
                return
            got = 0
            with r:
                for chunk in r.iter_bytes(64 * 1024):
                    got += len(chunk)
                    time.sleep(0.005)
                    if early and got >= 256 * 1024:
                        break
        except h2pool.H2PoolError as exc:
            self.record(kind, "unexpected error", f"{type(exc).__name__}: {exc}"[:120])
            return
        if early:
            self.record(kind, "ok (closed early)")
        elif got == MIB:
            self.record(kind, "ok")
        else:
            self.record(kind, "unexpected error", f"short body {got}")

    def worker(self, client: h2pool.Client, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < self.stop_at:
            try:
                self.one(client, rng)
            except Exception as exc:  # a bug in h2pool or here: count it, keep going
                self.record("any", "bug", f"{type(exc).__name__}: {exc}"[:120])

    def sampler(self, t0: float, every: float, done: threading.Event) -> None:
        while not done.wait(every):
            self.samples.append(
                (time.monotonic() - t0, vm_rss(), fd_count(), threading.active_count())
            )

    def reloader(self, every: float, done: threading.Event) -> None:
        while not done.wait(every):
            try:
                self.nginx.reload()
                self.reloads += 1
            except subprocess.CalledProcessError as exc:
                print(f"nginx reload failed: {exc}", file=sys.stderr)

    def run(self) -> int:
        args = self.args
        threads_base = threading.active_count()
        fds_base = fd_count()
        client = h2pool.Client(
            verify=self.nginx.ca_path,
            timeout=h2pool.Timeout(connect=10.0, read=10.0, write=10.0, pool=30.0),
        )
        assert client.get(self.base + "/13b").status == 200  # warm
        t0 = time.monotonic()
        self.stop_at = t0 + args.duration
        done = threading.Event()
        helpers = [
            threading.Thread(target=self.sampler, args=(t0, args.sample, done), daemon=True),
            threading.Thread(target=self.reloader, args=(args.reload_every, done), daemon=True),
        ]
        for h in helpers:
            h.start()
        workers = [
            threading.Thread(target=self.worker, args=(client, i), name=f"soak-{i}", daemon=True)
            for i in range(args.threads)
        ]
        for w in workers:
            w.start()
        last = t0
        while any(w.is_alive() for w in workers):
            time.sleep(1.0)
            now = time.monotonic()
            if now - last >= args.progress:
                last = now
                s = client.stats()
                with self.lock:
                    n = sum(self.outcomes.values())
                print(
                    f"  t={now - t0:6.0f}s  done={n:8d}  in flight={s['open_streams']:4d}  "
                    f"conns opened={s['connections_opened']:5d}  retries={s['retries']:5d}  "
                    f"rss={vm_rss() / MIB:6.1f} MiB  fds={fd_count()}",
                    flush=True,
                )
            if now > self.stop_at + HANG_LIMIT + 30:
                break
        stuck_workers = [w.name for w in workers if w.is_alive()]
        elapsed = time.monotonic() - t0
        done.set()
        for h in helpers:
            h.join(5)
        stats = client.stats()
        close_start = time.monotonic()
        client.close()
        close_time = time.monotonic() - close_start
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            threading.active_count() > threads_base or fd_count() > fds_base
        ):
            time.sleep(0.05)
        threads_after = threading.active_count()
        fds_after = fd_count()
        unresolved_after_close = sum(1 for f in self.unresolved if not f.done())
        return self.report(
            elapsed,
            stats,
            close_time,
            threads_base,
            threads_after,
            fds_base,
            fds_after,
            stuck_workers,
            unresolved_after_close,
        )

    def report(
        self,
        elapsed: float,
        stats: dict[str, Any],
        close_time: float,
        threads_base: int,
        threads_after: int,
        fds_base: int,
        fds_after: int,
        stuck_workers: list[str],
        unresolved_after_close: int,
    ) -> int:
        args = self.args
        total = sum(self.outcomes.values())
        print()
        print(
            f"soak: {args.threads} threads, {elapsed:.0f} s, nginx keepalive_requests 300, "
            f"{self.reloads} reloads"
        )
        print(f"{'outcome':<34}{'requests':>10}{'share':>9}")
        print("-" * 53)
        for name, n in sorted(self.outcomes.items(), key=lambda kv: -kv[1]):
            print(f"{name:<34}{n:>10}{100 * n / max(total, 1):>8.2f}%")
        print("-" * 53)
        print(f"{'accounted':<34}{total:>10}")
        print(f"{'submitted':<34}{self.submitted:>10}")
        print(f"{'  of which retried transparently':<34}{stats.get('retries', 0):>10}")
        print()
        print(f"{'request kind':<34}{'requests':>10}")
        for name, n in sorted(self.kinds.items(), key=lambda kv: -kv[1]):
            print(f"{name:<34}{n:>10}")
        if self.errors:
            print("\nunexpected outcomes (most common):")
            for text, n in self.errors.most_common(10):
                print(f"  {n:6d}  {text}")
        rate = total / elapsed if elapsed else 0.0
        print()
        print(f"throughput                        {rate:10.0f} req/s")
        print(f"connections opened                {stats.get('connections_opened', 0):10d}")
        print(f"resets sent (cancels, timeouts)   {stats.get('resets_sent', 0):10d}")
        # After warm-up and before the workers wind down at the deadline.
        warm = [s for s in self.samples if min(30.0, elapsed * 0.2) <= s[0] <= args.duration - 1]
        if warm:
            rss = slope_per_min([(t, r / MIB) for t, r, _, _ in warm])
            fds = slope_per_min([(t, float(f)) for t, _, f, _ in warm])
            thr = slope_per_min([(t, float(n)) for t, _, _, n in warm])
            rs = [r / MIB for _, r, _, _ in warm]
            fs = [f for _, _, f, _ in warm]
            print(
                f"RSS   {min(rs):7.1f} .. {max(rs):7.1f} MiB   slope {rss:+8.2f} MiB/min "
                f"({len(warm)} samples after warm-up)"
            )
            print(f"fds   {min(fs):7d} .. {max(fs):7d}       slope {fds:+8.2f} fds/min")
            print(f"threads                            slope {thr:+8.2f} threads/min")
        print(f"client.close()                    {close_time:10.2f} s")
        print(f"threads before/after              {threads_base:>5d} / {threads_after}")
        print(f"fds before/after                  {fds_base:>5d} / {fds_after}")
        failures = []
        if total != self.submitted:
            failures.append(f"accounting: {total} accounted != {self.submitted} submitted")
        if self.hangs or stuck_workers:
            failures.append(f"hangs: {self.hangs} futures, stuck workers {stuck_workers}")
        if unresolved_after_close:
            failures.append(f"{unresolved_after_close} futures still unresolved after close")
        if threads_after > threads_base:
            failures.append(f"threads not back to baseline ({threads_base} -> {threads_after})")
        if fds_after > fds_base:
            failures.append(f"fds not back to baseline ({fds_base} -> {fds_after})")
        if self.outcomes.get("bug"):
            failures.append(f"{self.outcomes['bug']} non-h2pool exceptions")
        print()
        if failures:
            for f in failures:
                print(f"FAIL: {f}")
            return 1
        unexpected = self.outcomes.get("unexpected error", 0)
        if unexpected and args.strict:
            print(f"FAIL (--strict): {unexpected} unexpected errors")
            return 2
        print("PASS: accounting closes, 0 hangs, threads and fds back to baseline")
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description="h2pool soak test against a local nginx")
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--quick", action="store_true", help="about one minute")
    ap.add_argument("--reload-every", type=float, default=60.0, help="nginx -s reload period")
    ap.add_argument("--sample", type=float, default=5.0, help="RSS/fd sampling period")
    ap.add_argument("--progress", type=float, default=30.0, help="progress line period")
    ap.add_argument("--strict", action="store_true", help="exit 2 on unexpected errors")
    args = ap.parse_args()
    if args.quick:
        args.duration = 60.0
        args.reload_every = min(args.reload_every, 20.0)
        args.sample = min(args.sample, 2.0)
        args.progress = min(args.progress, 10.0)
    with SoakNginx() as nginx:
        return Soak(args, nginx).run()


if __name__ == "__main__":
    sys.exit(main())
