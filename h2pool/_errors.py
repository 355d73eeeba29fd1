"""The exception tree of h2pool.

Every exception that crosses the public API derives from `H2PoolError`.
Low-level errors (``OSError``, ``ssl.SSLError``, ``h2.exceptions.*``) are wrapped
with ``raise ... from exc`` so the cause stays visible but never escapes bare.
Each class says when it is raised and whether retrying the request is safe.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._response import Response

__all__ = [
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "DecodingError",
    "H2PoolError",
    "HTTPStatusError",
    "InvalidHeader",
    "InvalidURL",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RedirectError",
    "RequestBodyError",
    "StreamReset",
    "TLSError",
    "TimeoutError",
    "TooManyRedirects",
    "WriteTimeout",
]


class H2PoolError(Exception):
    """Base class of every error h2pool raises."""


def clone(exc: BaseException) -> BaseException:
    """A copy of ``exc`` (same class, message, attributes and cause) for one more waiter.

    One failure (a lost connection) often fails many requests; giving each caller its
    own exception object keeps their tracebacks from being spliced together.
    """
    new = exc.__class__.__new__(exc.__class__)
    new.args = exc.args
    new.__dict__.update(getattr(exc, "__dict__", {}))
    new.__cause__ = exc.__cause__
    new.__suppress_context__ = True
    return new


def detached(exc: BaseException) -> BaseException:
    """``exc`` with no traceback on it or on the exceptions chained to it.

    For an error the I/O thread caught and hands on as a cause: callers keep it as long
    as they like, and a traceback keeps every frame of the I/O thread's stack at the
    time alive with it (the requests and bodies those frames refer to). What went wrong
    is in the types and messages; h11's errors also chain (``__context__``) the error
    they were raised from, with its own traceback.
    """
    todo = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)
    return exc


class InvalidURL(H2PoolError, ValueError):
    """The URL cannot be sent: bad scheme, missing host, bad port or forbidden characters.

    Raised in the caller's thread before anything is queued; nothing reached the wire.
    """


class InvalidHeader(H2PoolError, ValueError):
    """A header name, value or the method is malformed (RFC 9113 §8.2.1, RFC 9110 §5).

    Raised in the caller's thread before anything is queued; nothing reached the wire.
    """


class ConnectError(H2PoolError):
    """The connection could not be established (DNS, TCP, ALPN).

    The server never saw the request, so retrying is safe.
    """


class TLSError(ConnectError):
    """The TLS handshake failed: untrusted certificate, wrong hostname, old protocol."""


class TimeoutError(H2PoolError, builtins.TimeoutError):
    """Base of the timeouts; also a builtin `TimeoutError`."""


class ConnectTimeout(TimeoutError):
    """DNS, TCP connect and TLS handshake together took longer than ``Timeout.connect``."""


class ReadTimeout(TimeoutError):
    """No byte of the response arrived for ``Timeout.read`` seconds.

    Only the affected stream is reset; the server may have processed the request,
    so a retry is safe only for idempotent requests.
    """


class WriteTimeout(TimeoutError):
    """The request body could not be sent for ``Timeout.write`` seconds."""


class PoolTimeout(TimeoutError):
    """No stream slot became free within ``Timeout.pool``. Nothing was sent."""


class ProtocolError(H2PoolError):
    """The peer broke HTTP/2 (or HTTP/1.1) rules, or the response was malformed."""

    # Which part of an HTTP/1 response head was bad, and its text: ("status line", the
    # line), ("version", the version) or ("too long", ""). The http.client drop-in
    # raises the stdlib's BadStatusLine, UnknownProtocol and LineTooLong from it.
    _head_error: tuple[str, str] | None = None


class DecodingError(ProtocolError):
    """The response body does not decode as its ``Content-Encoding`` says (corrupt or
    truncated gzip/deflate/br/zstd data), or it names more than five codings.

    Raised while reading the body, in the reader's thread. The request was processed.
    """


class StreamReset(H2PoolError):
    """The server reset the stream with RST_STREAM; ``error_code`` is its code.

    REFUSED_STREAM is retried transparently and never surfaces here.
    """

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class RequestBodyError(H2PoolError):
    """Reading the request body failed (the user's file or generator raised; the cause
    is chained), or it disagreed with its declared Content-Length. The stream was reset;
    the connection carries on. Not retried.
    """


class StreamClosed(H2PoolError, RuntimeError):
    """A streamed body was read after `Response.close` (or the end of its ``with``
    block) discarded what was left of it. Raised rather than returning ``b""``: an
    empty read would pass a body cut short for a complete one."""


class ConnectionLost(H2PoolError):
    """The connection died while the request was in flight.

    Raised only when the request may have reached the server; requests that provably
    did not were retried on another connection.
    """

    # True when part of the response head had arrived: the server began to answer.
    # The http.client and requests layers report that case as the stdlib does (the
    # stdlib ends a head at EOF and then finds the body short).
    _partial_response = False


class ClientClosed(H2PoolError):
    """The client was closed before or while the request ran."""


class HTTPStatusError(H2PoolError):
    """Raised by `Response.raise_for_status` for a 4xx or 5xx response."""

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class RedirectError(H2PoolError):
    """A redirect could not be followed safely (only with ``follow_redirects=True``):
    an https -> http downgrade, a 307/308 whose request body cannot be sent again, or
    an unusable ``Location``. ``.response`` is the redirect response itself.
    """

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class TooManyRedirects(RedirectError):
    """More than ``max_redirects`` redirects in a row; ``.response`` is the last one."""
