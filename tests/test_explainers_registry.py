"""The registry of saliency methods: names, options, method specs, and the masker as a method."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from masksal.checkpoint import save_checkpoint
from masksal.classifiers import Classifier, create_classifier
from masksal.config import ExperimentConfig
from masksal.explainers import (
    RISE,
    Explainer,
    available_explainers,
    create_explainer,
    parse_method_spec,
    register_explainer,
)
from masksal.masker import Masker, MaskerNet

pytestmark = pytest.mark.usefixtures("one_thread")


def make_classifier(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return create_classifier("small_resnet18", 5, width=8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clf = make_classifier()
    cfg = ExperimentConfig()
    cfg.data.image_size = 32
    shapes = clf.tap_shapes(32)
    path = tmp_path_factory.mktemp("registry") / "masker_ca"
    save_checkpoint(path, kind="masker", step=0, cfg=cfg, classifier=clf,
                    masker=MaskerNet({t: shapes[t][0] for t in clf.taps}))
    return path


def test_registry_lists_every_method_sorted() -> None:
    builtin = {"centre", "extremal_perturbation", "gradcam", "guided_backprop", "ig", "masker",
               "meaningful_perturbation", "pytorch_grad_cam", "random", "rise", "saliency", "smoothgrad"}
    assert builtin <= set(available_explainers())
    assert available_explainers() == sorted(available_explainers())


def test_create_explainer_errors_and_aliases() -> None:
    clf = make_classifier()
    with pytest.raises(ValueError, match="unknown saliency method 'nope'"):
        create_explainer("nope", clf)
    with pytest.raises(ValueError, match=r"rise does not take option\(s\) \['n_mask'\]"):
        create_explainer("rise", clf, n_mask=10)
    assert create_explainer("mp", clf).name == "meaningful_perturbation"
    assert create_explainer("EP", clf, areas=[0.05, 0.1]).name == "extremal_perturbation"
    assert create_explainer("guided-backprop", clf).name == "guided_backprop"


@pytest.mark.parametrize("name", ["gradcam", "rise", "ig", "ep"])
def test_a_method_that_needs_a_classifier_says_so_in_one_line(name: str) -> None:
    with pytest.raises(ValueError, match="needs a classifier") as err:
        create_explainer(name)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="RISE needs a classifier"):
        RISE(None)  # type: ignore[arg-type]


def test_masker_is_a_registered_method(checkpoint: Path) -> None:
    masker = create_explainer("masker", checkpoint=checkpoint)
    assert isinstance(masker, Masker) and isinstance(masker, Explainer)
    assert repr(masker).startswith("Masker(taps=['layer3', 'layer4'], ")
    assert repr(masker).endswith(f"checkpoint='{checkpoint}')")
    x = torch.rand(2, 3, 32, 32)
    out = masker.explain_with_logits(x)
    logits, maps = masker.classify_and_explain(x)
    torch.testing.assert_close(out.maps, maps)
    torch.testing.assert_close(out.logits, logits)
    # from a method spec, as a command line gives it
    name, options = parse_method_spec(f"masker:{checkpoint}")
    assert (name, options) == ("masker", {"checkpoint": str(checkpoint)})
    torch.testing.assert_close(create_explainer(name, **options).explain(x), maps)


def test_masker_checks_the_classifier_it_is_given(checkpoint: Path) -> None:
    same = make_classifier()  # the weights the checkpoint holds
    assert isinstance(create_explainer("masker", same, checkpoint=checkpoint), Masker)
    assert isinstance(create_explainer("masker", same.model, checkpoint=checkpoint), Masker)  # a raw module too
    with pytest.raises(ValueError, match="trained with another classifier"):
        create_explainer("masker", make_classifier(seed=1), checkpoint=checkpoint)
    with pytest.raises(ValueError, match="needs its checkpoint"):
        create_explainer("masker")
    with pytest.raises(ValueError, match=r"masker does not take option\(s\) \['n_masks'\]"):
        create_explainer("masker", checkpoint=checkpoint, n_masks=3)


def test_register_explainer_is_open() -> None:
    class Constant(Explainer):
        name = "constant_test"
        requires_classifier = False

        def __init__(self, classifier: Classifier | nn.Module | None = None, value: float = 1.0) -> None:
            super().__init__(classifier)
            self.value = value

        def _maps(self, images: Tensor, targets: Tensor | None) -> Tensor:
            return torch.full((images.shape[0], *images.shape[-2:]), self.value)

    register_explainer("constant_test", Constant, aliases=["const_test"])
    assert "constant_test" in available_explainers() and "const_test" not in available_explainers()
    e = create_explainer("const_test", value=2.0)  # requires_classifier read from the class
    assert torch.all(e.explain(torch.rand(1, 3, 8, 8)) == 2.0)
    assert repr(e) == "Constant(value=2.0)"
    assert parse_method_spec("constant_test:3") == ("constant_test", {"value": 3})
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("constant_test", Constant)
    register_explainer("constant_test", Constant, replace=True, requires_classifier=True)
    with pytest.raises(ValueError, match="needs a classifier"):
        create_explainer("constant_test")


def test_parse_method_spec() -> None:
    assert parse_method_spec("rise") == ("rise", {})
    assert parse_method_spec("rise:n_masks=500,batch_size=100") == ("rise", {"n_masks": 500, "batch_size": 100})
    assert parse_method_spec("rise:n_masks=500;batch_size=100") == ("rise", {"n_masks": 500, "batch_size": 100})
    name, opts = parse_method_spec("ep: areas=[0.05, 0.1,0.2], jitter=false, step=none, lr=1e-2")
    assert name == "ep"
    assert opts == {"areas": [0.05, 0.1, 0.2], "jitter": False, "step": None, "lr": 0.01}
    assert parse_method_spec("ep:areas=[0.05,0.1];jitter=false") == ("ep", {"areas": [0.05, 0.1], "jitter": False})
    assert parse_method_spec("centre:kind=box")[1] == {"kind": "box"}
    assert parse_method_spec("x:s='a b'")[1] == {"s": "a b"}
    assert parse_method_spec("gradcam:layer=layer3")[1] == {"layer": "layer3"}
    assert parse_method_spec("x:nested=[[1,2],[3]]")[1] == {"nested": [[1, 2], [3]]}
    # a leading value without '=' is the method's first option
    assert parse_method_spec("masker:runs/x") == ("masker", {"checkpoint": "runs/x"})
    assert parse_method_spec("masker:runs/x;device=cpu") == ("masker", {"checkpoint": "runs/x", "device": "cpu"})
    assert parse_method_spec("rise:500,seed=2") == ("rise", {"n_masks": 500, "seed": 2})
    assert parse_method_spec("gradcam:layer3") == ("gradcam", {"layer": "layer3"})
    for bad in ("rise:n_masks", "rise:500,7", ":a=1", "ep:areas=[0.1", "ep:areas=0.1]", "nope:1"):
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
