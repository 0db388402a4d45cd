"""``edge.doctor.compare.match_detections`` (an engine's detections against ONNX Runtime's, one to one within
tolerances) and the plans of the shipped-engine checks (``edge.doctor.precisions``).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.doctor.compare import NmsParams, match_detections
from edge.doctor.precisions import (
    PrecisionPlan,
    calibrated_int8_skip_reason,
    dla_precision,
    plan_precisions,
    preferred_precision,
)


def _dets(boxes, scores, classes, k=4):
    b = np.zeros((1, k, 4), np.float32)
    s = np.zeros((1, k), np.float32)
    c = np.zeros((1, k), np.int32)
    n = len(scores)
    if n:
        b[0, :n], s[0, :n], c[0, :n] = boxes, scores, classes
    return {"num_detections": np.array([[n]], np.int32), "detection_boxes": b, "detection_scores": s,
            "detection_classes": c}


NMS = NmsParams(score_threshold=0.3, iou_threshold=0.5, max_detections=4)


def test_match_pairs_detections_one_to_one_and_reports_the_largest_deviations():
    want = _dets([[0, 0, 100, 100], [200, 200, 260, 250]], [0.9, 0.8], [0, 1])
    got = _dets([[200.5, 200, 260, 250], [0, 0, 101, 100]], [0.79, 0.905], [1, 0])
    m = match_detections(got, want, 2e-2, NMS)
    assert m.matched == 2 and not m.problems and not m.borderline
    assert m.max_box_px == pytest.approx(1.0) and m.max_box_rel == pytest.approx(1.0 / 260)
    assert m.max_score == pytest.approx(0.01, abs=1e-6)
    assert match_detections(got, want, 1e-3, NMS).problems  # 1 px > 1e-3 * 260 px


def test_unmatched_detections_are_problems_unless_they_sit_on_an_nms_threshold():
    base = [[0, 0, 100, 100], [200, 200, 260, 250]]
    want = _dets(base, [0.9, 0.8], [0, 1])
    # a detection of another class, far above the threshold, missing from the engine: a real difference
    m = match_detections(_dets(base[:1], [0.9], [0]), want, 2e-2, NMS)
    assert m.matched == 1 and len(m.problems) == 1 and "ONNX Runtime's detection (class 1, score 0.8000" in m.problems[0]
    # an extra engine detection just above the score threshold: borderline
    extra = _dets(base + [[300, 0, 340, 40]], [0.9, 0.8, 0.31], [0, 1, 2])
    m = match_detections(extra, want, 2e-2, NMS)
    assert not m.problems and "score threshold 0.3" in m.borderline[0] and "the engine's detection" in m.borderline[0]
    # ... but not when the NMS settings are unknown
    assert match_detections(extra, want, 2e-2, NmsParams()).problems
    # a box the engine kept that ONNX Runtime suppressed, overlapping a kept box of its class at IoU ~ 0.5
    overlap = [[0, 0, 100, 100], [0, 0, 100, 200]]  # IoU 0.5 with box 0
    got = _dets(overlap + base[1:], [0.9, 0.7, 0.8], [0, 0, 1])
    m = match_detections(got, want, 2e-2, NMS)
    assert not m.problems and "IoU threshold 0.5" in m.borderline[0]
    assert match_detections(got, want, 2e-2, NmsParams(score_threshold=0.3, iou_threshold=0.7)).problems
    # the last of a full list of max_detections may differ
    full_want = _dets([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], [0.9, 0.8, 0.7, 0.5],
                      [0, 0, 0, 0])
    full_got = _dets([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [80, 0, 90, 10]], [0.9, 0.8, 0.7, 0.505],
                     [0, 0, 0, 0])
    m = match_detections(full_got, full_want, 2e-2, NMS)
    assert m.matched == 3 and not m.problems and len(m.borderline) == 2
    assert all("last of the 4 detections" in b for b in m.borderline)


def test_match_reports_a_batch_size_difference():
    one = _dets([], [], [])
    two = {k: np.concatenate([v, v]) for k, v in one.items()}
    assert match_detections(one, two, 1e-3).problems == ["batch size 1 vs 2"]


def test_nms_params_come_from_the_sidecar():
    nms = NmsParams.from_sidecar({"nms": {"score_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 100,
                                          "class_agnostic": True}})
    assert nms == NmsParams(0.25, 0.45, 100, True)
    assert NmsParams.from_sidecar(None) == NmsParams()


def test_shipped_parts_are_planned_from_the_device_and_the_tensorrt_version():
    orin = plan_precisions("10.3.0", "8.7", "m.onnx", "fp32", None)
    assert preferred_precision(orin) == "fp16"  # edge build's default
    assert preferred_precision(orin[:1]) == "fp32"
    assert preferred_precision([PrecisionPlan("int8", "q.onnx")], ("fp16", "fp32")) is None
    assert calibrated_int8_skip_reason("10.3.0", "8.7", "fp32") == ""
    assert calibrated_int8_skip_reason("8.5.2", "7.2", "fp32", ["fp32", "int8"]) == ""
    assert "--precision" in calibrated_int8_skip_reason("10.3.0", "8.7", "fp32", ["fp32"])
    assert "fast INT8" in calibrated_int8_skip_reason("8.2.1", "5.3", "fp32")
    assert "no INT8 calibrator" in calibrated_int8_skip_reason("11.0.0", "8.9", "fp32")
    assert "fp32 graph" in calibrated_int8_skip_reason("10.3.0", "8.7", "qdq")
    assert dla_precision(2, orin) == ("fp16", "")
    precision, why = dla_precision(0, orin)
    assert precision is None and "no DLA" in why
    trt11 = plan_precisions("11.0.0", "8.7", "m.onnx", "fp32", None)
    precision, why = dla_precision(2, trt11)
    assert precision is None and "FP16 or INT8 only" in why and "strongly typed" in why
    assert dla_precision(2, plan_precisions("10.3.0", "8.7", "q.onnx", "qdq", None)) == ("int8", "")
