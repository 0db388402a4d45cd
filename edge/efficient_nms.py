"""Reference implementation of TensorRT's ``EfficientNMS_TRT`` plugin (plugin_version "1") in numpy.

Runtime path: numpy only (no torch, no onnx). It is what ``edge.export.ort_custom_ops`` registers with
onnxruntime-extensions so that a TensorRT-flavoured graph runs on CPU, and what tests compare the
standard-ONNX NMS graph against.

Semantics, from the plugin's README and its CUDA source (``plugin/efficientNMSPlugin`` in NVIDIA/TensorRT):

Inputs
    boxes   [B, N, 4], [B, N, 1, 4] (shared by all classes) or [B, N, C, 4] (one box per class).
            ``box_coding`` 0: corners (x1, y1, x2, y2); 1: centre-size (cx, cy, w, h). The two axes are
            interchangeable for NMS, so (y1, x1, y2, x2) and (cy, cx, h, w) work the same way.
    scores  [B, N, C] (or [B, N, C, 1]): per-class scores, raw logits when ``score_activation`` is set.
    anchors optional [1, N, 4] or [B, N, 4], same coding as ``boxes``: the fused box decoder. Corners:
            box = reorder(delta) + reorder(anchor), where reorder puts each pair of corners in order
            (x1 <= x2, y1 <= y2) first: the plugin's ``DecodeBoxes`` calls ``BoxCorner::reorder()`` on
            both before adding, so a delta or an anchor given with its corners swapped decodes to a
            different box than the plain sum. Centre-size (no reordering there): c = d_c * anchor_size
            + anchor_c, size = anchor_size * exp(d_size) (no variances: fold them into the deltas).

Algorithm, per image
    1. Candidates are the (box, class) pairs with ``score >= score_threshold`` (greater *or equal*), the
       background class left out. With ``score_activation`` the raw score is compared against
       ``logit(score_threshold)`` (every pair passes when the threshold is <= 0).
    2. Candidates are sorted by descending score; only the best ``max_candidates`` (4096 in the plugin)
       enter NMS. Equal scores: the plugin leaves their order unspecified (its sparse path collects
       candidates with atomics), so this implementation picks the order of ONNX Runtime and ``edge.nms``:
       lower class first, then lower box index; with ``class_agnostic``, lower box index first, then
       lower class. Then all three agree even on random-weight models, whose scores tie often.
    3. Boxes are decoded (anchors) and converted to corners. Greedy NMS in score order: a candidate is
       dropped when its IoU with an already kept candidate of the same class (any class when
       ``class_agnostic``) is ``>= iou_threshold`` (greater *or equal*). IoU uses each box with its corners
       put in order; a non-positive intersection or union gives IoU 0. NMS stops once
       ``max_output_boxes`` candidates are kept.
    4. Outputs, padded with zeros past ``num_detections``: num_detections [B, 1] int32, detection_boxes
       [B, K, 4] corners (x1, y1, x2, y2 in the input's units; boxes as given, or as decoded from the
       reordered delta and anchor, never reordered afterwards),
       detection_scores [B, K] (sigmoid applied when ``score_activation``), detection_classes [B, K] int32
       (index into the C score columns, background included in the numbering).

Differences from ONNX ``NonMaxSuppression`` (and ``edge.nms``): score and IoU comparisons are ``>=`` there
``>``; only the top 4096 candidates enter NMS; K is a total over classes, not a per-class limit.

Not replicated: two plugin quirks outside its documented behaviour. With ``score_threshold < 0.007`` the
plugin's dense path can emit below-threshold or background candidates (score -32768) when fewer than 4096
real candidates exist; the fp16 "score bits" sort approximation. This implementation follows the README.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from edge.errors import EdgeError, ModelError

__all__ = [
    "MAX_CANDIDATES",
    "PLUGIN_NAME",
    "PLUGIN_VERSION",
    "EfficientNMSParams",
    "EfficientNMSOutput",
    "efficient_nms",
    "decode_boxes",
    "reorder_corners",
]

PLUGIN_NAME = "EfficientNMS_TRT"
PLUGIN_VERSION = "1"
# EfficientNMSParameters::numSelectedBoxes: how many sorted candidates the NMS kernel looks at.
MAX_CANDIDATES = 4096


@dataclass
class EfficientNMSParams:
    """The plugin's attributes (names as in the ONNX node), plus the fixed 4096 candidate cap."""

    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_output_boxes: int = 100
    background_class: int = -1
    score_activation: bool = False
    class_agnostic: bool = False
    box_coding: int = 0
    max_candidates: int = MAX_CANDIDATES

    def validate(self) -> EfficientNMSParams:
        for name in ("score_threshold", "iou_threshold"):
            value = float(getattr(self, name))
            if not (0.0 <= value <= 1.0) or math.isnan(value):
                raise EdgeError(f"EfficientNMS {name} must be in [0, 1], got {value}")
        if int(self.max_output_boxes) < 1:
            raise EdgeError(
                f"EfficientNMS max_output_boxes (K) must be >= 1, got {self.max_output_boxes}"
            )
        if int(self.background_class) < -1:
            raise EdgeError(
                f"EfficientNMS background_class must be a class index or -1 (none), got {self.background_class}"
            )
        if int(self.box_coding) not in (0, 1):
            raise EdgeError(
                f"EfficientNMS box_coding must be 0 (corners x1,y1,x2,y2) or 1 (centre-size cx,cy,w,h), "
                f"got {self.box_coding}"
            )
        if int(self.max_candidates) < 1:
            raise EdgeError(f"EfficientNMS max_candidates must be >= 1, got {self.max_candidates}")
        return self

    def to_attributes(self) -> Dict[str, Any]:
        """ONNX node attributes, every one set explicitly (ints for the plugin's int and bool fields)."""
        return {
            "score_threshold": float(self.score_threshold),
            "iou_threshold": float(self.iou_threshold),
            "max_output_boxes": int(self.max_output_boxes),
            "background_class": int(self.background_class),
            "score_activation": int(bool(self.score_activation)),
            "class_agnostic": int(bool(self.class_agnostic)),
            "box_coding": int(self.box_coding),
            "plugin_version": PLUGIN_VERSION,
        }

    @classmethod
    def from_attributes(cls, attrs: Dict[str, Any]) -> EfficientNMSParams:
        """From ONNX node attributes; absent ones take the plugin's defaults (EfficientNMSParameters)."""
        defaults = cls(score_threshold=0.5, iou_threshold=0.5, max_output_boxes=100)
        merged = asdict(defaults)
        for key in ("score_threshold", "iou_threshold"):
            if key in attrs:
                merged[key] = float(attrs[key])
        for key in ("max_output_boxes", "background_class", "box_coding"):
            if key in attrs:
                merged[key] = int(attrs[key])
        for key in ("score_activation", "class_agnostic"):
            if key in attrs:
                merged[key] = bool(int(attrs[key]))
        return cls(**merged).validate()


class EfficientNMSOutput(NamedTuple):
    """The plugin's four outputs, in its output order."""

    num_detections: np.ndarray  # [B, 1] int32
    detection_boxes: np.ndarray  # [B, K, 4] corners, input dtype
    detection_scores: np.ndarray  # [B, K], input dtype
    detection_classes: np.ndarray  # [B, K] int32


def reorder_corners(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] corners with each pair put in order (columns 0 <= 2 and 1 <= 3), as the plugin does it.

    ``BoxCorner<T>::reorder()`` in ``plugin/efficientNMSPlugin/efficientNMSInference.cuh`` (NVIDIA/TensorRT)
    swaps a pair when the first is greater, without a temporary: ``a = a - b; b = a + b; a = b - a`` with
    round-to-nearest adds (``sub_mp``/``add_mp``). This does the same arithmetic in ``boxes``' dtype, so a
    swapped pair can differ from an exact swap in the last bits (3 and 1e-8 become 0 and 3), as on the GPU.
    """
    out = np.array(boxes, copy=True)
    with np.errstate(over="ignore", invalid="ignore"):
        for first, second in ((0, 2), (1, 3)):
            a, b = boxes[..., first], boxes[..., second]
            swap = a > b  # gt_mp: NaN never swaps
            diff = a - b
            high = diff + b
            low = high - diff
            out[..., first] = np.where(swap, low, a)
            out[..., second] = np.where(swap, high, b)
    return out


def decode_boxes(deltas: np.ndarray, anchors: np.ndarray, box_coding: int) -> np.ndarray:
    """The plugin's fused decoder: [..., 4] deltas and anchors (same coding) -> boxes in that coding.

    box_coding 0 (corners): ``reorder_corners(delta) + reorder_corners(anchor)``: ``DecodeBoxes`` in
    ``plugin/efficientNMSPlugin/efficientNMSInference.cu`` calls ``reorder()`` on the box and on the anchor
    before ``BoxCorner::decode`` adds them. box_coding 1 (cx, cy, w, h; ``BoxCenterSize::reorder()`` does
    nothing): ``(d_cx * a_w + a_cx, d_cy * a_h + a_cy, a_w * exp(d_w), a_h * exp(d_h))``.
    """
    if int(box_coding) == 0:
        return reorder_corners(deltas) + reorder_corners(anchors)
    with np.errstate(over="ignore"):
        return np.stack(
            [
                deltas[..., 0] * anchors[..., 2] + anchors[..., 0],
                deltas[..., 1] * anchors[..., 3] + anchors[..., 1],
                anchors[..., 2] * np.exp(deltas[..., 2]),
                anchors[..., 3] * np.exp(deltas[..., 3]),
            ],
            axis=-1,
        )


def _to_corners(boxes: np.ndarray, box_coding: int) -> np.ndarray:
    """[M, 4] in the given coding -> [M, 4] corners (BoxCenterSize -> BoxCorner in the plugin)."""
    if int(box_coding) == 0:
        return boxes
    half = boxes.dtype.type(0.5)
    c, s = boxes[:, 0:2], boxes[:, 2:4]
    return np.concatenate([c - s * half, c + s * half], axis=1)


def _greedy_nms(corners: np.ndarray, classes: np.ndarray, iou_threshold: float, limit: int,
                class_agnostic: bool) -> np.ndarray:
    """Indices (into the score-sorted candidates) kept by the plugin's greedy NMS, at most ``limit``."""
    m = corners.shape[0]
    x1 = np.minimum(corners[:, 0], corners[:, 2])
    x2 = np.maximum(corners[:, 0], corners[:, 2])
    y1 = np.minimum(corners[:, 1], corners[:, 3])
    y2 = np.maximum(corners[:, 1], corners[:, 3])
    zero = corners.dtype.type(0)
    area = np.maximum(x2 - x1, zero) * np.maximum(y2 - y1, zero)
    thr = np.float32(iou_threshold)
    alive = np.ones(m, dtype=bool)
    keep = []
    i = 0
    while i < m and len(keep) < limit:
        if not alive[i]:
            i += 1
            continue
        keep.append(i)
        rest = np.arange(i + 1, m)
        rest = rest[alive[rest]]
        if not class_agnostic:
            rest = rest[classes[rest] == classes[i]]
        if rest.size:
            iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
            ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
            inter = np.where((iw > zero) & (ih > zero), iw * ih, zero)
            union = area[i] + area[rest] - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.where((inter > zero) & (union > zero), inter / union, zero)
            alive[rest[iou >= thr]] = False
        i += 1
    return np.asarray(keep, dtype=np.int64)


def _check_inputs(boxes: np.ndarray, scores: np.ndarray, anchors: Optional[np.ndarray]):
    if scores.ndim == 4 and scores.shape[3] == 1:
        scores = scores[..., 0]
    if scores.ndim != 3:
        raise ModelError(
            f"EfficientNMS scores: expected [B, N, C] (or [B, N, C, 1]), got shape {tuple(scores.shape)}"
        )
    b, n, c = scores.shape
    if boxes.ndim == 3:
        boxes = boxes[:, :, None, :]
    if boxes.ndim != 4 or boxes.shape[-1] != 4:
        raise ModelError(
            f"EfficientNMS boxes: expected [B, N, 4], [B, N, 1, 4] or [B, N, C, 4] (last dim 4), "
            f"got shape {tuple(boxes.shape)}"
        )
    if boxes.shape[0] != b or boxes.shape[1] != n or boxes.shape[2] not in (1, c):
        raise ModelError(
            f"EfficientNMS boxes shape {tuple(boxes.shape)} does not match scores shape {tuple(scores.shape)}: "
            "batch and box counts must agree, and per-class boxes need one box per score column"
        )
    if anchors is not None:
        if anchors.ndim != 3 or anchors.shape[2] != 4 or anchors.shape[1] != n or anchors.shape[0] not in (1, b):
            raise ModelError(
                f"EfficientNMS anchors: expected [1, {n}, 4] or [{b}, {n}, 4], got shape {tuple(anchors.shape)}"
            )
    return boxes, scores


def _raw_threshold(p: EfficientNMSParams) -> float:
    """The score threshold in the units of the raw scores: ``logit(score_threshold)`` with
    ``score_activation`` (-32768 when the threshold is <= 0, inf when >= 1), else the threshold itself."""
    thr = float(p.score_threshold)
    if p.score_activation:
        raw_thr = -float(1 << 15) if thr <= 0.0 else (math.inf if thr >= 1.0 else math.log(thr / (1.0 - thr)))
    else:
        raw_thr = thr
    return raw_thr


def _candidates(s: np.ndarray, raw_thr_t: Any, p: EfficientNMSParams
                ) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One image's NMS candidates from its scores [N, C]: (box index, class, score) arrays in descending
    score order (ties as in the module docstring), at most ``max_candidates``; None when none passes."""
    n, c = s.shape
    mask = s >= raw_thr_t  # NaN never passes
    if 0 <= p.background_class < c:
        mask[:, p.background_class] = False
    if p.class_agnostic:  # ties: lower box, then lower class (flat index n * C + c)
        flat = np.flatnonzero(mask.ravel())
        vals = s.ravel()[flat]
    else:  # ties: lower class, then lower box (flat index c * N + n)
        flat = np.flatnonzero(mask.T.ravel())
        vals = s.T.ravel()[flat]
    if flat.size == 0:
        return None
    order = np.argsort(-vals, kind="stable")[: int(p.max_candidates)]
    cand = flat[order]
    cand_scores = vals[order]
    if p.class_agnostic:
        cand_box, cand_cls = cand // c, cand % c
    else:
        cand_cls, cand_box = cand // n, cand % n
    return cand_box, cand_cls, cand_scores


def efficient_nms(
    boxes: Any,
    scores: Any,
    params: Optional[EfficientNMSParams] = None,
    anchors: Any = None,
) -> EfficientNMSOutput:
    """Run EfficientNMS_TRT's semantics on a batch (see the module docstring).

    Args:
        boxes: [B, N, 4], [B, N, 1, 4] or [B, N, C, 4] float, coded per ``params.box_coding``
            (deltas when ``anchors`` is given).
        scores: [B, N, C] (or [B, N, C, 1]) float.
        params: the plugin attributes; defaults to ``EfficientNMSParams()``.
        anchors: optional [1, N, 4] or [B, N, 4], same coding as ``boxes`` (the fused box decoder).

    Returns:
        EfficientNMSOutput(num_detections [B,1] int32, detection_boxes [B,K,4] corners,
        detection_scores [B,K], detection_classes [B,K] int32), zero-padded past num_detections.
    """
    p = (params or EfficientNMSParams()).validate()
    boxes_a = np.asarray(boxes)
    scores_a = np.asarray(scores)
    anchors_a = None if anchors is None else np.asarray(anchors)
    boxes4, scores3 = _check_inputs(boxes_a, scores_a, anchors_a)
    out_dtype = boxes_a.dtype if np.issubdtype(boxes_a.dtype, np.floating) else np.dtype(np.float32)
    # the plugin computes in the input precision; fp16 inputs are computed in fp32 here
    work = np.float32 if out_dtype != np.float64 else np.float64
    boxes4 = boxes4.astype(work, copy=False)
    scores3 = scores3.astype(work, copy=False)
    if anchors_a is not None:
        anchors_a = anchors_a.astype(work, copy=False)

    b, n, c = scores3.shape
    k = int(p.max_output_boxes)
    num = np.zeros((b, 1), dtype=np.int32)
    out_boxes = np.zeros((b, k, 4), dtype=out_dtype)
    out_scores = np.zeros((b, k), dtype=out_dtype)
    out_classes = np.zeros((b, k), dtype=np.int32)

    raw_thr_t = scores3.dtype.type(_raw_threshold(p))
    shared = boxes4.shape[2] == 1

    for img in range(b):
        found = _candidates(scores3[img], raw_thr_t, p)
        if found is None:
            continue
        cand_box, cand_cls, cand_scores = found
        sel = boxes4[img, cand_box, 0] if shared else boxes4[img, cand_box, cand_cls]
        if anchors_a is not None:
            anc = anchors_a[0 if anchors_a.shape[0] == 1 else img, cand_box]
            sel = decode_boxes(sel, anc, p.box_coding)
        corners = _to_corners(sel, p.box_coding)
        keep = _greedy_nms(corners, cand_cls, p.iou_threshold, k, p.class_agnostic)
        count = keep.size
        num[img, 0] = count
        out_boxes[img, :count] = corners[keep]
        kept_scores = cand_scores[keep]
        if p.score_activation:
            one = kept_scores.dtype.type(1)
            with np.errstate(over="ignore"):
                kept_scores = one / (one + np.exp(-kept_scores))
        out_scores[img, :count] = kept_scores
        out_classes[img, :count] = cand_cls[keep]
    return EfficientNMSOutput(num, out_boxes, out_scores, out_classes)
