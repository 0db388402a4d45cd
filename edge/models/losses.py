"""Detection losses: sigmoid focal loss, SSD's hard negative mining, smooth L1 and GIoU.

All functions take plain tensors and return unreduced or summed values; callers normalize (by the
number of positive anchors, as SSD and RetinaNet both do).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import ModelError


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Focal loss FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) (Lin et al. 2017), elementwise.

    Args:
        logits: [...] raw class scores (sigmoid gives p).
        targets: [...] same shape, 1 for the true class, 0 otherwise (float).
        alpha: weight of positives (alpha_t = alpha for targets 1, 1 - alpha for 0); < 0 disables it.
        gamma: focusing exponent (0 gives alpha-weighted binary cross-entropy).
    Returns: [...] unreduced loss. log(p_t) is computed stably as -BCE-with-logits.
    """
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # = -log(p_t)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


def hard_negative_mask(conf_loss: torch.Tensor, positive: torch.Tensor, *, neg_pos_ratio: float = 3.0,
                       eligible: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SSD hard negative mining: per image, keep the negatives with the highest confidence loss.

    Args:
        conf_loss: [B, N] per-anchor classification loss (e.g. cross-entropy against background).
        positive: [B, N] bool, anchors matched to an object.
        neg_pos_ratio: at most this many negatives per positive in each image (3 in the paper).
        eligible: optional [B, N] bool of anchors allowed as negatives (default: every non-positive).
    Returns: [B, N] bool of selected negatives; per image count = min(floor(ratio * positives), eligible).
    An image with no positives gets no negatives.
    """
    if conf_loss.shape != positive.shape or conf_loss.dim() != 2:
        raise ModelError(f"hard negative mining expects conf_loss and positive of the same shape [B, N], got "
                         f"{tuple(conf_loss.shape)} and {tuple(positive.shape)}")
    negatives = ~positive if eligible is None else (eligible & ~positive)
    loss = conf_loss.detach().masked_fill(~negatives, float("-inf"))
    num_neg = torch.minimum(
        torch.floor(positive.sum(dim=1, keepdim=True).float() * neg_pos_ratio).long(),
        negatives.sum(dim=1, keepdim=True),
    )  # [B, 1]
    order = loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)  # rank of each anchor by loss, 0 = hardest
    return (rank < num_neg) & negatives


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Elementwise smooth L1 (Huber / beta): 0.5 x^2 / beta where |x| < beta, else |x| - 0.5 beta."""
    diff = (pred - target).abs()
    if beta <= 0:
        return diff
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def giou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1 - GIoU of paired boxes [..., 4] xyxy (same units) -> [...] in [0, 2] (Rezatofighi et al. 2019)."""
    x1 = torch.maximum(boxes1[..., 0], boxes2[..., 0])
    y1 = torch.maximum(boxes1[..., 1], boxes2[..., 1])
    x2 = torch.minimum(boxes1[..., 2], boxes2[..., 2])
    y2 = torch.minimum(boxes1[..., 3], boxes2[..., 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area1 = (boxes1[..., 2] - boxes1[..., 0]).clamp(min=0) * (boxes1[..., 3] - boxes1[..., 1]).clamp(min=0)
    area2 = (boxes2[..., 2] - boxes2[..., 0]).clamp(min=0) * (boxes2[..., 3] - boxes2[..., 1]).clamp(min=0)
    union = area1 + area2 - inter
    iou = inter / (union + eps)
    cx1 = torch.minimum(boxes1[..., 0], boxes2[..., 0])
    cy1 = torch.minimum(boxes1[..., 1], boxes2[..., 1])
    cx2 = torch.maximum(boxes1[..., 2], boxes2[..., 2])
    cy2 = torch.maximum(boxes1[..., 3], boxes2[..., 3])
    enclose = (cx2 - cx1).clamp(min=0) * (cy2 - cy1).clamp(min=0)
    return 1.0 - (iou - (enclose - union) / (enclose + eps))
