"""The :class:`Response` users get back; it runs in caller threads only.

A buffered response carries its body in ``content``. A streamed one reads from a
:class:`~h2pool._stream.BodyPipe` fed by the I/O thread; closing it (explicitly, by
``with``, or when it is garbage collected) resets an unfinished stream and returns the
unread bytes' flow-control credit so sibling streams never starve.
"""

from __future__ import annotations

import json as _json
import weakref
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from ._errors import HTTPStatusError
from ._headers import Headers
from ._stream import BodyPipe

__all__ = ["Response"]

_EMPTY_HEADERS: list[tuple[bytes, bytes]] = []


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Response:
    """An HTTP response: status, headers, and a body read at once or streamed.

    Use as a context manager (or call :meth:`close`) when streaming, so that an
    unread body does not hold a stream open.
    """

    def __init__(
        self,
        status: int,
        headers: Headers,
        *,
        url: str,
        http_version: str = "HTTP/2",
        content: bytes | None = None,
        pipe: BodyPipe | None = None,
        trailers: Headers | None = None,
        method: str = "GET",
    ) -> None:
        self.status = status
        self.reason = _reason(status)
        self.http_version = http_version
        self.url = url
        self.headers = headers
        self.method = method
        self._trailers = trailers
        self._content = content
        self._pipe = pipe
        self._consumed = content is not None
        if pipe is not None:
            self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(self, pipe.close)
        else:
            self._finalizer = None

    @property
    def status_code(self) -> int:
        """Alias of :attr:`status`, for code written against requests/httpx."""
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

    # -- body ---------------------------------------------------------------------------
    @property
    def content(self) -> bytes:
        """The whole body; reads the rest of a streamed body first."""
        if self._content is None:
            rest = self.read()
            self._content = rest
        return self._content

    def read(self, amt: int | None = None) -> bytes:
        """Read ``amt`` bytes of the body (fewer only at its end), or all of the rest.

        Returns ``b""`` once the body is exhausted. Raises :class:`ReadTimeout`,
        :class:`StreamReset`, :class:`ProtocolError` or :class:`ConnectionLost` if the
        stream fails while reading.
        """
        if self._pipe is None or self._consumed:
            if self._content is None:
                return b""
            if amt is None:
                data, self._content = self._content, b""
                return data
            data = self._content[:amt]
            self._content = self._content[amt:]
            return data
        data = self._pipe.read(amt)
        if amt is None or not data:
            self._finish()
        return data

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Yield the body in chunks of ``chunk_size`` (the last may be shorter), or as
        they arrive when ``chunk_size`` is None."""
        if self._pipe is None or self._consumed:
            data = self.read()
            if chunk_size is None:
                if data:
                    yield data
                return
            for i in range(0, len(data), chunk_size):
                yield data[i : i + chunk_size]
            return
        pipe = self._pipe
        while True:
            chunk = pipe.read(chunk_size if chunk_size else 1 << 20, partial=chunk_size is None)
            if not chunk:
                break
            yield chunk
        self._finish()

    def _finish(self) -> None:
        if self._pipe is not None and not self._consumed:
            self._consumed = True
            if self._pipe.trailers is not None:
                self._trailers = self._pipe.trailers
            if self._finalizer is not None:
                self._finalizer()

    def close(self) -> None:
        """Release the stream: an unread remainder is discarded and the stream reset."""
        if self._pipe is not None and not self._consumed:
            self._consumed = True
            if self._content is None:
                self._content = b""
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
        """Raise :class:`HTTPStatusError` for a 4xx or 5xx status; return self otherwise."""
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
