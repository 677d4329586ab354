import pytest

from masksal.config import ExperimentConfig, load_config


def test_defaults_are_the_paper_final_objectives():
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.objectives.masked_in and cfg.objectives.masked_out == "entropy"
    assert cfg.objectives.area == "gated"
    assert cfg.classifier.taps is None  # top two stages by default


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ntrain:\n  mode: ca\n  steps: 7\nobjectives:\n  masked_out: ce\n")
    cfg = load_config(p, ["train.steps=9", "masker.gumbel=true", "data.families=[digits]"])
    assert cfg.name == "x" and cfg.masker_train.mode == "ca" and cfg.masker_train.steps == 9
    assert cfg.objectives.masked_out == "ce" and cfg.masker.gumbel is True
    assert cfg.data.families == ["digits"]


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml\.masker_train: unknown key 'stepz'"):
        load_config(p)


def test_bad_value_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="train.mode"):
        load_config(None, ["train.mode=sometimes"])
    with pytest.raises(ValueError, match="expected section.key=value"):
        load_config(None, ["train.steps"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
