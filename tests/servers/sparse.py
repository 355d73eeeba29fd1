"""Large generated files for the docroot: sparse, so a GiB costs no disk and no time.

A file of zeros alone would hide a client that drops, repeats or reorders whole
frames (every 16 KiB frame looks the same), so each 64 KiB block starts with a
16-byte marker naming its offset; the rest stays a hole. Creating a 1 GiB file is
``truncate`` plus 16384 small writes; its sha256 is computed from the same
pattern in memory (no read-back), at about 1.4 GB/s.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 64 * 1024
_ZEROS = bytes(BLOCK)


def marker(offset: int) -> bytes:
    return b"@%014x\n" % offset  # 16 bytes


def block_at(offset: int, length: int = BLOCK) -> bytes:
    """The first ``length`` bytes of the block starting at ``offset``."""
    return (marker(offset) + _ZEROS[16:])[:length]


def write_sparse(path: Path, size: int) -> str:
    """Create ``path`` (``size`` bytes, markers every 64 KiB) and return its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        f.truncate(size)
        fd = f.fileno()
        for offset in range(0, size, BLOCK):
            length = min(BLOCK, size - offset)
            block = block_at(offset, length)
            os.pwrite(fd, block[:16], offset)
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SparseFiles:
    root: Path
    sha256: dict[str, str] = field(default_factory=dict)  # "/1g" -> hex digest
    size: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, size: int) -> None:
        self.sha256["/" + name] = write_sparse(self.root / name, size)
        self.size["/" + name] = size

    def remove(self) -> None:
        for path in self.size:
            (self.root / path.lstrip("/")).unlink(missing_ok=True)
