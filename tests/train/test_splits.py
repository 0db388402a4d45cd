"""Issue 11, "splits without leakage", through the real ``edge train`` / ``edge eval`` entry points: COCO128's own
YAML trains and evaluates as it is; a dataset without a val split validates on a seeded part carved out of the
training split (never on test), or is refused when too small; the splits a run made are written beside it and
recorded in the model card. Tiny real JPEGs (OpenCV), VOC XMLs and YOLO labels in tmp_path."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from edge.cli.main import main
from edge.data import load_dataset
from tests.data.test_splits import _voc_pool, coco128_layout

torch = pytest.importorskip("torch")

SMOKE = ["--model", "yolov3-tiny", "--model-arg", "width=0.25", "--imgsz", "64", "--epochs", "1", "--batch", "2",
         "--threads", "1", "--precise-bn", "0"]


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), *SMOKE, *extra])


def _card(out: Path) -> dict:
    return torch.load(out / "best.pt", weights_only=True)["card"]


def test_coco128_yaml_trains_and_evaluates_as_it_is(tmp_path, capsys):
    yaml = coco128_layout(tmp_path)
    out = tmp_path / "run"
    assert _train(yaml, out, "--limit", "4") == 0
    card = _card(out)
    assert card["class_names"] == ["person", "bicycle", "car"] and card["metrics"]["split"] == "val"
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "--data", str(yaml), "--split", "val",
                 "--json", str(tmp_path / "eval.json")]) == 0
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert "map50" in json.dumps(figures)


def test_no_val_split_carves_a_seeded_part_of_train_never_test(tmp_path, caplog):
    """VOC photos without split files: fractions train 0.8 / test 0.2 (15 images: 12 / 3), no val. Training
    validates on 1 image carved out of the 12 (10%, at least 1), not on test, says so, and writes the splits."""
    _voc_pool(tmp_path / "photos", 15)
    yaml = tmp_path / "photos.yaml"
    yaml.write_text("root: photos\nformat: voc\nimages: images\nannotations: annotations\n"
                    "splits: {train: 0.8, test: 0.2}\nnames: [bird]\n")
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert _train(yaml, out) == 0
    said = [r.getMessage() for r in caplog.records if "has no 'val' split" in r.getMessage()]
    assert len(said) == 1 and "validating on 1 of the 12 'train' images" in said[0] and "best.pt is chosen on them" \
        in said[0], said
    card = _card(out)
    assert card["metrics"]["split"] == "val" and card["data"]["val_split"] == "val"
    assert card["data"]["num_images"] == 11  # the carved image is not trained on

    folder = out / "splits"
    lines = {n: (folder / f"{n}.txt").read_text().split() for n in ("train", "val", "test")}
    assert [len(v) for v in lines.values()] == [11, 1, 3]
    assert not set(lines["val"]) & set(lines["train"]) and not set(lines["val"]) & set(lines["test"])
    record = card["data"]["split_files"]
    for name in ("train", "val", "test"):
        entry = record["files"][name]
        assert entry["images"] == len(lines[name]) and entry["file"] == f"splits/{name}.txt"
        assert entry["sha256"] == hashlib.sha256((folder / f"{name}.txt").read_bytes()).hexdigest()
    # the written data.yaml reproduces the run's splits
    assert [r.image_id for r in load_dataset(folder / "data.yaml", "val").records] == lines["val"]
    assert sorted(r.image_id for r in load_dataset(folder / "data.yaml", "test").records) == sorted(lines["test"])

    again = tmp_path / "again"
    assert _train(yaml, again) == 0  # the same split on another run
    assert (again / "splits" / "val.txt").read_text() == (folder / "val.txt").read_text()


def test_too_small_to_carve_is_refused_with_the_fix(tmp_path, caplog):
    b = _voc_pool(tmp_path / "few", 6)
    (b.root / "ImageSets/Main/train.txt").write_text("\n".join(f"p{i:03d}" for i in range(4)) + "\n")
    (b.root / "ImageSets/Main/test.txt").write_text("p004\np005\n")
    yaml = tmp_path / "few.yaml"
    yaml.write_text("root: few\nformat: voc\nimages: images\nannotations: annotations\n"
                    "splits: {train: ImageSets/Main/train.txt, test: ImageSets/Main/test.txt}\nnames: [bird]\n")
    with caplog.at_level(logging.ERROR):
        assert _train(yaml, tmp_path / "run") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "has 4 usable image(s), too few to carve" in errors[0], errors
    assert "add a val split" in errors[0] and "--val-split none" in errors[0]
    assert not (tmp_path / "run").exists()

    caplog.clear()
    with caplog.at_level(logging.WARNING):  # naming test is allowed, with a warning
        assert _train(yaml, tmp_path / "on-test", "--val-split", "test") == 0
    assert any("best.pt is then chosen on the test split" in r.getMessage() for r in caplog.records)
    assert _card(tmp_path / "on-test")["metrics"]["split"] == "test"
    assert not (tmp_path / "on-test" / "splits").exists()  # nothing derived: no split files
