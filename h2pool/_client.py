"""The public :class:`Client`, the process-wide default client and module-level helpers.

Runs in caller threads. A request is validated and encoded (:mod:`h2pool._prepare`),
then handed to the I/O thread as one queued command; the caller blocks only on its
future.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from ._config import Limits, Proxies, Timeout
from ._dial import make_ssl_context
from ._errors import ConnectError, H2PoolError
from ._headers import HeaderTypes
from ._pool import Pool, Stats
from ._prepare import BodyTypes, RequestBuilder
from ._redirects import follow_chain, is_redirect, replay_point
from ._request import Request, ResponseFuture
from ._response import Response
from ._runtime import Runtime
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
        self._http1 = http1
        self._follow_redirects = follow_redirects
        self._max_redirects = max_redirects
        self._h2c = http2_prior_knowledge
        # proxy="http://[user:pass@]host:port" tunnels every origin with CONNECT; with
        # trust_env, https_proxy / http_proxy / all_proxy / no_proxy are read once, here.
        self._proxies = Proxies.build(proxy, trust_env)
        # ALPN: h2 first; http/1.1 only when the fallback is allowed. A failed TLS or
        # ALPN negotiation never falls back to cleartext.
        ssl_context = make_ssl_context(verify, cert, ["h2", "http/1.1"] if http1 else ["h2"])
        self._builder = RequestBuilder(headers, self._timeout)
        # A partial of Pool, not a closure over self: the Runtime must not refer back to
        # the Client, or a dropped Client would live on until the cycle collector ran.
        self._runtime = Runtime(
            functools.partial(
                Pool,
                limits=limits,
                ssl_context=ssl_context,
                http1=http1,
                h2c=self._h2c,
                stall_timeout=self._timeout.write,
                proxies=self._proxies,
            )
        )

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
        self._runtime.refuse_if_closed()
        return self._submit(self._builder.build(method, url, headers, body, timeout, stream), True)

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
        self._runtime.submit(req)
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
        self._runtime.refuse_if_closed()
        response = self._send(self._builder.build(method, url, headers, body, timeout, stream))
        if not follow or not is_redirect(response):
            return response
        limit = self._max_redirects if max_redirects is None else max_redirects

        def send_hop(
            method: str,
            url: str,
            headers: list[tuple[bytes, bytes]],
            body: BodyTypes,
            drop: frozenset[bytes],
        ) -> Response:
            self._runtime.refuse_if_closed()
            req = self._builder.build(method, url, headers, body, timeout, stream, drop)
            return self._send(req)

        return follow_chain(send_hop, response, method, headers, body, replay, limit)

    def _send(self, req: Request) -> Response:
        """Submit ``req`` and wait for its response, reading a streamed body on this
        thread."""
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

    def stats(self) -> Stats:
        """A snapshot: connections per origin, open streams, queued requests, bytes,
        retries and resets (:class:`h2pool.Stats`; the same keys before the first
        request as after)."""
        return self._runtime.stats()

    def close(self, timeout: float | None = 5.0) -> None:
        """Close gracefully: new requests raise :class:`ClientClosed`; in-flight ones may
        finish for up to ``timeout`` seconds, then fail with ``ClientClosed``; GOAWAY is
        sent and the I/O thread joined. Closing twice is harmless."""
        self._runtime.close(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._runtime.closed else "open"
        return f"<h2pool.Client {state}>"


# -- the process-wide default client ------------------------------------------------------
_default: Client | None = None
_default_lock = threading.Lock()  # guards creating _default; never held across I/O


def _reset_default_lock_in_child() -> None:
    """A fork may copy the lock held by another thread; the child starts with a free one."""
    global _default_lock
    _default_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_default_lock_in_child)


def default_client() -> Client:
    """The lazily created client behind ``h2pool.get()`` and friends; closed at exit."""
    global _default
    client = _default
    if client is not None and not client._runtime.closed:
        return client
    with _default_lock:
        if _default is None or _default._runtime.closed:
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
