"""``edge export`` end to end: real checkpoints written by ``edge.train.checkpoint``, real files out, and the
failures (a model that does not trace, bad options) exiting with status 2 and leaving no ONNX behind."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Tuple

import cv2
import numpy as np
import pytest
import torch

from edge.artifacts import sha256_file
from edge.cli.main import main
from edge.export.preprocess import sample_frames
from edge.export.verify import ort_session, relative_error
from edge.models import MODEL_REGISTRY, build_model
from edge.models.base import Detector, Normalization
from edge.train.checkpoint import build_card, save_checkpoint

CLASSES = ["Platelets", "RBC", "WBC"]


def write_checkpoint(path: Path, arch: str, class_names: Any = CLASSES, **config: Any) -> Tuple[Path, Any]:
    torch.manual_seed(0)
    model = build_model(arch, **config).eval()
    card = build_card(model, class_names=class_names, data={"name": "bccd", "hash": "d" * 64}, epochs=3)
    save_checkpoint(path, {"card": card, "model": model.state_dict()})
    return path, model


def json_lines(text: str):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_cli_exports_a_checkpoint_at_two_sizes(tmp_path, capsys):
    run = tmp_path / "run"
    ckpt, model = write_checkpoint(run / "best.pt", "yolov3-tiny", num_classes=3, input_size=[128, 128],
                                   width=0.25)
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    frame = sample_frames(1, (90, 140), seed=4)[0]
    assert cv2.imwrite(str(img_dir / "a.png"), frame)
    out = tmp_path / "onnx"
    code = main(["export", str(run), "--imgsz", "128x128", "--imgsz", "96x160", "--dynamic-batch",
                 "--verify-images", str(img_dir), "--out", str(out)])
    assert code == 0
    lines = json_lines(capsys.readouterr().out)
    assert [Path(r["onnx"]).name for r in lines] == ["yolov3-tiny_128x128.onnx", "yolov3-tiny_96x160.onnx"]
    assert sorted(p.name for p in out.iterdir()) == ["yolov3-tiny_128x128.json", "yolov3-tiny_128x128.onnx",
                                                      "yolov3-tiny_96x160.json", "yolov3-tiny_96x160.onnx"]
    for line, size in zip(lines, [(128, 128), (96, 160)]):
        side = json.loads(Path(line["sidecar"]).read_text())
        assert side["source"]["checkpoint"] == "best.pt"
        assert side["source"]["checkpoint_sha256"] == sha256_file(ckpt)
        assert side["source"]["data_hash"] == "d" * 64
        assert side["history"] == [{"stage": "export", "input": "best.pt", "input_sha256": sha256_file(ckpt)}]
        assert side["input_size"] == list(size) and side["config"]["input_size"] == list(size)
        assert side["class_names"] == CLASSES
        assert side["num_boxes"] == {f"{size[0]}x{size[1]}": model.num_predictions(size)}
        assert any(s["name"].startswith("images0") for s in side["verification"]["samples"])
        # the file does what the checkpoint does, on a batch of 3 it never saw
        frames = sample_frames(3, size, seed=31)
        x = torch.from_numpy(frames[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            tb, ts = (t.numpy() for t in model(x))
        ob, os_ = ort_session(line["onnx"]).run(["boxes", "scores"], {"images": frames})
        assert relative_error(ob, tb) <= 1e-4 and relative_error(os_, ts) <= 1e-4


def test_cli_default_size_is_the_cards_and_float_input(tmp_path, capsys):
    ckpt, model = write_checkpoint(tmp_path / "m.pt", "ssd", num_classes=3, input_size=[96, 128], width=0.25)
    code = main(["export", str(ckpt), "--input", "float-nchw", "--batch", "2", "--opset", "13", "--name", "bccd",
                 "--no-simplify", "--out", str(tmp_path / "o")])
    assert code == 0
    (line,) = json_lines(capsys.readouterr().out)
    assert Path(line["onnx"]).name == "bccd_96x128.onnx" and line["simplified"] is False
    side = json.loads(Path(line["sidecar"]).read_text())
    assert side["opset"] == 13 and side["input"]["shape"] == [2, 3, 96, 128]
    assert side["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert side["export"]["simplify"] == {"simplified": False, "reason": "--no-simplify"}


class FrozenScalar(Detector):
    """Registered only in these tests: a detector whose forward reads a tensor as a Python float, which
    torch's tracer freezes into a constant, so its ONNX differs from PyTorch on any other input."""

    arch = "test-frozen-scalar"

    def __init__(self, *, num_classes: int = 2, input_size: Any = (64, 64)):
        super().__init__(num_classes=num_classes, input_size=tuple(input_size), normalization=Normalization())
        self.conv = torch.nn.Conv2d(3, 4 + num_classes, 3, stride=4, padding=1)
        self.config = {"num_classes": int(num_classes), "input_size": list(self.input_size)}

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(images).flatten(2).transpose(1, 2)
        shift = float(images.mean()) * 50.0
        boxes = torch.cat([y[..., :2] * 8 + 32, y[..., :2] * 8 + 40], dim=-1) + shift
        return boxes, torch.sigmoid(y[..., 4:])


def test_cli_fails_with_status_2_and_writes_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(MODEL_REGISTRY, FrozenScalar.arch, FrozenScalar)
    ckpt, _ = write_checkpoint(tmp_path / "frozen.pt", FrozenScalar.arch, class_names=["a", "b"])
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main(["export", str(ckpt), "--out", str(out)])
    assert code == 2
    assert any("does not match PyTorch" in r.getMessage() for r in caplog.records)
    assert not out.exists() or sorted(out.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--imgsz", "0x64"], "HxW"),
        (["--opset", "8"], "opset 8"),
        (["--dynamic-hw"], "--imgsz"),
    ],
)
def test_cli_rejects_bad_options(tmp_path, caplog, args, message):
    ckpt, _ = write_checkpoint(tmp_path / "s.pt", "ssd", num_classes=3, input_size=[96, 96], width=0.25)
    with caplog.at_level(logging.ERROR):
        assert main(["export", str(ckpt), *args, "--out", str(tmp_path / "o")]) == 2
    assert any(message in r.getMessage() for r in caplog.records)
    assert not any((tmp_path / "o").glob("*.onnx"))


def test_cli_rejects_a_non_checkpoint_and_conflicting_batch(tmp_path, caplog, capsys):
    bogus = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bogus)
    with caplog.at_level(logging.ERROR):
        assert main(["export", str(bogus), "--out", str(tmp_path / "o")]) == 2
    assert any("not an edge checkpoint" in r.getMessage() for r in caplog.records)
    with pytest.raises(SystemExit) as info:
        main(["export", str(bogus), "--batch", "2", "--dynamic-batch", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_export_verb_is_listed_with_its_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--imgsz", "--dynamic-batch", "--dynamic-hw", "--opset", "--input", "--no-simplify",
                 "--verify-images", "--out"):
        assert flag in text
    assert np.dtype(np.uint8).name in text  # the default input is uint8 frames
