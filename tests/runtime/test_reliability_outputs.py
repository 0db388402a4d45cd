"""Model outputs are validated at the backend boundary (issue 13, item 7): a deploy graph that returns NaN
boxes, scores above 1 or class ids outside its class list never reaches the outputs; the detections are
dropped, counted in the stats JSON (``detections_invalid_dropped``) and warned about once, and
``--detections-out`` is always valid JSON.

A real ONNX graph (built with onnx.helper, as ``edge.runtime.synthetic`` does) run through ONNX Runtime and
the ``edge-run`` command in-process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
from edge.runtime.sinks import JsonLinesSink

CLASS_NAMES = ["tall", "wide"]

#: the graph's six detections: (box, score, class); rows 1, 2, 3 and 4 are invalid
ROWS = [
    ([10.0, 10.0, 40.0, 30.0], 0.9, 1),          # valid
    ([float("nan"), 5.0, 20.0, 20.0], 0.8, 0),   # NaN box
    ([5.0, 5.0, 20.0, 20.0], 1.7, 0),            # score above 1
    ([5.0, 5.0, 20.0, 20.0], 0.6, 7),            # class 7 of 2
    ([5.0, 5.0, float("inf"), 20.0], 0.5, 1),    # infinite box
    ([20.0, 20.0, 50.0, 60.0], 0.4, 0),          # valid
]
INVALID = 4


def broken_model(path: Path, size=(64, 64)) -> Path:
    """A deploy graph (uint8 NHWC input, the four NMS outputs) whose outputs are the constant ``ROWS``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = len(ROWS)
    values = {
        "c_num": np.array([[k]], np.int32),
        "c_boxes": np.array([[r[0] for r in ROWS]], np.float32),
        "c_scores": np.array([[r[1] for r in ROWS]], np.float32),
        "c_classes": np.array([[r[2] for r in ROWS]], np.int32),
    }
    inits = [numpy_helper.from_array(v, n) for n, v in values.items()]
    outs = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    nodes = [helper.make_node("Identity", [c], [o], name=o) for c, o in zip(values, outs)]
    h, w = size
    graph = helper.make_graph(
        nodes, "broken", [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, h, w, 3])],
        [helper.make_tensor_value_info("num_detections", TensorProto.INT32, [1, 1]),
         helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [1, k, 4]),
         helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [1, k]),
         helper.make_tensor_value_info("detection_classes", TensorProto.INT32, [1, k])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge.tests")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    sidecar = {"class_names": CLASS_NAMES, "input_size": [h, w], "input_layout": "uint8_nhwc_bgr",
               "normalization": {"scale": 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
               "pad_value": 114}
    path.with_suffix(".json").write_text(json.dumps(sidecar) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return broken_model(tmp_path_factory.mktemp("outputs") / "broken.nms.onnx")


@pytest.fixture(autouse=True)
def _no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_backend_drops_nan_boxes_scores_above_one_and_unknown_classes(model, caplog):
    with OnnxRuntimeBackend(model, OrtOptions(threads=1)) as backend:
        frame = np.zeros((1, 64, 64, 3), np.uint8)
        with caplog.at_level(logging.WARNING, logger="edge.runtime.backend"):
            first = backend.infer(frame)
            second = backend.infer(frame)
        boxes, scores, classes = first.image(0)
        assert first.invalid_dropped == INVALID and second.invalid_dropped == INVALID
        assert backend.invalid_dropped == 2 * INVALID
        np.testing.assert_allclose(boxes, [ROWS[0][0], ROWS[5][0]])
        np.testing.assert_allclose(scores, [0.9, 0.4])
        assert classes.tolist() == [1, 0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once, with the count
    assert "4 invalid detection(s)" in warnings[0] and "detections_invalid_dropped" in warnings[0]


def test_drop_invalid_keeps_order_clamps_rounding_and_ignores_rows_past_num():
    from edge.runtime.backend import DetectionBatch, drop_invalid

    rng = np.random.default_rng(13)
    boxes = rng.uniform(0, 100, (2, 5, 4)).astype(np.float32)
    boxes[..., 2:] += boxes[..., :2]
    scores = np.array([[1.0004, 0.8, 0.7, 0.6, 0.5], [0.9, np.nan, 0.5, 0.0, 0.0]], np.float32)
    classes = np.array([[0, 1, -1, 0, 0], [1, 1, 3, 9, 9]], np.int32)
    det = DetectionBatch(np.array([4, 3], np.int32), boxes.copy(), scores, classes)
    drop_invalid(det, num_classes=2)
    assert det.num.tolist() == [3, 1] and det.invalid_dropped == 3  # rows past num (class 9) not counted
    assert det.scores[0, :3].tolist() == pytest.approx([1.0, 0.8, 0.6])  # 1.0004: fp16 rounding, clamped
    np.testing.assert_array_equal(det.boxes[0, 2], boxes[0, 3])
    assert det.classes[1, :1].tolist() == [1]


def test_edge_run_writes_valid_json_and_counts_the_dropped_detections(model, tmp_path, caplog):
    from edge.cli.run import main

    out, stats = tmp_path / "dets.jsonl", tmp_path / "stats.json"
    with caplog.at_level(logging.WARNING):
        rc = main([str(model), "--source", "test://64x64?frames=5", "--detections-out", str(out),
                   "--stats-json", str(stats), "--headless", "--threads", "1", "--log-every", "0"])
    assert rc == 0
    text = out.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    lines = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in --detections-out"))
             for line in text.splitlines()]
    assert len(lines) == 5
    for line in lines:
        assert [d["class_id"] for d in line["detections"]] == [1, 0]
        assert all(0.0 <= d["score"] <= 1.0 for d in line["detections"])
    js = json.loads(stats.read_text(encoding="utf-8"))
    # warm-up batches are not frames: only the five frames' detections are counted
    assert js["detections_invalid_dropped"] == 5 * INVALID
    assert js["detections"] == 10
    warned = [r.getMessage() for r in caplog.records if "invalid detection" in r.getMessage()]
    assert len(warned) == 1


def test_jsonl_sink_never_writes_nan_even_when_given_it(tmp_path, caplog):
    from edge.runtime.pipeline import FramePacket

    sink = JsonLinesSink(tmp_path / "d.jsonl", CLASS_NAMES)
    p = FramePacket(0, np.zeros((48, 64, 3), np.uint8), 1.0)
    p.boxes = np.array([[1.0, 2.0, 3.0, 4.0], [np.nan, 1.0, 2.0, 3.0]], np.float32)
    p.scores = np.array([0.9, np.inf], np.float32)
    p.classes = np.array([0, 1], np.int32)
    with caplog.at_level(logging.WARNING):
        sink.write(p)
    sink.close()
    line = json.loads((tmp_path / "d.jsonl").read_text(encoding="utf-8"),
                      parse_constant=lambda c: pytest.fail(f"{c} written"))
    assert [d["class_id"] for d in line["detections"]] == [0]
    assert any("left out" in r.getMessage() for r in caplog.records)


def test_the_conformance_report_names_a_graph_that_returns_invalid_detections(model):
    from edge.runtime.backend import conformance_report

    with OnnxRuntimeBackend(model, OrtOptions(threads=1)) as backend:
        rng = np.random.default_rng(7)
        batches = [rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8) for _ in range(2)]
        problems = conformance_report(backend, batches, num_classes=2)
    assert any("returned 12 invalid detection(s)" in p for p in problems), problems
