"""Prediction heads: per location and per anchor, 4 box offsets and K class scores, flattened in anchor order.

``SSDHead``: one 3x3 conv per feature map for offsets (A_k * 4 channels) and one for classes (A_k * K).
``RetinaNetHead``: class and box subnets shared across pyramid levels (4 x [3x3 conv + ReLU], then a
3x3 conv), with the class bias initialised to -log((1 - pi) / pi) so every sigmoid starts at pi = 0.01.

Both return (deltas [B, N, 4], logits [B, N, K]) with N = sum over maps of h_k * w_k * A_k, ordered
map, y, x, anchor: the layout of ``anchors.grid_anchors``.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ModelError


def flatten_predictions(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """Conv output [B, A * per_anchor, h, w] -> [B, h * w * A, per_anchor] (y, x, anchor order).

    Uses only reshape/permute with -1 for the anchor count, so ONNX export keeps batch and spatial dims free.
    """
    b = x.shape[0]
    h, w = x.shape[-2], x.shape[-1]
    x = x.reshape(b, -1, per_anchor, h, w)  # [B, A, P, h, w]
    x = x.permute(0, 3, 4, 1, 2)  # [B, h, w, A, P]
    return x.reshape(b, -1, per_anchor)


class SSDHead(nn.Module):
    """Independent 3x3 conv predictors on each map.

    Args:
        in_channels: channels of each feature map.
        anchors_per_location: A_k for each map.
        num_outputs: class scores per anchor K (SSD: num_classes + 1, background at index 0).
    """

    def __init__(self, in_channels: Sequence[int], anchors_per_location: Sequence[int], num_outputs: int):
        super().__init__()
        if len(in_channels) != len(anchors_per_location):
            raise ModelError(f"SSD head: {len(in_channels)} feature maps but {len(anchors_per_location)} "
                             "anchor counts; expected one anchor count per map")
        self.num_outputs = int(num_outputs)
        self.box = nn.ModuleList([nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(in_channels, anchors_per_location)])
        self.cls = nn.ModuleList(
            [nn.Conv2d(c, a * self.num_outputs, 3, padding=1) for c, a in zip(in_channels, anchors_per_location)]
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """feats: maps [B, C_k, h_k, w_k] -> (deltas [B, N, 4], logits [B, N, num_outputs])."""
        if len(feats) != len(self.box):
            raise ModelError(f"SSD head built for {len(self.box)} maps, got {len(feats)}")
        deltas = [flatten_predictions(conv(f), 4) for conv, f in zip(self.box, feats)]
        logits = [flatten_predictions(conv(f), self.num_outputs) for conv, f in zip(self.cls, feats)]
        return torch.cat(deltas, dim=1), torch.cat(logits, dim=1)


def prior_bias(prior: float) -> float:
    """Bias b with sigmoid(b) = prior: -log((1 - prior) / prior)."""
    if not 0.0 < prior < 1.0:
        raise ModelError(f"prior probability must be in (0, 1), got {prior}")
    return -math.log((1.0 - prior) / prior)


def _subnet(channels: int, depth: int, norm: Optional[str]) -> nn.Sequential:
    layers: List[nn.Module] = []
    for _ in range(depth):
        layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=norm is None))
        if norm == "gn":
            layers.append(nn.GroupNorm(min(32, channels // 4) if channels >= 8 else 1, channels))
        elif norm == "bn":
            layers.append(nn.BatchNorm2d(channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class RetinaNetHead(nn.Module):
    """RetinaNet's class and box subnets, shared by every pyramid level.

    Args:
        channels: FPN channels (same on every level).
        num_anchors: A anchors per location (9 with 3 scales x 3 ratios).
        num_classes: K sigmoid class outputs (no background class).
        depth: conv + ReLU layers before each predictor (4 in the paper).
        prior: initial foreground probability pi of the class subnet (0.01).
        norm: None (paper), "gn" (GroupNorm, helps training from scratch) or "bn" (BatchNorm shared
            across levels; statistics mix the levels).
    """

    def __init__(self, channels: int, num_anchors: int, num_classes: int, *, depth: int = 4,
                 prior: float = 0.01, norm: Optional[str] = None):
        super().__init__()
        if norm not in (None, "gn", "bn"):
            raise ModelError(f"RetinaNet head norm must be None, 'gn' or 'bn', got {norm!r}")
        self.num_classes = int(num_classes)
        self.cls_subnet = _subnet(channels, depth, norm)
        self.box_subnet = _subnet(channels, depth, norm)
        self.cls_pred = nn.Conv2d(channels, num_anchors * self.num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_pred.bias, prior_bias(prior))

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """feats: pyramid maps [B, C, h_k, w_k] -> (deltas [B, N, 4], logits [B, N, num_classes])."""
        deltas = [flatten_predictions(self.box_pred(self.box_subnet(f)), 4) for f in feats]
        logits = [flatten_predictions(self.cls_pred(self.cls_subnet(f)), self.num_classes) for f in feats]
        return torch.cat(deltas, dim=1), torch.cat(logits, dim=1)
