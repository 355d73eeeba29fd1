"""The package version, in a module of its own so that ``h2pool`` and its submodules
can both import it without importing each other (keep it equal to pyproject's)."""

from __future__ import annotations

__version__ = "0.1.0"
