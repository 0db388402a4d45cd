"""SSD (Liu et al. 2016): predictions from several maps of decreasing resolution with default boxes.

Assembled from parts: a backbone (``backbones``), extra layers that keep halving the resolution, an
``SSDHead`` of 3x3 convs, default boxes (``anchors.ssd_default_box_levels``) and center-size box coding
with variances (0.1, 0.1, 0.2, 0.2). Softmax over C + 1 classes (background = index 0 of the logits).
Training: best default box per object forced positive plus IoU >= 0.5, hard negative mining at
negatives:positives <= 3:1 chosen by confidence loss, smooth L1 on offsets, both normalized by positives.

Variants (``variant=``; any field can be overridden by keyword):
    "mobile": MobileNetV1 x0.5 at 320x320, maps at strides 8..~160 (6 maps), BN in the extras.
        Small enough to train on a 2-core CPU (BCCD at 256-320 pixels).
    "ssd300": the paper's SSD300: VGG16 (conv4_3 with L2Norm, dilated fc6/fc7), extras conv8..conv11,
        6 maps 38/19/10/5/3/1, scales 0.1 .. 0.88 (+1.05), 8732 default boxes.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from edge.models.options import check_model_args, dataclass_options
from edge.models.registry import register

from ..errors import ModelError
from .anchor_detector import AnchorDetector
from .anchors import (
    AnchorLevel,
    grid_anchors,
    match_anchors,
    probe_feature_sizes,
    ssd_default_box_levels,
    ssd_scales,
)
from .backbones import BACKBONES, Backbone, build_backbone
from .base import (
    IMAGENET_NORMALIZATION,
    Detections,
    LossDict,
    Target,
    as_input_size,
    as_normalization,
    check_input_size,
    target_tensors,
)
from .box_coding import BoxCoder
from .heads import SSDHead
from .losses import hard_negative_mask, smooth_l1
from .ops import box_iou, cxcywh_to_xyxy

log = logging.getLogger(__name__)



@dataclass
class SSDConfig:
    """Everything that defines an SSD; JSON-serializable through ``to_dict`` (the model card's config).

    extras: per extra block [mid_channels, out_channels, stride, padding]: 1x1 conv to mid, 3x3 conv
        (stride, padding) to out, each followed by ReLU (and BN first when ``extras_batch_norm``).
    min_scale, max_scale, first_scale: the paper's linear default-box scales over the maps (fractions of
        the shorter input side); ``first_scale`` (SSD300: 0.1) sets the first map apart (``ssd_scales``).
    scales: explicit len(maps) + 1 scales instead (the resolved list is what ``SSD.config`` stores).
    aspect_ratios: per map, ratios besides 1; None = [2], [2, 3], ..., [2, 3], [2], [2].
    """

    num_classes: int
    variant: str = "mobile"
    input_size: Tuple[int, int] = (320, 320)
    backbone: str = "mobilenet"
    width: float = 0.5
    extras: List[List[int]] = field(default_factory=lambda: [[128, 256, 2, 1], [64, 128, 2, 1], [64, 128, 2, 1]])
    extras_batch_norm: bool = True
    min_scale: float = 0.2
    max_scale: float = 0.9
    first_scale: Optional[float] = None
    scales: Optional[List[float]] = None
    aspect_ratios: Optional[List[List[float]]] = None
    variances: List[float] = field(default_factory=lambda: [0.1, 0.1, 0.2, 0.2])
    normalization: Dict[str, Any] = field(default_factory=lambda: dict(IMAGENET_NORMALIZATION))
    iou_threshold: float = 0.5
    neg_pos_ratio: float = 3.0
    box_loss_weight: float = 1.0
    clip_boxes: bool = True

    def validate(self) -> None:
        if int(self.num_classes) < 1:
            raise ModelError(f"SSD num_classes must be >= 1, got {self.num_classes}")
        if self.backbone not in BACKBONES:
            raise ModelError(f"unknown SSD backbone {self.backbone!r}; expected one of {sorted(BACKBONES)}")
        for i, block in enumerate(self.extras):
            if len(block) != 4 or min(int(v) for v in block[:3]) < 1 or int(block[3]) < 0:
                raise ModelError(f"SSD extras[{i}] = {block!r}; expected [mid_channels, out_channels, stride, "
                                 "padding] with positive channels and stride")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ModelError(f"SSD iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.neg_pos_ratio < 0:
            raise ModelError(f"SSD neg_pos_ratio must be >= 0, got {self.neg_pos_ratio}")
        as_input_size(self.input_size)
        as_normalization(self.normalization, IMAGENET_NORMALIZATION)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


SSD_VARIANTS: Dict[str, Dict[str, Any]] = {
    "mobile": {
        "input_size": [320, 320],
        "backbone": "mobilenet",
        "width": 0.5,
        "extras": [[128, 256, 2, 1], [64, 128, 2, 1], [64, 128, 2, 1]],
        "extras_batch_norm": True,
        # a small first scale (0.07 of 320 = 22 px) for small objects such as BCCD's platelets
        "min_scale": 0.15,
        "max_scale": 0.87,
        "first_scale": 0.07,
    },
    "ssd300": {
        "input_size": [300, 300],
        "backbone": "vgg16",
        "width": 1.0,
        "extras": [[256, 512, 2, 1], [128, 256, 2, 1], [128, 256, 1, 0], [128, 256, 1, 0]],
        "extras_batch_norm": False,
        "min_scale": 0.2,  # with first_scale 0.1: 0.1, 0.2, 0.37, 0.54, 0.71, 0.88 (+1.05), as in Caffe SSD
        "max_scale": 0.88,
        "first_scale": 0.1,
    },
}


def ssd_config(*, num_classes: int, variant: str = "mobile", **overrides: Any) -> SSDConfig:
    """The variant's defaults with ``overrides`` applied, validated."""
    if variant not in SSD_VARIANTS:
        raise ModelError(f"unknown SSD variant {variant!r}; expected one of {sorted(SSD_VARIANTS)}")
    check_model_args("ssd", overrides)
    values = copy.deepcopy(SSD_VARIANTS[variant])
    values.update({k: v for k, v in overrides.items()})
    values["input_size"] = as_input_size(values["input_size"])
    cfg = SSDConfig(num_classes=int(num_classes), variant=variant, **values)
    cfg.validate()
    return cfg


class SSDFeatures(nn.Module):
    """Backbone maps followed by the extra blocks: [B, 3, H, W] -> list of maps, finest first."""

    def __init__(self, backbone: Backbone, extras: Sequence[Sequence[int]], batch_norm: bool):
        super().__init__()
        self.backbone = backbone
        blocks: List[nn.Module] = []
        cin = backbone.out_channels[-1]
        self.out_channels = list(backbone.out_channels)
        for mid, out, stride, pad in extras:
            layers: List[nn.Module] = [nn.Conv2d(cin, mid, 1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(mid))
            layers += [nn.ReLU(inplace=True), nn.Conv2d(mid, out, 3, stride, pad, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
            self.out_channels.append(int(out))
            cin = out
        self.extras = nn.ModuleList(blocks)
        for m in self.extras.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = list(self.backbone(x))
        y = feats[-1]
        for block in self.extras:
            y = block(y)
            feats.append(y)
        return feats


@dataclass
class SSDRaw:
    """Raw SSD head outputs: deltas [B, N, 4] (encoded offsets), logits [B, N, C + 1] (0 = background)."""

    deltas: torch.Tensor
    logits: torch.Tensor


class SSD(AnchorDetector):
    """SSD detector. Keyword arguments: the fields of ``SSDConfig`` (``variant`` picks the defaults).

    Buffers (not in the state dict, recomputed for ``input_size``): ``anchors`` [N, 4] cxcywh input pixels.
    """

    arch = "ssd"

    def __init__(self, **kwargs: Any):
        cfg = ssd_config(**kwargs)
        super().__init__(num_classes=cfg.num_classes, input_size=cfg.input_size,
                         normalization=as_normalization(cfg.normalization, IMAGENET_NORMALIZATION))
        self.features = SSDFeatures(build_backbone(cfg.backbone, width=cfg.width), cfg.extras, cfg.extras_batch_norm)
        try:
            sizes = probe_feature_sizes(self.features, self.input_size)
        except RuntimeError as exc:
            raise ModelError(f"SSD ({cfg.variant}, backbone {cfg.backbone}, extras {cfg.extras}) cannot run on a "
                             f"{self.input_size[0]}x{self.input_size[1]} input: {exc}; use a larger input_size or "
                             "fewer/unpadded extras") from exc
        if min(min(s) for s in sizes) < 1:
            raise ModelError(f"SSD feature maps {sizes} at input {self.input_size} include an empty map; use a "
                             "larger input_size or fewer extras")
        m = len(sizes)
        scales = list(cfg.scales) if cfg.scales is not None else ssd_scales(m, cfg.min_scale, cfg.max_scale,
                                                                             cfg.first_scale)
        ratios = ([[2.0]] + [[2.0, 3.0]] * max(m - 3, 0) + [[2.0]] * min(2, m - 1)) if cfg.aspect_ratios is None \
            else [list(r) for r in cfg.aspect_ratios]
        cfg.scales = [float(s) for s in scales]
        cfg.aspect_ratios = [[float(a) for a in r] for r in ratios]
        self.anchor_levels: List[AnchorLevel] = ssd_default_box_levels(self.input_size, sizes, cfg.scales,
                                                                       cfg.aspect_ratios)
        self.register_buffer("anchors", grid_anchors(self.anchor_levels), persistent=False)
        self.head = SSDHead(self.features.out_channels, [lv.anchors_per_location for lv in self.anchor_levels],
                            self.num_classes + 1)
        self.box_coder = BoxCoder(cfg.variances)
        self.cfg = cfg
        self.config = cfg.to_dict()
        self.config["normalization"] = self.normalization.to_dict()
        log.debug("SSD %s: maps %s, %d default boxes", cfg.variant, sizes, self.anchors.shape[0])

    def forward_raw(self, images: torch.Tensor) -> SSDRaw:
        """images float32 [B, 3, H, W] normalized -> ``SSDRaw`` (N = ``num_anchors``)."""
        check_input_size(images, self.input_size, self.arch)
        deltas, logits = self.head(self.features(images))
        return SSDRaw(deltas=deltas, logits=logits)

    def decode(self, raw: SSDRaw) -> Detections:
        """-> boxes [B, N, 4] xyxy input pixels (clipped to the input), scores [B, N, C] (softmax, background
        column dropped). Elementwise ops only: exportable to ONNX with a free batch dimension."""
        scores = F.softmax(raw.logits, dim=-1)[..., 1:]
        return Detections(boxes=self.decode_boxes(raw.deltas), scores=scores)

    def match(self, targets: Sequence[Target]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-anchor training targets: labels int64 [B, N] (0 background, class + 1 for objects) and
        encoded offsets [B, N, 4] (meaningful where labels > 0)."""
        anchors_xyxy = cxcywh_to_xyxy(self.anchors)
        labels, offsets = [], []
        for t in targets:
            boxes, cls = target_tensors(t, self.num_classes, self.anchors.device)
            matches = match_anchors(box_iou(boxes, anchors_xyxy), pos_threshold=self.cfg.iou_threshold,
                                    force_best=True)
            if len(cls) == 0:  # no objects: every default box is background
                labels.append(torch.zeros_like(matches))
                offsets.append(torch.zeros_like(self.anchors))
                continue
            idx = matches.clamp(min=0)
            labels.append(torch.where(matches >= 0, cls[idx] + 1, torch.zeros_like(idx)))
            offsets.append(self.box_coder.encode(boxes[idx], self.anchors))
        return torch.stack(labels), torch.stack(offsets)

    def compute_loss(self, raw: SSDRaw, targets: Sequence[Target]) -> LossDict:
        """Terms "cls" (softmax cross-entropy over positives + mined negatives) and "box" (smooth L1 on
        positives' offsets), each divided by the number of positives in the batch."""
        if len(targets) != raw.logits.shape[0]:
            raise ModelError(f"SSD loss got {len(targets)} targets for a batch of {raw.logits.shape[0]} images")
        with torch.no_grad():
            labels, offsets = self.match(targets)
        pos = labels > 0
        num_pos = pos.sum().clamp(min=1).float()
        conf = F.cross_entropy(raw.logits.reshape(-1, raw.logits.shape[-1]), labels.reshape(-1),
                               reduction="none").reshape(labels.shape)
        neg = hard_negative_mask(conf, pos, neg_pos_ratio=self.cfg.neg_pos_ratio)
        cls_loss = (conf * (pos | neg).float()).sum() / num_pos
        box_loss = smooth_l1(raw.deltas[pos], offsets[pos], beta=1.0).sum() / num_pos
        total = cls_loss + self.cfg.box_loss_weight * box_loss
        return LossDict(total=total, terms={"cls": float(cls_loss.detach()), "box": float(box_loss.detach())})


@register("ssd", options=lambda: dataclass_options(SSDConfig, SSD_VARIANTS))
def build_ssd(**config: Any) -> SSD:
    """``build_model("ssd", **config)``: see ``SSDConfig`` / ``SSD_VARIANTS`` for the keyword arguments."""
    return SSD(**config)
