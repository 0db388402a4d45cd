"""Box ops and NMS in pure torch (training, decode, PyTorch-side postprocessing; no torchvision).

Twins of ``edge.boxes`` and ``edge.nms`` (same names, same float formulas, same semantics), so that
PyTorch postprocessing and the runtime's numpy postprocessing keep identical boxes: for float32
inputs the NMS keep sets of this module, of ``edge.nms`` and of ONNX Runtime's NonMaxSuppression are
the same, not just close. Read ``edge.nms``'s docstring for the exact suppression rules.

Box formats: xyxy (x1, y1, x2, y2), xywh (top-left x, y, width, height, COCO), cxcywh (center x, y,
width, height); pixels or normalized alike. Conversions take [..., 4] tensors and keep dtype and
device; ``box_iou`` and the conversions are differentiable.
"""

from __future__ import annotations

import heapq
from typing import List, Optional, Tuple

import torch

from edge.nms import check_iou_threshold

__all__ = [
    "xyxy_to_xywh",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "box_area",
    "box_iou",
    "clip_boxes",
    "nms",
    "batched_nms",
    "multiclass_nms",
]


def _check_boxes(boxes: torch.Tensor, name: str = "boxes", ndim: int = 0) -> None:
    if boxes.dim() == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}: expected a tensor of shape [..., 4], got shape {tuple(boxes.shape)}")
    if ndim and boxes.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions ([N, 4]), got shape {tuple(boxes.shape)}")


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] x1,y1,x2,y2 -> [..., 4] x,y,w,h (top-left corner and size)."""
    _check_boxes(boxes)
    return torch.cat([boxes[..., 0:2], boxes[..., 2:4] - boxes[..., 0:2]], dim=-1)


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] x,y,w,h (top-left corner and size) -> [..., 4] x1,y1,x2,y2."""
    _check_boxes(boxes)
    return torch.cat([boxes[..., 0:2], boxes[..., 0:2] + boxes[..., 2:4]], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] x1,y1,x2,y2 -> [..., 4] cx,cy,w,h (center and size)."""
    _check_boxes(boxes)
    return torch.cat([(boxes[..., 0:2] + boxes[..., 2:4]) * 0.5, boxes[..., 2:4] - boxes[..., 0:2]], dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] cx,cy,w,h (center and size) -> [..., 4] x1,y1,x2,y2."""
    _check_boxes(boxes)
    half_wh = boxes[..., 2:4] * 0.5
    return torch.cat([boxes[..., 0:2] - half_wh, boxes[..., 0:2] + half_wh], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] xyxy -> [...] area (w * h; negative for inverted boxes, 0 for degenerate ones)."""
    _check_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU: [N, 4] xyxy and [M, 4] xyxy -> [N, M] in [0, 1] (as ``edge.boxes.box_iou``).

    Non-overlapping pairs and zero-area boxes give exactly 0 with finite gradients (no NaN).
    """
    _check_boxes(boxes1, "boxes1", ndim=2)
    _check_boxes(boxes2, "boxes2", ndim=2)
    iw = torch.minimum(boxes1[:, None, 2], boxes2[None, :, 2]) - torch.maximum(
        boxes1[:, None, 0], boxes2[None, :, 0]
    )
    ih = torch.minimum(boxes1[:, None, 3], boxes2[None, :, 3]) - torch.maximum(
        boxes1[:, None, 1], boxes2[None, :, 1]
    )
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    positive = inter > 0
    return torch.where(positive, inter, torch.zeros_like(inter)) / torch.where(
        positive, union, torch.ones_like(union)
    )


def clip_boxes(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """[..., 4] xyxy pixels -> clipped to the image: x in [0, width], y in [0, height]."""
    _check_boxes(boxes)
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


# --------------------------------------------------------------------------------------------- NMS


def _check_max(value: Optional[int], name: str) -> Optional[int]:
    if value is None:
        return None
    value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (or None for no limit), got {value}")
    return value


def _canonical(boxes: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """[N, 4] xyxy -> x1, y1, x2, y2 with x1 <= x2, y1 <= y2, and the area [N] (as ORT)."""
    x1 = torch.minimum(boxes[:, 0], boxes[:, 2])
    x2 = torch.maximum(boxes[:, 0], boxes[:, 2])
    y1 = torch.minimum(boxes[:, 1], boxes[:, 3])
    y2 = torch.maximum(boxes[:, 1], boxes[:, 3])
    return x1, y1, x2, y2, (x2 - x1) * (y2 - y1)


def _greedy(
    coords: Tuple[torch.Tensor, ...],
    groups: List[torch.Tensor],
    rank: List[int],
    thr: torch.Tensor,
    limit: Optional[int],
) -> List[int]:
    """Greedy NMS within each group (class), groups merged best-first by a heap (as ``edge.nms``).

    ``groups``: per class, box indices in global order; ``rank[i]``: position of box i in that order.
    """
    x1, y1, x2, y2, area = coords
    keep: List[int] = []
    rests = list(groups)
    heap = [(rank[int(g[0])], k) for k, g in enumerate(rests) if g.numel()]
    heapq.heapify(heap)
    while heap and (limit is None or len(keep) < limit):
        _, k = heapq.heappop(heap)
        i = int(rests[k][0])
        keep.append(i)
        rest = rests[k][1:]
        if rest.numel():
            iw = torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])
            ih = torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])
            inter = iw.clamp(min=0) * ih.clamp(min=0)
            union = area[i] + area[rest] - inter
            suppressed = (inter > 0) & (inter / union > thr)
            rest = rest[~suppressed]
        rests[k] = rest
        if rest.numel():
            heapq.heappush(heap, (rank[int(rest[0])], k))
    return keep


def _rank(order: torch.Tensor, n: int) -> List[int]:
    rank = [0] * n
    for pos, i in enumerate(order.tolist()):
        rank[i] = pos
    return rank


def _sorted_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by descending score, ties by lower index; NaN scores left out."""
    valid = torch.nonzero(~torch.isnan(scores), as_tuple=True)[0]
    _, pos = torch.sort(scores[valid], descending=True, stable=True)
    return valid[pos]


def _prepare(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    _check_boxes(boxes, ndim=2)
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores: expected shape [{boxes.shape[0]}] (one per box), got {tuple(scores.shape)}"
        )
    return torch.tensor(check_iou_threshold(iou_threshold), dtype=boxes.dtype, device=boxes.device)


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *, max_output: Optional[int] = None
) -> torch.Tensor:
    """Single-class greedy NMS, as ``edge.nms.nms`` (ONNX Runtime semantics). No gradients.

    Args:
        boxes: [N, 4] xyxy. scores: [N]. iou_threshold: in [0, 1], suppress when IoU > it.
        max_output: keep at most this many; None = no limit.

    Returns:
        int64 [K] indices of the kept boxes (on boxes' device), by descending score (ties: lower index).
    """
    with torch.no_grad():
        thr = _prepare(boxes, scores, iou_threshold)
        limit = _check_max(max_output, "max_output")
        order = _sorted_order(scores)
        keep = _greedy(_canonical(boxes), [order], _rank(order, boxes.shape[0]), thr, limit)
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    class_ids: torch.Tensor,
    iou_threshold: float,
    *,
    max_output: Optional[int] = None,
) -> torch.Tensor:
    """Per-class NMS, as ``edge.nms.batched_nms``: exact per-class keep sets (no coordinate offsets).

    Args:
        boxes: [N, 4] xyxy. scores: [N]. class_ids: [N] integer classes.
        iou_threshold: in [0, 1]. max_output: keep at most this many in total; None = no limit.

    Returns:
        int64 [K] indices, by descending score (ties: lower index).
    """
    with torch.no_grad():
        thr = _prepare(boxes, scores, iou_threshold)
        if class_ids.shape != scores.shape:
            raise ValueError(
                f"class_ids: expected shape [{boxes.shape[0]}] (one per box), got {tuple(class_ids.shape)}"
            )
        limit = _check_max(max_output, "max_output")
        order = _sorted_order(scores)
        # per class, its boxes in global order (a stable sort by class keeps the score order inside)
        _, pos = torch.sort(class_ids[order], stable=True)
        by_class = order[pos]
        sorted_classes = class_ids[by_class]
        cuts = (torch.nonzero(sorted_classes[1:] != sorted_classes[:-1], as_tuple=True)[0] + 1).tolist()
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [by_class.numel()])]
        groups = list(torch.split(by_class, sizes))
        keep = _greedy(_canonical(boxes), groups, _rank(order, boxes.shape[0]), thr, limit)
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def multiclass_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    class_agnostic: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detector postprocessing for one image, as ``edge.nms.multiclass_nms`` (identical results).

    Args:
        boxes: [N, 4] xyxy input pixels (``Detections.boxes[i]``).
        scores: [N, C] per-class scores (``Detections.scores[i]``).
        score_threshold: candidates need score > score_threshold (strict, as ONNX NMS).
        iou_threshold: in [0, 1]. max_detections: K, the most detections returned.
        class_agnostic: one NMS over all boxes, each box with its best class (ties: lower class id).

    Returns:
        (boxes [K, 4], scores [K], classes [K] int64), by descending score; equal scores: lower class
        id, then lower box index (class-agnostic: lower box index).
    """
    _check_boxes(boxes, ndim=2)
    if scores.dim() != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores: expected shape [{boxes.shape[0]}, C] (per box, per class), got {tuple(scores.shape)}"
        )
    limit = _check_max(max_detections, "max_detections")
    check_iou_threshold(iou_threshold)
    with torch.no_grad():
        thr = torch.tensor(float(score_threshold), dtype=scores.dtype, device=scores.device)
        if class_agnostic:
            if scores.shape[1]:
                cand_cls = torch.argmax(scores, dim=1)
                cand_scores = scores.gather(1, cand_cls[:, None])[:, 0]
            else:
                cand_cls = torch.zeros(0, dtype=torch.int64, device=scores.device)
                cand_scores = scores.new_zeros(0)
            cand_box = torch.nonzero(cand_scores > thr, as_tuple=True)[0]
            cand_cls = cand_cls[cand_box]
            keep = nms(boxes[cand_box], cand_scores[cand_box], iou_threshold, max_output=limit)
        else:
            cand_cls, cand_box = torch.nonzero(scores.T > thr, as_tuple=True)
            keep = batched_nms(
                boxes[cand_box], scores[cand_box, cand_cls], cand_cls, iou_threshold, max_output=limit
            )
        box_idx = cand_box[keep]
        classes = cand_cls[keep].to(torch.int64)
    return boxes[box_idx], scores[box_idx, classes], classes
