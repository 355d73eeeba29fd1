"""A `requests` transport adapter that sends through h2pool.

Runs in caller threads (requests' own). Mount it and keep using requests::

    import requests
    from h2pool.contrib.requests import HTTP2Adapter

    session = requests.Session()
    session.mount("https://", HTTP2Adapter())
    r = session.get("https://example.org/")

One adapter owns (or is given) thread-safe `h2pool.Client` objects, so one
session may be shared by many threads. Cookies, redirects, auth and hooks stay
requests' job. ``verify`` and ``cert`` select a client per TLS configuration (a client
passed to the constructor serves the default ``verify=True, cert=None``);
``timeout`` is a number (every phase) or ``(connect, read)``; ``None`` means the
client's own timeouts rather than waiting forever. h2pool errors become requests'
(``ConnectionError``, ``ConnectTimeout``, ``ReadTimeout``, ``SSLError``, ...), so code
written for requests keeps working. Proxies are not supported: a request that
requests would send through a proxy raises ``ProxyError``.

Requires the ``requests`` extra: ``pip install h2pool[requests]``.
"""

from __future__ import annotations

import os
import threading
import time
import types
import zlib
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import BaseAdapter
from requests.exceptions import (
    ChunkedEncodingError,
    ConnectTimeout,
    ContentDecodingError,
    InvalidHeader,
    InvalidURL,
    ProxyError,
    ReadTimeout,
    SSLError,
)
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_ACCEPT_ENCODING, get_encoding_from_headers, select_proxy

from .. import _errors as e
from .._client import Client
from .._config import Timeout
from .._response import Response
from ..compat import _message

__all__ = ["HTTP2Adapter"]

# Encodings the body reader below can undo; requests' default Accept-Encoding is
# narrowed to these so a server never picks one (br, zstd) we would hand back raw.
_DECODABLE = "gzip, deflate"


class BodyReadTimeout(ReadTimeout, RequestsConnectionError):
    """A read timeout in the middle of a body: requests raises ``ConnectionError`` there,
    and callers may expect ``ReadTimeout``; this is both."""


def _map_error(exc: e.H2PoolError, request: Any) -> Exception:
    """The requests exception for an h2pool error (the original is the ``__cause__``)."""
    kind: type[Exception]
    if isinstance(exc, (e.ConnectTimeout, e.PoolTimeout)):
        kind = ConnectTimeout  # also a ConnectionError, like urllib3's pool exhaustion
    elif isinstance(exc, e.ReadTimeout):
        kind = ReadTimeout
    elif isinstance(exc, e.TimeoutError):
        kind = RequestsTimeout
    elif isinstance(exc, e.TLSError):
        kind = SSLError
    elif isinstance(exc, e.InvalidURL):
        kind = InvalidURL
    elif isinstance(exc, e.InvalidHeader):
        kind = InvalidHeader
    else:  # ConnectError, ConnectionLost, ProtocolError, StreamReset, ClientClosed, ...
        kind = RequestsConnectionError
    return kind(exc, request=request)


def _map_body_error(exc: e.H2PoolError) -> Exception:
    """Errors while reading a body, as requests reports them from urllib3."""
    if isinstance(exc, e.ReadTimeout):
        return BodyReadTimeout(exc)
    if isinstance(exc, e.TLSError):
        return SSLError(exc)
    return ChunkedEncodingError(f"Connection broken: {exc}")


class _Decoder:
    """Incremental gzip/deflate decoding (urllib3's GzipDecoder and DeflateDecoder)."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._first = True
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)

    def decode(self, data: bytes) -> bytes:
        try:
            if self._first and not self._gzip:
                self._first = False
                try:
                    return self._obj.decompress(data)
                except zlib.error:
                    # "deflate" is often raw DEFLATE without the zlib wrapper.
                    self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    return self._obj.decompress(data)
            return self._obj.decompress(data)
        except zlib.error as exc:
            raise ContentDecodingError(f"cannot decode {data[:16]!r}...: {exc}") from exc

    def flush(self) -> bytes:
        return self._obj.flush()


class H2PoolRawResponse:
    """``response.raw``: the file-like body requests reads, in the shape of urllib3's
    ``HTTPResponse`` that requests relies on (``read``, ``stream``, ``release_conn``,
    ``_original_response.msg`` for cookies)."""

    def __init__(self, resp: Response) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason
        self.version = 20 if resp.http_version == "HTTP/2" else 11
        self.headers = resp.headers
        self.decode_content = False
        self._original_response = types.SimpleNamespace(msg=_message(resp))
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        self._decoder: _Decoder | None = None
        self._encoding = encoding if encoding in ("gzip", "x-gzip", "deflate") else ""
        self._eof = False
        self.closed = False

    def _decode(self, data: bytes, decode: bool, final: bool) -> bytes:
        if not decode or not self._encoding:
            return data
        if self._decoder is None:
            self._decoder = _Decoder(self._encoding)
        out = self._decoder.decode(data) if data else b""
        if final:
            out += self._decoder.flush()
        return out

    def _raw_read(self, amt: int | None, partial: bool = False) -> bytes:
        if self._eof:
            return b""
        try:
            if partial and amt is not None:
                pipe = self._resp._pipe
                if pipe is not None and not self._resp.is_closed:
                    data = pipe.read(amt, partial=True)
                else:
                    data = self._resp.read_raw(amt)
            else:
                data = self._resp.read_raw(amt)
        except e.H2PoolError as exc:
            raise _map_body_error(exc) from exc
        if amt is None or not data:
            self._eof = True
        return data

    def read(
        self,
        amt: int | None = None,
        decode_content: bool | None = None,
        cache_content: bool = False,
    ) -> bytes:
        """Up to ``amt`` bytes of the body (all of the rest if None); ``b""`` at the end."""
        decode = self.decode_content if decode_content is None else decode_content
        data = self._raw_read(amt)
        return self._decode(data, decode, self._eof)

    def stream(
        self, amt: int | None = 2**16, decode_content: bool | None = None
    ) -> Iterator[bytes]:
        """Yield the body in chunks of up to ``amt`` bytes (as they arrive if None)."""
        decode = self.decode_content if decode_content is None else decode_content
        size = amt if amt else 1 << 20
        while not self._eof:
            data = self._raw_read(size, partial=not amt)
            out = self._decode(data, decode, self._eof)
            if out:
                yield out

    def readable(self) -> bool:
        return True

    def release_conn(self) -> None:
        """requests calls this when it is done with the body (``Response.close``)."""
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._resp.close()

    def __iter__(self) -> Iterator[bytes]:
        return self.stream()


def _seconds(value: Any) -> float | None:
    """A number of seconds, or None for urllib3's sentinels (its default, no timeout)."""
    return float(value) if isinstance(value, (int, float)) else None


def _timeout(value: Any) -> Timeout | None:
    if value is None:
        return None
    if isinstance(value, Timeout):
        return value
    if hasattr(type(value), "connect_timeout") and hasattr(type(value), "read_timeout"):
        # A urllib3 Timeout, which requests passes through as it is. Its read_timeout
        # needs a started timer when ``total`` is set, so read the parts: the read phase
        # gets ``read`` capped by ``total`` (h2pool has no whole-request deadline).
        connect = _seconds(value.connect_timeout)
        read, total = _seconds(getattr(value, "_read", None)), _seconds(value.total)
        if total is not None:
            read = total if read is None else min(read, total)
        return Timeout(connect=connect, read=read, write=read, pool=connect)
    if isinstance(value, tuple):
        try:
            connect, read = value
        except ValueError as exc:
            raise ValueError(
                f"Invalid timeout {value}. Pass a (connect, read) timeout tuple, "
                "or a single float to set both timeouts to the same value."
            ) from exc
        return Timeout(connect=connect, read=read, write=read, pool=connect)
    return Timeout(value)


class HTTP2Adapter(BaseAdapter):
    """A requests transport adapter on h2pool: HTTP/2 (or HTTP/1.1 when the server does
    not offer h2), pooled connections shared by every thread using the session.

    ``client``: an `h2pool.Client` to share (not closed by `close`); it
    serves requests with the default ``verify=True`` and no ``cert``. ``client_kwargs``
    configure the clients the adapter creates itself (``limits``, ``timeout``,
    ``http1``, ``headers``, ...).
    """

    def __init__(self, client: Client | None = None, **client_kwargs: Any) -> None:
        super().__init__()
        for key in ("verify", "cert"):
            if key in client_kwargs:
                raise TypeError(f"pass {key}= to the request (or the session), not the adapter")
        self._client = client
        self._client_kwargs = client_kwargs
        # _lock guards _clients and _closed; held only for dict updates and Client
        # construction (no I/O), never while a request runs.
        self._lock = threading.Lock()
        self._clients: dict[tuple[Any, Any], Client] = {}
        self._closed = False

    def client_for(self, verify: Any = True, cert: Any = None) -> Client:
        """The client serving ``verify``/``cert`` (created on first use)."""
        if isinstance(cert, list):
            cert = tuple(cert)
        if self._client is not None and verify is True and cert is None:
            return self._client
        key = (verify, cert)
        with self._lock:
            if self._closed:
                raise RequestsConnectionError("the HTTP2Adapter is closed")
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = Client(
                    verify=verify, cert=cert, **self._client_kwargs
                )
            return client

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send a prepared request; returns a `requests.Response`."""
        url = request.url
        if isinstance(url, bytes):
            url = url.decode("utf-8")
        assert url is not None
        if proxies and select_proxy(url, dict(proxies)):
            raise ProxyError("h2pool's HTTP2Adapter does not support proxies", request=request)
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            # requests has turned them into an Authorization header already (or the
            # caller's auth= replaced them); they never go on the wire in the URL.
            host = parts.netloc.rpartition("@")[2]
            url = urlunsplit(parts._replace(netloc=host))
        if parts.scheme.lower() != "https":
            verify, cert = True, None  # TLS settings mean nothing for http://
        elif isinstance(verify, str) and not os.path.exists(verify):
            raise OSError(
                f"Could not find a suitable TLS CA certificate bundle, invalid path: {verify}"
            )
        client = self.client_for(verify, cert)
        headers: list[tuple[str, str | bytes]] = []
        for name, value in request.headers.items():
            if name.lower() == "accept-encoding" and value == DEFAULT_ACCEPT_ENCODING:
                value = _DECODABLE
            headers.append((name, value))
        start = time.monotonic()
        try:
            resp = client.request(
                request.method or "GET",
                url,
                headers=headers,
                body=cast(Any, request.body),  # bytes, str, file or iterable
                timeout=_timeout(timeout),
                stream=True,
                follow_redirects=False,  # requests follows them itself
            )
        except e.H2PoolError as exc:
            raise _map_error(exc, request) from exc
        return self.build_response(request, resp, time.monotonic() - start)

    def build_response(
        self, request: requests.PreparedRequest, resp: Response, elapsed: float = 0.0
    ) -> requests.Response:
        r = requests.Response()
        r.status_code = resp.status
        joined: dict[str, str] = {}
        for name, value in resp.headers.items():
            joined[name] = f"{joined[name]}, {value}" if name in joined else value
        r.headers = CaseInsensitiveDict(joined)
        r.encoding = get_encoding_from_headers(r.headers)
        r.raw = H2PoolRawResponse(resp)
        r.reason = resp.reason
        url = request.url
        r.url = url.decode("utf-8") if isinstance(url, bytes) else (url or resp.url)
        r.request = request
        r.connection = self  # type: ignore[assignment]  # requests types it as HTTPAdapter
        r.elapsed = timedelta(seconds=elapsed)
        requests.cookies.extract_cookies_to_jar(r.cookies, request, r.raw)
        return r

    def close(self) -> None:
        """Close the clients this adapter created (a client passed in stays open)."""
        with self._lock:
            self._closed = True
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()
