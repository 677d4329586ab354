"""Every experiment config shipped in configs/ loads and trains (2 steps, tiny sizes)."""

from pathlib import Path

import pytest
import torch

from masksal.checkpoint import load_masker
from masksal.config import load_config
from masksal.reproduce import ROW_NAMES
from masksal.training import train_classifier, train_masker

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "masksal" / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))
TINY = [
    "data.dataset=benchmark", "data.num_workers=0", "data.image_size=32", "data.n_train=64", "data.n_test=16",
    "data.families=[digits]", "data.cache_dir=null",
    "classifier.kwargs={width: 8}", "classifier_train.epochs=1", "classifier_train.batch_size=16",
    "train.batch_size=4", "train.steps=2", "train.log_every=1", "train.pool_every=1", "masker.hidden=8",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    train_classifier(load_config(CONFIGS / "final.yaml", TINY), out, progress=False)
    return out


def test_there_is_one_config_per_ablation_row_and_a_final_one():
    assert (CONFIGS / "final.yaml").is_file()
    assert sorted(p.stem for p in (CONFIGS / "ablation").glob("*.yaml")) == sorted(ROW_NAMES)


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(CONFIGS)) for p in ALL])
def test_config_loads_and_trains_two_steps(path, classifier_ckpt, tmp_path):
    full = load_config(path)
    if path.stem in ROW_NAMES or path.name in ("final.yaml", "paper.yaml"):
        assert full.data.image_size == 64 and full.masker_train.steps == 1300  # the calibrated 64 px recipe
    cfg = load_config(path, [*TINY, f"classifier.weights={classifier_ckpt}"])
    res = train_masker(cfg, tmp_path / "m", progress=False)
    assert res["steps"] == 2
    masker = load_masker(tmp_path / "m")
    if full.classifier.taps:
        assert masker.classifier.taps == list(full.classifier.taps)
    maps = masker.explain(torch.rand(2, 3, 32, 32))
    assert maps.shape == (2, 32, 32) and bool(((maps >= 0) & (maps <= 1)).all())


def test_vit_config_trains_a_vit_whose_masker_reads_its_last_two_blocks(tmp_path):
    """The shipped ViT recipe builds the timm hybrid ViT, trains it with AdamW, and its masker
    takes the ViT family's default taps (the last two blocks, tokens laid on their grid)."""
    path = CONFIGS / "vit_tiny_benchmark.yaml"
    full = load_config(path)
    assert full.classifier.arch.startswith("timm:vit") and full.classifier_train.optimizer == "adamw"
    assert full.data.image_size == 64 and full.classifier.kwargs["img_size"] == 64
    tiny = [o for o in TINY if not o.startswith("classifier.kwargs")]
    tiny.append("classifier.kwargs={img_size: 32, patch_size: 2, embed_dim: 24, depth: 2, num_heads: 2, mlp_ratio: 2}")
    train_classifier(load_config(path, tiny), tmp_path / "clf", progress=False)
    res = train_masker(load_config(path, [*tiny, f"classifier.weights={tmp_path / 'clf'}"]), tmp_path / "m",
                       progress=False)
    assert res["steps"] == 2
    masker = load_masker(tmp_path / "m")
    assert type(masker.classifier.model).__name__ == "VisionTransformer"
    assert masker.classifier.taps == ["blocks.0", "blocks.1"]
    maps = masker.explain(torch.rand(2, 3, 32, 32))
    assert maps.shape == (2, 32, 32) and bool(((maps >= 0) & (maps <= 1)).all())


def test_final_config_trains_the_demo_masker_and_paper_is_the_published_decoder():
    from masksal.config import with_overrides
    from masksal.demo import FULL, demo_config
    from masksal.rundir import recipe

    weights = ["classifier.weights=runs/demo/classifier"]
    demo = with_overrides(demo_config(FULL, "ca", Path("runs/demo")), {"classifier.weights": "runs/demo/classifier"},
                          "demo")
    final = load_config(CONFIGS / "final.yaml", weights)
    # docs/reproduce.md: `masksal train --config final --classifier runs/demo/classifier` is the demo's masker
    assert recipe(final, "masker") == recipe(demo, "masker")
    assert recipe(final, "classifier") == recipe(demo, "classifier")
    paper = load_config(CONFIGS / "paper.yaml", weights)
    assert paper.masker.decoder == "paper" and paper.masker.refine == 0 and paper.masker.hidden == 64
    assert paper.classifier.taps == ["layer3", "layer4"]
    p, f = recipe(paper, "masker"), recipe(final, "masker")
    differing = {(sec, k) for sec in f for k in f[sec] if f[sec][k] != p[sec][k]}
    assert differing <= {("classifier", "taps"), ("masker", "decoder"), ("masker", "hidden"), ("masker", "refine")}


def test_train_classifier_starts_from_a_classifier_checkpoint_directory(classifier_ckpt, tmp_path):
    """``classifier.weights`` may name a checkpoint folder (fine-tuning, e.g. to a multi-label head):
    the run starts from its weights, not from scratch."""
    from masksal.checkpoint import load_classifier

    start = load_classifier(classifier_ckpt)
    cfg = load_config(CONFIGS / "final.yaml", [*TINY, f"classifier.weights={classifier_ckpt}",
                                               "classifier_train.lr=0"])
    train_classifier(cfg, tmp_path / "tuned", progress=False)
    tuned = load_classifier(tmp_path / "tuned")
    # lr 0: the convolutions keep the checkpoint's weights exactly (BatchNorm statistics still move)
    conv = "model.conv1.weight" if "model.conv1.weight" in start.state_dict() else next(
        k for k in start.state_dict() if k.endswith("conv1.weight"))
    assert torch.equal(start.state_dict()[conv], tuned.state_dict()[conv])
