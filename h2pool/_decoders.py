"""Content-Encoding decoders for response bodies; they run in the caller's thread.

A `Response` decodes as its reader pulls: every stage produces at most
the number of bytes asked for, keeping the rest of its input for the next call. A
small compressed body that inflates to gigabytes (a "decompression bomb") therefore
costs the reader memory in proportion to what it reads at a time, never to the
decoded size. The I/O thread never decodes: it only moves the encoded bytes.

Supported: ``gzip`` (also ``x-gzip``) and ``deflate`` (zlib-wrapped, or raw as some
servers send it) from the standard library; ``br`` with the ``brotli`` package
(>= 1.2, which can bound its output; extra ``h2pool[brotli]``); ``zstd`` with the
standard library's ``compression.zstd`` (Python 3.14) or its backport
``backports.zstd`` (extra ``h2pool[zstd]``). The ``zstandard`` package is not used:
its streaming decompressor cannot bound the output of one call.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import DecodingError

__all__ = ["MAX_ENCODINGS", "SUPPORTED", "ChainDecoder", "accept_encoding", "make_decoder"]

# RFC 9110 §8.4.1 allows a list; more than a handful is an attack, not a use (urllib3
# settled on 5 after CVE-2025-50182-class reports of unbounded decoder chains).
MAX_ENCODINGS = 5
# What one intermediate stage hands the next at a time in a chain.
_STEP = 64 * 1024

_brotli: Any = None
try:
    import brotli as _brotli_mod

    if hasattr(_brotli_mod.Decompressor(), "can_accept_more_data"):  # brotli >= 1.2
        _brotli = _brotli_mod
except ImportError:  # pragma: no cover - depends on the environment
    pass

_zstd: Any = None
try:
    from compression import zstd as _zstd_mod  # type: ignore[import-not-found, unused-ignore]

    _zstd = _zstd_mod
except ImportError:
    try:
        from backports import zstd as _zstd_mod  # type: ignore[import-not-found, no-redef, unused-ignore]

        _zstd = _zstd_mod
    except ImportError:  # pragma: no cover - depends on the environment
        pass


class _Stage(Protocol):
    def feed(self, data: bytes) -> None: ...
    def pull(self, limit: int) -> bytes: ...
    def finish(self) -> None: ...


class _ZlibStage:
    """gzip (possibly several members) or deflate (zlib-wrapped or raw)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._gzip = name == "gzip"
        self._obj: Any = zlib.decompressobj(31) if self._gzip else None
        self._tail = b""
        self._seen_input = False
        self._members = 0

    def feed(self, data: bytes) -> None:
        self._tail = self._tail + data if self._tail else data
        self._seen_input = True

    def pull(self, limit: int) -> bytes:
        if self._obj is None:
            # RFC 9110 §8.4.1.2 says zlib-wrapped; some servers send raw deflate. A zlib
            # header is CM=8 with (CMF*256 + FLG) divisible by 31 (RFC 1950 §2.2).
            if len(self._tail) < 2:
                return b""
            cmf, flg = self._tail[0], self._tail[1]
            wrapped = cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0
            self._obj = zlib.decompressobj(15 if wrapped else -15)
        while self._tail:
            obj = self._obj
            if obj is _DONE or (obj.eof and not self._gzip):
                self._tail = b""  # bytes after the stream: ignored (as urllib3 does)
                return b""
            if obj.eof:
                # Another gzip member (RFC 1952 §2.2 allows several).
                self._members += 1
                self._obj = obj = zlib.decompressobj(31)
            before = len(self._tail)
            try:
                out: bytes = obj.decompress(self._tail, limit)
            except zlib.error as exc:
                if self._members:
                    self._tail = b""  # garbage after a complete member: ignored
                    self._obj = _DONE
                    return b""
                raise DecodingError(f"invalid {self._name} body: {exc}") from exc
            # At the end of a stream, unused_data holds every byte after it (and
            # unconsumed_tail may repeat some of them).
            self._tail = obj.unused_data if obj.eof else obj.unconsumed_tail
            if out or (len(self._tail) >= before and not obj.eof):
                return out  # no progress without more input: wait for it
        return b""

    def finish(self) -> None:
        if self._seen_input and (self._obj is None or not self._obj.eof):
            raise DecodingError(f"truncated {self._name} body")


class _Done:
    eof = True
    unused_data = b""


_DONE: Any = _Done()


class _BrotliStage:
    def __init__(self) -> None:
        self._obj = _brotli.Decompressor()
        self._pending = b""
        self._seen_input = False

    def feed(self, data: bytes) -> None:
        self._pending = self._pending + data if self._pending else data
        self._seen_input = True

    def pull(self, limit: int) -> bytes:
        obj = self._obj
        while True:
            # brotli: once the output limit was hit, more input may be given only after
            # can_accept_more_data() says so; until then call with b"" to drain.
            if self._pending and obj.can_accept_more_data():
                data, self._pending = self._pending, b""
            elif obj.is_finished():
                self._pending = b""  # bytes after the stream: ignored
                return b""
            else:
                data = b""
            try:
                out: bytes = obj.process(data, output_buffer_limit=limit)
            except _brotli.error as exc:
                raise DecodingError(f"invalid br body: {exc}") from exc
            if out or not self._pending:
                return out

    def finish(self) -> None:
        if self._seen_input and not self._obj.is_finished():
            raise DecodingError("truncated br body")


class _ZstdStage:
    def __init__(self) -> None:
        self._obj = _zstd.ZstdDecompressor()
        self._pending = b""
        self._seen_input = False

    def feed(self, data: bytes) -> None:
        self._pending = self._pending + data if self._pending else data
        self._seen_input = True

    def pull(self, limit: int) -> bytes:
        while True:
            obj = self._obj
            if obj.eof:
                rest = obj.unused_data + self._pending
                if not rest:
                    return b""
                # RFC 8878 §3.1: a stream may hold several frames.
                self._obj = obj = _zstd.ZstdDecompressor()
                self._pending = rest
            if obj.needs_input:
                if not self._pending:
                    return b""
                data, self._pending = self._pending, b""
            else:
                data = b""
            try:
                out: bytes = obj.decompress(data, limit)
            except (_zstd.ZstdError, EOFError) as exc:
                raise DecodingError(f"invalid zstd body: {exc}") from exc
            if out or (obj.needs_input and not self._pending and not obj.eof):
                return out

    def finish(self) -> None:
        if self._seen_input and not self._obj.eof:
            raise DecodingError("truncated zstd body")


_FACTORIES: dict[str, Callable[[], _Stage]] = {
    "gzip": lambda: _ZlibStage("gzip"),
    "x-gzip": lambda: _ZlibStage("gzip"),
    "deflate": lambda: _ZlibStage("deflate"),
}
if _brotli is not None:
    _FACTORIES["br"] = _BrotliStage
if _zstd is not None:
    _FACTORIES["zstd"] = _ZstdStage

SUPPORTED: tuple[str, ...] = tuple(n for n in ("gzip", "deflate", "br", "zstd") if n in _FACTORIES)


def accept_encoding() -> bytes:
    """The default ``Accept-Encoding``: only what this process can decode."""
    return ", ".join(SUPPORTED).encode()


class ChainDecoder:
    """Undo a list of content codings, last applied first (RFC 9110 §8.4)."""

    def __init__(self, stages: list[_Stage]) -> None:
        self._stages = stages

    def feed(self, data: bytes) -> None:
        self._stages[0].feed(data)

    def pull(self, limit: int) -> bytes:
        """At most about ``limit`` decoded bytes; ``b""`` when more input is needed."""
        return self._pull(len(self._stages) - 1, limit)

    def _pull(self, i: int, limit: int) -> bytes:
        stage = self._stages[i]
        while True:
            out = stage.pull(limit)
            if out or i == 0:
                return out
            more = self._pull(i - 1, _STEP)
            if not more:
                return b""
            stage.feed(more)

    def finish(self) -> None:
        """Raise `DecodingError` if any stage's stream was cut short."""
        for stage in self._stages:
            stage.finish()


def make_decoder(header_values: list[str]) -> ChainDecoder | None:
    """A decoder for the ``Content-Encoding`` field values, or None to pass bytes through.

    Raises `DecodingError` for more than `MAX_ENCODINGS` codings. A coding
    this process cannot decode means the body is handed back as received (like httpx
    and requests): the caller can still see ``Content-Encoding`` and decode it.
    """
    if not header_values:
        return None  # the usual case: no Content-Encoding at all
    names = [token.strip().lower() for value in header_values for token in value.split(",")]
    names = [n for n in names if n and n != "identity"]
    if not names:
        return None
    if len(names) > MAX_ENCODINGS:
        raise DecodingError(
            f"{len(names)} content codings ({', '.join(names[:8])}...); "
            f"h2pool decodes at most {MAX_ENCODINGS}"
        )
    if any(n not in _FACTORIES for n in names):
        return None
    return ChainDecoder([_FACTORIES[n]() for n in reversed(names)])
