"""A fault-injecting TCP relay on loopback (RELIABILITY.md tool X).

One thread runs a ``selectors`` loop that relays every accepted connection to an
upstream ``host:port``. The fault mode can change at any moment from any thread::

    with FaultProxy(("127.0.0.1", nginx_port)) as proxy:
        url = f"https://localhost:{proxy.port}/13b"   # TLS passes through untouched
        proxy.set(delay=20, jitter=10)                 # ms, both directions
        proxy.set(rate=1 << 20)                        # bytes/s per direction per connection
        proxy.set(chop=1)                              # one byte per send()
        proxy.set(cut_after=300, cut="rst", cut_limit=1)  # after 300 bytes toward the client
        proxy.set(half_close_after=200)                # FIN toward the client after 200 bytes
        proxy.set(blackhole=True)                      # stop relaying, keep the sockets open
        proxy.half_close()                             # FIN toward every current client now
        proxy.reset_all()                              # RST every current connection now
        proxy.clear()                                  # back to a clean relay
        proxy.stats()  # {"connections", "active", "bytes_up", "bytes_down", "cuts", ...}

Byte counts are per direction: "down" is server -> client (what ``cut_after`` and
``half_close_after`` count, per connection), "up" is client -> server. ``direction``
("both", "down", "up") limits delay, jitter, rate, chop and blackhole to one side.

Importable from the tests (they put ``stress/`` on ``sys.path``) and runnable by hand:
``python stress/faultproxy.py UPSTREAM_PORT [--delay MS ...]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FaultProxy", "Mode"]

_RECV = 65536
_HIGH_WATER = 256 * 1024  # default: stop reading a side while this much waits to be relayed
_MAX_WAIT = 0.05  # the loop re-checks modes at least this often


@dataclasses.dataclass
class Mode:
    """The current faults. Times in milliseconds, rate in bytes per second."""

    delay: float = 0.0
    jitter: float = 0.0
    rate: float | None = None
    chop: int | None = None  # at most this many bytes per send()
    chop_delay: float = 0.0  # ms between two chopped sends
    blackhole: bool = False
    direction: str = "both"  # where delay/jitter/rate/chop/blackhole apply
    cut_after: int | None = None  # downstream bytes per connection, then close
    cut: str = "rst"  # "rst" (SO_LINGER 1,0) or "fin"
    cut_limit: int | None = None  # cut this many more connections, then clear cut_after
    half_close_after: int | None = None  # downstream bytes, then SHUT_WR toward the client

    def applies(self, down: bool) -> bool:
        return self.direction == "both" or self.direction == ("down" if down else "up")


class _Pipe:
    """One direction of one relayed connection."""

    __slots__ = (
        "blocked",
        "down",
        "dst",
        "eof",
        "last_release",
        "next_send",
        "queue",
        "queued",
        "sent",
        "shut",
        "src",
        "tokens",
        "tokens_at",
    )

    def __init__(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        self.src = src
        self.dst = dst
        self.down = down
        self.queue: collections.deque[list[Any]] = collections.deque()  # [release, bytes]
        self.queued = 0
        self.eof = False  # src sent FIN
        self.shut = False  # we sent FIN to dst (or stopped relaying this way)
        self.blocked = False  # dst's send buffer was full
        self.sent = 0
        self.last_release = 0.0
        self.next_send = 0.0  # chop_delay
        self.tokens = 0.0
        self.tokens_at = 0.0


class _Conn:
    __slots__ = ("capture", "client", "closed", "down", "id", "server", "up")

    def __init__(self, cid: int, client: socket.socket, server: socket.socket) -> None:
        self.id = cid
        self.client = client
        self.server = server
        self.up = _Pipe(client, server, down=False)
        self.down = _Pipe(server, client, down=True)
        self.closed = False
        self.capture: bytearray | None = None


def _rst_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """A TCP relay from ``127.0.0.1:<port>`` to ``upstream`` with switchable faults."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        capture: bool = False,
        rcvbuf: int | None = None,
        seed: int | None = 1234,
        high_water: int = _HIGH_WATER,
    ) -> None:
        self.upstream = upstream
        # Bytes one direction of a connection may hold (delayed or rate-limited) before
        # the relay stops reading that side. With a delay this caps every client at
        # high_water / delay; a large value models a link with a large bandwidth-delay
        # product (stress/latency.py uses 64 MiB).
        self._high_water = high_water
        self._lock = threading.Lock()
        self._mode = Mode()
        self._commands: list[Callable[[], None]] = []
        self._rng = random.Random(seed)
        self._capture = capture
        self.captures: list[bytearray] = []  # downstream bytes of each connection, if capture
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:
            # Inherited by accepted sockets: with a small receive window and a black hole
            # "up", the client's own send buffer fills and its later frames stay unsent.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind((host, port))
        self._listener.listen(512)
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}
        self._registered: dict[socket.socket, int] = {}
        self._next_id = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._counters = collections.Counter[str]()

    # -- control (any thread) ------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and the listener; join the thread. Idempotent."""
        thread, self._thread = self._thread, None
        self._stopping = True
        self._wake()
        if thread is not None:
            thread.join(10)
        else:
            self._teardown()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def mode(self) -> Mode:
        with self._lock:
            return dataclasses.replace(self._mode)

    def set(self, **changes: Any) -> None:
        """Change some fault settings (see :class:`Mode`); the others stay."""
        with self._lock:
            mode = dataclasses.replace(self._mode, **changes)
            if mode.cut not in ("rst", "fin") or mode.direction not in ("both", "up", "down"):
                raise ValueError(f"bad mode {changes!r}")
            self._mode = mode
        self._wake()

    def clear(self) -> None:
        """A clean relay again (data held by a black hole or a delay is released)."""
        with self._lock:
            self._mode = Mode()
        self._wake()

    def reset_all(self) -> None:
        """RST both sides of every current connection (new ones are relayed normally)."""
        self._command(self._do_reset_all)

    def half_close(self) -> None:
        """FIN toward every current client; what the server sends later is dropped."""
        self._command(self._do_half_close_all)

    def stats(self) -> dict[str, int]:
        c = self._counters
        return {
            "connections": c["connections"],
            "active": len(self._conns),
            "bytes_up": c["bytes_up"],
            "bytes_down": c["bytes_down"],
            "cuts": c["cuts"],
            "resets": c["resets"],
            "half_closes": c["half_closes"],
            "upstream_failures": c["upstream_failures"],
        }

    def wait(self, predicate: Callable[[dict[str, int]], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate(stats())`` until true or ``timeout``; returns the last result."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.stats()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def _command(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        with self._lock:
            self._commands.append(run)
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            done.wait(5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the loop (proxy thread) -----------------------------------------------------------
    def _run(self) -> None:
        sel = self._sel
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping:
                with self._lock:
                    mode = self._mode
                    commands, self._commands = self._commands, []
                for cmd in commands:
                    cmd()
                now = time.monotonic()
                wake_at = now + _MAX_WAIT
                for conn in list(self._conns.values()):
                    if conn.closed:
                        continue
                    if mode.cut_limit is not None:
                        with self._lock:  # an earlier cut may have used up cut_limit
                            mode = self._mode
                    for pipe in (conn.up, conn.down):
                        t = self._pump(conn, pipe, mode, now)
                        if t is not None and t < wake_at:
                            wake_at = t
                        if conn.closed:
                            break
                    if not conn.closed:
                        self._maybe_finish(conn)
                self._update_interest(mode)
                timeout = max(0.0, wake_at - time.monotonic())
                for key, mask in sel.select(timeout):
                    data = key.data
                    if data == "accept":
                        self._accept()
                    elif data == "wake":
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(4096):
                                pass
                    else:
                        conn = self._conns.get(data)
                        if conn is None or conn.closed:
                            continue
                        sock = key.fileobj
                        if mask & selectors.EVENT_WRITE:
                            for pipe in (conn.up, conn.down):
                                if pipe.dst is sock:
                                    pipe.blocked = False
                        if mask & selectors.EVENT_READ:
                            pipe = conn.up if sock is conn.client else conn.down
                            self._read(conn, pipe, mode)
        finally:
            self._teardown()

    def _teardown(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn, rst=False)
        self._conns.clear()
        with contextlib.suppress(Exception):
            self._sel.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=2.0)
            except OSError:
                self._counters["upstream_failures"] += 1
                _rst_close(client)
                continue
            for s in (client, server):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._next_id += 1
            conn = _Conn(self._next_id, client, server)
            if self._capture:
                conn.capture = bytearray()
                self.captures.append(conn.capture)
            self._conns[conn.id] = conn
            self._counters["connections"] += 1

    def _read(self, conn: _Conn, pipe: _Pipe, mode: Mode) -> None:
        try:
            data = pipe.src.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # The peer reset: pass the reset on to the other side.
            self._close(conn, rst=True)
            return
        if not data:
            pipe.eof = True
            return
        if pipe.shut:  # half-closed toward this destination: drop it
            return
        now = time.monotonic()
        release = now
        if mode.applies(pipe.down) and (mode.delay or mode.jitter):
            release += (mode.delay + self._rng.uniform(0, mode.jitter)) / 1000.0
        release = max(release, pipe.last_release)  # keep the byte order
        pipe.last_release = release
        pipe.queue.append([release, data])
        pipe.queued += len(data)

    def _pump(self, conn: _Conn, pipe: _Pipe, mode: Mode, now: float) -> float | None:
        """Send what is due on ``pipe``; returns when it next wants to run, if sooner."""
        faulty = mode.applies(pipe.down)
        if faulty and mode.blackhole:
            return None
        while pipe.queue and not pipe.blocked and not conn.closed:
            release, data = pipe.queue[0]
            if release > now:
                return float(release)
            if pipe.next_send > now:
                return pipe.next_send
            n = len(data)
            if faulty and mode.chop:
                n = min(n, mode.chop)
            if faulty and mode.rate:
                if pipe.tokens_at == 0.0:
                    pipe.tokens_at = now
                    pipe.tokens = 0.0
                burst = max(1024.0, mode.rate / 50)
                pipe.tokens = min(burst, pipe.tokens + (now - pipe.tokens_at) * mode.rate)
                pipe.tokens_at = now
                if pipe.tokens < 1:
                    return now + max(0.001, min(n, 1024) / mode.rate)
                n = min(n, int(pipe.tokens))
            cut_at = None
            if pipe.down:
                if mode.cut_after is not None:
                    cut_at = mode.cut_after
                if mode.half_close_after is not None and (
                    cut_at is None or mode.half_close_after < cut_at
                ):
                    cut_at = mode.half_close_after
                if cut_at is not None:
                    if pipe.sent >= cut_at:
                        self._fault_at_limit(conn, mode)
                        return None
                    n = min(n, cut_at - pipe.sent)
            try:
                sent = pipe.dst.send(memoryview(data)[:n])
            except (BlockingIOError, InterruptedError):
                pipe.blocked = True
                return None
            except OSError:
                self._close(conn, rst=True)
                return None
            pipe.sent += sent
            pipe.queued -= sent
            if faulty and mode.rate:
                pipe.tokens -= sent
            self._counters["bytes_down" if pipe.down else "bytes_up"] += sent
            if pipe.down and conn.capture is not None:
                conn.capture += data[:sent]
            if sent == len(data):
                pipe.queue.popleft()
            else:
                pipe.queue[0][1] = data[sent:]
            if faulty and mode.chop and mode.chop_delay:
                pipe.next_send = now + mode.chop_delay / 1000.0
            if cut_at is not None and pipe.sent >= cut_at:
                self._fault_at_limit(conn, mode)
                return None
        return None

    def _fault_at_limit(self, conn: _Conn, mode: Mode) -> None:
        sent = conn.down.sent
        if mode.cut_after is not None and sent >= mode.cut_after:
            self._counters["cuts"] += 1
            if mode.cut_limit is not None:
                with self._lock:
                    left = mode.cut_limit - 1
                    if left <= 0:
                        self._mode = dataclasses.replace(self._mode, cut_after=None, cut_limit=None)
                    else:
                        self._mode = dataclasses.replace(self._mode, cut_limit=left)
            if mode.cut == "rst":
                self._close(conn, rst=True)
            else:
                # FIN toward the client, and relay nothing more either way; the sockets
                # close when the client closes (closing now, with unread bytes from the
                # client, would make the kernel send an RST instead of the FIN).
                self._half_close(conn)
                conn.up.shut = True
                conn.up.queue.clear()
                conn.up.queued = 0
        else:
            self._half_close(conn)

    def _half_close(self, conn: _Conn) -> None:
        pipe = conn.down
        if pipe.shut:
            return
        pipe.shut = True
        pipe.queue.clear()
        pipe.queued = 0
        self._counters["half_closes"] += 1
        with contextlib.suppress(OSError):
            conn.client.shutdown(socket.SHUT_WR)

    def _maybe_finish(self, conn: _Conn) -> None:
        for pipe in (conn.up, conn.down):
            if pipe.eof and not pipe.queue and not pipe.shut:
                pipe.shut = True
                with contextlib.suppress(OSError):
                    pipe.dst.shutdown(socket.SHUT_WR)
        if conn.up.eof and conn.down.eof and not conn.up.queue and not conn.down.queue:
            self._close(conn, rst=False)
        elif conn.up.eof and conn.down.shut and not conn.up.queue:
            # half-closed toward the client and the client has gone too
            self._close(conn, rst=False)

    def _update_interest(self, mode: Mode) -> None:
        sel = self._sel
        for conn in self._conns.values():
            for sock, src_pipe, dst_pipe in (
                (conn.client, conn.up, conn.down),
                (conn.server, conn.down, conn.up),
            ):
                events = 0
                hole = mode.blackhole and mode.applies(src_pipe.down)
                if not src_pipe.eof and not hole and src_pipe.queued < self._high_water:
                    events |= selectors.EVENT_READ
                if dst_pipe.blocked:
                    events |= selectors.EVENT_WRITE
                old = self._registered.get(sock, 0)
                if events == old:
                    continue
                if not events:
                    sel.unregister(sock)
                    del self._registered[sock]
                elif not old:
                    sel.register(sock, events, conn.id)
                    self._registered[sock] = events
                else:
                    sel.modify(sock, events, conn.id)
                    self._registered[sock] = events

    def _close(self, conn: _Conn, rst: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.id, None)
        for sock in (conn.client, conn.server):
            if self._registered.pop(sock, 0):
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
            if rst:
                _rst_close(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()

    def _do_reset_all(self) -> None:
        for conn in list(self._conns.values()):
            self._counters["resets"] += 1
            self._close(conn, rst=True)

    def _do_half_close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._half_close(conn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("upstream_port", type=int)
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--chop", type=int, default=None)
    ap.add_argument("--cut-after", type=int, default=None)
    ap.add_argument("--high-water", type=int, default=_HIGH_WATER, help="bytes per direction")
    args = ap.parse_args()
    proxy = FaultProxy(
        (args.upstream_host, args.upstream_port), port=args.port, high_water=args.high_water
    ).start()
    proxy.set(
        delay=args.delay,
        jitter=args.jitter,
        rate=args.rate,
        chop=args.chop,
        cut_after=args.cut_after,
    )
    print(f"relaying 127.0.0.1:{proxy.port} -> {args.upstream_host}:{args.upstream_port}")
    try:
        while True:
            time.sleep(5)
            print(proxy.stats(), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    main()
