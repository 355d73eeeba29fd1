"""Following redirects (opt-in): a loop in the caller's thread, never on the I/O thread.

Each hop is an ordinary request through the same client, so it is pooled and
multiplexed like any other. The policy follows RFC 9110 §15.4 and what browsers,
requests and httpx do where the RFC leaves a choice:

* 301, 302 and 303 become GET without a body (HEAD stays HEAD);
* 307 and 308 repeat the method and the body, if the body can be sent again (bytes,
  str, or a seekable file); a generator or a pipe raises `RedirectError`;
* ``Authorization``, ``Proxy-Authorization`` and ``Cookie`` are dropped when the
  redirect leaves the origin (scheme, host, port), as are default headers of those
  names and ``Host``;
* https -> http is refused (`RedirectError`): it would send the request, and
  whatever the server thought private, in clear text;
* more than ``max_redirects`` raises `TooManyRedirects`.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urldefrag, urljoin

from ._errors import InvalidURL, RedirectError, TooManyRedirects
from ._headers import HeaderTypes, normalize_headers
from ._stream import rewind_point
from ._urls import parse_url

if TYPE_CHECKING:
    from ._prepare import BodyTypes
    from ._response import Response

__all__ = [
    "REDIRECT_STATUSES",
    "SendHop",
    "follow_chain",
    "is_redirect",
    "redirect_steps",
    "replay_point",
]

log = logging.getLogger("h2pool")

REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
_CREDENTIALS = frozenset((b"authorization", b"proxy-authorization", b"cookie", b"host"))
_BODY_HEADERS = frozenset((b"content-length", b"content-type", b"transfer-encoding"))


class SendHop(Protocol):
    """Sends one hop of a chain and waits for its response: an ordinary request of the
    same client, with the chain's timeout and ``stream``. Default headers named in
    ``drop`` are left out."""

    def __call__(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: BodyTypes,
        drop: frozenset[bytes],
    ) -> Response: ...


def is_redirect(response: Response) -> bool:
    return response.status in REDIRECT_STATUSES and "location" in response.headers


def replay_point(body: BodyTypes) -> tuple[bool, int | None]:
    """(can the body be sent again, the file position to rewind to); taken before the
    first request reads the body."""
    if body is None or isinstance(body, (bytes, bytearray, memoryview, str)):
        return True, None
    pos = rewind_point(body)
    return pos is not None, pos


Hop = tuple[str, str, list[tuple[bytes, bytes]], "BodyTypes", frozenset[bytes]]


def redirect_steps(
    response: Response,
    method: str,
    headers: HeaderTypes | None,
    body: BodyTypes,
    replay: tuple[bool, int | None] | None,
    max_redirects: int,
) -> Generator[Hop, Response, Response]:
    """The redirect policy as a generator, shared by the blocking and the asyncio
    clients: it yields each hop to send (method, url, headers, body, default headers to
    drop), is sent that hop's response, and returns the final response with
    ``.history`` holding the redirects, oldest first. ``replay`` is what
    `replay_point` said of ``body`` before it was first sent."""
    replayable, position = replay or (True, None)
    hdrs = normalize_headers(headers)
    origin = parse_url(response.url).origin
    drop: frozenset[bytes] = frozenset()
    history: list[Response] = []
    while is_redirect(response):
        response.close()  # a redirect's body is not wanted; an unread one is reset
        history.append(response)
        if len(history) > max_redirects:
            raise TooManyRedirects(
                f"more than {max_redirects} redirects, last to {response.headers['location']!r}",
                response,
            )
        location = response.headers["location"]
        target, _fragment = urldefrag(urljoin(response.url, location.strip()))
        try:
            url = parse_url(target)
        except InvalidURL as exc:
            raise RedirectError(f"cannot follow redirect to {location!r}: {exc}", response) from exc
        old = parse_url(response.url)
        if old.scheme == "https" and url.scheme == "http":
            raise RedirectError(
                f"refusing to follow a redirect from https to http ({target!r})", response
            )
        status = response.status
        if status in (301, 302, 303) and method != "HEAD":
            method, body = "GET", None
            hdrs = [(n, v) for n, v in hdrs if n not in _BODY_HEADERS]
        elif body is not None:
            if not replayable:
                raise RedirectError(
                    f"{status} redirect to {target!r} needs the request body again, "
                    "and it was an iterator that cannot be replayed",
                    response,
                )
            if position is not None:
                body.seek(position)  # type: ignore[union-attr]
        if url.origin != origin:
            # Credentials were meant for the first origin only (RFC 9110 §15.4: the
            # user agent must not leak them; requests/httpx/curl all strip them).
            hdrs = [(n, v) for n, v in hdrs if n not in _CREDENTIALS]
            drop = _CREDENTIALS
        # The query string may carry tokens: log the origin and path only.
        log.debug(
            "following %d redirect: %s %s://%s%s",
            status,
            method,
            url.scheme,
            url.authority.decode("ascii", "replace"),
            url.target.split(b"?", 1)[0].decode("ascii", "replace"),
        )
        response = yield (method, url.url, hdrs, body, drop)
    response.history = history
    return response


def follow_chain(
    send: SendHop,
    response: Response,
    method: str,
    headers: HeaderTypes | None,
    body: BodyTypes,
    replay: tuple[bool, int | None] | None,
    max_redirects: int,
) -> Response:
    """Follow ``response`` (a redirect) and its successors, each sent with ``send``
    (`redirect_steps` driven in this thread)."""
    steps = redirect_steps(response, method, headers, body, replay, max_redirects)
    try:
        hop = next(steps)
        while True:
            hop = steps.send(send(*hop))
    except StopIteration as done:
        final: Response = done.value
        return final
