"""Issue 11, "splits without leakage": the ultralytics/Roboflow YAML form, fraction splits, every problem of a
dataset YAML at once, and the one rule for the default validation split. Real files in tmp_path (JPEGs written
by OpenCV, VOC XMLs, YOLO label files)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.data import load_config, load_dataset
from edge.data.splits import carve, cut_fractions, resolve_val_split, seeded_shuffle
from edge.errors import DataError

from .test_voc import VocBuilder, _obj, _xml
from .test_yolo import YoloBuilder


def _jpeg(path: Path, size=(64, 48), seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = np.full((size[1], size[0], 3), 40, np.uint8)
    x, y = int(rng.integers(2, size[0] // 2)), int(rng.integers(2, size[1] // 2))
    img[y:y + 16, x:x + 20] = (200, 120, 40)
    assert cv2.imwrite(str(path), img)


def coco128_layout(tmp: Path, n: int = 8) -> Path:
    """COCO128's own layout and YAML (``yolov5/data/coco128.yaml``: ``path: ../datasets/coco128``, train and
    val the same image folder, an empty ``test:``, ``names`` as an {index: name} mapping, ``download:``),
    with n tiny JPEGs and YOLO labels; returns the YAML."""
    root = tmp / "datasets" / "coco128"
    for i in range(n):
        stem = f"{i:012d}"
        _jpeg(root / "images" / "train2017" / f"{stem}.jpg", seed=i)
        label = root / "labels" / "train2017" / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(f"{i % 3} 0.5 0.5 0.4 0.4\n" + ("1 0.25 0.3 0.2 0.2\n" if i % 2 else ""))
    yaml = tmp / "yolov5" / "data" / "coco128.yaml"
    yaml.parent.mkdir(parents=True)
    yaml.write_text(
        "# COCO 2017 dataset http://cocodataset.org - first 128 training images\n"
        "path: ../../datasets/coco128  # dataset root dir\n"
        "train: images/train2017  # train images (relative to 'path') 128 images\n"
        "val: images/train2017  # val images (relative to 'path') 128 images\n"
        "test:  # test images (optional)\n\n"
        "# Classes\nnames:\n  0: person\n  1: bicycle\n  2: car\n\n"
        "# Download script/URL (optional)\n"
        "download: https://github.com/ultralytics/assets/releases/download/v0.0.0/coco128.zip\n"
    )
    return yaml


# ------------------------------------------------------------------------------------ the ultralytics form


def test_coco128_yaml_loads_as_it_is(tmp_path, caplog):
    yaml = coco128_layout(tmp_path)
    with caplog.at_level(logging.WARNING):
        cfg = load_config(yaml)
        ds = load_dataset(yaml, "train")
    assert cfg.format == "yolo" and cfg.names == ["person", "bicycle", "car"]
    assert cfg.root == tmp_path / "datasets" / "coco128"  # `path` is relative to the YAML's folder
    assert sorted(cfg.splits) == ["train", "val"]  # the empty `test:` is no split
    assert len(ds.records) == 8 and sum(len(r.boxes) for r in ds.records) == 12
    assert ds.records[1].labels.tolist() == [1, 1]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text  # download: is known


def test_roboflow_export_yaml_with_lists_and_nc(tmp_path):
    """Roboflow's data.yaml: no path, ``../train/images`` (read as ``train/images`` beside the YAML, as
    ultralytics does), names as a list, nc, a roboflow block; plus a list of a folder and a list file."""
    root = tmp_path / "export"
    for split, count in (("train", 3), ("valid", 2), ("extra", 2)):
        for i in range(count):
            _jpeg(root / split / "images" / f"{split}{i}.jpg", seed=i)
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{split}{i}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    (root / "extra.txt").write_text("extra/images/extra0.jpg\n./extra/images/extra1.jpg\n")
    (root / "data.yaml").write_text(
        "train: [../train/images, extra.txt]\nval: ../valid/images\n"
        "nc: 2\nnames: ['fish', 'jellyfish']\n"
        "roboflow:\n  workspace: w\n  project: p\n  version: 1\n  license: CC BY 4.0\n  url: https://x\n"
    )
    cfg = load_config(root / "data.yaml")
    assert cfg.root == root and cfg.splits["train"].files == ["train/images", "extra.txt"]
    train = load_dataset(cfg, "train")
    assert sorted(r.image_id for r in train.records) == ["extra0", "extra1", "train0", "train1", "train2"]
    assert len(load_dataset(cfg, "val").records) == 2


def test_absolute_path_and_list_file_split(tmp_path):
    b = YoloBuilder(tmp_path / "y")
    b.add("a", "0 0.5 0.5 0.2 0.2\n")
    b.add("b", "2 0.5 0.5 0.2 0.2\n")
    (b.root / "list.txt").write_text("images/train/a.jpg\nimages/train/b.jpg\n")
    yaml = tmp_path / "cfg" / "d.yaml"
    yaml.parent.mkdir()
    yaml.write_text(f"path: {b.root}\ntrain: list.txt\nval: images/train\nnames: {{0: a, 1: b, 2: c}}\nnc: 3\n")
    assert [r.labels.tolist() for r in load_dataset(yaml, "train").records] == [[0], [2]]


@pytest.mark.parametrize("names,nc,match", [
    ("{0: a, 2: b}", None, r"indices \[0, 2\], expected 0..1"),
    ("{1: a, 2: b}", None, r"indices \[1, 2\], expected 0..1"),
    ("{x: a}", None, "must be class indices"),
    ("[a, b]", 3, "nc is 3 but 2 names"),
    ("[a, b]", "two", "nc is 'two'"),
])
def test_ultralytics_names_and_nc_errors(tmp_path, names, nc, match):
    text = f"train: images\nnames: {names}\n" + (f"nc: {nc}\n" if nc is not None else "")
    (tmp_path / "d.yaml").write_text(text)
    with pytest.raises(DataError, match=match):
        load_config(tmp_path / "d.yaml")


# ---------------------------------------------------------------------------------------------- fractions


def test_seeded_shuffle_is_pinned():
    """The order depends on random.Random(seed).random() alone, which Python keeps the same across versions;
    pinned here so a change of algorithm shows."""
    assert seeded_shuffle(list(range(10)), 0) == [9, 4, 0, 5, 2, 7, 1, 3, 6, 8]
    assert seeded_shuffle(list(range(10)), 1) == [8, 0, 3, 4, 5, 2, 9, 6, 7, 1]
    ids = [f"img{i:02d}" for i in range(20)]
    parts = cut_fractions(ids, {"train": 0.7, "val": 0.15, "test": 0.15}, 0)
    assert parts["val"] == ["img04", "img06", "img08"] and parts["test"] == ["img07", "img14", "img16"]
    assert len(parts["train"]) == 14
    assert cut_fractions(list(reversed(ids)), {"train": 0.7, "val": 0.15, "test": 0.15}, 0) == parts


def test_seeded_split_is_the_same_in_a_fresh_interpreter_with_hash_randomization(tmp_path):
    code = ("from edge.data.splits import cut_fractions;"
            "print(cut_fractions([f'i{k}' for k in range(30)], {'train': 0.8, 'val': 0.2}, 3))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(s), "PATH": ""}, cwd=str(Path(__file__).parents[2])).stdout
            for s in (1, 2)}
    assert len(outs) == 1
    assert outs.pop().strip() == str(cut_fractions([f"i{k}" for k in range(30)], {"train": 0.8, "val": 0.2}, 3))


def _voc_pool(root: Path, n: int) -> VocBuilder:
    """A VOC dataset with ``images/`` + ``annotations/`` folders and no split files (the issue's layout)."""
    b = VocBuilder(root)
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    for i in range(n):
        _jpeg(root / "images" / f"p{i:03d}.jpg", seed=i)
        (root / "annotations" / f"p{i:03d}.xml").write_text(_xml(f"p{i:03d}.jpg", [_obj("bird", (5, 5, 30, 30))]))
    return b


def test_voc_fraction_splits_are_disjoint_complete_and_stable(tmp_path):
    _voc_pool(tmp_path / "photos", 20)
    yaml = tmp_path / "photos.yaml"
    yaml.write_text("root: photos\nformat: voc\nimages: images\nannotations: annotations\n"
                    "splits: {train: 0.7, val: 0.15, test: 0.15}\nseed: 0\nnames: [bird]\n")
    ids = {s: [r.image_id for r in load_dataset(yaml, s).records] for s in ("train", "val", "test")}
    assert [len(v) for v in ids.values()] == [14, 3, 3]
    assert sorted(sum(ids.values(), [])) == [f"p{i:03d}" for i in range(20)]  # disjoint and complete
    assert ids["val"] == ["p004", "p006", "p008"]  # pinned: the same split on every run
    yaml.write_text(yaml.read_text().replace("seed: 0", "seed: 7"))
    assert [r.image_id for r in load_dataset(yaml, "val").records] != ids["val"]


def test_yolo_fraction_splits_from_the_images_folder(tmp_path):
    b = YoloBuilder(tmp_path / "y")
    for i in range(10):
        b.add(f"s{i}", "0 0.5 0.5 0.2 0.2\n")
    yaml = tmp_path / "y.yaml"
    yaml.write_text("root: y\nformat: yolo\nsplits: {train: 0.8, val: 0.2}\nnames: [a, b, c]\n")
    train, val = (load_dataset(yaml, s) for s in ("train", "val"))
    assert len(train.records) == 8 and len(val.records) == 2
    assert not {r.image_id for r in train.records} & {r.image_id for r in val.records}
    assert all(len(r.boxes) == 1 for r in val.records)  # labels found through images -> labels


def test_a_fraction_that_rounds_to_no_image_is_named(tmp_path):
    _voc_pool(tmp_path / "p", 5)
    yaml = tmp_path / "p.yaml"
    yaml.write_text("root: p\nformat: voc\nimages: images\nannotations: annotations\n"
                    "splits: {train: 0.95, val: 0.05}\nnames: [bird]\n")
    with pytest.raises(DataError, match=r"split 'val' .* is 0.05 of 5 images, which rounds to none"):
        load_dataset(yaml, "val")


# ------------------------------------------------------------------------------------ every problem at once


def test_every_problem_of_a_yaml_in_one_error(tmp_path):
    (tmp_path / "d.yaml").write_text(
        "root: .\nformat: voc\nsplits: {train: 0.8, val: 0.4, test: 1.5, extra: t.txt}\n"
        "names: {0: a, 2: b}\nnc: 2\nseed: -1\nsplit: typo\n"
    )
    with pytest.raises(DataError) as info:
        load_config(tmp_path / "d.yaml")
    text = str(info.value)
    for part in ("names' mapping has indices [0, 2]", "split 'test' is 1.5", "are fractions but ['extra'] are files",
                 "seed is -1", "unknown keys ['split']", str(tmp_path / "d.yaml")):
        assert part in text, text
    assert text.count("\n  - ") == 4 and "4 problems" in text


def test_splits_in_both_forms_are_refused(tmp_path):
    (tmp_path / "d.yaml").write_text("root: .\nformat: yolo\nsplits: {train: a.txt}\nval: b.txt\nnames: [a]\n")
    with pytest.raises(DataError, match=r"splits are given twice, under 'splits' and as top-level \['val'\]"):
        load_config(tmp_path / "d.yaml")


def test_fractions_summing_over_one_and_fractions_of_coco(tmp_path):
    (tmp_path / "a.yaml").write_text("root: .\nformat: voc\nsplits: {train: 0.8, val: 0.3}\nnames: [a]\n")
    with pytest.raises(DataError, match=r"sum to 1.1 \(train 0.8, val 0.3\); they must sum to at most 1"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("root: .\nformat: coco\nsplits: {train: 0.5, val: 0.5}\n")
    with pytest.raises(DataError, match="fraction splits work for voc and yolo"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("root: .\nformat: voc\nsplits: {train: 0.7, val: 0.15, test: 0.15}\n"
                                     "names: [a]\n")
    assert load_config(tmp_path / "c.yaml").splits["test"].fraction == 0.15  # 1.0000000000000002 is fine


def test_every_missing_file_and_folder_at_once(tmp_path):
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("x\n")
    (tmp_path / "d.yaml").write_text(
        "root: voc\nformat: voc\nsplits: {train: ImageSets/train.txt, val: ImageSets/val.txt, "
        "test: {file: ImageSets/test.txt, images: test_images}}\nnames: [a]\n")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "d.yaml", "train")
    text = str(info.value)
    assert "4 problems" in text, text
    for part in ("val.txt does not exist (split 'val')", "test.txt does not exist (split 'test')",
                 "test_images does not exist (split 'test')", "VOC annotation folder"):
        assert part in text, text


# ------------------------------------------------------------------------------- the default validation split


def test_default_validation_split_is_val_else_a_carve_never_test(tmp_path):
    def cfg(splits: str):
        (tmp_path / "d.yaml").write_text(f"root: .\nformat: voc\nsplits: {splits}\nnames: [a]\n")
        return load_config(tmp_path / "d.yaml")

    with_val = cfg("{train: a.txt, val: b.txt, test: c.txt}")
    assert resolve_val_split(with_val, None).split == "val" and not resolve_val_split(with_val, None).carve
    no_val = cfg("{train: a.txt, test: c.txt}")
    choice = resolve_val_split(no_val, None, "train")
    assert choice.carve and choice.source == "train" and choice.fraction == 0.1
    assert resolve_val_split(no_val, "test").split == "test"  # named: allowed
    with pytest.raises(DataError, match=r"has no 'val' split \(it has train, test\); name the split to score "
                                        r"with --val-split"):
        resolve_val_split(no_val, None, None)  # edge quantize: nothing to carve from
    with pytest.raises(DataError, match=r"no split 'valid' \(it has train, test\)"):
        resolve_val_split(no_val, "valid")


def test_carve_takes_a_seeded_tenth_at_least_one():
    ids = [f"i{k:02d}" for k in range(25)]
    kept, taken = carve(ids, 0.1, 0)
    assert len(taken) == 3 and len(kept) == 22 and not set(kept) & set(taken)
    assert carve(list(reversed(ids)), 0.1, 0)[1] == list(reversed(taken))  # the same images, in input order
    assert len(carve(ids[:3], 0.1, 0)[1]) == 1
