"""RetinaNet (Lin et al. 2017): ResNet + FPN (P3-P7), shared class and box subnets, focal loss.

Assembled from parts: ``backbones`` (ResNet 18/34/50), ``fpn.FPN``, ``heads.RetinaNetHead`` (class bias
prior pi = 0.01), ``anchors.retinanet_anchor_levels`` (3 scales x 3 ratios per level) and center-size box
coding with variances (1, 1, 1, 1). Sigmoid class scores (no background class).
Training: anchors with IoU >= 0.5 positive, < 0.4 negative, in between ignored (plus each object's best
anchor, so none goes unmatched; ``low_quality_matches``); focal loss (alpha 0.25, gamma 2) over all
non-ignored anchors and a box loss on positives (smooth L1, L1 or GIoU), both divided by the positives.

Variants (``variant=``; any field can be overridden by keyword):
    "small": ResNet18 x0.5, FPN 64 channels, 3-conv subnets with GroupNorm, 320x320, anchor base sizes
        16..256 (the paper's 32..512 scaled to a ~320 input). Trains on a 2-core CPU (BCCD at 256-320).
    "r50-fpn": the paper's RetinaNet R50-FPN: 256 channels, 4-conv subnets without norm, sizes 32..512,
        input 640x640 by default.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from edge.models.options import check_model_args, dataclass_options
from edge.models.registry import register

from ..errors import ModelError
from .anchor_detector import AnchorDetector
from .anchors import AnchorLevel, grid_anchors, match_anchors, probe_feature_sizes, retinanet_anchor_levels
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
from .fpn import FPN
from .heads import RetinaNetHead
from .losses import giou_loss, sigmoid_focal_loss, smooth_l1
from .ops import box_iou, cxcywh_to_xyxy

log = logging.getLogger(__name__)

BOX_LOSSES = ("smooth_l1", "l1", "giou")


@dataclass
class RetinaNetConfig:
    """Everything that defines a RetinaNet; JSON-serializable through ``to_dict`` (the model card's config).

    anchor_sizes: base anchor size in input pixels per pyramid level (P3 first); anchor_scales multiply
    it; anchor_ratios are h / w. smooth_l1_beta applies to box_loss "smooth_l1" (Detectron: 0.11).
    """

    num_classes: int
    variant: str = "small"
    input_size: Tuple[int, int] = (320, 320)
    backbone: str = "resnet18"
    width: float = 0.5
    fpn_channels: int = 64
    num_levels: int = 5
    p6_from: str = "c5"
    head_depth: int = 3
    head_norm: Optional[str] = "gn"
    prior: float = 0.01
    anchor_sizes: List[float] = field(default_factory=lambda: [16.0, 32.0, 64.0, 128.0, 256.0])
    anchor_scales: List[float] = field(default_factory=lambda: [1.0, 2 ** (1 / 3), 2 ** (2 / 3)])
    anchor_ratios: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    variances: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    normalization: Dict[str, Any] = field(default_factory=lambda: dict(IMAGENET_NORMALIZATION))
    pos_iou: float = 0.5
    neg_iou: float = 0.4
    low_quality_matches: bool = True
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: str = "smooth_l1"
    smooth_l1_beta: float = 0.11
    box_loss_weight: float = 1.0
    clip_boxes: bool = True

    def validate(self) -> None:
        if int(self.num_classes) < 1:
            raise ModelError(f"RetinaNet num_classes must be >= 1, got {self.num_classes}")
        if self.backbone not in BACKBONES or self.backbone.startswith("vgg"):
            names = sorted(n for n in BACKBONES if not n.startswith("vgg"))
            raise ModelError(f"RetinaNet backbone {self.backbone!r} is not supported; expected one of {names} "
                             "(three maps at strides 8, 16, 32)")
        if len(self.anchor_sizes) != self.num_levels:
            raise ModelError(f"RetinaNet has {self.num_levels} pyramid levels but {len(self.anchor_sizes)} "
                             f"anchor_sizes {self.anchor_sizes}; give one base size per level")
        if not 0.0 <= self.neg_iou <= self.pos_iou <= 1.0:
            raise ModelError(f"RetinaNet IoU thresholds need 0 <= neg_iou <= pos_iou <= 1, got neg_iou="
                             f"{self.neg_iou}, pos_iou={self.pos_iou}")
        if self.box_loss not in BOX_LOSSES:
            raise ModelError(f"RetinaNet box_loss {self.box_loss!r} is unknown; expected one of {list(BOX_LOSSES)}")
        if self.fpn_channels < 8 or self.head_depth < 0:
            raise ModelError(f"RetinaNet fpn_channels must be >= 8 and head_depth >= 0, got "
                             f"{self.fpn_channels} and {self.head_depth}")
        if self.focal_gamma < 0 or self.focal_alpha > 1:
            raise ModelError(f"focal loss needs gamma >= 0 and alpha <= 1 (alpha < 0 disables it), got "
                             f"gamma={self.focal_gamma}, alpha={self.focal_alpha}")
        as_input_size(self.input_size)
        as_normalization(self.normalization, IMAGENET_NORMALIZATION)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


RETINANET_VARIANTS: Dict[str, Dict[str, Any]] = {
    "small": {
        "input_size": [320, 320],
        "backbone": "resnet18",
        "width": 0.5,
        "fpn_channels": 64,
        "head_depth": 3,
        "head_norm": "gn",
        "anchor_sizes": [16.0, 32.0, 64.0, 128.0, 256.0],
    },
    "r50-fpn": {
        "input_size": [640, 640],
        "backbone": "resnet50",
        "width": 1.0,
        "fpn_channels": 256,
        "head_depth": 4,
        "head_norm": None,
        "anchor_sizes": [32.0, 64.0, 128.0, 256.0, 512.0],
    },
}


def retinanet_config(*, num_classes: int, variant: str = "small", **overrides: Any) -> RetinaNetConfig:
    """The variant's defaults with ``overrides`` applied, validated."""
    if variant not in RETINANET_VARIANTS:
        raise ModelError(f"unknown RetinaNet variant {variant!r}; expected one of {sorted(RETINANET_VARIANTS)}")
    check_model_args("retinanet", overrides)
    values = copy.deepcopy(RETINANET_VARIANTS[variant])
    values.update(overrides)
    values["input_size"] = as_input_size(values["input_size"])
    cfg = RetinaNetConfig(num_classes=int(num_classes), variant=variant, **values)
    cfg.validate()
    return cfg


class RetinaNetFeatures(nn.Module):
    """Backbone C3-C5 -> FPN P3..P(2+num_levels): [B, 3, H, W] -> list of [B, fpn_channels, h_k, w_k]."""

    def __init__(self, backbone: Backbone, fpn: FPN):
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.fpn(self.backbone(x)[-3:])


@dataclass
class RetinaNetRaw:
    """Raw RetinaNet head outputs: deltas [B, N, 4] (encoded offsets), logits [B, N, C] (sigmoid logits)."""

    deltas: torch.Tensor
    logits: torch.Tensor


class RetinaNet(AnchorDetector):
    """RetinaNet detector. Keyword arguments: the fields of ``RetinaNetConfig`` (``variant`` picks defaults).

    Buffers (not in the state dict, recomputed for ``input_size``): ``anchors`` [N, 4] cxcywh input pixels.
    """

    arch = "retinanet"
    first_level = 3  # FPN P3

    def __init__(self, **kwargs: Any):
        cfg = retinanet_config(**kwargs)
        super().__init__(num_classes=cfg.num_classes, input_size=cfg.input_size,
                         normalization=as_normalization(cfg.normalization, IMAGENET_NORMALIZATION))
        backbone = build_backbone(cfg.backbone, width=cfg.width)
        fpn = FPN(backbone.out_channels[-3:], cfg.fpn_channels, num_levels=cfg.num_levels, p6_from=cfg.p6_from)
        self.features = RetinaNetFeatures(backbone, fpn)
        try:
            sizes = probe_feature_sizes(self.features, self.input_size)
        except RuntimeError as exc:
            raise ModelError(f"RetinaNet ({cfg.variant}) cannot run on a {self.input_size[0]}x"
                             f"{self.input_size[1]} input: {exc}; use a larger input_size") from exc
        self.anchor_levels: List[AnchorLevel] = retinanet_anchor_levels(
            self.input_size, sizes, cfg.anchor_sizes, cfg.anchor_scales, cfg.anchor_ratios)
        self.register_buffer("anchors", grid_anchors(self.anchor_levels), persistent=False)
        a = self.anchor_levels[0].anchors_per_location
        self.head = RetinaNetHead(cfg.fpn_channels, a, self.num_classes, depth=cfg.head_depth, prior=cfg.prior,
                                  norm=cfg.head_norm)
        self.box_coder = BoxCoder(cfg.variances)
        self.cfg = cfg
        self.config = cfg.to_dict()
        self.config["normalization"] = self.normalization.to_dict()
        log.debug("RetinaNet %s: levels %s, %d anchors", cfg.variant, sizes, self.anchors.shape[0])

    def forward_raw(self, images: torch.Tensor) -> RetinaNetRaw:
        """images float32 [B, 3, H, W] normalized -> ``RetinaNetRaw`` (N = ``num_anchors``)."""
        check_input_size(images, self.input_size, self.arch)
        deltas, logits = self.head(self.features(images))
        return RetinaNetRaw(deltas=deltas, logits=logits)

    def decode(self, raw: RetinaNetRaw) -> Detections:
        """-> boxes [B, N, 4] xyxy input pixels (clipped to the input), scores [B, N, C] = sigmoid(logits).
        Elementwise ops only: exportable to ONNX with a free batch dimension."""
        return Detections(boxes=self.decode_boxes(raw.deltas), scores=torch.sigmoid(raw.logits))

    def match(self, targets: Sequence[Target]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-anchor training targets: labels int64 [B, N] (class index >= 0 for positives, -1 negative,
        -2 ignored) and matched boxes [B, N, 4] xyxy input pixels (meaningful where labels >= 0)."""
        anchors_xyxy = cxcywh_to_xyxy(self.anchors)
        labels, boxes_out = [], []
        for t in targets:
            boxes, cls = target_tensors(t, self.num_classes, self.anchors.device)
            matches = match_anchors(box_iou(boxes, anchors_xyxy), pos_threshold=self.cfg.pos_iou,
                                    neg_threshold=self.cfg.neg_iou, force_best=self.cfg.low_quality_matches)
            idx = matches.clamp(min=0)
            if len(cls):
                lab = torch.where(matches >= 0, cls[idx], matches)
                gt = boxes[idx]
            else:
                lab, gt = matches, torch.zeros_like(anchors_xyxy)
            labels.append(lab)
            boxes_out.append(gt)
        return torch.stack(labels), torch.stack(boxes_out)

    def compute_loss(self, raw: RetinaNetRaw, targets: Sequence[Target]) -> LossDict:
        """Terms "cls" (sigmoid focal loss over non-ignored anchors) and "box" (on positives), each divided
        by the number of positive anchors in the batch (at least 1)."""
        if len(targets) != raw.logits.shape[0]:
            raise ModelError(f"RetinaNet loss got {len(targets)} targets for a batch of {raw.logits.shape[0]} "
                             "images")
        with torch.no_grad():
            labels, gt_boxes = self.match(targets)
        pos = labels >= 0
        valid = labels >= -1
        num_pos = pos.sum().clamp(min=1).float()
        onehot = torch.zeros_like(raw.logits)
        onehot[pos] = nn.functional.one_hot(labels[pos], self.num_classes).to(onehot.dtype)
        focal = sigmoid_focal_loss(raw.logits[valid], onehot[valid], alpha=self.cfg.focal_alpha,
                                   gamma=self.cfg.focal_gamma)
        cls_loss = focal.sum() / num_pos
        if self.cfg.box_loss == "giou":
            pred = self.box_coder.decode(raw.deltas[pos], self.anchors.expand_as(raw.deltas)[pos])
            box_loss = giou_loss(pred, gt_boxes[pos]).sum() / num_pos
        else:
            target = self.box_coder.encode(gt_boxes, self.anchors)[pos]
            beta = self.cfg.smooth_l1_beta if self.cfg.box_loss == "smooth_l1" else 0.0
            box_loss = smooth_l1(raw.deltas[pos], target, beta=beta).sum() / num_pos
        total = cls_loss + self.cfg.box_loss_weight * box_loss
        return LossDict(total=total, terms={"cls": float(cls_loss.detach()), "box": float(box_loss.detach())})


@register("retinanet", options=lambda: dataclass_options(RetinaNetConfig, RETINANET_VARIANTS))
def build_retinanet(**config: Any) -> RetinaNet:
    """``build_model("retinanet", **config)``: see ``RetinaNetConfig`` / ``RETINANET_VARIANTS``."""
    return RetinaNet(**config)
