"""Markdown tables for the text reports (``benchmark.md``, ``report.md``, ``format_table``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], first_align: str = ":---") -> str:
    """A GitHub-flavoured Markdown table, ending with a newline: the first column aligned by
    ``first_align`` (``":---"`` left, ``"---"`` the renderer's default), the others right-aligned."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join([first_align, *["---:"] * (len(header) - 1)]) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
