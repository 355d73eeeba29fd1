"""Doctest examples in docstrings render as Python console code in the API reference.

The docstrings are Markdown (mkdocstrings' ``docstring_style: null``), and in Markdown a
``>>>`` line opens a block quote three levels deep: an example would show as one run-on
quoted paragraph. This Griffe extension, loaded by mkdocs.yml through the python
handler's ``extensions`` option, rewrites every paragraph that starts with ``>>>`` into a
fenced ``pycon`` block before the docstring is rendered, and drops ``# doctest:``
directives, which tell doctest what to skip and mean nothing to a reader. Text already
inside a fenced block is left as it is.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(text: str) -> str:
    """``text`` with each doctest paragraph (``>>>`` up to a blank line) fenced."""
    lines = text.split("\n")
    out: list[str] = []
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
        elif m := _FENCE.match(line):
            fence = m.group(1)
        elif stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            if out and out[-1].strip():
                out.append("")
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                example = lines[i]
                if example.startswith(indent):
                    example = example[len(indent) :]
                out.append(indent + _DIRECTIVE.sub("", example.rstrip()))
                i += 1
            out.append(f"{indent}```")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctest paragraphs of every loaded docstring."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
