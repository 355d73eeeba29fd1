"""What the command line prints besides bodies: the progress bar, headers (``-i``,
``-v``), ``-w``'s variables. Runs in the main thread, the progress bar in a worker.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from ._client import Client
from ._response import Response

if TYPE_CHECKING:
    from ._cli import Transfer


class Progress:
    """A one-line progress bar on stderr: size, rate, ETA (for one ``-o`` on a terminal)."""

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
        rate = self.done / max(now - self.start, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            line = (
                f"\r[{'#' * int(frac * 30):<30}] {frac:6.1%} {self.done / 1e6:9.1f} MB "
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


def head(r: Response) -> bytes:
    lines = [f"{r.http_version} {r.status} {r.reason}"]
    lines += [f"{k}: {v}" for k, v in r.headers.items()]
    return ("\n".join(lines) + "\n\n").encode("latin-1", "replace")


def verbose(r: Response) -> None:
    for hop in r.history:
        print(f"* {hop.url}: {hop.status} -> {hop.headers.get('location')}", file=sys.stderr)
    split = urllib.parse.urlsplit(r.url)
    host, port = split.hostname or "", split.port or (443 if split.scheme == "https" else 80)
    try:
        addrs = sorted(
            {str(a[4][0]) for a in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        )
        print(f"* Host {host}:{port} resolves to {', '.join(addrs)}", file=sys.stderr)
    except OSError:
        pass
    req = r.request
    target = split.path or "/"
    if split.query:
        target += "?" + split.query
    lines = [f"> {req.method} {target} {r.http_version}", f"> host: {split.netloc}"]
    lines += [f"> {k}: {v}" for k, v in req.headers.items()]
    lines += [">", f"< {r.http_version} {r.status} {r.reason}"]
    lines += [f"< {k}: {v}" for k, v in r.headers.items()]
    lines += [
        "<",
        f"* {r.url}: {r.http_version} {r.status} in {r.elapsed.total_seconds() * 1000:.1f} ms",
    ]
    print("\n".join(lines), file=sys.stderr)


def verbose_summary(client: Client, n: int) -> None:
    s = client.stats()
    for origin, o in s["per_origin"].items():
        for c in o["connections"]:
            tls = f" over {c['tls_version']} ({c['tls_cipher']})" if c["tls_version"] else ""
            print(
                f"* connection to {origin} at {c['peer']}: {c['http_version']}{tls}, "
                f"{c['requests']} request(s), max {c['max_streams']} streams, "
                f"{c['bytes_received']} bytes received",
                file=sys.stderr,
            )
    print(
        f"* {n} transfer(s) over {s['connections_opened']} connection(s); "
        f"{s['bytes_received']} bytes received",
        file=sys.stderr,
    )


_ESCAPES = {"\\n": "\n", "\\r": "\r", "\\t": "\t", "\\\\": "\\"}


def write_out(fmt: str, t: Transfer, code: int) -> str:
    """curl's ``-w``: ``%{name}`` variables, ``%%`` and ``\\n``-style escapes."""
    r = t.response
    values: dict[str, Any] = {
        "http_code": f"{r.status:03d}" if r is not None else "000",
        "response_code": f"{r.status:03d}" if r is not None else "000",
        "http_version": r.http_version.removeprefix("HTTP/") if r is not None else "0",
        "size_download": t.size,
        "time_total": f"{max(0.0, t.finished - t.started):.6f}",
        "time_starttransfer": f"{r.elapsed.total_seconds():.6f}" if r is not None else "0",
        "url_effective": r.url if r is not None else t.url,
        "url": t.url,
        "content_type": (r.headers.get("content-type") or "") if r is not None else "",
        "num_redirects": len(r.history) if r is not None else 0,
        "exitcode": code,
        "errormsg": "" if t.error is None else str(t.error),
    }
    out, i = [], 0
    while i < len(fmt):
        if fmt.startswith("%{", i) and (end := fmt.find("}", i)) > 0:
            out.append(str(values.get(fmt[i + 2 : end], "")))
            i = end + 1
        elif fmt.startswith("%%", i):
            out.append("%")
            i += 2
        elif fmt[i : i + 2] in _ESCAPES:
            out.append(_ESCAPES[fmt[i : i + 2]])
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return "".join(out)
