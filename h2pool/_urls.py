"""URL parsing and validation, in the caller's thread.

Only ``http`` and ``https`` are accepted; anything that could put CR, LF or other
control characters on the wire (or a space in the request target) is refused here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import urlsplit

from ._errors import InvalidURL

__all__ = ["URL", "parse_url"]

_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters a request target may carry unchanged: RFC 3986 unreserved, reserved,
# and "%". Others (non-ASCII, `"<>\^{|}` and the backtick) are percent-encoded.
_PATH_SAFE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*\Z")


class URL(NamedTuple):
    """A validated absolute URL; ``origin`` keys the pool."""

    scheme: str
    host: str
    port: int
    target: bytes  # path + query, what goes into :path
    authority: bytes  # host[:port] as sent in :authority
    url: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def _quote_target(target: str) -> str:
    if _PATH_SAFE.match(target):
        return target
    from urllib.parse import quote

    return quote(target, safe="-._~:/?#[]@!$&'()*+,;=%")


def _redact(url: object) -> object:
    """The URL for an error message, with any userinfo (a password) masked."""
    if isinstance(url, str) and "@" in url:
        return re.sub(r"(?<=//)[^/@]*@", "***@", url)
    return url


_cache: dict[str, URL] = {}
_CACHE_MAX = 1024


def parse_url(url: str) -> URL:
    """Split and validate ``url``; raises `InvalidURL`.

    Results are cached (URLs repeat; a parse costs ~13 us of the caller's thread).
    """
    if isinstance(url, str):
        cached = _cache.get(url)
        if cached is not None:
            return cached
    parsed = _parse_url(url)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[parsed.url] = parsed
    return parsed


def _parse_url(url: str) -> URL:
    if isinstance(url, bytes):
        try:
            url = url.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidURL(f"URL bytes are not ASCII: {_redact(url)!r}") from exc
    if not isinstance(url, str):
        raise InvalidURL(f"URL must be str, not {type(url).__name__}")
    if _FORBIDDEN.search(url):
        raise InvalidURL(f"URL contains a space or control character: {_redact(url)!r}")
    if "\\" in url:
        raise InvalidURL(f"URL contains a backslash: {_redact(url)!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL {_redact(url)!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURL(
            f"relative URL {_redact(url)!r}: give an absolute http:// or https:// URL, "
            "or create the Client with base_url="
        )
    if scheme not in _DEFAULT_PORTS:
        raise InvalidURL(
            f"unsupported URL scheme {parts.scheme!r} in {_redact(url)!r} (use http or https)"
        )
    host = parts.hostname
    if not host:
        raise InvalidURL(f"URL has no host: {_redact(url)!r}")
    if port == 0:
        raise InvalidURL(f"URL port 0 is not valid: {_redact(url)!r}")
    if "@" in parts.netloc:
        raise InvalidURL(f"credentials in the URL are not supported: {_redact(url)!r}")
    netloc_host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if netloc_host.endswith("]") or ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError as exc:
            raise InvalidURL(f"invalid IPv6 host in {_redact(url)!r}") from exc
        host_for_authority = f"[{host}]"
    else:
        try:
            host = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError as exc:
            raise InvalidURL(f"invalid host name in {_redact(url)!r}") from exc
        if not re.match(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+\Z", host):
            raise InvalidURL(f"invalid host name {host!r} in {_redact(url)!r}")
        host_for_authority = host
    default = _DEFAULT_PORTS[scheme]
    real_port = port if port is not None else default
    authority = host_for_authority if real_port == default else f"{host_for_authority}:{real_port}"
    target = parts.path or "/"
    if not target.startswith("/"):
        target = "/" + target
    if parts.query:
        target = f"{target}?{parts.query}"
    target = _quote_target(target)
    return URL(scheme, host, real_port, target.encode("ascii"), authority.encode("ascii"), url)
