"""The command line's options (curl's names) and the request body they describe.

Runs in the main thread, before any transfer; `Body.open` runs in each worker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

_REMOTE_NAME = "\0remote-name"


class _Append(argparse.Action):
    """Append ``(kind, value)`` to one shared list, so that the order of ``-d``,
    ``--data-binary`` and ``--json`` (or of ``-o`` and ``-O``) is kept."""

    def __init__(self, *args: Any, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        super().__init__(*args, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, opt: Any = None
    ) -> None:
        items = list(getattr(ns, self.dest) or [])
        items.append((self.kind, value))
        setattr(ns, self.dest, items)


class _RemoteName(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, opt: Any = None
    ) -> None:
        ns.outputs = [*ns.outputs, _REMOTE_NAME]


class _Output(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, opt: Any = None
    ) -> None:
        ns.outputs = [*ns.outputs, value]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="h2pool",
        description="Fetch URLs over HTTP/2 (HTTP/1.1 fallback) through one shared client, "
        "with curl's options and exit codes. 'h2pool demo' runs a self-contained load demo.",
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="a URL without a scheme is http://")
    p.add_argument("-X", "--request", default=None, help="method (default GET, POST with data)")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    data: dict[str, Any] = {"dest": "data", "default": [], "metavar": "DATA"}
    p.add_argument(
        "-d",
        "--data",
        "--data-ascii",
        action=_Append,
        kind="data",
        **data,
        help="form data; @FILE reads a file (newlines dropped), @- stdin; repeated: joined by &",
    )
    p.add_argument("--data-binary", action=_Append, kind="binary", **data, help="raw; @FILE")
    p.add_argument("--data-raw", action=_Append, kind="raw", **data, help="like -d, no @")
    p.add_argument("--json", action=_Append, kind="json", **data, help="JSON body; @FILE")
    p.add_argument(
        "-F",
        "--form",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="multipart field; NAME=@FILE[;type=T][;filename=N] uploads a file",
    )
    p.add_argument(
        "-o",
        "--output",
        dest="outputs",
        action=_Output,
        default=[],
        metavar="FILE",
        help="write the body to FILE ('-': stdout); one per URL, in order",
    )
    p.add_argument(
        "-O",
        "--remote-name",
        nargs=0,
        action=_RemoteName,
        dest="outputs",
        help="write to a file named like the URL's last path segment",
    )
    p.add_argument("-i", "--include", action="store_true", help="print the response headers")
    p.add_argument("-I", "--head", action="store_true", help="HEAD; print the headers")
    p.add_argument("-v", "--verbose", action="store_true", help="request and response headers")
    p.add_argument("-s", "--silent", action="store_true", help="no progress bar or errors")
    p.add_argument("-S", "--show-error", action="store_true", help="errors even with -s")
    p.add_argument("-f", "--fail", action="store_true", help="exit 22 on status >= 400, no body")
    p.add_argument(
        "-w",
        "--write-out",
        default=None,
        metavar="FORMAT",
        help="after each transfer: %%{http_code} %%{time_total} %%{http_version} "
        "%%{size_download} %%{url_effective} %%{content_type} %%{num_redirects}",
    )
    p.add_argument("-u", "--user", default=None, metavar="USER:PASSWORD", help="Basic auth")
    p.add_argument("-A", "--user-agent", default=None, metavar="NAME")
    p.add_argument("-L", "--location", action="store_true", help="follow redirects")
    p.add_argument("--max-redirs", type=int, default=20, metavar="N", help="with -L (20)")
    p.add_argument("-k", "--insecure", action="store_true", help="do not verify certificates")
    p.add_argument("--cacert", default=None, help="CA bundle (file or directory) to verify with")
    p.add_argument(
        "-x",
        "--proxy",
        default=None,
        metavar="[SCHEME://]HOST:PORT",
        help="proxy: http:// (CONNECT tunnel, the default), socks5:// or socks5h://",
    )
    p.add_argument(
        "-m",
        "--max-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="limit for the whole run",
    )
    p.add_argument("--connect-timeout", type=float, default=None, metavar="SECONDS")
    p.add_argument("--timeout", type=float, default=30.0, help="read/write/pool seconds (30)")
    p.add_argument(
        "--compressed",
        action="store_true",
        help="accepted: gzip/deflate are always asked for and decoded",
    )
    p.add_argument("--http1.1", dest="http1_1", action="store_true", help="HTTP/1.1 only")
    p.add_argument("--http2", action="store_true", help="accepted: the default")
    p.add_argument(
        "--h2c",
        "--http2-prior-knowledge",
        dest="h2c",
        action="store_true",
        help="cleartext HTTP/2 for http:// URLs",
    )
    p.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:PORT:ADDRESS",
        help="connect to ADDRESS for HOST:PORT (TLS name and Host stay HOST); repeatable",
    )
    p.add_argument("--parallel", type=int, default=8, metavar="N", help="concurrent transfers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for -o")
    p.add_argument("-V", "--version", action="store_true", help="print versions and exit")
    return p


class Body:
    """What each transfer sends: nothing, bytes, a file streamed from its start, or a
    multipart form (its files opened again for each URL)."""

    def __init__(
        self,
        raw: bytes | None = None,
        path: str | None = None,
        fields: list[tuple[str, str]] | None = None,
        files: list[tuple[str, str, str | None, str | None]] | None = None,
    ) -> None:
        self.raw = raw
        self.path = path
        self.fields = fields
        self.files = files

    @property
    def present(self) -> bool:
        return self.raw is not None or self.path is not None or self.fields is not None

    @contextlib.contextmanager
    def open(self) -> Iterator[dict[str, Any]]:
        with contextlib.ExitStack() as stack:
            if self.path is not None:
                yield {"body": stack.enter_context(open(self.path, "rb"))}
            elif self.fields is not None:
                files: list[tuple[str, Any]] = []
                for name, path, ctype, filename in self.files or []:
                    f: IO[bytes] = stack.enter_context(open(path, "rb"))
                    files.append((name, (filename or os.path.basename(path), f, ctype)))
                yield {"data": self.fields, "files": files}
            else:
                yield {"body": self.raw}


def _read(spec: str, strip: bool) -> bytes:
    if spec == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(spec, "rb") as f:
            data = f.read()
    return data.replace(b"\r", b"").replace(b"\n", b"") if strip else data


def build_body(args: argparse.Namespace) -> Body:
    """The body and its headers from ``-d``/``--data-binary``/``--data-raw``/``--json``/
    ``-F``; also folds ``-H``, ``-A`` and ``-u`` into ``args.headers`` and ``args.auth``.

    ``ValueError`` for bad usage, ``OSError`` for a file that cannot be read.
    """
    headers: list[tuple[str, str]] = []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"bad header {h!r} (want 'Name: value')")
        headers.append((name.strip(), value.strip()))
    names = {n.lower() for n, _ in headers}
    if args.user_agent is not None and "user-agent" not in names:
        headers.append(("user-agent", args.user_agent))
    args.auth = None
    if args.user is not None:
        user, _, password = args.user.partition(":")
        args.auth = (user, password)
    args.headers = headers
    parts: list[tuple[str, str]] = args.data
    if args.form and parts:
        raise ValueError("-F cannot be combined with -d, --data-binary or --json")
    if args.form:
        return _form(args.form)
    if not parts:
        return Body()
    kinds = {kind for kind, _ in parts}
    if "json" in kinds and kinds != {"json"}:
        raise ValueError("--json cannot be combined with -d or --data-binary")
    if kinds == {"json"}:
        if "content-type" not in names:
            headers.append(("content-type", "application/json"))
        if "accept" not in names:
            headers.append(("accept", "application/json"))
        return Body(
            b"".join(_read(v[1:], False) if v.startswith("@") else v.encode() for _, v in parts)
        )
    if "content-type" not in names:
        headers.append(("content-type", "application/x-www-form-urlencoded"))
    if len(parts) == 1 and parts[0][0] == "binary" and parts[0][1].startswith("@"):
        path = parts[0][1][1:]
        if path != "-":
            with open(path, "rb"):  # fail now (exit 2), not once per URL
                pass
            return Body(path=path)
    chunks = []
    for kind, value in parts:
        if kind in ("data", "binary") and value.startswith("@"):
            chunks.append(_read(value[1:], strip=kind == "data"))
        else:
            chunks.append(value.encode())
    return Body(b"&".join(chunks))


def _form(specs: list[str]) -> Body:
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, str, str | None, str | None]] = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"bad -F {spec!r} (want NAME=VALUE or NAME=@FILE)")
        if value.startswith("@"):
            path, *options = value[1:].split(";")
            opts = dict(o.partition("=")[::2] for o in options)
            with open(path, "rb"):  # curl's exit 26 when it cannot be read
                pass
            files.append((name, path, opts.get("type"), opts.get("filename")))
        elif value.startswith("<"):
            fields.append((name, _read(value[1:], False).decode("utf-8", "replace")))
        else:
            fields.append((name, value))
    return Body(fields=fields, files=files)
