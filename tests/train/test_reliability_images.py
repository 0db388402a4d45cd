"""One policy for unusable images in ``edge train`` (issue 13, item 12): an empty file and a corrupt JPEG are
both skipped, counted and named in a warning, and the run goes on; ``--strict`` stops on them instead, in one
line naming them. Real BCCD images copied into a VOC dataset on disk, one truncated and one emptied."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from edge.cli.main import main
from tests.paths import BCCD

pytest.importorskip("torch")


@pytest.fixture()
def damaged(tmp_path) -> Path:
    if not (BCCD / "ImageSets" / "Main" / "train.txt").exists():
        pytest.skip(f"BCCD dataset not found at {BCCD}")
    root = tmp_path / "voc"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    ids = (BCCD / "ImageSets/Main/train.txt").read_text().split()[:6]
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
        shutil.copy(BCCD / "Annotations" / f"{i}.xml", root / "Annotations")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids) + "\n")
    truncated = root / "JPEGImages" / f"{ids[1]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:2000])  # header intact, pixels cut off
    (root / "JPEGImages" / f"{ids[3]}.jpg").write_bytes(b"")  # zero bytes
    (root / "data.yaml").write_text("name: damaged\nroot: .\nformat: voc\nsplits:\n  train: "
                                    "ImageSets/Main/train.txt\nnames: [RBC, WBC, Platelets]\n")
    return root


def _train(root: Path, out: Path, *extra: str) -> int:
    return main(["train", "--model", "yolov3-tiny", "--model-arg", "width=0.25", "--data", str(root / "data.yaml"),
                 "--imgsz", "64", "--epochs", "1", "--batch", "2", "--val-split", "none", "--threads", "1",
                 "--no-cache-images", "--out", str(out), *extra])


def test_a_corrupt_jpeg_is_skipped_like_an_empty_one_and_named(damaged, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert _train(damaged, tmp_path / "run") == 0
    warned = [r.getMessage() for r in caplog.records if "image(s) skipped" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]
    names = sorted(p.name for p in (damaged / "JPEGImages").iterdir() if p.stat().st_size <= 2000)
    assert "2 image(s) skipped" in warned[0] and all(n in warned[0] for n in names), warned
    assert (tmp_path / "run" / "last.pt").is_file()


def test_strict_stops_on_them_in_one_line(damaged, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert _train(damaged, tmp_path / "run", "--strict") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "2 image(s) missing, empty or corrupt" in errors[0] and "--strict" in errors[0]
    assert "Traceback" not in caplog.text and not (tmp_path / "run" / "last.pt").exists()
