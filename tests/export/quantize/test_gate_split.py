"""``edge quantize`` checks the gate's split and the calibration split before calibrating (issue 11, "splits
without leakage"): a YAML without ``val`` used to fail in the gate after the whole calibration; now it is
refused at once, naming the splits the YAML has and ``--val-split``, with the same default as ``edge train``
(``edge.data.splits.resolve_val_split``). The crafted grid-cell detector and real PNG images on disk."""

from __future__ import annotations

import logging
import shutil

import pytest

from edge.cli.main import main
from tests.export.quantize.test_quantize_gate import cells, crafted_detector, write_model  # noqa: F401


@pytest.fixture()
def no_val(cells, tmp_path):  # noqa: F811
    """The cells dataset with its val images as the ``test`` split: no ``val``."""
    root = tmp_path / "cells"
    shutil.copytree(cells["root"], root)
    (root / "data.yaml").write_text((root / "data.yaml").read_text().replace("  val: val.txt", "  test: val.txt"))
    return root


def _quantize(tmp_path, data, *extra):
    src = write_model(tmp_path, "benign", crafted_detector())
    return main(["quantize", str(src), "--precision", "int8", "--calib", str(data), "--method", "minmax",
                 "--out", str(tmp_path / "q.onnx"), *extra])


def _errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_missing_val_split_is_refused_before_calibrating(no_val, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert _quantize(tmp_path, no_val / "data.yaml", "--calib-split", "calib") == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "has no 'val' split (it has test, calib)" in errors[0], errors
    assert "--val-split" in errors[0]
    assert not [r for r in caplog.records if "INT8 graph vs FP32" in r.getMessage()]  # nothing calibrated
    assert not (tmp_path / "q.onnx").exists()


def test_a_missing_calib_split_and_gate_split_in_one_error(no_val, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert _quantize(tmp_path, no_val / "data.yaml", "--calib-split", "trainval", "--val-split", "valid") == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "2 problems" in errors[0], errors
    assert "no split 'trainval' (it has test, calib); pick one with --calib-split" in errors[0]
    assert "no split 'valid' (it has test, calib)" in errors[0]


def test_naming_the_split_still_works(no_val, tmp_path, capsys):
    assert _quantize(tmp_path, no_val / "data.yaml", "--calib-split", "calib", "--val-split", "test") == 0
    assert '"gate_images": 12' in capsys.readouterr().out


def test_quantize_file_checks_the_gate_split_before_calibrating(no_val, tmp_path):
    from edge.data.calibration import calibration_source
    from edge.errors import DataError
    from edge.export.quantize import QuantizeConfig, quantize_file
    from edge.export.quantize.gate import GateConfig

    src = write_model(tmp_path, "benign", crafted_detector())
    calib = calibration_source(no_val / "data.yaml", "calib")
    with pytest.raises(DataError, match=r"no split 'val' \(it has test, calib\)"):
        quantize_file(src, tmp_path / "q.onnx", QuantizeConfig(method="minmax"), calib=calib,
                      gate=GateConfig(val_data=str(no_val / "data.yaml"), val_split="val"))
