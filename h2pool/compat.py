"""An `http.client` drop-in backed by h2pool: `HTTP20Connection`,
`HTTPConnection` and `HTTPSConnection`.

Runs in caller threads. A connection object opens no socket of its own: every object
with the same TLS configuration shares one lazily created `h2pool.Client`
(one I/O thread, pooled connections per origin), so thousands of these objects across
threads cost a handful of sockets and one thread. An engine is closed when the last
connection object and the last unfinished response using it are closed.

>>> conn = HTTP20Connection("example.org")           # doctest: +SKIP
>>> sid = conn.request("GET", "/")                   # the stream id
>>> resp = conn.getresponse(sid)
>>> resp.status, resp.version, resp.read()[:15]
(200, 20, b'<!doctype html>')

Differences from `http.client`, all deliberate:

* ``request()`` returns an id, and several requests may be outstanding before their
  ``getresponse(id)`` calls, in any order (HTTP/2 multiplexing).
* Nothing goes in clear that the caller expected encrypted. `HTTPSConnection`
  is always TLS; `HTTPConnection` means what the stdlib means (plain HTTP/1.1,
  port 80) unless given ``secure=True`` or an SSL context; `HTTP20Connection` is
  TLS on every port unless ``secure=False`` (cleartext HTTP/2 with prior knowledge).
* ``HTTP20Connection`` insists on HTTP/2 (a server without h2 is a
  `h2pool.ConnectError`); the TLS forms of the other two negotiate h2 by ALPN
  and fall back to HTTP/1.1 over the same TLS connection.
* ``timeout``: a number sets every h2pool phase (connect, read, write, pool), a
  `h2pool.Timeout` is used as is, ``None`` (or the stdlib's default sentinel)
  means h2pool's defaults; ``conn.timeout`` is what was given.
* Network failures raise h2pool's errors (`h2pool.H2PoolError`); timeouts are
  also the builtin `TimeoutError`, like `socket` timeouts.
* ``send()`` takes body bytes of a request begun with ``putrequest()``, not raw bytes
  for the wire: the engine frames the body itself (DATA frames, or chunked encoding
  on HTTP/1.1). As in the stdlib, a body whose headers say ``Transfer-Encoding:
  chunked`` without ``encode_chunked=True`` is one the caller chunk-encoded: its
  content is taken out of the chunks and sent.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import http.client
import io
import itertools
import queue
import re
import socket
import ssl
import threading
import urllib.request
import warnings
import weakref
import xmlrpc.client
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, Union
from urllib.parse import quote, urlsplit

import certifi

from ._client import Client
from ._config import Timeout, local_socket_address
from ._errors import (
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    H2PoolError,
    InvalidHeader,
    InvalidURL,
    ProtocolError,
    StreamReset,
    TLSError,
)
from ._headers import HeaderTypes, normalize_name, normalize_value
from ._prepare import RequestBuilder
from ._response import VERSION_NUMBERS, Response

__all__ = [
    "BadResponse",
    "BadStatusLine",
    "CertificateVerifyError",
    "ConnectionFailed",
    "ConnectionRefused",
    "HTTP20Connection",
    "HTTP20Response",
    "HTTPConnection",
    "HTTPHandler",
    "HTTPSConnection",
    "HTTPSHandler",
    "IncompleteRead",
    "InvalidTarget",
    "LineTooLong",
    "NameResolutionError",
    "RemoteDisconnected",
    "SSLHandshakeError",
    "SafeTransport",
    "StreamResetIncompleteRead",
    "Transport",
    "UnknownProtocol",
    "build_opener",
]

# The stdlib's classes as they were when h2pool was imported: code (and test suites)
# that install h2pool's classes into http.client must not make these h2pool's too.
_STDLIB_HTTP = http.client.HTTPConnection
_STDLIB_HTTPS = http.client.HTTPSConnection

_HeaderArg = Union[Mapping[Any, Any], Iterable[tuple[Any, Any]]]

# -- errors that are also the stdlib's ----------------------------------------------------
# Code written for http.client catches OSError, ssl.SSLError and http.client's own
# classes. Each class below is an h2pool error (so ``except h2pool.ConnectError`` keeps
# working) and the stdlib class that http.client raises in the same situation, with the
# same attributes (``errno``, ``reason``, ``partial``...). The h2pool error they stand
# for is chained as their ``__cause__``.


class ConnectionRefused(ConnectError, ConnectionRefusedError):
    """The server (or the proxy) refused the TCP connection (``ECONNREFUSED``).

    Raised by ``request()``. Nothing was sent; retrying is safe."""


class NameResolutionError(ConnectError, socket.gaierror):
    """The host name (or the proxy's) does not resolve; raised by ``request()``."""


class ConnectionFailed(ConnectError, OSError):
    """Any other failure to connect: unreachable network, a proxy refusing the tunnel,
    a server that does not speak the protocol asked for. Raised by ``request()``."""


class CertificateVerifyError(TLSError, ssl.SSLCertVerificationError):
    """The server's certificate is not trusted or does not name the host
    (``ssl.CertificateError``; ``reason`` is ``"CERTIFICATE_VERIFY_FAILED"``).
    Raised by ``request()``, as the stdlib does; nothing was sent."""


class SSLHandshakeError(TLSError, ssl.SSLError):
    """Any other TLS failure during the handshake (``ssl.SSLError``, with the
    ``reason`` and ``library`` of OpenSSL's error). Raised by ``request()``."""


class RemoteDisconnected(ConnectionLost, http.client.RemoteDisconnected):
    """The connection closed before any byte of the response arrived.

    Raised by ``getresponse()``; also ``ConnectionResetError`` and
    ``http.client.BadStatusLine``, as in the stdlib. The request may have been processed.
    """


class BadResponse(ProtocolError, http.client.HTTPException):
    """The server's answer broke HTTP rules before its headers were complete."""


class BadStatusLine(BadResponse, http.client.BadStatusLine):
    """The server's status line is not HTTP's; ``line`` holds it."""

    def __init__(self, line: str, message: str) -> None:
        http.client.BadStatusLine.__init__(self, line)
        self.args = (message,)


class UnknownProtocol(BadResponse, http.client.UnknownProtocol):
    """The status line names an HTTP version other than 1.x; ``version`` holds it."""

    def __init__(self, version: str, message: str) -> None:
        http.client.UnknownProtocol.__init__(self, version)
        self.args = (message,)


class LineTooLong(BadResponse, http.client.LineTooLong):
    """The response head is longer than the client's ``max_header_list_size``."""

    def __init__(self, message: str) -> None:
        http.client.LineTooLong.__init__(self, "header line")
        self.args = (message,)


class IncompleteRead(ConnectionLost, http.client.IncompleteRead):
    """The connection was lost in the middle of the body: ``partial`` holds what this
    read collected, ``expected`` the bytes still announced by Content-Length (or None).
    """


class StreamResetIncompleteRead(StreamReset, http.client.IncompleteRead):
    """The server reset the stream in the middle of the body (HTTP/2 RST_STREAM);
    ``error_code`` is its code, ``partial``/``expected`` as for `IncompleteRead`.
    """

    def __init__(self, partial: bytes, expected: int | None, error_code: int) -> None:
        http.client.IncompleteRead.__init__(self, partial, expected)
        self.error_code = error_code


def _os_args(cause: BaseException | None, message: str) -> tuple[Any, ...]:
    errno = getattr(cause, "errno", None)
    return (errno, message) if isinstance(errno, int) else (message,)


def _connect_error(exc: ConnectError) -> ConnectError:
    """The stdlib-shaped twin of a failure to connect (raise it ``from exc``)."""
    if isinstance(exc, OSError):
        return exc  # ConnectTimeout is the builtin TimeoutError already
    cause = exc.__cause__
    message = str(exc)
    new: ConnectError
    if isinstance(cause, ssl.SSLCertVerificationError):
        cert = CertificateVerifyError(*_os_args(cause, message))
        cert.reason, cert.library = cause.reason, cause.library
        cert.verify_code, cert.verify_message = cause.verify_code, cause.verify_message
        new = cert
    elif isinstance(cause, ssl.SSLError) or isinstance(exc, TLSError):
        tls = SSLHandshakeError(*_os_args(cause, message))
        tls.reason = getattr(cause, "reason", "") or ""
        tls.library = getattr(cause, "library", "") or ""
        new = tls
    elif isinstance(cause, socket.gaierror):
        new = NameResolutionError(*_os_args(cause, message))
    elif isinstance(cause, ConnectionRefusedError):
        new = ConnectionRefused(*_os_args(cause, message))
    else:
        new = ConnectionFailed(*_os_args(cause, message))
    return new


def _response_error(exc: BaseException) -> BaseException | None:
    """What ``getresponse()`` raises (``from exc``) for a request that failed before its
    headers; None to raise ``exc`` itself (timeouts are ``TimeoutError`` already, and a
    reset stream has no stdlib twin)."""
    if isinstance(exc, ConnectError):
        twin = _connect_error(exc)
        return None if twin is exc else twin
    if isinstance(exc, http.client.HTTPException):
        return None
    if isinstance(exc, ConnectionLost):
        return RemoteDisconnected(str(exc))
    if isinstance(exc, ProtocolError):
        kind, text = exc._head_error or ("", "")
        if kind == "status line":
            return BadStatusLine(text, str(exc))
        if kind == "version":
            return UnknownProtocol(text, str(exc))
        if kind == "too long":
            return LineTooLong(str(exc))
        return BadResponse(str(exc))
    return None


def _body_error(exc: H2PoolError, partial: bytes, expected: int | None) -> BaseException | None:
    """What a body read raises (``from exc``) when the stream fails midway; None to
    raise ``exc`` itself (timeouts are ``TimeoutError``, like a socket timeout)."""
    if isinstance(exc, StreamReset):
        return StreamResetIncompleteRead(partial, expected, exc.error_code)
    if isinstance(exc, (ConnectionLost, ProtocolError)):
        return IncompleteRead(partial, expected)
    return None


class InvalidTarget(InvalidURL, http.client.InvalidURL):
    """The request target has a control character or a space (raised by ``request()``
    and ``putrequest()``; nothing is sent)."""


# The stdlib's own checks (http.client), made where it makes them: putrequest() and
# putheader() refuse control characters at once rather than when the request is sent.
_BAD_METHOD = re.compile("[\x00-\x1f]")
_BAD_TARGET = re.compile("[\x00-\x20\x7f]")


def _check_method(method: str) -> None:
    match = _BAD_METHOD.search(method)
    if match:
        raise ValueError(
            f"method can't contain control characters. {method!r} "
            f"(found at least {match.group()!r})"
        )


def _check_target(url: str) -> None:
    match = _BAD_TARGET.search(url)
    if match:
        raise InvalidTarget(
            f"URL can't contain control characters. {url!r} (found at least {match.group()!r})"
        )


def _check_header(name: str | bytes, value: bytes) -> None:
    """h2pool's header rules (RFC 9110 §5: token names, no CR, LF or NUL in values),
    raised as `h2pool.InvalidHeader` (a ``ValueError``) with http.client's words."""
    try:
        raw = normalize_name(name)
    except InvalidHeader as exc:
        raise InvalidHeader(f"Invalid header name {name!r}") from exc
    try:
        normalize_value(value, raw)
    except InvalidHeader as exc:
        raise InvalidHeader(f"Invalid header value {value!r}") from exc


# -- shared engines ----------------------------------------------------------------------

_EngineKey = tuple[bool, bool, int, Union[str, None], Union[tuple[str, int], None]]


class _Engine:
    """One shared Client and the number of compat objects using it."""

    __slots__ = ("client", "context", "reached", "users")

    def __init__(self, client: Client, context: ssl.SSLContext | None) -> None:
        self.client = client
        self.context = context  # keeps id(context) in the key valid while we live
        self.users = 0
        # Origins this engine has had a response from: request() returns at once for
        # them. A set's add/discard are atomic under the GIL: no lock.
        self.reached: set[str] = set()


_engines: dict[_EngineKey, _Engine] = {}
# Guards _engines and every users count. Held only for dict lookups and counter updates:
# never across I/O, never while a Client is built or closed. Finalizers (a collected
# connection or response) never wait for it: see _release.
_engines_lock = threading.Lock()
# Releases a finalizer could not apply because the lock was held (perhaps by its own
# thread, interrupted by a garbage collection inside a critical section). Whoever
# releases the lock next applies them. deque.append/popleft are atomic: no lock.
_deferred: deque[_Engine] = deque()


class _EngineClient(Client):
    """The engine's Client: requests carry only the caller's headers (and Host,
    Accept-Encoding: identity), as the stdlib's do; no User-Agent or Accept of
    h2pool's own."""

    def _request_builder(self, headers: HeaderTypes | None) -> RequestBuilder:
        return RequestBuilder(headers, self._timeout, identify=False)


def _acquire(
    secure: bool,
    http1: bool,
    context: ssl.SSLContext | None,
    proxy: str | None = None,
    source: tuple[str, int] | None = None,
) -> _Engine:
    key = (secure, http1, id(context) if context is not None else 0, proxy, source)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            engine.users += 1
    _apply_deferred()
    if engine is not None:
        return engine
    # Built without the lock: building allocates, and a garbage collection here may run
    # a finalizer that releases another engine.
    client = _EngineClient(
        verify=context if context is not None else True,
        http1=http1,
        # Cleartext: HTTP20Connection speaks h2c, HTTPConnection HTTP/1.1.
        http2_prior_knowledge=not secure and not http1,
        # http.client asks for identity and never decodes; neither do we here.
        headers=[("accept-encoding", "identity")],
        # http.client reads no proxy variables (urllib does, and calls set_tunnel).
        proxy=proxy,
        trust_env=False,
        local_address=source,
    )
    fresh = _Engine(client, context)
    fresh.users = 1
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            _engines[key] = engine = fresh
        else:
            engine.users += 1  # another thread built one first: use it
    _apply_deferred()
    if engine is not fresh:
        client.close()  # never started: no thread, no socket
    return engine


def _release(engine: _Engine) -> None:
    """One user fewer; the last one closes the engine's Client. Safe in a finalizer: it
    never blocks on ``_engines_lock`` (a collection may run it inside a critical
    section of its own thread); it defers instead."""
    _deferred.append(engine)
    _apply_deferred()


def _apply_deferred() -> None:
    while _deferred:
        if not _engines_lock.acquire(blocking=False):
            return  # the holder applies them after it releases the lock
        closing = None
        try:
            try:
                engine = _deferred.popleft()
            except IndexError:
                return
            engine.users -= 1
            if engine.users <= 0:
                key = next((k for k, v in _engines.items() if v is engine), None)
                if key is not None:
                    del _engines[key]
                closing = engine
        finally:
            _engines_lock.release()
        if closing is not None:
            closing.client.close()


def close_engines() -> None:
    """Close every shared engine now (also done at interpreter exit)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    _apply_deferred()
    for engine in engines:
        engine.client.close(1.0)


atexit.register(close_engines)


class _Lease:
    """Holds one use of an engine; released once, explicitly or when garbage collected."""

    def __init__(self, owner: object, engine: _Engine) -> None:
        self.engine = engine
        self._finalizer = weakref.finalize(owner, _release, engine)

    def release(self) -> None:
        self._finalizer()


# -- responses ---------------------------------------------------------------------------


def _message(resp: Response) -> http.client.HTTPMessage:
    msg = http.client.HTTPMessage()
    # Header strings as http.client makes them: ISO-8859-1, byte for byte (requests,
    # for one, re-encodes a Location that way).
    for name, value in resp.headers._latin1():
        msg[name] = value  # Message.__setitem__ appends: repeated fields are kept
    return msg


class HTTP20Response(io.BufferedIOBase):
    """A response shaped like `http.client.HTTPResponse`.

    ``status``, ``reason``, ``version`` (20 for HTTP/2, 11 for HTTP/1.1, 10 for
    HTTP/1.0), ``headers`` and ``msg`` (an `http.client.HTTPMessage`), ``getheader``,
    ``getheaders``,
    ``read(amt)``, ``readinto``, ``read1``, ``peek``, ``readline`` and line iteration,
    ``isclosed()`` (true once the body is consumed) and ``closed`` (true after
    ``close()``). The body streams: memory stays bounded however large it is.
    """

    def __init__(self, resp: Response, stream_id: int, engine: _Engine | None = None) -> None:
        super().__init__()
        self._resp = resp
        # One use of the shared engine (taken by getresponse), given back at the end of
        # the body, on close(), or when this object is garbage collected.
        self._lease = _Lease(self, engine) if engine is not None else None
        self.stream_id = stream_id
        self.status = resp.status
        self.code = resp.status
        head = resp._wire_head
        # HTTP/1: the phrase, the framing and the connection's fate as the server's head
        # said them, as http.client reports them. HTTP/2 has no reason phrase (the
        # standard one stands in) and its connection outlives every response.
        self.reason = head.reason.strip() if head is not None else resp.reason
        self.will_close = head is not None and head.will_close
        self.chunked = head is not None and head.chunked
        self.version = VERSION_NUMBERS.get(resp.http_version, 11)
        self.msg = self.headers = _message(resp)
        self.url = resp.url
        self.debuglevel = 0
        self._buffer = b""  # filled by peek()
        self._done = False  # the stream and the engine are released
        self._eof = False  # a read reached the end, or close(): what isclosed() reports
        bodiless = resp.method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        length = resp.headers.get("content-length")
        self.length: int | None = None
        if bodiless:
            self.length = 0  # as the stdlib: nothing follows, whatever Content-Length says
        elif length is not None and length.isascii() and length.isdigit() and not self.chunked:
            self.length = int(length)
        if self.length == 0:
            self._finish()  # nothing to wait for: give the stream back now

    # -- state ------------------------------------------------------------------------------
    def _finish(self) -> None:
        """The body is consumed: release the stream and our hold on the engine."""
        if not self._done:
            self._done = True
            self._buffer = b""
            self._resp.close()
            if self._lease is not None:
                self._lease.release()

    def _end(self) -> None:
        """A read reached the end of the body."""
        self._eof = True
        self._finish()

    def isclosed(self) -> bool:
        """True once a read has reached the end of the body, or after ``close()``.

        As in the stdlib, a response with no body (HEAD, 204, ``Content-Length: 0``)
        is not closed until it is read or closed; its stream is released at once all
        the same.
        """
        return self._eof

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._end()

    def readable(self) -> bool:
        return True

    @property
    def trailers(self) -> list[tuple[str, str]]:
        """Trailer fields, once the body has been read to its end."""
        return self._resp.trailers.items()

    # -- headers ----------------------------------------------------------------------------
    # From ``headers``, never ``msg``: urllib.request replaces ``msg`` with the reason.
    def getheader(self, name: str, default: Any = None) -> Any:
        """The value of ``name`` (repeated fields joined by ``", "``), or ``default``;
        as in the stdlib, a ``default`` that is an iterable other than a string is
        returned joined the same way."""
        values = self.headers.get_all(name)
        if values is None:
            if isinstance(default, str) or not hasattr(default, "__iter__"):
                return default
            return ", ".join(default)
        return ", ".join(values)

    def getheaders(self) -> list[tuple[str, str]]:
        return list(self.headers.items())

    def info(self) -> http.client.HTTPMessage:
        return self.headers

    def geturl(self) -> str:
        return self.url

    def getcode(self) -> int:
        return self.status

    # -- body -------------------------------------------------------------------------------
    def _account(self, data: bytes) -> bytes:
        if self.length is not None:
            self.length = max(0, self.length - len(data))
            if self.length == 0:
                self._end()
        return data

    def read(self, amt: int | None = None) -> bytes:
        """``amt`` bytes (fewer only at the end), or the whole rest; ``b""`` at the end.

        Raises `h2pool.ReadTimeout`, `h2pool.ConnectionLost` and the like
        if the stream fails; a truncated body is never returned as complete.
        """
        if self._done:
            self._eof = True
            return b""
        buffered = self._buffer
        if amt is None or amt < 0:
            self._buffer = b""
            chunks = [buffered]
            while chunk := self._pull(1 << 20, chunks):
                chunks.append(chunk)
            if self.length is not None:
                self.length = 0
            self._end()
            return b"".join(chunks)
        if amt == 0:
            return b""
        if buffered:
            data, self._buffer = buffered[:amt], buffered[amt:]
            if len(data) < amt and not self._buffer:
                more = self._pull(amt - len(data), [data])
                data += more
                if not more:
                    self._end()
                    return data
            return self._account(data)
        data = self._pull(amt)
        if not data or (self.chunked and len(data) < amt):
            # Short of amt: the body ended. Chunked, the stdlib has read the last
            # chunk by then and is closed; with a length, _account closes.
            self._end()
            return data
        return self._account(data)

    def _pull(self, amt: int, got: list[bytes] | None = None, partial: bool = False) -> bytes:
        """Up to ``amt`` body bytes (as they arrive if ``partial``); a stream failing
        midway raises `IncompleteRead` holding ``got`` (what this read has)."""
        try:
            pipe = self._resp._pipe
            if partial and pipe is not None and not self._resp.is_closed:
                return pipe.read(amt, partial=True)
            return self._resp.read_raw(amt)
        except H2PoolError as exc:
            so_far = b"".join(got or ())
            # As the stdlib's: the bytes still missing after ``so_far``, not the length
            # this read began with (``length`` is only accounted once a read returns).
            missing = None if self.length is None else max(0, self.length - len(so_far))
            twin = _body_error(exc, so_far, missing)
            if twin is None:
                raise
            raise twin from exc

    def read1(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of what has arrived, waiting only if nothing has."""
        if self._done:
            self._eof = True
            return b""
        if self._buffer:
            size = len(self._buffer) if n < 0 else n
            data, self._buffer = self._buffer[:size], self._buffer[size:]
            return self._account(data)
        data = self._read_partial(n if n > 0 else 1 << 20)
        if not data:
            self._end()
            return data
        return self._account(data)

    def _read_partial(self, n: int) -> bytes:
        return self._pull(n, partial=True)

    def peek(self, n: int = 0) -> bytes:
        """What the next read would return first, without consuming it."""
        if self._done:
            return b""
        if not self._buffer:
            self._buffer = self._read_partial(max(n, 8192))
        return self._buffer

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readinto1(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read1(len(view))
        view[: len(data)] = data
        return len(data)

    def __repr__(self) -> str:
        return (
            f"<h2pool.compat.HTTP20Response [{self.status} {self.reason}] version={self.version}>"
        )


# -- connections -------------------------------------------------------------------------


class _BodyFeed:
    """A body fed by ``send()`` calls and consumed by the engine's pump thread.

    The queue is bounded, so a caller sending faster than the network blocks in
    ``send()`` instead of buffering the whole body.
    """

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=16)
        self.ended = False
        self.dead = False  # the consumer is gone; later data is dropped

    def put(self, data: bytes) -> None:
        if data and not self.dead:
            self._queue.put(data)

    def end(self) -> None:
        if not self.ended and not self.dead:
            self.ended = True
            self._queue.put(self._END)

    def fail(self, exc: BaseException) -> None:
        """End the body with an error: the request fails (`RequestBodyError`) and its
        stream is reset, rather than a cut body being sent as complete."""
        if not self.ended and not self.dead:
            self.ended = True
            self._queue.put(exc)

    def __iter__(self) -> Iterator[bytes]:
        # Runs on the engine's body-pump thread. When the pump stops early (the request
        # failed or the server answered before the end), this generator is closed: say
        # so and empty the queue, so a send() blocked on a full queue returns.
        try:
            while True:
                item = self._queue.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.dead = True
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass


class _Pending:
    """A request being built with putrequest/putheader/endheaders/send."""

    def __init__(self, method: str, url: str) -> None:
        self.method = method
        self.url = url
        self.headers: list[tuple[str, bytes]] = []
        self.ended = False  # endheaders() was called
        self.sid = 0
        self.declared: int | None = None
        self.sent = 0
        self.chunks: list[bytes] = []  # buffered body (no length declared)
        self.feed: _BodyFeed | None = None  # streamed body (declared length, chunked)
        self.dechunk: _Dechunker | None = None  # the caller chunk-encodes (see _Dechunker)


_HEX = frozenset(b"0123456789abcdefABCDEF")


class _Dechunker:
    """Undoes the chunked coding of a body the caller encoded itself.

    With ``Transfer-Encoding: chunked`` among its headers and ``encode_chunked`` false,
    http.client sends the body as given: the caller has chunk-encoded it. h2pool frames
    every body itself (HTTP/2 has no chunked coding; h11 chunks an HTTP/1.1 body of
    unknown length), so the payload is taken out of the chunks and sent, and the server
    receives the same content. Malformed framing, or trailer fields (which cannot be
    sent from here), raise ``ValueError``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = 0  # bytes of the current chunk still to come
        self._state = "size"  # size, data, crlf, trailer, done

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        buf = self._buf
        buf += data
        out = bytearray()
        while buf:
            state = self._state
            if state == "data":
                take = min(self._left, len(buf))
                out += buf[:take]
                del buf[:take]
                self._left -= take
                if not self._left:
                    self._state = "crlf"
                continue
            if state == "done":
                raise ValueError("bytes after the last chunk of a chunk-encoded body")
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > 4096:
                    raise ValueError("a chunk-encoded body's line is too long")
                break
            line = bytes(buf[:end]).rstrip(b"\r")
            del buf[: end + 1]
            if state == "crlf":
                if line:
                    raise ValueError("a chunk of a chunk-encoded body is longer than its size")
                self._state = "size"
            elif state == "size":
                size = line.split(b";", 1)[0].strip()
                if not size or not _HEX.issuperset(size) or len(size) > 16:
                    raise ValueError(f"bad chunk size in a chunk-encoded body: {line[:40]!r}")
                self._left = int(size, 16)
                self._state = "data" if self._left else "trailer"
            elif line:  # trailer
                raise ValueError("trailer fields in a chunk-encoded body cannot be sent")
            else:
                self._state = "done"
        return bytes(out)

    def finish(self) -> None:
        if self._state != "done":
            raise ValueError("a chunk-encoded body ended before its last chunk")

    def body(self, source: Any) -> Iterator[bytes]:
        """The payload of ``source`` (a file or an iterable of bytes), as it is read."""
        if hasattr(source, "read"):
            while chunk := source.read(1 << 16):
                yield self.feed(_encode_body(chunk))
        else:
            for chunk in source:
                yield self.feed(_encode_body(chunk))
        self.finish()


def _pre_chunked(headers: list[tuple[str, bytes]] | Any, encode_chunked: bool) -> bool:
    """http.client's rule: an explicit chunked Transfer-Encoding header without
    ``encode_chunked`` means the caller chunk-encodes the body."""
    if encode_chunked:
        return False
    return any(
        _text(name).lower() == "transfer-encoding" and "chunked" in _text(value).lower()
        for name, value in _pairs(headers)
    )


def _without_transfer_encoding(headers: Any) -> list[tuple[Any, Any]]:
    return [(n, v) for n, v in _pairs(headers) if _text(n).lower() != "transfer-encoding"]


def _pairs(headers: Any) -> Iterable[tuple[Any, Any]]:
    """(name, value) pairs of a header mapping or list, as request() accepts them."""
    return headers.items() if hasattr(headers, "items") else headers  # type: ignore[no-any-return]


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _encode_body(body: Any) -> Any:
    if isinstance(body, str):
        # http.client sends str bodies as ISO-8859-1.
        return body.encode("iso-8859-1")
    return body


def _check_body(body: Any) -> None:
    """``TypeError`` now, as http.client raises it, for a body it could not send."""
    if body is None or isinstance(body, (bytes, bytearray, memoryview)) or hasattr(body, "read"):
        return
    try:
        iter(body)
    except TypeError:
        raise TypeError(
            f"message_body should be a bytes-like object or an iterable, got {type(body)!r}"
        ) from None


def _header_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    return str(value).encode("ascii")


def _coerce_timeout(timeout: object) -> Timeout | None:
    # urllib.request and http.client pass socket._GLOBAL_DEFAULT_TIMEOUT for "the
    # default": h2pool's own timeouts.
    if timeout is None or timeout is getattr(socket, "_GLOBAL_DEFAULT_TIMEOUT", None):
        return None
    return Timeout.coerce(timeout)  # type: ignore[arg-type]


class _Forward:
    """Calls ``name`` on the connection object behind a weak reference (the stdlib twin's
    hooks; see ``HTTP20Connection.sock``)."""

    __slots__ = ("_name", "_owner")

    def __init__(self, owner: weakref.ref[HTTP20Connection], name: str) -> None:
        self._owner = owner
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        owner = self._owner()
        if owner is None:
            raise http.client.NotConnected("the connection object is gone")
        return getattr(owner, self._name)(*args, **kwargs)


_http11_contexts: list[ssl.SSLContext] = []


def _http11_context() -> ssl.SSLContext:
    """The default trust (certifi's roots, host names checked) for sockets the stdlib
    code speaks HTTP/1.1 on: ALPN offers http/1.1 only, as the stdlib's default does.
    Separate from the engines' contexts, which offer h2."""
    if not _http11_contexts:
        context = ssl.create_default_context(cafile=certifi.where())
        context.set_alpn_protocols(["http/1.1"])
        _http11_contexts.append(context)
    return _http11_contexts[0]


class HTTP20Connection:
    """An HTTP/2 connection object with the `http.client.HTTPSConnection` API.

    TLS on every port unless ``secure=False`` (cleartext HTTP/2 with prior knowledge,
    h2c). ``host`` may carry the port (``"example.org:8443"``); the default port is 443
    (80 with ``secure=False``). ``ssl_context`` (or ``context``, as in
    `http.client`) decides trust; the default verifies against certifi's roots.
    ``client`` shares an existing `h2pool.Client` instead of the engine for
    that TLS configuration.
    """

    default_port = 443
    response_class = HTTP20Response
    _http1 = False

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        secure: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: Timeout | float | None = None,
        context: ssl.SSLContext | None = None,
        source_address: tuple[str, int] | None = None,
        blocksize: int = 8192,
        client: Client | None = None,
    ) -> None:
        host, port = self._split_host(host, port)
        self.host = host
        self.ssl_context = ssl_context or context
        self.secure = self._decide_secure(secure, self.ssl_context)
        self.port = port if port is not None else (443 if self.secure else 80)
        self.timeout = timeout  # as given, like http.client; the engine uses _timeout
        self._timeout = _coerce_timeout(timeout)
        self.blocksize = blocksize
        # Every connection of this object's engine binds to it (engines are shared per
        # source address; a fixed port suits one connection at a time, as in the stdlib).
        self.source_address = source_address
        self.debuglevel = 0
        # A socket of the caller's own (see ``sock``): the stdlib connection carrying it.
        self._direct: http.client.HTTPConnection | None = None
        # As in http.client: a replacement makes this object use the sockets it returns.
        self._create_connection: Callable[..., Any] = socket.create_connection
        self._proxy: str | None = None  # set_tunnel: this object's host is the proxy
        self._tunnel_host: str | None = None
        self._tunnel_port: int | None = None
        self._tunnel_headers: dict[str, str] = {}
        self._base = self._origin(host, self.port)
        self._lock = threading.Lock()  # guards the request table below; never held across I/O
        self._ids = itertools.count(1, 2)  # odd, like client-initiated HTTP/2 streams
        self._outstanding: OrderedDict[int, Future[Response]] = OrderedDict()
        self._pending: _Pending | None = None
        self._own_client = client
        self._lease: _Lease | None = None
        # Responses getresponse() returned on a connection that stays open: close()
        # closes the unread ones, as the stdlib's does (weak: a response dropped by its
        # reader is not kept alive here).
        self._returned: weakref.WeakSet[HTTP20Response] = weakref.WeakSet()

    def _origin(self, host: str, port: int) -> str:
        scheme = "https" if self.secure else "http"
        host_part = f"[{host}]" if ":" in host else host
        default = 443 if self.secure else 80
        return f"{scheme}://{host_part}" if port == default else f"{scheme}://{host_part}:{port}"

    @staticmethod
    def _decide_secure(secure: bool | None, context: ssl.SSLContext | None) -> bool:
        """HTTP/2 over the network means TLS: cleartext only when asked for."""
        if secure is False and context is not None:
            raise ValueError("secure=False with an SSL context: choose one")
        return secure is not False

    @staticmethod
    def _split_host(host: str, port: int | None) -> tuple[str, int | None]:
        """``"host:port"`` and ``"[v6]:port"`` as `http.client` accepts them."""
        if port is None:
            i = host.rfind(":")
            j = host.rfind("]")
            if i > j:
                try:
                    port = int(host[i + 1 :]) if host[i + 1 :] else None
                except ValueError as exc:
                    raise http.client.InvalidURL(f"nonnumeric port: '{host[i + 1 :]}'") from exc
                host = host[:i]
        if host and host[0] == "[" and host[-1] == "]":
            host = host[1:-1]
        return host, port

    # -- engine ------------------------------------------------------------------------------
    def _client(self) -> Client:
        if self._own_client is not None:
            return self._own_client
        lease = self._lease
        if lease is None:
            context = self.ssl_context if self.secure else None
            source = self.source_address
            if source is not None:
                source = local_socket_address((source[0] or "0.0.0.0", source[1]))
            engine = _acquire(self.secure, self._http1, context, self._proxy, source)
            lease = self._lease = _Lease(self, engine)
        return lease.engine.client

    def _reached(self) -> set[str]:
        """Origins known to answer (see request()): the engine's, or this object's."""
        if self._lease is not None:
            return self._lease.engine.reached
        reached: set[str] | None = self.__dict__.get("_own_reached")
        if reached is None:
            reached = self.__dict__["_own_reached"] = set()
        return reached

    def _response_engine(self) -> _Engine | None:
        """Count one more user of our engine, for a response that may outlive us."""
        if self._own_client is not None or self._lease is None:
            return None
        engine = self._lease.engine
        with _engines_lock:
            engine.users += 1
        _apply_deferred()
        return engine

    # -- a socket of the caller's own -------------------------------------------------------
    @property
    def sock(self) -> Any:
        """None while the engine carries this object's requests: its sockets belong to
        its I/O thread.

        A socket of the caller's own carries them instead, exactly as `http.client`
        would (HTTP/1.1, in the caller's thread, one at a time, by the stdlib's own
        code; responses are the stdlib's): one assigned here (a tunnel of your own, a
        test double) until it closes, or, for the object's whole life, the ones a
        ``_create_connection`` replacement or a subclass's ``connect()`` makes (the
        usual way to reach a Unix socket). Secure objects wrap a socket the stdlib's
        connect() makes in TLS with their context; with no timeout given, such sockets
        get h2pool's read timeout (or ``socket.getdefaulttimeout()``)."""
        direct = self._direct
        return direct.sock if direct is not None else None

    @sock.setter
    def sock(self, value: Any) -> None:
        if value is None:
            if self._direct is not None:
                self._direct.sock = None
            return
        self._twin().sock = value

    @property
    def _buffer(self) -> list[bytes]:
        """The stdlib's header lines not yet sent, on a socket of the caller's own
        (test suites written for http.client inspect and replace it)."""
        direct = self._direct
        if direct is not None:
            return direct._buffer  # type: ignore[attr-defined,no-any-return]
        own: list[bytes] = self.__dict__.setdefault("_own_buffer", [])
        return own

    @_buffer.setter
    def _buffer(self, value: list[bytes]) -> None:
        if self._direct is not None:
            self._direct._buffer = value  # type: ignore[attr-defined]
        else:
            self.__dict__["_own_buffer"] = value

    def _twin(self) -> http.client.HTTPConnection:
        """The stdlib connection that speaks over the caller's socket (made once)."""
        direct = self._direct
        if direct is not None:
            return direct
        timeout: Any = self.timeout
        if isinstance(timeout, Timeout):
            timeout = timeout.read
        elif timeout is None or not isinstance(timeout, (int, float)):
            # None or urllib's "not given" sentinel: the process default, or h2pool's
            # own read timeout rather than none (the engine's requests have one too).
            default = socket.getdefaulttimeout()
            timeout = default if default is not None else Timeout().read
        # "localhost" for now: the host is checked below, by this object's _validate_host.
        common: dict[str, Any] = {
            "timeout": timeout,
            "source_address": self.source_address,
            "blocksize": self.blocksize,
        }
        if self.secure:
            # Never in clear what was meant to be secure: a socket the twin opens itself
            # (a reconnect) is wrapped in TLS with this object's trust. Without a context
            # of the caller's, one of its own that offers only http/1.1 by ALPN.
            context = self.ssl_context or _http11_context()
            direct = _STDLIB_HTTPS("localhost", self.port, context=context, **common)
        else:
            direct = _STDLIB_HTTP("localhost", self.port, **common)
        # The stdlib's connecting, sending and checking go through this object's
        # methods, looked up at each use, so that a subclass's (or a patched) connect,
        # send, hook or validator applies, as it would on the stdlib's class. By weak
        # reference: an object dropped without close() is freed (and its socket closed)
        # at once, as the stdlib's is, not by a later cycle collection.
        owner = weakref.ref(self)
        direct._create_connection = _Forward(owner, "_create_connection")  # type: ignore[attr-defined]
        direct.connect = _Forward(owner, "connect")  # type: ignore[method-assign]
        direct.send = _Forward(owner, "send")  # type: ignore[method-assign]
        for name in ("_validate_method", "_validate_path", "_validate_host", "_encode_request"):
            own = getattr(type(self), name, None)
            if own is not None and own is not getattr(HTTP20Connection, name, None):
                setattr(direct, name, _Forward(owner, name))
        direct._validate_host(self.host)  # type: ignore[attr-defined]
        direct.host = self.host
        direct.set_debuglevel(self.debuglevel)
        response_class: Any = self.response_class
        if issubclass(response_class, http.client.HTTPResponse):
            direct.response_class = response_class  # a subclass's own stdlib response
        if self._tunnel_host is not None:
            direct.set_tunnel(self._tunnel_host, self._tunnel_port, self._tunnel_headers)
        self._direct = direct
        return direct

    def _hooked(self) -> bool:
        """The caller makes this object's sockets: a ``_create_connection`` replacement,
        or a subclass's ``connect()`` (the usual way to reach a Unix socket). For the
        object's whole life, every request goes over the sockets they make, never
        through the engine to host:port."""
        return (
            self._create_connection is not socket.create_connection
            or type(self).connect is not HTTP20Connection.connect
        )

    def _route(self) -> http.client.HTTPConnection | None:
        """The stdlib connection a new request goes to, or None for the engine."""
        if self._hooked():
            return self._twin()
        direct = self._direct
        if direct is not None:
            if direct.sock is not None:
                return direct
            # The assigned socket is gone (the server closed it): the engine carries
            # the requests again, as a reconnect would.
            self._direct = None
            direct.close()
        return None

    # -- the http.client API ------------------------------------------------------------------
    def set_debuglevel(self, level: int) -> None:
        self.debuglevel = level
        if self._direct is not None:
            self._direct.set_debuglevel(level)

    def set_tunnel(
        self, host: str, port: int | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Reach ``host:port`` through an HTTP CONNECT tunnel, this object's own host and
        port being the proxy (as in `http.client`). TLS, when this object is
        secure, runs end to end with the origin. ``Proxy-Authorization: Basic ...`` in
        ``headers`` is sent on the CONNECT; other tunnel headers are not supported.

        Raises ``RuntimeError`` once a request was made, like the stdlib. On a socket
        of the caller's own (see ``sock``), the stdlib sends the CONNECT, with every
        header given.
        """
        if self._lease is not None or self._own_client is not None:
            raise RuntimeError("Can't set up tunnel for established connection")
        direct = self._route()  # drops a twin whose assigned socket is gone
        if direct is not None:
            direct.set_tunnel(host, port, headers)  # RuntimeError once it has a socket
            host, port = self._split_host(host, port)
            self._tunnel_host, self._tunnel_port = host, port
            self._tunnel_headers = dict(headers or {})
            return
        auth = ""
        for name, value in (headers or {}).items():
            if name.lower() != "proxy-authorization":
                raise NotImplementedError(f"tunnel header {name!r}: only Proxy-Authorization")
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "basic":
                raise NotImplementedError("only Basic proxy credentials are supported")
            try:
                user, _, password = base64.b64decode(token.strip()).decode("latin-1").partition(":")
            except (ValueError, binascii.Error) as exc:
                raise ValueError("malformed Proxy-Authorization header") from exc
            auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        proxy_host = f"[{self.host}]" if ":" in self.host else self.host
        self._proxy = f"http://{auth}{proxy_host}:{self.port}"
        host, port = self._split_host(host, port)
        self._tunnel_host = host
        self._tunnel_port = port if port is not None else (443 if self.secure else 80)
        self._tunnel_headers = dict(headers or {})
        self._base = self._origin(host, self._tunnel_port)

    def connect(self) -> None:
        """Take this object's engine (connections themselves are opened on demand).

        When the caller makes this object's sockets (see ``sock``), open one as the
        stdlib's connect() does: a subclass's ``connect()`` calling this gets a TCP
        (and, for HTTPS, TLS) socket in ``self.sock``."""
        direct = self._route()
        if direct is not None:
            type(direct).connect(direct)  # the stdlib's own: hook, tunnel, TLS
            sock = direct.sock
            if isinstance(sock, ssl.SSLSocket) and sock.selected_alpn_protocol() == "h2":
                # A context shared with the engine offers h2; this socket speaks HTTP/1.1.
                direct.close()
                raise BadResponse(
                    f"{self.host}:{self.port} chose HTTP/2 by ALPN on a socket this object"
                    " speaks HTTP/1.1 on: give it an SSLContext of its own, without h2"
                )
            return
        self._client()

    def _target(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            parts = urlsplit(url)
            host = self._tunnel_host or self.host
            port = self._tunnel_port if self._tunnel_host else self.port
            if (parts.hostname or "").lower() != host.lower() or parts.port not in (None, port):
                # http.client sends an absolute target as given: a request meant for an
                # HTTP proxy (urllib's ProxyHandler does this for http:// URLs). The
                # engine sends requests in origin form to the host they name, so it
                # would ask the proxy for its own path instead: refuse rather than send
                # a different request.
                raise NotImplementedError(
                    f"a request for {parts.scheme}://{parts.netloc} on a connection to "
                    f"{host}:{port} (absolute form, for an HTTP proxy) is not supported; "
                    "use set_tunnel(), or h2pool.Client(proxy=...)"
                )
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            return target
        if not url.startswith("/") and url != "*":
            raise InvalidURL(f"request target must start with '/': {url!r}")
        return url

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: _HeaderArg | None = None,
        *,
        encode_chunked: bool = False,
    ) -> int:
        """Send a request; returns its stream id for `getresponse`.

        ``body``: bytes, str (sent as ISO-8859-1, like `http.client`), a file
        object or an iterable of bytes. Never blocks on the network.
        """
        direct = self._route()
        if direct is not None:
            fields: Any = headers or {}
            direct.request(method, url, body, fields, encode_chunked=encode_chunked)
            with self._lock:
                return next(self._ids)
        self._validate_method(method)
        self._validate_path(url)
        body = _encode_body(body)
        _check_body(body)  # first, as in the stdlib (a TypeError whatever the target)
        self._target(url)  # refused now, before anything is queued
        headers = headers or {}
        if _pre_chunked(headers, encode_chunked):
            headers = _without_transfer_encoding(headers)
            if body is not None:
                dechunk = _Dechunker()
                if isinstance(body, (bytes, bytearray, memoryview)):
                    body = dechunk.feed(body)  # a ValueError now: nothing was sent
                    dechunk.finish()
                else:
                    body = dechunk.body(body)
        with self._lock:
            if self._pending is not None and not self._pending.ended:
                raise http.client.CannotSendRequest("a request is being built with putrequest()")
            self._flush_pending_locked()
            sid = next(self._ids)
        fut = self._submit(method, url, headers, body)
        with self._lock:
            self._outstanding[sid] = fut
        self._await_connect(sid, fut)
        return sid

    def _await_connect(self, sid: int, fut: Future[Response]) -> None:
        """Raise failures to connect from ``request()``, where http.client raises them.

        The engine connects on demand and says nothing until the response, so the first
        request to an origin waits for its response (or its failure) here; later ones
        return at once while the engine has answered for that origin. Other failures
        (timeouts, a lost connection) are left for ``getresponse()``, as in the stdlib.
        """
        reached = self._reached()
        if self._base in reached:
            return
        try:
            fut.result()
        except (ConnectError, ConnectTimeout) as exc:
            with self._lock:
                self._outstanding.pop(sid, None)
            twin = _connect_error(exc) if isinstance(exc, ConnectError) else exc
            if twin is exc:
                raise
            raise twin from exc
        except BaseException:
            return  # getresponse() raises it
        reached.add(self._base)

    # Named as in http.client, so that subclasses overriding them keep working.
    def _validate_method(self, method: str) -> None:
        _check_method(method)

    def _validate_path(self, url: str) -> None:
        _check_target(url)

    def _submit(self, method: str, url: str, headers: _HeaderArg, body: Any) -> Future[Response]:
        return self._client().submit(
            method,
            self._base + self._target(url),
            headers=headers,
            body=body,
            timeout=self._timeout,
            stream=True,
        )

    def putrequest(
        self, method: str, url: str, skip_host: bool = False, skip_accept_encoding: bool = False
    ) -> None:
        """Start a request; continue with `putheader` and `endheaders`."""
        direct = self._route()
        if direct is not None:
            direct.putrequest(method, url, skip_host, skip_accept_encoding)
            return
        self._validate_method(method)
        self._validate_path(url)
        self._target(url)
        with self._lock:
            if self._pending is not None and not self._pending.ended:
                raise http.client.CannotSendRequest("the previous request was not finished")
            self._flush_pending_locked()
            self._pending = _Pending(method, url)

    def putheader(self, header: str | bytes, *values: Any) -> None:
        if self._direct is not None:
            self._direct.putheader(header, *values)
            return
        with self._lock:
            pending = self._pending
            if pending is None or pending.ended:
                raise http.client.CannotSendHeader()
            encoded = [_header_value(v) for v in values]
            for value in encoded:
                _check_header(header, value)
            name = header.decode("latin-1") if isinstance(header, bytes) else header
            pending.headers.append((name, b", ".join(encoded)))

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        """Finish the headers. The body is ``message_body`` plus what `send` adds:
        with a declared Content-Length (or Transfer-Encoding) it streams as it comes;
        otherwise it is collected and sent when `getresponse` is called."""
        if self._direct is not None:
            self._direct.endheaders(message_body, encode_chunked=encode_chunked)
            return
        with self._lock:
            pending = self._pending
            if pending is None or pending.ended:
                raise http.client.CannotSendHeader()
            pending.ended = True
            pending.sid = next(self._ids)
            body = _encode_body(message_body)
            declared = None
            chunked = encode_chunked
            for name, value in pending.headers:
                lname = name.lower()
                if lname == "content-length" and value.strip().isdigit():
                    declared = int(value)
                elif lname == "transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            pending.declared = declared
            if _pre_chunked(pending.headers, encode_chunked):
                dechunk = pending.dechunk = _Dechunker()
                if isinstance(body, (bytes, bytearray, memoryview)):
                    body = dechunk.feed(body)
                elif body is not None:
                    body = dechunk.body(body)
            if isinstance(body, (bytes, bytearray, memoryview)):
                pending.chunks.append(bytes(body))
                pending.sent = len(body)
            elif body is not None:
                # A file or an iterable: it is the whole body.
                self._start_pending_locked(body)
                return
            if declared is not None and pending.sent >= declared:
                self._start_pending_locked(b"".join(pending.chunks))
            elif declared is not None or chunked:
                feed = pending.feed = _BodyFeed()
                for chunk in pending.chunks:
                    feed.put(chunk)
                pending.chunks = []
                self._start_pending_locked(feed)

    def _start_pending_locked(self, body: Any) -> None:
        pending = self._pending
        assert pending is not None
        headers = [
            (n, v)
            for n, v in pending.headers
            if n.lower() != "transfer-encoding"
            and not (body is None and n.lower() == "content-length")
        ]
        fut = self._submit(pending.method, pending.url, headers, body)
        self._outstanding[pending.sid] = fut
        if pending.feed is None:
            self._pending = None

    def _flush_pending_locked(self) -> None:
        """Send a built request whose body was being collected or streamed by send()."""
        pending = self._pending
        if pending is None or not pending.ended:
            return
        if pending.feed is not None:
            dechunk = pending.dechunk
            try:
                if dechunk is not None:
                    dechunk.finish()
            except ValueError as exc:
                pending.feed.fail(exc)
            else:
                pending.feed.end()
            self._pending = None
            return
        if pending.sid not in self._outstanding:
            self._start_pending_locked(b"".join(pending.chunks) if pending.chunks else None)
        self._pending = None

    def send(self, data: bytes | str | Any) -> None:
        """Send (part of) the body of the request started with `putrequest` (on a socket
        of the caller's own, bytes for the wire, as in the stdlib)."""
        direct = self._direct
        if direct is not None:
            type(direct).send(direct, data)  # the stdlib's own, onto the socket
            return
        with self._lock:
            pending = self._pending
            if pending is None:
                raise http.client.CannotSendRequest("no request is being built")
        if hasattr(data, "read"):
            while True:
                chunk = data.read(self.blocksize)
                if not chunk:
                    break
                self._send_bytes(pending, _encode_body(chunk))
            return
        if isinstance(data, (bytes, bytearray, memoryview, str)):
            self._send_bytes(pending, _encode_body(data))
            return
        for chunk in data:
            self._send_bytes(pending, _encode_body(chunk))

    def _send_bytes(self, pending: _Pending, data: bytes) -> None:
        if not pending.ended:
            # http.client lets send() follow putrequest() directly; treat it as the body.
            self.endheaders()
        data = bytes(data)
        if pending.dechunk is not None:
            try:
                data = pending.dechunk.feed(data)
            except ValueError as exc:
                if pending.feed is not None:
                    pending.feed.fail(exc)
                raise
        pending.sent += len(data)
        feed = pending.feed
        if feed is None:
            pending.chunks.append(data)
            return
        feed.put(data)  # blocks while the engine is behind: bounded memory
        if pending.declared is not None and pending.sent >= pending.declared:
            with self._lock:
                feed.end()
                if self._pending is pending:
                    self._pending = None

    def getresponse(self, stream_id: int | None = None) -> HTTP20Response:
        """The response to ``stream_id`` (default: the oldest outstanding request).

        Blocks until its headers arrive. Raises `http.client.ResponseNotReady`
        when there is no such request. On a socket of the caller's own (see ``sock``),
        the stdlib's response to the request sent on it.
        """
        direct = self._direct
        if direct is not None:
            return direct.getresponse()  # type: ignore[return-value]
        with self._lock:
            if self._pending is not None and not self._pending.ended:
                raise http.client.ResponseNotReady("Request-started")
            self._flush_pending_locked()
            if stream_id is None:
                if not self._outstanding:
                    raise http.client.ResponseNotReady("Idle")
                stream_id = next(iter(self._outstanding))
            fut = self._outstanding.pop(stream_id, None)
            if fut is None:
                raise http.client.ResponseNotReady(f"no request with stream id {stream_id}")
        try:
            resp = fut.result()
        except H2PoolError as exc:
            if not isinstance(exc, StreamReset):
                self._reached().discard(self._base)  # the next request() connects anew
            twin = _response_error(exc)
            if twin is None:
                raise
            raise twin from exc
        self._reached().add(self._base)
        response = self.response_class(resp, stream_id, self._response_engine())
        if not response.will_close and not response.isclosed():
            with self._lock:
                self._returned.add(response)
        return response

    def close(self) -> None:
        """Forget outstanding requests (their streams are reset) and release the engine.

        As with `http.client`, a response already returned is closed too, unless the
        server said its connection ends with it (``will_close``: an HTTP/1.0 answer,
        ``Connection: close``, a body delimited by the connection's end); that one
        stays readable to its end.
        """
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()  # the caller's socket, as the stdlib closes it
        with self._lock:
            pending, self._pending = self._pending, None
            outstanding = list(self._outstanding.values())
            self._outstanding.clear()
            returned = list(self._returned)
            self._returned.clear()
        for response in returned:
            response.close()  # outside the lock: it may give a stream back
        if pending is not None and pending.feed is not None:
            pending.feed.end()
        for fut in outstanding:
            fut.cancel()
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def __enter__(self) -> HTTP20Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<h2pool.compat.{type(self).__name__} {self._base}>"


class HTTPConnection(HTTP20Connection):
    """`http.client.HTTPConnection`'s meaning: plain HTTP/1.1, port 80.

    With ``secure=True`` or an ``ssl_context``/``context`` it is TLS instead (port 443
    by default), negotiating h2 by ALPN and speaking HTTP/1.1 when the server does not
    offer it. A plain connection never upgrades to HTTP/2 by itself (that would need
    prior knowledge of the server: use ``HTTP20Connection(..., secure=False)``).
    """

    default_port = 80
    _http1 = True

    def __init__(
        self,
        host: str,
        port: int | None = None,
        timeout: Timeout | float | None = None,
        source_address: tuple[str, int] | None = None,
        blocksize: int = 8192,
        *,
        secure: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        context: ssl.SSLContext | None = None,
        client: Client | None = None,
    ) -> None:
        # The stdlib's positional order (host, port, timeout, source_address, blocksize).
        super().__init__(
            host,
            port,
            secure=secure,
            ssl_context=ssl_context,
            timeout=timeout,
            context=context,
            source_address=source_address,
            blocksize=blocksize,
            client=client,
        )

    @staticmethod
    def _decide_secure(secure: bool | None, context: ssl.SSLContext | None) -> bool:
        if secure is False and context is not None:
            raise ValueError("secure=False with an SSL context: choose one")
        return bool(secure) or context is not None


_default_contexts: dict[bool, ssl.SSLContext] = {}


def _default_context(check_hostname: bool) -> ssl.SSLContext:
    """One shared default context per ``check_hostname`` value, so that such connection
    objects share one engine (the engine key includes the context's identity)."""
    context = _default_contexts.get(check_hostname)
    if context is None:
        context = ssl.create_default_context(cafile=certifi.where())
        context.check_hostname = check_hostname
        context = _default_contexts.setdefault(check_hostname, context)
    return context


class HTTPSConnection(HTTPConnection):
    """`http.client.HTTPSConnection`'s meaning: always TLS (port 443 by default),
    h2 by ALPN, HTTP/1.1 when the server does not offer h2.

    ``context`` decides trust, as in the stdlib (default: certifi's roots, hostname
    checked); ``check_hostname=False`` turns off the hostname check of the context
    given or of the default one, keeping certificate verification. ``key_file``,
    ``cert_file`` and ``check_hostname`` are deprecated as in the stdlib (a warning says
    so); a client certificate loads into the context given, or into a new default one,
    never into the one shared by other connection objects. Post-handshake client
    authentication stays off: HTTP/2 forbids it (RFC 8740).
    """

    default_port = 443

    def __init__(
        self,
        host: str,
        port: int | None = None,
        key_file: str | None = None,
        cert_file: str | None = None,
        timeout: Timeout | float | None = None,
        source_address: tuple[str, int] | None = None,
        *,
        context: ssl.SSLContext | None = None,
        check_hostname: bool | None = None,
        blocksize: int = 8192,
        ssl_context: ssl.SSLContext | None = None,
        client: Client | None = None,
    ) -> None:
        # The stdlib's positional order (host, port, key_file, cert_file, timeout, ...).
        if key_file is not None or cert_file is not None or check_hostname is not None:
            warnings.warn(
                "key_file, cert_file and check_hostname are deprecated, use a custom context"
                " instead.",
                DeprecationWarning,
                stacklevel=2,
            )
        context = context or ssl_context
        if cert_file is not None:
            if context is None:
                context = ssl.create_default_context(cafile=certifi.where())
            context.load_cert_chain(cert_file, key_file)
        elif key_file is not None:
            raise ValueError("key_file needs cert_file")
        if check_hostname is not None:
            if context is None:
                context = _default_context(check_hostname)
            else:
                context.check_hostname = check_hostname  # as the stdlib does
        super().__init__(
            host,
            port,
            secure=True,
            context=context,
            timeout=timeout,
            source_address=source_address,
            blocksize=blocksize,
            client=client,
        )

    @staticmethod
    def _decide_secure(secure: bool | None, context: ssl.SSLContext | None) -> bool:
        return True

    @property
    def _context(self) -> ssl.SSLContext:
        """The stdlib's name for the context: the one given, or the default (certifi's
        roots, host names checked), which is the trust the engine applies without one."""
        return self.ssl_context or _default_context(True)


# -- urllib.request and xmlrpc.client on these classes ----------------------------------------


class HTTPHandler(urllib.request.HTTPHandler):
    """A `urllib.request` handler for ``http://`` URLs on `HTTPConnection`."""

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(HTTPConnection, req)  # type: ignore[arg-type]


class HTTPSHandler(urllib.request.HTTPSHandler):
    """A `urllib.request` handler for ``https://`` URLs on `HTTPSConnection`
    (h2 by ALPN); ``context`` and ``check_hostname`` as for the stdlib's handler."""

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(
            HTTPSConnection,  # type: ignore[arg-type]
            req,
            context=self._context,  # type: ignore[attr-defined]
            check_hostname=self._check_hostname,  # type: ignore[attr-defined]
        )


def build_opener(*handlers: Any) -> urllib.request.OpenerDirector:
    """`urllib.request.build_opener` with h2pool's HTTP and HTTPS handlers (unless
    ``handlers`` has its own, such as ``HTTPSHandler(context=...)``).

    >>> opener = build_opener()                       # doctest: +SKIP
    >>> opener.open("https://example.org/").read()    # doctest: +SKIP

    Proxies from the environment still go through urllib's ``ProxyHandler``: an
    ``https://`` URL is tunnelled with CONNECT (`HTTP20Connection.set_tunnel`).
    """
    ours: list[Any] = []
    for stock, mine in (
        (urllib.request.HTTPHandler, HTTPHandler),
        (urllib.request.HTTPSHandler, HTTPSHandler),
    ):
        given = any(
            isinstance(h, stock) or (isinstance(h, type) and issubclass(h, stock)) for h in handlers
        )
        if not given:
            ours.append(mine)
    return urllib.request.build_opener(*ours, *handlers)


class Transport(xmlrpc.client.Transport):
    """An `xmlrpc.client` transport for ``http://`` servers on `HTTPConnection`:
    ``xmlrpc.client.ServerProxy(url, transport=Transport())``."""

    def make_connection(self, host: Any) -> Any:
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, _x509 = self.get_host_info(host)
        conn = HTTPConnection(chost)
        self._connection = host, conn  # type: ignore[assignment]
        return conn


class SafeTransport(xmlrpc.client.SafeTransport):
    """The ``https://`` transport on `HTTPSConnection`; ``context`` as in the
    stdlib's ``SafeTransport``."""

    def make_connection(self, host: Any) -> Any:
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, _x509 = self.get_host_info(host)
        conn = HTTPSConnection(chost, None, context=self.context)  # type: ignore[attr-defined]
        self._connection = host, conn  # type: ignore[assignment]
        return conn
