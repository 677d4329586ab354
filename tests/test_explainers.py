"""Every saliency method through the Explainer protocol: shapes, batching, hygiene, registry."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from masksal.classifiers import Classifier, create_classifier
from masksal.explainers import (
    RISE,
    CentreBaseline,
    Explainer,
    RandomBaseline,
    available_explainers,
    create_explainer,
    parse_method_spec,
    register_explainer,
)

# Few masks / steps / iterations: these tests check the plumbing, not the maps' quality.
SMALL: dict[str, dict[str, Any]] = {
    "rise": {"n_masks": 40, "batch_size": 32},
    "ig": {"steps": 4, "internal_batch_size": 8},
    "smoothgrad": {"n_samples": 3, "batch_size": 4},
    "meaningful_perturbation": {"iterations": 8},
    "extremal_perturbation": {"iterations": 8, "areas": [0.1, 0.3]},
}
BUILT_IN = ["centre", "extremal_perturbation", "gradcam", "guided_backprop", "ig", "meaningful_perturbation",
            "pytorch_grad_cam", "random", "rise", "saliency", "smoothgrad"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_classifier(dtype: torch.dtype = torch.float32) -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 5, width=8).to(dtype)


def images(n: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_registry_lists_every_method() -> None:
    assert set(BUILT_IN) <= set(available_explainers())
    assert available_explainers() == sorted(available_explainers())


@pytest.mark.parametrize("name", BUILT_IN)
def test_maps_shape_dtype_device_finite(name: str) -> None:
    clf = make_classifier()
    explainer = create_explainer(name, clf, **SMALL.get(name, {}))
    assert isinstance(explainer, Explainer)
    assert explainer.name == name
    x = images(2)
    maps = explainer.explain(x, torch.tensor([1, 3]))
    assert maps.shape == (2, 32, 32)
    assert maps.dtype == torch.float32
    assert maps.device == x.device
    assert torch.isfinite(maps).all()
    top1 = explainer.explain(x)  # targets=None: the top-1 class
    assert top1.shape == (2, 32, 32) and torch.isfinite(top1).all()


@pytest.mark.parametrize("name", BUILT_IN)
def test_batch_equals_one_by_one(name: str) -> None:
    # float64 keeps ReLU kinks from flipping between batched and single-image arithmetic.
    clf = make_classifier(torch.float64)
    x = images(4, torch.float64)
    targets = torch.tensor([0, 4, 2, 2])
    options = SMALL.get(name, {})
    batched = create_explainer(name, clf, **options).explain(x, targets)
    one = create_explainer(name, clf, **options)  # one explainer, images in order (RandomBaseline's stream)
    singles = torch.cat([one.explain(x[i:i + 1], targets[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-6 * float(singles.abs().max()))


@pytest.mark.parametrize("name", BUILT_IN)
def test_classifier_left_untouched(name: str) -> None:
    clf = make_classifier()
    clf.train()  # explaining must use eval mode, then give the caller's mode back
    clf.layer("layer1").eval()  # a submodule in its own mode must keep it
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    stale = torch.full_like(clf.model.fc.weight, 7.0)
    clf.model.fc.weight.grad = stale
    create_explainer(name, clf, **SMALL.get(name, {})).explain(images(2))
    after = clf.state_dict()
    for k, v in before.items():  # weights and BatchNorm running statistics
        assert torch.equal(v, after[k]), k
    for pname, p in clf.named_parameters():
        if pname == "model.fc.weight":
            assert p.grad is stale and torch.all(p.grad == 7.0)
        else:
            assert p.grad is None, pname
    assert clf.training and clf.model.layer2.training and not clf.model.layer1.training


@pytest.mark.parametrize("name", BUILT_IN)
def test_works_inside_no_grad(name: str) -> None:
    # Evaluation loops often run under torch.no_grad(); gradient methods must still work there.
    clf = make_classifier()
    x, t = images(2), torch.tensor([1, 3])
    expected = create_explainer(name, clf, **SMALL.get(name, {})).explain(x, t)
    with torch.no_grad():
        maps = create_explainer(name, clf, **SMALL.get(name, {})).explain(x, t)
    torch.testing.assert_close(maps, expected)


def test_rise_fixed_seed_is_deterministic_and_seed_matters() -> None:
    clf = make_classifier()
    x = images(2)
    a = RISE(clf, n_masks=30, seed=3).explain(x)
    b = RISE(clf, n_masks=30, seed=3).explain(x)
    c = RISE(clf, n_masks=30, seed=4).explain(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_rise_masks_are_made_once_and_do_not_depend_on_batch_size() -> None:
    clf = make_classifier()
    r = RISE(clf, n_masks=12, grid_size=4, batch_size=5)
    m = r.masks(0, 12, 32, 32)
    assert m.shape == (12, 32, 32) and m.min() >= 0 and m.max() <= 1
    assert torch.equal(r.masks(4, 9, 32, 32), m[4:9])
    assert r._random_draws(32, 32)[0] is r._random_draws(32, 32)[0]
    # Masks ~ bilinear upsampling of a binary grid: mean close to p, both values present.
    big = RISE(clf, n_masks=400, p=0.5).masks(0, 400, 32, 32)
    assert abs(float(big.mean()) - 0.5) < 0.05
    assert float((big > 0.99).float().mean()) > 0.05 and float((big < 0.01).float().mean()) > 0.05
    # batch_size only changes how the work is split
    x = images(3)
    maps = [RISE(clf, n_masks=20, batch_size=bs).explain(x, torch.tensor([0, 1, 2])) for bs in (1, 7, 64)]
    torch.testing.assert_close(maps[0], maps[1])
    torch.testing.assert_close(maps[0], maps[2])


def test_rise_equals_its_formula_on_a_linear_model() -> None:
    # For a model whose class-0 probability is the sum of mask-weighted pixel values, the RISE map
    # is the masks' weighted average: check it against a direct computation.
    clf = make_classifier()
    r = RISE(clf, n_masks=16, grid_size=3, batch_size=8)
    x = images(1)
    masks = r.masks(0, 16, 32, 32)
    mean = torch.tensor(clf.spec.mean).view(1, 3, 1, 1)
    masked = mean + (x - mean) * masks[:, None]
    with torch.no_grad():
        probs = clf.eval()(masked).softmax(1)[:, 2]
    expected = (probs[:, None, None] * masks).sum(0) / (16 * 0.5)
    torch.testing.assert_close(r.explain(x, torch.tensor([2]))[0], expected, rtol=1e-4, atol=1e-6)


def test_centre_baseline_values() -> None:
    x = images(2)
    box = CentreBaseline(kind="box", box_fraction=0.5).explain(x)
    expected = torch.zeros(32, 32)
    expected[8:24, 8:24] = 1
    assert torch.equal(box[0], expected) and torch.equal(box[1], expected)
    g = CentreBaseline(sigma=0.25).map(33, 33)
    assert float(g[16, 16]) == pytest.approx(1.0)
    assert float(g[16, 16 + 8]) == pytest.approx(float(torch.exp(torch.tensor(-(8.0**2) / (2 * 8.25**2)))))
    assert torch.equal(g, g.flip(0)) and torch.equal(g, g.flip(1))


def test_random_baseline_is_seeded_uniform_and_ignores_the_model() -> None:
    x = images(3)
    a = RandomBaseline(seed=5).explain(x)
    assert torch.equal(a, RandomBaseline(None, seed=5).explain(x * 0))
    assert not torch.equal(a, RandomBaseline(seed=6).explain(x))
    assert a.min() >= 0 and a.max() < 1
    assert not torch.equal(a[0], a[1])


def test_create_explainer_errors_and_aliases() -> None:
    clf = make_classifier()
    with pytest.raises(ValueError, match="unknown saliency method 'nope'"):
        create_explainer("nope", clf)
    with pytest.raises(ValueError, match=r"rise does not take option\(s\) \['n_mask'\]"):
        create_explainer("rise", clf, n_mask=10)
    assert create_explainer("mp", clf).name == "meaningful_perturbation"
    assert create_explainer("EP", clf, areas=[0.05, 0.1]).name == "extremal_perturbation"
    assert create_explainer("guided-backprop", clf).name == "guided_backprop"


def test_register_explainer_is_open() -> None:
    class Constant:
        name = "constant_test"

        def __init__(self, classifier: Classifier, value: float = 1.0) -> None:
            self.value = value

        def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
            return torch.full((images.shape[0], *images.shape[-2:]), self.value)

    register_explainer("constant_test", Constant, aliases=["const_test"])
    assert "constant_test" in available_explainers() and "const_test" not in available_explainers()
    e = create_explainer("const_test", make_classifier(), value=2.0)
    assert torch.all(e.explain(images(1)) == 2.0)
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("constant_test", Constant)
    register_explainer("constant_test", Constant, replace=True)


def test_parse_method_spec() -> None:
    assert parse_method_spec("rise") == ("rise", {})
    assert parse_method_spec("rise:n_masks=500,batch_size=100") == ("rise", {"n_masks": 500, "batch_size": 100})
    name, opts = parse_method_spec("ep: areas=[0.05, 0.1,0.2], jitter=false, step=none, lr=1e-2")
    assert name == "ep"
    assert opts == {"areas": [0.05, 0.1, 0.2], "jitter": False, "step": None, "lr": 0.01}
    assert parse_method_spec("centre:kind=box")[1] == {"kind": "box"}
    assert parse_method_spec("x:s='a b'")[1] == {"s": "a b"}
    assert parse_method_spec("gradcam:layer=layer3")[1] == {"layer": "layer3"}
    assert parse_method_spec("x:nested=[[1,2],[3]]")[1] == {"nested": [[1, 2], [3]]}
    for bad in ("rise:n_masks", ":a=1", "ep:areas=[0.1", "ep:areas=0.1]"):
        with pytest.raises(ValueError):
            parse_method_spec(bad)


def test_spec_options_build_the_method() -> None:
    name, opts = parse_method_spec("rise:n_masks=7,grid_size=3,p=0.25")
    r = create_explainer(name, make_classifier(), **opts)
    assert isinstance(r, RISE) and (r.n_masks, r.grid_size, r.p) == (7, 3, 0.25)


def test_pytorch_grad_cam_missing_gives_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    with pytest.raises(ImportError, match="pip install grad-cam"):
        create_explainer("pytorch_grad_cam", make_classifier())


def test_bad_inputs_are_rejected() -> None:
    e = create_explainer("gradcam", make_classifier())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        e.explain(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="one class per image"):
        create_explainer("saliency", make_classifier()).explain(images(2), torch.tensor([1, 2, 3]))
