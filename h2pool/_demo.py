"""``python -m h2pool demo``: a local HTTP/2 server in-process and many threads sharing
one Client, with live stats. No network is needed: the server listens on 127.0.0.1.

The server is a small single-threaded h2c server built on ``h2``; it exists for the
demo (and docs examples), not for production.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import h2.config
import h2.connection
import h2.events

from ._client import Client
from ._config import Limits

_BODY = b"Hello, world!"


class DemoServer:
    """A cleartext HTTP/2 (prior knowledge) server on 127.0.0.1 answering every GET
    with 13 bytes, or ``/bytes/N`` with N bytes. Runs on its own thread."""

    def __init__(self) -> None:
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
            for key, _ in self._sel.select():
                if key.data == "stop":
                    return
                if key.data is None:
                    self._accept()
                else:
                    self._serve(key.fileobj, key.data)  # type: ignore[arg-type]

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
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers).get(b":path", b"/")
                body = _BODY
                if path.startswith(b"/bytes/"):
                    body = b"x" * min(int(path[7:] or 0), 1 << 24)
                conn.send_headers(
                    event.stream_id,
                    [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
                    end_stream=not body,
                )
                if body:
                    conn.send_data(event.stream_id, body, end_stream=True)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        out = conn.data_to_send()
        if out:
            sock.setblocking(True)
            with contextlib.suppress(OSError):
                sock.sendall(out)
            sock.setblocking(False)


def run_demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m h2pool demo", description=__doc__)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load (default 5)")
    p.add_argument("--threads", type=int, default=32, help="caller threads (default 32)")
    args = p.parse_args(argv)
    done = threading.Event()
    ok = [0] * args.threads
    errors: list[BaseException] = []
    with (
        DemoServer() as server,
        Client(http2_prior_knowledge=True, limits=Limits(max_connections_per_origin=2)) as client,
    ):
        url = server.url + "/"
        print(f"h2pool demo: local HTTP/2 server at {url}; {args.threads} threads share one Client")

        def worker(i: int) -> None:
            while not done.is_set():
                try:
                    r = client.get(url)
                    if r.status == 200 and r.content == _BODY:
                        ok[i] += 1
                except Exception as exc:  # shown in the summary
                    errors.append(exc)

        start = time.monotonic()
        with ThreadPoolExecutor(args.threads) as pool:
            for i in range(args.threads):
                pool.submit(worker, i)
            last, last_t = 0, start
            while (now := time.monotonic()) - start < args.duration:
                time.sleep(min(0.5, args.duration - (now - start)))
                total, t = sum(ok), time.monotonic()
                s = client.stats()
                print(
                    f"  {t - start:5.1f}s  {(total - last) / (t - last_t):8.0f} req/s  "
                    f"connections={s['connections']} streams={s['open_streams']} "
                    f"queued={s['queued']} errors={len(errors)}",
                    flush=True,
                )
                last, last_t = total, t
            done.set()
        elapsed = time.monotonic() - start
        total = sum(ok)
        s = client.stats()
        print(
            f"summary: {total} requests in {elapsed:.1f}s = {total / elapsed:.0f} req/s from "
            f"{args.threads} threads over {s['connections_opened']} connection(s); "
            f"{len(errors)} errors; {s['bytes_received']} bytes received"
        )
        for exc in errors[:3]:
            print(f"  error: {exc!r}", file=sys.stderr)
    return 0 if not errors and total > 0 else 1
