"""A small, self-contained HTML report: headings, tables, figures, colour bars, image grids.

Every page is one file that works offline: images are inline PNG data URIs and the only style is
the ``<style>`` block below (no scripts, no external CSS). The layout adapts to the window: images
shrink with their column, tables and captions wrap, nothing is wider than a phone screen.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from masksal.report.images import css_gradient, data_uri

_STYLE = """
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { font-family: system-ui, sans-serif; line-height: 1.4; color: #222; background: #fff;
       max-width: 1200px; margin: 0 auto; padding: 1em 1.5em 3em; overflow-wrap: break-word; }
h1 { font-size: 1.6em; line-height: 1.2; } h2 { font-size: 1.25em; margin-top: 1.6em; }
p { max-width: 80ch; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; overflow-wrap: break-word; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { margin: 0.8em 0; }
figcaption, .caption { font-size: 0.85em; color: #333; overflow-wrap: anywhere; }
.figures { display: grid; gap: 1em; grid-template-columns: repeat(auto-fit, minmax(min(100%, 380px), 1fr)); }
.figures figure { margin: 0; }
.figures img { width: 100%; }
.grid { display: grid; gap: 6px; align-items: start; }
.cell { text-align: center; min-width: 0; }
.cell img { display: block; image-rendering: pixelated; width: 100%; }
.colorbar { max-width: 420px; margin: 0.8em 0; }
.colorbar .ramp { width: 100%; height: 16px; border: 1px solid #999; }
.ticks { display: flex; justify-content: space-between; font-size: 0.8em; gap: 0.5em; }
.ticks span:last-child { text-align: right; }
.wrong { color: #b00020; }
.legend-box { display: inline-block; width: 0.9em; height: 0.9em; border: 2px solid; vertical-align: -0.1em; }
@media (max-width: 600px) {
  body { padding: 0.6em 0.7em 2em; }
  h1 { font-size: 1.3em; }
  th, td { padding: 0.2em 0.3em; font-size: 0.85em; }
}
"""


def esc(text: object) -> str:
    """HTML-escaped ``str(text)``, quotes included (safe inside attributes)."""
    return html.escape(str(text), quote=True)


class Report:
    """Builds an HTML page piece by piece; ``write(path)`` saves it atomically."""

    def __init__(self, title: str, lang: str = "en") -> None:
        self.title = title
        self.lang = lang
        self.parts: list[str] = []
        self.styles: list[str] = [_STYLE]

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{esc(text)}</h{level}>")

    def paragraph(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{esc(text)}</p>")

    def style(self, css: str) -> None:
        """Add CSS rules to the page's ``<style>`` block."""
        self.styles.append(css)

    def raw(self, markup: str) -> None:
        """Append ready-made markup (the caller escapes what it inserts)."""
        self.parts.append(markup)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> None:
        def fmt(v: Any) -> str:
            return f"{v:.2f}" if isinstance(v, float) else esc(v)

        head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
        body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
        cap = f"<caption>{esc(caption)}</caption>" if caption else ""
        # The wrapper scrolls a table too wide for a phone instead of widening the page.
        self.parts.append(f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
                          f"<tbody>{body}</tbody></table></div>")

    def grid(self, cells: Sequence[tuple[np.ndarray, str] | tuple[np.ndarray, str, str]], columns: int,
             cell_px: int = 128) -> None:
        """Images in a grid of ``columns`` columns (each at most ``cell_px`` wide, narrower on a
        small screen), each with a caption; a third item in a cell is its alt text (default: the
        caption)."""
        items = "".join(
            f'<div class="cell"><img src="{data_uri(c[0])}" alt="{esc(c[2] if len(c) > 2 else c[1])}">'
            f'<div class="caption">{esc(c[1])}</div></div>'
            for c in cells)
        self.parts.append(f'<div class="grid" style="grid-template-columns: repeat({columns}, '
                          f'minmax(0, {cell_px}px))">{items}</div>')

    def image(self, img: np.ndarray, caption: str = "", width_px: int = 640, alt: str | None = None) -> None:
        """One picture, ``width_px`` wide at most (the window's width on a small screen)."""
        self.parts.append(f'<figure><img src="{data_uri(img)}" alt="{esc(alt or caption)}" '
                          f'style="width:{width_px}px">'
                          f'<figcaption>{esc(caption)}</figcaption></figure>')

    def figures(self, items: Sequence[tuple[np.ndarray, str, str]], width_px: int | None = None) -> None:
        """Pictures ``(image, caption, alt)`` side by side on a wide screen, one above the other on
        a narrow one. ``width_px``: the width each is drawn for (default: half its pixels, so a
        picture rendered at twice the size stays sharp on high-density screens)."""
        figs = "".join(
            f'<figure><img src="{data_uri(img)}" alt="{esc(alt)}" '
            f'style="max-width:{width_px or img.shape[1] // 2}px"><figcaption>{esc(cap)}</figcaption></figure>'
            for img, cap, alt in items)
        self.parts.append(f'<div class="figures">{figs}</div>')

    def colorbar(self, cmap: str, ticks: Sequence[str], label: str) -> None:
        """A colour bar: the colour map from low (left) to high (right), ``ticks`` spread evenly
        under it, and ``label`` saying what the colours measure and how they are scaled."""
        spans = "".join(f"<span>{esc(t)}</span>" for t in ticks)
        ends = f"{ticks[0]} to {ticks[-1]}" if ticks else "low to high"
        self.parts.append(
            f'<figure class="colorbar"><div class="ramp" role="img" style="background: {css_gradient(cmap)}" '
            f'aria-label="{esc(f"colour scale, dark for low values to bright for high ({ends})")}"></div>'
            f'<div class="ticks" aria-hidden="true">{spans}</div><figcaption>{esc(label)}</figcaption></figure>')

    def html(self) -> str:
        return (f'<!doctype html><html lang="{esc(self.lang)}"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{esc(self.title)}</title><style>{''.join(self.styles)}</style></head><body>"
                f"<h1>{esc(self.title)}</h1>\n" + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path: str | Path) -> Path:
        from masksal.checkpoint import atomic_write

        p = Path(path)
        atomic_write(p, lambda tmp: tmp.write_text(self.html(), encoding="utf-8"))
        return p
