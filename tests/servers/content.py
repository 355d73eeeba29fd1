"""The static content tree served by nginx and nghttpd, generated per session.

Bytes are deterministic (seeded) so a failure reproduces; the 100 MiB file is
one 1 MiB random block repeated, which writes in well under a second.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
HELLO = b"Hello, world!"


@dataclass
class Content:
    root: Path
    sha256: dict[str, str] = field(default_factory=dict)  # "/1m" -> hex digest
    size: dict[str, int] = field(default_factory=dict)  # "/1m" -> length
    data: dict[str, bytes] = field(default_factory=dict)  # only the small files


def make_content(root: Path, seed: int = 20240613) -> Content:
    root.mkdir(parents=True, exist_ok=True)
    content = Content(root)
    rng = random.Random(seed)

    def put(name: str, blob: bytes, keep: bool) -> None:
        (root / name).write_bytes(blob)
        path = "/" + name
        content.sha256[path] = hashlib.sha256(blob).hexdigest()
        content.size[path] = len(blob)
        if keep:
            content.data[path] = blob

    put("13b", HELLO, keep=True)
    put("1m", rng.randbytes(MIB), keep=True)
    put("index.html", b"<html><body>h2pool test server</body></html>\n", keep=True)
    put("data.json", b'{"name": "h2pool", "numbers": [1, 2, 3], "ok": true}\n', keep=True)

    block = rng.randbytes(MIB)
    digest = hashlib.sha256()
    with (root / "100m").open("wb") as f:
        for _ in range(100):
            f.write(block)
            digest.update(block)
    content.sha256["/100m"] = digest.hexdigest()
    content.size["/100m"] = 100 * MIB
    return content
