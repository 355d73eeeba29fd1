"""The outgoing request as users see it: what ``auth=`` callables, request hooks and
transports receive, and what ``Response.request`` describes.

Lives in the caller's thread only. The I/O thread never sees this object: once auth
and hooks have run it is validated and encoded into the internal
`h2pool._request.Request`, which is what crosses to the I/O thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Union

from ._headers import Headers, HeaderTypes

__all__ = ["Request"]

_Body = Union[bytes, bytearray, memoryview, str, IO[bytes], Iterable[bytes], None]


class Request:
    """An HTTP request: ``method``, ``url``, ``headers`` (mutable `Headers`) and
    ``body`` (as it will be sent: ``json=``, ``data=`` and ``files=`` already encoded).

    A request hook may change ``headers`` or ``url``; the request is validated after
    the hooks have run, so a bad header a hook adds raises in the caller's thread.
    """

    __slots__ = ("body", "headers", "method", "url")

    def __init__(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None = None,
        body: _Body = None,
    ) -> None:
        self.method = method.upper() if isinstance(method, str) else method
        self.url = url
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body

    @property
    def content(self) -> bytes:
        """The whole body as bytes. A streamed body (file, iterator) is read here, in
        the caller's thread, and kept as bytes so it can still be sent."""
        body = self.body
        if body is None:
            return b""
        if isinstance(body, bytes):
            return body
        if isinstance(body, str):
            data = body.encode("utf-8")
        elif isinstance(body, (bytearray, memoryview)):
            data = bytes(body)
        elif callable(getattr(body, "read", None)):
            chunks = []
            while chunk := body.read(1 << 16):  # type: ignore[attr-defined]
                chunks.append(chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk))
            data = b"".join(chunks)
        else:
            data = b"".join(c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in body)
        self.body = data
        return data

    def __repr__(self) -> str:
        target = self.url.split("?", 1)[0] if isinstance(self.url, str) else self.url
        return f"<Request [{self.method} {target}]>"
