"""YOLOv2 (arch "yolov2") and the parts every YOLO detector shares (``YoloDetector``, ``Reorg``).

YOLOv2 (Redmon & Farhadi, "YOLO9000"): Darknet-19 with batch norm everywhere, two 3x3 convolutions on the
stride-32 map, the passthrough layer (a 1x1 convolution on the stride-16 map, then ``Reorg``: space to
depth, 2H x 2W x D -> H x W x 4D) concatenated with the coarse map, a 3x3 convolution and a 1x1 prediction
of A x (5 + C) values per cell: sigmoid-bounded offsets in the cell, log-scale size relative to the
anchor prior, objectness, and C class logits turned into probabilities with a softmax.

Anchors are given in input pixels (``edge anchors`` computes them by k-means on a dataset) and stay fixed
in pixels when the input size changes, so multi-scale training (any multiple of 32) works unchanged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from edge.data.targets import Target
from edge.errors import ModelError
from edge.models.base import Detections, Detector, LossDict, as_input_size, as_normalization
from edge.models.darknet import ConvBNAct, Darknet19, scale_channels
from edge.models.options import signature_options
from edge.models.registry import register
from edge.models.yolo_loss import YoloLossConfig, YoloRaw, decode_level_boxes, yolo_loss

# YOLOv2's VOC anchors (yolo-voc.cfg, in 13x13 grid cells of a 416 input) converted to pixels at 416.
YOLOV2_ANCHORS_416: List[List[float]] = [
    [w * 32.0, h * 32.0]
    for w, h in ((1.3221, 1.73145), (3.19275, 4.00944), (5.05587, 8.09892), (9.47112, 4.84053),
                 (11.2364, 10.0071))
]

SizeLike = Union[int, Sequence[int]]


def scale_anchors(anchors: Sequence[Sequence[float]], from_size: Tuple[int, int],
                  to_size: Tuple[int, int]) -> List[List[float]]:
    """Anchor (w, h) pairs in pixels of a ``from_size`` (H, W) input -> pixels of a ``to_size`` input."""
    sy = to_size[0] / float(from_size[0])
    sx = to_size[1] / float(from_size[1])
    return [[float(w) * sx, float(h) * sy] for w, h in anchors]


def load_anchor_file(anchors: Any) -> Any:
    """A path (str) to an ``edge anchors --out`` JSON -> its ``anchors`` list; anything else unchanged.

    The numbers, not the path, end up in the model config, so the model card stays self-contained.
    """
    if not isinstance(anchors, str):
        return anchors
    path = Path(anchors)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"anchors file {path}: cannot read it as JSON ({exc}); expected the --out file of "
                         f"`edge anchors` or a list of [w, h] pairs") from None
    if isinstance(data, dict):
        if "anchors" not in data:
            raise ModelError(f"anchors file {path} has keys {sorted(data)}, expected an 'anchors' list")
        data = data["anchors"]
    return data


def check_anchor_list(anchors: Any, what: str) -> List[List[float]]:
    """A list of (w, h) pairs, positive and finite -> list of [w, h] floats, else ModelError."""
    try:
        pairs = [[float(a[0]), float(a[1])] for a in anchors]
        ok = all(len(a) == 2 for a in anchors)
    except (TypeError, IndexError, ValueError) as exc:
        raise ModelError(f"{what}: expected a list of [w, h] pairs in input pixels, got {anchors!r}") from exc
    if not ok or not pairs or any(not (math.isfinite(v) and v > 0) for p in pairs for v in p):
        raise ModelError(f"{what}: expected a non-empty list of positive [w, h] pairs in input pixels, "
                         f"got {anchors!r}")
    return pairs


def _tracing() -> bool:
    """True while torch.jit.trace / torch.onnx.export records the model (skip Python-side shape checks)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


class Reorg(nn.Module):
    """YOLOv2's passthrough "reorg": space to depth with block ``stride`` s.

    [B, D, s*H, s*W] -> [B, s*s*D, H, W] with out[:, (dy*s + dx)*D + c, i, j] = x[:, c, s*i + dy, s*j + dx],
    the channel order of ONNX ``SpaceToDepth`` (and TensorFlow's space_to_depth). Exported as
    Reshape/Transpose/Reshape with a free batch dimension. (Darknet's own reorg kernel permutes channels
    differently; that matters only for loading darknet weights, which this project does not do.)
    """

    def __init__(self, stride: int = 2):
        super().__init__()
        if stride < 1:
            raise ValueError(f"reorg stride must be >= 1, got {stride}")
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = x.shape
        s = self.stride
        if not _tracing() and (height % s or width % s):
            raise ModelError(f"reorg: feature map {height}x{width} is not divisible by its stride {s}")
        x = x.reshape(-1, channels, height // s, s, width // s, s)  # [B, D, H, dy, W, dx]
        x = x.permute(0, 3, 5, 1, 2, 4)  # [B, dy, dx, D, H, W]
        return x.reshape(-1, s * s * channels, height // s, width // s)


class YoloDetector(Detector):
    """What YOLOv2 and YOLOv3 share: raw map layout, anchors, decode, loss, model card.

    Subclasses build their network, call ``_set_anchors`` and implement ``head_outputs(images)`` returning
    per level (fine to coarse) the prediction convolution's output [B, A_l * (5 + C), H_l, W_l].
    """

    class_activation: str = "sigmoid"  # "sigmoid" (YOLOv3) or "softmax" (YOLOv2)
    max_stride: int = 32

    def __init__(self, *, num_classes: int, input_size: SizeLike, normalization: Any,
                 loss: Optional[Dict[str, Any]]):
        if int(num_classes) < 1:
            raise ModelError(f"num_classes must be >= 1, got {num_classes}")
        super().__init__(num_classes=int(num_classes), input_size=as_input_size(input_size, self.max_stride),
                         normalization=as_normalization(normalization))
        try:
            self.loss_config = YoloLossConfig.from_dict(loss)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"invalid YOLO loss options: {exc}") from exc
        self.num_levels = 0
        self.anchor_counts: List[int] = []

    # ----------------------------------------------------------------------------------------- anchors
    def _set_anchors(self, levels: List[List[List[float]]]) -> None:
        self.num_levels = len(levels)
        self.anchor_counts: List[int] = [len(level) for level in levels]
        for i, level in enumerate(levels):
            # not persistent: the config (model card) is the one source of the anchors
            self.register_buffer(f"anchors_{i}", torch.tensor(level, dtype=torch.float32), persistent=False)

    def level_anchors(self) -> List[torch.Tensor]:
        """Per level [A_l, 2] anchor (w, h) in input pixels, fine to coarse."""
        return [getattr(self, f"anchors_{i}") for i in range(self.num_levels)]

    def anchors_for_card(self) -> List[Any]:
        """Per level {"stride", "anchors": [[w, h], ...] input pixels} at the nominal strides."""
        strides = self.level_strides()
        return [{"stride": s, "anchors": [[float(v) for v in a] for a in anchors.tolist()]}
                for s, anchors in zip(strides, self.level_anchors())]

    def level_strides(self) -> List[int]:
        raise NotImplementedError

    def num_predictions(self, input_size: Optional[Tuple[int, int]] = None) -> int:
        """N of decode's [B, N, 4] for an (H, W) input (default: the model's input size)."""
        height, width = input_size or self.input_size
        return sum(a.shape[0] * (height // s) * (width // s)
                   for a, s in zip(self.level_anchors(), self.level_strides()))

    # ----------------------------------------------------------------------------------------- network
    def head_outputs(self, images: torch.Tensor) -> List[torch.Tensor]:
        raise NotImplementedError

    def _init_prediction_bias(self, conv: nn.Conv2d, num_anchors: int, stride: int) -> None:
        """Objectness prior ~8 objects per image at the nominal input size; class prior for sigmoid heads."""
        cells = max(1, (self.input_size[0] // stride) * (self.input_size[1] // stride))
        p_obj = min(0.5, 8.0 / cells)
        assert conv.bias is not None
        with torch.no_grad():
            bias = conv.bias.view(num_anchors, 5 + self.num_classes)
            bias.zero_()
            bias[:, 4] = math.log(p_obj / (1.0 - p_obj))
            if self.class_activation == "sigmoid":
                bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))

    def forward_raw(self, images: torch.Tensor) -> YoloRaw:
        """images float32 [B, 3, H, W] (H, W multiples of 32) -> ``YoloRaw`` (maps [B, A, H/s, W/s, 5 + C]).

        Strides are the nominal ones (exact for inputs that are multiples of 32); no Python value is
        derived from traced shapes, so an export can keep batch (and H/W) dynamic.
        """
        if not _tracing():
            if images.dim() != 4 or images.shape[1] != 3:
                raise ModelError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
            if images.shape[2] % self.max_stride or images.shape[3] % self.max_stride:
                raise ModelError(
                    f"input {images.shape[2]}x{images.shape[3]} is not a multiple of {self.max_stride} in H and "
                    f"W; letterbox or resize to a multiple of {self.max_stride}")
        outputs = self.head_outputs(images)
        no = 5 + self.num_classes
        maps = [out.reshape(-1, count, no, out.shape[2], out.shape[3]).permute(0, 1, 3, 4, 2)
                for out, count in zip(outputs, self.anchor_counts)]
        strides = [(float(s), float(s)) for s in self.level_strides()]
        return YoloRaw(maps=maps, anchors=self.level_anchors(), strides=strides,
                       image_size=(images.shape[2], images.shape[3]))

    def decode(self, raw: YoloRaw) -> Detections:
        """Raw maps -> boxes [B, N, 4] xyxy input pixels (not clipped) and scores [B, N, C].

        N = sum over levels of A_l * H_l * W_l, ordered level by level (fine to coarse), then anchor, row,
        column. scores = sigmoid(objectness) * class probability (softmax for YOLOv2, sigmoid for YOLOv3).
        """
        boxes: List[torch.Tensor] = []
        scores: List[torch.Tensor] = []
        for pred, anchors, stride in zip(raw.maps, raw.anchors, raw.strides):
            boxes.append(decode_level_boxes(pred, anchors, stride).flatten(1, 3))
            obj = torch.sigmoid(pred[..., 4:5])
            logits = pred[..., 5:]
            if self.class_activation == "softmax":
                probs = torch.softmax(logits, dim=-1)
            else:
                probs = torch.sigmoid(logits)
            scores.append((obj * probs).flatten(1, 3))
        return Detections(boxes=torch.cat(boxes, dim=1), scores=torch.cat(scores, dim=1))

    def compute_loss(self, raw: YoloRaw, targets: Sequence[Target]) -> LossDict:
        """Loss terms "box", "obj", "cls" (see ``edge.models.yolo_loss``); targets xyxy input pixels."""
        return yolo_loss(raw, targets, num_classes=self.num_classes, class_activation=self.class_activation,
                         config=self.loss_config)


class YOLOv2(YoloDetector):
    """YOLOv2 on Darknet-19 with the passthrough layer. One prediction level at stride 32.

    Keyword arguments (the JSON model card's ``config``):
        num_classes: C.
        input_size: (H, W) nominal input, multiples of 32 (any multiple of 32 runs).
        anchors: [[w, h], ...] in input pixels, or the path of an ``edge anchors --out`` JSON (default:
            YOLOv2's 5 VOC anchors scaled to input_size).
        width: channel multiplier for backbone and head (1.0 = the paper's layout).
        normalization: Normalization or its dict (default: pixels / 255).
        loss: ``YoloLossConfig`` options as a dict.
    """

    arch = "yolov2"
    class_activation = "softmax"

    def __init__(self, *, num_classes: int, input_size: SizeLike = (416, 416),
                 anchors: Any = None, width: float = 1.0,
                 normalization: Any = None, loss: Optional[Dict[str, Any]] = None):
        super().__init__(num_classes=num_classes, input_size=input_size, normalization=normalization, loss=loss)
        if not width > 0:
            raise ModelError(f"width multiplier must be > 0, got {width}")
        if anchors is None:
            anchor_list = scale_anchors(YOLOV2_ANCHORS_416, (416, 416), self.input_size)
        else:
            anchor_list = check_anchor_list(load_anchor_file(anchors), "yolov2 anchors")
        self._set_anchors([anchor_list])
        num_anchors = len(anchor_list)

        self.backbone = Darknet19(width=width)
        c4, c5 = self.backbone.out_channels
        c_head = scale_channels(1024, width)
        c_pass = scale_channels(64, width)
        self.head = nn.Sequential(ConvBNAct(c5, c_head, 3), ConvBNAct(c_head, c_head, 3))
        self.passthrough = nn.Sequential(ConvBNAct(c4, c_pass, 1), Reorg(2))
        self.fuse = ConvBNAct(4 * c_pass + c_head, c_head, 3)
        self.pred = nn.Conv2d(c_head, num_anchors * (5 + self.num_classes), 1)
        self._init_prediction_bias(self.pred, num_anchors, 32)

        self.config = {
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "anchors": anchor_list,
            "width": float(width),
            "normalization": self.normalization.to_dict(),
            "loss": self.loss_config.to_dict(),
        }

    def level_strides(self) -> List[int]:
        return [32]

    def head_outputs(self, images: torch.Tensor) -> List[torch.Tensor]:
        c4, c5 = self.backbone(images)
        x = torch.cat([self.passthrough(c4), self.head(c5)], dim=1)  # darknet's route -1,-4 order
        return [self.pred(self.fuse(x))]


def yolo_options(cls: Any) -> List[Any]:
    """The ``--model-arg`` options of a YOLO family: its class's keyword arguments, ``loss`` keyed by
    ``YoloLossConfig``'s fields (``edge.models.options``)."""
    return signature_options(cls, {"loss": YoloLossConfig().to_dict()}, {
        "anchors": "null: the built-in 416-px anchors scaled to --imgsz; or [[w, h], ...] in input pixels, or "
                   "@FILE.json from `edge anchors`", "normalization": "null: the family's own"})


@register("yolov2", options=lambda: yolo_options(YOLOv2))
def build_yolov2(**config: Any) -> YOLOv2:
    """``build_model("yolov2", **config)``: see ``YOLOv2`` for the keyword arguments."""
    return YOLOv2(**config)
