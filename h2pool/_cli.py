"""Command line: ``python -m h2pool URL [URL ...]``, a small curl on one shared Client.

Threads: the main thread parses, supervises and writes stdout, in URL order; worker
threads (daemons, ``--parallel`` of them) run the transfers and write ``-o`` files.
Ctrl-C arrives in the main thread only: it sets the stop flag, closes the client
with no grace period (every transfer fails at once) and exits 130 without waiting
for the workers, which check the flag before each write.

Exit codes are curl's, the first failing transfer's:

=== =================================================================
0   every transfer succeeded (any HTTP status, unless ``-f``)
1   the transfer failed otherwise (protocol error, reset, lost connection)
2   bad usage (unknown option, bad header, unreadable ``-d @FILE``)
3   malformed URL
6   the host name could not be resolved
7   could not connect (TCP, proxy, ALPN)
22  ``-f`` and a response had status >= 400
23  writing the output failed (closed stdout, unwritable ``-o`` file)
26  a ``-F`` file could not be read
28  a timeout (connect, read, write, pool, or ``-m``)
35  the TLS handshake failed
47  ``-L`` and too many redirects (or one that may not be followed)
60  the server's certificate could not be verified
77  the ``--cacert`` file could not be read
130 interrupted (Ctrl-C)
=== =================================================================
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import queue
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from ._cliargs import _REMOTE_NAME, Body, build_body, parser
from ._client import Client
from ._cliout import Progress, head, verbose, verbose_summary, write_out
from ._config import Limits, Timeout
from ._errors import (
    ConnectError,
    H2PoolError,
    InvalidURL,
    RedirectError,
    TimeoutError,
    TLSError,
)
from ._response import Response

EXIT_OK, EXIT_TRANSFER, EXIT_USAGE, EXIT_URL, EXIT_DNS, EXIT_CONNECT = 0, 1, 2, 3, 6, 7
EXIT_HTTP, EXIT_WRITE, EXIT_READ, EXIT_TIMEOUT, EXIT_TLS = 22, 23, 26, 28, 35
EXIT_REDIRECTS, EXIT_CERT, EXIT_CACERT, EXIT_INTERRUPTED = 47, 60, 77, 130


class WriteFailed(Exception):
    """Writing a body (to stdout or an ``-o`` file) failed: curl's exit 23."""


class _Deadline(Exception):
    """``-m``: the whole run took longer than allowed."""


def exit_code(exc: BaseException) -> int:
    """The exit code for a failed transfer (see the module docstring)."""
    if isinstance(exc, TLSError):
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            return EXIT_CERT
        return EXIT_TLS
    if isinstance(exc, TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, ConnectError):
        # _dial chains the resolver's error as the cause; a connection closed during
        # the TLS handshake is curl's 35 too ("SSL connect error").
        if isinstance(exc.__cause__, socket.gaierror):
            return EXIT_DNS
        return EXIT_TLS if isinstance(exc.__cause__, ssl.SSLError) else EXIT_CONNECT
    if isinstance(exc, InvalidURL):
        return EXIT_URL
    if isinstance(exc, RedirectError):
        return EXIT_REDIRECTS
    if isinstance(exc, WriteFailed):
        return EXIT_WRITE
    return EXIT_TRANSFER


@dataclass(eq=False)
class Transfer:
    """One URL. Written by its worker until ``ready``/``done`` are set, then read by
    the main thread (the events order the two)."""

    url: str
    output: str | None  # None: stdout
    response: Response | None = None
    error: BaseException | None = None
    size: int = 0  # body bytes written (decoded)
    started: float = 0.0
    finished: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)  # response or error
    done: threading.Event = field(default_factory=threading.Event)  # body written


def _remote_name(url: str) -> str:
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    if not name:
        raise WriteFailed(f"no file name in {url!r} for -O")
    return name


class Run:
    """One invocation: the client, the transfers, the workers and the stop flag."""

    def __init__(self, args: argparse.Namespace, client: Client, body: Body) -> None:
        self.args = args
        self.client = client
        self.body = body
        self.stop = threading.Event()  # set on Ctrl-C, a closed stdout or -m
        self.quiet = args.silent and not args.show_error
        outputs: list[str] = args.outputs
        self.transfers = [
            Transfer(url, None if i >= len(outputs) or outputs[i] == "-" else outputs[i])
            for i, url in enumerate(args.urls)
        ]
        files = sum(1 for t in self.transfers if t.output is not None)
        self.progress = (
            files == 1 and not args.silent and not args.no_progress and sys.stderr.isatty()
        )
        self.deadline = None if args.max_time is None else time.monotonic() + args.max_time
        self.method = args.request or ("HEAD" if args.head else "POST" if body.present else "GET")
        self._jobs: queue.SimpleQueue[Transfer] = queue.SimpleQueue()
        self.workers: list[threading.Thread] = []

    # -- worker threads -----------------------------------------------------------------
    def start(self) -> None:
        for t in self.transfers:
            self._jobs.put(t)
        for i in range(max(1, min(self.args.parallel, len(self.transfers)))):
            w = threading.Thread(target=self._work, name=f"h2pool-cli-{i}", daemon=True)
            w.start()
            self.workers.append(w)

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                t = self._jobs.get_nowait()
            except queue.Empty:
                return
            try:
                self._transfer(t)
            except BaseException as exc:  # reported by the main thread
                t.error = t.error or exc
            finally:
                t.finished = t.finished or time.monotonic()
                t.ready.set()
                t.done.set()

    def _transfer(self, t: Transfer) -> None:
        args = self.args
        t.started = time.monotonic()
        with self.body.open() as kwargs:
            r = self.client.request(
                self.method,
                t.url,
                headers=args.headers,
                auth=args.auth,
                stream=True,
                follow_redirects=args.location,
                max_redirects=args.max_redirs,
                **kwargs,
            )
        t.response = r
        if t.output is None:
            # The main thread writes stdout in URL order; this worker's slot stays
            # taken until it has, so at most --parallel bodies are buffered, each
            # within its stream window.
            t.ready.set()
            t.done.wait()
            return
        t.ready.set()
        with r:
            if args.fail and r.status >= 400:
                return
            path = _remote_name(t.url) if t.output == _REMOTE_NAME else t.output
            try:
                f = open(path, "wb")  # noqa: SIM115
            except OSError as exc:
                raise WriteFailed(f"cannot open {path}: {exc.strerror}") from exc
            with f:
                total = r.headers.get("content-length")
                size = int(total) if total and total.isascii() and total.isdigit() else None
                bar = Progress(size, self.progress)
                if args.include or args.head:
                    f.write(head(r))
                for chunk in r.iter_bytes():
                    if self.stop.is_set():
                        return
                    try:
                        f.write(chunk)
                    except OSError as exc:
                        raise WriteFailed(f"writing {path}: {exc.strerror}") from exc
                    t.size += len(chunk)
                    bar.update(len(chunk))
                bar.finish()

    # -- main thread --------------------------------------------------------------------
    def _wait(self, event: threading.Event) -> None:
        # Bounded waits: Ctrl-C is delivered between them at the latest, and -m checked.
        while not event.wait(0.2):
            self._check_deadline()

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _Deadline

    def _write(self, data: bytes) -> None:
        out = sys.stdout
        try:
            if out is None:
                raise OSError("stdout is closed")
            out.buffer.write(data)
            out.buffer.flush()
        except (OSError, ValueError) as exc:
            raise WriteFailed(f"failed writing the body to stdout: {exc}") from exc

    def error(self, url: str, message: str) -> None:
        if not self.quiet:
            print(f"h2pool: {url}: {message}", file=sys.stderr)

    def supervise(self) -> int:
        """Wait for each transfer in order, write stdout, report; the exit status."""
        args = self.args
        status = EXIT_OK
        for t in self.transfers:
            self._wait(t.ready)
            r = t.response
            if r is not None and args.verbose:
                verbose(r)
            if r is not None and t.output is None:
                try:
                    self._to_stdout(t, r)
                except H2PoolError as exc:  # the body failed half-way: report it below
                    t.error = exc
                finally:
                    r.close()
                    t.finished = time.monotonic()
                    t.done.set()
            self._wait(t.done)
            code = EXIT_OK
            if t.error is not None:
                if isinstance(t.error, WriteFailed):
                    self.error(t.url, str(t.error))
                else:
                    self.error(t.url, f"{type(t.error).__name__}: {t.error}")
                code = exit_code(t.error)
            elif r is not None and args.fail and r.status >= 400:
                self.error(t.url, f"the requested URL returned error: {r.status}")
                code = EXIT_HTTP
            if args.write_out is not None:
                self._write(write_out(args.write_out, t, code).encode())
            if status == EXIT_OK:
                status = code
        if args.verbose:
            verbose_summary(self.client, len(self.transfers))
        return status

    def _to_stdout(self, t: Transfer, r: Response) -> None:
        if self.args.include or self.args.head:
            self._write(head(r))
        if self.args.fail and r.status >= 400:
            return
        for chunk in r.iter_bytes():
            self._check_deadline()
            self._write(chunk)
            t.size += len(chunk)

    def abort(self) -> None:
        """Stop every transfer now (Ctrl-C, closed stdout, -m): nothing waits for a
        transfer to finish, and no worker writes another chunk."""
        self.stop.set()
        self.client.close(timeout=0)
        for t in self.transfers:
            t.done.set()
        end = time.monotonic() + 1.0
        for w in self.workers:
            w.join(max(0.0, end - time.monotonic()))


def _resolve_overrides(entries: list[str]) -> dict[tuple[str, int], str]:
    """``--resolve HOST:PORT:ADDRESS`` entries, as curl takes them (an IPv6 address in
    brackets or not; ``*`` is not supported)."""
    out: dict[tuple[str, int], str] = {}
    for entry in entries:
        host, _, rest = entry.partition(":")
        port_text, _, address = rest.partition(":")
        address = address.strip("[]")
        try:
            port = int(port_text)
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"--resolve {entry!r}: expected HOST:PORT:ADDRESS") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"--resolve {entry!r}: expected HOST:PORT:ADDRESS")
        out[(host.lower(), port)] = address
    return out


class _H1Only(ssl.SSLContext):
    """A TLS context that offers only ``http/1.1`` in ALPN (``--http1.1``): the Client
    sets its ALPN list on a given context, and this one keeps its own."""

    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        super().set_alpn_protocols(["http/1.1"])


def _verify(args: argparse.Namespace) -> bool | str | ssl.SSLContext:
    if not args.http1_1:
        return False if args.insecure else (args.cacert or True)
    ctx = _H1Only(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif args.cacert:
        if os.path.isdir(args.cacert):
            ctx.load_verify_locations(capath=args.cacert)
        else:
            ctx.load_verify_locations(cafile=args.cacert)
    else:
        cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
        if cafile or capath:
            ctx.load_verify_locations(cafile=cafile or None, capath=capath or None)
        else:
            import certifi

            ctx.load_verify_locations(cafile=certifi.where())
    return ctx


def _timeout(args: argparse.Namespace) -> Timeout:
    def cap(value: float | None) -> float | None:
        limit: float | None = args.max_time
        if limit is None:
            return value
        return limit if value is None else min(value, limit)

    read = cap(args.timeout)
    connect = cap(args.connect_timeout if args.connect_timeout is not None else 10.0)
    return Timeout(read, connect=connect)


def _fail(message: str, code: int, args: argparse.Namespace | None = None) -> int:
    if args is None or not args.silent or args.show_error:
        print(f"h2pool: {message}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    # A closed pipe stays closed: point fd 1 at /dev/null so that the interpreter's
    # last flush does not print a BrokenPipeError of its own.
    if sys.stdout is None:
        return
    try:
        fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print("h2pool: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.version:
        import h2

        from ._version import __version__

        print(
            f"h2pool {__version__} (h2 {h2.__version__}; {ssl.OPENSSL_VERSION}; Python "
            f"{sys.version.split()[0]})"
        )
        return EXIT_OK
    if not args.urls:
        return _fail("no URL specified (try --help)", EXIT_USAGE)
    if args.http1_1 and args.h2c:
        return _fail("--http1.1 and --h2c exclude each other", EXIT_USAGE)
    args.urls = [u if "://" in u else "http://" + u for u in args.urls]
    try:
        body = build_body(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE, args)
    except OSError as exc:
        return _fail(str(exc), EXIT_READ if args.form else EXIT_USAGE, args)
    if args.cacert and not os.access(args.cacert, os.R_OK):
        return _fail(f"cannot read the CA file {args.cacert}", EXIT_CACERT, args)
    if args.insecure:
        import warnings

        warnings.filterwarnings("ignore", message="verify=False")
    proxy = args.proxy
    if proxy and "://" not in proxy:
        proxy = "http://" + proxy
    try:
        overrides = _resolve_overrides(args.resolve)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE, args)
    try:
        client = Client(
            verify=_verify(args),
            timeout=_timeout(args),
            limits=Limits(max_connections_per_origin=max(1, min(args.parallel, 8))),
            http2_prior_knowledge=args.h2c,
            proxy=proxy,
        )
        client._dial_overrides.update(overrides)
    except (OSError, ValueError, ssl.SSLError) as exc:
        code = EXIT_CACERT if args.cacert else EXIT_USAGE
        return _fail(f"{type(exc).__name__}: {exc}", code, args)
    run = Run(args, client, body)
    try:
        run.start()
        status = run.supervise()
    except WriteFailed as exc:
        run.abort()
        _silence_stdout()
        return _fail(str(exc), EXIT_WRITE, args)
    except _Deadline:
        run.abort()
        return _fail(f"operation timed out after {args.max_time} s (-m)", EXIT_TIMEOUT, args)
    except BaseException:
        run.abort()
        raise
    client.close()
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError:
        _silence_stdout()
        return _fail("failed writing to stdout", EXIT_WRITE, args)
    return status


def run_from_command_line(argv: list[str] | None = None) -> int:
    """``python -m h2pool``: the demo or a transfer."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from ._demo import run_demo

        return run_demo(argv[1:])
    return main(argv)
