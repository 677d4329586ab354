"""Config values are typed and ranged; every bad file, key or value is one line naming it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masksal.config import ExperimentConfig, load_config, with_overrides

from .conftest import cli


@pytest.mark.parametrize("item,expected", [
    ("masker_train.masker_lr=1e-4", 1e-4),  # YAML 1.1 reads 1e-4 as a string
    ("masker_train.masker_lr=0.001", 0.001),
    ("masker_train.steps=5", 5),
    ("masker_train.steps=5.0", 5),
])
def test_typed_values_are_converted(item, expected):
    key, _ = item.split("=")
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [item]), section), name) == expected


def test_yaml_values_are_typed_too(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("masker_train:\n  masker_lr: 1e-4\n  steps: 10\n")
    cfg = load_config(p)
    assert cfg.masker_train.masker_lr == 1e-4 and isinstance(cfg.masker_train.masker_lr, float)


@pytest.mark.parametrize("item,names", [
    ("masker_train.steps=-1", ["masker_train.steps", "-1", ">= 1"]),
    ("masker_train.steps=0", ["masker_train.steps", ">= 1"]),
    ("masker_train.steps=five", ["masker_train.steps", "five", "integer"]),
    ("masker_train.batch_size=0", ["masker_train.batch_size", ">= 1"]),
    ("classifier_train.epochs=0", ["classifier_train.epochs"]),
    ("masker_train.steps.x=1", ["masker_train.steps", "not a section"]),
    ("masker_train.mode=sometimes", ["masker_train.mode", "fix, ca, pool"]),
    ("masker_train.masker_lr=fast", ["masker_train.masker_lr", "number"]),
    ("masker_train.masker_lr=.inf", ["masker_train.masker_lr", "finite"]),
    ("masker.gumbel=maybe", ["masker.gumbel", "true or false"]),
    ("nosuch.key=1", ["nosuch"]),
    ("masker_train", ["expected section.key=value"]),
])
def test_bad_overrides_are_one_line(tmp_path, item, names):
    r = cli("train", "--out", tmp_path / "m", "--classifier", tmp_path / "none", "--set", item)
    r.assert_one_line_error(*names)


@pytest.mark.parametrize("text,names", [
    ("- a\n- b\n", ["c.yaml", "mapping"]),
    ("masker_train:\n  steps: \"five\"\n", ["c.yaml", "masker_train.steps", "five"]),
    ("masker_train: [1, 2]\n", ["c.yaml", "masker_train", "mapping"]),
    ("masker_train:\n  stepz: 3\n", ["c.yaml", "stepz"]),
    ("masker_train:\n  steps: 3\n bad indent: 1\n", ["c.yaml", "YAML"]),
])
def test_bad_files_are_one_line(tmp_path, text, names):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    r = cli("train", "--out", tmp_path / "m", "--config", p)
    r.assert_one_line_error(*names)


def test_missing_config_file_names_the_packaged_ones(tmp_path):
    r = cli("train", "--out", tmp_path / "m", "--config", tmp_path / "nope.yaml")
    r.assert_one_line_error("nope.yaml", "final")


def test_a_packaged_config_loads_by_name():
    assert load_config("final").masker_train.mode == "ca"
    assert load_config("ablation/both_fix").masker_train.mode == "fix"


def test_another_architecture_drops_the_built_in_models_settings():
    cfg = with_overrides(load_config("final"), {"classifier.arch": "resnet18"})
    assert cfg.classifier.kwargs == {}  # small_resnet18's width does not follow to resnet18


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                       st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
def test_any_value_of_any_field_is_accepted_or_one_line(value):
    """Every field, any value: a valid config, or a ValueError of one line naming the field."""
    for key in ("masker_train.steps", "masker_train.masker_lr", "masker.gumbel", "data.families",
                "data.examples_per_class", "objectives.masked_out", "classifier.kwargs"):
        try:
            with_overrides(ExperimentConfig(), {key: value})
        except ValueError as e:
            msg = str(e)
            assert "\n" not in msg and key in msg, msg
