"""The pool: origins → connections, stream-slot assignment, the waiting queue, retries.

Runs on the I/O thread only. A request gets a connection only when it can take a
stream slot there (never more streams than the peer's MAX_CONCURRENT_STREAMS);
otherwise it waits in its origin's FIFO queue, bounded by ``Timeout.pool``, while at
most one new connection per origin is dialled for it (more only if the queue needs
more). Connections are seen only through ``_connection.Connection``; when one cannot
complete a request it reports a ``Fact`` and the pool's ``RetryPolicy``
(``_retry.py``) decides whether it is sent again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import ssl
import threading
from collections import deque
from typing import TypedDict

from ._config import Limits, Proxies
from ._connection import Connection, ConnectionInfo
from ._dial import Dialer, DialResult
from ._errors import (
    ClientClosed,
    ConnectError,
    H2PoolError,
    PoolTimeout,
)
from ._http2.connection import H2Conn
from ._http11 import H1Conn
from ._loop import IOLoop, Timer
from ._request import Request
from ._retry import Fact, RetryPolicy, Verdict
from ._stream import UploadPipe, replay_body

log = logging.getLogger("h2pool")

OriginKey = tuple[str, str, int]
# A dial whose connect timeout ends this close after a request's pool timeout decides
# that request's fate (the two were started together from the same number).
_SAME_MOMENT = 0.05


class OriginStats(TypedDict):
    """One origin in ``Client.stats()["per_origin"]``."""

    connections: list[ConnectionInfo]
    queued: int  # requests waiting for a slot
    dialing: int  # connections being set up
    connections_opened: int


class Stats(TypedDict):
    """What ``Client.stats()`` returns: the same keys before the first request as after.

    Counters (``connections_opened``, ``connections_closed``, ``retries``,
    ``resets_sent``, ``bytes_*``) cover the client's whole life; the rest is now.
    """

    connections: int  # open now
    origins: dict[str, int]  # "scheme://host:port" -> connections open now
    open_streams: int
    queued: int
    bytes_sent: int
    bytes_received: int
    connections_opened: int
    connections_closed: int
    retries: int  # requests sent again (see h2pool._retry)
    policy_retries: int  # requests sent again by Client(retries=...): statuses, failures
    resets_sent: int  # RST_STREAMs sent (cancellations, timeouts)
    per_origin: dict[str, OriginStats]


def empty_stats() -> Stats:
    return {
        "connections": 0,
        "origins": {},
        "open_streams": 0,
        "queued": 0,
        "bytes_sent": 0,
        "bytes_received": 0,
        "connections_opened": 0,
        "connections_closed": 0,
        "retries": 0,
        "policy_retries": 0,
        "resets_sent": 0,
        "per_origin": {},
    }


class OriginPool:
    """Connections and waiting requests of one origin (scheme, host, port)."""

    def __init__(self, pool: Pool, key: OriginKey) -> None:
        self.pool = pool
        self.key = key
        self.scheme, self.host, self.port = key
        self.label = f"{self.host}:{self.port}"
        self.conns: list[Connection] = []
        self.queue: deque[Request] = deque()
        # Refused requests waiting out their retry backoff: in no queue and on no
        # connection, so closing or aborting must fail them here.
        self.backing_off: dict[Request, Timer] = {}
        self.dialers: list[Dialer] = []
        self.connections_opened = 0
        # Set once a connection negotiated HTTP/1.1: later dials expect one request per
        # connection. A server that starts offering h2 is picked up on the next dial.
        self.http1 = False
        # Connections whose socket writes make no progress this long are closed.
        self._stall_timeout = pool.stall_timeout
        self._peer_max_streams: int | None = None  # from the last SETTINGS (HTTP/2)

    @property
    def stall_timeout(self) -> float | None:
        return self._stall_timeout

    @property
    def peer_max_streams(self) -> int | None:
        return self._peer_max_streams

    def remember_peer_settings(self, max_streams: int) -> None:
        self._peer_max_streams = max_streams

    # -- assignment --------------------------------------------------------------------------
    def submit(self, req: Request) -> None:
        conn = self._pick()
        if conn is not None:
            self._start(conn, req)
            return
        if self.pool.closing:
            req.fail(ClientClosed("the client is closing"))
            return
        self.queue.append(req)
        pool_timeout = req.timeout.pool
        if pool_timeout is not None and req.pool_timer is None:
            req.pool_timer = self.pool.loop.call_later(pool_timeout, self._on_pool_timeout, req)
        self._maybe_dial()

    def _pick(self) -> Connection | None:
        """The busiest connection that still has a free slot: packing streams keeps the
        number of connections (and TLS sessions, and server memory) low."""
        best: Connection | None = None
        for conn in self.conns:
            if conn.free_slots > 0 and (best is None or len(conn.streams) > len(best.streams)):
                best = conn
        return best

    def _start(self, conn: Connection, req: Request) -> None:
        if req.pool_timer is not None:
            req.pool_timer.cancel()
            req.pool_timer = None
        conn.start(req)

    def _maybe_dial(self) -> None:
        if self.pool.closing:
            return
        limits = self.pool.limits
        live = sum(1 for c in self.conns if not c.draining)
        if live + len(self.dialers) >= limits.max_connections_per_origin:
            return
        if limits.strict_max_streams and live and not self.http1:
            return  # strict: saturation queues, it never opens another connection
        if self.dialers:
            # One dial serves many waiters; dial more in parallel only when the queue is
            # larger than the dials in flight will carry, counted at the limit the
            # origin's last SETTINGS announced (capped by ours). Until an origin has
            # sent SETTINGS that limit is unknown, and one dial at a time (as Go's
            # pool dials) waits for it: 256 waiters counted at an assumed 100 per
            # connection made three connections where nginx's 128 needs two.
            if self.http1:
                per_conn = 1
            elif self._peer_max_streams is None:
                return
            else:
                cap = limits.max_streams_per_connection
                per_conn = self._peer_max_streams or 100
                per_conn = per_conn if cap is None else min(cap, per_conn)
            if len(self.queue) <= per_conn * len(self.dialers):
                return
        pool = self.pool
        ctx = pool.ssl_context if self.scheme == "https" else None
        connect_timeout = self.queue[0].timeout.connect if self.queue else None
        proxy = pool.proxies.for_origin(self.scheme, self.host)
        dialer = Dialer(
            pool.loop,
            self.host,
            self.port,
            ctx,
            connect_timeout,
            self._on_dialed,
            proxy,
            pool.local_address,
            pool.dial_overrides.get((self.host, self.port)),
        )
        self.dialers.append(dialer)
        dialer.start()

    def _on_dialed(
        self, dialer: Dialer, result: DialResult | None, error: H2PoolError | None
    ) -> None:
        self.dialers.remove(dialer)
        if result is not None:
            try:
                self._adopt(*result)
                return
            except H2PoolError as exc:
                error = exc
            except Exception as exc:  # a bug while setting up: fail the waiters, not the loop
                log.error("setting up a connection to %s failed", self.label, exc_info=True)
                error = ConnectError(f"setting up the connection to {self.label} failed: {exc!r}")
                error.__cause__ = exc
        assert error is not None
        self._dial_failed(error)

    def _adopt(self, sock: socket.socket, alpn: str | None) -> None:
        """Wrap a dialled socket in the connection class its protocol needs."""
        error: H2PoolError | None = None
        try:
            conn: Connection | None = None
            if self.pool.closing:
                sock.close()
                error = ClientClosed("the client closed while connecting")
            elif alpn == "h2" or (self.scheme == "http" and self.pool.h2c):
                conn = H2Conn(self.pool.loop, self, sock, self.pool.limits, self.label)
                self.http1 = False
            elif self.pool.http1 and alpn in ("http/1.1", None):
                conn = H1Conn(self.pool.loop, self, sock, self.pool.limits, self.label)
                self.http1 = True  # remembered: dial for one request per connection
            else:
                sock.close()
                error = ConnectError(
                    f"{self.label} did not negotiate HTTP/2 (ALPN selected "
                    f"{alpn or 'nothing'}) and HTTP/1.1 is disabled (http1=False)"
                )
        except BaseException:
            sock.close()
            raise
        if conn is None:
            assert error is not None
            raise error
        self.conns.append(conn)
        self.connections_opened += 1
        self.pool.counters["connections_opened"] += 1
        log.debug("connected to %s (%s)", self.label, conn.http_version)
        self.on_slot_free(conn)

    def _dial_failed(self, error: H2PoolError) -> None:
        log.info("connecting to %s failed: %s", self.label, error)
        # Waiters fail only when nothing else can serve them.
        if not any(not c.draining for c in self.conns) and not self.dialers:
            while self.queue:
                req = self.queue.popleft()
                self._unqueue(req)
                req.fail(error)
        else:
            self._maybe_dial()

    # -- callbacks from connections ------------------------------------------------------------
    def on_slot_free(self, conn: Connection) -> None:
        if not conn.streams and self.pool._keepalive_timer is None:
            self.pool._arm_keepalive()
        queue = self.queue
        while queue:
            if conn.free_slots <= 0:
                target = self._pick()
                if target is None:
                    self._maybe_dial()
                    return
                conn = target
            req = queue.popleft()
            if req.done:
                continue
            self._start(conn, req)

    def on_conn_closed(self, conn: Connection) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
            counters = self.pool.counters
            counters["bytes_sent"] += conn.bytes_sent
            counters["bytes_received"] += conn.bytes_received
            counters["connections_closed"] += 1
            counters["resets_sent"] += conn.resets_sent
        if self.queue:
            self._maybe_dial()
        self.pool.on_conn_closed(self, conn)

    def retry(self, req: Request, fact: Fact, cause: H2PoolError) -> bool:
        """A connection could not complete ``req`` (``fact`` says what it knows). Send it
        again if the retry policy allows; True if the pool took it back, False if the
        connection is to fail it with ``cause``."""
        req.conn = None
        if req.done or req.future.done():
            return False  # cancelled or answered meanwhile: the connection settles it
        policy = self.pool.retry_policy
        verdict = policy.judge(req, fact)
        if verdict is Verdict.FAIL:
            return False
        if self.pool.closing:
            req.fail(ClientClosed("the client closed before the request could be retried"))
            return True
        upload = req.upload
        if upload is not None and (upload.taken or upload.aborted):
            self._rewind_upload(req)  # a seekable file (judge checked): read it again
        log.debug(
            "retrying %s %s://%s%s (attempt %d): %s, %s",
            req.method,
            req.url.scheme,
            req.url.authority.decode(),
            req.url.target.split(b"?", 1)[0].decode(),  # the query may carry tokens
            req.attempts + 1,
            fact.value,
            type(cause).__name__,
        )
        policy.retries += 1
        delay = policy.backoff(req, verdict)
        if delay:
            self.backing_off[req] = self.pool.loop.call_later(delay, self._resubmit, req)
        else:
            self.submit(req)
        return True

    def _rewind_upload(self, req: Request) -> None:
        """Give a retried seekable-file body a fresh pipe, refilled from its start by a
        pump thread (file reads never run on the I/O thread)."""
        old = req.upload
        assert old is not None and req.upload_start is not None
        old.abort()
        new = UploadPipe(old.capacity, old.declared_length)
        req.upload = new
        threading.Thread(
            target=replay_body,
            args=(req.upload_source, req.upload_start, old, new),
            name="h2pool-body-replay",
            daemon=True,
        ).start()

    def _resubmit(self, req: Request) -> None:
        self.backing_off.pop(req, None)
        if req.done or req.future.done():
            return
        if self.pool.closing:
            req.fail(ClientClosed("the client closed before the request could be retried"))
            return
        self.submit(req)

    # -- timeouts, cancellation ------------------------------------------------------------------
    def _on_pool_timeout(self, req: Request, deferrable: bool = True) -> None:
        req.pool_timer = None
        if req.done or req.conn is not None:
            return
        if deferrable and not any(not c.draining for c in self.conns):
            # Only a dial can serve it, and that dial's connect timeout ends now too
            # (a single-number Timeout): let the dial's outcome speak, a ConnectTimeout
            # naming the real cause or a connection, rather than a pool timeout. Once:
            # a dial started later must not postpone the pool timeout again.
            ends = [d.deadline for d in self.dialers if d.deadline is not None]
            if ends and min(ends) <= self.pool.loop.now + _SAME_MOMENT:
                req.pool_timer = self.pool.loop.call_at(
                    min(ends), self._on_pool_timeout, req, False
                )
                return
        try:
            self.queue.remove(req)
        except ValueError:
            return
        req.fail(PoolTimeout(f"no connection slot to {self.label} within {req.timeout.pool} s"))

    def _unqueue(self, req: Request) -> None:
        if req.pool_timer is not None:
            req.pool_timer.cancel()
            req.pool_timer = None

    def cancel(self, req: Request) -> None:
        if req.conn is not None:
            req.conn.cancel(req)
            return
        if not req.done:
            req.done = True
            if req.upload is not None:
                req.upload.abort()
            self._unqueue(req)
            timer = self.backing_off.pop(req, None)
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(ValueError):
                self.queue.remove(req)

    # -- closing ------------------------------------------------------------------------------
    def _fail_backing_off(self, exc: BaseException) -> None:
        for req, timer in list(self.backing_off.items()):
            timer.cancel()
            req.fail(exc)
        self.backing_off.clear()

    def begin_close(self) -> None:
        while self.queue:
            req = self.queue.popleft()
            self._unqueue(req)
            req.fail(ClientClosed("the client closed before the request was sent"))
        self._fail_backing_off(ClientClosed("the client closed before the request was retried"))
        for dialer in list(self.dialers):
            dialer.cancel(ClientClosed("the client closed while connecting"))
        for conn in list(self.conns):
            conn.drain()

    def force_close(self) -> None:
        for conn in list(self.conns):
            conn.close()

    @property
    def idle(self) -> bool:
        return not self.conns and not self.dialers and not self.queue


class Pool:
    """All origins of one Client. I/O thread only."""

    def __init__(
        self,
        loop: IOLoop,
        limits: Limits,
        ssl_context: ssl.SSLContext | None,
        *,
        http1: bool = True,
        h2c: bool = False,
        stall_timeout: float | None = 30.0,
        proxies: Proxies | None = None,
        local_address: tuple[str, int] | None = None,
        dial_overrides: dict[tuple[str, int], str] | None = None,
    ) -> None:
        self.loop = loop
        # (host, port) -> the address to dial instead of resolving host (CLI --resolve)
        self.dial_overrides = dial_overrides if dial_overrides is not None else {}
        self.local_address = local_address  # every dial binds to it (Client's option)
        # Per client, so an origin's connections always take the same route (direct or
        # one proxy): the origin key needs no proxy in it.
        self.proxies = proxies if proxies is not None else Proxies()
        self.stall_timeout = stall_timeout
        self.counters: collections.Counter[str] = collections.Counter()
        self.retry_policy = RetryPolicy()
        self.http1 = http1
        self.h2c = h2c
        self.limits = limits
        self.ssl_context = ssl_context
        self.origins: dict[OriginKey, OriginPool] = {}
        self.closing = False
        self._close_timer: Timer | None = None
        self._keepalive_timer: Timer | None = None

    def submit(self, req: Request) -> None:
        if self.closing:
            req.fail(ClientClosed("the client is closed"))
            return
        key = req.url.origin
        origin = self.origins.get(key)
        if origin is None:
            origin = self.origins[key] = OriginPool(self, key)
        origin.submit(req)
        self._arm_keepalive()

    def cancel(self, req: Request) -> None:
        origin = self.origins.get(req.url.origin)
        if origin is not None:
            origin.cancel(req)

    def on_conn_closed(self, origin: OriginPool, conn: Connection | None) -> None:
        if self.closing and all(o.idle for o in self.origins.values()):
            self._finish_close()

    # -- idle connections ------------------------------------------------------------------------
    def _arm_keepalive(self, at: float | None = None) -> None:
        expiry = self.limits.keepalive_expiry
        if expiry is not None and self._keepalive_timer is None and not self.closing:
            when = self.loop.now + expiry if at is None else at
            self._keepalive_timer = self.loop.call_at(when, self._on_keepalive)

    def _on_keepalive(self) -> None:
        """One timer per pool: close connections idle past the expiry, then sleep until
        the next idle connection's expiry (or until one becomes idle)."""
        self._keepalive_timer = None
        expiry = self.limits.keepalive_expiry
        assert expiry is not None
        now = self.loop.now
        next_due: float | None = None
        for origin in list(self.origins.values()):
            for conn in list(origin.conns):
                if conn.streams:
                    continue
                due = conn.idle_since + expiry
                if due <= now:
                    log.debug("closing idle connection to %s", origin.label)
                    conn.close()
                else:
                    next_due = due if next_due is None else min(next_due, due)
        if next_due is not None:
            self._arm_keepalive(next_due)

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> Stats:
        origins: dict[str, int] = {}
        per_origin: dict[str, OriginStats] = {}
        streams = queued = sent = received = 0
        for (scheme, host, port), o in self.origins.items():
            name = f"{scheme}://{host}:{port}"
            if o.conns or o.queue or o.dialers:
                origins[name] = len(o.conns)
                per_origin[name] = {
                    "connections": [c.describe() for c in o.conns],
                    "queued": len(o.queue),
                    "dialing": len(o.dialers),
                    "connections_opened": o.connections_opened,
                }
            streams += sum(len(c.streams) for c in o.conns)
            queued += len(o.queue)
            for c in o.conns:
                sent += c.bytes_sent
                received += c.bytes_received
        counters = self.counters
        return {
            "connections": sum(origins.values()),
            "origins": origins,
            "open_streams": streams,
            "queued": queued,
            "bytes_sent": sent + counters["bytes_sent"],
            "bytes_received": received + counters["bytes_received"],
            "connections_opened": counters["connections_opened"],
            "connections_closed": counters["connections_closed"],
            "retries": self.retry_policy.retries,
            "policy_retries": 0,  # counted by the Client, in callers' threads
            "resets_sent": counters["resets_sent"]
            + sum(c.resets_sent for o in self.origins.values() for c in o.conns),
            "per_origin": per_origin,
        }

    # -- closing -------------------------------------------------------------------------------
    def close(self, timeout: float | None) -> None:
        """Stop taking requests; let in-flight ones finish until ``timeout``; then GOAWAY."""
        if self.closing:
            return
        self.closing = True
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        for origin in list(self.origins.values()):
            origin.begin_close()
        if all(o.idle for o in self.origins.values()):
            self._finish_close()
        elif timeout is not None:
            self._close_timer = self.loop.call_later(timeout, self._force_close)

    def _force_close(self) -> None:
        self._close_timer = None
        for origin in list(self.origins.values()):
            origin.force_close()
        self._finish_close()

    def _finish_close(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.loop.stop()

    def abort(self, exc: BaseException) -> None:
        """The loop is dying: fail everything, close every socket."""
        self.closing = True
        for origin in list(self.origins.values()):
            for req in list(origin.queue):
                req.fail(exc)
            origin.queue.clear()
            origin._fail_backing_off(exc)
            for conn in list(origin.conns):
                conn.abort(exc)
            for dialer in origin.dialers:
                with contextlib.suppress(Exception):
                    dialer.cancel(ClientClosed("the I/O thread stopped"))
