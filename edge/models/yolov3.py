"""YOLOv3 (arch "yolov3") and yolov3-tiny (arch "yolov3-tiny").

YOLOv3 (Redmon & Farhadi, "YOLOv3: An Incremental Improvement"): Darknet-53, predictions at three scales
(stride 32, then 2x nearest upsampling and concatenation with the stride-16 map, then again with the
stride-8 map), each through the yolov3.cfg convolution set (1x1/3x3 alternating, five convolutions, then a
3x3 and the 1x1 prediction), 3 anchors per scale, objectness and independent sigmoid class scores.

yolov3-tiny (yolov3-tiny.cfg): the tiny trunk, two scales (stride 32 and, after upsampling and
concatenation with the stride-16 map, stride 16), 3 anchors each.

Anchors: per level (fine to coarse) lists of [w, h] in input pixels, or a flat list of k pairs that is
sorted by area and split evenly over the levels (smallest anchors to the finest level), e.g. the output of
``edge anchors -k 9`` (``-k 6`` for tiny).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

from edge.errors import ModelError
from edge.models.darknet import ConvBNAct, Darknet53, DarknetTiny, scale_channels
from edge.models.registry import register
from edge.models.yolov2 import (
    SizeLike,
    YoloDetector,
    check_anchor_list,
    load_anchor_file,
    scale_anchors,
    yolo_options,
)

# yolov3.cfg (COCO, pixels at 416), small to large: 3 per level for strides 8, 16, 32.
YOLOV3_ANCHORS_416: List[List[float]] = [
    [10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326],
]
# yolov3-tiny.cfg (COCO, pixels at 416), small to large: 3 per level for strides 16, 32.
YOLOV3_TINY_ANCHORS_416: List[List[float]] = [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]


def split_anchor_levels(anchors: Any, num_levels: int, what: str) -> List[List[List[float]]]:
    """Per-level anchors (fine to coarse) from per-level lists, a flat list split evenly by area, or the
    path of an ``edge anchors --out`` JSON (a flat list)."""
    anchors = load_anchor_file(anchors)
    if anchors and isinstance(anchors[0], (list, tuple)) and anchors[0] and isinstance(anchors[0][0], (list, tuple)):
        if len(anchors) != num_levels:
            raise ModelError(f"{what}: expected anchors for {num_levels} levels (fine to coarse), "
                             f"got {len(anchors)} levels")
        return [check_anchor_list(level, f"{what} level {i}") for i, level in enumerate(anchors)]
    flat = check_anchor_list(anchors, what)
    if len(flat) % num_levels:
        raise ModelError(f"{what}: {len(flat)} anchors cannot be split evenly over {num_levels} levels; "
                         f"give a multiple of {num_levels} (e.g. `edge anchors -k {3 * num_levels}`)")
    flat = sorted(flat, key=lambda a: a[0] * a[1])
    per = len(flat) // num_levels
    return [flat[i * per:(i + 1) * per] for i in range(num_levels)]


def conv_set(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    """yolov3.cfg's five-convolution block: 1x1 c_mid, 3x3 c_out, 1x1 c_mid, 3x3 c_out, 1x1 c_mid."""
    return nn.Sequential(
        ConvBNAct(c_in, c_mid, 1), ConvBNAct(c_mid, c_out, 3),
        ConvBNAct(c_out, c_mid, 1), ConvBNAct(c_mid, c_out, 3),
        ConvBNAct(c_out, c_mid, 1),
    )


class _YoloV3Base(YoloDetector):
    class_activation = "sigmoid"

    def _finish(self, anchor_levels: List[List[List[float]]], width: float, extra: Dict[str, Any]) -> None:
        self.config = {
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "anchors": anchor_levels,
            "width": float(width),
            "normalization": self.normalization.to_dict(),
            "loss": self.loss_config.to_dict(),
        }
        self.config.update(extra)


class YOLOv3(_YoloV3Base):
    """YOLOv3 on Darknet-53. Levels at strides 8, 16, 32; 3 anchors per level by default.

    Keyword arguments (the JSON model card's ``config``):
        num_classes: C.
        input_size: (H, W) nominal input, multiples of 32 (any multiple of 32 runs).
        anchors: per level [[w, h], ...] input pixels, a flat list of 3k pairs, or the path of an
            ``edge anchors --out`` JSON (default: yolov3.cfg's COCO anchors scaled from 416 to input_size).
        width: channel multiplier (1.0 = the paper); depth: residual-block multiplier (1.0 = 1,2,8,8,4).
        normalization: Normalization or its dict (default: pixels / 255).
        loss: ``YoloLossConfig`` options as a dict.
    """

    arch = "yolov3"

    def __init__(self, *, num_classes: int, input_size: SizeLike = (416, 416), anchors: Any = None,
                 width: float = 1.0, depth: float = 1.0, normalization: Any = None,
                 loss: Optional[Dict[str, Any]] = None):
        super().__init__(num_classes=num_classes, input_size=input_size, normalization=normalization, loss=loss)
        if not width > 0 or not depth > 0:
            raise ModelError(f"width and depth multipliers must be > 0, got width={width}, depth={depth}")
        if anchors is None:
            anchors = scale_anchors(YOLOV3_ANCHORS_416, (416, 416), self.input_size)
        levels = split_anchor_levels(anchors, 3, "yolov3 anchors")
        self._set_anchors(levels)
        no = 5 + self.num_classes

        self.backbone = Darknet53(width=width, depth=depth)
        c3, c4, c5 = self.backbone.out_channels
        ch = [scale_channels(n, width) for n in (128, 256, 512, 1024)]
        # stride 32
        self.set32 = conv_set(c5, ch[2], ch[3])
        self.out32 = ConvBNAct(ch[2], ch[3], 3)
        self.pred32 = nn.Conv2d(ch[3], len(levels[2]) * no, 1)
        # stride 16
        self.lateral32 = ConvBNAct(ch[2], ch[1], 1)
        self.set16 = conv_set(ch[1] + c4, ch[1], ch[2])
        self.out16 = ConvBNAct(ch[1], ch[2], 3)
        self.pred16 = nn.Conv2d(ch[2], len(levels[1]) * no, 1)
        # stride 8
        self.lateral16 = ConvBNAct(ch[1], ch[0], 1)
        self.set8 = conv_set(ch[0] + c3, ch[0], ch[1])
        self.out8 = ConvBNAct(ch[0], ch[1], 3)
        self.pred8 = nn.Conv2d(ch[1], len(levels[0]) * no, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        for conv, level, stride in ((self.pred8, 0, 8), (self.pred16, 1, 16), (self.pred32, 2, 32)):
            self._init_prediction_bias(conv, len(levels[level]), stride)
        self._finish(levels, width, {"depth": float(depth)})

    def level_strides(self) -> List[int]:
        return [8, 16, 32]

    def head_outputs(self, images: torch.Tensor) -> List[torch.Tensor]:
        c3, c4, c5 = self.backbone(images)
        x32 = self.set32(c5)
        p32 = self.pred32(self.out32(x32))
        x16 = self.set16(torch.cat([self.upsample(self.lateral32(x32)), c4], dim=1))
        p16 = self.pred16(self.out16(x16))
        x8 = self.set8(torch.cat([self.upsample(self.lateral16(x16)), c3], dim=1))
        p8 = self.pred8(self.out8(x8))
        return [p8, p16, p32]


class YOLOv3Tiny(_YoloV3Base):
    """yolov3-tiny. Levels at strides 16 and 32; 3 anchors per level by default.

    Keyword arguments as ``YOLOv3`` (no ``depth``); default anchors: yolov3-tiny.cfg's, scaled from 416.
    """

    arch = "yolov3-tiny"

    def __init__(self, *, num_classes: int, input_size: SizeLike = (416, 416), anchors: Any = None,
                 width: float = 1.0, normalization: Any = None, loss: Optional[Dict[str, Any]] = None):
        super().__init__(num_classes=num_classes, input_size=input_size, normalization=normalization, loss=loss)
        if not width > 0:
            raise ModelError(f"width multiplier must be > 0, got {width}")
        if anchors is None:
            anchors = scale_anchors(YOLOV3_TINY_ANCHORS_416, (416, 416), self.input_size)
        levels = split_anchor_levels(anchors, 2, "yolov3-tiny anchors")
        self._set_anchors(levels)
        no = 5 + self.num_classes

        self.backbone = DarknetTiny(width=width)
        c4, c5 = self.backbone.out_channels
        ch = [scale_channels(n, width) for n in (128, 256, 512)]
        self.neck32 = ConvBNAct(c5, ch[1], 1)
        self.out32 = ConvBNAct(ch[1], ch[2], 3)
        self.pred32 = nn.Conv2d(ch[2], len(levels[1]) * no, 1)
        self.lateral32 = ConvBNAct(ch[1], ch[0], 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.out16 = ConvBNAct(ch[0] + c4, ch[1], 3)
        self.pred16 = nn.Conv2d(ch[1], len(levels[0]) * no, 1)
        for conv, level, stride in ((self.pred16, 0, 16), (self.pred32, 1, 32)):
            self._init_prediction_bias(conv, len(levels[level]), stride)
        self._finish(levels, width, {})

    def level_strides(self) -> List[int]:
        return [16, 32]

    def head_outputs(self, images: torch.Tensor) -> List[torch.Tensor]:
        c4, c5 = self.backbone(images)
        x32 = self.neck32(c5)
        p32 = self.pred32(self.out32(x32))
        p16 = self.pred16(self.out16(torch.cat([self.upsample(self.lateral32(x32)), c4], dim=1)))
        return [p16, p32]


@register("yolov3", options=lambda: yolo_options(YOLOv3))
def build_yolov3(**config: Any) -> YOLOv3:
    """``build_model("yolov3", **config)``: see ``YOLOv3`` for the keyword arguments."""
    return YOLOv3(**config)


@register("yolov3-tiny", options=lambda: yolo_options(YOLOv3Tiny))
def build_yolov3_tiny(**config: Any) -> YOLOv3Tiny:
    """``build_model("yolov3-tiny", **config)``: see ``YOLOv3Tiny`` for the keyword arguments."""
    return YOLOv3Tiny(**config)
