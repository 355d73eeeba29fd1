"""HPACK with memoised header blocks. I/O thread only (each object belongs to one h2
connection).

Encoding or decoding a header block is a pure function of the block and the dynamic
table. Most traffic repeats itself: a client sends the same request headers to the same
origin, and a server answers with the same response headers (only ``date`` changes,
once a second). Once a block has been encoded or decoded *without changing the table*,
the same input gives the same output for as long as the table stays unchanged. The
classes below keep those results in a small dict that is emptied whenever the table
changes (an entry added or evicted, a size change). Measured with
``stress/bench.py``: hpack's Huffman coding was ~30% of the I/O thread's time on small
GETs; see docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.table import HeaderTable, table_entry_size

__all__ = ["CachingDecoder", "CachingEncoder", "HeaderListTooLarge"]

_MAX_ENTRIES = 64  # per connection and direction
_MAX_BLOCK = 2048  # bytes of encoded block worth remembering
_NEVER = object()  # marks a never-indexed field in a cache key


def _key_with_sensitive(fields: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A cache key for a block holding never-indexed fields (Authorization, Cookie):
    each such field keyed as (name, value, _NEVER), so it can never match the plain
    field it compares equal to. None for any other tuple subclass."""
    out = []
    for h in fields:
        if type(h) is tuple:
            out.append(h)
        elif type(h) is NeverIndexedHeaderTuple:
            out.append((h[0], h[1], _NEVER))
        else:
            return None
    return tuple(out)


class _Table(HeaderTable):
    """hpack's table plus a counter bumped on every change to its contents or size."""

    generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        # An entry larger than the table empties it: no change if it is empty already.
        # nginx sets its table size to 0 and still sends "incremental indexing" fields.
        if self.dynamic_entries or table_entry_size(name, value) <= self._maxsize:
            self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class CachingEncoder(Encoder):
    header_table: _Table

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _Table()
        self._cache: dict[tuple[Any, ...], bytes] = {}
        self._generation = 0

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        key: tuple[Any, ...] | None = None
        # hpack's NeverIndexedHeaderTuple compares equal to a plain tuple but must be
        # encoded differently, so blocks holding one get keys that mark it (a request
        # with a fixed bearer token or cookie is cached too; never-indexed fields never
        # change the table). A pending size change must be sent.
        if huffman and not table.resized and type(headers) is list:
            key = tuple(headers)
            for h in key:
                if type(h) is not tuple:
                    key = _key_with_sensitive(key)
                    break
        if key is not None:
            if table.generation == self._generation:
                hit = self._cache.get(key)
                if hit is not None:
                    return hit
            else:
                self._cache.clear()
                self._generation = table.generation
        before = table.generation
        block: bytes = super().encode(headers, huffman)
        if key is not None and table.generation == before and len(block) <= _MAX_BLOCK:
            cache = self._cache
            if len(cache) >= _MAX_ENTRIES:
                cache.clear()
            cache[key] = block
        return block


# A block is decoded in full up to this many times our limit, so that a header list
# over the limit costs one stream, not the connection (the dynamic table stays in step
# with the server's); beyond it decoding stops at once: an HPACK bomb (16 KiB inflating
# to 64 MB, CVE-2016-6581) is a connection error, and memory stays bounded.
_FULL_DECODE_FACTOR = 16
_FULL_DECODE_CAP = 1024 * 1024


class HeaderListTooLarge(Exception):
    """A header block decoded in full, the HPACK state intact, to a list over our
    SETTINGS_MAX_HEADER_LIST_SIZE: an error of that stream only. Deliberately not an
    hpack or h2 exception, so h2's own handling leaves it to ``protocol._H2``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a header list of {size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


class CachingDecoder(Decoder):
    header_table: _Table

    def __init__(self, max_header_list_size: int) -> None:
        self.limit = max_header_list_size
        super().__init__(max_header_list_size)
        self.header_table = _Table()
        self.max_allowed_table_size = self.header_table.maxsize
        # block -> (inflated size, headers); valid while the table generation is _generation
        self._cache: dict[bytes, tuple[int, tuple[Any, ...]]] = {}
        self._generation = 0

    @property
    def max_header_list_size(self) -> int:
        """What hpack's decoding loop stops at (a bomb): 16 times ``limit``, at most
        1 MiB (or ``limit`` itself, when it was raised beyond that)."""
        return max(self.limit, min(self.limit * _FULL_DECODE_FACTOR, _FULL_DECODE_CAP))

    @max_header_list_size.setter
    def max_header_list_size(self, value: int) -> None:
        # hpack's __init__ and h2 (when a changed local setting is acknowledged) set
        # the limit through this name.
        self.limit = value

    def decode(self, data: Any, raw: bool = False) -> Iterable[Any]:
        table = self.header_table
        # A block opening with a table size update is decoded in full (it is checked
        # against max_allowed_table_size), and so is anything large.
        cacheable = raw and 0 < len(data) <= _MAX_BLOCK and data[0] & 0xE0 != 0x20
        if cacheable:
            key = bytes(data)
            if table.generation == self._generation:
                hit = self._cache.get(key)
                if hit is not None:
                    self._assert_valid_table_size()
                    if hit[0] > self.limit:
                        raise HeaderListTooLarge(hit[0], self.limit)
                    return list(hit[1])
            else:
                self._cache.clear()
                self._generation = table.generation
        before = table.generation
        headers = super().decode(data, raw)
        assert isinstance(headers, list)
        # RFC 9113 §6.5.2 counts name + value + 32 per field. Checked after the whole
        # block is decoded, so the dynamic table stays in step (see HeaderListTooLarge).
        size = sum(table_entry_size(n, v) for n, v in headers)
        if cacheable and table.generation == before:
            cache = self._cache
            if len(cache) >= _MAX_ENTRIES:
                cache.clear()
            cache[key] = (size, tuple(headers))
        if size > self.limit:
            raise HeaderListTooLarge(size, self.limit)
        return headers
