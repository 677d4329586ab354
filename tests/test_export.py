"""Export round trips: the ONNX and TorchScript graphs give PyTorch's logits and maps, any batch size."""

import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from masksal.checkpoint import load_masker, save_checkpoint
from masksal.classifiers import create_classifier
from masksal.cli import app
from masksal.config import load_config
from masksal.export import ClassifyAndExplain, export_masker, require
from masksal.masker import Masker, MaskerConfig, MaskerNet

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]
runner = CliRunner()
SIZE = 32
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)  # not ImageNet's: the graph must carry these


def _randomize_batchnorm(module: torch.nn.Module, seed: int) -> None:
    """Fresh BatchNorms are the identity in eval mode; trained ones are not, so test with these."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _masker(gumbel: bool = False, seed: int = 0) -> Masker:
    torch.manual_seed(seed)
    clf = create_classifier("small_resnet18", 5, width=8, mean=MEAN, std=STD)
    shapes = clf.tap_shapes(SIZE)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps}, MaskerConfig(hidden=8, gumbel=gumbel))
    _randomize_batchnorm(clf, seed)
    _randomize_batchnorm(net, seed + 1)
    masker = Masker(clf, net).eval()
    with torch.no_grad():  # centre the mask logits so that a thresholded map is neither all 0 nor all 1
        net.head.bias -= masker(_images(4, 99))[0].median()
    return masker


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A masker checkpoint (random weights) on disk, as the command line reads it."""
    root = tmp_path_factory.mktemp("export")
    cfg = load_config(None, [f"data.image_size={SIZE}", "masker.hidden=8"])
    m = _masker(seed=3)
    save_checkpoint(root / "m", kind="masker", step=1, cfg=cfg, classifier=m.classifier, masker=m.net)
    return root / "m"


@pytest.fixture(scope="module")
def onnx_file(ckpt, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("onnx") / "masker.onnx"
    r = runner.invoke(app, ["export", str(ckpt), "--format", "onnx", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"images (B, 3, {SIZE}, {SIZE}) in [0, 1] -> logits (B, 5), maps (B, {SIZE}, {SIZE})" in r.output
    return out


def _reference(masker: Masker, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        logits = masker.classifier(x)
    return logits.numpy(), masker.explain(x).numpy()


def test_classify_and_explain_is_the_classifier_and_the_masker_in_one_call():
    masker = _masker()
    x = _images(4, 0)
    with torch.no_grad():
        logits, maps = ClassifyAndExplain(masker).eval()(x)
    ref_logits, ref_maps = _reference(masker, x)
    assert logits.shape == (4, 5) and maps.shape == (4, SIZE, SIZE)
    assert np.allclose(logits.numpy(), ref_logits, atol=1e-6) and np.allclose(maps.numpy(), ref_maps, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_onnx_graph_matches_pytorch_for_any_batch_size(ckpt, onnx_file, batch):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == ["logits", "maps"]
    assert not isinstance(sess.get_inputs()[0].shape[0], int)  # the batch dimension is symbolic
    x = _images(batch, 10 + batch)  # traced with batch 2: 1 and 7 are other sizes
    logits, maps = sess.run(None, {"images": x.numpy()})
    ref_logits, ref_maps = _reference(load_masker(ckpt), x)
    assert maps.shape == (batch, SIZE, SIZE) and logits.shape == (batch, 5)
    assert np.abs(maps - ref_maps).max() <= 1e-4
    assert np.abs(logits - ref_logits).max() <= 1e-4
    assert ref_maps.std() > 1e-3 and np.ptp(ref_logits) > 1e-2  # not a degenerate comparison


def test_torchscript_graph_matches_pytorch_and_keeps_the_masker_mode(tmp_path):
    masker = _masker(gumbel=True, seed=1)
    masker.train()
    path = export_masker(masker, tmp_path / "sub" / "m.pt", format="torchscript", image_size=SIZE)
    assert masker.training and masker.classifier.training  # export leaves the modes as they were
    masker.eval()
    loaded = torch.jit.load(str(path))
    for batch in (1, 5):
        x = _images(batch, batch)
        with torch.no_grad():
            logits, maps = loaded(x)
        ref_logits, ref_maps = _reference(masker, x)
        assert np.abs(logits.numpy() - ref_logits).max() <= 1e-5
        assert set(np.unique(maps.numpy())) == {0.0, 1.0}  # a Gumbel masker thresholds in eval mode
        assert np.array_equal(maps.numpy(), ref_maps)
    assert not list(tmp_path.rglob("*.partial"))


def test_onnx_export_of_a_gumbel_masker_thresholds_as_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    masker = _masker(gumbel=True, seed=2)
    export_masker(masker, tmp_path / "g.onnx", image_size=SIZE, opset=18)
    x = _images(3, 5)
    _, maps = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()})
    with torch.no_grad():
        mask_logits = masker(x)[0][:, 0].numpy()
    ref = (mask_logits > 0).astype(np.float32)
    decided = np.abs(mask_logits) > 1e-4  # a logit within rounding of 0 may fall either way
    assert 0.05 < ref.mean() < 0.95
    assert np.array_equal(maps[decided], ref[decided])


def test_cli_torchscript_round_trip(ckpt, tmp_path):
    out = tmp_path / "m.pt"
    r = runner.invoke(app, ["export", str(ckpt), "--format", "torchscript", "--out", str(out)])
    assert r.exit_code == 0, r.output
    x = _images(3, 7)
    with torch.no_grad():
        logits, maps = torch.jit.load(str(out))(x)
    ref_logits, ref_maps = _reference(load_masker(ckpt), x)
    assert np.abs(maps.numpy() - ref_maps).max() <= 1e-5 and np.abs(logits.numpy() - ref_logits).max() <= 1e-5


@pytest.mark.parametrize("args, words", [
    (["--format", "tflite"], "--format must be one of onnx, torchscript"),
    (["--format", "torchscript", "CKPT_IS_EMPTY"], "not a masksal checkpoint"),
])
def test_cli_bad_input_is_one_line(ckpt, tmp_path, args, words):
    target = str(ckpt)
    if "CKPT_IS_EMPTY" in args:
        (tmp_path / "empty").mkdir()
        target, args = str(tmp_path / "empty"), args[:-1]
    r = runner.invoke(app, ["export", target, *args, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]
    assert not (tmp_path / "x").exists()


def test_missing_package_is_one_line(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    with pytest.raises(ImportError, match=r"^onnxscript is not installed: pip install 'masksal\[export\]'$"):
        require("onnxscript")
    r = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2
    assert r.output.strip() == "error: onnxscript is not installed: pip install 'masksal[export]'"


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="export format must be one of"):
        export_masker(_masker(), "x.bin", format="tflite", image_size=SIZE)  # type: ignore[arg-type]
