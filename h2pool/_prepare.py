"""Building a `Request` from what the caller passed: method, URL, headers, body.

Runs in caller threads, before anything is queued for the I/O thread, so invalid input
raises in the caller's own stack. A `RequestBuilder` owns a client's default
headers and timeout; it is immutable after construction and needs no lock.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping, Set
from typing import IO, Any, Union

from hpack import NeverIndexedHeaderTuple

from ._config import Timeout
from ._decoders import accept_encoding
from ._errors import InvalidHeader
from ._headers import HeaderTypes, normalize_headers
from ._request import Request
from ._stream import UploadPipe, rewind_point
from ._urls import parse_url
from ._version import __version__

__all__ = ["BodyTypes", "RequestBuilder"]

BodyTypes = Union[bytes, bytearray, memoryview, str, IO[bytes], Iterable[bytes], None]

_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Methods seen before: (upper-cased, encoded). Most programs use a handful.
_METHODS: dict[str, tuple[str, bytes]] = {
    m: (m, m.encode()) for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}
_SCHEMES = {"https": b"https", "http": b"http"}
_NO_NAMES: frozenset[bytes] = frozenset()
_PSEUDO_SIZE = len(b":method:scheme:authority:path") + 4 * 32
_SENSITIVE = frozenset([b"authorization", b"proxy-authorization", b"cookie"])
# How much of a streamed request body may wait between its producer and the socket.
_UPLOAD_BUFFER = 1024 * 1024
# Largest request header list accepted at all (servers commonly allow 8-64 KiB).
_MAX_HEADER_LIST = 256 * 1024


_OS_FILES = (io.FileIO, io.BufferedReader, io.BufferedRandom)


def _body_length(source: Any) -> int | None:
    """The bytes left in a file-like body, when the file can tell (for Content-Length)."""
    # The descriptor's size only for plain files: bz2/lzma/gzip file objects answer
    # fileno() with the compressed file's descriptor, whose size is not what they read.
    if isinstance(source, _OS_FILES):
        try:
            return int(os.fstat(source.fileno()).st_size - source.tell())
        except (AttributeError, OSError, ValueError):
            pass
    try:
        if source.seekable():
            here = source.tell()
            end = source.seek(0, io.SEEK_END)
            source.seek(here)
            return int(end - here)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _classify_body(body: BodyTypes) -> tuple[bytes | None, Any]:
    """(bytes sent from memory, or a file/iterable to stream through an UploadPipe)."""
    if body is None:
        return None, None
    if isinstance(body, bytes):
        return body, None
    if isinstance(body, str):
        return body.encode("utf-8"), None
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body), None
    if isinstance(body, (Mapping, Set)):
        # Iterating would send the keys (b"abb" for {"a": 1, "bb": 2}).
        raise TypeError(
            f"body= takes bytes, str, a file or an iterable of bytes, not a "
            f"{type(body).__name__}: use json= for JSON or data= for a form"
        )
    if callable(getattr(body, "read", None)) or isinstance(body, Iterable):
        return None, body
    if hasattr(body, "__aiter__"):
        raise TypeError(
            "an async iterable cannot be a request body: pass bytes, a file or a plain "
            "iterable (it is read by a pump thread, off the event loop)"
        )
    raise TypeError(f"unsupported body type {type(body).__name__}")


class RequestBuilder:
    """Validates and encodes one request, merged with a client's defaults.

    The default header list is shared, unchanged, by every request that adds no headers
    of its own (the common case), and its RFC 9113 §6.5.2 size is computed once here.
    """

    __slots__ = ("_default_headers", "_default_names", "_default_size", "_timeout")

    def __init__(
        self, headers: HeaderTypes | None, timeout: Timeout, identify: bool = True
    ) -> None:
        # ``identify=False`` (the http.client drop-in): no User-Agent or Accept of
        # h2pool's own, as the stdlib sends none.
        ident = [(b"user-agent", f"h2pool/{__version__}".encode()), (b"accept", b"*/*")]
        defaults: list[tuple[bytes, bytes]] = [
            *(ident if identify else ()),
            # Only codings this process can decode (br, zstd need their extras).
            (b"accept-encoding", accept_encoding()),
            # RFC 9113 §8.2.2 allows exactly this TE value; servers that send trailers
            # only when asked (hypercorn, gRPC servers) then send them. HTTP/1.1
            # connections leave it out (there it would need Connection: TE).
            (b"te", b"trailers"),
        ]
        user = normalize_headers(headers)
        names = {n for n, _ in user}
        self._default_headers = [(n, v) for n, v in defaults if n not in names] + user
        self._default_names = frozenset(n for n, _ in self._default_headers)
        self._default_size = sum(len(n) + len(v) + 32 for n, v in self._default_headers)
        self._timeout = timeout

    def has_default(self, name: bytes) -> bool:
        """Whether every request carries header ``name`` (lower-case) unless it gives
        its own: the client's ``headers=`` and h2pool's own defaults."""
        return name in self._default_names

    def build(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None,
        body: BodyTypes,
        timeout: Timeout | float | None,
        stream: bool,
        drop: frozenset[bytes] = frozenset(),
    ) -> Request:
        """The `Request` to queue; raises ``InvalidURL``, ``InvalidHeader`` or
        ``TypeError`` (an unsupported body). Default headers named in ``drop`` are left
        out (a redirect to another origin drops the credentials)."""
        m = _METHODS.get(method) if isinstance(method, str) else None
        if m is None:
            if not isinstance(method, str) or not _METHOD.match(method):
                raise InvalidHeader(f"invalid HTTP method {method!r}")
            m = (method.upper(), method.upper().encode())
            if len(_METHODS) < 64:
                _METHODS[method] = m
        method, method_bytes = m
        u = parse_url(url)
        user = normalize_headers(headers) if headers else None
        authority = u.authority
        regular: list[tuple[bytes, bytes]]
        names: set[bytes] | frozenset[bytes]
        if user:
            names = set()
            regular = []
            for n, v in user:
                if n == b"host":
                    authority = v  # RFC 9113 §8.3.1: Host becomes :authority
                    continue
                names.add(n)
                if n in _SENSITIVE:
                    # RFC 7541 §7.1.3: never indexed, so they cannot be probed through
                    # the compression context, and never logged by hpack's DEBUG output.
                    regular.append(NeverIndexedHeaderTuple(n, v))
                else:
                    regular.append((n, v))
            if names & self._default_names or drop:
                regular = [
                    (n, v) for n, v in self._default_headers if n not in names and n not in drop
                ] + regular
            else:
                regular = self._default_headers + regular
        elif drop:
            names = _NO_NAMES
            regular = [(n, v) for n, v in self._default_headers if n not in drop]
        else:
            names = _NO_NAMES
            regular = self._default_headers
        data, source = _classify_body(body)
        declared: int | None = None
        if b"content-length" in names:
            for n, v in regular:
                if n == b"content-length":
                    if not v.isdigit():
                        raise InvalidHeader(f"invalid Content-Length {v!r}")
                    declared = int(v)
        if data is not None:
            if declared is not None and declared != len(data):
                raise InvalidHeader(
                    f"Content-Length {declared} does not match the body's {len(data)} bytes"
                )
            if declared is None:
                regular = [*regular, (b"content-length", str(len(data)).encode())]
        elif source is not None:
            if declared is None and callable(getattr(source, "read", None)):
                declared = _body_length(source)
                if declared is not None:
                    regular = [*regular, (b"content-length", str(declared).encode())]
        elif method in ("POST", "PUT", "PATCH") and declared is None:
            regular = [*regular, (b"content-length", b"0")]
        hdrs = [
            (b":method", method_bytes),
            (b":scheme", _SCHEMES[u.scheme]),
            (b":authority", authority),
            (b":path", u.target),
            *regular,
        ]
        # RFC 9113 §6.5.2 size: name + value + 32 per field. Refuse absurd header lists
        # here; the connection also checks the server's own MAX_HEADER_LIST_SIZE.
        if regular is self._default_headers:
            size = (
                self._default_size
                + _PSEUDO_SIZE
                + len(method_bytes)
                + len(u.scheme)
                + len(authority)
                + len(u.target)
            )
        else:
            size = 0
            for n, v in hdrs:
                size += len(n) + len(v) + 32
        if size > _MAX_HEADER_LIST:
            raise InvalidHeader(
                f"request headers total {size} bytes, over h2pool's limit of {_MAX_HEADER_LIST}"
            )
        t = self._timeout if timeout is None else Timeout.coerce(timeout)
        req = Request(method, u, hdrs, data or None, t, stream)
        req.header_size = size
        if source is not None:
            req.upload = UploadPipe(_UPLOAD_BUFFER, declared)
            req.upload_source = source
            req.upload_start = rewind_point(source)
        return req
