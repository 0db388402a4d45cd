"""The real BCCD dataset through data/bccd.yaml: split sizes, the two known bad boxes, class counts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge.data import Problem, class_counts, load_dataset, summary_text
from tests.paths import BCCD, REPO

YAML = REPO / "data" / "bccd.yaml"

pytestmark = pytest.mark.skipif(
    not (BCCD / "Annotations").is_dir(),
    reason=f"BCCD dataset not found at {BCCD} (shared datasets folder absent)",
)


@pytest.fixture(scope="module")
def splits():
    return {s: load_dataset(YAML, s, log=False) for s in ("train", "val", "trainval", "test")}


def test_split_sizes(splits):
    assert {s: len(d) for s, d in splits.items()} == {"train": 205, "val": 87, "trainval": 292, "test": 72}
    ids = {s: [r.image_id for r in d.records] for s, d in splits.items()}
    assert set(ids["train"]) | set(ids["val"]) == set(ids["trainval"])
    assert not set(ids["trainval"]) & set(ids["test"])
    for s in ids:
        assert len(set(ids[s])) == len(ids[s])
        assert all(isinstance(i, str) and i.startswith("BloodImage_") for i in ids[s])


def test_the_two_degenerate_boxes_are_skipped_and_reported(caplog):
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(YAML, "trainval")
    assert ds.report.counts == {Problem.DEGENERATE_BOX: 2}
    per_box = [r.getMessage() for r in caplog.records if r.name == "edge.data.sanitize"]
    assert len(per_box) == 2
    assert any("BloodImage_00338.xml" in m for m in per_box) and any(
        "BloodImage_00343.xml" in m for m in per_box
    )
    summary = [r.getMessage() for r in caplog.records if r.name == "edge.data"]
    assert summary == [summary_text(ds)] and "degenerate box: 2" in summary[0]


def test_reports_per_split(splits):
    assert splits["train"].report.counts == {Problem.DEGENERATE_BOX: 1}  # 00343
    assert splits["val"].report.counts == {Problem.DEGENERATE_BOX: 1}  # 00338
    assert splits["test"].report.counts == {}


def test_class_counts_and_boxes_are_sane(splits):
    # README: 4,888 boxes (RBC 4,155, WBC 372, Platelets 361); the two degenerate ones are RBC boxes
    trainval, test = class_counts(splits["trainval"]), class_counts(splits["test"])
    total = {k: trainval[k] + test[k] for k in trainval}
    assert total == {"RBC": 4153, "WBC": 372, "Platelets": 361}
    for s in ("trainval", "test"):
        counts = class_counts(splits[s])
        assert counts["RBC"] > counts["WBC"] > 0 and counts["Platelets"] > 0
        for r in splits[s].records:
            assert (r.width, r.height) == (640, 480) and Path(r.path).is_file()
            assert len(r.boxes) > 0 and r.boxes.dtype == np.float32
            assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
            assert r.boxes.min() >= 0 and r.boxes[:, 2].max() <= 640 and r.boxes[:, 3].max() <= 480
            assert not r.difficult.any()
    assert splits["test"].class_names == ["RBC", "WBC", "Platelets"]


def test_test_split_decodes(caplog):
    ds = load_dataset(YAML, "test", decode_images=True, log=False)
    assert len(ds) == 72 and ds.report.total == 0
