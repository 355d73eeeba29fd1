"""The public `Client` and the process-wide default client.

Runs in caller threads. The Client holds configuration and the signatures users see;
what happens around one request in the caller's thread (encoding, auth, hooks,
retries, redirects) is `h2pool._dispatch`; validation is `h2pool._prepare`;
the request is then handed to the I/O thread (`h2pool._runtime`) as one queued
command, and the caller blocks only on its future.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import ssl
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ._auth import AuthTypes
from ._config import Limits, Proxies, Timeout, local_socket_address
from ._content import DataTypes, FilesTypes, ParamTypes
from ._dial import make_ssl_context
from ._dispatch import Dispatcher, EventHooks
from ._errors import ConnectError, H2PoolError
from ._headers import HeaderTypes
from ._pool import Pool, Stats
from ._prepare import BodyTypes, RequestBuilder
from ._request import Request, ResponseFuture, Waiter
from ._response import Response
from ._retry import Retries
from ._runtime import Runtime
from ._stream import pump_body

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = ["BodyTypes", "Client", "InsecureRequestWarning", "default_client"]


class InsecureRequestWarning(UserWarning):
    """Emitted when a Client is created with ``verify=False``."""


class Client:
    """A thread-safe HTTP/2 client: create one, share it between all threads.

    ``verify=True`` trusts certifi's bundle, or the CA file/directory named by the
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` environment variables when they are set.

    ``base_url`` is joined to relative request URLs (``Client(base_url=
    "https://api.example.org/v1")`` then ``client.get("users")`` or ``"/users"`` ->
    ``https://api.example.org/v1/users``). ``auth`` is the default ``auth=`` of every
    request; ``retries`` an `h2pool.Retries`; ``event_hooks``
    ``{"request": [fn, ...], "response": [fn, ...]}`` run in the requesting thread;
    ``transport`` replaces the network (`h2pool.MockTransport`,
    `h2pool.WSGITransport`), for tests. No cookie jar is kept: one Client serves
    many end users, and a jar would send one user's session with another's requests.

    ``proxy="http://[user:password@]host:port"`` sends every request through that HTTP
    proxy, tunnelled with ``CONNECT`` (TLS stays end to end; ``http://`` origins are
    tunnelled too). ``proxy="socks5h://[user:password@]host[:port]"`` does the same
    through a SOCKS5 proxy (RFC 1928, port 1080 by default; credentials by RFC 1929
    username/password), which resolves the origin's name; with ``socks5://`` the client
    resolves it and sends the address. A proxy's refusal, a rejected password or a
    proxy that answers garbage raises `h2pool.ConnectError` naming the proxy (never the
    credentials). With ``trust_env=True`` (the default) ``https_proxy``, ``http_proxy``,
    ``all_proxy`` and ``no_proxy`` (and their upper-case forms) are read when the Client
    is created; ``no_proxy`` does not exclude localhost unless it is listed.

    ``local_address="192.0.2.7"`` (or ``("192.0.2.7", port)``) binds each connection's
    socket to that local IP address before connecting, for hosts with several addresses
    or interfaces; only destinations of the same family (IPv4 or IPv6) are tried. A
    fixed port suits one connection at a time.

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
        verify: bool | str | ssl.SSLContext = True,
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
        base_url: str | None = None,
        auth: AuthTypes | None = None,
        retries: Retries | None = None,
        event_hooks: EventHooks | None = None,
        transport: Transport | None = None,
        local_address: str | tuple[str, int] | None = None,
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
        # proxy="http://[user:pass@]host:port" tunnels every origin with CONNECT (socks5://
        # and socks5h:// with SOCKS5); with trust_env, https_proxy / http_proxy / all_proxy /
        # no_proxy are read once, here.
        self._proxies = Proxies.build(proxy, trust_env)
        # ALPN: h2 first; http/1.1 only when the fallback is allowed. A failed TLS or
        # ALPN negotiation never falls back to cleartext.
        ssl_context = make_ssl_context(verify, cert, ["h2", "http/1.1"] if http1 else ["h2"])
        self._builder = self._request_builder(headers)
        # A partial of Pool, not a closure over self: the Runtime must not refer back to
        # the Client, or a dropped Client would live on until the cycle collector ran.
        # (host, port) -> the address to connect to instead of resolving host (the CLI's
        # --resolve); filled before the first request, read by the I/O thread only after.
        self._dial_overrides: dict[tuple[str, int], str] = {}
        self._runtime = Runtime(
            functools.partial(
                Pool,
                limits=limits,
                ssl_context=ssl_context,
                http1=http1,
                h2c=self._h2c,
                stall_timeout=self._timeout.write,
                proxies=self._proxies,
                local_address=local_socket_address(local_address),
                dial_overrides=self._dial_overrides,
            )
        )
        self._dispatch = Dispatcher(
            self._builder,
            self._send,
            self._submit_queued,
            self._runtime.refuse_if_closed,
            base_url=base_url,
            auth=auth,
            retries=retries,
            event_hooks=event_hooks,
            transport=transport,
        )

    # -- public API ------------------------------------------------------------------------

    def _request_builder(self, headers: HeaderTypes | None) -> RequestBuilder:
        """Merges every request with this client's defaults; the http.client drop-in's
        engine overrides it to add none of h2pool's own."""
        return RequestBuilder(headers, self._timeout)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        body: BodyTypes = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """Send a request and wait for its response (and its body unless ``stream``).

        ``params`` are appended to the URL's query; the body is one of ``body`` (raw
        bytes, str, a file or an iterable of bytes), ``json``, or ``data`` (a form)
        and/or ``files`` (multipart, files streamed); ``cookies`` become one ``Cookie``
        header for this request only; ``auth`` is ``(user, password)`` for Basic, an
        `h2pool.Auth`, or a callable taking the `h2pool.Request`.
        ``timeout=None`` means the client's timeouts; pass ``Timeout(None)`` for none.

        Redirects are returned as they are unless ``follow_redirects`` (default: the
        client's, itself False by default) is true; then up to ``max_redirects`` (20)
        are followed in this thread, see `h2pool._redirects`. ``timeout`` applies
        to each request of the chain; the client's ``retries`` to each hop.

        Raises an `H2PoolError` subclass on failure; ``TypeError`` for
        arguments of the wrong kind (``body={...}``: use ``json=`` or ``data=``).
        """
        d = self._dispatch
        follow = self._follow_redirects if follow_redirects is None else follow_redirects
        if (
            d.plain
            and not follow
            and params is None
            and cookies is None
            and auth is None
            and json is None
            and data is None
            and files is None
        ):
            self._runtime.refuse_if_closed()
            return self._send(self._builder.build(method, url, headers, body, timeout, stream))
        method, url, hdrs, body, public = d.compose(
            method, url, params, headers, cookies, auth, body, json, data, files
        )
        limit = self._max_redirects if max_redirects is None else max_redirects
        return d.request(method, url, hdrs, body, timeout, stream, public, follow, limit)

    def submit(
        self,
        method: str,
        url: str,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        body: BodyTypes = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
    ) -> Future[Response]:
        """Send a request without waiting; the future resolves to the `Response`.

        Takes the arguments of `request`. Never blocks on the network, so it
        never follows redirects, does not apply the client's ``retries`` to statuses
        and does not run response hooks (all three need the waiting thread); request
        hooks and auth run here. To get all of them concurrently, run
        ``client.request`` in an executor. Invalid input raises here (``InvalidURL``,
        ``InvalidHeader``, ``TypeError``); network failures arrive through the future.
        ``future.cancel()`` on an in-flight request resets its stream.
        """
        d = self._dispatch
        if (
            d.plain
            and params is None
            and cookies is None
            and auth is None
            and json is None
            and data is None
            and files is None
        ):
            self._runtime.refuse_if_closed()
            req = self._builder.build(method, url, headers, body, timeout, stream)
            return self._submit_queued(req)
        method, url, hdrs, body, public = d.compose(
            method, url, params, headers, cookies, auth, body, json, data, files
        )
        return d.submit(method, url, hdrs, body, timeout, stream, public)

    def _submit(
        self, req: Request, pump_thread: bool, waiter: Waiter | None = None
    ) -> ResponseFuture | Waiter:
        fut: ResponseFuture | Waiter = waiter if waiter is not None else ResponseFuture()
        req.future = fut
        url = req.url.url
        req.started = time.monotonic()
        if req.url.scheme == "http" and not self._h2c and not self._http1:
            fut.set_exception(
                ConnectError(
                    f"{url}: http:// needs HTTP/1.1 (http1=True) or cleartext HTTP/2 "
                    "(http2_prior_knowledge=True)"
                )
            )
            return fut
        # Read before the hand-off: from then on the I/O thread owns req, and a retry
        # there may already have given it a new pipe (filled by its own replay pump).
        upload, source = req.upload, req.upload_source
        self._runtime.submit(req)
        if upload is not None and pump_thread:
            # User file reads and generators never run on the I/O thread (contract).
            threading.Thread(
                target=pump_body,
                args=(source, upload),
                name="h2pool-body-pump",
                daemon=True,
            ).start()
        return fut

    def _submit_queued(self, req: Request) -> Future[Response]:
        fut = self._submit(req, True)
        assert isinstance(fut, ResponseFuture)
        return fut

    def _send(self, req: Request) -> Response:
        """Submit ``req`` and wait for its response, reading a streamed body on this
        thread."""
        upload, source = req.upload, req.upload_source  # before the hand-off (see _submit)
        # A Waiter, not a Future: one lock the I/O thread releases (see Waiter). Every
        # way a request completes (response, error, the loop dying) completes it.
        waiter = Waiter()
        self._submit(req, False, waiter)
        try:
            if upload is not None and not waiter.done():
                pump_body(source, upload)  # the body is read on this thread
            response: Response = waiter.wait()
            return response
        except BaseException as exc:
            if not isinstance(exc, H2PoolError):
                waiter.cancel()  # KeyboardInterrupt and the like: free the stream
            raise

    def get(
        self,
        url: str,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        body: BodyTypes = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """``request("GET", url, ...)``."""
        return self.request(
            "GET",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            body=body,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            stream=stream,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )

    def head(
        self,
        url: str,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        body: BodyTypes = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """``request("HEAD", url, ...)``."""
        return self.request(
            "HEAD",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            body=body,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            stream=stream,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )

    def options(
        self,
        url: str,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        body: BodyTypes = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """``request("OPTIONS", url, ...)``."""
        return self.request(
            "OPTIONS",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            body=body,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            stream=stream,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )

    def delete(
        self,
        url: str,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        body: BodyTypes = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """``request("DELETE", url, ...)``."""
        return self.request(
            "DELETE",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            body=body,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            stream=stream,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )

    def post(
        self,
        url: str,
        body: BodyTypes = None,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """``request("POST", url, ...)``."""
        return self.request(
            "POST",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            body=body,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            stream=stream,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )

    def put(
        self,
        url: str,
        body: BodyTypes = None,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """``request("PUT", url, ...)``."""
        return self.request(
            "PUT",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            body=body,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            stream=stream,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )

    def patch(
        self,
        url: str,
        body: BodyTypes = None,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Response:
        """``request("PATCH", url, ...)``."""
        return self.request(
            "PATCH",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            body=body,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            stream=stream,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        body: BodyTypes = None,
        json: object = None,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: Timeout | float | None = None,
        follow_redirects: bool | None = None,
        max_redirects: int | None = None,
    ) -> Iterator[Response]:
        """A streamed response that is closed when the block exits; the arguments of
        `request`.

        >>> with client.stream("GET", url) as r:              # doctest: +SKIP
        ...     for chunk in r.iter_bytes():
        ...         sink.write(chunk)
        """
        response = self.request(
            method,
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            body=body,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            stream=True,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )
        try:
            yield response
        finally:
            response.close()

    def stats(self) -> Stats:
        """A snapshot: connections per origin, open streams, queued requests, bytes,
        retries and resets (`h2pool.Stats`; the same keys before the first
        request as after). ``retries`` counts the pool's own re-sends of unprocessed
        requests, ``policy_retries`` those made by ``Client(retries=...)``."""
        snap = self._runtime.stats()
        snap["policy_retries"] = self._dispatch.policy_retries
        return snap

    def close(self, timeout: float | None = 5.0) -> None:
        """Close gracefully: new requests raise `ClientClosed`; in-flight ones may
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


_ = ResponseFuture  # re-exported type of the futures returned by submit()
