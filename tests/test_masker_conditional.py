"""The conditional masker (masker.py): masks that depend on the requested class, the top-1 class
when none is given, K classes from one classifier forward, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from masksal.checkpoint import load_masker
from masksal.classifiers import Classifier, create_classifier
from masksal.masker import Masker, MaskerConfig, MaskerNet

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = 6


def conditional(conditioning: str = "projection", dtype: torch.dtype = torch.float32, **kw: object) -> Masker:
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", CLASSES, width=8).to(dtype).eval()
    shapes = clf.tap_shapes(32)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps}, MaskerConfig(hidden=8, conditional=True,
                                                                       conditioning=conditioning, **kw),  # type: ignore[arg-type]
                    num_classes=CLASSES).to(dtype)
    if conditioning == "film":  # a new FiLM head starts as the identity (every class alike): give it classes
        torch.nn.init.normal_(net.film.weight)
    return Masker(clf, net).eval()


def images(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dtype)


def count_forwards(clf: Classifier) -> list[int]:
    count = [0]
    clf.model.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


@pytest.mark.parametrize("conditioning", ["projection", "film"])
def test_the_mask_depends_on_the_class_and_none_means_top1(conditioning: str) -> None:
    m = conditional(conditioning)
    assert m.class_specific
    x = images(3)
    a, b = m.explain(x, 1), m.explain(x, 4)
    assert a.shape == (3, 32, 32) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.allclose(a, b)
    top1 = m.classifier(x).argmax(1)
    torch.testing.assert_close(m.explain(x), m.explain(x, top1))
    logits, maps = m.classify_and_explain(x, torch.tensor([1, 1, 1]))
    torch.testing.assert_close(maps, a)
    torch.testing.assert_close(torch.sigmoid(m.mask_logits(x, torch.tensor([4, 4, 4]))), b)


def test_a_new_film_head_gives_every_class_the_same_mask() -> None:
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", CLASSES, width=8).eval()
    shapes = clf.tap_shapes(32)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps}, MaskerConfig(hidden=8, conditional=True, conditioning="film"),
                    num_classes=CLASSES)
    m = Masker(clf, net).eval()
    torch.testing.assert_close(m.explain(images(2), 0), m.explain(images(2), 5))


@pytest.mark.parametrize("conditioning", ["projection", "film"])
@pytest.mark.parametrize("refine", [0, 4])
def test_k_targets_share_one_classifier_forward(conditioning: str, refine: int) -> None:
    m = conditional(conditioning, torch.float64, refine=refine)
    if refine:  # a new refinement adds nothing: give it weights so that its K-fold batching is checked
        torch.nn.init.normal_(m.net.refinement[-1].weight, std=0.1)
    x = images(2, torch.float64)
    targets = torch.tensor([[0, 3, 5, 1, 2], [4, 4, 0, 2, 5]])
    forwards = count_forwards(m.classifier)
    maps = m.explain_targets(x, targets)
    assert maps.shape == (2, 5, 32, 32) and maps.dtype == torch.float32
    assert forwards[0] == 1  # K = 5 classes, one classifier forward
    one_by_one = torch.stack([m.explain(x, targets[:, k]) for k in range(5)], dim=1)
    assert forwards[0] == 1 + 5
    torch.testing.assert_close(maps, one_by_one)


def test_explain_targets_shapes_and_errors() -> None:
    m = conditional()
    x = images(3)
    same = m.explain_targets(x, [2, 5])  # (K,): the same classes for every image
    torch.testing.assert_close(same, m.explain_targets(x, [[2, 5]] * 3))
    assert m.explain_targets(x[0], [1, 2, 3]).shape == (3, 32, 32)  # one image: (K, H, W)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        m.explain_targets(x, [[1, 2]] * 2)
    with pytest.raises(ValueError, match="class indices in 0..5"):
        m.explain_targets(x, [1, CLASSES])
    with pytest.raises(ValueError, match=">= 0"):
        m.explain_targets(x, [-1])
    with pytest.raises(ValueError, match="class indices in 0..5"):
        m.explain(x, CLASSES)


def test_a_class_agnostic_masker_gives_its_one_mask_for_every_class() -> None:
    clf = create_classifier("small_resnet18", CLASSES, width=8).eval()
    shapes = clf.tap_shapes(32)
    m = Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps}, MaskerConfig(hidden=8))).eval()
    assert not m.class_specific
    x = images(2)
    maps = m.explain_targets(x, [[0, 1, 2], [3, 4, 5]])
    assert maps.shape == (2, 3, 32, 32)
    for k in range(3):
        torch.testing.assert_close(maps[:, k], m.explain(x))


def test_conditional_masker_needs_the_number_of_classes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        MaskerNet({"layer4": 8}, MaskerConfig(conditional=True))
    with pytest.raises(ValueError, match="conditioning"):
        MaskerConfig(conditional=True, conditioning="concat")
    net = MaskerNet({"layer4": 8}, MaskerConfig(hidden=4, conditional=True), num_classes=3)
    with pytest.raises(ValueError, match="targets"):
        net({"layer4": torch.rand(2, 8, 4, 4)}, (16, 16))


@pytest.mark.parametrize("conditioning", ["projection", "film"])
def test_conditional_masker_round_trips_through_a_checkpoint(conditioning: str, tmp_path: Path) -> None:
    m = conditional(conditioning)
    m.info["image_size"] = 32
    m.save(tmp_path / "m")
    back = load_masker(tmp_path / "m")
    assert back.net.cfg.conditional and back.net.cfg.conditioning == conditioning and back.class_specific
    x = images(2)
    torch.testing.assert_close(back.explain_targets(x, [0, 3]), m.explain_targets(x, [0, 3]))


def test_explain_command_asks_a_conditional_masker_for_a_class(tmp_path: Path) -> None:
    """``masksal explain --target K``: the maps of class K (those of ``Masker.explain(x, K)``);
    a class-agnostic masker or a class out of range: one line, nothing written."""
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from masksal.cli import app

    m = conditional()
    m.info["image_size"] = 32
    m.save(tmp_path / "cond")
    pic = (images(1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(pic).save(tmp_path / "in" / "a.png")
    runner = CliRunner()
    maps = {}
    for k in (1, 4):
        res = runner.invoke(app, ["explain", str(tmp_path / "cond"), str(tmp_path / "in"), "--out",
                                  str(tmp_path / f"out{k}"), "--target", str(k), "--no-overlay", "--quiet"])
        assert res.exit_code == 0, res.output
        maps[k] = np.load(tmp_path / f"out{k}" / "a.png.npy")
    x = torch.from_numpy(pic).permute(2, 0, 1)[None].float() / 255
    np.testing.assert_allclose(maps[4], m.explain(x, 4)[0].numpy(), atol=1e-5)
    assert not np.allclose(maps[1], maps[4])
    res = runner.invoke(app, ["explain", str(tmp_path / "cond"), str(tmp_path / "in"), "--out",
                              str(tmp_path / "out9"), "--target", str(CLASSES)])
    assert res.exit_code != 0 and "--target" in res.output and "Traceback" not in res.output
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", CLASSES, width=8).eval()
    shapes = clf.tap_shapes(32)
    agnostic = Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps}, MaskerConfig(hidden=8))).eval()
    agnostic.info["image_size"] = 32
    agnostic.save(tmp_path / "agnostic")
    res = runner.invoke(app, ["explain", str(tmp_path / "agnostic"), str(tmp_path / "in"), "--out",
                              str(tmp_path / "outa"), "--target", "1"])
    assert res.exit_code != 0 and "class-agnostic" in res.output
