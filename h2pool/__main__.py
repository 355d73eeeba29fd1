"""Command line: ``python -m h2pool URL [URL ...]`` and ``python -m h2pool demo``."""

from __future__ import annotations

import argparse
import sys

from ._client import Client
from ._config import Timeout
from ._errors import H2PoolError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from ._demo import run_demo

        return run_demo(argv[1:])
    p = argparse.ArgumentParser(prog="h2pool", description="Fetch URLs over HTTP/2.")
    p.add_argument("urls", nargs="+", metavar="URL")
    p.add_argument("-X", "--request", default=None, help="method (default GET, POST with -d)")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    p.add_argument("-d", "--data", default=None, help="request body (@file reads a file)")
    p.add_argument("-o", "--output", default=None, help="write the body to a file")
    p.add_argument("-i", "--include", action="store_true", help="print response headers")
    p.add_argument("-k", "--insecure", action="store_true", help="do not verify TLS")
    p.add_argument("--cacert", default=None, help="CA bundle to verify the server with")
    p.add_argument("--h2c", action="store_true", help="cleartext HTTP/2 for http:// URLs")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    headers = []
    for h in args.header:
        name, _, value = h.partition(":")
        headers.append((name.strip(), value.strip()))
    body: bytes | None = None
    if args.data is not None:
        if args.data.startswith("@"):
            with open(args.data[1:], "rb") as f:
                body = f.read()
        else:
            body = args.data.encode()
    method = args.request or ("POST" if body is not None else "GET")
    verify: bool | str = False if args.insecure else (args.cacert or True)
    status = 0
    with Client(verify=verify, timeout=Timeout(args.timeout), http2_prior_knowledge=args.h2c) as c:
        futures = [c.submit(method, u, headers=headers, body=body) for u in args.urls]
        for url, fut in zip(args.urls, futures, strict=False):
            try:
                r = fut.result()
            except H2PoolError as exc:
                print(f"h2pool: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
                status = 2
                continue
            if args.include:
                sys.stdout.write(f"{r.http_version} {r.status} {r.reason}\n")
                for k, v in r.headers.items():
                    sys.stdout.write(f"{k}: {v}\n")
                sys.stdout.write("\n")
                sys.stdout.flush()
            if args.output:
                with open(args.output, "wb") as f:
                    f.write(r.content)
            else:
                sys.stdout.buffer.write(r.content)
                sys.stdout.flush()
            if r.status >= 400 and status == 0:
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
