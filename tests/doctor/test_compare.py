"""``edge.doctor.compare``: post-NMS identity (ties in any order, differences reported) and pre-NMS errors
relative to the reference's scale.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.doctor.compare import compare_detections, pre_nms_errors


def _dets(boxes, scores, classes):
    k = 4
    b = np.zeros((1, k, 4), np.float32)
    s = np.zeros((1, k), np.float32)
    c = np.zeros((1, k), np.int32)
    n = len(scores)
    b[0, :n], s[0, :n], c[0, :n] = boxes, scores, classes
    return {"num_detections": np.array([[n]], np.int32), "detection_boxes": b, "detection_scores": s,
            "detection_classes": c}


def test_compare_detections_matches_ties_in_any_order_and_reports_differences():
    a = _dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.9], [0, 1])
    swapped = _dets([[20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.9], [1, 0])
    assert compare_detections(a, swapped, 1e-4) == []
    other_class = _dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.9], [0, 2])
    assert "no counterpart" in compare_detections(other_class, a, 1e-4)[0]
    fewer = _dets([[0, 0, 10, 10]], [0.9], [0])
    assert "1 detections vs 2" in compare_detections(fewer, a, 1e-4)[0]
    moved = _dets([[0, 0, 10, 10.5], [20, 20, 30, 30]], [0.9, 0.9], [0, 1])
    assert compare_detections(moved, a, 1e-4)  # 0.5 px > 1e-4 * 30 px
    assert compare_detections(moved, a, 2e-2) == []  # 0.5 px <= 2e-2 * 30 px


def test_pre_nms_errors_are_relative_to_the_reference_scale():
    ref = {"boxes": np.array([[100.0, 200.0]]), "scores": np.array([[0.5, 0.25]])}
    got = {"boxes": np.array([[101.0, 200.0]]), "scores": np.array([[0.5, 0.3]])}
    errors = pre_nms_errors(got, ref, ["boxes", "scores"])
    assert errors["boxes"] == pytest.approx(1.0 / 200.0)
    assert errors["scores"] == pytest.approx(0.05)  # scale max(1, 0.5) = 1: absolute
    assert pre_nms_errors({"boxes": np.zeros((1, 3))}, ref, ["boxes"])["boxes"] == float("inf")
