"""The demo report and the benchmark's side-by-side page, opened in headless Chromium as a reader
would: at a desktop width (1400 px) and a phone width (420 px), every check read from the DOM.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``make setup`` and ``.ci/run``
install it) and Playwright for Python (the ``dev`` extra), which drives that executable: Playwright's
own browser download is never used. ``MASKSAL_CHROMIUM`` points at another Chromium binary.

Screenshots are saved for every page and width; the path is printed (``pytest -s``). With
``MASKSAL_ARTIFACTS=1`` they are also copied to ``runs/test-artifacts/`` (or to the folder that
``MASKSAL_ARTIFACTS`` names).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from masksal.classifiers import create_classifier
from masksal.data.benchmark import BenchmarkDataset
from masksal.demo import write_demo_report
from masksal.evaluation import evaluate
from masksal.explainers import create_explainer
from masksal.masker import Masker, MaskerNet
from masksal.report.side_by_side import write_side_by_side as side_by_side
from masksal.types import collate

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTHS = (1400, 420)
# --disable-dev-shm-usage: containers often have a 64 MiB /dev/shm, too small for Chromium.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage"]
ROOT = Path(__file__).resolve().parents[1]


def chromium_path() -> str:
    """The Chromium executable, or a one-line test failure saying how to install it."""
    path = os.environ.get("MASKSAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(f"Chromium not found ({path}): install it with `apt-get install -y chromium` (or `make setup`), "
                    "or set MASKSAL_CHROMIUM to a Chromium binary", pytrace=False)
    return path


def _masker(num_classes: int, size: int) -> Masker:
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", num_classes, width=8).eval()
    shapes = clf.tap_shapes(size)
    return Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps})).eval()


def _training_log(path: Path, steps: int = 200) -> None:
    """A log.jsonl with the keys and the shape of a CA masker run (terms fall, accuracies rise)."""
    g = torch.Generator().manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(0, steps, 2):
        t = s / steps
        noise = [float(v) for v in 0.05 * torch.randn(8, generator=g)]
        rec = {"step": s, "masked_in_ce": 2.3 * math.exp(-3 * t) + 0.3 + noise[0],
               "masked_out_entropy": -0.5 - 1.2 * t + noise[1], "area": 12 * math.exp(-2 * t) + 2 + noise[2],
               "tv": 0.4 + 0.2 * t + noise[3], "classifier_ce": 6 * math.exp(-2 * t) + 1 + noise[4],
               "mask_mean": 0.5 - 0.35 * t + noise[5] / 5, "clean_accuracy": 100 * (0.3 + 0.6 * t) + 10 * noise[6],
               "masked_in_accuracy": 100 * (0.2 + 0.6 * t), "masked_out_accuracy": 100 * (0.6 - 0.5 * t),
               "lr": 1e-3, "time": s * 0.1}
        rec["total"] = rec["masked_in_ce"] + rec["masked_out_entropy"] + rec["area"] + rec["tv"]
        rows.append(json.dumps(rec))
    path.write_text("\n".join(rows) + "\n")


def build_pages(folder: Path) -> dict[str, Path]:
    """report.html and side_by_side.html (with boxes and without) from random-weight models."""
    ds = BenchmarkDataset(split="test", n=12, size=64, seed=3)
    masker = _masker(len(ds.classes), 64)
    loader = DataLoader(ds, batch_size=12, collate_fn=collate)  # type: ignore[arg-type]
    results = {name: evaluate(e, masker.classifier, loader, metrics=("le_om_f1", "maxboxacc", "pxap"),
                              progress=False)
               for name, e in (("masker", masker), ("centre", create_explainer("centre", masker.classifier)))}
    metrics: dict[str, Any] = {"classifier_test_accuracy": results["masker"]["top1"], "mode": "ca",
                               "masker": results["masker"], "centre_baseline": results["centre"]}
    demo = folder / "demo"
    _training_log(demo / "masker_ca" / "log.jsonl")
    pages = {"report": write_demo_report(demo, masker, ds, metrics, n_images=12)}

    small = BenchmarkDataset(split="test", n=5, size=48, seed=4)
    m48 = _masker(len(small.classes), 48)
    clf = m48.classifier
    methods = [("masker:runs/an/example/of/a/long/checkpoint/path/masker_ca", m48),
               ("gradcam", create_explainer("gradcam", clf)),
               ("rise:n_masks=64,batch_size=32,grid_size=5", create_explainer("rise", clf, n_masks=64, batch_size=32,
                                                                               grid_size=5)),
               ("centre", create_explainer("centre", clf))]
    batch = collate([small[i] for i in range(5)])
    pages["side_by_side"] = side_by_side(methods, batch, folder / "side_by_side.html", classifier=clf,
                                         class_names=small.classes)
    batch.boxes = [torch.zeros(0, 4) for _ in batch.boxes]
    pages["side_by_side_no_boxes"] = side_by_side(methods[:2], batch, folder / "side_by_side_no_boxes.html",
                                                  scaling="per-image")
    return pages


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_pages(tmp_path_factory.mktemp("pages"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install -e '.[dev]'", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("report-screenshots")
    yield folder
    print(f"\nscreenshots of the report pages: {folder}")
    target = os.environ.get("MASKSAL_ARTIFACTS")
    if target:
        dest = ROOT / "runs" / "test-artifacts" if target.lower() in ("1", "true", "yes") else Path(target)
        dest.mkdir(parents=True, exist_ok=True)
        for f in folder.glob("*.png"):
            shutil.copy2(f, dest / f.name)
        print(f"copied to {dest}")


# Everything read from the page in one call: what a reader would notice is wrong.
_INSPECT = """() => {
  const vw = document.documentElement.clientWidth;
  const visible = (r) => r.width > 0 && r.height > 0;
  const describe = (el) => el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') +
                           ' "' + (el.textContent || el.alt || '').trim().slice(0, 40) + '"';
  const overflow = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (visible(r) && (r.right > vw + 0.5 || r.left < -0.5))
      overflow.push(describe(el) + ' spans ' + Math.round(r.left) + '..' + Math.round(r.right));
  }
  const caps = [...document.querySelectorAll('figcaption, .caption, thead th')];
  const spill = caps.filter(c => c.scrollWidth > c.clientWidth + 1).map(describe);
  const overlaps = [];
  for (let i = 0; i < caps.length; i++) for (let j = i + 1; j < caps.length; j++) {
    const a = caps[i], b = caps[j];
    if (a.contains(b) || b.contains(a)) continue;
    const p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
    if (!visible(p) || !visible(q)) continue;
    const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
    const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
    if (w > 0.5 && h > 0.5) overlaps.push(describe(a) + ' / ' + describe(b));
  }
  const imgs = [...document.images];
  const bar = document.querySelector('.colorbar .ramp');
  const barRect = bar ? bar.getBoundingClientRect() : null;
  return {
    viewport: vw, page_width: document.documentElement.scrollWidth, overflow, spill, overlaps,
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40)),
    no_alt: imgs.filter(i => !i.alt.trim()).length,
    smallest_picture: Math.min(...imgs.map(i => i.getBoundingClientRect().width)),
    colorbar: bar ? {gradient: getComputedStyle(bar).backgroundImage, width: barRect.width, height: barRect.height,
                     ticks: document.querySelectorAll('.colorbar .ticks span').length,
                     label: document.querySelector('.colorbar figcaption').textContent} : null,
    lang: document.documentElement.lang,
    viewport_meta: !!document.querySelector('meta[name=viewport]'),
    scripts: document.scripts.length,
    stylesheets: document.querySelectorAll('link[rel=stylesheet]').length,
  };
}"""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["report", "side_by_side", "side_by_side_no_boxes"])
def test_page_reads_well_in_chromium(browser: Any, pages: dict[str, Path], shots: Path, name: str,
                                     width: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": 900})
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    url = pages[name].resolve().as_uri()
    page.goto(url, wait_until="load")
    info = page.evaluate(_INSPECT)
    page.screenshot(path=str(shots / f"{name}-{width}px.png"), full_page=True)
    page.close()

    assert info["lang"] == "en" and info["viewport_meta"]
    assert info["page_width"] <= info["viewport"], f"the page is {info['page_width']} px wide"
    assert info["overflow"] == [], f"elements wider than the {width} px window: {info['overflow'][:5]}"
    assert info["spill"] == [], f"caption text runs out of its box: {info['spill'][:5]}"
    assert info["overlaps"] == [], f"captions overlap: {info['overlaps'][:5]}"
    assert info["images"] >= 10 and info["broken"] == [], f"images that did not load: {info['broken']}"
    assert info["no_alt"] == 0
    assert info["smallest_picture"] >= 60, f"a picture is shown {info['smallest_picture']:.0f} px wide"
    bar = info["colorbar"]
    assert bar is not None and bar["width"] >= 200 and bar["height"] >= 8 and bar["ticks"] >= 2
    assert bar["gradient"].startswith("linear-gradient(to right, rgb(0, 0, 4)")  # inferno, from its darkest
    assert "scaling" in bar["label"]
    # One self-contained file: nothing fetched but the page itself (images are data URIs).
    assert [u for u in fetched if u != url and not u.startswith("data:")] == []
    assert info["scripts"] == 0 and info["stylesheets"] == 0
