"""LE / OM / F1 with CASM's scorer settings against a re-implementation of kondiz/casme's ``score.py``.

CASM binarizes with its own rule (about the ``N * mean(m)`` largest pixels, float32 torch
``avg_pool2d`` / ``kthvalue``), keeps the inclusive box of the largest 4-connected component and
handles ground truth as SI does. ``LocalizationError(binarize="casm", geometry="casm")`` must give
its numbers per image on masker-like maps and edge cases (constant maps, 1-px bars, a single
pixel, noise, tied components).
"""

from __future__ import annotations

import pytest
import torch
from reference_scorers import casm_localization, edge_case_data, one, si_localization

from masksal.metrics import LocalizationError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_le_om_f1_match_casms_scorer_per_image() -> None:
    masks, batch, gt_int, predictions = edge_case_data(seed=2)
    correct = (predictions == batch.labels).numpy()
    le, om, f1 = casm_localization(masks, gt_int, correct)
    assert 0 < le.sum() < len(le) and f1.max() > 0.5  # the cases are not all trivial
    for i in range(len(masks)):
        metric = LocalizationError(binarize="casm", geometry="casm")
        metric.update(torch.from_numpy(masks[i:i + 1]), one(batch, i), predictions=predictions[i:i + 1])
        out = metric.compute()
        assert out["le"] / 100 == le[i], f"image {i}"
        assert out["om"] / 100 == om[i], f"image {i}"
        assert out["f1"] / 100 == pytest.approx(f1[i], abs=1e-6), f"image {i}"
    whole = LocalizationError(binarize="casm", geometry="casm")
    whole.update(torch.from_numpy(masks), batch, predictions=predictions)
    out = whole.compute()
    assert out["le"] / 100 == pytest.approx(le.mean(), abs=1e-12)
    assert out["om"] / 100 == pytest.approx(om.mean(), abs=1e-12)
    assert out["f1"] / 100 == pytest.approx(f1.mean(), abs=1e-6)


def test_casms_box_is_sis_box_plus_its_last_row_and_column() -> None:
    # Same binarization, the two scorers differ only in the predicted box: CASM's 1-px bar has an
    # area, SI's has none, so LE differs on these data.
    masks, batch, gt_int, predictions = edge_case_data(seed=2)
    correct = (predictions == batch.labels).numpy()
    le_casm_mean = LocalizationError(geometry="casm")
    le_casm_mean.update(torch.from_numpy(masks), batch, predictions=predictions)
    le_si, _, _ = si_localization(masks, gt_int, correct)
    assert le_casm_mean.compute()["le"] / 100 != pytest.approx(le_si.mean())
