"""Headers: the case-insensitive multi-dict users see, and request-header validation.

Validation runs in the caller's thread, before a request is queued, so that h2's own
outbound validation and normalisation can be switched off on the I/O thread (they cost
about a fifth of h2's per-request time) and so that a bad header is an exception where
the user can see it, never bytes on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Union

from ._errors import InvalidHeader

__all__ = ["HeaderTypes", "Headers"]

_Str = Union[str, bytes]
HeaderTypes = Union["Headers", Mapping[_Str, _Str], Iterable[tuple[_Str, _Str]]]

# RFC 9110 §5.6.2 token, checked after lower-casing (RFC 9113 §8.2: names are lowercase).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
# RFC 9110 §5.5: a field value is VCHAR / obs-text / SP / HTAB; every other control
# character (CR, LF and NUL among them) is refused. RFC 9113 §8.2.1 forbids these too.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# RFC 9113 §8.2.2: connection-specific fields must not appear in HTTP/2. Users bring
# them from HTTP/1.1 habits (http.client, requests), so they are dropped, not refused.
_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)

# Names seen before are valid and already lower-cased; most programs send the same few.
_name_cache: dict[_Str, bytes] = {}
_NAME_CACHE_MAX = 512


def _to_bytes(value: _Str, what: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("latin-1") if value.isascii() else value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise InvalidHeader(f"header {what} {value!r} cannot be encoded") from exc
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidHeader(f"header {what} must be str or bytes, not {type(value).__name__}")


def normalize_name(name: _Str) -> bytes:
    """Lower-case and validate one header name; raises `InvalidHeader`."""
    cached = _name_cache.get(name)
    if cached is not None:
        return cached
    raw = _to_bytes(name, "name").lower()
    if not raw:
        raise InvalidHeader("header name must not be empty")
    if not _TOKEN.match(raw):
        if raw.startswith(b":"):
            raise InvalidHeader(f"pseudo-header {name!r} cannot be set by the caller")
        raise InvalidHeader(f"invalid header name {name!r}")
    if len(_name_cache) < _NAME_CACHE_MAX:
        _name_cache[name] = raw
    return raw


def normalize_value(value: _Str, name: bytes) -> bytes:
    """Validate one header value; surrounding whitespace is trimmed (RFC 9110 §5.5)."""
    raw = _to_bytes(value, "value")
    if _BAD_VALUE.search(raw):
        raise InvalidHeader(f"header {name.decode()!r} has a control character (CR, LF or NUL)")
    if raw[:1] in (b" ", b"\t") or raw[-1:] in (b" ", b"\t"):
        raw = raw.strip(b" \t")
    return raw


def _iter_pairs(headers: HeaderTypes) -> Iterable[tuple[_Str, _Str]]:
    if isinstance(headers, Headers):
        return headers.items()
    if isinstance(headers, Mapping):
        return headers.items()
    return headers


def normalize_headers(headers: HeaderTypes | None) -> list[tuple[bytes, bytes]]:
    """Validate request headers into lower-cased bytes pairs ready for HPACK.

    Connection-specific headers are dropped, ``TE`` is kept only as ``trailers``.
    ``Host`` is kept here; the request builder moves it to ``:authority``.
    """
    if headers is None:
        return []
    out: list[tuple[bytes, bytes]] = []
    try:
        pairs = list(_iter_pairs(headers))
    except (TypeError, ValueError) as exc:
        raise InvalidHeader("headers must be a mapping or an iterable of pairs") from exc
    for pair in pairs:
        try:
            name, value = pair
        except (TypeError, ValueError) as exc:
            raise InvalidHeader(f"header entry {pair!r} is not a (name, value) pair") from exc
        n = normalize_name(name)
        v = normalize_value(value, n)
        if n in _CONNECTION_SPECIFIC:
            continue
        if n == b"te" and v.lower() != b"trailers":
            continue
        out.append((n, v))
    return out


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


class Headers(MutableMapping[str, str]):
    """A case-insensitive multi-dict of HTTP headers, order preserved.

    ``h[name]`` joins repeated fields with ``", "`` (RFC 9110 §5.3); ``get_all`` gives
    each value; iterating yields each distinct (lower-cased) name once; ``items()``
    yields every pair in order.

    >>> h = Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2")])
    >>> h["SET-COOKIE"], h.get_all("set-cookie")
    ('a=1, b=2', ['a=1', 'b=2'])
    """

    __slots__ = ("_items", "_raw", "_wire")

    def __init__(self, headers: HeaderTypes | None = None) -> None:
        self._raw: list[tuple[bytes, bytes]] | None = None
        self._wire: list[tuple[bytes, bytes]] | None = None
        self._items: list[tuple[str, str]] = []
        if headers is not None:
            for name, value in _iter_pairs(headers):
                self._items.append(
                    (
                        name.decode("latin-1") if isinstance(name, bytes) else str(name),
                        value.decode("latin-1") if isinstance(value, bytes) else str(value),
                    )
                )

    @classmethod
    def _from_raw(cls, raw: list[tuple[bytes, bytes]]) -> Headers:
        """Wrap bytes pairs from h2 without decoding: decoding happens on first access,
        in the caller's thread rather than on the I/O thread."""
        h = cls.__new__(cls)
        h._raw = h._wire = raw
        h._items = []
        return h

    def _latin1(self) -> list[tuple[str, str]]:
        """The pairs as http.client decodes them (ISO-8859-1, byte for byte), for the
        stdlib-shaped layers; the received bytes while nothing has changed them."""
        wire = self._wire
        if wire is None:
            return list(self._list())
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in wire]

    def _list(self) -> list[tuple[str, str]]:
        raw = self._raw
        if raw is not None:
            self._items = [(_decode(n), _decode(v)) for n, v in raw]
            self._raw = None
        return self._items

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return values[0] if len(values) == 1 else ", ".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        key = name.lower()
        items = [(n, v) for n, v in self._list() if n.lower() != key]
        items.append((name, value))
        self._items = items
        self._wire = None

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        items = self._list()
        kept = [(n, v) for n, v in items if n.lower() != key]
        if len(kept) == len(items):
            raise KeyError(name)
        self._items = kept
        self._wire = None

    def add(self, name: str, value: str) -> None:
        """Append a value without replacing existing ones."""
        self._list().append((name, value))
        self._wire = None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order; an empty list if absent."""
        key = name.lower()
        raw = self._raw
        if raw is not None and key.isascii():
            # Received and not decoded yet (a response's own lookups, Content-Encoding
            # first, come here): compare bytes and decode only the values that match.
            # h2 and h11 hand over validated names, ASCII tokens, so this is the same
            # comparison as on the decoded names, without decoding every field.
            bkey = key.encode()
            return [_decode(v) for n, v in raw if n.lower() == bkey]
        return [v for n, v in self._list() if n.lower() == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(n.lower() == key for n, _ in self._list())

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for n, _ in self._list():
            seen.setdefault(n.lower())
        return iter(seen)

    def __len__(self) -> int:
        return len({n.lower() for n, _ in self._list()})

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        """Every (name, value) pair in order, repeated names included."""
        return list(self._list())

    def multi_items(self) -> list[tuple[str, str]]:
        """Alias of `items`, for code written against httpx."""
        return self.items()

    def copy(self) -> Headers:
        return Headers(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            a, b = self._list(), other._list()
        elif isinstance(other, Mapping):
            a, b = self._list(), [(str(k), str(v)) for k, v in other.items()]
        else:
            return NotImplemented
        return sorted((n.lower(), v) for n, v in a) == sorted((n.lower(), v) for n, v in b)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._list()!r})"
