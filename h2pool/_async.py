"""``AsyncClient``: asyncio on the same I/O thread and the same pool as the threads.

Runs in event-loop threads. A coroutine builds its request exactly as a thread does
(`h2pool._dispatch`: encoding, auth, request hooks, validation), hands it to the
Client's I/O thread and awaits the future through ``asyncio.wrap_future``: the I/O
thread resolves it and asyncio moves the result to the loop with
``call_soon_threadsafe``. A streamed body is read through the pipe's waker (one wake-up
per wait, however many chunks arrived; `h2pool.Response.aiter_bytes`). Nothing
here blocks the event loop: not the network, not a queue, not a body pipe, not
``aclose()`` (the Client is closed in a worker thread). Request bodies from files and
iterables are pumped by a short-lived thread, as for ``submit()``.

Several event loops (in different threads) and any number of threads may share one
Client: each call uses the loop it runs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from ._auth import AuthTypes
from ._client import Client
from ._config import Limits, Timeout
from ._content import DataTypes, FilesTypes, ParamTypes
from ._dispatch import Dispatcher, EventHooks, rewind
from ._errors import H2PoolError
from ._headers import HeaderTypes
from ._outgoing import Request
from ._pool import Stats
from ._prepare import BodyTypes
from ._redirects import is_redirect, redirect_steps, replay_point
from ._response import Response
from ._retry import Retries

if TYPE_CHECKING:
    from ._request import Request as SentRequest
    from ._transport import Transport

__all__ = ["AsyncClient"]

_NO_DROP: frozenset[bytes] = frozenset()


async def _let_go(req: SentRequest | None) -> None:
    """Wait, off the loop, until the pump thread reading ``req``'s body has stopped.

    A file body is rewound for a retry or a 307/308 hop; a pump thread still inside
    ``read()`` (a server may answer before it has read the body) would take the
    rewound file's first bytes, and the next request would go out without them. The
    pump stops once its request is over: answered, failed, or closed here.
    """
    upload = req.upload if req is not None else None
    if upload is not None and not upload.pump_done.is_set():
        await asyncio.to_thread(upload.pump_done.wait, 30.0)


class AsyncClient:
    """The asyncio face of a `Client`, with the same arguments everywhere.

    ``AsyncClient(...)`` takes the `Client` constructor's arguments and owns the
    Client it creates; ``AsyncClient(client=shared)`` shares an existing one (its
    connections, limits and defaults) with the program's threads and other loops, and
    ``aclose()`` leaves it open.

    >>> async with h2pool.AsyncClient() as ac:                # doctest: +SKIP
    ...     r = await ac.get("https://example.org/", params={"q": "x"})
    ...     async with ac.stream("GET", "https://example.org/big") as s:
    ...         async for chunk in s.aiter_bytes():
    ...             ...

    Cancelling the awaiting task resets the stream (RST_STREAM CANCEL) and frees its
    slot. Auth callables, event hooks and transports run in the event loop's thread, so
    they must not block.
    """

    def __init__(
        self,
        *,
        client: Client | None = None,
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
        if client is not None:
            if not isinstance(client, Client):
                raise TypeError("client must be an h2pool.Client")
            configured = (
                verify is not True
                or cert is not None
                or timeout != Timeout()
                or limits != Limits()
                or http1 is not True
                or http2_prior_knowledge
                or headers is not None
                or follow_redirects
                or max_redirects != 20
                or proxy is not None
                or trust_env is not True
                or base_url is not None
                or auth is not None
                or retries is not None
                or event_hooks is not None
                or transport is not None
                or local_address is not None
            )
            if configured:
                raise TypeError(
                    "AsyncClient(client=...) uses that Client's configuration; "
                    "give the other arguments to the Client instead"
                )
            self._client = client
            self._owned = False
        else:
            self._client = Client(
                verify=verify,
                cert=cert,
                timeout=timeout,
                limits=limits,
                http1=http1,
                http2_prior_knowledge=http2_prior_knowledge,
                headers=headers,
                follow_redirects=follow_redirects,
                max_redirects=max_redirects,
                proxy=proxy,
                trust_env=trust_env,
                base_url=base_url,
                auth=auth,
                retries=retries,
                event_hooks=event_hooks,
                transport=transport,
                local_address=local_address,
            )
            self._owned = True
        self._dispatch: Dispatcher = self._client._dispatch

    @property
    def client(self) -> Client:
        """The `Client` behind this one (its pool, stats and configuration)."""
        return self._client

    # -- the request path ---------------------------------------------------------------
    async def request(
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
        """Send a request and await its response: `Client.request`'s arguments and
        behaviour (Retries, hooks and redirects included), without blocking the loop.

        With ``stream=True`` read the body with ``aiter_bytes()``/``aread()`` and close
        it (or use `stream`)."""
        c = self._client
        d = self._dispatch
        method, url, hdrs, body, public = d.compose(
            method, url, params, headers, cookies, auth, body, json, data, files
        )
        follow = c._follow_redirects if follow_redirects is None else follow_redirects
        limit = c._max_redirects if max_redirects is None else max_redirects
        replay = replay_point(body) if (follow or d.retries) and body is not None else None
        response = await self._send(
            method, url, hdrs, body, timeout, stream, public, _NO_DROP, replay
        )
        if not follow or not is_redirect(response):
            return response
        steps = redirect_steps(response, method, hdrs, body, replay, limit)
        try:
            await self._release_redirect(response)
            hop = next(steps)
            while True:
                h_method, h_url, h_headers, h_body, drop = hop
                hop_public: Request | None = None
                if d.request_hooks:
                    hop_public = Request(h_method, h_url, h_headers, h_body)
                    for hook in d.request_hooks:
                        hook(hop_public)
                    h_method, h_url = hop_public.method, hop_public.url
                    h_body = hop_public.body
                    hop_response = await self._send(
                        h_method,
                        h_url,
                        hop_public.headers,
                        h_body,
                        timeout,
                        stream,
                        hop_public,
                        drop,
                    )
                else:
                    hop_response = await self._send(
                        h_method, h_url, h_headers, h_body, timeout, stream, None, drop
                    )
                await self._release_redirect(hop_response)
                hop = steps.send(hop_response)
        except StopIteration as done:
            final: Response = done.value
            return final

    async def _send(
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
        """One hop, as `Dispatcher.send` does it, awaiting instead of blocking."""
        d = self._dispatch
        if d.retries is not None and replay is None:
            replay = replay_point(body)
        replayable = replay is not None and replay[0]
        attempt = 1
        while True:
            d._refuse_if_closed()
            req = d.builder.build(method, url, headers, body, timeout, stream, drop)
            try:
                if d.transport is not None:
                    response = d._exchange(req, public)
                else:
                    response = await self._await(self._client._submit_queued(req))
            except H2PoolError as exc:
                wait = d.judge(req.method, url, attempt, replayable, None, exc)
                if wait is None:
                    raise
            else:
                wait = d.judge(req.method, url, attempt, replayable, response, None)
                if wait is None:
                    d.run_response_hooks(response)
                    return response
            await asyncio.sleep(wait)
            if d.transport is None:
                await _let_go(req)
            rewind(body, replay)
            attempt += 1

    async def _release_redirect(self, response: Response) -> None:
        """Before `redirect_steps` rewinds the body for the next hop: a redirect is
        closed (as the steps would close it), so that its request's pump stops."""
        if self._dispatch.transport is None and is_redirect(response):
            response.close()
            await _let_go(response._sent)

    @staticmethod
    async def _await(fut: object) -> Response:
        # wrap_future: the I/O thread's set_result reaches this loop through
        # call_soon_threadsafe (and not at all once the loop is closed); cancelling the
        # task cancels the future, which resets the stream.
        response: Response = await asyncio.wrap_future(fut)  # type: ignore[arg-type]
        return response

    @contextlib.asynccontextmanager
    async def stream(
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
    ) -> AsyncIterator[Response]:
        """A streamed response, closed (its stream reset if unfinished) on exit.

        >>> async with ac.stream("GET", url) as r:              # doctest: +SKIP
        ...     async for chunk in r.aiter_bytes():
        ...         sink.write(chunk)
        """
        response = await self.request(
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

    async def get(
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
        """``await request("GET", url, ...)``."""
        return await self.request(
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

    async def head(
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
        """``await request("HEAD", url, ...)``."""
        return await self.request(
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

    async def options(
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
        """``await request("OPTIONS", url, ...)``."""
        return await self.request(
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

    async def delete(
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
        """``await request("DELETE", url, ...)``."""
        return await self.request(
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

    async def post(
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
        """``await request("POST", url, ...)``."""
        return await self.request(
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

    async def put(
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
        """``await request("PUT", url, ...)``."""
        return await self.request(
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

    async def patch(
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
        """``await request("PATCH", url, ...)``."""
        return await self.request(
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

    def stats(self) -> Stats:
        """The shared Client's `Client.stats` (threads and coroutines together).
        It waits briefly for the I/O thread; call it from a thread with
        ``asyncio.to_thread`` where that matters."""
        return self._client.stats()

    async def aclose(self) -> None:
        """Close the Client this AsyncClient created (gracefully, in a worker thread so
        the loop keeps running); a shared Client given as ``client=`` stays open."""
        if self._owned:
            await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        kind = "own" if self._owned else "shared"
        return f"<h2pool.AsyncClient {kind} {self._client!r}>"
