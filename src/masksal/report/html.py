"""A small, self-contained HTML report: headings, tables, figure grids (images inline)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from masksal.report.images import data_uri

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.grid { display: grid; gap: 6px; align-items: start; }
.cell { text-align: center; font-size: 0.75em; }
.cell img { display: block; image-rendering: pixelated; width: 100%; }
.note { color: #555; font-size: 0.9em; }
"""


class Report:
    """Builds an HTML page piece by piece; ``write(path)`` saves it atomically."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        def fmt(v: Any) -> str:
            return f"{v:.2f}" if isinstance(v, float) else html.escape(str(v))

        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def grid(self, cells: Sequence[tuple[np.ndarray, str]], columns: int, cell_px: int = 128) -> None:
        """Images in a grid of ``columns`` columns, each with a caption."""
        items = "".join(
            f'<div class="cell"><img src="{data_uri(img)}" alt="{html.escape(cap)}">{html.escape(cap)}</div>'
            for img, cap in cells)
        self.parts.append(f'<div class="grid" style="grid-template-columns: repeat({columns}, {cell_px}px)">'
                          f"{items}</div>")

    def image(self, img: np.ndarray, caption: str = "", width_px: int = 640) -> None:
        self.parts.append(f'<figure><img src="{data_uri(img)}" style="width:{width_px}px">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def html(self) -> str:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>")

    def write(self, path: str | Path) -> Path:
        from masksal.checkpoint import atomic_write

        p = Path(path)
        atomic_write(p, lambda tmp: tmp.write_text(self.html()))
        return p
