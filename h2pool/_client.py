"""The public :class:`Client`, the process-wide default client and module-level helpers.

Runs in caller threads. A request is validated and encoded (:mod:`h2pool._prepare`),
then handed to the I/O thread as one queued command; the caller blocks only on its
future.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import warnings
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from ._config import Limits, Proxies, Timeout
from ._dial import make_ssl_context
from ._errors import ClientClosed, ConnectError, H2PoolError
from ._headers import HeaderTypes
from ._loop import IOLoop
from ._pool import Pool
from ._prepare import BodyTypes, RequestBuilder
from ._redirects import follow_chain, is_redirect, replay_point
from ._request import Request, ResponseFuture
from ._response import Response
from ._stream import pump_body

__all__ = ["BodyTypes", "Client", "InsecureRequestWarning", "default_client"]


class InsecureRequestWarning(UserWarning):
    """Emitted when a Client is created with ``verify=False``."""


class Client:
    """A thread-safe HTTP/2 client: create one, share it between all threads.

    ``verify=True`` trusts certifi's bundle, or the CA file/directory named by the
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` environment variables when they are set.

    ``proxy="http://[user:password@]host:port"`` sends every request through that HTTP
    proxy, tunnelled with ``CONNECT`` (TLS stays end to end; ``http://`` origins are
    tunnelled too). With ``trust_env=True`` (the default) ``https_proxy``, ``http_proxy``,
    ``all_proxy`` and ``no_proxy`` (and their upper-case forms) are read when the Client
    is created; ``no_proxy`` does not exclude localhost unless it is listed.

    One background I/O thread (started on the first request) owns every socket.
    Requests from any thread are multiplexed as streams over a few pooled connections
    per origin.

    >>> with h2pool.Client() as client:                      # doctest: +SKIP
    ...     r = client.get("https://example.org/")
    ...     r.status, r.http_version
    (200, 'HTTP/2')
    """

    def __init__(
        self,
        *,
        verify: bool | str | Any = True,
        cert: str | tuple[str, str] | None = None,
        timeout: Timeout | float | None = Timeout(),
        limits: Limits = Limits(),
        http1: bool = True,
        http2_prior_knowledge: bool = False,
        headers: HeaderTypes | None = None,
        follow_redirects: bool = False,
        max_redirects: int = 20,
        proxy: str | None = None,
        trust_env: bool = True,
    ) -> None:
        if verify is False:
            warnings.warn(
                "verify=False: TLS certificates are not verified; connections can be "
                "intercepted. Use a CA bundle path instead.",
                InsecureRequestWarning,
                stacklevel=2,
            )
        self._timeout = Timeout.coerce(timeout)
        if not isinstance(limits, Limits):
            raise TypeError("limits must be an h2pool.Limits")
        self._limits = limits
        self._http1 = http1
        self._follow_redirects = follow_redirects
        self._max_redirects = max_redirects
        self._h2c = http2_prior_knowledge
        # proxy="http://[user:pass@]host:port" tunnels every origin with CONNECT; with
        # trust_env, https_proxy / http_proxy / all_proxy / no_proxy are read once, here.
        self._proxies = Proxies.build(proxy, trust_env)
        # ALPN: h2 first; http/1.1 only when the fallback is allowed. A failed TLS or
        # ALPN negotiation never falls back to cleartext.
        self._ssl_context = make_ssl_context(verify, cert, ["h2", "http/1.1"] if http1 else ["h2"])
        self._builder = RequestBuilder(headers, self._timeout)
        # _lock guards starting the I/O thread and the closed flag; it is held only for
        # those assignments, never across I/O or while waiting for a response.
        self._lock = threading.Lock()
        self._loop: IOLoop | None = None
        self._pool: Pool | None = None
        self._closed = False
        self._broken: BaseException | None = None
        self._pid = os.getpid()
        self._gc_finalizer: weakref.finalize[Any, Any] | None = None
        _live_clients.add(self)

    # -- plumbing ------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """The child of a fork has no I/O thread, only copies of the parent's sockets.

        Close those copies (the parent's connections are unaffected: no FIN is sent while
        the parent holds them) and start afresh on the next request.
        """
        self._lock = threading.Lock()
        loop, pool = self._loop, self._pool
        self._loop = None
        self._pool = None
        if loop is not None:
            loop.abandon_after_fork(pool)

    def _ensure_loop(self) -> tuple[IOLoop, Pool]:
        loop, pool = self._loop, self._pool
        if loop is not None and pool is not None:
            if self._pid == os.getpid():
                return loop, pool
            self._after_fork_in_child()  # a fork the at-fork hook did not see
        return self._start_loop()

    def _start_loop(self) -> tuple[IOLoop, Pool]:
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            if self._loop is None:
                loop = IOLoop()
                pool = Pool(
                    loop,
                    self._limits,
                    self._ssl_context,
                    http1=self._http1,
                    h2c=self._h2c,
                    stall_timeout=self._timeout.write,
                    proxies=self._proxies,
                )
                # The I/O thread must not keep the Client alive: a Client dropped without
                # close() is garbage collected, and its finalizer stops the thread and
                # closes the sockets instead of leaking them for the life of the process.
                loop.on_death = _death_handler(weakref.ref(self), pool)
                self._gc_finalizer = weakref.finalize(self, _close_abandoned, loop, pool)
                self._pool = pool
                self._loop = loop
                self._pid = os.getpid()
                loop.start()
            assert self._loop is not None and self._pool is not None
            return self._loop, self._pool

    def _on_loop_death(self, exc: BaseException) -> None:  # I/O thread, dying
        err = ClientClosed(f"the h2pool I/O thread crashed: {exc!r}")
        err.__cause__ = exc
        self._broken = err
        assert self._pool is not None
        self._pool.abort(err)
        self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        """Requests queued after the loop stopped would never run: fail them."""
        loop = self._loop
        if loop is None:
            return
        for _fn, args in loop.drain_commands():
            for arg in args:
                if isinstance(arg, Request):
                    arg.fail(self._broken or ClientClosed("the client is closed"))

    def _build(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None,
        body: BodyTypes,
        timeout: Timeout | float | None,
        stream: bool,
        drop: frozenset[bytes] = frozenset(),
    ) -> Request:
        """The validated :class:`Request` (see :class:`RequestBuilder`), refused once the
        client is closed."""
        if self._closed:
            raise ClientClosed("the client is closed")
        return self._builder.build(method, url, headers, body, timeout, stream, drop)

    # -- public API ------------------------------------------------------------------------
    def submit(
        self,
        method: str,
        url: str,
        *,
        headers: HeaderTypes | None = None,
        body: BodyTypes = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
    ) -> Future[Response]:
        """Send a request without waiting; the future resolves to the :class:`Response`.

        ``timeout=None`` means the client's timeouts; pass ``Timeout(None)`` for none.
        Never blocks on the network, so it never follows redirects (even on a client
        created with ``follow_redirects=True``): to follow them concurrently, run
        ``client.request`` in an executor. Invalid input raises here (``InvalidURL``,
        ``InvalidHeader``); network failures arrive through the future.
        ``future.cancel()`` on an in-flight request resets its stream.
        """
        return self._submit(self._build(method, url, headers, body, timeout, stream), True)

    def _submit(self, req: Request, pump_thread: bool) -> ResponseFuture:
        fut = req.future
        url = req.url.url
        if req.url.scheme == "http" and not self._h2c and not self._http1:
            fut.set_exception(
                ConnectError(
                    f"{url}: http:// needs HTTP/1.1 (http1=True) or cleartext HTTP/2 "
                    "(http2_prior_knowledge=True)"
                )
            )
            return fut
        if self._broken is not None:
            raise ClientClosed("the client's I/O thread has stopped") from self._broken
        loop, pool = self._ensure_loop()
        fut._on_cancel = lambda: loop.call_soon_threadsafe(pool.cancel, req)
        loop.call_soon_threadsafe(pool.submit, req)
        if loop.stopping:
            self._fail_leftovers()
        if req.upload is not None and pump_thread:
            # User file reads and generators never run on the I/O thread (contract).
            threading.Thread(
                target=pump_body,
                args=(req.upload_source, req.upload),
                name="h2pool-body-pump",
                daemon=True,
            ).start()
        return fut

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: HeaderTypes | None = None,
        body: BodyTypes = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """Send a request and wait for its response (and its body unless ``stream``).

        Redirects are returned as they are unless ``follow_redirects`` (default: the
        client's, itself False by default) is true; then up to ``max_redirects`` (20)
        are followed in this thread, see :mod:`h2pool._redirects`. ``timeout`` applies
        to each request of the chain.

        Raises an :class:`H2PoolError` subclass on failure; see :mod:`h2pool` errors.
        """
        follow = self._follow_redirects if follow_redirects is None else follow_redirects
        replay = replay_point(body) if follow and body is not None else None
        response = self._send(method, url, headers, body, timeout, stream)
        if not follow or not is_redirect(response):
            return response
        limit = self._max_redirects if max_redirects is None else max_redirects
        return follow_chain(self, response, method, headers, body, replay, timeout, stream, limit)

    def _send(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None,
        body: BodyTypes,
        timeout: Timeout | float | None,
        stream: bool,
        drop: frozenset[bytes] = frozenset(),
    ) -> Response:
        req = self._build(method, url, headers, body, timeout, stream, drop)
        fut = self._submit(req, False)
        # Wait on a plain lock released by a done-callback rather than in
        # Future.result(): its Condition wakes the caller while the I/O thread still
        # holds the condition's lock, so the woken caller often blocks a second time
        # on it (measured: see docs/performance.md). Every way a future completes
        # (response, error, cancel, the loop dying) runs its done-callbacks.
        gate = threading.Lock()
        gate.acquire()
        fut.add_done_callback(lambda _f: gate.release())
        try:
            if req.upload is not None and not fut.done():
                pump_body(req.upload_source, req.upload)  # the body is read on this thread
            gate.acquire()
            return fut.result()
        except BaseException as exc:
            if not isinstance(exc, H2PoolError):
                fut.cancel()  # KeyboardInterrupt and the like: free the stream
            raise

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)

    def head(self, url: str, **kw: Any) -> Response:
        return self.request("HEAD", url, **kw)

    def options(self, url: str, **kw: Any) -> Response:
        return self.request("OPTIONS", url, **kw)

    def delete(self, url: str, **kw: Any) -> Response:
        return self.request("DELETE", url, **kw)

    def post(self, url: str, body: BodyTypes = None, **kw: Any) -> Response:
        return self.request("POST", url, body=body, **kw)

    def put(self, url: str, body: BodyTypes = None, **kw: Any) -> Response:
        return self.request("PUT", url, body=body, **kw)

    def patch(self, url: str, body: BodyTypes = None, **kw: Any) -> Response:
        return self.request("PATCH", url, body=body, **kw)

    @contextlib.contextmanager
    def stream(self, method: str, url: str, **kw: Any) -> Iterator[Response]:
        """A streamed response that is closed when the block exits.

        >>> with client.stream("GET", url) as r:              # doctest: +SKIP
        ...     for chunk in r.iter_bytes():
        ...         sink.write(chunk)
        """
        kw["stream"] = True
        response = self.request(method, url, **kw)
        try:
            yield response
        finally:
            response.close()

    def stats(self) -> dict[str, Any]:
        """A snapshot: connections per origin, open streams, queued requests, bytes."""
        loop, pool = self._loop, self._pool
        empty = {
            "connections": 0,
            "origins": {},
            "open_streams": 0,
            "queued": 0,
            "connections_opened": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
        }
        if loop is None or pool is None:
            return empty
        if loop.stopping:
            snap = pool.stats()
            snap.update(connections=0, origins={}, open_streams=0, queued=0)
            return snap
        fut: Future[dict[str, Any]] = Future()

        def take() -> None:
            fut.set_result(pool.stats())

        loop.call_soon_threadsafe(take)
        try:
            return fut.result(timeout=10.0)
        except Exception:
            return empty

    def close(self, timeout: float | None = 5.0) -> None:
        """Close gracefully: new requests raise :class:`ClientClosed`; in-flight ones may
        finish for up to ``timeout`` seconds, then fail with ``ClientClosed``; GOAWAY is
        sent and the I/O thread joined. Closing twice is harmless."""
        with self._lock:
            already = self._closed
            self._closed = True
            loop, pool = self._loop, self._pool
        if loop is None or pool is None:
            return
        if self._gc_finalizer is not None:
            self._gc_finalizer.detach()
        if not already:
            loop.call_soon_threadsafe(pool.close, timeout)
        if not loop.join(None if timeout is None else timeout + 5.0):
            warnings.warn("h2pool I/O thread did not stop in time", ResourceWarning, stacklevel=2)
        self._fail_leftovers()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<h2pool.Client {state}>"


def _death_handler(ref: weakref.ReferenceType[Client], pool: Pool) -> Any:
    """The I/O thread's crash handler, holding the Client only weakly."""

    def on_death(exc: BaseException) -> None:
        client = ref()
        if client is not None:
            client._on_loop_death(exc)
        else:
            pool.abort(ClientClosed(f"the h2pool I/O thread crashed: {exc!r}"))

    return on_death


def _close_abandoned(loop: IOLoop, pool: Pool) -> None:
    """A Client was garbage collected without close(): stop its I/O thread at once
    (runs in whatever thread collected it; only posts to the loop, never joins)."""
    if not loop.stopping:
        loop.call_soon_threadsafe(pool.close, 0.0)


# -- fork safety ------------------------------------------------------------------------
_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for client in list(_live_clients):
        try:
            client._after_fork_in_child()
        except Exception:  # one broken client must not leave the others pointing at
            pass  # the parent's (absent) I/O thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# -- the process-wide default client ------------------------------------------------------
_default: Client | None = None
_default_lock = threading.Lock()  # guards creating _default; never held across I/O


def default_client() -> Client:
    """The lazily created client behind ``h2pool.get()`` and friends; closed at exit."""
    global _default
    client = _default
    if client is not None and not client._closed:
        return client
    with _default_lock:
        if _default is None or _default._closed:
            _default = Client()
            atexit.register(_default.close, 1.0)
        return _default


def _module_request(method: str, url: str, **kw: Any) -> Response:
    return default_client().request(method, url, **kw)


def request(method: str, url: str, **kw: Any) -> Response:
    """``default_client().request(...)``."""
    return _module_request(method, url, **kw)


def get(url: str, **kw: Any) -> Response:
    return _module_request("GET", url, **kw)


def head(url: str, **kw: Any) -> Response:
    return _module_request("HEAD", url, **kw)


def options(url: str, **kw: Any) -> Response:
    return _module_request("OPTIONS", url, **kw)


def delete(url: str, **kw: Any) -> Response:
    return _module_request("DELETE", url, **kw)


def post(url: str, body: BodyTypes = None, **kw: Any) -> Response:
    return _module_request("POST", url, body=body, **kw)


def put(url: str, body: BodyTypes = None, **kw: Any) -> Response:
    return _module_request("PUT", url, body=body, **kw)


def patch(url: str, body: BodyTypes = None, **kw: Any) -> Response:
    return _module_request("PATCH", url, body=body, **kw)


def submit(method: str, url: str, **kw: Any) -> Future[Response]:
    """``default_client().submit(...)``."""
    return default_client().submit(method, url, **kw)


_ = ResponseFuture  # re-exported type of the futures returned by submit()
