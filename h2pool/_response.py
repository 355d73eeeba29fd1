"""The `Response` users get back; it runs in caller threads only.

A buffered response carries its body in ``content``. A streamed one reads from a
`BodyPipe` fed by the I/O thread; closing it (explicitly, by
``with``, or when it is garbage collected) resets an unfinished stream and returns the
unread bytes' flow-control credit so sibling streams never starve.
"""

from __future__ import annotations

import asyncio
import codecs
import datetime
import functools
import json as _json
import weakref
from collections.abc import AsyncIterator, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple

from ._decoders import ChainDecoder, make_decoder
from ._errors import DecodingError, HTTPStatusError, StreamClosed
from ._headers import Headers, HeaderTypes
from ._stream import BodyPipe

if TYPE_CHECKING:
    from ._outgoing import Request
    from ._request import Request as SentRequest

__all__ = ["Response"]

_EMPTY_HEADERS: list[tuple[bytes, bytes]] = []
_NO_TIME = datetime.timedelta(0)
# What str.splitlines() splits on: iter_lines() splits the same way, as requests and
# httpx do.
_LINE_ENDS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


_REASONS = {s.value: s.phrase for s in HTTPStatus}
# ``http_version`` in http.client's integer form (``HTTPResponse.version``), for the
# drop-in and the requests adapter.
VERSION_NUMBERS = {"HTTP/2": 20, "HTTP/1.1": 11, "HTTP/1.0": 10}


class WireHead(NamedTuple):
    """What an HTTP/1 status line and framing said, beyond `Response`'s own fields: the
    http.client drop-in reports them as the stdlib does (``reason`` as the server wrote
    it, ``will_close``, ``chunked``). HTTP/2 has none of them."""

    reason: str
    will_close: bool
    chunked: bool


class LineSplitter:
    """Splits text fed in pieces into lines as ``"".join(pieces).splitlines()`` would,
    giving each line as soon as it is complete; ``max_length`` bounds the part held back
    waiting for its line ending."""

    __slots__ = ("_after_cr", "_max", "_pending")

    def __init__(self, max_length: int) -> None:
        self._pending = ""
        self._after_cr = False
        self._max = max_length

    def push(self, text: str) -> list[str]:
        if self._after_cr and text[:1] == "\n":
            text = text[1:]  # the LF of a CRLF split across pieces
        if not text:
            return []
        self._after_cr = False
        if self._pending:
            text = self._pending + text
        lines = text.splitlines()
        if text[-1] in _LINE_ENDS:
            self._after_cr = text[-1] == "\r"
            self._pending = ""
        else:
            self._pending = lines.pop()
            if len(self._pending) > self._max:
                raise DecodingError(f"a body line is longer than {self._max} characters")
        return lines

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, ""
        return [rest] if rest else []


def split_lines(texts: Iterator[str], max_length: int) -> Iterator[str]:
    """The lines of the concatenated ``texts`` (see `LineSplitter`)."""
    splitter = LineSplitter(max_length)
    for text in texts:
        yield from splitter.push(text)
    yield from splitter.flush()


def _wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> None:
    """A pipe's waker: runs on the I/O thread, hands the wake-up to the reader's loop."""
    try:
        loop.call_soon_threadsafe(_set_done, waiter)
    except RuntimeError:  # the loop was closed with the read in flight
        pass


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Response:
    """An HTTP response: status, headers, and a body read at once or streamed.

    Use as a context manager (or call `close`) when streaming, so that an
    unread body does not hold a stream open.

    Responses are also built by hand for `MockTransport` handlers:
    ``Response(200, json={...})``, ``Response(404, text="nope")``,
    ``Response(302, headers={"location": "/next"})``.
    """

    # Defaults for state most responses never change, kept on the class so that building
    # a Response (on the I/O thread) stores only what differs.
    _request: Request | None = None  # the user-visible request, built on first access
    _sent: SentRequest | None = None  # the internal request, set by the I/O thread
    _t0 = 0.0  # when the request was handed to the client
    _t1 = 0.0  # when the response headers arrived
    _raw_pos = 0
    _content: bytes | None = None  # .content, once read
    _decoder: ChainDecoder | None = None
    _decoder_ready = False
    _decoded = b""  # decoded bytes produced but not yet returned
    _decode_done = False
    #: Set by the HTTP/1 connection on the responses it builds (None on HTTP/2).
    _wire_head: WireHead | None = None

    def __init__(
        self,
        status: int,
        headers: HeaderTypes | None = None,
        *,
        content: bytes | None = None,
        text: str | None = None,
        json: Any = None,
        url: str = "",
        http_version: str = "HTTP/2",
        trailers: Headers | None = None,
        request: Request | None = None,
        pipe: BodyPipe | None = None,
        method: str | None = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an int, not {type(status).__name__}")
        if not isinstance(headers, Headers):
            headers = Headers(headers)
        if text is not None or json is not None:
            if content is not None or (text is not None and json is not None):
                raise TypeError("give one of content=, text= and json=")
            if text is not None:
                content = text.encode("utf-8")
                if "content-type" not in headers:
                    headers["content-type"] = "text/plain; charset=utf-8"
            else:
                content = _json.dumps(json, separators=(",", ":")).encode("utf-8")
                if "content-type" not in headers:
                    headers["content-type"] = "application/json"
        elif content is None and pipe is None:
            content = b""
        self._setup(
            status,
            headers,
            url or (request.url if request is not None else ""),
            http_version,
            content,
            pipe,
            trailers,
            method or (request.method if request is not None else "GET"),
        )
        self._request = request

    @classmethod
    def _from_wire(
        cls,
        status: int,
        headers: Headers,
        http_version: str,
        content: bytes | None,
        pipe: BodyPipe | None,
        trailers: Headers | None,
        sent: SentRequest,
        headers_at: float,
    ) -> Response:
        """The Response the I/O thread builds: no argument conversion (the connection
        has validated everything), fewest stores; the I/O thread is the bottleneck."""
        r = cls.__new__(cls)
        r._setup(status, headers, sent.url.url, http_version, content, pipe, trailers, sent.method)
        r._sent, r._t0, r._t1 = sent, sent.started, headers_at
        return r

    def _setup(
        self,
        status: int,
        headers: Headers,
        url: str,
        http_version: str,
        content: bytes | None,
        pipe: BodyPipe | None,
        trailers: Headers | None,
        method: str,
    ) -> None:
        self.status = status
        self.reason = _REASONS.get(status, "")
        self.http_version = http_version
        self.url = url
        self.headers = headers
        self.method = method
        #: The redirect responses that led here, oldest first (``follow_redirects``).
        self.history: list[Response] = []
        self._trailers = trailers
        self._raw = content  # encoded body of a buffered response, read from _raw_pos on
        self._pipe = pipe
        self._consumed = content is not None
        self._cut = False  # closed before the end of its body: reading it raises
        if pipe is not None:
            self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(self, pipe.close)
        else:
            self._finalizer = None

    @property
    def elapsed(self) -> datetime.timedelta:
        """Time from handing the request to the client (a wait for a connection
        included) to the arrival of the response headers."""
        if self._t1 <= self._t0:
            return _NO_TIME
        return datetime.timedelta(seconds=self._t1 - self._t0)

    @property
    def request(self) -> Request:
        """The request this answers (``method``, ``url``, ``headers`` as sent)."""
        req = self._request
        if req is None:
            from ._outgoing import Request

            sent = self._sent
            if sent is None:
                req = Request(self.method, self.url)
            else:
                req = Request(
                    sent.method,
                    sent.url.url,
                    [(n, v) for n, v in sent.headers if n[:1] != b":"],
                    sent.body if sent.upload_source is None else sent.upload_source,
                )
            self._request = req
        return req

    @property
    def status_code(self) -> int:
        """Alias of `status`, for code written against requests/httpx."""
        return self.status

    @property
    def trailers(self) -> Headers:
        """Trailer fields sent after the body; empty until the body is fully read."""
        if self._trailers is None and self._pipe is not None and self._pipe.trailers is not None:
            self._trailers = self._pipe.trailers
        return self._trailers if self._trailers is not None else Headers()

    @property
    def is_closed(self) -> bool:
        return self._pipe is None or self._consumed

    # -- body, as received (encoded) --------------------------------------------------
    def read_raw(self, amt: int | None = None) -> bytes:
        """Read the body as received, without undoing its ``Content-Encoding``.

        Same contract as `read`. Do not mix with decoded reads on one response.
        """
        return self._read_raw(amt, False)

    def iter_raw(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Like `iter_bytes`, but the body as received (still compressed)."""
        if chunk_size is None:
            while chunk := self._read_raw(1 << 20, True):
                yield chunk
            return
        while chunk := self._read_raw(chunk_size, False):
            yield chunk

    def _read_raw(self, amt: int | None, partial: bool) -> bytes:
        if self._cut:
            raise StreamClosed("the response was closed before its body was read to the end")
        if self._pipe is None or self._consumed:
            # By offset: slicing off what was read would copy the rest on every read.
            raw, pos = self._raw, self._raw_pos
            if not raw or pos >= len(raw):
                return b""
            if amt is None or pos + amt >= len(raw):
                self._raw, self._raw_pos = b"", 0
                return raw[pos:] if pos else raw
            self._raw_pos = pos + amt
            return raw[pos : pos + amt]
        data = self._pipe.read(amt, partial=partial)
        if amt is None or not data:
            self._finish()
        return data

    def _bodiless(self) -> bool:
        """No body by its definition (HEAD, 204, 304, Content-Length 0): closing
        loses nothing even before the I/O thread has marked the stream's end."""
        return (
            self.method == "HEAD"
            or self.status in (204, 304)
            or self.headers.get("content-length") == "0"
        )

    # -- body, decoded ------------------------------------------------------------------
    def _get_decoder(self) -> ChainDecoder | None:
        if not self._decoder_ready:
            if self.method != "HEAD" and self.status not in (204, 304):
                # Raises for an unsupported chain: then again on every read, never
                # handing out the still-encoded body as if it were decoded.
                self._decoder = make_decoder(self.headers.get_all("content-encoding"))
            self._decoder_ready = True
        return self._decoder

    @property
    def content(self) -> bytes:
        """The whole body, decoded; reads the rest of a streamed body first.

        This holds the whole decoded body in memory: read an untrusted compressed body
        with `iter_bytes` or ``read(n)`` instead, which decode as they go.
        """
        if self._content is None:
            self._content = self.read()
        return self._content

    def read(self, amt: int | None = None) -> bytes:
        """Read ``amt`` bytes of the decoded body (fewer only at its end), or all the rest.

        A ``Content-Encoding`` of gzip, deflate, br or zstd (the last two with their
        extras) is undone as the body is read, in this thread, producing at most about
        ``amt`` bytes per call however compressed the body is; see `read_raw`.
        Returns ``b""`` once the body is exhausted. Raises `ReadTimeout`,
        `StreamReset`, `ProtocolError` or `ConnectionLost` if the
        stream fails while reading, `DecodingError` if the body does not decode.
        """
        decoder = self._get_decoder()
        if decoder is None:
            return self._read_raw(amt, False)
        if amt is None:
            parts = [self._decoded]
            self._decoded = b""
            while chunk := self._pull(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        while len(self._decoded) < amt:
            more = self._pull(amt - len(self._decoded))
            if not more:
                break
            self._decoded += more
        data, self._decoded = self._decoded[:amt], self._decoded[amt:]
        return data

    def _pull(self, limit: int) -> bytes:
        """Up to about ``limit`` decoded bytes; ``b""`` only at the end of the body."""
        decoder = self._decoder
        assert decoder is not None
        while not self._decode_done:
            out = decoder.pull(limit)
            if out:
                return out
            raw = self._read_raw(max(limit, 16384), True)
            if not raw:
                decoder.finish()  # raises for a truncated body, again on a later read
                self._decode_done = True
                break
            decoder.feed(raw)
        return b""

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Yield the decoded body in chunks of ``chunk_size`` (the last may be shorter),
        or as they arrive (and decode) when ``chunk_size`` is None."""
        if self._get_decoder() is None:
            yield from self.iter_raw(chunk_size)
            return
        if chunk_size is None:
            if self._decoded:
                data, self._decoded = self._decoded, b""
                yield data
            while chunk := self._pull(1 << 20):
                yield chunk
            return
        while chunk := self.read(chunk_size):
            yield chunk

    def iter_text(self, chunk_size: int | None = None) -> Iterator[str]:
        """Yield the body as text, decoded with `encoding` as it arrives; chunks
        are split anywhere, never inside a character."""
        try:
            decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for chunk in self.iter_bytes(chunk_size):
            text = decoder.decode(chunk)
            if text:
                yield text
        text = decoder.decode(b"", True)
        if text:
            yield text

    def iter_lines(self, max_length: int = 1 << 20) -> Iterator[str]:
        """Yield the body's lines as they arrive, without their line endings (split like
        ``str.splitlines()``). A line longer than ``max_length`` characters raises
        `DecodingError` rather than growing memory without bound."""
        return split_lines(self.iter_text(), max_length)

    # -- asyncio ------------------------------------------------------------------------
    async def _araw(self) -> AsyncIterator[bytes]:
        """The body as received, chunk by chunk, never blocking the event loop: a
        streamed body waits on the pipe through a waker the I/O thread calls."""
        pipe = self._pipe
        if pipe is None or self._consumed:
            while chunk := self._read_raw(1 << 20, True):
                yield chunk
            return
        loop = asyncio.get_running_loop()
        while True:
            data = pipe.read_nowait(1 << 20)
            if data is None:
                waiter: asyncio.Future[None] = loop.create_future()
                if pipe.arm(functools.partial(_wake, loop, waiter)):
                    try:
                        await asyncio.wait_for(waiter, pipe.read_timeout)
                    except asyncio.TimeoutError:
                        exc = pipe.expire()
                        if exc is not None:
                            raise exc from None
                continue
            if not data:
                self._finish()
                return
            yield data

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """``iter_bytes()`` for asyncio: the decoded body as it arrives; the event loop
        is never blocked waiting for it."""
        decoder = self._get_decoder()
        if decoder is None:
            async for chunk in self._araw():
                yield chunk
            return
        if self._decoded:
            data, self._decoded = self._decoded, b""
            yield data
        if self._decode_done:
            return
        async for raw in self._araw():
            decoder.feed(raw)
            while out := decoder.pull(1 << 20):
                yield out
        decoder.finish()  # raises for a truncated body
        self._decode_done = True
        while out := decoder.pull(1 << 20):
            yield out

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """``iter_raw()`` for asyncio: the body as received (still compressed)."""
        async for chunk in self._araw():
            yield chunk

    async def aread(self) -> bytes:
        """The whole decoded body (``content``), read without blocking the event loop."""
        if self._content is None:
            self._content = b"".join([chunk async for chunk in self.aiter_bytes()])
        return self._content

    async def aiter_text(self) -> AsyncIterator[str]:
        """``iter_text()`` for asyncio."""
        try:
            decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        async for chunk in self.aiter_bytes():
            text = decoder.decode(chunk)
            if text:
                yield text
        text = decoder.decode(b"", True)
        if text:
            yield text

    async def aiter_lines(self, max_length: int = 1 << 20) -> AsyncIterator[str]:
        """``iter_lines()`` for asyncio."""
        splitter = LineSplitter(max_length)
        async for text in self.aiter_text():
            for line in splitter.push(text):
                yield line
        for line in splitter.flush():
            yield line

    async def aclose(self) -> None:
        """``close()``; never blocks (it only posts a reset to the I/O thread)."""
        self.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def _finish(self) -> None:
        if self._pipe is not None and not self._consumed:
            self._consumed = True
            if self._pipe.trailers is not None:
                self._trailers = self._pipe.trailers
            if self._finalizer is not None:
                self._finalizer()

    def close(self) -> None:
        """Release the stream: an unread remainder is discarded and the stream reset.
        Reading the body after that raises `StreamClosed`."""
        if self._pipe is not None and not self._consumed:
            self._consumed = True
            self._cut = not (self._bodiless() or self._pipe.exhausted)
            if self._finalizer is not None:
                self._finalizer()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def encoding(self) -> str:
        ctype = self.headers.get("content-type", "")
        for param in ctype.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip("\"'")
        return "utf-8"

    @property
    def text(self) -> str:
        """The body decoded with the Content-Type charset (UTF-8 if none)."""
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.content, **kwargs)

    def raise_for_status(self) -> Response:
        """Raise `HTTPStatusError` for a 4xx or 5xx status; return self otherwise."""
        if 400 <= self.status < 600:
            kind = "Client error" if self.status < 500 else "Server error"
            raise HTTPStatusError(
                f"{kind} '{self.status} {self.reason}' for url '{self.url}'", self
            )
        return self

    @property
    def ok(self) -> bool:
        return self.status < 400

    def __repr__(self) -> str:
        return f"<Response [{self.status} {self.reason}] {self.http_version}>"
