"""``edge train`` end to end through the real CLI entry point, on a few real BCCD images."""

from __future__ import annotations

import csv

import pytest
import torch

from edge.cli.main import main
from edge.cli.train import parse_model_args
from edge.errors import EdgeError
from edge.train.checkpoint import load_checkpoint

from .test_loop import tiny_dataset_yaml


def test_cli_train_one_epoch_then_resume(tmp_path, capsys):
    yaml = tiny_dataset_yaml(tmp_path)
    out = tmp_path / "run"
    # --recipe none: the plain TrainConfig defaults (SSD's own augmentation); recipes: test_recipes.py
    args = ["train", "--model", "ssd", "--data", str(yaml), "--imgsz", "128", "--epochs", "1", "--batch", "2",
            "--out", str(out), "--model-arg", "width=0.25", "--threads", "1", "--warmup-epochs", "0.5",
            "--recipe", "none"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "trained ssd for 1 epochs" in printed and "mAP50" in printed and "best.pt" in printed

    model, card = load_checkpoint(out / "best.pt")
    assert card["arch"] == "ssd" and card["config"]["width"] == 0.25 and card["input_size"] == [128, 128]
    assert card["class_names"] == ["RBC", "WBC", "Platelets"]
    assert card["training"]["augment"] == "ssd" and card["epochs"] == 1
    assert card["metrics"]["split"] == "val"  # the YAML offers val: it is the default
    with torch.no_grad():
        boxes, scores = model(torch.zeros(1, 3, 128, 128))
    assert boxes.shape[-1] == 4 and scores.shape[-1] == 3

    # the checkpoint as an edge.evaluate predictor scores exactly what training reported in the card
    from edge.data import load_dataset
    from edge.evaluate import evaluate_model
    from edge.train.predict import predictor_from_checkpoint

    figures = evaluate_model(predictor_from_checkpoint(out), load_dataset(str(yaml), "val")).to_json()
    assert figures["map50"] == pytest.approx(card["metrics"]["map50"], abs=1e-6)
    assert figures["map50_95"] == pytest.approx(card["metrics"]["map50_95"], abs=1e-6)

    # the same --out again without --resume/--exist-ok is refused (exit 2, one-line error)
    assert main(args) == 2

    # resume the run for one more epoch
    assert main(["train", "--resume", str(out), "--epochs", "2", "--threads", "1"]) == 0
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["card"]["epochs"] == 2
    assert last["train_config"]["model_args"] == {"width": 0.25}


def test_cli_train_needs_model_and_data(capsys):
    assert main(["train", "--epochs", "1"]) == 2


def test_parse_model_args(tmp_path):
    (tmp_path / "anchors.json").write_text('{"k": 2, "anchors": [[10, 13], [16, 30]], "mean_iou": 0.6}')
    args = parse_model_args(["backbone=resnet18", "width=0.5", "head-depth=2", "scales=[0.1, 0.2]",
                             f"anchors=@{tmp_path / 'anchors.json'}", "flag=true"])
    assert args == {"backbone": "resnet18", "width": 0.5, "head_depth": 2, "scales": [0.1, 0.2],
                    "anchors": [[10, 13], [16, 30]], "flag": True}
    with pytest.raises(EdgeError, match="KEY=VALUE"):
        parse_model_args(["width"])
    with pytest.raises(EdgeError, match="cannot read"):
        parse_model_args([f"anchors=@{tmp_path / 'missing.json'}"])
