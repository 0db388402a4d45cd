"""Backbone weights from torchvision state dicts and from files (edge.models.pretrained).

Every torchvision state dict here comes from a model built with random weights (``weights=None``, seeded);
nothing is downloaded: ``torch.hub.download_url_to_file`` raises wherever ``--pretrained`` is exercised.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error

import pytest
import torch

from edge.errors import ModelError
from edge.models import build_model
from edge.models.pretrained import (
    backbone_of,
    load_backbone_state,
    load_backbone_weights,
    load_pretrained_backbone,
    summary_line,
    torchvision_weights_name,
)

torchvision = pytest.importorskip("torchvision")


def _tv(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None).eval()


def _r50_fpn() -> torch.nn.Module:
    return build_model("retinanet", num_classes=2, input_size=(128, 128), variant="r50-fpn")


@pytest.fixture
def no_download(monkeypatch):
    """Any download attempt fails as it does without network (and is recorded)."""
    calls = []

    def refuse(url, dst, *args, **kwargs):
        calls.append((url, dst))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return calls


@pytest.fixture
def hub_dir(tmp_path):
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


def test_resnet50_state_dict_loads_every_backbone_tensor_of_r50_fpn(tmp_path, caplog):
    tv = _tv("resnet50")
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    model = _r50_fpn()
    backbone = backbone_of(model).module
    with caplog.at_level(logging.INFO, logger="edge.models.pretrained"):
        report = load_backbone_weights(model, str(path))
    assert report.loaded == len(backbone.state_dict()) == 318 and report.total == 318
    assert report.missing == [] and report.unexpected == ["fc.weight", "fc.bias"]
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.source == str(path) and report.backbone == "resnet50"
    ours, theirs = backbone.state_dict(), tv.state_dict()
    for mine, file_key in [("stem.0.weight", "conv1.weight"), ("stem.1.running_var", "bn1.running_var"),
                           ("layer1.0.shortcut.0.weight", "layer1.0.downsample.0.weight"),
                           ("layer3.5.bn3.bias", "layer3.5.bn3.bias"), ("layer4.2.conv2.weight", "layer4.2.conv2.weight")]:
        assert torch.equal(ours[mine], theirs[file_key]), mine
    line = "loaded 318 tensors into the resnet50 backbone (of 318) from"
    assert line in report.summary() and "0 missing, 2 unexpected (fc.weight, fc.bias)" in report.summary()
    assert line in caplog.text
    assert summary_line(report.to_card()) == report.summary()


@pytest.mark.parametrize("name, arch, kwargs", [
    ("resnet18", "retinanet", {"width": 1.0}),
    ("vgg16", "ssd", {"variant": "ssd300"}),
])
def test_mapped_backbone_computes_what_torchvision_computes(name, arch, kwargs):
    """Not only the names: the mapped backbone gives torchvision's own feature maps on the same input."""
    tv = _tv(name)
    model = build_model(arch, num_classes=2, input_size=(300, 300) if arch == "ssd" else (128, 128), **kwargs)
    load_backbone_state(model, tv.state_dict(), source=name)
    backbone = backbone_of(model).module.eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        if name == "resnet18":
            expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
            got = backbone(x)[-1]
        else:  # conv5_3 + ReLU: torchvision's features[:30], ours stage1 then stage2 up to pool5
            expected = tv.features[:30](x)
            got = backbone.stage2[:7](backbone.stage1(x))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_vgg16_fc6_fc7_are_decimated_from_the_classifier():
    tv = _tv("vgg16")
    model = build_model("ssd", num_classes=2, variant="ssd300")
    report = load_backbone_state(model, tv.state_dict(), source="vgg16")
    ours, theirs = backbone_of(model).module.state_dict(), tv.state_dict()
    assert report.missing == ["l2norm.weight"]  # SSD's own layer, not in VGG16
    assert report.unexpected == ["classifier.6.weight", "classifier.6.bias"]  # fc8, ImageNet's 1000 classes
    assert report.loaded == 30 and len(report.converted) == 4
    assert torch.equal(ours["stage1.21.weight"], theirs["features.21.weight"])  # conv4_3
    assert torch.equal(ours["stage2.5.weight"], theirs["features.28.weight"])  # conv5_3
    fc6 = theirs["classifier.0.weight"].reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
    assert torch.equal(ours["stage2.8.weight"], fc6) and torch.equal(ours["stage2.8.bias"],
                                                                      theirs["classifier.0.bias"][::4])
    assert torch.equal(ours["stage2.10.weight"], theirs["classifier.3.weight"][::4, ::4].reshape(1024, 1024, 1, 1))


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(_tv("resnet18").state_dict(), path)
    model = _r50_fpn()
    before = {k: v.clone() for k, v in backbone_of(model).module.state_dict().items()}
    with pytest.raises(ModelError) as err:
        load_backbone_weights(model, str(path))
    text = str(err.value)
    assert "'layer1.0.conv1.weight'" in text and "[64, 64, 3, 3]" in text and "[64, 64, 1, 1]" in text
    assert "resnet50 at width 1" in text
    after = backbone_of(model).module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded


def test_a_file_for_another_backbone_loads_nothing_and_says_so(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(_tv("resnet18").state_dict(), path)
    model = build_model("yolov3-tiny", num_classes=2, input_size=(96, 96), width=0.25)
    with pytest.raises(ModelError, match=r"none of its 122 tensors fit the darknet-tiny backbone.*conv1.weight"):
        load_backbone_weights(model, str(path))


def test_edge_files_load_by_their_own_names(tmp_path):
    """A whole detector's state dict, an edge checkpoint ({"model": ...}), a {"state_dict": ...} wrapper with
    DDP's ``module.`` prefix: the backbone's tensors load, the rest is unexpected."""
    torch.manual_seed(3)
    src = build_model("ssd", num_classes=3, input_size=(128, 128), width=0.25)
    state = src.state_dict()
    n_backbone = len(backbone_of(src).module.state_dict())
    files = {
        "plain.pth": state,
        "checkpoint.pt": {"format": "edge-checkpoint", "card": {"arch": "ssd"}, "model": state},
        "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
    }
    for name, payload in files.items():
        torch.save(payload, tmp_path / name)
        torch.manual_seed(4)
        model = build_model("ssd", num_classes=3, input_size=(128, 128), width=0.25)
        report = load_backbone_weights(model, str(tmp_path / name))
        assert report.loaded == n_backbone and report.missing == [], name
        assert len(report.unexpected) == len(state) - n_backbone, name
        got = backbone_of(model).module.state_dict()
        assert all(torch.equal(got[k], state[f"features.backbone.{k}"]) for k in got), name


def test_unreadable_files_are_clear_errors(tmp_path):
    model = _r50_fpn()
    with pytest.raises(ModelError, match="no such file"):
        load_backbone_weights(model, str(tmp_path / "missing.pth"))
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(ModelError, match="not a weights-only torch file"):
        load_backbone_weights(model, str(tmp_path / "text.pth"))
    torch.save({"epoch": 3, "names": ["a"]}, tmp_path / "meta.pth")
    with pytest.raises(ModelError, match="holds no state dict"):
        load_backbone_weights(model, str(tmp_path / "meta.pth"))


@pytest.mark.parametrize("arch, kwargs, expected", [
    ("ssd", {}, r"mobilenet backbone, and torchvision publishes no MobileNetV1 weights.*--backbone-weights "
                r"FILE.pth.*variant=ssd300"),
    ("yolov3-tiny", {"width": 1.0}, r"darknet-tiny backbone.*no yolov3-tiny trunk weights.*--backbone-weights"),
    ("yolov2", {"width": 1.0}, r"darknet19 backbone.*no Darknet-19 weights"),
    ("retinanet", {}, r"width multiplier 0.5; ImageNet weights exist for width 1.0 only.*width=1.0"),
])
def test_pretrained_refuses_backbones_without_weights(arch, kwargs, expected, no_download):
    model = build_model(arch, num_classes=2, input_size=(128, 128), **kwargs)
    with pytest.raises(ModelError, match=expected):
        load_pretrained_backbone(model)
    assert no_download == []


def test_pretrained_without_network_names_the_file_to_place(hub_dir, no_download):
    model = build_model("retinanet", num_classes=2, input_size=(128, 128), width=1.0)
    assert torchvision_weights_name(model) == "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(ModelError) as err:
        load_pretrained_backbone(model)
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    target = hub_dir / "checkpoints" / "resnet18-f37072fd.pth"
    assert no_download == [(url, str(target))]
    text = str(err.value)
    assert f"place the file as {target}" in text and url in text and "Temporary failure" in text
    assert not target.exists()


def test_pretrained_loads_the_file_placed_in_the_hub_cache(hub_dir, no_download, caplog):
    tv = _tv("resnet50", seed=7)
    target = hub_dir / "checkpoints" / "resnet50-0676ba61.pth"
    target.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), target)
    model = _r50_fpn()
    with caplog.at_level(logging.INFO, logger="edge.models.pretrained"):
        report = load_pretrained_backbone(model)
    assert no_download == []
    assert report.source == "torchvision:ResNet50_Weights.IMAGENET1K_V1" and report.file == str(target)
    assert report.sha256 == hashlib.sha256(target.read_bytes()).hexdigest() and report.loaded == 318
    assert torch.equal(backbone_of(model).module.state_dict()["layer2.1.conv2.weight"],
                       tv.state_dict()["layer2.1.conv2.weight"])
    # torch.hub checks the hash only when it downloads; edge compares the placed file's with its name's
    assert "does not start with 0676ba61" in caplog.text
