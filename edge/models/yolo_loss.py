"""YOLO raw head outputs, their box decoding, and the YOLOv2/v3 training loss.

Raw outputs (``YoloRaw``): per level a tensor [B, A, H, W, 5 + C] holding, per grid cell and anchor,
``tx, ty, tw, th`` (box), ``to`` (objectness logit) and C class logits, levels ordered fine to coarse.

Box decoding (both families, input pixels, cell (i, j) = (row, column), stride (sy, sx)):
    cx = (sigmoid(tx) + j) * sx        cy = (sigmoid(ty) + i) * sy         (sigmoid-bounded in the cell)
    w  = anchor_w * exp(tw)            h  = anchor_h * exp(th)             (anchor priors, input pixels)
returned as x1,y1,x2,y2 input pixels. ``tw``/``th`` are clamped at ``MAX_LOG_WH`` before ``exp``.

Loss (``yolo_loss``), per batch:
    - assignment: each ground-truth box goes to the one anchor (over all levels) whose (w, h) has the best
      IoU with the box's (w, h) (both centred), in the grid cell holding the box centre on that anchor's
      level. That prediction is "responsible" for the box.
    - obj: BCE of the objectness logit against 1 for responsible predictions (or their IoU with the box,
      ``obj_target="iou"``), 0 elsewhere, except non-responsible predictions whose decoded box overlaps a
      ground-truth box by more than ``ignore_thresh`` IoU, which are left out. ``obj_norm="positives"``
      (default): summed over all cells of all levels and divided by the number of positives, like the box
      and class terms, so objectness keeps its weight per positive on datasets with one object per image
      (issue 11: the per-cell mean gave it ~13x less there than on BCCD, and yolov3-tiny never learned it).
      ``obj_norm="cells"`` (loss dicts written before, e.g. the bundled model's: ``obj_weight`` without
      ``obj_norm``): mean over cells per level, levels weighted by ``balance`` (finer levels weigh more).
    - box: mean over responsible predictions of 1 - GIoU(decoded box, ground truth) (``box_loss="giou"``), or
      the papers' squared error on (sigmoid(tx), sigmoid(ty), tw, th) weighted by 2 - w*h/(W*H)
      (``box_loss="mse"``).
    - cls: mean over responsible predictions of BCE on independent sigmoid class scores (YOLOv3) or
      softmax cross-entropy (YOLOv2, whose decode uses a softmax), so training matches decoding.
    total = box_weight * box + obj_weight * obj + cls_weight * cls (a per-batch mean, independent of the
    batch size).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from edge.data.targets import Target
from edge.models.base import LossDict
from edge.models.ops import box_iou

# exp(6) ~ 403x the anchor: far beyond any real box, small enough to keep fp16 engines finite.
MAX_LOG_WH = 6.0

# objectness weight of a level by its stride (YOLOv5's balance); single-level models use 1.0
DEFAULT_BALANCE = {8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1}


@dataclass
class YoloRaw:
    """Raw YOLO head outputs (training-mode output of ``forward_raw``).

    Attributes:
        maps: per level float32 [B, A_l, H_l, W_l, 5 + C]: tx, ty, tw, th, objectness logit, class logits.
            Levels ordered fine to coarse (stride 8, 16, 32).
        anchors: per level float32 [A_l, 2], anchor (w, h) in input pixels.
        strides: per level (sy, sx) = input size / feature map size, in input pixels.
        image_size: (H, W) of the input batch in pixels (varies under multi-scale training).
    """

    maps: List[torch.Tensor]
    anchors: List[torch.Tensor]
    strides: List[Tuple[float, float]]
    image_size: Tuple[int, int]


@dataclass
class YoloLossConfig:
    """Loss hyper-parameters (JSON-serializable; stored in the model card under ``loss``)."""

    box_weight: float = 1.0
    obj_weight: float = 0.1  # per positive, a tenth of the box term: what the per-cell mean gave BCCD (~13/image)
    cls_weight: float = 0.5
    ignore_thresh: float = 0.5
    box_loss: str = "giou"  # "giou" or "mse"
    obj_target: str = "one"  # "one" or "iou"
    obj_norm: str = "positives"  # "positives": summed over cells / positives; "cells": mean per level (before)
    balance: Optional[List[float]] = None  # per level, fine to coarse; None: 1.0 ("positives"), by stride ("cells")
    label_smoothing: float = 0.0

    def validate(self) -> YoloLossConfig:
        for name in ("box_weight", "obj_weight", "cls_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.ignore_thresh <= 1.0:
            raise ValueError(f"loss ignore_thresh must be in (0, 1], got {self.ignore_thresh}")
        if self.box_loss not in ("giou", "mse"):
            raise ValueError(f"loss box_loss must be 'giou' or 'mse', got {self.box_loss!r}")
        if self.obj_target not in ("one", "iou"):
            raise ValueError(f"loss obj_target must be 'one' or 'iou', got {self.obj_target!r}")
        if self.obj_norm not in ("cells", "positives"):
            raise ValueError(f"loss obj_norm must be 'cells' or 'positives', got {self.obj_norm!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"loss label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.balance is not None and any(b < 0 for b in self.balance):
            raise ValueError(f"loss balance weights must be >= 0, got {self.balance}")
        return self

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> YoloLossConfig:
        data = dict(data or {})
        if "obj_weight" in data and "obj_norm" not in data:
            # every loss dict written before obj_norm existed (model cards, configs) meant the per-cell mean
            data["obj_norm"] = "cells"
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown YOLO loss options {unknown}; expected some of {sorted(known)}")
        return cls(**data).validate()

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def cell_grid(height: int, width: int, device: torch.device, dtype: torch.dtype
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Column and row indices of an H x W grid, each [1, 1, H, W] (broadcast over batch and anchors).

    ``arange`` runs on int64 and is cast afterwards: in ONNX that is an integer Range on shape values
    (which TensorRT imports; a float Range on computed values it does not), folded to a constant by any
    simplifier when H and W are static.
    """
    ys = torch.arange(height, device=device).to(dtype).view(1, 1, -1, 1)
    xs = torch.arange(width, device=device).to(dtype).view(1, 1, 1, -1)
    return xs.expand(1, 1, ys.shape[2], xs.shape[3]), ys.expand(1, 1, ys.shape[2], xs.shape[3])


def decode_level_boxes(pred: torch.Tensor, anchors: torch.Tensor, stride: Tuple[float, float]) -> torch.Tensor:
    """One level's raw map [B, A, H, W, >=4] -> boxes [B, A, H, W, 4] x1,y1,x2,y2 input pixels.

    ``anchors`` [A, 2] (w, h) input pixels; ``stride`` (sy, sx) input pixels per cell. Grids come from
    the map's own shape, so any input size (multiple of the stride) works.
    """
    _, num_anchors, height, width, _ = pred.shape
    gx, gy = cell_grid(height, width, pred.device, pred.dtype)
    sy, sx = stride
    cx = (torch.sigmoid(pred[..., 0]) + gx) * sx
    cy = (torch.sigmoid(pred[..., 1]) + gy) * sy
    aw = anchors[:, 0].view(1, num_anchors, 1, 1).to(pred.dtype)
    ah = anchors[:, 1].view(1, num_anchors, 1, 1).to(pred.dtype)
    half_w = 0.5 * aw * torch.exp(pred[..., 2].clamp(max=MAX_LOG_WH))
    half_h = 0.5 * ah * torch.exp(pred[..., 3].clamp(max=MAX_LOG_WH))
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def wh_iou(wh_a: torch.Tensor, wh_b: torch.Tensor) -> torch.Tensor:
    """IoU of box sizes centred on the same point: [N, 2] x [M, 2] (w, h) -> [N, M]."""
    inter = torch.min(wh_a[:, None, 0], wh_b[None, :, 0]) * torch.min(wh_a[:, None, 1], wh_b[None, :, 1])
    area_a = (wh_a[:, 0] * wh_a[:, 1])[:, None]
    area_b = (wh_b[:, 0] * wh_b[:, 1])[None, :]
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


def paired_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> Tuple[torch.Tensor, torch.Tensor]:
    """Element-wise IoU and generalized IoU of paired boxes [N, 4] x [N, 4] (xyxy, any units) -> ([N], [N])."""
    iw = (torch.min(a[:, 2], b[:, 2]) - torch.max(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.min(a[:, 3], b[:, 3]) - torch.max(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a + area_b - inter + eps
    iou = inter / union
    cw = torch.max(a[:, 2], b[:, 2]) - torch.min(a[:, 0], b[:, 0])
    ch = torch.max(a[:, 3], b[:, 3]) - torch.min(a[:, 1], b[:, 1])
    hull = cw * ch + eps
    return iou, iou - (hull - union) / hull


@dataclass
class _Assignment:
    """Responsible predictions of one level: index tensors [P] and their targets."""

    batch: torch.Tensor
    anchor: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    boxes: torch.Tensor  # [P, 4] xyxy input pixels
    labels: torch.Tensor  # [P]
    anchor_wh: torch.Tensor  # [P, 2]
    gt_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


def assign_targets(raw: YoloRaw, targets: Sequence[Target]) -> List[_Assignment]:
    """Responsible-anchor assignment: each box -> best (w,h)-IoU anchor over all levels, cell of its centre."""
    device = raw.maps[0].device
    boxes_list: List[torch.Tensor] = []
    labels_list: List[torch.Tensor] = []
    batch_list: List[torch.Tensor] = []
    for b, target in enumerate(targets):
        boxes = target.boxes.to(device=device, dtype=torch.float32).reshape(-1, 4)
        boxes_list.append(boxes)
        labels_list.append(target.labels.to(device=device, dtype=torch.long).reshape(-1))
        batch_list.append(torch.full((boxes.shape[0],), b, dtype=torch.long, device=device))
    boxes = torch.cat(boxes_list) if boxes_list else torch.zeros((0, 4), device=device)
    labels = torch.cat(labels_list) if labels_list else torch.zeros((0,), dtype=torch.long, device=device)
    batch = torch.cat(batch_list) if batch_list else torch.zeros((0,), dtype=torch.long, device=device)

    all_anchors = torch.cat([a.to(device=device, dtype=torch.float32) for a in raw.anchors])  # [K, 2]
    level_of = torch.cat([torch.full((a.shape[0],), i, dtype=torch.long, device=device)
                          for i, a in enumerate(raw.anchors)])
    index_in_level = torch.cat([torch.arange(a.shape[0], device=device) for a in raw.anchors])

    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    centres = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    best = wh_iou(wh, all_anchors).argmax(dim=1) if len(boxes) else torch.zeros(0, dtype=torch.long, device=device)
    gt_ids = torch.arange(len(boxes), device=device)

    out: List[_Assignment] = []
    for level, pred in enumerate(raw.maps):
        _, _, height, width, _ = pred.shape
        sy, sx = raw.strides[level]
        sel = level_of[best] == level
        anchor = index_in_level[best[sel]]
        col = (centres[sel, 0] / sx).floor().long().clamp(0, width - 1)
        row = (centres[sel, 1] / sy).floor().long().clamp(0, height - 1)
        out.append(_Assignment(batch=batch[sel], anchor=anchor, row=row, col=col, boxes=boxes[sel],
                               labels=labels[sel], anchor_wh=all_anchors[best[sel]], gt_index=gt_ids[sel]))
    return out


def _ignore_mask(pred_boxes: torch.Tensor, targets: Sequence[Target], thresh: float) -> torch.Tensor:
    """[B, A, H, W] bool: decoded box overlaps some ground truth of its image by more than ``thresh`` IoU."""
    batch = pred_boxes.shape[0]
    mask = torch.zeros(pred_boxes.shape[:-1], dtype=torch.bool, device=pred_boxes.device)
    for b in range(batch):
        gt = targets[b].boxes.to(device=pred_boxes.device, dtype=pred_boxes.dtype).reshape(-1, 4)
        if gt.shape[0] == 0:
            continue
        iou = box_iou(pred_boxes[b].reshape(-1, 4), gt)  # [A*H*W, n]
        mask[b] = (iou.max(dim=1).values > thresh).view(mask.shape[1:])
    return mask


def yolo_loss(raw: YoloRaw, targets: Sequence[Target], *, num_classes: int, class_activation: str,
              config: YoloLossConfig) -> LossDict:
    """YOLO loss of raw outputs against per-image targets (boxes xyxy input pixels); see the module doc.

    ``class_activation``: "sigmoid" (YOLOv3: BCE per class) or "softmax" (YOLOv2: cross-entropy).
    Returns ``LossDict`` with terms "box", "obj", "cls" (weighted, as summed into ``total``) and "num_pos".
    """
    if class_activation not in ("sigmoid", "softmax"):
        raise ValueError(f"class_activation must be 'sigmoid' or 'softmax', got {class_activation!r}")
    if len(targets) != raw.maps[0].shape[0]:
        raise ValueError(f"got {len(targets)} targets for a batch of {raw.maps[0].shape[0]} images")
    balance = _level_balance(raw, config)

    device = raw.maps[0].device
    zero = raw.maps[0].sum() * 0.0
    box_sum, cls_sum, obj_total = zero, zero, zero
    num_pos = 0
    smooth = config.label_smoothing
    assignments = assign_targets(raw, targets)

    for level, (pred, anchors, assign) in enumerate(zip(raw.maps, raw.anchors, assignments)):
        obj_logit = pred[..., 4]
        obj_target = torch.zeros_like(obj_logit)
        with torch.no_grad():
            pred_boxes = decode_level_boxes(pred.detach(), anchors.to(device), raw.strides[level])
            weight = (~_ignore_mask(pred_boxes, targets, config.ignore_thresh)).to(obj_logit.dtype)

        n = int(assign.batch.numel())
        if n:
            p = pred[assign.batch, assign.anchor, assign.row, assign.col]  # [n, 5 + C]
            box_term, giou = _box_loss(p, assign, raw.strides[level], raw.image_size, config.box_loss)
            box_sum = box_sum + box_term

            if config.obj_target == "iou":
                value = giou.detach().clamp(min=0).to(obj_target.dtype)
            else:
                value = torch.ones(n, dtype=obj_target.dtype, device=device)
            obj_target[assign.batch, assign.anchor, assign.row, assign.col] = value
            weight[assign.batch, assign.anchor, assign.row, assign.col] = 1.0

            logits = p[:, 5:]
            if num_classes > 1 or class_activation == "sigmoid":
                cls_sum = cls_sum + _class_loss(logits, assign.labels, class_activation, smooth, n, device)
            num_pos += n

        bce = F.binary_cross_entropy_with_logits(obj_logit, obj_target, reduction="none")
        cells = float(obj_logit.numel()) if config.obj_norm == "cells" else 1.0
        obj_total = obj_total + balance[level] * (bce * weight).sum() / cells

    denom = float(max(num_pos, 1))
    box = config.box_weight * box_sum / denom
    obj = config.obj_weight * (obj_total if config.obj_norm == "cells" else obj_total / denom)
    cls = config.cls_weight * cls_sum / denom
    total = box + obj + cls
    terms = {"box": float(box.detach()), "obj": float(obj.detach()), "cls": float(cls.detach()),
             "num_pos": float(num_pos)}
    return LossDict(total=total, terms=terms)


def _level_balance(raw: YoloRaw, config: YoloLossConfig) -> List[float]:
    """Objectness weight per level: ``config.balance``, else 1.0 for one level, else by stride."""
    num_levels = len(raw.maps)
    if config.balance is not None:
        if len(config.balance) != num_levels:
            raise ValueError(f"loss balance has {len(config.balance)} weights for {num_levels} levels")
        balance = list(config.balance)
    elif num_levels == 1 or config.obj_norm == "positives":
        balance = [1.0] * num_levels  # summed over cells: a level's weight already grows with its cells
    else:
        balance = [DEFAULT_BALANCE.get(int(round(s[0])), 1.0) for s in raw.strides]
    return balance


def _box_loss(p: torch.Tensor, assign: _Assignment, stride: Tuple[float, float], image_size: Tuple[int, int],
              box_loss: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Summed box loss of one level's responsible predictions ``p`` [n, 5 + C], and their GIoU [n].

    ``box_loss`` "giou": 1 - GIoU(decoded box, ground truth); "mse": the papers' squared error on
    (sigmoid(tx), sigmoid(ty), tw, th) weighted by 2 - w*h/(W*H).
    """
    sy, sx = stride
    image_h, image_w = image_size
    px = (torch.sigmoid(p[:, 0]) + assign.col.to(p.dtype)) * sx
    py = (torch.sigmoid(p[:, 1]) + assign.row.to(p.dtype)) * sy
    pw = assign.anchor_wh[:, 0] * torch.exp(p[:, 2].clamp(max=MAX_LOG_WH))
    ph = assign.anchor_wh[:, 1] * torch.exp(p[:, 3].clamp(max=MAX_LOG_WH))
    pbox = torch.stack((px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2), dim=1)
    iou, giou = paired_giou(pbox, assign.boxes)
    if box_loss == "giou":
        return (1.0 - giou).sum(), giou
    gw = (assign.boxes[:, 2] - assign.boxes[:, 0]).clamp(min=1e-3)
    gh = (assign.boxes[:, 3] - assign.boxes[:, 1]).clamp(min=1e-3)
    gcx = 0.5 * (assign.boxes[:, 0] + assign.boxes[:, 2]) / sx - assign.col.to(p.dtype)
    gcy = 0.5 * (assign.boxes[:, 1] + assign.boxes[:, 3]) / sy - assign.row.to(p.dtype)
    scale = 2.0 - gw * gh / float(image_h * image_w)
    err = ((torch.sigmoid(p[:, 0]) - gcx) ** 2 + (torch.sigmoid(p[:, 1]) - gcy) ** 2
           + (p[:, 2] - torch.log(gw / assign.anchor_wh[:, 0])) ** 2
           + (p[:, 3] - torch.log(gh / assign.anchor_wh[:, 1])) ** 2)
    return (scale * err).sum(), giou


def _class_loss(logits: torch.Tensor, labels: torch.Tensor, class_activation: str, smooth: float, n: int,
                device: torch.device) -> torch.Tensor:
    """Summed class loss of ``n`` responsible predictions: mean BCE over the classes per prediction
    (sigmoid, labels smoothed to ``smooth / 2`` and ``1 - smooth / 2``) or cross-entropy (softmax)."""
    if class_activation == "sigmoid":
        onehot = torch.full_like(logits, smooth / 2)
        onehot[torch.arange(n, device=device), labels] = 1.0 - smooth / 2
        return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(dim=1).sum()
    return F.cross_entropy(logits, labels, reduction="sum", label_smoothing=smooth)
