"""YOLO txt loader against real label, list and image files written to tmp_path: every bad-input case."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from edge.data import Problem, load_dataset
from edge.data.yolo import label_path, parse_label_line
from edge.errors import DataError

W, H = 100, 50
NAMES = ["a", "b", "c"]


class YoloBuilder:
    def __init__(self, root: Path):
        self.root = root
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        self.listed: List[str] = []

    def add(self, stem: str, labels=None, image=True, size=(W, H), sub="train"):
        img = self.root / "images" / sub / f"{stem}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        if image:
            cv2.imwrite(str(img), np.full((size[1], size[0], 3), 30, np.uint8))
        if labels is not None:
            lbl = self.root / "labels" / sub / f"{stem}.txt"
            lbl.parent.mkdir(parents=True, exist_ok=True)
            lbl.write_bytes(labels) if isinstance(labels, bytes) else lbl.write_text(labels)
        self.listed.append(f"images/{sub}/{stem}.jpg")
        return img

    def yaml(self, split_value=None) -> Path:
        if split_value is None:
            (self.root / "train.txt").write_text("\n".join(self.listed) + "\n")
            split_value = "train.txt"
        path = self.root.parent / "yolo.yaml"
        path.write_text(
            f"name: yt\nroot: {self.root.name}\nformat: yolo\nsplits: {{train: {split_value}}}\nnames: {NAMES}\n"
        )
        return path


def _load(path, caplog, **kw):
    with caplog.at_level(logging.WARNING):
        return load_dataset(path, "train", **kw)


def _warnings(caplog) -> List[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "edge.data.sanitize"
    ]


def test_label_path_convention(tmp_path):
    assert label_path(Path("/d/images/train/x.jpg")) == Path("/d/labels/train/x.txt")
    assert label_path(Path("/images/d/images/x.png")) == Path("/images/d/labels/x.txt")  # the last one
    assert label_path(Path("/d/pics/x.jpeg")) == Path("/d/pics/x.txt")


def test_parse_label_line():
    assert parse_label_line("2 0.5 0.5 0.2 0.4") == (2, (0.5, 0.5, 0.2, 0.4))
    cls, (cx, cy, w, h) = parse_label_line("1 0.1 0.2 0.5 0.2 0.3 0.6")  # triangle
    assert cls == 1 and (cx, cy, w, h) == pytest.approx((0.3, 0.4, 0.4, 0.4))
    for bad in (
        "0 0.5 0.5 0.2",
        "x 0.5 0.5 0.2 0.2",
        "1.5 0.5 0.5 0.2 0.2",
        "0 0.5 0.5 0.2 0.2 0.9",
        "0 nan 0.5 0.2 0.2",
    ):
        with pytest.raises(ValueError):
            parse_label_line(bad)


def test_good_files_list_with_relative_and_absolute_paths(tmp_path, caplog):
    b = YoloBuilder(tmp_path / "yolo")
    b.add("one", "0 0.5 0.5 0.2 0.4\n2 0.25 0.5 0.1 0.2\n")
    absolute = b.add("two", "")  # empty label file: a background image, not a problem
    b.add("three", "1 0.1 0.2 0.5 0.2 0.3 0.6\n")
    b.listed[1] = str(absolute)
    ds = _load(b.yaml(), caplog)
    assert ds.report.total == 0 and _warnings(caplog) == [] and ds.format == "yolo"
    assert [r.image_id for r in ds.records] == ["one", "two", "three"]
    one = ds.records[0]
    np.testing.assert_allclose(one.boxes, [[40, 15, 60, 35], [20, 20, 30, 30]], rtol=1e-6)
    assert one.labels.tolist() == [0, 2] and one.difficult.tolist() == [False, False]
    assert len(ds.records[1].boxes) == 0
    np.testing.assert_allclose(ds.records[2].boxes, [[10, 10, 50, 30]], rtol=1e-6)


def test_list_entries_relative_to_root_when_not_beside_the_list(tmp_path, caplog):
    b = YoloBuilder(tmp_path / "yolo")
    b.add("one", "0 0.5 0.5 0.2 0.4\n")
    (b.root / "lists").mkdir()
    (b.root / "lists" / "train.txt").write_text("# training images\nimages/train/one.jpg\n\n")
    ds = _load(b.yaml(split_value="lists/train.txt"), caplog)
    assert [r.image_id for r in ds.records] == ["one"] and ds.report.total == 0


def test_images_folder_as_split(tmp_path, caplog):
    b = YoloBuilder(tmp_path / "yolo")
    b.add("k2", "1 0.5 0.5 0.2 0.2\n")
    b.add("k1", "0 0.5 0.5 0.2 0.2\n", sub="train/nested")
    ds = _load(b.yaml(split_value="images/train"), caplog)
    assert [r.image_id for r in ds.records] == [
        "k2",
        "k1",
    ]  # sorted by path: images/train/k2.jpg < .../nested/k1.jpg
    assert [r.labels.tolist() for r in ds.records] == [[1], [0]]


def _one_problem(tmp_path, caplog, labels, counts, image=True, **kw):
    b = YoloBuilder(tmp_path / "yolo")
    b.add("good", "0 0.5 0.5 0.2 0.2\n")
    b.add("bad", labels, image=image)
    ds = _load(b.yaml(), caplog, **kw)
    assert ds.report.counts == counts
    messages = _warnings(caplog)
    assert len(messages) == ds.report.total and all("bad" in m for m in messages), messages
    assert "good" in [r.image_id for r in ds.records]
    return ds, messages


def _bad(ds):
    return [r for r in ds.records if r.image_id == "bad"][0]


@pytest.mark.parametrize(
    "line",
    [
        "0 0.5 0.5 0.2",
        "cat 0.5 0.5 0.2 0.2",
        "1.5 0.5 0.5 0.2 0.2",
        "0 0.5 0.5 0.2 0.2 0.7",
        "0 0.5 inf 0.2 0.2",
        "0,0.5,0.5,0.2,0.2",
    ],
)
def test_unparsable_line_skipped(tmp_path, caplog, line):
    ds, msgs = _one_problem(tmp_path, caplog, f"{line}\n1 0.5 0.5 0.2 0.2\n", {Problem.BAD_LINE: 1})
    assert _bad(ds).labels.tolist() == [1] and "bad.txt:1" in msgs[0]


@pytest.mark.parametrize("line", ["3 0.5 0.5 0.2 0.2", "-1 0.5 0.5 0.2 0.2", "17 0.5 0.5 0.2 0.2"])
def test_unknown_class_skipped(tmp_path, caplog, line):
    ds, _ = _one_problem(tmp_path, caplog, line + "\n", {Problem.UNKNOWN_CLASS: 1})
    assert len(_bad(ds).boxes) == 0


@pytest.mark.parametrize("line", ["0 0.5 0.5 0 0.2", "0 0.5 0.5 0.2 0", "0 0.5 0.5 -0.2 0.2"])
def test_degenerate_box_skipped(tmp_path, caplog, line):
    _one_problem(tmp_path, caplog, line + "\n", {Problem.DEGENERATE_BOX: 1})


def test_pixel_coordinates_are_not_taken_for_normalized(tmp_path, caplog):
    ds, msgs = _one_problem(tmp_path, caplog, "0 50 25 20 10\n", {Problem.NOT_NORMALIZED: 1})
    assert len(_bad(ds).boxes) == 0 and "normalized" in msgs[0]


def test_box_past_border_clipped_and_outside_dropped(tmp_path, caplog):
    ds, _ = _one_problem(
        tmp_path,
        caplog,
        "0 0.95 0.5 0.2 0.2\n0 1.0009 0.5 0.0001 0.2\n",
        {Problem.CLIPPED_BOX: 1, Problem.OUTSIDE_BOX: 1},
    )
    np.testing.assert_allclose(_bad(ds).boxes, [[85, 20, 100, 30]], rtol=1e-6)


def test_missing_label_file_is_a_reported_background_image(tmp_path, caplog):
    ds, msgs = _one_problem(tmp_path, caplog, None, {Problem.MISSING_LABELS: 1})
    assert len(_bad(ds).boxes) == 0 and "bad.txt" in msgs[0]


def test_unreadable_label_file_skips_the_image(tmp_path, caplog):
    ds, _ = _one_problem(tmp_path, caplog, b"\x00\xff\xfe binary junk \xc3\x28", {Problem.BAD_ANNOTATION: 1})
    assert [r.image_id for r in ds.records] == ["good"]


def test_missing_image(tmp_path, caplog):
    ds, msgs = _one_problem(tmp_path, caplog, "0 0.5 0.5 0.2 0.2\n", {Problem.MISSING_IMAGE: 1}, image=False)
    assert [r.image_id for r in ds.records] == ["good"] and "bad.jpg does not exist" in msgs[0]


def test_corrupt_image(tmp_path, caplog):
    b = YoloBuilder(tmp_path / "yolo")
    b.add("good", "0 0.5 0.5 0.2 0.2\n")
    b.add("bad", "0 0.5 0.5 0.2 0.2\n", image=False)
    (b.root / "images" / "train" / "bad.jpg").write_text("<html>not found</html>")
    ds = _load(b.yaml(), caplog)
    assert ds.report.counts == {Problem.CORRUPT_IMAGE: 1} and [r.image_id for r in ds.records] == ["good"]


def test_duplicate_stem(tmp_path, caplog):
    b = YoloBuilder(tmp_path / "yolo")
    b.add("same", "0 0.5 0.5 0.2 0.2\n")
    b.add("same", "1 0.5 0.5 0.2 0.2\n", sub="other")
    ds = _load(b.yaml(), caplog)
    assert ds.report.counts == {Problem.DUPLICATE_IMAGE: 1}
    assert len(ds) == 1 and ds.records[0].labels.tolist() == [0]


def test_box_coordinates_use_the_real_image_size(tmp_path, caplog):
    b = YoloBuilder(tmp_path / "yolo")
    b.add("tall", "0 0.5 0.5 0.5 0.5\n", size=(40, 120))
    ds = _load(b.yaml(), caplog)
    r = ds.records[0]
    assert (r.width, r.height) == (40, 120)
    np.testing.assert_allclose(r.boxes, [[10, 30, 30, 90]], rtol=1e-6)


def test_missing_split_file_and_empty_folder_raise(tmp_path):
    b = YoloBuilder(tmp_path / "yolo")
    path = b.yaml(split_value="nope.txt")
    with pytest.raises(DataError, match=r"YOLO split file .*nope.txt does not exist"):
        load_dataset(path, "train")
    path = b.yaml(split_value="images/train")
    with pytest.raises(DataError, match=r"images/train holds no images"):
        load_dataset(path, "train")
