"""Greedy non-maximum suppression in numpy (runtime path: no torch), exactly as ONNX Runtime does it.

Semantics (those of the ONNX ``NonMaxSuppression`` operator as ONNX Runtime's CPU kernel runs it,
``center_point_box=0``; checked by tests/test_nms.py against a real InferenceSession):

* Boxes are xyxy (pixels or normalized, it does not matter). Each box is first put in canonical
  form (x1, x2 = min, max of its two x values; the same for y), so flipped corners are accepted.
* Candidates are visited by descending score; equal scores: lower index first.
* A candidate is dropped when its IoU with an already kept box (of the same class) is strictly
  greater than ``iou_threshold``: IoU == threshold keeps both. Boxes that do not overlap with a
  positive area (touching edges, zero-area boxes) never suppress each other, whatever the threshold.
* IoU is computed in the boxes' float dtype with ORT's formula: inter = overlap_w * overlap_h,
  union = area_a + area_b - inter, iou = inter / union. With float32 inputs (what ORT and TensorRT
  take) every comparison is bit-identical to ORT's, so keep sets are identical, not just close.
* Score threshold (``multiclass_nms``): a candidate enters only if score > score_threshold (strict,
  as ONNX NonMaxSuppression; note that TensorRT's EfficientNMS_TRT keeps score >= threshold).
* NaN scores are never kept.

``edge.models.ops`` holds the torch twin of every function here, with identical results.
"""

from __future__ import annotations

import heapq
from typing import Any, List, Optional, Tuple

import numpy as np

from edge.boxes import as_boxes

__all__ = ["nms", "batched_nms", "multiclass_nms", "check_iou_threshold"]


def check_iou_threshold(iou_threshold: float) -> float:
    """Return ``iou_threshold`` as a float, or raise ValueError unless it is in [0, 1] (ORT's rule)."""
    thr = float(iou_threshold)
    if not (0.0 <= thr <= 1.0):
        raise ValueError(f"iou_threshold must be in [0, 1] (as ONNX NonMaxSuppression requires), got {thr}")
    return thr


def _check_max(value: Optional[int], name: str) -> Optional[int]:
    if value is None:
        return None
    value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (or None for no limit), got {value}")
    return value


def _canonical(boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[N, 4] xyxy -> x1, y1, x2, y2 with x1 <= x2, y1 <= y2, and the area [N] (ORT's BoxInfo)."""
    x1 = np.minimum(boxes[:, 0], boxes[:, 2])
    x2 = np.maximum(boxes[:, 0], boxes[:, 2])
    y1 = np.minimum(boxes[:, 1], boxes[:, 3])
    y2 = np.maximum(boxes[:, 1], boxes[:, 3])
    return x1, y1, x2, y2, (x2 - x1) * (y2 - y1)


def _greedy(
    coords: Tuple[np.ndarray, ...], groups: List[np.ndarray], rank: np.ndarray, thr: Any, limit: Optional[int]
) -> np.ndarray:
    """Greedy NMS within each group, all groups visited in one global best-first order.

    ``groups``: per class, the box indices in global order (best first); ``rank[i]``: position of box i
    in that order. The heads of all groups sit in a heap keyed by rank, so kept boxes come out best
    first across classes and the loop stops after ``limit`` boxes: a kept box only ever filters its
    own group, so the result is exactly per-class NMS, merged by global order and cut at ``limit``.
    """
    x1, y1, x2, y2, area = coords
    zero = area.dtype.type(0)
    keep: List[int] = []
    rests = list(groups)
    heap = [(int(rank[g[0]]), k) for k, g in enumerate(rests) if g.size]
    heapq.heapify(heap)
    while heap and (limit is None or len(keep) < limit):
        _, k = heapq.heappop(heap)
        i = int(rests[k][0])
        keep.append(i)
        rest = rests[k][1:]
        if rest.size:
            iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
            ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
            inter = np.maximum(iw, zero) * np.maximum(ih, zero)
            union = area[i] + area[rest] - inter
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                suppressed = (inter > zero) & (inter / union > thr)
            rest = rest[~suppressed]
        rests[k] = rest
        if rest.size:
            heapq.heappush(heap, (int(rank[rest[0]]), k))
    return np.asarray(keep, dtype=np.int64)


def _rank(order: np.ndarray, n: int) -> np.ndarray:
    rank = np.zeros(n, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank


def _sorted_order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties by lower index; NaN scores left out."""
    valid = np.flatnonzero(~np.isnan(scores))
    return valid[np.argsort(-scores[valid], kind="stable")]


def _as_scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores)
    return s if np.issubdtype(s.dtype, np.floating) else s.astype(np.float64)


def _prepare(boxes: Any, scores: Any) -> Tuple[np.ndarray, np.ndarray]:
    b = as_boxes(boxes, ndim=2)
    s = _as_scores(scores)
    if s.ndim != 1 or s.shape[0] != b.shape[0]:
        raise ValueError(f"scores: expected shape [{b.shape[0]}] (one per box), got {tuple(s.shape)}")
    return b, s


def nms(boxes: Any, scores: Any, iou_threshold: float, *, max_output: Optional[int] = None) -> np.ndarray:
    """Single-class greedy NMS (ONNX Runtime semantics, see the module docstring).

    Args:
        boxes: [N, 4] xyxy.
        scores: [N].
        iou_threshold: in [0, 1]; a box is suppressed when IoU > iou_threshold.
        max_output: keep at most this many (ORT's max_output_boxes_per_class); None = no limit.

    Returns:
        int64 [K] indices into ``boxes`` of the kept boxes, by descending score (ties: lower index).
    """
    b, s = _prepare(boxes, scores)
    thr = b.dtype.type(check_iou_threshold(iou_threshold))
    limit = _check_max(max_output, "max_output")
    order = _sorted_order(s)
    return _greedy(_canonical(b), [order], _rank(order, b.shape[0]), thr, limit)


def batched_nms(
    boxes: Any, scores: Any, class_ids: Any, iou_threshold: float, *, max_output: Optional[int] = None
) -> np.ndarray:
    """Per-class NMS: boxes suppress only boxes of their own class. Exact (no coordinate offsets).

    Args:
        boxes: [N, 4] xyxy.
        scores: [N].
        class_ids: [N] integer class of each box.
        iou_threshold: in [0, 1]; suppressed when IoU > iou_threshold with a kept box of the same class.
        max_output: keep at most this many in total (the best by score); None = no limit.

    Returns:
        int64 [K] indices into ``boxes``, by descending score (ties: lower index). The keep set of each
        class is exactly what ``nms`` gives on that class alone (and what ONNX Runtime gives).
    """
    b, s = _prepare(boxes, scores)
    c = np.asarray(class_ids)
    if c.shape != s.shape:
        raise ValueError(f"class_ids: expected shape [{b.shape[0]}] (one per box), got {tuple(c.shape)}")
    thr = b.dtype.type(check_iou_threshold(iou_threshold))
    limit = _check_max(max_output, "max_output")
    order = _sorted_order(s)
    # per class, its boxes in global order (a stable sort by class keeps the score order inside)
    by_class = order[np.argsort(c[order], kind="stable")]
    sorted_classes = c[by_class]
    groups = np.split(by_class, np.flatnonzero(sorted_classes[1:] != sorted_classes[:-1]) + 1)
    return _greedy(_canonical(b), groups, _rank(order, b.shape[0]), thr, limit)


def multiclass_nms(
    boxes: Any,
    scores: Any,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    class_agnostic: bool = False,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detector postprocessing for one image: threshold, per-class NMS, best ``max_detections``.

    Args:
        boxes: [N, 4] xyxy (the decoded ``boxes`` output of an exported model, input pixels).
        scores: [N, C] per-class scores (activations applied, no background column).
        score_threshold: a (box, class) candidate enters only if score > score_threshold.
        iou_threshold: in [0, 1]; suppressed when IoU > iou_threshold (see module docstring).
        max_detections: K, the most detections returned (0 gives none).
        class_agnostic: False: every (box, class) pair above the threshold is a candidate and NMS runs
            per class. True: each box keeps only its best class (ties: lower class id), then one NMS
            over all boxes, so overlapping boxes of different classes suppress each other (what one
            ONNX NonMaxSuppression over max-over-classes scores does).

    Returns:
        (boxes [K, 4] xyxy in the input's dtype, scores [K] in the scores' dtype, classes [K] int64),
        by descending score; equal scores: lower class id first, then lower box index (the order of
        ONNX NonMaxSuppression's class-major output followed by a stable top-K; class-agnostic: lower
        box index first).
    """
    b = as_boxes(boxes, ndim=2)
    s = _as_scores(scores)
    if s.ndim != 2 or s.shape[0] != b.shape[0]:
        raise ValueError(
            f"scores: expected shape [{b.shape[0]}, C] (per box, per class), got {tuple(s.shape)}"
        )
    limit = _check_max(max_detections, "max_detections")
    check_iou_threshold(iou_threshold)
    if class_agnostic:
        cand_cls = np.argmax(s, axis=1) if s.shape[1] else np.zeros(0, dtype=np.int64)
        cand_scores = s[np.arange(s.shape[0]), cand_cls] if s.shape[1] else np.zeros(0, s.dtype)
        cand_box = np.flatnonzero(cand_scores > s.dtype.type(score_threshold))
        cand_cls = cand_cls[cand_box]
        keep = nms(b[cand_box], cand_scores[cand_box], iou_threshold, max_output=limit)
    else:
        # class-major candidate list (class 0's boxes first), as ORT visits them
        cand_cls, cand_box = np.nonzero(s.T > s.dtype.type(score_threshold))
        keep = batched_nms(b[cand_box], s[cand_box, cand_cls], cand_cls, iou_threshold, max_output=limit)
    box_idx = cand_box[keep]
    classes = cand_cls[keep].astype(np.int64)
    return b[box_idx], s[box_idx, classes], classes
