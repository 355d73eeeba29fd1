"""Configuration value types: `Timeout`, `Limits` and the proxy settings.

Frozen dataclasses, safe to share between threads.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = ["Limits", "Proxies", "ProxyConfig", "Timeout"]


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"Timeout.{name} must be a positive number or None, got {value!r}")


@dataclass(frozen=True)
class Timeout:
    """Per-phase timeouts in seconds; ``None`` disables one.

    ``connect`` covers DNS, TCP and the TLS handshake; ``read`` is the longest gap
    between bytes of one response (it resets that stream only); ``write`` the longest
    the request body may make no progress; ``pool`` the longest a request may wait
    for a stream slot.

    >>> Timeout(5.0)
    Timeout(connect=5.0, read=5.0, write=5.0, pool=5.0)
    """

    connect: float | None = 10.0
    read: float | None = 30.0
    write: float | None = 30.0
    pool: float | None = 30.0

    def __init__(
        self,
        default: float | None = ...,  # type: ignore[assignment]
        *,
        connect: float | None = ...,  # type: ignore[assignment]
        read: float | None = ...,  # type: ignore[assignment]
        write: float | None = ...,  # type: ignore[assignment]
        pool: float | None = ...,  # type: ignore[assignment]
    ) -> None:
        base: dict[str, float | None]
        if default is ...:  # type: ignore[comparison-overlap]
            base = {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 30.0}
        else:
            base = dict.fromkeys(("connect", "read", "write", "pool"), default)
        for name, value in (("connect", connect), ("read", read), ("write", write), ("pool", pool)):
            if value is not ...:  # type: ignore[comparison-overlap]
                base[name] = value
        for name, value in base.items():
            _check_timeout(name, value)
            object.__setattr__(self, name, None if value is None else float(value))

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """Accept a `Timeout`, a number (all phases) or ``None`` (no timeouts)."""
        if isinstance(value, Timeout):
            return value
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return cls(value)
        raise TypeError(f"timeout must be a Timeout, a number or None, not {type(value).__name__}")


@dataclass(frozen=True)
class Limits:
    """Pool and flow-control limits.

    ``max_streams_per_connection`` caps concurrent streams below the server's
    MAX_CONCURRENT_STREAMS (``None``: the server decides). ``stream_window`` is the
    per-stream receive window, which is also the most a slow reader of a streamed
    response can have buffered; ``connection_window`` is shared by all streams of a
    connection and is large so that several fast downloads do not throttle each other.

    ``strict_max_streams`` never opens another connection because the existing ones are
    saturated: requests queue instead. ``ping_interval``: when a connection with open
    streams has received nothing for this long, a PING checks that it is alive; no ACK
    within ``ping_timeout`` closes it (its requests fail with ``ConnectionLost``, or are
    retried if never sent). ``None`` disables the health check. ``max_header_list_size``
    is advertised to servers and enforced on 1xx, final and trailer headers.

    ``stream_window`` grows, per connection, to what the link carries in a round trip
    (measured with PINGs, like gRPC's BDP estimator) up to ``max_stream_window``
    (``None``: 16 MiB, or no growth if ``stream_window`` is set below its default 2
    MiB): on a long link a stream can then deliver more than one
    ``stream_window`` per round trip. Only streams whose reader keeps up get the larger
    window: a reader slow from the start buffers at most ``stream_window``, one that
    slows down later at most ``max_stream_window``. Set
    ``max_stream_window=stream_window`` to keep windows fixed.
    """

    max_connections_per_origin: int = 8
    max_streams_per_connection: int | None = None
    keepalive_expiry: float | None = 60.0
    stream_window: int = 2 * 1024 * 1024
    connection_window: int = 32 * 1024 * 1024
    max_header_list_size: int = 64 * 1024
    strict_max_streams: bool = False
    ping_interval: float | None = 15.0
    ping_timeout: float = 10.0
    max_stream_window: int | None = None

    @property
    def stream_window_limit(self) -> int:
        """The most a stream's receive window grows to: ``max_stream_window``; by
        default 16 MiB, but a ``stream_window`` chosen below the default 2 MiB is a
        memory bound and is not grown."""
        if self.max_stream_window is not None:
            return self.max_stream_window
        if self.stream_window < 2 * 1024 * 1024:
            return self.stream_window
        return max(16 * 1024 * 1024, self.stream_window)

    def __post_init__(self) -> None:
        if self.max_connections_per_origin < 1:
            raise ValueError("max_connections_per_origin must be >= 1")
        if self.max_streams_per_connection is not None and self.max_streams_per_connection < 1:
            raise ValueError("max_streams_per_connection must be >= 1 or None")
        if not 65535 <= self.stream_window <= 2**31 - 1:
            raise ValueError("stream_window must be in [65535, 2**31-1]")
        if not 65535 <= self.connection_window <= 2**31 - 1:
            raise ValueError("connection_window must be in [65535, 2**31-1]")
        if self.max_stream_window is not None and not (
            self.stream_window <= self.max_stream_window <= 2**31 - 1
        ):
            raise ValueError("max_stream_window must be in [stream_window, 2**31-1] or None")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive or None")
        if self.ping_timeout <= 0:
            raise ValueError("ping_timeout must be positive")
        if self.keepalive_expiry is not None and self.keepalive_expiry <= 0:
            raise ValueError("keepalive_expiry must be positive or None")


# What the proxy speaks: HTTP CONNECT, or SOCKS5 with the client ("socks5") or the proxy
# ("socks5h") resolving the origin's name.
ProxyKind = Literal["http", "socks5", "socks5h"]

# scheme -> (kind, default port)
_SCHEMES: dict[str, tuple[ProxyKind, int]] = {
    "http": ("http", 80),
    "socks5": ("socks5", 1080),
    "socks5h": ("socks5h", 1080),
}


@dataclass(frozen=True)
class ProxyConfig:
    """One proxy reached over cleartext TCP that opens tunnels to origins.

    ``kind`` is ``"http"`` (asked with ``CONNECT``), ``"socks5"`` (RFC 1928; the client
    resolves the origin's name and sends the address, as curl and PySocks do) or
    ``"socks5h"`` (the proxy resolves the name). ``credentials`` is the URL's
    ``(user, password)``: ``Proxy-Authorization: Basic`` on the CONNECT, or RFC 1929
    username/password authentication with a SOCKS5 proxy. It is sent to the proxy only
    and never appears in ``repr``, logs or error messages.
    """

    host: str
    port: int
    kind: ProxyKind = "http"
    credentials: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``host:port`` for messages (never the credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_socks(self) -> bool:
        return self.kind != "http"

    @property
    def auth(self) -> bytes | None:
        """The ``Proxy-Authorization`` value for an HTTP proxy's CONNECT, if any."""
        if self.credentials is None or self.is_socks:
            return None
        cred = f"{self.credentials[0]}:{self.credentials[1]}"
        return b"Basic " + base64.b64encode(cred.encode("utf-8"))

    @classmethod
    def parse(cls, url: str) -> ProxyConfig:
        """Parse ``scheme://[user:password@]host[:port]``.

        ``http://`` (port 80 when left out), ``socks5://`` or ``socks5h://`` (port 1080).
        A URL without a scheme is taken as ``http://``, like curl does.
        """
        if not isinstance(url, str):
            raise TypeError(f"proxy must be a str URL or None, not {type(url).__name__}")
        text = url.strip()
        if "://" not in text:
            text = "http://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid proxy URL: {exc}") from None
        scheme = _SCHEMES.get(parts.scheme.lower())
        if scheme is None:
            raise ValueError(
                f"unsupported proxy scheme {parts.scheme!r}: only http:// (CONNECT), socks5://"
                " and socks5h:// proxies are supported"
            )
        host = parts.hostname
        if not host:
            raise ValueError("proxy URL has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("a proxy URL is scheme://[user:password@]host[:port], nothing more")
        kind, default_port = scheme
        credentials = None
        if parts.username is not None:
            credentials = (unquote(parts.username), unquote(parts.password or ""))
            if kind != "http" and not (
                0 < len(credentials[0].encode("utf-8")) <= 255
                and len(credentials[1].encode("utf-8")) <= 255
            ):
                # RFC 1929: one length byte each (and a user name of at least 1 byte).
                raise ValueError(
                    "a SOCKS5 proxy user name must be 1 to 255 bytes and its password at"
                    " most 255 bytes (UTF-8)"
                )
        return cls(host, port if port is not None else default_port, kind, credentials)


def local_socket_address(value: str | tuple[str, int] | None) -> tuple[str, int] | None:
    """``local_address=`` checked and made a socket address: an IP literal (names are
    refused: binding must not wait for DNS) and a port, 0 for any."""
    if value is None:
        return None
    if isinstance(value, str):
        host, port = value, 0
    elif isinstance(value, tuple) and len(value) == 2:
        host, port = value
    else:
        raise TypeError("local_address must be an IP address string or an (ip, port) tuple")
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
        raise TypeError("local_address must be an IP address string or an (ip, port) tuple")
    if host in ("", "0.0.0.0"):
        host = "0.0.0.0"
    else:
        try:
            host = str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            raise ValueError(f"local_address must be an IP address, not {host!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"local_address port out of range: {port}")
    return (host, port)


def _no_proxy_entries(value: str) -> tuple[str, ...]:
    out = []
    for raw in value.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry.startswith("[") and "]" in entry:  # [v6] or [v6]:port
            entry = entry[1 : entry.index("]")]
        elif entry.count(":") == 1:  # host:port: the port is ignored
            entry = entry.split(":", 1)[0]
        out.append(entry.lstrip("*").lstrip(".") if entry != "*" else entry)
    return tuple(e for e in out if e)


@dataclass(frozen=True)
class Proxies:
    """Which proxy, if any, each origin goes through. Decided once, at Client creation.

    ``no_proxy`` entries are host names (matching the host and its subdomains),
    IP addresses, CIDR networks, or ``*`` (no proxy at all). A proxy taken from the
    environment never applies to loopback (``localhost``, ``*.localhost``,
    127.0.0.0/8, ``::1``), like Go's ``ProxyFromEnvironment``: a machine-wide
    ``https_proxy`` must not send a program's calls to its own host through the proxy.
    An explicit ``proxy=`` applies to every host not in ``no_proxy``.
    """

    https: ProxyConfig | None = None
    http: ProxyConfig | None = None
    no_proxy: tuple[str, ...] = ()
    from_env: bool = False

    @classmethod
    def build(
        cls, proxy: str | None, trust_env: bool, environ: Mapping[str, str] | None = None
    ) -> Proxies:
        env: Mapping[str, str] = os.environ if environ is None else environ

        def get(*names: str) -> str | None:
            for name in names:
                value = env.get(name)
                if value and value.strip():
                    return value
            return None

        no_proxy = _no_proxy_entries(get("no_proxy", "NO_PROXY") or "") if trust_env else ()
        if proxy is not None:
            explicit = ProxyConfig.parse(proxy)
            return cls(explicit, explicit, no_proxy)
        if not trust_env:
            return cls()
        https = get("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
        # httpoxy: in a CGI script HTTP_PROXY may come from a request's "Proxy:" header,
        # so the upper-case name is ignored there (as urllib does).
        cgi = "REQUEST_METHOD" in env
        http = get("http_proxy", *(() if cgi else ("HTTP_PROXY",)), "all_proxy", "ALL_PROXY")
        return cls(
            ProxyConfig.parse(https) if https else None,
            ProxyConfig.parse(http) if http else None,
            no_proxy,
            from_env=True,
        )

    def for_origin(self, scheme: str, host: str) -> ProxyConfig | None:
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or self._bypass(host):
            return None
        return proxy

    def _bypass(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if self.from_env and (
            host == "localhost"
            or host.endswith(".localhost")
            or (ip is not None and ip.is_loopback)
        ):
            return True
        for entry in self.no_proxy:
            if entry == "*" or host == entry or host.endswith("." + entry):
                return True
            if ip is not None and "/" in entry:
                try:
                    if ip in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
        return False
