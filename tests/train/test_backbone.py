"""``edge train --pretrained / --backbone-weights FILE / --freeze-backbone N`` on a few real BCCD images:
what loads, what the card records, which epochs leave the backbone untouched, and the clear errors.

torchvision state dicts come from models built with random weights (seeded); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error

import pytest
import torch

from edge.cli.main import main
from edge.errors import EdgeError
from edge.models import build_model
from edge.models.pretrained import backbone_of
from edge.train.config import TrainConfig
from edge.train.loop import config_for_resume, train

from .test_loop import tiny_dataset_yaml

torchvision = pytest.importorskip("torchvision")


def _backbone(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_cli_r50_fpn_backbone_weights_from_a_torchvision_file(tmp_path, capsys):
    """The issue's example: a torchvision resnet50 state dict into RetinaNet r50-fpn, frozen for the one epoch
    it trains, so the saved backbone is the file's, tensor for tensor."""
    torch.manual_seed(0)
    tv_state = torchvision.models.resnet50(weights=None).state_dict()
    weights = tmp_path / "resnet50.pth"
    torch.save(tv_state, weights)
    yaml = tiny_dataset_yaml(tmp_path, n_train=2, n_val=1)
    out = tmp_path / "run"
    code = main(["train", "--model", "retinanet", "--model-arg", "variant=r50-fpn", "--backbone-weights",
                 str(weights), "--freeze-backbone", "1", "--data", str(yaml), "--imgsz", "128", "--epochs", "1",
                 "--batch", "2", "--val-split", "none", "--precise-bn", "0", "--threads", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert (f"backbone: loaded 318 tensors into the resnet50 backbone (of 318) from {weights}; 0 missing, "
            "2 unexpected (fc.weight, fc.bias)") in printed

    last = torch.load(out / "last.pt", weights_only=True)
    saved = _backbone(last["model"], "features.backbone.")
    assert len(saved) == 318
    for ours, theirs in [("stem.0.weight", "conv1.weight"), ("stem.1.running_mean", "bn1.running_mean"),
                         ("layer2.0.shortcut.0.weight", "layer2.0.downsample.0.weight"),
                         ("layer4.2.bn3.weight", "layer4.2.bn3.weight")]:
        assert torch.equal(saved[ours], tv_state[theirs]), ours
    assert last["train_config"]["freeze_backbone"] == 1
    for card in (last["card"], torch.load(out / "best.pt", weights_only=True)["card"]):
        prov = card["backbone_weights"]
        assert prov["source"] == str(weights) and prov["file"] == str(weights.resolve())
        assert prov["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert (prov["loaded"], prov["missing"], prov["unexpected"]) == (318, 0, 2)
        assert prov["unexpected_names"] == ["fc.weight", "fc.bias"]
        assert card["training"]["backbone_weights"] == str(weights) and card["training"]["freeze_backbone"] == 1


def test_freeze_backbone_one_epoch_then_train_it_and_resume_the_same_way(tmp_path, caplog):
    yaml = tiny_dataset_yaml(tmp_path)
    torch.manual_seed(11)
    start = build_model("yolov3-tiny", num_classes=3, input_size=(96, 96), width=0.25).state_dict()
    weights = tmp_path / "tiny.pth"
    torch.save({"model": start, "epoch": 0}, weights)  # an edge-style file: keys in edge's own names
    base = dict(model="yolov3-tiny", data=str(yaml), imgsz=96, epochs=2, batch=2, model_args={"width": 0.25},
                warmup_epochs=1.0, save_period=1, threads=1, seed=5, backbone_weights=str(weights),
                freeze_backbone=1)
    run_a = tmp_path / "a"
    with caplog.at_level(logging.INFO, logger="edge"):
        result = train(TrainConfig(out=str(run_a), **base))
    assert "epoch 1: backbone frozen (no gradients, BatchNorm in eval mode) through epoch 1" in caplog.text
    assert "epoch 2: backbone unfrozen, all layers train from here" in caplog.text
    assert result.backbone_weights["loaded"] == len(_backbone(start, "backbone."))

    file_backbone = _backbone(start, "backbone.")
    epoch1 = torch.load(run_a / "epoch1.pt", weights_only=True)
    epoch2 = torch.load(run_a / "epoch2.pt", weights_only=True)
    # epoch 1: every backbone tensor is the file's (weights and BatchNorm statistics, precise BN included)
    for name, value in file_backbone.items():
        assert torch.equal(epoch1["model"][f"backbone.{name}"], value), name
    # ... and the optimizer stepped every other parameter, none of the backbone's
    model = build_model("yolov3-tiny", num_classes=3, input_size=(96, 96), width=0.25)
    n_backbone = sum(1 for _ in backbone_of(model).module.parameters())
    n_params = sum(len(g["params"]) for g in epoch1["optimizer"]["param_groups"])
    assert len(epoch1["optimizer"]["state"]) == n_params - n_backbone and n_backbone > 0
    # epoch 2: the backbone trains
    changed = [n for n, v in file_backbone.items() if v.is_floating_point()
               and not torch.equal(epoch2["model"][f"backbone.{n}"], v)]
    assert len(changed) > len(file_backbone) // 2

    # resumed after the frozen epoch: the backbone trains, as in the uninterrupted run
    caplog.clear()
    run_b = tmp_path / "b"
    cfg_b = config_for_resume(str(run_a / "epoch1.pt"), out=str(run_b))
    assert cfg_b.freeze_backbone == 1 and cfg_b.backbone_weights == str(weights)
    with caplog.at_level(logging.INFO, logger="edge"):
        train(cfg_b)
    assert "the backbone was frozen for the first 1 epochs; all layers train from here" in caplog.text
    last_b = torch.load(run_b / "last.pt", weights_only=True)
    for name, value in epoch2["model"].items():
        assert torch.allclose(value.float(), last_b["model"][name].float(), atol=1e-6, rtol=1e-5), name
    assert last_b["card"]["backbone_weights"] == epoch2["card"]["backbone_weights"]  # kept from the checkpoint

    # the export sidecar carries the provenance on
    out = tmp_path / "onnx"
    assert main(["export", str(run_a / "best.pt"), "--out", str(out), "--no-simplify"]) == 0
    side = json.loads(next(out.glob("*.json")).read_text())
    assert side["source"]["backbone_weights"]["source"] == str(weights)
    assert side["source"]["backbone_weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_pretrained_without_network_is_one_clear_line(tmp_path, monkeypatch, capsys, caplog):
    def refuse(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        yaml = tiny_dataset_yaml(tmp_path, n_train=2, n_val=1)
        out = tmp_path / "run"
        code = main(["train", "--model", "retinanet", "--model-arg", "width=1.0", "--pretrained", "--data",
                     str(yaml), "--imgsz", "128", "--epochs", "1", "--threads", "1", "--out", str(out)])
    finally:
        torch.hub.set_dir(before)
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    target = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert f"place the file as {target}" in errors[0]
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in errors[0]
    assert not out.exists()


def test_backbone_options_are_checked_before_the_run(tmp_path):
    yaml = tiny_dataset_yaml(tmp_path, n_train=2, n_val=1)
    (tmp_path / "w.pth").write_bytes(b"")
    base = dict(model="ssd", data=str(yaml), out=str(tmp_path / "x"))
    with pytest.raises(EdgeError, match="freeze_backbone = 2: expected 0 when the backbone starts from random"):
        TrainConfig(freeze_backbone=2, **base).validate()
    with pytest.raises(EdgeError, match="one source of backbone weights"):
        TrainConfig(pretrained=True, backbone_weights=str(tmp_path / "w.pth"), **base).validate()
    with pytest.raises(EdgeError, match="an existing state dict file"):
        TrainConfig(backbone_weights=str(tmp_path / "missing.pth"), **base).validate()
    with pytest.raises(EdgeError, match="freeze_backbone = -1"):
        TrainConfig(pretrained=True, freeze_backbone=-1, **base).validate()
    # --pretrained on a backbone without published weights: refused with the fix before the data loads
    # (the dataset YAML named here does not even exist)
    with pytest.raises(EdgeError, match="torchvision publishes no MobileNetV1 weights.*variant=ssd300"):
        train(TrainConfig(pretrained=True, epochs=1, threads=1, **dict(base, data=str(tmp_path / "no.yaml"))))
    with pytest.raises(EdgeError, match="width multiplier 0.5; ImageNet weights exist for width 1.0 only"):
        train(TrainConfig(pretrained=True, epochs=1, threads=1, **dict(base, model="retinanet")))
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_torchrun_freezes_then_unfreezes_the_backbone(tmp_path):
    """DDP with a backbone frozen for epoch 1 and trained in epoch 2 (parameters without gradients, then with):
    both ranks end identical, epoch 1 left the file's backbone as it was."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    yaml = tiny_dataset_yaml(tmp_path, n_train=4, n_val=2)
    torch.manual_seed(2)
    start = build_model("yolov3-tiny", num_classes=3, input_size=(64, 64), width=0.25).state_dict()
    weights = tmp_path / "tiny.pth"
    torch.save(start, weights)
    out, hashes = tmp_path / "run", tmp_path / "hashes"
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "edge.cli.main", "train", "--model", "yolov3-tiny", "--data", str(yaml), "--imgsz", "64",
        "--epochs", "2", "--batch", "1", "--out", str(out), "--model-arg", "width=0.25", "--threads", "1",
        "--val-split", "none", "--rank-hash-dir", str(hashes), "--save-period", "1",
        "--backbone-weights", str(weights), "--freeze-backbone", "1",
    ]
    proc = subprocess.run(cmd, cwd=str(repo), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = json.loads((hashes / "rank0.json").read_text())
    r1 = json.loads((hashes / "rank1.json").read_text())
    assert r0["params"] == r1["params"] and r0["iteration"] == 4
    epoch1 = torch.load(out / "epoch1.pt", weights_only=True)["model"]
    epoch2 = torch.load(out / "epoch2.pt", weights_only=True)["model"]
    backbone = [k for k in start if k.startswith("backbone.")]
    assert all(torch.equal(epoch1[k], start[k]) for k in backbone)
    assert any(not torch.equal(epoch2[k], start[k]) for k in backbone if start[k].is_floating_point())
