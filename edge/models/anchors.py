"""Anchors (RetinaNet) and default boxes (SSD), laid out exactly as the heads emit predictions.

Layout: levels in order, then rows y, then columns x, then the anchors of one location (the order of
``AnchorLevel.wh``). That is the order of ``heads.flatten_predictions``, so prediction i belongs to
anchor i. Anchors are float32 [N, 4] cx, cy, w, h in *input pixels*, computed for one input size (H, W);
a model built for another input size recomputes them.

SSD default boxes (Liu et al. 2016): map k has scale s_k (a fraction of the shorter input side), boxes
s_k * sqrt(ar) by s_k / sqrt(ar) for ar in {1, a, 1/a, ...} plus one extra square box of size
sqrt(s_k * s_{k+1}). RetinaNet (Lin et al. 2017): on P3-P7 base sizes 32..512 pixels, 3 scales
(2^0, 2^(1/3), 2^(2/3)) x 3 aspect ratios (h/w in {1/2, 1, 2}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ModelError


@dataclass
class AnchorLevel:
    """Anchors of one feature map: ``wh`` (w, h) pixel sizes repeated at every cell center.

    feature_size: (h, w) cells; stride: (sy, sx) = (H / h, W / w) pixels; centers ((x + 0.5) sx, (y + 0.5) sy).
    """

    feature_size: Tuple[int, int]
    stride: Tuple[float, float]
    wh: List[Tuple[float, float]]

    @property
    def anchors_per_location(self) -> int:
        return len(self.wh)

    @property
    def num_anchors(self) -> int:
        return self.feature_size[0] * self.feature_size[1] * len(self.wh)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "feature_size": list(self.feature_size),
            "stride": [round(s, 6) for s in self.stride],
            "offset": 0.5,
            "wh": [[round(w, 4), round(h, 4)] for w, h in self.wh],
        }


def grid_anchors(levels: Sequence[AnchorLevel]) -> torch.Tensor:
    """All anchors, float32 [N, 4] cxcywh input pixels, N = sum of ``num_anchors`` (layout: module doc)."""
    out: List[torch.Tensor] = []
    for lv in levels:
        fh, fw = lv.feature_size
        sy, sx = lv.stride
        cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * sy
        cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * sx
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")  # [fh, fw]
        wh = torch.tensor(lv.wh, dtype=torch.float64)  # [A, 2]
        a = wh.shape[0]
        centers = torch.stack([gx, gy], dim=-1).reshape(fh * fw, 1, 2).expand(fh * fw, a, 2)
        sizes = wh.reshape(1, a, 2).expand(fh * fw, a, 2)
        out.append(torch.cat([centers, sizes], dim=-1).reshape(-1, 4))
    if not out:
        return torch.zeros((0, 4), dtype=torch.float32)
    return torch.cat(out, dim=0).float()


def ssd_scales(num_maps: int, min_scale: float = 0.2, max_scale: float = 0.9,
               first_scale: Optional[float] = None) -> List[float]:
    """The paper's linear scales s_1..s_m in [min_scale, max_scale] plus s_{m+1} for the last extra box.

    ``first_scale`` (SSD300 uses 0.1 for conv4_3) replaces s_1 and spreads the rest over maps 2..m.
    Returns m + 1 fractions of the shorter input side.
    """
    if num_maps < 1:
        raise ModelError(f"SSD needs at least one feature map, got {num_maps}")
    if not 0 < min_scale < max_scale:
        raise ModelError(f"SSD scales need 0 < min_scale < max_scale, got {min_scale}, {max_scale}")
    if first_scale is None:
        n = num_maps
        scales = [min_scale + (max_scale - min_scale) * k / max(n - 1, 1) for k in range(n)]
        step = (max_scale - min_scale) / max(n - 1, 1)
    else:
        n = num_maps - 1
        rest = [min_scale + (max_scale - min_scale) * k / max(n - 1, 1) for k in range(n)] if n > 0 else []
        scales = [float(first_scale)] + rest
        step = (max_scale - min_scale) / max(n - 1, 1)
    return scales + [scales[-1] + step]


def ssd_default_box_levels(
    input_size: Tuple[int, int],
    feature_sizes: Sequence[Tuple[int, int]],
    scales: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
) -> List[AnchorLevel]:
    """SSD default boxes per map: ar=1 at s_k, ar=1 at sqrt(s_k s_{k+1}), then (a, 1/a) for each a listed.

    Args:
        input_size: (H, W) pixels. Sizes are fractions of min(H, W).
        feature_sizes: (h, w) of each prediction map.
        scales: len(feature_sizes) + 1 fractions (see ``ssd_scales``).
        aspect_ratios: per map, the ratios a >= 1 besides 1 (SSD300: [[2], [2, 3], [2, 3], [2, 3], [2], [2]]).
    """
    m = len(feature_sizes)
    if len(scales) != m + 1:
        raise ModelError(f"SSD needs {m + 1} scales for {m} feature maps (one extra for the last map's "
                         f"second square box), got {len(scales)}")
    if len(aspect_ratios) != m:
        raise ModelError(f"SSD needs one aspect-ratio list per feature map ({m}), got {len(aspect_ratios)}")
    H, W = input_size
    base = float(min(H, W))
    levels = []
    for k, (fh, fw) in enumerate(feature_sizes):
        s, s_next = scales[k] * base, scales[k + 1] * base
        wh = [(s, s), (math.sqrt(s * s_next), math.sqrt(s * s_next))]
        for a in aspect_ratios[k]:
            if a <= 0:
                raise ModelError(f"aspect ratio must be positive, got {a} for map {k}")
            r = math.sqrt(float(a))
            wh += [(s * r, s / r), (s / r, s * r)]
        levels.append(AnchorLevel((int(fh), int(fw)), (H / fh, W / fw), wh))
    return levels


def retinanet_anchor_levels(
    input_size: Tuple[int, int],
    feature_sizes: Sequence[Tuple[int, int]],
    sizes: Sequence[float] = (32, 64, 128, 256, 512),
    scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
) -> List[AnchorLevel]:
    """RetinaNet anchors: per level base size x scales x ratios (h / w), area-preserving per ratio.

    Per location order: ratio-major, scale-minor (9 anchors with the defaults).
    """
    if len(sizes) != len(feature_sizes):
        raise ModelError(f"RetinaNet needs one anchor size per pyramid level ({len(feature_sizes)}), "
                         f"got {len(sizes)}: {list(sizes)}")
    H, W = input_size
    levels = []
    for size, (fh, fw) in zip(sizes, feature_sizes):
        wh = []
        for ratio in ratios:
            hr = math.sqrt(float(ratio))
            for sc in scales:
                side = float(size) * float(sc)
                wh.append((side / hr, side * hr))
        levels.append(AnchorLevel((int(fh), int(fw)), (H / fh, W / fw), wh))
    return levels


def probe_feature_sizes(module: nn.Module, input_size: Tuple[int, int]) -> List[Tuple[int, int]]:
    """(h, w) of each map ``module`` returns for a [1, 3, H, W] input, computed on the meta device.

    No arithmetic is done and no parameter or BatchNorm statistic is touched.
    """
    from torch.func import functional_call

    params = {k: torch.empty_like(v, device="meta") for k, v in module.named_parameters()}
    params.update({k: torch.empty_like(v, device="meta") for k, v in module.named_buffers()})
    x = torch.empty((1, 3, int(input_size[0]), int(input_size[1])), device="meta")
    modes = [(m, m.training) for m in module.modules()]
    module.eval()  # BatchNorm in training mode rejects 1x1 maps of a batch of 1
    try:
        with torch.no_grad():
            outs = functional_call(module, params, (x,))
    finally:
        for m, mode in modes:
            m.training = mode
    return [(int(o.shape[-2]), int(o.shape[-1])) for o in outs]


POSITIVE_NONE = -1  # match value of a background (negative) anchor
IGNORE = -2  # match value of an anchor that counts neither as object nor as background


def match_anchors(iou: torch.Tensor, *, pos_threshold: float, neg_threshold: Optional[float] = None,
                  force_best: bool = True) -> torch.Tensor:
    """Assign each anchor to a ground-truth box by IoU.

    Args:
        iou: [G, N] IoU of G ground-truth boxes with N anchors.
        pos_threshold: IoU >= this makes the anchor positive for its best-overlapping box.
        neg_threshold: IoU < this makes it negative; in between is ignored (RetinaNet: 0.5 / 0.4).
            None means the same as ``pos_threshold`` (SSD: everything below 0.5 is background).
        force_best: each box's best anchor is made positive for that box whatever its IoU (SSD's
            "best prior per ground truth"; RetinaNet's low-quality matches), so no object goes unmatched.
    Returns: int64 [N]: index of the matched box (>= 0), ``POSITIVE_NONE`` (-1) for background,
        ``IGNORE`` (-2) for ignored anchors.
    """
    neg = pos_threshold if neg_threshold is None else neg_threshold
    if neg > pos_threshold:
        raise ModelError(f"negative IoU threshold {neg} must not exceed the positive one {pos_threshold}")
    g, n = iou.shape
    if g == 0:
        return torch.full((n,), POSITIVE_NONE, dtype=torch.long, device=iou.device)
    best_iou, best_gt = iou.max(dim=0)  # per anchor
    matches = torch.where(best_iou >= pos_threshold, best_gt, torch.full_like(best_gt, IGNORE))
    matches = torch.where(best_iou < neg, torch.full_like(best_gt, POSITIVE_NONE), matches)
    if force_best:
        best_anchor_iou, best_anchor = iou.max(dim=1)  # per ground-truth box
        valid = best_anchor_iou > 0
        gt_idx = torch.arange(g, device=iou.device)
        matches[best_anchor[valid]] = gt_idx[valid]
    return matches
