"""Command line: ``python -m h2pool URL [URL ...]`` (a small curl) and ``python -m h2pool demo``.

Exit codes (curl's numbers where curl has one), the first failing URL's:

== =================================================================
0  every transfer succeeded (any HTTP status, unless ``--fail``)
1  the transfer failed otherwise (protocol error, reset, lost connection)
2  bad usage (unknown option, bad header, unreadable ``-d @FILE``)
7  could not connect (DNS, TCP, ALPN)
22 ``--fail`` and a response had status >= 400
23 writing the output failed
28 a timeout (connect, read, write or pool)
35 the TLS handshake failed (untrusted certificate, wrong host name)
47 ``-L`` and too many redirects (or one that may not be followed)
== =================================================================
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from ._client import Client
from ._config import Limits, Timeout
from ._errors import ConnectError, H2PoolError, RedirectError, TimeoutError, TLSError
from ._response import Response

EXIT_OK, EXIT_TRANSFER, EXIT_USAGE, EXIT_HTTP = 0, 1, 2, 22
EXIT_CONNECT, EXIT_WRITE, EXIT_TIMEOUT, EXIT_TLS, EXIT_REDIRECTS = 7, 23, 28, 35, 47


def exit_code(exc: BaseException) -> int:
    """The exit code for a failed transfer (see the module docstring)."""
    if isinstance(exc, TLSError):
        return EXIT_TLS
    if isinstance(exc, TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, ConnectError):
        return EXIT_CONNECT
    if isinstance(exc, RedirectError):
        return EXIT_REDIRECTS
    if isinstance(exc, OSError):
        return EXIT_WRITE
    return EXIT_TRANSFER


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="h2pool",
        description="Fetch URLs over HTTP/2 (HTTP/1.1 fallback) through one shared client. "
        "'h2pool demo' runs a self-contained load demo.",
    )
    p.add_argument("urls", nargs="+", metavar="URL")
    p.add_argument("-X", "--request", default=None, help="method (default GET, or POST with -d)")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument(
        "-d", "--data", "--data-binary", default=None, help="body; @FILE streams a file, @- stdin"
    )
    p.add_argument("-o", "--output", default=None, help="write the body to FILE (one URL)")
    p.add_argument("-i", "--include", action="store_true", help="print the response headers")
    p.add_argument("-v", "--verbose", action="store_true", help="protocol, timings, connections")
    p.add_argument("-f", "--fail", action="store_true", help="exit 22 on HTTP status >= 400")
    p.add_argument("-L", "--location", action="store_true", help="follow redirects")
    p.add_argument("--max-redirs", type=int, default=20, metavar="N", help="with -L (20)")
    p.add_argument("-k", "--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--cacert", default=None, help="CA bundle (file or directory) to verify with")
    p.add_argument("--h2c", action="store_true", help="cleartext HTTP/2 for http:// URLs")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per phase (default 30)")
    p.add_argument("--parallel", type=int, default=8, metavar="N", help="concurrent transfers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for -o")
    return p


class _Progress:
    """A one-line progress bar on stderr: size, rate, ETA. Silent when not a terminal."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            line = (
                f"\r[{bar:<30}] {frac:6.1%} {self.done / 1e6:9.1f} MB "
                f"{rate / 1e6:7.1f} MB/s ETA {eta:5.1f}s"
            )
        else:
            line = f"\r{self.done / 1e6:9.1f} MB {rate / 1e6:7.1f} MB/s"
        sys.stderr.write(line)
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")


def _print_head(r: Response, out: IO[str]) -> None:
    out.write(f"{r.http_version} {r.status} {r.reason}\n")
    for k, v in r.headers.items():
        out.write(f"{k}: {v}\n")
    out.write("\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from ._demo import run_demo

        return run_demo(argv[1:])
    args = _parser().parse_args(argv)
    if args.output and len(args.urls) > 1:
        print("h2pool: -o takes one URL", file=sys.stderr)
        return EXIT_USAGE
    headers = []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            print(f"h2pool: bad header {h!r} (want 'Name: value')", file=sys.stderr)
            return EXIT_USAGE
        headers.append((name.strip(), value.strip()))
    body_file: str | None = None
    body: bytes | None = None
    if args.data is not None:
        if args.data == "@-":
            body = sys.stdin.buffer.read()
        elif args.data.startswith("@"):
            body_file = args.data[1:]
            try:
                open(body_file, "rb").close()
            except OSError as exc:
                print(f"h2pool: -d {args.data}: {exc}", file=sys.stderr)
                return EXIT_USAGE
        else:
            body = args.data.encode()
    method = args.request or ("POST" if args.data is not None else "GET")
    verify: bool | str = False if args.insecure else (args.cacert or True)
    status = EXIT_OK
    limits = Limits(max_connections_per_origin=max(1, min(args.parallel, 8)))
    if args.insecure:
        import warnings

        warnings.filterwarnings("ignore", message="verify=False")
    try:
        client = Client(
            verify=verify,
            timeout=Timeout(args.timeout),
            limits=limits,
            http2_prior_knowledge=args.h2c,
        )
    except (OSError, ValueError) as exc:
        print(f"h2pool: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def fetch(url: str) -> tuple[str, Response | None, bytes, BaseException | None, float]:
        t0 = time.monotonic()
        try:
            send = open(body_file, "rb") if body_file else None  # noqa: SIM115
            try:
                with client.stream(
                    method,
                    url,
                    headers=headers,
                    body=send or body,
                    follow_redirects=args.location,
                    max_redirects=args.max_redirs,
                ) as r:
                    if args.output:
                        total = r.headers.get("content-length")
                        bar = _Progress(
                            int(total) if total and total.isdigit() else None,
                            sys.stderr.isatty() and not args.no_progress,
                        )
                        with open(args.output, "wb") as f:
                            for chunk in r.iter_bytes():
                                f.write(chunk)
                                bar.update(len(chunk))
                        bar.finish()
                        data = b""
                    else:
                        data = r.read()
            finally:
                if send is not None:
                    send.close()
            return url, r, data, None, time.monotonic() - t0
        except (H2PoolError, OSError) as exc:
            return url, None, b"", exc, time.monotonic() - t0

    # The client closes first on the way out: after Ctrl-C or a closed stdout, transfers
    # still running fail at once instead of the pool waiting for each to finish.
    with ThreadPoolExecutor(max(1, args.parallel)) as pool, client:
        for url, r, data, error, elapsed in pool.map(fetch, args.urls):
            if error is not None or r is None:
                print(f"h2pool: {url}: {type(error).__name__}: {error}", file=sys.stderr)
                if status == EXIT_OK:
                    status = exit_code(error) if error is not None else EXIT_TRANSFER
                continue
            if args.verbose:
                for hop in r.history:
                    print(
                        f"* {hop.url}: {hop.status} -> {hop.headers['location']}", file=sys.stderr
                    )
                print(
                    f"* {r.url}: {r.http_version} {r.status} in {elapsed * 1000:.1f} ms",
                    file=sys.stderr,
                )
            if args.include:
                _print_head(r, sys.stdout)
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            if args.fail and r.status >= 400 and status == EXIT_OK:
                status = EXIT_HTTP
        if args.verbose:
            s = client.stats()
            print(
                f"* {len(args.urls)} transfer(s) over {s['connections_opened']} connection(s); "
                f"{s['bytes_received']} bytes received",
                file=sys.stderr,
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
