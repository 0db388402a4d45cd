"""``edge quantize --precision int8`` with too few calibration images says so (issue 13, item 12): a warning
naming the count and the minimum (``MIN_CALIBRATION_IMAGES``, 32, stated in the help), and the gate says how
many validation images it scored. The crafted grid-cell detector and real PNG images on disk."""

from __future__ import annotations

import json
import logging

import pytest

from edge.cli.main import main
from edge.data.calibration import write_manifest
from tests.export.quantize.test_quantize_gate import cells, crafted_detector, write_model  # noqa: F401


def _quantize(cells, tmp_path, manifest, *extra):  # noqa: F811
    src = write_model(tmp_path, "benign", crafted_detector())
    return main(["quantize", str(src), "--precision", "int8", "--calib", str(manifest), "--method", "minmax",
                 "--val-data", str(cells["data"]), "--val-split", "val", "--out", str(tmp_path / "q.onnx"), *extra])


def test_one_calibration_image_is_warned_about_with_the_count(cells, tmp_path, caplog, capsys):  # noqa: F811
    one = write_manifest(tmp_path / "one.txt", sorted((cells["root"] / "images").glob("calib_*.png"))[:1],
                         header=["one image"])
    with caplog.at_level(logging.INFO):
        assert _quantize(cells, tmp_path, one) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("INT8 calibration on 1 image(s), fewer than the 32" in w for w in warnings), warnings
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["calibration_images"] == 1 and summary["gate_images"] == 12
    assert any("scored on 12 validation image(s)" in r.getMessage() for r in caplog.records)
    # the gate's 12 images are below the minimum too: said, with the count
    assert any("the accuracy gate scored only 12 validation image(s)" in w for w in warnings), warnings


def test_enough_calibration_images_are_not_warned_about(cells, tmp_path, caplog, monkeypatch):  # noqa: F811
    from edge.export.quantize import run as quantize_run

    monkeypatch.setattr(quantize_run, "MIN_CALIBRATION_IMAGES", 8)  # the fixture has 8 calibration images
    with caplog.at_level(logging.WARNING):
        assert _quantize(cells, tmp_path, cells["manifest"]) == 0
    assert not [r for r in caplog.records if "calibration on" in r.getMessage()]


def test_the_help_states_the_minimum(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    assert "32 calibration images" in " ".join(capsys.readouterr().out.split())
