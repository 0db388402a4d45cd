"""COCO loader against real JSON and image files written to tmp_path: every bad-input case."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest

from edge.data import Problem, load_dataset
from edge.errors import DataError

W, H = 64, 48
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 12, "name": "bird"}]


class CocoBuilder:
    def __init__(self, root: Path, images_dir: str = "images"):
        self.root = root
        self.images_dir = root / images_dir
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.data: Dict[str, Any] = {"images": [], "annotations": [], "categories": list(CATEGORIES)}

    def image(self, image_id, file_name=None, write=True, size=(W, H), annotated_size=(W, H)):
        file_name = file_name or f"{image_id}.jpg"
        if write:
            cv2.imwrite(str(self.images_dir / file_name), np.full((size[1], size[0], 3), 60, np.uint8))
        entry: Dict[str, Any] = {"id": image_id, "file_name": file_name}
        if annotated_size is not None:
            entry["width"], entry["height"] = annotated_size
        self.data["images"].append(entry)
        return entry

    def ann(self, image_id, category_id, bbox, **extra):
        entry = {
            "id": len(self.data["annotations"]) + 1,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": bbox,
            "area": 1.0,
            "iscrowd": 0,
        }
        entry.update(extra)
        self.data["annotations"].append(entry)
        return entry

    def yaml(self, names: List[str] = None, split_images: str = None, top_images: str = "images") -> Path:
        (self.root / "annotations").mkdir(exist_ok=True)
        (self.root / "annotations" / "val.json").write_text(json.dumps(self.data))  # NaN allowed, like Python
        split = (
            "annotations/val.json"
            if split_images is None
            else f"{{file: annotations/val.json, images: {split_images}}}"
        )
        text = f"name: ct\nroot: {self.root.name}\nformat: coco\nsplits: {{val: {split}}}\n"
        if top_images:
            text += f"images: {top_images}\n"
        if names is not None:
            text += f"names: [{', '.join(names)}]\n"
        path = self.root.parent / "coco.yaml"
        path.write_text(text)
        return path


def _load(path, caplog, **kw):
    with caplog.at_level(logging.WARNING):
        return load_dataset(path, "val", **kw)


def _warnings(caplog) -> List[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "edge.data.sanitize"
    ]


def test_good_file_classes_sorted_by_category_id(tmp_path, caplog):
    b = CocoBuilder(tmp_path / "coco")
    b.image(101)
    b.image(102)  # no annotations: a background image, kept silently
    b.ann(101, 7, [1, 2, 10, 20])
    b.ann(101, 3, [5.5, 6, 4, 3], iscrowd=1)
    ds = _load(b.yaml(), caplog)
    assert ds.report.total == 0 and _warnings(caplog) == []
    assert ds.class_names == ["cat", "dog", "bird"] and ds.category_ids == [3, 7, 12] and ds.format == "coco"
    r = ds.records[0]
    assert r.image_id == 101 and isinstance(r.image_id, int) and Path(r.path).name == "101.jpg"
    np.testing.assert_array_equal(r.boxes, np.array([[1, 2, 11, 22], [5.5, 6, 9.5, 9]], np.float32))
    assert r.labels.tolist() == [1, 0] and r.difficult.tolist() == [False, True]
    assert [rec.image_id for rec in ds.records] == [101, 102] and len(ds.records[1].boxes) == 0


def test_yaml_names_pick_and_order_categories(tmp_path, caplog):
    b = CocoBuilder(tmp_path / "coco")
    b.image(1)
    b.ann(1, 12, [1, 1, 5, 5])
    b.ann(1, 7, [1, 1, 5, 5])
    b.ann(1, 3, [1, 1, 5, 5])  # cat: a category of the file but not in the YAML's names
    ds = _load(b.yaml(names=["bird", "dog"]), caplog)
    assert ds.class_names == ["bird", "dog"] and ds.category_ids == [12, 7]
    assert ds.records[0].labels.tolist() == [0, 1]
    assert ds.report.counts == {Problem.UNKNOWN_CLASS: 1}
    assert "category id 3" in _warnings(caplog)[0] and "val.json" in _warnings(caplog)[0]


def test_yaml_name_missing_from_categories_raises(tmp_path):
    b = CocoBuilder(tmp_path / "coco")
    b.image(1)
    with pytest.raises(DataError, match=r"class names \['cow'\] .* not among its categories"):
        load_dataset(b.yaml(names=["dog", "cow"]), "val")


def _one_problem(tmp_path, caplog, setup, counts, **kw):
    b = CocoBuilder(tmp_path / "coco")
    b.image(1)
    b.ann(1, 7, [1, 1, 10, 10])
    setup(b)
    ds = _load(b.yaml(), caplog, **kw)
    assert ds.report.counts == counts
    messages = _warnings(caplog)
    assert len(messages) == ds.report.total and all("val.json" in m for m in messages), messages
    assert 1 in [r.image_id for r in ds.records]
    return ds, messages


def _bad_image(ds):
    return [r for r in ds.records if r.image_id == 2][0]


@pytest.mark.parametrize("bbox", [[5, 5, 0, 10], [5, 5, 10, 0], [5, 5, -3, 10], [5, 5, 4, -1]])
def test_degenerate_bbox_skipped(tmp_path, caplog, bbox):
    def setup(b):
        b.image(2)
        b.ann(2, 7, bbox)
        b.ann(2, 3, [1, 1, 2, 2])

    ds, _ = _one_problem(tmp_path, caplog, setup, {Problem.DEGENERATE_BOX: 1})
    assert _bad_image(ds).labels.tolist() == [0]


def test_bbox_past_border_clipped_and_outside_dropped(tmp_path, caplog):
    def setup(b):
        b.image(2)
        b.ann(2, 7, [50, 40, 30, 30])  # -> clipped to [50, 40, 64, 48]
        b.ann(2, 7, [70, 10, 5, 5])  # entirely right of the image

    ds, msgs = _one_problem(tmp_path, caplog, setup, {Problem.CLIPPED_BOX: 1, Problem.OUTSIDE_BOX: 1})
    np.testing.assert_array_equal(_bad_image(ds).boxes, [[50, 40, W, H]])


@pytest.mark.parametrize(
    "bbox",
    [
        [1, 2, 3],
        "1,2,3,4",
        None,
        [1, 2, "3", 4],
        [1, 2, True, 4],
        [float("nan"), 1, 2, 3],
        [float("inf"), 1, 2, 3],
    ],
)
def test_malformed_bbox_skipped(tmp_path, caplog, bbox):
    def setup(b):
        b.image(2)
        b.ann(2, 7, bbox)

    ds, _ = _one_problem(tmp_path, caplog, setup, {Problem.BAD_BOX: 1})
    assert len(_bad_image(ds).boxes) == 0


def test_unknown_category_id(tmp_path, caplog):
    def setup(b):
        b.ann(1, 99, [1, 1, 5, 5])

    _, msgs = _one_problem(tmp_path, caplog, setup, {Problem.UNKNOWN_CLASS: 1})
    assert "category id 99 is not among the file's categories" in msgs[0]


@pytest.mark.parametrize(
    "entry",
    [
        {"id": 5, "image_id": 404, "category_id": 7, "bbox": [1, 1, 5, 5]},  # unknown image
        {"id": 5, "image_id": [1], "category_id": 7, "bbox": [1, 1, 5, 5]},  # unhashable image id
        {"id": 5, "image_id": 1, "category_id": "dog", "bbox": [1, 1, 5, 5]},
        {"id": 5, "image_id": 1, "bbox": [1, 1, 5, 5]},  # no category
        "not an object",
    ],
)
def test_malformed_annotation_entry(tmp_path, caplog, entry):
    def setup(b):
        b.data["annotations"].append(entry)

    _one_problem(tmp_path, caplog, setup, {Problem.BAD_ENTRY: 1})


@pytest.mark.parametrize(
    "entry",
    [{"id": 2}, {"file_name": "x.jpg"}, {"id": None, "file_name": "x.jpg"}, {"id": 2, "file_name": ""}, 7],
)
def test_malformed_image_entry(tmp_path, caplog, entry):
    def setup(b):
        b.data["images"].append(entry)

    ds, _ = _one_problem(tmp_path, caplog, setup, {Problem.BAD_ENTRY: 1})
    assert len(ds) == 1


def test_malformed_category_entry(tmp_path, caplog):
    def setup(b):
        b.data["categories"].append({"id": "x", "name": "fish"})
        b.data["categories"].append({"id": 7, "name": "wolf"})  # duplicate id

    ds, _ = _one_problem(tmp_path, caplog, setup, {Problem.BAD_ENTRY: 2})
    assert ds.class_names == ["cat", "dog", "bird"]


def test_missing_image_file_and_its_annotations(tmp_path, caplog):
    def setup(b):
        b.image(2, write=False)
        b.ann(2, 7, [1, 1, 5, 5])
        b.ann(2, 7, [2, 2, 5, 5])

    ds, msgs = _one_problem(tmp_path, caplog, setup, {Problem.MISSING_IMAGE: 1})  # reported once, not per box
    assert [r.image_id for r in ds.records] == [1] and "2.jpg does not exist" in msgs[0]


def test_corrupt_image_file(tmp_path, caplog):
    def setup(b):
        b.image(2, write=False)
        (b.images_dir / "2.jpg").write_bytes(b"GIF89a")
        b.ann(2, 7, [1, 1, 5, 5])

    ds, msgs = _one_problem(tmp_path, caplog, setup, {Problem.CORRUPT_IMAGE: 1})
    assert [r.image_id for r in ds.records] == [1] and "2.jpg" in msgs[0]


def test_missing_size_and_size_mismatch_use_real_size(tmp_path, caplog):
    def setup(b):
        b.image(2, annotated_size=None, size=(80, 60))
        b.image(3, annotated_size=(640, 480), size=(80, 60))
        b.ann(2, 7, [60, 50, 15, 5])
        b.ann(3, 7, [60, 50, 15, 5])

    ds, _ = _one_problem(tmp_path, caplog, setup, {Problem.MISSING_SIZE: 1, Problem.SIZE_MISMATCH: 1})
    for r in ds.records[1:]:
        assert (r.width, r.height) == (80, 60)
        np.testing.assert_array_equal(r.boxes, [[60, 50, 75, 55]])


def test_duplicate_image_id(tmp_path, caplog):
    def setup(b):
        b.image(1, file_name="again.jpg")

    ds, _ = _one_problem(tmp_path, caplog, setup, {Problem.DUPLICATE_IMAGE: 1})
    assert len(ds) == 1 and Path(ds.records[0].path).name == "1.jpg"


def test_string_image_ids_and_per_split_image_folder(tmp_path, caplog):
    b = CocoBuilder(tmp_path / "coco", images_dir="val2017")
    b.image("img_a")
    b.ann("img_a", 3, [1, 1, 5, 5])
    ds = _load(b.yaml(split_images="val2017", top_images="elsewhere"), caplog)
    assert ds.report.total == 0 and ds.records[0].image_id == "img_a"


@pytest.mark.parametrize(
    "content,match",
    [
        ('{"images": [', "is not valid JSON"),
        ("[1, 2]", "has no 'images' list"),
        ('{"annotations": []}', "has no 'images' list"),
        ('{"images": [], "annotations": {}}', "must be lists"),
        (b"\xff\xfe\x00garbage", "is not valid JSON"),
    ],
)
def test_unreadable_json_raises(tmp_path, content, match):
    b = CocoBuilder(tmp_path / "coco")
    path = b.yaml()
    target = b.root / "annotations" / "val.json"
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(path, "val")
    assert "val.json" in str(info.value)


def test_missing_json_and_missing_image_folder(tmp_path):
    b = CocoBuilder(tmp_path / "coco")
    path = b.yaml()
    (b.root / "annotations" / "val.json").unlink()
    with pytest.raises(DataError, match=r"val.json does not exist"):
        load_dataset(path, "val")
    b = CocoBuilder(tmp_path / "coco2")
    path = b.yaml(top_images="missing_dir")
    with pytest.raises(DataError, match=r"COCO image folder .*missing_dir does not exist"):
        load_dataset(path, "val")


def test_no_categories_and_no_names_raises(tmp_path):
    b = CocoBuilder(tmp_path / "coco")
    b.data["categories"] = []
    with pytest.raises(DataError, match="has no categories"):
        load_dataset(b.yaml(), "val")
