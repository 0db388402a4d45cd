"""VOC loader against real XML, split and image files written to tmp_path: every bad-input case."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np
import pytest

from edge.data import Problem, load_dataset
from edge.errors import DataError

W, H = 64, 48


def _obj(name, box, difficult=0):
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>"


def _xml(filename: Optional[str], objects: Sequence[str], size=(W, H)) -> str:
    size_xml = (
        ""
        if size is None
        else f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    )
    name = "" if filename is None else f"<filename>{filename}</filename>"
    return f"<annotation><folder>JPEGImages</folder>{name}{size_xml}{''.join(objects)}</annotation>"


class VocBuilder:
    def __init__(self, root: Path):
        self.root = root
        for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.ids: List[str] = []

    def image(self, image_id: str, suffix=".jpg", size=(W, H)):
        cv2.imwrite(
            str(self.root / "JPEGImages" / f"{image_id}{suffix}"),
            np.full((size[1], size[0], 3), 90, np.uint8),
        )

    def add(self, image_id: str, xml: Optional[str], image: bool = True, suffix=".jpg", size=(W, H)):
        if xml is not None:
            (self.root / "Annotations" / f"{image_id}.xml").write_text(xml)
        if image:
            self.image(image_id, suffix, size)
        self.ids.append(image_id)

    def yaml(self, split="train", names=("cell", "dot")) -> Path:
        (self.root / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(self.ids) + "\n")
        path = self.root.parent / "voc.yaml"
        path.write_text(
            f"name: vt\nroot: {self.root.name}\nformat: voc\nsplits: {{{split}: ImageSets/Main/{split}.txt}}\n"
            f"names: [{', '.join(names)}]\n"
        )
        return path


def _warnings(caplog) -> List[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "edge.data.sanitize"
    ]


def _load(path, caplog, **kw):
    with caplog.at_level(logging.WARNING):
        return load_dataset(path, "train", **kw)


def test_good_file_loads_boxes_labels_difficult(tmp_path, caplog):
    b = VocBuilder(tmp_path / "voc")
    b.add(
        "a1", _xml("a1.jpg", [_obj("cell", (1, 2, 30, 40)), _obj(" dot ", (10.5, 5, 20, 15.5), difficult=1)])
    )
    ds = _load(b.yaml(), caplog)
    assert len(ds) == 1 and ds.report.total == 0 and _warnings(caplog) == []
    r = ds.records[0]
    assert (
        r.image_id == "a1"
        and Path(r.path) == (tmp_path / "voc/JPEGImages/a1.jpg")
        and Path(r.path).is_absolute()
    )
    assert (r.width, r.height) == (W, H)
    np.testing.assert_array_equal(r.boxes, np.array([[1, 2, 30, 40], [10.5, 5, 20, 15.5]], np.float32))
    assert (
        r.boxes.dtype == np.float32 and r.labels.tolist() == [0, 1] and r.difficult.tolist() == [False, True]
    )
    assert ds.class_names == ["cell", "dot"] and ds.format == "voc" and ds.category_ids == []


def _one_problem(tmp_path, caplog, xml, reason, image=True, suffix=".jpg", image_size=(W, H), **kw):
    b = VocBuilder(tmp_path / "voc")
    b.add("good", _xml("good.jpg", [_obj("cell", (1, 1, 10, 10))]))
    b.add("bad", xml, image=image, suffix=suffix, size=image_size)
    ds = _load(b.yaml(), caplog, **kw)
    assert ds.report.counts == {reason: 1} if isinstance(reason, str) else ds.report.counts == reason
    messages = _warnings(caplog)
    assert len(messages) == ds.report.total
    assert all("bad" in m for m in messages), messages  # each warning names the file
    assert "good" in [r.image_id for r in ds.records]  # the rest still loads
    return ds, messages


@pytest.mark.parametrize("box", [(10, 10, 10, 20), (10, 10, 20, 10), (30, 10, 20, 20), (5, 30, 15, 20)])
def test_degenerate_box_skipped(tmp_path, caplog, box):
    ds, msgs = _one_problem(
        tmp_path,
        caplog,
        _xml("bad.jpg", [_obj("cell", box), _obj("dot", (1, 1, 5, 5))]),
        Problem.DEGENERATE_BOX,
    )
    bad = [r for r in ds.records if r.image_id == "bad"][0]
    assert bad.labels.tolist() == [1]  # the good box of the same file is kept
    assert "bad.xml" in msgs[0] and "zero or negative" in msgs[0]


def test_box_past_border_clipped(tmp_path, caplog):
    ds, msgs = _one_problem(
        tmp_path, caplog, _xml("bad.jpg", [_obj("cell", (-5, 10, 80, 60))]), Problem.CLIPPED_BOX
    )
    bad = [r for r in ds.records if r.image_id == "bad"][0]
    np.testing.assert_array_equal(bad.boxes, [[0, 10, W, H]])
    assert "clipped" in msgs[0]


def test_box_entirely_outside_dropped(tmp_path, caplog):
    ds, _ = _one_problem(
        tmp_path, caplog, _xml("bad.jpg", [_obj("cell", (70, 10, 90, 20))]), Problem.OUTSIDE_BOX
    )
    assert len([r for r in ds.records if r.image_id == "bad"][0].boxes) == 0


def test_unknown_class_skipped(tmp_path, caplog):
    _, msgs = _one_problem(
        tmp_path,
        caplog,
        _xml("bad.jpg", [_obj("Cell", (1, 1, 9, 9)), _obj("", (1, 1, 9, 9))]),
        {Problem.UNKNOWN_CLASS: 2},
    )
    assert "'Cell'" in msgs[0]


@pytest.mark.parametrize(
    "obj",
    [
        "<object><name>cell</name></object>",  # no bndbox
        "<object><name>cell</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>",
        "<object><name>cell</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>",
        "<object><name>cell</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>",
    ],
)
def test_unparsable_box_skipped(tmp_path, caplog, obj):
    _one_problem(tmp_path, caplog, _xml("bad.jpg", [obj]), Problem.BAD_BOX)


def test_missing_image_file(tmp_path, caplog):
    ds, msgs = _one_problem(
        tmp_path, caplog, _xml("bad.jpg", [_obj("cell", (1, 1, 5, 5))]), Problem.MISSING_IMAGE, image=False
    )
    assert [r.image_id for r in ds.records] == ["good"]
    assert "bad.jpg does not exist" in msgs[0]


def test_corrupt_image_file(tmp_path, caplog):
    b = VocBuilder(tmp_path / "voc")
    b.add("good", _xml("good.jpg", [_obj("cell", (1, 1, 10, 10))]))
    b.add("bad", _xml("bad.jpg", [_obj("cell", (1, 1, 5, 5))]), image=False)
    (b.root / "JPEGImages" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage, not a jpeg")
    ds = _load(b.yaml(), caplog)
    assert ds.report.counts == {Problem.CORRUPT_IMAGE: 1} and [r.image_id for r in ds.records] == ["good"]
    assert "bad.jpg" in _warnings(caplog)[0]


def test_truncated_image_caught_by_decode_check(tmp_path, caplog):
    b = VocBuilder(tmp_path / "voc")
    b.add("good", _xml("good.jpg", [_obj("cell", (1, 1, 10, 10))]))
    b.add("bad", _xml("bad.jpg", [_obj("cell", (1, 1, 5, 5))]))
    jpg = b.root / "JPEGImages" / "bad.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    path = b.yaml()
    assert len(_load(path, caplog)) == 2  # the header check alone cannot see a cut-off tail
    caplog.clear()
    ds = _load(path, caplog, decode_images=True)
    assert ds.report.counts == {Problem.CORRUPT_IMAGE: 1} and [r.image_id for r in ds.records] == ["good"]


def test_unparsable_xml(tmp_path, caplog):
    ds, msgs = _one_problem(tmp_path, caplog, "<annotation><object><name>cell</name>", Problem.BAD_ANNOTATION)
    assert [r.image_id for r in ds.records] == ["good"] and "bad.xml" in msgs[0]


def test_xml_with_wrong_root_element(tmp_path, caplog):
    _one_problem(tmp_path, caplog, "<html><body/></html>", Problem.BAD_ANNOTATION)


def test_missing_annotation_file(tmp_path, caplog):
    ds, msgs = _one_problem(tmp_path, caplog, None, Problem.MISSING_ANNOTATION)
    assert [r.image_id for r in ds.records] == ["good"] and "bad.xml" in msgs[0]


def test_missing_size_uses_the_real_image_size(tmp_path, caplog):
    ds, _ = _one_problem(
        tmp_path,
        caplog,
        _xml("bad.jpg", [_obj("cell", (1, 1, 90, 70))], size=None),
        Problem.MISSING_SIZE,
        image_size=(100, 80),
    )
    bad = [r for r in ds.records if r.image_id == "bad"][0]
    assert (bad.width, bad.height) == (100, 80)
    np.testing.assert_array_equal(bad.boxes, [[1, 1, 90, 70]])  # not clipped to a guessed size


def test_size_disagreeing_with_image_uses_the_real_size(tmp_path, caplog):
    ds, msgs = _one_problem(
        tmp_path,
        caplog,
        _xml("bad.jpg", [_obj("cell", (1, 1, 90, 70))], size=(W, H)),
        Problem.SIZE_MISMATCH,
        image_size=(100, 80),
    )
    bad = [r for r in ds.records if r.image_id == "bad"][0]
    assert (bad.width, bad.height) == (100, 80) and "64x48" in msgs[0]


def test_filename_missing_or_wrong_falls_back_to_the_id(tmp_path, caplog):
    b = VocBuilder(tmp_path / "voc")
    b.add("p1", _xml(None, [_obj("cell", (1, 1, 5, 5))]), suffix=".png")
    b.add("p2", _xml("renamed_elsewhere.jpg", [_obj("cell", (1, 1, 5, 5))]))
    ds = _load(b.yaml(), caplog)
    assert ds.report.total == 0 and [Path(r.path).name for r in ds.records] == ["p1.png", "p2.jpg"]


def test_duplicate_id_in_split_file(tmp_path, caplog):
    b = VocBuilder(tmp_path / "voc")
    b.add("a", _xml("a.jpg", [_obj("cell", (1, 1, 5, 5))]))
    b.ids.append("a")
    ds = _load(b.yaml(), caplog)
    assert len(ds) == 1 and ds.report.counts == {Problem.DUPLICATE_IMAGE: 1}


def test_split_file_comments_blank_lines_and_second_column(tmp_path, caplog):
    b = VocBuilder(tmp_path / "voc")
    b.add("a", _xml("a.jpg", [_obj("cell", (1, 1, 5, 5))]))
    b.add("b", _xml("b.jpg", []))
    path = b.yaml()
    (b.root / "ImageSets/Main/train.txt").write_text("# ids\na  1\n\n   \nb -1\n")
    ds = _load(path, caplog)
    assert [r.image_id for r in ds.records] == ["a", "b"] and len(ds.records[1].boxes) == 0


def test_everything_at_once_counts_each_problem(tmp_path, caplog):
    b = VocBuilder(tmp_path / "voc")
    b.add("ok", _xml("ok.jpg", [_obj("cell", (1, 1, 10, 10)), _obj("dot", (2, 2, 3, 3), difficult=1)]))
    b.add(
        "mixed",
        _xml(
            "mixed.jpg",
            [_obj("cell", (5, 5, 5, 9)), _obj("cell", (50, 40, 70, 60)), _obj("cow", (1, 1, 2, 2))],
        ),
    )
    b.add("noimg", _xml("noimg.jpg", []), image=False)
    b.add("noxml", None)
    b.add("broken", "<annotation>")
    ds = _load(b.yaml(), caplog)
    assert ds.report.counts == {
        Problem.DEGENERATE_BOX: 1,
        Problem.CLIPPED_BOX: 1,
        Problem.UNKNOWN_CLASS: 1,
        Problem.MISSING_IMAGE: 1,
        Problem.MISSING_ANNOTATION: 1,
        Problem.BAD_ANNOTATION: 1,
    }
    assert len(_warnings(caplog)) == 6
    assert [r.image_id for r in ds.records] == ["ok", "mixed"]
    summary = [r.getMessage() for r in caplog.records if r.name == "edge.data"]
    assert len(summary) == 1 and "2 images" in summary[0] and "degenerate box: 1" in summary[0]
    for r in ds.records:  # nothing garbage gets through
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
        assert r.boxes.min() >= 0 and (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()


def test_warnings_are_capped_but_counts_are_not(tmp_path, caplog):
    b = VocBuilder(tmp_path / "voc")
    b.add("many", _xml("many.jpg", [_obj("cow", (1, 1, 5, 5))] * 7))
    ds = _load(b.yaml(), caplog, max_warnings_per_reason=3)
    assert ds.report.counts == {Problem.UNKNOWN_CLASS: 7}
    per_box = [m for m in _warnings(caplog) if "'cow'" in m]
    assert len(per_box) == 3 and any("DEBUG level" in m for m in _warnings(caplog))


def test_missing_folders_raise(tmp_path):
    b = VocBuilder(tmp_path / "voc")
    b.add("a", _xml("a.jpg", []))
    path = b.yaml()
    (b.root / "JPEGImages" / "a.jpg").unlink()
    (b.root / "JPEGImages").rmdir()
    with pytest.raises(DataError, match=r"VOC image folder .*JPEGImages does not exist"):
        load_dataset(path, "train")
