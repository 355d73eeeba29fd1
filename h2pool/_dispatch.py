"""One call of ``Client.request`` as the caller's thread runs it.

In order: the everyday arguments are encoded (`h2pool._content`), ``base_url``
joined, auth applied (`h2pool._auth`), request hooks run; the request is
validated and handed to the I/O thread (or to a test transport) and the caller waits;
then `h2pool.Retries` decides whether to send it again, response hooks run, and
redirects are followed (`h2pool._redirects`), each hop going through the same
steps. All of it runs in the thread that made the request: user code (auth callables,
hooks, transports, body producers) never runs on the I/O thread.

``submit()`` runs the first half only (encoding, auth, request hooks) and returns the
future of the first response: it never blocks, so it cannot wait out a backoff or run
response hooks in the waiting thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Union

from ._auth import AuthTypes, BasicAuth, BearerAuth, resolve_auth
from ._config import Timeout
from ._content import (
    DataTypes,
    FilesTypes,
    ParamTypes,
    append_params,
    cookie_header,
    encode_form,
    encode_json,
    multipart,
)
from ._errors import H2PoolError
from ._headers import HeaderTypes, normalize_headers
from ._outgoing import Request
from ._prepare import BodyTypes, RequestBuilder
from ._redirects import follow_chain, is_redirect, replay_point
from ._response import Response
from ._retry import Retries

if TYPE_CHECKING:
    from ._request import Request as SentRequest
    from ._transport import Transport

__all__ = ["Dispatcher", "EventHooks", "rewind"]

log = logging.getLogger("h2pool")

EventHooks = Mapping[
    str, Sequence[Union[Callable[[Request], object], Callable[[Response], object]]]
]
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_NO_DROP: frozenset[bytes] = frozenset()


def _hooks(event_hooks: EventHooks | None) -> tuple[list[Callable[..., object]], ...]:
    request: list[Callable[..., object]] = []
    response: list[Callable[..., object]] = []
    if event_hooks is None:
        return request, response
    if not isinstance(event_hooks, Mapping):
        raise TypeError('event_hooks must be a dict: {"request": [...], "response": [...]}')
    for name, fns in event_hooks.items():
        if name not in ("request", "response"):
            raise ValueError(f"unknown event hook {name!r}: use 'request' or 'response'")
        if callable(fns) or not isinstance(fns, (list, tuple)):
            raise TypeError(f"event_hooks[{name!r}] must be a list of callables")
        for fn in fns:
            if not callable(fn):
                raise TypeError(f"event_hooks[{name!r}] holds {fn!r}, which is not callable")
        (request if name == "request" else response).extend(fns)
    return request, response


def _set_header(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    headers[:] = [(n, v) for n, v in headers if n != name]
    headers.append((name, value))


def _target(url: str) -> str:
    """``url`` without its query string or userinfo, for logs."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    return re.sub(r"(?<=//)[^/@]*@", "", base)


def rewind(body: BodyTypes, replay: tuple[bool, int | None] | None) -> None:
    """Put a seekable file body back where it started, for the next attempt."""
    if replay is not None and replay[1] is not None:
        body.seek(replay[1])  # type: ignore[union-attr]


class Dispatcher:
    """A Client's caller-thread policy: defaults, auth, hooks, retries, transport.

    Immutable after construction and shared by every thread; the only state it
    changes is the retry counter, under ``_count_lock``.
    """

    def __init__(
        self,
        builder: RequestBuilder,
        send: Callable[[SentRequest], Response],
        submit: Callable[[SentRequest], Future[Response]],
        refuse_if_closed: Callable[[], None],
        *,
        base_url: str | None,
        auth: AuthTypes | None,
        retries: Retries | None,
        event_hooks: EventHooks | None,
        transport: Transport | None,
    ) -> None:
        if base_url is not None:
            if not isinstance(base_url, str) or not _ABSOLUTE.match(base_url):
                raise ValueError(f"base_url must be an absolute http(s) URL, not {base_url!r}")
            base_url = base_url.split("#", 1)[0]
            if "?" in base_url:
                raise ValueError("base_url cannot carry a query string; use params=")
            if not base_url.endswith("/"):
                base_url += "/"
        if retries is not None and not isinstance(retries, Retries):
            raise TypeError("retries must be an h2pool.Retries")
        if transport is not None and not callable(getattr(transport, "handle_request", None)):
            raise TypeError("transport must have a handle_request(request) method")
        self.builder = builder
        self._send_wire = send
        self._submit_wire = submit
        self._refuse_if_closed = refuse_if_closed
        self.base_url = base_url
        self.auth = resolve_auth(auth)
        self.retries = retries
        self.request_hooks, self.response_hooks = _hooks(event_hooks)
        self.transport = transport
        # Guards `policy_retries`; taken only to add one, by any caller thread; no
        # finalizer or I/O-thread code takes it.
        self._count_lock = threading.Lock()
        self.policy_retries = 0
        # Nothing configured that needs the steps above: a request with none of the
        # everyday arguments goes straight to validation (the small-GET path).
        self.plain = (
            base_url is None
            and self.auth is None
            and retries is None
            and transport is None
            and not self.request_hooks
            and not self.response_hooks
        )

    # -- building -----------------------------------------------------------------------
    def compose(
        self,
        method: str,
        url: str,
        params: ParamTypes | None,
        headers: HeaderTypes | None,
        cookies: Mapping[str, str] | None,
        auth: AuthTypes | None,
        body: BodyTypes,
        json: object,
        data: DataTypes | None,
        files: FilesTypes | None,
    ) -> tuple[str, str, HeaderTypes | None, BodyTypes, Request | None]:
        """(method, url, headers, body, the user-visible Request if one was needed) with
        every everyday argument applied, auth and request hooks run."""
        base = self.base_url
        if base is not None and isinstance(url, str) and not _ABSOLUTE.match(url):
            url = base + url.lstrip("/")
        if params is not None:
            url = append_params(url, params)
        given = (body is not None) + (json is not None) + (data is not None or files is not None)
        if given > 1:
            raise TypeError("give only one of body=, json= and data=/files=")
        hdrs: list[tuple[bytes, bytes]] | None = None
        ctype: bytes | None = None
        if json is not None:
            body, ctype = encode_json(json), b"application/json"
        elif files is not None:
            mp = multipart(data, files)
            body = mp  # type: ignore[assignment]  # file-like: read() and seek(0)
            hdrs = normalize_headers(headers)
            _set_header(hdrs, b"content-type", mp.content_type.encode("ascii"))
            if mp.length is not None:
                _set_header(hdrs, b"content-length", str(mp.length).encode("ascii"))
        elif data is not None:
            body, ctype = encode_form(data), b"application/x-www-form-urlencoded"
        if ctype is not None:
            hdrs = normalize_headers(headers)
            # The caller's Content-Type wins, given with the request or as the client's
            # default (as requests and httpx do). files= always sets its own above: a
            # multipart body is unreadable without its boundary.
            if not any(n == b"content-type" for n, _ in hdrs) and not self.builder.has_default(
                b"content-type"
            ):
                hdrs.append((b"content-type", ctype))
        if cookies is not None:
            value = cookie_header(cookies)
            if value:
                hdrs = normalize_headers(headers) if hdrs is None else hdrs
                old = [v for n, v in hdrs if n == b"cookie"]
                _set_header(hdrs, b"cookie", b"; ".join([*old, value]))
        auth_obj = self.auth if auth is None else resolve_auth(auth)
        # Exactly these two: a subclass may override apply(), which must then run.
        if type(auth_obj) is BasicAuth or type(auth_obj) is BearerAuth:
            hdrs = normalize_headers(headers) if hdrs is None else hdrs
            _set_header(hdrs, b"authorization", auth_obj.header.encode("utf-8"))
            auth_obj = None
        if hdrs is not None:
            headers = hdrs
        public: Request | None = None
        if auth_obj is not None or self.request_hooks:
            public = Request(method, url, headers, body)
            if auth_obj is not None:
                auth_obj.apply(public)
            for hook in self.request_hooks:
                hook(public)
            method, url, headers, body = public.method, public.url, public.headers, public.body
        return method, url, headers, body, public

    # -- sending ------------------------------------------------------------------------
    def _exchange(self, req: SentRequest, public: Request | None) -> Response:
        transport = self.transport
        if transport is None:
            return self._send_wire(req)
        if public is None:
            public = Request(
                req.method,
                req.url.url,
                [(b"host", req.url.authority)] + [(n, v) for n, v in req.headers if n[:1] != b":"],
                req.body if req.upload_source is None else req.upload_source,
            )
        t0 = time.monotonic()
        response = transport.handle_request(public)
        response._t0, response._t1 = t0, time.monotonic()
        response._request = public
        if not response.url:
            response.url = public.url
        response.method = public.method
        return response

    def send(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None,
        body: BodyTypes,
        timeout: Timeout | float | None,
        stream: bool,
        public: Request | None,
        drop: frozenset[bytes] = _NO_DROP,
        replay: tuple[bool, int | None] | None = None,
    ) -> Response:
        """One hop: send, retry under the client's ``Retries``, run response hooks."""
        if self.retries is not None and replay is None:
            replay = replay_point(body)
        replayable = replay is not None and replay[0]
        attempt = 1
        while True:
            self._refuse_if_closed()
            req = self.builder.build(method, url, headers, body, timeout, stream, drop)
            try:
                response = self._exchange(req, public)
            except H2PoolError as exc:
                wait = self.judge(req.method, url, attempt, replayable, None, exc)
                if wait is None:
                    raise
            else:
                wait = self.judge(req.method, url, attempt, replayable, response, None)
                if wait is None:
                    self.run_response_hooks(response)
                    return response
            time.sleep(wait)
            rewind(body, replay)
            attempt += 1

    def judge(
        self,
        method: str,
        url: str,
        attempt: int,
        replayable: bool,
        response: Response | None,
        error: BaseException | None,
    ) -> float | None:
        """The client's ``Retries`` verdict on one attempt: seconds to wait before the
        next, or None. A retry is counted and logged here, and the response it replaces
        closed (an unread stream is reset)."""
        retries = self.retries
        if retries is None:
            return None
        wait = retries.delay(method, attempt, replayable, response, error)
        if wait is None:
            return None
        if response is not None:
            reason = f"status {response.status}"
            response.close()
        else:
            reason = type(error).__name__
        with self._count_lock:
            self.policy_retries += 1
        log.debug(
            "retrying %s %s (%s; attempt %d of %d) in %.3f s",
            method,
            _target(url),
            reason,
            attempt + 1,
            retries.attempts,
            wait,
        )
        return wait

    def run_response_hooks(self, response: Response) -> None:
        try:
            for hook in self.response_hooks:
                hook(response)
        except BaseException:
            response.close()
            raise

    def request(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None,
        body: BodyTypes,
        timeout: Timeout | float | None,
        stream: bool,
        public: Request | None,
        follow: bool,
        max_redirects: int,
    ) -> Response:
        """Send a composed request and follow its redirects when ``follow``."""
        replay = replay_point(body) if (follow or self.retries) and body is not None else None
        response = self.send(method, url, headers, body, timeout, stream, public, _NO_DROP, replay)
        if not follow or not is_redirect(response):
            return response

        def send_hop(
            method: str,
            url: str,
            headers: list[tuple[bytes, bytes]],
            body: BodyTypes,
            drop: frozenset[bytes],
        ) -> Response:
            if not self.request_hooks:
                return self.send(method, url, headers, body, timeout, stream, None, drop)
            hop = Request(method, url, headers, body)
            for hook in self.request_hooks:
                hook(hop)
            return self.send(hop.method, hop.url, hop.headers, hop.body, timeout, stream, hop, drop)

        return follow_chain(send_hop, response, method, headers, body, replay, max_redirects)

    def submit(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None,
        body: BodyTypes,
        timeout: Timeout | float | None,
        stream: bool,
        public: Request | None,
    ) -> Future[Response]:
        """Queue a composed request; a transport answers before this returns."""
        self._refuse_if_closed()
        req = self.builder.build(method, url, headers, body, timeout, stream)
        if self.transport is None:
            return self._submit_wire(req)
        fut: Future[Response] = Future()
        try:
            fut.set_result(self._exchange(req, public))
        except Exception as exc:
            fut.set_exception(exc)
        return fut
