"""End-to-end training on tiny images: classifier, masker in every mode, resume, checkpoints."""

import json

import pytest
import torch

from masksal.checkpoint import load_classifier, load_masker, read_meta
from masksal.config import load_config
from masksal.training import StepBatchSampler, train_classifier, train_masker

TINY = [
    "data.image_size=32", "data.n_train=120", "data.n_test=40", "data.families=[digits]", "data.cache_dir=null",
    "classifier.kwargs={width: 8}", "classifier_train.epochs=1", "classifier_train.batch_size=16",
    "train.batch_size=8", "train.steps=6", "train.log_every=2", "train.checkpoint_every=3",
    "masker.hidden=8",
]


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    cfg = load_config(None, TINY)
    res = train_classifier(cfg, out, progress=False)
    assert 0 <= res["test_accuracy"] <= 100
    return out


def test_classifier_checkpoint_is_complete(classifier_ckpt):
    meta = read_meta(classifier_ckpt)
    assert meta.kind == "classifier" and meta.classifier.num_classes == 10
    assert meta.classifier.taps == ["layer3", "layer4"]
    assert json.loads((classifier_ckpt / "metrics.json").read_text())["test_accuracy"] >= 0
    assert (classifier_ckpt / "log.jsonl").read_text().count("\n") >= 1


@pytest.mark.parametrize("mode", ["fix", "ca", "pool"])
def test_masker_trains_in_every_mode_and_round_trips(classifier_ckpt, tmp_path, mode):
    cfg = load_config(None, [*TINY, f"train.mode={mode}", f"classifier.weights={classifier_ckpt}",
                             "train.pool_every=2"])
    before = load_classifier(classifier_ckpt).fingerprint()
    res = train_masker(cfg, tmp_path / "m", progress=False)
    assert res["steps"] == 6
    rows = [json.loads(x) for x in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert {"masked_in_ce", "masked_out_entropy", "area", "tv", "total", "mask_mean"} <= set(rows[-1])
    masker = load_masker(tmp_path / "m")
    after = masker.classifier.fingerprint()
    assert (after == before) == (mode == "fix")  # FIX never changes the classifier, CA does
    x = torch.rand(4, 3, 32, 32)
    again = load_masker(tmp_path / "m")
    assert torch.equal(masker.explain(x), again.explain(x))


def test_interrupted_run_resumes_to_the_same_weights(classifier_ckpt, tmp_path):
    cfg = load_config(None, [*TINY, "train.mode=ca", f"classifier.weights={classifier_ckpt}"])
    train_masker(cfg, tmp_path / "straight", progress=False)

    def stop(step, _terms):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_masker(cfg, tmp_path / "cut", progress=False, callbacks=[stop])
    assert read_meta(tmp_path / "cut").step == 4  # saved on interruption
    with pytest.raises(FileExistsError, match="--resume"):
        train_masker(cfg, tmp_path / "cut", progress=False)
    train_masker(cfg, tmp_path / "cut", resume=True, progress=False)
    a, b = load_masker(tmp_path / "straight"), load_masker(tmp_path / "cut")
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.allclose(v.float(), w.float(), atol=1e-6), k


def test_masker_needs_a_classifier(tmp_path):
    cfg = load_config(None, TINY)
    with pytest.raises(ValueError, match="classifier.weights"):
        train_masker(cfg, tmp_path / "m", progress=False)


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_classifier(load_config(None, TINY), tmp_path / "x", resume=True, progress=False)


def test_few_shot_trains_on_k_per_class(classifier_ckpt, tmp_path):
    cfg = load_config(None, [*TINY, "data.examples_per_class=1", f"classifier.weights={classifier_ckpt}"])
    from masksal.training import build_dataset

    ds = build_dataset(cfg, "train")
    assert len(ds) == 10
    assert train_masker(cfg, tmp_path / "m", progress=False)["steps"] == 6


def test_step_batch_sampler_is_a_function_of_the_step():
    full = list(StepBatchSampler(10, 4, seed=3, start=0, total=7))
    tail = list(StepBatchSampler(10, 4, seed=3, start=4, total=7))
    assert full[4:] == tail
    assert all(len(b) == 4 for b in full)
    small = list(StepBatchSampler(3, 8, seed=0, start=0, total=2))  # smaller than a batch: cycled
    assert all(sorted(set(b)) == [0, 1, 2] for b in small)


def test_checkpoint_is_safe_to_load(classifier_ckpt, tmp_path):
    import shutil

    from masksal.checkpoint import checkpoint_files

    bad = tmp_path / "bad"
    shutil.copytree(classifier_ckpt, bad)
    files = checkpoint_files(bad)
    (files / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json: not valid JSON"):
        read_meta(bad)
    meta = json.loads((checkpoint_files(classifier_ckpt) / "meta.json").read_text())
    meta["step"] = meta["step"] + 1  # weights of another step than meta.json's
    (files / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="written at step"):
        load_classifier(bad)


def test_fresh_each_epoch_draws_new_benchmark_images(tmp_path):
    from masksal.training import build_dataset
    from masksal.training.data import epoch_batches

    cfg = load_config(None, [*TINY, "data.n_train=32", "data.fresh_each_epoch=true"])
    ds = build_dataset(cfg, "train")
    batches = list(epoch_batches(cfg, ds, 16, 0, 6, 0))  # 3 epochs of 2 steps
    epoch_of = [{int(i.split("/")[1]) // 32 for i in b.ids} for b in batches]
    assert epoch_of == [{0}, {0}, {1}, {1}, {2}, {2}]
    resumed = list(epoch_batches(cfg, ds, 16, 3, 6, 0))
    assert [b.ids for b in resumed] == [b.ids for b in batches[3:]]
    assert torch.equal(resumed[0].images, batches[3].images)


def test_fix_masker_step_trains_the_masker_only(classifier_ckpt):
    from masksal.masker import MaskerConfig, MaskerNet
    from masksal.training import masker_step
    from masksal.types import Batch

    cfg = load_config(None, [*TINY, "train.mode=ca"])
    clf = load_classifier(classifier_ckpt)
    before = clf.fingerprint()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        _, feats = clf.forward_with_taps(x)
    net = MaskerNet({t: f.shape[1] for t, f in feats.items()}, MaskerConfig(hidden=8))
    weights = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    rec = masker_step(cfg, clf, net, Batch(images=x, labels=torch.arange(4), boxes=[torch.zeros(0, 4)] * 4), opt)
    assert {"total", "mask_mean", "clean_accuracy"} <= set(rec)
    assert clf.fingerprint() == before  # the classifier is frozen whatever cfg.train.mode says
    assert cfg.masker_train.mode == "ca"  # and the caller's config is not modified
    assert any(not torch.equal(a, b) for a, b in zip(weights, net.parameters(), strict=True))


def test_learned_infill_and_superpixel_masks_train(classifier_ckpt, tmp_path):
    from masksal.inpainting import InpaintingNet, save_inpainter
    from masksal.superpixels import Superpixels

    inpainter = save_inpainter(InpaintingNet(widths=(4, 8)), tmp_path / "inpainter.safetensors")
    cfg = load_config(None, [*TINY, f"classifier.weights={classifier_ckpt}", "objectives.infill=learned",
                             f"objectives.inpainter={inpainter}", "masker.superpixels=12"])
    res = train_masker(cfg, tmp_path / "m", progress=False)
    assert res["steps"] == 6
    masker = load_masker(tmp_path / "m")
    x = torch.rand(2, 3, 32, 32)
    maps = masker.explain(x)
    segments = Superpixels(12)(x)
    for i in range(2):  # one value per superpixel
        for s in segments[i].unique():
            values = maps[i][segments[i] == s]
            assert torch.allclose(values, values[0].expand_as(values), atol=1e-5)
    with pytest.raises(ValueError, match="objectives.inpainter"):
        load_config(None, [*TINY, "objectives.infill=learned"])
