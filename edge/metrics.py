"""mAP scoring of detections against ground truth: Pascal VOC and COCO, numpy only.

No model and no runtime here: the INT8 accuracy gate, ``edge eval`` and the tests all score plain
arrays with this module.

Inputs
    ground truth: a sequence of records with ``image_id``, ``boxes`` float [N, 4] (x1, y1, x2, y2,
        source pixels), ``labels`` int [N] (0-based class index) and ``difficult`` bool [N]
        (``edge.data.records.ImageRecord`` is one).
    detections: a mapping image_id -> ``ImageDetections`` (boxes [K, 4] x1, y1, x2, y2 source pixels,
        scores [K], labels [K] 0-based class index). Images without an entry have no detections.

Pascal VOC (``voc_*``), as the VOC devkit's ``voc_eval``:
    per class, detections of all images sorted by score; each one is matched to the ground-truth box
    of its image with the highest IoU; IoU must be *strictly* above 0.5; a match to a difficult box
    counts as neither true nor false positive; a second match to an already matched box is a false
    positive. Difficult boxes are not counted in the recall denominator. Two interpolations:
    VOC2007 11-point (mean of the max precision at recall >= 0, 0.1, ..., 1) and all-points (area
    under the monotone precision envelope). IoU is computed on continuous coordinates (no "+1" pixel
    convention of the old devkit), the same IoU as COCO's.

COCO (``coco_*``), as pycocotools' ``COCOeval`` with ``iouType="bbox"``:
    IoU thresholds .50:.05:.95, 101 recall points, at most 100 detections per image and class (the
    highest-scoring), greedy matching in score order, IoU >= threshold. Difficult boxes are treated as
    COCO ``iscrowd`` regions: ignored, matched by intersection over the detection's area, and able to
    absorb any number of detections. Area ranges (small < 32^2 <= medium < 96^2 <= large, bounds
    inclusive as in pycocotools) use the ground-truth *box* area w*h (pycocotools uses the annotation's
    ``area`` field, which is the box area for box-only datasets such as VOC and YOLO ones).

Classes with no (non-difficult) ground truth in the evaluated images have undefined AP: as in
pycocotools they are excluded from every mean, and reported as ``None`` (JSON ``null``). A mean over no
class at all is ``None`` too. Images are processed in the order of the ground-truth sequence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge.boxes import box_area, box_iou

log = logging.getLogger(__name__)

ImageId = Union[str, int]

#: IoU thresholds of COCO AP@[.50:.05:.95] (as pycocotools builds them).
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
#: Recall points of COCO's 101-point interpolation.
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1)
#: COCO area ranges in square pixels (ground-truth box area), bounds inclusive.
COCO_AREA_RANGES: Dict[str, Tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
#: COCO's maxDets for AP: the highest-scoring detections kept per image and class.
COCO_MAX_DETS = 100
#: The VOC matching threshold (a match needs IoU strictly above it).
VOC_IOU_THRESHOLD = 0.5


@dataclass
class ImageDetections:
    """Detections of one image.

    Attributes:
        boxes: float64 [K, 4], x1, y1, x2, y2 in source-image pixels.
        scores: float64 [K], higher is more confident.
        labels: int64 [K], 0-based class index.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not (len(self.boxes) == len(self.scores) == len(self.labels)):
            raise ValueError(
                f"detections: boxes {self.boxes.shape}, scores {self.scores.shape} and labels "
                f"{self.labels.shape} must have the same length"
            )

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class PRCurve:
    """A raw precision/recall curve: one point per detection, in descending score order.

    Attributes:
        recall, precision, scores: float64 [D] each (D = detections of the class that count).
    """

    recall: np.ndarray
    precision: np.ndarray
    scores: np.ndarray


@dataclass
class ClassResult:
    """Scores of one class. AP values are in [0, 1], or None where the class has no ground truth.

    Attributes:
        name, index: class name and 0-based index.
        num_gt: ground-truth boxes that count (non-difficult); num_difficult: difficult/crowd ones.
        num_detections: detections of this class (all of them, before COCO's maxDets cut).
        voc_ap50, voc_ap50_11pt: VOC AP at IoU > 0.5, all-points and 11-point interpolation.
        coco_ap, coco_ap50, coco_ap75: COCO AP@[.50:.95], AP@.50, AP@.75 (101-point, area "all").
        coco_ap_by_area: area name ("small", "medium", "large") -> COCO AP@[.50:.95] or None.
        voc_curve: the raw VOC PR curve at IoU > 0.5 (empty without detections).
        coco_precision: float64 [T=10, R=101] COCO interpolated precision per IoU threshold and recall
            point (area "all"), or None where undefined.
    """

    name: str
    index: int
    num_gt: int
    num_difficult: int
    num_detections: int
    voc_ap50: Optional[float]
    voc_ap50_11pt: Optional[float]
    coco_ap: Optional[float]
    coco_ap50: Optional[float]
    coco_ap75: Optional[float]
    coco_ap_by_area: Dict[str, Optional[float]]
    voc_curve: PRCurve
    coco_precision: Optional[np.ndarray]


@dataclass
class EvalResult:
    """Every figure of one evaluation.

    ``map50`` is the VOC all-points AP50 averaged over classes with ground truth; ``map50_95`` is the
    COCO AP@[.50:.95] (pycocotools' first summary line).
    """

    class_names: List[str]
    per_class: List[ClassResult]
    map50: Optional[float]
    map50_11pt: Optional[float]
    coco: Dict[str, Optional[float]]
    num_images: int
    num_gt: int
    num_difficult: int
    num_detections: int
    max_dets: int = COCO_MAX_DETS

    @property
    def map50_95(self) -> Optional[float]:
        return self.coco["ap"]

    def to_json(self) -> Dict[str, Any]:
        """A JSON-ready dict (AP values in [0, 1], ``None`` where undefined)::

            {"map50", "map50_95", "map50_11pt",
             "coco": {"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"},
             "voc": {"ap50", "ap50_11pt"},
             "per_class": {NAME: {"ap50", "ap50_11pt", "ap50_95", "coco_ap50", "coco_ap75",
                                  "num_gt", "num_difficult", "num_detections"}},
             "counts": {"images", "gt_boxes", "difficult_boxes", "detections", "classes"},
             "settings": {...}}

        ``per_class[NAME]["ap50"]`` is the VOC all-points AP50 (their mean is ``map50``) and
        ``ap50_95`` the COCO AP@[.50:.95] (their mean is ``map50_95``).
        """
        per_class: Dict[str, Dict[str, Any]] = {}
        for c in self.per_class:
            per_class[c.name] = {
                "ap50": _num(c.voc_ap50),
                "ap50_11pt": _num(c.voc_ap50_11pt),
                "ap50_95": _num(c.coco_ap),
                "coco_ap50": _num(c.coco_ap50),
                "coco_ap75": _num(c.coco_ap75),
                "num_gt": c.num_gt,
                "num_difficult": c.num_difficult,
                "num_detections": c.num_detections,
            }
        return {
            "map50": _num(self.map50),
            "map50_95": _num(self.map50_95),
            "map50_11pt": _num(self.map50_11pt),
            "coco": {k: _num(v) for k, v in self.coco.items()},
            "voc": {"ap50": _num(self.map50), "ap50_11pt": _num(self.map50_11pt)},
            "per_class": per_class,
            "counts": {
                "images": self.num_images,
                "gt_boxes": self.num_gt,
                "difficult_boxes": self.num_difficult,
                "detections": self.num_detections,
                "classes": len(self.class_names),
            },
            "settings": {
                "voc_iou_threshold": VOC_IOU_THRESHOLD,
                "coco_iou_thresholds": [round(float(t), 2) for t in COCO_IOU_THRESHOLDS],
                "coco_recall_points": len(COCO_RECALL_THRESHOLDS),
                "coco_max_dets": self.max_dets,
                "coco_area_ranges": {k: list(v) for k, v in COCO_AREA_RANGES.items()},
                "classes_without_gt": "excluded from means (null)",
            },
        }


def _num(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value)


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


# ---------------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------------


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from a raw PR curve (recall [D], precision [D], descending score order), as the VOC devkit.

    ``use_07_metric=True``: VOC2007 11-point interpolation, the mean over t in {0, 0.1, ..., 1} of the
    maximum precision at recall >= t (0 where recall never reaches t). Otherwise all-points: the area
    under the precision envelope (precision made monotonically non-increasing in recall), summed at the
    points where recall changes. An empty curve gives 0.
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(f"recall {recall.shape} and precision {precision.shape} must have the same shape")
    if recall.size == 0:
        return 0.0
    if use_07_metric:
        total = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = recall >= t
            total += float(np.max(precision[above])) if np.any(above) else 0.0
        return total / 11.0
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _voc_class(
    gt_boxes: List[np.ndarray],
    gt_difficult: List[np.ndarray],
    det_boxes: List[np.ndarray],
    det_scores: List[np.ndarray],
    iou_threshold: float,
) -> Tuple[Optional[float], Optional[float], PRCurve]:
    """VOC AP of one class; lists are per image (same order). Returns (ap_all, ap_11pt, curve)."""
    npos = int(sum(int(np.count_nonzero(~d)) for d in gt_difficult))
    image_index = np.concatenate(
        [np.full(len(s), i, np.int64) for i, s in enumerate(det_scores)] + [np.zeros(0, np.int64)]
    )
    scores = np.concatenate(list(det_scores) + [np.zeros(0)])
    order = np.argsort(-scores, kind="mergesort")
    # IoU of every detection with the gt boxes of its own image, one matrix per image.
    ious = [
        box_iou(det_boxes[i], gt_boxes[i]) if len(det_boxes[i]) and len(gt_boxes[i]) else None
        for i in range(len(gt_boxes))
    ]
    row_in_image = np.concatenate(
        [np.arange(len(s), dtype=np.int64) for s in det_scores] + [np.zeros(0, np.int64)]
    )
    used = [np.zeros(len(g), bool) for g in gt_boxes]
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    counts = np.ones(len(order), bool)
    for rank, d in enumerate(order):
        img = int(image_index[d])
        matrix = ious[img]
        if matrix is None:
            fp[rank] = 1.0
            continue
        row = matrix[row_in_image[d]]
        j = int(np.argmax(row))
        if row[j] > iou_threshold:
            if gt_difficult[img][j]:
                counts[rank] = False
            elif not used[img][j]:
                tp[rank] = 1.0
                used[img][j] = True
            else:
                fp[rank] = 1.0
        else:
            fp[rank] = 1.0
    tp_cum = np.cumsum(tp)[counts]
    fp_cum = np.cumsum(fp)[counts]
    curve_scores = scores[order][counts]
    if npos == 0:
        return None, None, PRCurve(np.zeros(0), np.zeros(0), curve_scores)
    recall = tp_cum / float(npos)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    curve = PRCurve(recall, precision, curve_scores)
    return voc_ap(recall, precision, False), voc_ap(recall, precision, True), curve


# ---------------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------------


def _crowd_iou(det: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Intersection over the *detection's* area, [D, G]: pycocotools' IoU for an iscrowd gt region."""
    x1 = np.maximum(det[:, None, 0], crowd[None, :, 0])
    y1 = np.maximum(det[:, None, 1], crowd[None, :, 1])
    x2 = np.minimum(det[:, None, 2], crowd[None, :, 2])
    y2 = np.minimum(det[:, None, 3], crowd[None, :, 3])
    inter = np.clip(x2 - x1, 0.0, None) * np.clip(y2 - y1, 0.0, None)
    area = box_area(det)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(area > 0, inter / np.where(area > 0, area, 1.0), 0.0)
    return out


def _coco_match(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, thresholds: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-sorted detections, as pycocotools' ``evaluateImg``, all thresholds at once.

    Args:
        ious: [D, G], detections in descending score order.
        gt_ignore: bool [G]; gt_crowd: bool [G] (crowd boxes are always ignored too).
        thresholds: [T] IoU thresholds.
    Returns:
        matched bool [T, D] and matched_ignored bool [T, D] (matched to an ignored gt).
    """
    num_t, (num_d, num_g) = len(thresholds), ious.shape
    matched = np.zeros((num_t, num_d), bool)
    matched_ignored = np.zeros((num_t, num_d), bool)
    if num_d == 0 or num_g == 0:
        return matched, matched_ignored
    gt_taken = np.zeros((num_t, num_g), bool)
    # pycocotools caps the threshold just below 1 so that an IoU of exactly 1 still matches at .95+.
    thr = np.minimum(thresholds, 1 - 1e-10)[:, None]
    rev = slice(None, None, -1)  # argmax on reversed columns picks the *last* best gt, as pycocotools
    for d in range(num_d):
        row = ious[d][None, :]
        available = (~gt_taken | gt_crowd[None, :]) & (row >= thr)
        for ignored_pass in (False, True):
            cand = available & (gt_ignore[None, :] == ignored_pass)
            has = cand.any(axis=1) & ~matched[:, d]
            if not has.any():
                continue
            masked = np.where(cand, row, -1.0)
            best = num_g - 1 - np.argmax(masked[:, rev], axis=1)
            t_idx = np.nonzero(has)[0]
            g_idx = best[t_idx]
            matched[t_idx, d] = True
            matched_ignored[t_idx, d] = ignored_pass
            gt_taken[t_idx, g_idx] = True
    return matched, matched_ignored


@dataclass
class _CocoImageClass:
    """Per-(image, class) matching for one area range: scores [D], matched/ignored [T, D], npig."""

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    num_counted_gt: int


def _coco_precision(parts: List[_CocoImageClass], thresholds: np.ndarray) -> Optional[np.ndarray]:
    """COCO interpolated precision [T, R] of one class and area range, as ``COCOeval.accumulate``."""
    npig = sum(p.num_counted_gt for p in parts)
    if npig == 0:
        return None
    num_t = len(thresholds)
    scores = np.concatenate([p.scores for p in parts] + [np.zeros(0)])
    matched = np.concatenate([p.matched for p in parts] + [np.zeros((num_t, 0), bool)], axis=1)
    ignored = np.concatenate([p.ignored for p in parts] + [np.zeros((num_t, 0), bool)], axis=1)
    order = np.argsort(-scores, kind="mergesort")
    matched = matched[:, order]
    ignored = ignored[:, order]
    tps = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fps = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    out = np.zeros((num_t, len(COCO_RECALL_THRESHOLDS)))
    nd = tps.shape[1]
    for t in range(num_t):
        if nd == 0:
            continue
        rc = tps[t] / npig
        pr = tps[t] / (fps[t] + tps[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
        valid = idx < nd
        out[t, valid] = pr[idx[valid]]
    return out


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------


def evaluate(
    ground_truth: Sequence[Any],
    detections: Mapping[ImageId, ImageDetections],
    class_names: Sequence[str],
    *,
    max_dets: int = COCO_MAX_DETS,
) -> EvalResult:
    """Score detections against ground truth with both the VOC and the COCO protocols.

    Args:
        ground_truth: records (``ImageRecord`` or alike: ``image_id``, ``boxes`` [N, 4] xyxy source
            pixels, ``labels`` [N] 0-based, ``difficult`` [N] bool), one per evaluated image.
        detections: image_id -> ``ImageDetections`` (xyxy source pixels, 0-based labels). Every key must
            be the id of a ground-truth record; a missing image has no detections.
        class_names: the dataset's class list; labels index into it.
        max_dets: COCO's per-image, per-class detection cap (100 as pycocotools' AP).
    Returns:
        an ``EvalResult``.
    Raises:
        ValueError: a detection's image id is not in ``ground_truth``, or a label is out of range.
    """
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    names = [str(n) for n in class_names]
    num_classes = len(names)
    ids, num_dets = _check_inputs(ground_truth, detections, num_classes)

    per_class: List[ClassResult] = []
    num_gt_total = 0
    num_difficult_total = 0
    for k in range(num_classes):
        class_result = _class_result(ground_truth, detections, k, names[k], max_dets)
        num_gt_total += class_result.num_gt
        num_difficult_total += class_result.num_difficult
        per_class.append(class_result)

    coco = {
        "ap": _mean([c.coco_ap for c in per_class]),
        "ap50": _mean([c.coco_ap50 for c in per_class]),
        "ap75": _mean([c.coco_ap75 for c in per_class]),
        "ap_small": _mean([c.coco_ap_by_area["small"] for c in per_class]),
        "ap_medium": _mean([c.coco_ap_by_area["medium"] for c in per_class]),
        "ap_large": _mean([c.coco_ap_by_area["large"] for c in per_class]),
    }
    result = EvalResult(
        class_names=names,
        per_class=per_class,
        map50=_mean([c.voc_ap50 for c in per_class]),
        map50_11pt=_mean([c.voc_ap50_11pt for c in per_class]),
        coco=coco,
        num_images=len(ids),
        num_gt=num_gt_total,
        num_difficult=num_difficult_total,
        num_detections=num_dets,
        max_dets=max_dets,
    )
    without = [c.name for c in per_class if c.num_gt == 0]
    if without:
        log.info("classes without ground truth (excluded from the means): %s", ", ".join(without))
    return result


def _check_inputs(
    ground_truth: Sequence[Any], detections: Mapping[ImageId, ImageDetections], num_classes: int
) -> Tuple[List[ImageId], int]:
    """The ground truth's image ids and the total number of detections; ValueError on duplicate ids,
    detections of unknown images or labels out of range."""
    ids = [r.image_id for r in ground_truth]
    known = set(ids)
    if len(known) != len(ids):
        raise ValueError("ground truth has duplicate image ids")
    unknown = [k for k in detections if k not in known]
    if unknown:
        raise ValueError(f"{len(unknown)} detection image id(s) not in the ground truth, e.g. {unknown[0]!r}")
    num_dets = 0
    for key, det in detections.items():
        if len(det) and (det.labels.min() < 0 or det.labels.max() >= num_classes):
            raise ValueError(
                f"image {key!r}: detection label out of range 0..{num_classes - 1}: "
                f"{int(det.labels.min())}..{int(det.labels.max())}"
            )
        num_dets += len(det)
    return ids, num_dets


def _class_result(
    ground_truth: Sequence[Any],
    detections: Mapping[ImageId, ImageDetections],
    k: int,
    name: str,
    max_dets: int,
) -> ClassResult:
    """VOC and COCO scores of class ``k`` over every image."""
    thresholds = COCO_IOU_THRESHOLDS
    empty = ImageDetections()
    gt_b: List[np.ndarray] = []
    gt_d: List[np.ndarray] = []
    dt_b: List[np.ndarray] = []
    dt_s: List[np.ndarray] = []
    for r in ground_truth:
        labels = np.asarray(r.labels).reshape(-1)
        sel = labels == k
        gt_b.append(np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4)[sel])
        gt_d.append(np.asarray(r.difficult, dtype=bool).reshape(-1)[sel])
        det = detections.get(r.image_id, empty)
        dsel = det.labels == k
        dt_b.append(det.boxes[dsel])
        dt_s.append(det.scores[dsel])
    num_gt = int(sum(int(np.count_nonzero(~d)) for d in gt_d))
    num_difficult = int(sum(int(np.count_nonzero(d)) for d in gt_d))

    voc_all, voc_11, curve = _voc_class(gt_b, gt_d, dt_b, dt_s, VOC_IOU_THRESHOLD)

    parts = _coco_class_parts(gt_b, gt_d, dt_b, dt_s, max_dets, thresholds)
    precision_by_area = {a: _coco_precision(p, thresholds) for a, p in parts.items()}
    prec_all = precision_by_area["all"]
    t50 = int(np.argmin(np.abs(thresholds - 0.5)))
    t75 = int(np.argmin(np.abs(thresholds - 0.75)))
    return ClassResult(
        name=name,
        index=k,
        num_gt=num_gt,
        num_difficult=num_difficult,
        num_detections=int(sum(len(s) for s in dt_s)),
        voc_ap50=voc_all,
        voc_ap50_11pt=voc_11,
        coco_ap=None if prec_all is None else float(np.mean(prec_all)),
        coco_ap50=None if prec_all is None else float(np.mean(prec_all[t50])),
        coco_ap75=None if prec_all is None else float(np.mean(prec_all[t75])),
        coco_ap_by_area={
            a: (None if p is None else float(np.mean(p)))
            for a, p in precision_by_area.items()
            if a != "all"
        },
        voc_curve=curve,
        coco_precision=prec_all,
    )


def _coco_class_parts(
    gt_b: List[np.ndarray],
    gt_d: List[np.ndarray],
    dt_b: List[np.ndarray],
    dt_s: List[np.ndarray],
    max_dets: int,
    thresholds: np.ndarray,
) -> Dict[str, List[_CocoImageClass]]:
    """COCO matching of one class, per area range and image (lists are per image, same order)."""
    # COCO: per image, top max_dets detections by score, IoU once, matching per area range.
    parts: Dict[str, List[_CocoImageClass]] = {a: [] for a in COCO_AREA_RANGES}
    for boxes_g, crowd, boxes_d, scores_d in zip(gt_b, gt_d, dt_b, dt_s):
        if len(boxes_g) == 0 and len(boxes_d) == 0:
            continue
        order = np.argsort(-scores_d, kind="mergesort")[:max_dets]
        boxes_d = boxes_d[order]
        scores_d = scores_d[order]
        ious = np.zeros((len(boxes_d), len(boxes_g)))
        if len(boxes_d) and len(boxes_g):
            ious = np.asarray(box_iou(boxes_d, boxes_g), dtype=np.float64)
            if crowd.any():
                ious[:, crowd] = _crowd_iou(boxes_d, boxes_g[crowd])
        gt_area = box_area(boxes_g)
        dt_area = box_area(boxes_d)
        for area_name, (lo, hi) in COCO_AREA_RANGES.items():
            gt_ignore = crowd | (gt_area < lo) | (gt_area > hi)
            matched, matched_ig = _coco_match(ious, gt_ignore, crowd, thresholds)
            out_of_range = (dt_area < lo) | (dt_area > hi)
            ignored = matched_ig | (~matched & out_of_range[None, :])
            parts[area_name].append(
                _CocoImageClass(scores_d, matched, ignored, int(np.count_nonzero(~gt_ignore)))
            )
    return parts
