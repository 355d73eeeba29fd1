"""``python -m h2pool demo``: a local HTTP/2 server in-process and many threads sharing
one Client, with live stats. No network is needed: the server listens on 127.0.0.1.

The server is a small single-threaded h2c server built on ``h2``; it exists for the
demo (and docs examples), not for production. It answers each request after a fixed
delay (``--latency``, 10 ms by default), like a server across a network: one thread
then waits out every round trip alone, while many threads share a connection's
round trips as concurrent streams. That is the comparison the demo prints.

Threads: the main thread prints and handles Ctrl-C; workers are daemon threads that
stop when the ``done`` event is set or the client is closed under them.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import selectors
import signal
import socket
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from ._client import Client
from ._config import Limits

_BODY = b"Hello, world!"


class DemoServer:
    """A cleartext HTTP/2 (prior knowledge) server on 127.0.0.1 answering every GET
    with 13 bytes, or ``/bytes/N`` with N bytes, ``latency`` seconds after the request
    arrived. Runs on its own thread, which owns every socket and h2 state."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        # Answers not yet due: (due, seq, socket, connection, stream id, body).
        self._due: list[tuple[float, int, socket.socket, h2.connection.H2Connection, int, bytes]]
        self._due = []
        self._seq = itertools.count()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._stop_r, self._stop_w = socket.socketpair()
        self._sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        self._thread = threading.Thread(target=self._run, name="h2pool-demo-server", daemon=True)
        self._config = h2.config.H2Configuration(client_side=False, header_encoding=None)

    def __enter__(self) -> DemoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_w.send(b"x")
        self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()
        self._stop_w.close()

    def _run(self) -> None:
        while True:
            timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else None
            for key, _ in self._sel.select(timeout):
                if key.data == "stop":
                    return
                if key.data is None:
                    self._accept()
                else:
                    self._serve(key.fileobj, key.data)  # type: ignore[arg-type]
            self._answer_due()

    def _answer_due(self) -> None:
        now = time.monotonic()
        dirty: dict[socket.socket, h2.connection.H2Connection] = {}
        while self._due and self._due[0][0] <= now:
            _, _, sock, conn, stream_id, body = heapq.heappop(self._due)
            if sock.fileno() < 0:
                continue  # the client went away
            with contextlib.suppress(h2.exceptions.H2Error):
                conn.send_headers(
                    stream_id,
                    [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
                    end_stream=not body,
                )
                if body:
                    conn.send_data(stream_id, body, end_stream=True)
            dirty[sock] = conn
        for sock, conn in dirty.items():
            self._flush(sock, conn)

    def _flush(self, sock: socket.socket, conn: h2.connection.H2Connection) -> None:
        out = conn.data_to_send()
        if out:
            sock.setblocking(True)
            with contextlib.suppress(OSError):
                sock.sendall(out)
            sock.setblocking(False)

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h2.connection.H2Connection(config=self._config)
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _serve(self, sock: socket.socket, conn: h2.connection.H2Connection) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._sel.unregister(sock)
            sock.close()
            return
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            events = []
        due = time.monotonic() + self.latency
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers).get(b":path", b"/")
                body = _BODY
                if path.startswith(b"/bytes/"):
                    body = b"x" * min(int(path[7:] or 0), 1 << 24)
                item = (due, next(self._seq), sock, conn, event.stream_id, body)
                heapq.heappush(self._due, item)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self._flush(sock, conn)
        if not self.latency:
            self._answer_due()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _latency(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 10000 ms, not {text}")
    return value


class _Load:
    """Worker threads calling ``client.get`` until ``done`` is set; counts kept per
    worker (each list slot written by one thread), errors under a lock."""

    def __init__(self, client: Client, url: str) -> None:
        self.client = client
        self.url = url
        self.done = threading.Event()
        self.ok: list[int] = []
        self.errors = 0
        self.first_errors: list[BaseException] = []
        self._lock = threading.Lock()  # guards errors and first_errors; no I/O under it
        self.threads: list[threading.Thread] = []

    def start(self, n: int) -> None:
        self.done.clear()
        self.ok = [0] * n
        self.threads = [
            threading.Thread(target=self._work, args=(i,), name=f"h2pool-demo-{i}", daemon=True)
            for i in range(n)
        ]
        for t in self.threads:
            t.start()

    def stop(self, timeout: float) -> None:
        self.done.set()
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))

    def _work(self, i: int) -> None:
        while not self.done.is_set():
            try:
                r = self.client.get(self.url)
                if r.status == 200 and r.content == _BODY:
                    self.ok[i] += 1
            except Exception as exc:  # counted and shown in the summary
                if self.done.is_set():
                    return
                with self._lock:
                    self.errors += 1
                    if len(self.first_errors) < 3:
                        self.first_errors.append(exc)


def _phase(load: _Load, threads: int, seconds: float, live: bool) -> tuple[int, float]:
    """Run ``threads`` workers for ``seconds``, printing stats every half second (one
    line rewritten in place on a terminal); the requests done and the time taken."""
    label = f"{threads} thread{'s' if threads > 1 else ''}"
    start = time.monotonic()
    load.start(threads)
    last, last_t = 0, start
    try:
        while (now := time.monotonic()) - start < seconds:
            time.sleep(min(0.5, seconds - (now - start)))
            total, t = sum(load.ok), time.monotonic()
            s = load.client.stats()
            line = (
                f"  {label:>11} {t - start:5.1f}s {(total - last) / (t - last_t):8.0f} req/s  "
                f"connections={s['connections']} streams={s['open_streams']} "
                f"queued={s['queued']} errors={load.errors}"
            )
            if live:
                sys.stdout.write(f"\r{line}\x1b[K")
            else:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
            last, last_t = total, t
    finally:
        load.stop(5.0)
        if live:
            sys.stdout.write("\n")
    return sum(load.ok), time.monotonic() - start


def run_demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m h2pool demo", description=__doc__)
    p.add_argument("--duration", type=_positive_float, default=5.0, help="seconds (default 5)")
    p.add_argument("--threads", type=_positive_int, default=32, help="caller threads (32)")
    p.add_argument(
        "--latency", type=_latency, default=10.0, help="server delay per request, ms (10)"
    )
    args = p.parse_args(argv)
    try:
        return _demo(args)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print("h2pool demo: interrupted", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace) -> int:
    live = sys.stdout.isatty()
    with DemoServer(args.latency / 1000) as server:
        client = Client(http2_prior_knowledge=True, limits=Limits(max_connections_per_origin=2))
        load = _Load(client, server.url + "/")
        try:
            print(
                f"h2pool demo: local HTTP/2 server at {load.url} answering after "
                f"{args.latency:g} ms; 1 thread, then {args.threads} threads sharing one Client",
                flush=True,
            )
            one, one_s = _phase(load, 1, max(0.5, args.duration * 0.3), live)
            before = client.stats()["bytes_received"]
            many, many_s = _phase(load, args.threads, max(0.5, args.duration * 0.7), live)
        except BaseException:
            load.done.set()
            client.close(timeout=0)  # every worker's request fails at once
            raise
        s = client.stats()
        client.close()
    one_rate, many_rate = one / one_s, many / many_s
    print(f"1 thread: {one_rate:.0f} req/s")
    print(f"{args.threads} threads: {many_rate:.0f} req/s over {s['connections']} connection(s)")
    ratio = many_rate / one_rate if one_rate else 0.0
    print(
        f"summary: {many} requests in {many_s:.1f}s = {many_rate:.0f} req/s from "
        f"{args.threads} threads over {s['connections_opened']} connection(s), "
        f"{ratio:.1f}x the rate of one thread; {load.errors} errors; "
        f"{s['bytes_received'] - before} bytes received"
    )
    for exc in load.first_errors:
        print(f"  error: {exc!r}", file=sys.stderr)
    return 0 if not load.errors and many > 0 else 1
