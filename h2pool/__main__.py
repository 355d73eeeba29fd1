"""``python -m h2pool URL ...`` (a small curl, see `h2pool._cli`) and
``python -m h2pool demo`` (see `h2pool._demo`)."""

from __future__ import annotations

import sys

from ._cli import exit_code, run_from_command_line

__all__ = ["exit_code", "main"]


def main(argv: list[str] | None = None) -> int:
    """The console script ``h2pool``."""
    return run_from_command_line(argv)


if __name__ == "__main__":
    sys.exit(main())
