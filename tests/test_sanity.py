"""Sanity checks: parameter randomization touches exactly the units it names, similarity scores
behave on known cases, and the whole check runs on a tiny trained masker."""

import json

import numpy as np
import pytest
import torch

from masksal.classifiers import create_classifier
from masksal.sanity import (
    SanityBudget,
    cascading_randomization,
    hog_similarity,
    independent_randomization,
    map_similarities,
    parameterized_units,
    run_sanity_checks,
    spearman_similarity,
    ssim_similarity,
)

TINY = [
    "data.image_size=32", "data.n_train=120", "data.n_test=40", "data.families=[digits]", "data.cache_dir=null",
    "classifier.kwargs={width: 8}", "classifier_train.epochs=1", "classifier_train.batch_size=16",
    "train.batch_size=8", "train.steps=4", "masker.hidden=8",
]
UNITS = ["conv1", "bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0",
         "layer4.1", "fc"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 10, width=8).model


def _changed(before, model):
    """Names of the parameters and buffers whose values differ from ``before``."""
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def _params_of(model, units):
    return {f"{u}.{k}" for u in units for k, _ in model.get_submodule(u).named_parameters()}


def test_units_are_the_resnet_blocks_input_to_output(model):
    assert parameterized_units(model) == UNITS
    assert parameterized_units(model, depth=1) == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_cascading_randomization_changes_the_randomized_units_and_nothing_else(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    for unit in cascading_randomization(model):
        seen.append(unit)
        # Exactly the parameters of the units randomized so far (top down) differ; buffers never.
        assert _changed(before, model) == _params_of(model, seen)
    assert seen == UNITS[::-1]
    assert _changed(before, model) == set()  # restored when the iteration ends


def test_independent_randomization_changes_one_unit_at_a_time(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for unit in independent_randomization(model):
        assert _changed(before, model) == _params_of(model, [unit])
    assert _changed(before, model) == set()


def test_bottom_up_cascading_randomizes_from_the_input(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    for unit in cascading_randomization(model, order="bottom_up"):
        seen.append(unit)
        assert _changed(before, model) == _params_of(model, seen)
    assert seen == UNITS and _changed(before, model) == set()
    with pytest.raises(ValueError, match="order"):
        next(cascading_randomization(model, order="sideways"))


def test_abandoned_randomization_restores_the_model_and_is_seeded(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = cascading_randomization(model, seed=3)
    next(gen)
    first = model.fc.weight.detach().clone()
    gen.close()
    assert _changed(before, model) == set()
    gen = cascading_randomization(model, seed=3)
    next(gen)
    assert torch.equal(model.fc.weight, first)  # same seed, same draw
    gen.close()


def test_similarities_of_identical_maps_are_one_and_of_independent_noise_about_zero():
    rng = np.random.default_rng(0)
    a, b = rng.random((24, 32, 32)), rng.random((24, 32, 32))
    same = map_similarities(a, a.copy())
    assert all(v == pytest.approx(1.0) for v in same.values())
    noise = map_similarities(a, b)
    assert set(noise) == {"spearman", "spearman_abs", "ssim", "hog"}
    assert all(abs(v) < 0.1 for v in noise.values()), noise


def test_spearman_on_hand_computed_cases():
    a = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    assert spearman_similarity(a, -a)[0] == pytest.approx(-1.0)
    assert spearman_similarity(a, a ** 3)[0] == pytest.approx(1.0)  # ranks only
    # |0.5 - m| of [0, 1, 2, 3] is [0.5, 0.5, 1.5, 2.5]; of [1, 0, 3, 2] it is [0.5, 0.5, 2.5, 1.5].
    b = np.array([[[1.0, 0.0], [3.0, 2.0]]])
    assert spearman_similarity(a, b, centre=0.5)[0] == pytest.approx(7 / 9)
    assert np.isnan(spearman_similarity(np.zeros((1, 2, 2)), a)[0])  # a constant map has no ranks


def test_ssim_and_hog_see_structure_not_scale():
    rng = np.random.default_rng(1)
    a = rng.random((3, 32, 32))
    assert ssim_similarity(a, 5 * a + 2) == pytest.approx(np.ones(3))
    assert hog_similarity(a, 5 * a + 2) == pytest.approx(np.ones(3))


def test_sanity_checks_run_end_to_end_on_a_tiny_masker(tmp_path):
    from masksal.config import load_config
    from masksal.training import train_classifier, train_masker

    clf_dir, masker_dir = tmp_path / "clf", tmp_path / "masker"
    train_classifier(load_config(None, TINY), clf_dir, progress=False)
    train_masker(load_config(None, [*TINY, f"classifier.weights={clf_dir}"]), masker_dir, progress=False)
    budget = SanityBudget(n_images=6, retrain_steps=1, retrain_images=24, data_epochs=1, data_masker_steps=1,
                          batch_size=8, smooth_samples=2)
    res = run_sanity_checks(masker_dir, tmp_path / "out", budget=budget, progress=False, log=lambda _m: None)
    assert list(res["cascading"]) == UNITS[::-1] and list(res["independent"]) == UNITS[::-1]
    assert res["images"] == 6
    top = res["cascading"]["fc"]
    assert set(top) == {"masker", "gradcam", "saliency", "masker_retrained"}
    # Randomizing fc alone cannot change maps read from layer3/layer4: the masker is unchanged.
    assert top["masker"]["spearman"] == pytest.approx(1.0)
    assert res["data_randomization"]["shuffled_labels"]["similarity"]["masker"]["ssim"] <= 1.0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["units"] == UNITS
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Cascading randomization" in html and "Data randomization" in html
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"| masker | {top['masker']['spearman']:.2f} |" in md  # the fc column of the cascading table
    assert "| shuffled labels |" in md
    # The repaired tests: smooth MPRT bottom-up over every unit, efficient MPRT for every method.
    assert list(res["smooth_mprt"]) == UNITS and set(res["smooth_mprt"]["fc"]) == {"masker", "gradcam", "saliency"}
    assert set(res["efficient_mprt"]) == {"masker", "gradcam", "saliency", "masker_retrained"}
    assert all(0.0 <= d["pass_rate"] <= 1.0 and d["entropy_trained"] >= 0 for d in res["efficient_mprt"].values())
    assert "Efficient MPRT" in html and "Smooth MPRT" in html and "## Efficient MPRT" in md
