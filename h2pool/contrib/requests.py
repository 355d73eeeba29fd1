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
written for requests keeps working. Proxies are requests' choice (``proxies=``, and the
environment when the session trusts it): a request requests sends through a proxy goes
through a client tunnelling to that proxy (``http://`` proxies with ``CONNECT``, also
for ``http://`` URLs, and ``socks5://``/``socks5h://``; another scheme raises
``InvalidSchema``). The adapter
pickles with its session; an unpickled adapter creates its own clients.

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
    InvalidProxyURL,
    InvalidSchema,
    InvalidURL,
    ProxyError,
    ReadTimeout,
    SSLError,
)
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout
from requests.structures import CaseInsensitiveDict
from requests.utils import (
    DEFAULT_ACCEPT_ENCODING,
    get_encoding_from_headers,
    prepend_scheme_if_needed,
    select_proxy,
)
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from .. import _errors as e
from .._client import Client
from .._config import ProxyConfig, Timeout
from .._response import VERSION_NUMBERS, Response
from ..compat import _message

__all__ = ["HTTP2Adapter"]

# Encodings the body reader below can undo; requests' default Accept-Encoding is
# narrowed to these so a server never picks one (br, zstd) we would hand back raw.
_DECODABLE = "gzip, deflate"


class BodyReadTimeout(ReadTimeout, RequestsConnectionError):
    """A read timeout in the middle of a body: requests raises ``ConnectionError`` there,
    and callers may expect ``ReadTimeout``; this is both."""


def _read_timed_out(exc: e.ReadTimeout) -> e.ReadTimeout:
    """The error with urllib3's wording first, which code written for requests matches
    (``"Read timed out" in str(err)``)."""
    return e.ReadTimeout(f"Read timed out. ({exc})")


def _bad_response_head(exc: e.H2PoolError) -> bool:
    """A response head h11 refused for its header fields (urllib3 raises its own
    ``InvalidHeader`` there, which requests reports as ``InvalidHeader``)."""
    cause = exc.__cause__
    return (
        isinstance(exc, e.ProtocolError)
        and cause is not None
        and type(cause).__name__ == "RemoteProtocolError"
        and "Content-Length" in str(cause)
    )


def _map_error(exc: e.H2PoolError, request: Any, proxied: bool = False) -> Exception:
    """The requests exception for an h2pool error (the original is the ``__cause__``)."""
    kind: type[Exception]
    arg: Exception = exc
    if isinstance(exc, (e.ConnectTimeout, e.PoolTimeout)):
        kind = ConnectTimeout  # also a ConnectionError, like urllib3's pool exhaustion
    elif isinstance(exc, e.ReadTimeout):
        kind, arg = ReadTimeout, _read_timed_out(exc)
    elif isinstance(exc, e.TimeoutError):
        kind = RequestsTimeout
    elif isinstance(exc, e.TLSError):
        kind = SSLError
    elif isinstance(exc, e.ConnectError) and proxied:
        kind = ProxyError  # the TCP connection and the tunnel are the proxy's
    elif isinstance(exc, e.InvalidURL):
        kind = InvalidURL
    elif isinstance(exc, e.InvalidHeader) or _bad_response_head(exc):
        kind = InvalidHeader
    elif isinstance(exc, e.ConnectionLost) and exc._partial_response:
        # The server began to answer and closed inside the head. http.client ends the
        # head at EOF and finds the body short, so requests reports a broken body.
        kind = ChunkedEncodingError
    else:  # ConnectError, ConnectionLost, ProtocolError, StreamReset, ClientClosed, ...
        kind = RequestsConnectionError
    return kind(arg, request=request)


def _map_body_error(exc: e.H2PoolError) -> Exception:
    """Errors while reading a body, as requests reports them from urllib3."""
    if isinstance(exc, e.ReadTimeout):
        return BodyReadTimeout(_read_timed_out(exc))
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
        self.version = VERSION_NUMBERS.get(resp.http_version, 11)
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
        if self._eof or self.closed:
            return b""  # as urllib3's: a closed response reads as empty
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


def _check_seconds(what: str, value: Any) -> None:
    """urllib3's validation of one timeout value, with its wording."""
    if value is None or type(value).__name__ == "_TYPE_DEFAULT":
        return
    if isinstance(value, bool):
        raise ValueError("Timeout cannot be a boolean value. It must be an int, float or None.")
    if not isinstance(value, (int, float)):
        raise ValueError(f"Timeout value {what} was {value}, but it must be an int, float or None.")
    if value <= 0:
        raise ValueError(
            f"Attempted to set {what} timeout to {value}, but the timeout cannot be set to a"
            " value less than or equal to 0."
        )


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
        _check_seconds("connect", connect)
        _check_seconds("read", read)
        return Timeout(connect=connect, read=read, write=read, pool=connect)
    _check_seconds("connect", value)
    return Timeout(value)


def _proxy_for(url: str, proxies: Mapping[str, str] | None, request: Any) -> str | None:
    """The proxy URL requests chose for ``url`` (None for a direct connection), checked
    as requests' own adapter checks it."""
    if not proxies:
        return None
    proxy = select_proxy(url, dict(proxies))
    if not proxy:
        return None
    proxy = prepend_scheme_if_needed(proxy, "http")
    malformed = "Please check proxy URL. It is malformed and could be missing the host."
    try:
        host = parse_url(proxy).host
    except LocationParseError:
        host = None
    if not host:
        raise InvalidProxyURL(malformed, request=request)
    try:
        ProxyConfig.parse(proxy)
    except ValueError as exc:
        if "scheme" in str(exc):
            raise InvalidSchema(f"h2pool cannot use this proxy: {exc}", request=request) from None
        raise InvalidProxyURL(f"{malformed} ({exc})", request=request) from None
    return proxy


def _check_tls_files(verify: Any, cert: Any) -> None:
    """requests' checks of the files named by ``verify`` and ``cert``, with its wording."""
    if isinstance(verify, str) and not os.path.exists(verify):
        raise OSError(
            f"Could not find a suitable TLS CA certificate bundle, invalid path: {verify}"
        )
    if not cert:
        return
    cert_file, key_file = (cert, None) if isinstance(cert, str) else (cert[0], cert[1])
    if cert_file and not os.path.exists(cert_file):
        raise OSError(f"Could not find the TLS certificate file, invalid path: {cert_file}")
    if key_file and not os.path.exists(key_file):
        raise OSError(f"Could not find the TLS key file, invalid path: {key_file}")


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
        for key in ("proxy", "trust_env"):
            if key in client_kwargs:
                raise TypeError(
                    f"requests chooses proxies: pass proxies= to the request or the session,"
                    f" not {key}= to the adapter"
                )
        self._client = client
        self._client_kwargs = client_kwargs
        self._init_state()

    def _init_state(self) -> None:
        # _lock guards _clients and _closed; held only for dict lookups and updates,
        # never while a client is built or a request runs.
        self._lock = threading.Lock()
        self._clients: dict[tuple[Any, Any, str | None], Client] = {}
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        # requests pickles a Session with its adapters. Clients (threads, sockets) do
        # not pickle: the configuration does, and the copy builds its own clients.
        return {"client_kwargs": self._client_kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["client_kwargs"])  # type: ignore[misc]

    def client_for(self, verify: Any = True, cert: Any = None, proxy: str | None = None) -> Client:
        """The client serving ``verify``/``cert`` through ``proxy`` (created on first use)."""
        if isinstance(cert, list):
            cert = tuple(cert)
        if self._client is not None and verify is True and cert is None and proxy is None:
            return self._client
        key = (verify, cert, proxy)
        with self._lock:
            if self._closed:
                raise RequestsConnectionError("the HTTP2Adapter is closed")
            client = self._clients.get(key)
        if client is not None:
            return client
        # Built outside the lock: construction starts a thread and allocates, and a
        # collection there may run finalizers that must not find the lock held.
        client = Client(
            verify=verify, cert=cert, proxy=proxy, trust_env=False, **self._client_kwargs
        )
        with self._lock:
            closed = self._closed
            kept = None if closed else self._clients.setdefault(key, client)
        if kept is not client:
            client.close()  # another thread built the same one first, or we closed
        if kept is None:
            raise RequestsConnectionError("the HTTP2Adapter is closed")
        return kept

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
        proxy = _proxy_for(url, proxies, request)
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            # requests has turned them into an Authorization header already (or the
            # caller's auth= replaced them); they never go on the wire in the URL.
            host = parts.netloc.rpartition("@")[2]
            url = urlunsplit(parts._replace(netloc=host))
        if parts.scheme.lower() != "https":
            verify, cert = True, None  # TLS settings mean nothing for http://
        else:
            _check_tls_files(verify, cert)
        client = self.client_for(verify, cert, proxy)
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
            raise _map_error(exc, request, proxy is not None) from exc
        return self.build_response(request, resp, time.monotonic() - start)

    def build_response(
        self, request: requests.PreparedRequest, resp: Response, elapsed: float = 0.0
    ) -> requests.Response:
        r = requests.Response()
        r.status_code = resp.status
        joined: dict[str, str] = {}
        # ISO-8859-1 strings, as http.client gives requests (which re-encodes a
        # Location that way before decoding it as UTF-8).
        for name, value in resp.headers._latin1():
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
