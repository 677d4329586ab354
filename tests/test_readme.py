"""Every Python snippet of the README and docs runs, as written, but for smaller sizes.

The snippets of one file run in order in one namespace (a later one may use an earlier one's
names), in a folder holding what they expect: ``photos/`` (one subfolder per class, as the README
describes) and ``runs/demo/masker_ca`` (what ``make demo`` writes; here a tiny masker). Only
sizes change, listed in SMALLER: the code is the documented code.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SMALLER = [(r"steps=\d+", "steps=2"), (r"image_size=224", "image_size=32"),
           (r"torch\.rand\((\d+), 3, \d+, \d+\)", r"torch.rand(2, 3, 32, 32)"), (r"n_masks=\d+", "n_masks=40"),
           (r"n=8000", "n=64"), (r"load_batch\(cfg, \"train\", 500\)", 'load_batch(cfg, "train", 64)')]

pytestmark = pytest.mark.usefixtures("one_thread")


def snippets(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from masksal.config import load_config
    from masksal.training import train_classifier, train_masker

    root = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(0)
    for c in ("bird", "cat", "dog"):
        (root / "photos" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(root / "photos" / c / f"{i}.jpg")
    tiny = ["data.image_size=32", "data.n_train=48", "data.n_test=8", "data.families=[digits]", "data.cache_dir=null",
            "classifier.kwargs={width: 8}", "classifier_train.epochs=1", "classifier_train.batch_size=16",
            "masker_train.batch_size=8", "masker_train.steps=2", "masker.hidden=8"]
    train_classifier(load_config(None, tiny), root / "runs" / "demo" / "classifier", progress=False)
    train_masker(load_config(None, [*tiny, f"classifier.weights={root / 'runs' / 'demo' / 'classifier'}"]),
                 root / "runs" / "demo" / "masker_ca", progress=False)
    return root


@pytest.mark.parametrize("doc", [d for d in DOCS if snippets(d)], ids=lambda d: d.name)
def test_python_snippets_run(doc: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for i, code in enumerate(snippets(doc)):
        for pattern, repl in SMALLER:
            code = re.sub(pattern, repl, code)
        torch.manual_seed(0)
        try:
            exec(compile(code, f"{doc.name} snippet {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as e:  # noqa: BLE001 - name the snippet
            raise AssertionError(f"{doc.name}, Python snippet {i + 1} failed: {type(e).__name__}: {e}") from e
