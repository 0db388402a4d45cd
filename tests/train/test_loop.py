"""Checkpoints (weights_only, model card, rebuild from the card) and the training loop end to end on a few
real BCCD images: files written, card contents, resume continuing the very same run."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch

from edge.errors import EdgeError, ModelError
from edge.models import build_model
from edge.train.checkpoint import (
    build_card,
    dataset_hash,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    strip_checkpoint,
)
from edge.train.config import TrainConfig
from edge.train.loop import config_for_resume, train
from tests.paths import BCCD

CLASSES = ["RBC", "WBC", "Platelets"]

# small configurations of every family (fast to build and run at 96-128 pixels)
SMALL = {
    "ssd": ({"width": 0.25}, 128),
    "yolov2": ({"width": 0.125}, 96),
    "yolov3": ({"width": 0.125, "depth": 0.34}, 96),
    "yolov3-tiny": ({"width": 0.25}, 96),
    "retinanet": ({"width": 0.25, "fpn_channels": 16, "head_depth": 1}, 128),
}


def tiny_dataset_yaml(tmp_path: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """A dataset YAML over the real BCCD folder listing a few image ids per split (no copies)."""
    if not (BCCD / "ImageSets" / "Main" / "train.txt").exists():
        pytest.skip(f"BCCD dataset not found at {BCCD}")
    train_ids = (BCCD / "ImageSets/Main/train.txt").read_text().split()[:n_train]
    val_ids = (BCCD / "ImageSets/Main/val.txt").read_text().split()[:n_val]
    (tmp_path / "train.txt").write_text("\n".join(train_ids) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(val_ids) + "\n")
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(
        f"name: bccd-tiny\nroot: {BCCD}\nformat: voc\n"
        f"splits:\n  train: {tmp_path / 'train.txt'}\n  val: {tmp_path / 'val.txt'}\n"
        "names: [RBC, WBC, Platelets]\n"
    )
    return yaml


# ---------------------------------------------------------------------------------------------------
# checkpoints


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_checkpoint_round_trip_rebuilds_from_card_alone(tmp_path, arch):
    torch.manual_seed(0)
    kwargs, size = SMALL[arch]
    model = build_model(arch, num_classes=3, input_size=(size, size), **kwargs).eval()
    card = build_card(model, class_names=CLASSES, data={"hash": "abc"}, metrics={"map50": 0.5}, epochs=3)
    path = save_checkpoint(tmp_path / "m.pt", {"card": card, "model": model.state_dict()})

    raw = torch.load(path, weights_only=True)  # no pickled objects anywhere
    assert raw["format"] == "edge-checkpoint"
    c = raw["card"]
    assert c["arch"] == arch and c["class_names"] == CLASSES and c["num_classes"] == 3
    assert c["input_size"] == [size, size]
    assert c["normalization"] == model.normalization.to_dict()
    assert c["input"]["channel_order"] == "RGB" and c["input"]["resize"] == "letterbox"
    assert c["anchors"] == build_card(model, class_names=CLASSES)["anchors"]
    assert c["config"] == model.config
    assert c["epochs"] == 3 and c["metrics"] == {"map50": 0.5} and c["data"] == {"hash": "abc"}
    assert c["edge_version"] and c["created"].endswith("+00:00")

    rebuilt, card2 = load_checkpoint(path)
    assert card2 == c and not rebuilt.training
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        b1, s1 = model(x)
        b2, s2 = rebuilt(x)
    assert torch.equal(b1, b2) and torch.equal(s1, s2)


def test_checkpoint_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    bare = tmp_path / "bare.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), bare)
    with pytest.raises(ModelError, match="not an edge checkpoint"):
        load_checkpoint(bare)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "edge-checkpoint", "obj": torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(ModelError, match="weights-only"):
        load_checkpoint(pickled)


def test_strip_checkpoint_half(tmp_path):
    model = build_model("yolov3-tiny", num_classes=3, input_size=(96, 96), width=0.25).eval()
    card = build_card(model, class_names=CLASSES)
    src = save_checkpoint(tmp_path / "full.pt", {"card": card, "model": model.state_dict(),
                                                 "optimizer": {"state": {}, "param_groups": []}})
    dst = strip_checkpoint(src, tmp_path / "small.pt", half=True)
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    data = torch.load(dst, weights_only=True)
    assert "optimizer" not in data and data["card"]["weights_dtype"] == "float16"
    rebuilt, _ = load_checkpoint(dst)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)[1], model(x)[1], atol=2e-2, rtol=0)


# ---------------------------------------------------------------------------------------------------
# the loop


def _config(yaml: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        model="yolov3-tiny", data=str(yaml), imgsz=96, epochs=2, out=str(out), batch=2,
        model_args={"width": 0.25}, warmup_epochs=1.0, ema=True, save_period=1, threads=1, seed=5,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_checkpoints_history_and_resume_continues_same_run(tmp_path):
    yaml = tiny_dataset_yaml(tmp_path)
    run_a = tmp_path / "a"
    result = train(_config(yaml, run_a))

    for name in ("last.pt", "best.pt", "epoch1.pt", "epoch2.pt", "history.csv", "history.png"):
        assert (run_a / name).is_file(), name
    assert (run_a / "history.png").read_bytes()[:4] == b"\x89PNG"
    with open(run_a / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for col in ("lr", "loss", "loss_box", "loss_obj", "loss_cls", "map50", "map50_95", "ap50_RBC"):
        assert col in rows[0] and rows[0][col] != "", col

    last = torch.load(run_a / "last.pt", weights_only=True)
    best = torch.load(run_a / "best.pt", weights_only=True)
    assert "optimizer" not in best and "optimizer" in last  # best.pt is a deploy checkpoint
    card = last["card"]
    from edge.data import load_dataset

    assert card["data"]["hash"] == dataset_hash(load_dataset(str(yaml), "train"))
    assert card["data"]["train_split"] == "train" and card["data"]["val_split"] == "val"
    assert card["epochs"] == 2 and card["weights"] == "ema"
    m = card["metrics"]
    assert m["split"] == "val" and m["epoch"] == 2
    assert 0.0 <= m["map50"] <= 1.0 and 0.0 <= m["map50_95"] <= 1.0
    assert set(m["per_class"]) == set(CLASSES)
    assert card["training"]["imgsz"] == 96 and card["training"]["ema"] is True
    assert result.metrics["map50"] == m["map50"]
    # the LR curve: 2 steps/epoch, warm-up of 2 iterations, cosine over the other 2
    assert last["scheduler"]["iteration"] == 4
    assert float(rows[0]["lr"]) == pytest.approx(1e-3 * (0.01 + 0.99 * 1 / 2), rel=1e-4)
    assert float(rows[1]["lr"]) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-4)

    # resume from the epoch-1 checkpoint into another folder: the same batches, LRs and weights
    run_b = tmp_path / "b"
    cfg_b = config_for_resume(str(run_a / "epoch1.pt"), out=str(run_b))
    assert cfg_b.epochs == 2 and cfg_b.model_args == {"width": 0.25} and cfg_b.out == str(run_b)
    train(cfg_b)
    last_b = torch.load(run_b / "last.pt", weights_only=True)
    assert last_b["scheduler"]["iteration"] == 4 and last_b["epoch"] == 2
    for key in ("train_model", "model"):  # raw weights and EMA weights
        for name, value in last["model"].items() if key == "model" else last["train_model"].items():
            other = last_b[key][name]
            assert torch.allclose(value.float(), other.float(), atol=1e-6, rtol=1e-5), (key, name)
    assert last_b["ema"]["updates"] == last["ema"]["updates"]
    assert [r["epoch"] for r in last_b["history"]] == [1, 2]
    assert last_b["history"][0] == last["history"][0]  # carried over from the checkpoint
    assert last_b["history"][1]["loss"] == pytest.approx(last["history"][1]["loss"], rel=1e-5)

    with pytest.raises(EdgeError, match="deploy checkpoint"):
        config_for_resume(str(run_a / "best.pt"))


def test_train_rejects_reserved_model_args(tmp_path):
    yaml = tiny_dataset_yaml(tmp_path)
    with pytest.raises(EdgeError, match="input_size"):
        train(_config(yaml, tmp_path / "x", model_args={"input_size": [64, 64]}, epochs=1))


def test_train_unknown_split_is_a_clear_error(tmp_path):
    yaml = tiny_dataset_yaml(tmp_path)
    with pytest.raises(EdgeError, match="no split 'trainval'"):
        train(_config(yaml, tmp_path / "x", train_split="trainval", epochs=1))


def test_augmentation_does_not_depend_on_worker_count(tmp_path):
    """Samples are seeded by (seed, epoch, index): DataLoader worker processes change nothing."""
    yaml = tiny_dataset_yaml(tmp_path)
    kw = dict(epochs=1, ema=False, save_period=0, val_split="none", augment="ssd")
    train(_config(yaml, tmp_path / "w0", workers=0, **kw))
    train(_config(yaml, tmp_path / "w1", workers=1, **kw))
    a = torch.load(tmp_path / "w0" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "w1" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_divergence_stops_with_a_clear_error(tmp_path):
    yaml = tiny_dataset_yaml(tmp_path)
    cfg = _config(yaml, tmp_path / "nan", epochs=12, optimizer="sgd", lr=1e12, grad_clip=0.0, warmup_epochs=0.0,
                  ema=False, save_period=0, val_split="none", imgsz=64)
    with pytest.raises(EdgeError, match="training diverged"):
        train(cfg)


def test_validation_on_training_images_is_flagged(tmp_path, caplog):
    yaml = tiny_dataset_yaml(tmp_path)
    cfg = _config(yaml, tmp_path / "leak", epochs=1, imgsz=64, val_split="train", ema=False, save_period=0)
    with caplog.at_level(logging.WARNING, logger="edge.train.data"):
        result = train(cfg)
    assert any("4 of the 4 'train' images are also training images" in r.getMessage() for r in caplog.records)
    assert result.metrics["split"] == "train"
