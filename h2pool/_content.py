"""What the everyday arguments put into a request: query parameters, JSON, form and
multipart bodies, cookies.

Runs in the caller's thread, before anything is queued, so bad input raises in the
caller's own stack. A multipart body is a file-like object read part by part by the
thread that pumps request bodies (the caller's, or a pump thread for ``submit``):
file contents go to the socket as they are read, never whole into memory.
"""

from __future__ import annotations

import io
import json as _json
import mimetypes
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Union
from urllib.parse import quote_plus

from ._errors import InvalidHeader

__all__ = [
    "DataTypes",
    "FileTypes",
    "FilesTypes",
    "Multipart",
    "ParamTypes",
    "append_params",
    "cookie_header",
    "encode_form",
    "encode_json",
    "multipart",
]

_Scalar = Union[str, bytes, int, float, bool, None]
#: ``params=`` and ``data=``: a mapping of name to a value or a list of values, or pairs.
ParamTypes = Union[Mapping[str, Union[_Scalar, Sequence[_Scalar]]], Sequence[tuple[str, _Scalar]]]
DataTypes = ParamTypes
#: One ``files=`` value: a binary file, bytes, or (filename, file_or_bytes[, content_type]).
FileTypes = Union[
    IO[bytes],
    bytes,
    tuple[Union[str, None], Union[IO[bytes], bytes]],
    tuple[Union[str, None], Union[IO[bytes], bytes], Union[str, None]],
]
FilesTypes = Union[Mapping[str, FileTypes], Sequence[tuple[str, FileTypes]]]


def _text(value: object, what: str, name: str) -> str | bytes | None:
    # bool before int (bool is an int): lower-case like JSON, as httpx does.
    if value is None or isinstance(value, (str, bytes)):
        return value
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise TypeError(
        f"{what} value for {name!r} must be str, bytes, int, float or bool "
        f"(or a list of them), not {type(value).__name__}"
    )


def _quote(value: str | bytes) -> str:
    # Most names and values are plain ASCII words or numbers: skip quote_plus for them
    # (it is most of the cost of params=, measured ~6 us for two parameters).
    if isinstance(value, str) and value.isascii() and value.isalnum():
        return value
    return quote_plus(value)


def _urlencode(value: object, what: str) -> str:
    """``urllib.parse.urlencode(value, doseq=True)``'s encoding (quote_plus, UTF-8) of a
    mapping or a list of pairs; lists repeat the name, None leaves the name out (as
    requests does, so ``{"page": page or None}`` can omit a parameter)."""
    items: Iterable[Any]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise TypeError(
            f"{what} must be a dict or a list of (name, value) pairs, not {type(value).__name__}"
        )
    out: list[str] = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"{what} pairs must be (name, value), got {item!r}")
        name, v = item
        if type(name) is not str:
            raise TypeError(f"{what} names must be str, not {type(name).__name__}")
        qname = _quote(name)
        if isinstance(v, (list, tuple)):
            for one in v:
                t = _text(one, what, name)
                if t is not None:
                    out.append(f"{qname}={_quote(t)}")
        else:
            t = _text(v, what, name)
            if t is not None:
                out.append(f"{qname}={_quote(t)}")
    return "&".join(out)


def _pairs(value: object, what: str) -> list[tuple[str, str | bytes]]:
    """The (name, value) pairs of a mapping or list, as `_urlencode` reads them."""
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value  # type: ignore[assignment]
    _urlencode(value, what)  # the same checks, the same errors
    out: list[tuple[str, str | bytes]] = []
    for name, v in items:
        for one in v if isinstance(v, (list, tuple)) else (v,):
            t = _text(one, what, name)
            if t is not None:
                out.append((name, t))
    return out


def append_params(url: str, params: ParamTypes) -> str:
    """``url`` with ``params`` appended to its query (before any fragment)."""
    query = _urlencode(params, "params=")
    if not query:
        return url
    if not isinstance(url, str):
        return url  # parse_url reports the bad URL
    base, hash_, fragment = url.partition("#")
    if "?" not in base:
        base += "?"
    elif not base.endswith(("?", "&")):
        base += "&"
    return f"{base}{query}{hash_}{fragment}"


def encode_form(data: DataTypes) -> bytes:
    """An ``application/x-www-form-urlencoded`` body."""
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            "data= takes a dict or a list of (name, value) pairs; pass a raw body as body="
        )
    return _urlencode(data, "data=").encode("ascii")


def encode_json(value: object) -> bytes:
    """Compact UTF-8 JSON. NaN and infinities are refused: they are not JSON (RFC 8259)
    and most servers reject them."""
    try:
        return _json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"json= value cannot be serialised: {exc}") from exc


_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 6265 §4.1.1 cookie-octet, plus space (widely sent and accepted); never ; or CTLs.
_COOKIE_VALUE = re.compile(r'[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e"]*\Z')


def cookie_header(cookies: Mapping[str, str]) -> bytes:
    """One ``Cookie`` value for this request (RFC 6265 §5.4: one header field)."""
    if not isinstance(cookies, Mapping):
        raise TypeError(f"cookies= must be a dict of name to value, not {type(cookies).__name__}")
    parts = []
    for name, value in cookies.items():
        if not isinstance(name, str) or not _COOKIE_NAME.match(name):
            raise InvalidHeader(f"invalid cookie name {name!r}")
        if not isinstance(value, str) or not _COOKIE_VALUE.match(value):
            raise InvalidHeader(
                f"invalid value for cookie {name!r}: a str without ';', ',', '\\\\' or "
                "control characters"
            )
        parts.append(f"{name}={value}")
    return "; ".join(parts).encode("ascii")


# -- multipart/form-data (RFC 7578) ------------------------------------------------------
def _escape(name: str) -> bytes:
    # The WHATWG HTML form encoding browsers use for names and filenames.
    return name.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22").encode("utf-8")


_OS_FILES = (io.FileIO, io.BufferedReader, io.BufferedRandom)


def _file_size(f: Any) -> int | None:
    # The descriptor's size only for plain files: bz2/lzma/gzip file objects answer
    # fileno() with the compressed file's descriptor, whose size is not what they read.
    if isinstance(f, _OS_FILES):
        try:
            return int(os.fstat(f.fileno()).st_size - f.tell())
        except (AttributeError, OSError, ValueError):
            pass
    try:
        if f.seekable():
            here = f.tell()
            end = f.seek(0, io.SEEK_END)
            f.seek(here)
            return int(end - here)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _start(f: Any) -> int | None:
    try:
        if f.seekable():
            return int(f.tell())
    except (AttributeError, OSError, ValueError):
        pass
    return None


class _FilePart:
    __slots__ = ("file", "size", "start")

    def __init__(self, file: Any) -> None:
        mode = getattr(file, "mode", "b")  # an int on GzipFile
        if isinstance(file, io.TextIOBase) or (isinstance(mode, str) and "b" not in mode):
            raise TypeError("files= needs files opened in binary mode ('rb')")
        self.file = file
        self.size = _file_size(file)
        self.start = _start(file)


class Multipart:
    """A ``multipart/form-data`` body, read like a file: form fields and part headers
    are small bytes made up front; file contents are read when the upload reaches them.

    ``length`` is known when every file can tell its size, so the request carries a
    ``Content-Length``. The body can be sent again (a retry, a 307/308 redirect) when
    every file is seekable: ``seek(0)`` rewinds each file to where it started.
    """

    def __init__(self, segments: list[bytes | _FilePart], boundary: str) -> None:
        self._segments = segments
        self.boundary = boundary
        self.content_type = f"multipart/form-data; boundary={boundary}"
        sizes = [len(s) if isinstance(s, bytes) else s.size for s in segments]
        self.length: int | None = None if None in sizes else sum(s or 0 for s in sizes)
        self._index = 0
        self._offset = 0  # into the current bytes segment
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        out: list[bytes] = []
        want = size if size is not None and size >= 0 else None
        got = 0
        while self._index < len(self._segments) and (want is None or got < want):
            seg = self._segments[self._index]
            room = None if want is None else want - got
            if isinstance(seg, bytes):
                end = len(seg) if room is None else min(len(seg), self._offset + room)
                chunk = seg[self._offset : end]
                self._offset = end
                if end >= len(seg):
                    self._index, self._offset = self._index + 1, 0
            else:
                chunk = seg.file.read(-1 if room is None else room)
                if isinstance(chunk, str):
                    raise TypeError("files= needs files opened in binary mode ('rb')")
                if not chunk:
                    self._index += 1
                    continue
                chunk = bytes(chunk)
            out.append(chunk)
            got += len(chunk)
        self._pos += got
        return b"".join(out)

    def seekable(self) -> bool:
        return all(isinstance(s, bytes) or s.start is not None for s in self._segments)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Rewind to the start (the only position a replay needs)."""
        if whence == io.SEEK_SET and offset == self._pos:
            return self._pos
        if whence != io.SEEK_SET or offset != 0 or not self.seekable():
            raise io.UnsupportedOperation("a multipart body can only be rewound to its start")
        for seg in self._segments:
            if isinstance(seg, _FilePart):
                seg.file.seek(seg.start)
        self._index = self._offset = self._pos = 0
        return 0

    def __repr__(self) -> str:
        return f"<h2pool multipart body, {self.length} bytes>"


def _file_value(name: str, value: object) -> tuple[str | None, bytes | _FilePart, str]:
    filename: str | None
    ctype: str | None = None
    if isinstance(value, tuple):
        if len(value) not in (2, 3):
            raise TypeError(
                f"files= value for {name!r} must be (filename, file_or_bytes[, content_type])"
            )
        filename, content = value[0], value[1]
        if len(value) == 3:
            ctype = value[2]
        if filename is not None and not isinstance(filename, str):
            raise TypeError(f"files= filename for {name!r} must be str or None")
        if ctype is not None and not isinstance(ctype, str):
            raise TypeError(f"files= content type for {name!r} must be str or None")
    else:
        content = value
        fname = getattr(value, "name", None)
        filename = os.path.basename(fname) if isinstance(fname, str) else name
    part: bytes | _FilePart
    if isinstance(content, (bytes, bytearray, memoryview)):
        part = bytes(content)
    elif isinstance(content, str):
        part = content.encode("utf-8")
    elif callable(getattr(content, "read", None)):
        part = _FilePart(content)
    else:
        raise TypeError(
            f"files= value for {name!r} must be a binary file, bytes, or a "
            f"(filename, file_or_bytes[, content_type]) tuple, not {type(content).__name__}"
        )
    if ctype is None:
        ctype = (mimetypes.guess_type(filename)[0] if filename else None) or (
            "application/octet-stream"
        )
    if re.search(r"[\x00-\x1f\x7f]", ctype):
        raise InvalidHeader(f"files= content type for {name!r} contains a control character")
    return filename, part, ctype


def multipart(data: DataTypes | None, files: FilesTypes) -> Multipart:
    """The multipart body for ``data=`` fields followed by ``files=`` parts."""
    boundary = os.urandom(16).hex()
    dash = f"--{boundary}\r\n".encode("ascii")
    segments: list[bytes | _FilePart] = []
    for name, value in _pairs(data, "data=") if data is not None else []:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        segments.append(
            dash + b'Content-Disposition: form-data; name="' + _escape(name) + b'"\r\n\r\n' + raw
        )
        segments.append(b"\r\n")
    if isinstance(files, Mapping):
        items: Iterable[Any] = files.items()
    elif isinstance(files, (list, tuple)):
        items = files
    else:
        raise TypeError(
            f"files= must be a dict or a list of (name, file) pairs, not {type(files).__name__}"
        )
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str):
            raise TypeError(f"files= entries must be (name, file) with a str name, got {item!r}")
        name, value = item
        filename, part, ctype = _file_value(name, value)
        head = dash + b'Content-Disposition: form-data; name="' + _escape(name) + b'"'
        if filename is not None:
            head += b'; filename="' + _escape(filename) + b'"'
        head += b"\r\nContent-Type: " + ctype.encode("utf-8") + b"\r\n\r\n"
        segments += [head, part, b"\r\n"]
    segments.append(f"--{boundary}--\r\n".encode("ascii"))
    return Multipart(segments, boundary)
