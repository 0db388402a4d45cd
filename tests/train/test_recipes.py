"""Per-family default recipes (``edge.train.recipes``): filled in only where the user gave nothing, recorded in
the card, k-means anchors from the training split at the start of training, kept on resume."""

from __future__ import annotations

import logging

import pytest
import torch

from edge.cli.main import main
from edge.errors import EdgeError
from edge.train.checkpoint import load_checkpoint
from edge.train.config import ARCHS, TrainConfig
from edge.train.recipes import AUTO, RECIPES, config_from_flags

from .test_loop import tiny_dataset_yaml


def test_every_family_has_a_valid_recipe():
    assert sorted(RECIPES) == sorted(ARCHS)
    for family, recipe in RECIPES.items():
        assert recipe.family == family and recipe.validate() is recipe
        assert recipe.name.startswith(family + "/")
    # the YOLO recipes take k-means anchors; the measured ones are the runs of benchmarks/RESULTS.md
    assert {f for f, r in RECIPES.items() if r.anchors == AUTO} == {"yolov2", "yolov3", "yolov3-tiny"}
    tiny = RECIPES["yolov3-tiny"]
    assert (tiny.imgsz, tiny.epochs, tiny.batch, tiny.ema, tiny.model_args) == (320, 60, 16, True, {"width": 0.5})
    big = RECIPES["yolov3"]
    assert (big.imgsz, big.epochs, big.model_args) == (256, 30, {"width": 0.25, "depth": 0.34})


def test_recipe_fills_only_what_the_user_left_out():
    cfg = config_from_flags({"model": "yolov3", "data": "d.yaml", "epochs": 3,
                             "model_args": {"width": 0.5, "anchors": [[10, 10]] * 9}})
    assert cfg.epochs == 3 and cfg.imgsz == 256 and cfg.ema is True  # the user's epochs, the recipe's rest
    assert cfg.model_args == {"width": 0.5, "depth": 0.34, "anchors": [[10, 10]] * 9}  # user's anchors: no k-means
    assert cfg.recipe["name"] == "yolov3/v1"
    applied = cfg.recipe["applied"]
    assert "epochs" not in applied and applied["imgsz"] == 256 and applied["model_args"] == {"depth": 0.34}

    cfg = config_from_flags({"model": "yolov3-tiny", "data": "d.yaml", "ema": False})
    assert cfg.ema is False and cfg.model_args == {"width": 0.5, "anchors": AUTO}  # --no-ema wins

    plain = config_from_flags({"model": "ssd", "data": "d.yaml"}, "none")
    assert plain == TrainConfig(model="ssd", data="d.yaml") and plain.recipe is None
    assert config_from_flags({"model": "ssd", "data": "d.yaml"}, "retinanet").model_args == {"variant": "small"}
    with pytest.raises(EdgeError, match="--recipe 'fast'"):
        config_from_flags({"model": "ssd", "data": "d.yaml"}, "fast")


def test_default_recipe_through_the_cli_computes_anchors_records_them_and_resume_keeps_them(tmp_path, monkeypatch):
    from edge.data import load_dataset
    from edge.models.kmeans_anchors import anchors_for_dataset

    yaml = tiny_dataset_yaml(tmp_path)
    out = tmp_path / "run"
    # no width, anchors, ema: the yolov3-tiny recipe supplies them
    assert main(["train", "--model", "yolov3-tiny", "--data", str(yaml), "--imgsz", "64", "--epochs", "1",
                 "--batch", "2", "--threads", "1", "--out", str(out), "--precise-bn", "0"]) == 0
    expected = anchors_for_dataset(load_dataset(str(yaml), "train"), 6, (64, 64), seed=0).to_dict()["anchors"]

    model, card = load_checkpoint(out / "best.pt")  # what export and eval rebuild from the card alone
    flat = sorted((a for level in card["config"]["anchors"] for a in level), key=lambda a: a[0] * a[1])
    assert flat == expected and card["config"]["width"] == 0.5 and card["weights"] == "ema"
    assert card["training"]["recipe"]["name"] == "yolov3-tiny/v1"
    assert card["training"]["recipe"]["applied"]["model_args"] == {"width": 0.5, "anchors": AUTO}
    assert card["training"]["anchors"]["k"] == 6 and card["training"]["anchors"]["split"] == "train"
    assert card["training"]["model_args"]["anchors"] == expected
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["train_config"]["model_args"]["anchors"] == expected  # not "auto": resume rebuilds the same

    # a resumed run keeps its stored config, whatever the recipe table says now
    import edge.train.recipes as recipes

    monkeypatch.setattr(recipes, "RECIPES", {})
    assert main(["train", "--resume", str(out), "--epochs", "2", "--threads", "1"]) == 0
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["train_config"]["model_args"]["anchors"] == expected
    assert last["train_config"]["recipe"]["name"] == "yolov3-tiny/v1"
    assert last["card"]["training"]["anchors"]["k"] == 6


def test_anchors_auto_on_a_family_without_kmeans_anchors_is_one_clear_error(tmp_path, caplog):
    yaml = tiny_dataset_yaml(tmp_path)
    with caplog.at_level(logging.ERROR):
        code = main(["train", "--model", "retinanet", "--data", str(yaml), "--imgsz", "64", "--epochs", "1",
                     "--model-arg", "anchors=auto", "--threads", "1", "--out", str(tmp_path / "run")])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2 and len(errors) == 1 and "anchors=auto" in errors[0] and "yolov3-tiny" in errors[0]
    assert "Traceback" not in caplog.text
    assert not (tmp_path / "run").exists()
