import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from masksal.classifiers import Classifier, create_classifier, load_weights, read_state_dict


def test_one_forward_gives_logits_and_taps():
    clf = create_classifier("small_resnet18", 7, width=8).eval()
    x = torch.rand(2, 3, 32, 32)
    logits, feats = clf.forward_with_taps(x)
    assert logits.shape == (2, 7)
    assert torch.equal(logits, clf(x))
    assert feats["layer3"].shape == (2, 32, 4, 4) and feats["layer4"].shape == (2, 64, 2, 2)
    assert not clf.model._forward_hooks and all(not m._forward_hooks for m in clf.model.modules())


def test_normalization_belongs_to_the_wrapper():
    inner = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity())
    clf = Classifier(inner, taps=["1"], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = torch.full((1, 3, 2, 2), 0.75)
    assert torch.allclose(clf(x), torch.ones(1, 12))


def test_unknown_tap_is_a_clear_error():
    with pytest.raises(ValueError, match="not modules of the classifier"):
        create_classifier("small_resnet18", 3, taps=["layer9"], width=8)


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown classifier architecture"):
        create_classifier("resnet9000", 3)


def test_torchvision_and_timm_default_taps():
    assert create_classifier("resnet18", 3).taps == ["layer3", "layer4"]
    timm_clf = create_classifier("timm:mobilenetv3_small_050", 3)
    assert len(timm_clf.taps) == 2


def test_weights_round_trip_safetensors_and_torch(tmp_path):
    a = create_classifier("small_resnet18", 3, width=8).eval()
    sd = a.model.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pt")
    x = torch.rand(2, 3, 32, 32)
    for name in ("w.safetensors", "w.pt"):
        b = create_classifier("small_resnet18", 3, weights=tmp_path / name, width=8).eval()
        assert torch.equal(a(x), b(x))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_weight_file_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    with p.open("wb") as f:
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(ValueError, match="evil.pt: not a plain state-dict"):
        read_state_dict(p)


def test_mismatched_weights_name_the_file(tmp_path):
    save_file({"foo": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="x.safetensors: weights do not fit"):
        load_weights(create_classifier("small_resnet18", 3, width=8).model, tmp_path / "x.safetensors")


def test_weights_of_another_shape_give_one_line_naming_the_file_and_a_tensor(tmp_path):
    """A state dict saved from a 3-class ResNet-18 loaded into the default small ResNet or a
    2-class ResNet-18: one line (no many-line RuntimeError from load_state_dict)."""
    import torchvision

    path = tmp_path / "my_resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    with pytest.raises(ValueError) as e:
        create_classifier("resnet18", 2, weights=path)
    msg = str(e.value)
    assert "\n" not in msg and "my_resnet18.pt" in msg and "fc.weight (3, 512) vs (2, 512)" in msg
    with pytest.raises(ValueError) as e:
        create_classifier("small_resnet18", 3, weights=path)
    assert "\n" not in str(e.value) and "classifier.arch" in str(e.value)


def test_a_torchvision_model_is_recognized_and_an_edited_one_stays_custom():
    import torchvision

    from masksal.classifiers import as_classifier

    assert as_classifier(torchvision.models.resnet50(num_classes=5)).spec.arch == "resnet50"
    edited = torchvision.models.resnet18(num_classes=5)
    edited.relu = torch.nn.GELU()  # same weights, another network: it must not load as resnet18
    assert as_classifier(edited).spec.arch == "custom"
    assert as_classifier(torchvision.models.vit_b_16(image_size=64, num_classes=5)).spec.arch == "custom"
