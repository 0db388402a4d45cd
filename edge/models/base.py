"""The interface every detector family implements, so training, export and evaluation treat them alike.

Conventions:
    images: float32 [B, 3, H, W], RGB, already normalized with the model's ``normalization``
        (the export stage folds that normalization into the ONNX graph on request).
    targets: one ``Target`` per image, boxes x1,y1,x2,y2 in *input* pixels (after letterbox/augment).
    decoded output: ``Detections`` with boxes [B, N, 4] x1,y1,x2,y2 in input pixels and per-class
        scores [B, N, C] (activations applied, no background column): exactly the two tensors the
        ONNX export puts in the graph before NMS.

Training-mode and inference-mode outputs are separate, typed methods (no ``forward`` whose return type
depends on ``self.training``): ``forward_raw`` -> family-specific head outputs, ``compute_loss`` ->
``LossDict``, ``decode`` -> ``Detections``. ``forward`` is ``decode(forward_raw(x))`` for export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from edge.data.targets import Target
from edge.errors import ModelError


@dataclass
class Detections:
    """Pre-NMS decoded predictions: boxes [B, N, 4] xyxy input pixels, scores [B, N, C] in [0, 1]."""

    boxes: torch.Tensor
    scores: torch.Tensor


@dataclass
class LossDict:
    """``total`` is what backpropagates; ``terms`` are detached scalars for logging (name -> value)."""

    total: torch.Tensor
    terms: Dict[str, float] = field(default_factory=dict)


@dataclass
class Normalization:
    """Input normalization applied to RGB pixels in [0, 255]: (pixel / scale - mean) / std, per channel."""

    scale: float = 255.0
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_dict(self) -> Dict[str, Any]:
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std), "channel_order": "RGB"}


# ImageNet statistics on pixels / 255 (SSD and RetinaNet backbones); YOLO uses plain pixels / 255.
IMAGENET_NORMALIZATION = {"scale": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def as_normalization(value: Union[None, Normalization, Dict[str, Any]],
                     default: Optional[Dict[str, Any]] = None) -> Normalization:
    """None (``default``, else pixels / 255), a ``Normalization``, or its ``to_dict()`` form -> Normalization."""
    if value is None:
        value = default if default is not None else {}
    if isinstance(value, Normalization):
        return value
    data = dict(value)
    order = data.pop("channel_order", "RGB")
    if order != "RGB":
        raise ModelError(f"normalization channel_order {order!r} is not supported; models take RGB input")
    mean = [float(v) for v in data.get("mean", (0.0, 0.0, 0.0))]
    std = [float(v) for v in data.get("std", (1.0, 1.0, 1.0))]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ModelError(f"normalization needs 3 means and 3 positive stds, got mean={mean} std={std}")
    return Normalization(scale=float(data.get("scale", 255.0)), mean=(mean[0], mean[1], mean[2]),
                         std=(std[0], std[1], std[2]))


def as_input_size(value: Union[int, Sequence[int]], multiple: int = 1) -> Tuple[int, int]:
    """An int S or (H, W) -> (H, W), both positive multiples of ``multiple`` (a YOLO's largest stride)."""
    if isinstance(value, int):
        size = (value, value)
    else:
        seq = [int(v) for v in value]
        if len(seq) != 2:
            raise ModelError(f"input_size must be an int or (H, W), got {value!r}")
        size = (seq[0], seq[1])
    if size[0] <= 0 or size[1] <= 0:
        raise ModelError(f"input_size must be positive, got {size}")
    if size[0] % multiple or size[1] % multiple:
        raise ModelError(
            f"input_size {size[0]}x{size[1]} is not a positive multiple of {multiple} in both H and W; "
            f"this model needs H and W divisible by its largest stride ({multiple}), e.g. 320x320"
        )
    return size


def check_input_size(images: torch.Tensor, input_size: Tuple[int, int], arch: str) -> None:
    """Anchors computed for one input size: refuse images of another (skipped while tracing)."""
    if torch.jit.is_tracing():
        return
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != tuple(input_size):
        raise ModelError(f"{arch} model built for input {input_size[0]}x{input_size[1]} got images of shape "
                         f"{tuple(images.shape)}; expected [B, 3, {input_size[0]}, {input_size[1]}] (rebuild the "
                         "model with input_size=[H, W] for another resolution: the weights load unchanged)")


def target_tensors(t: Target, num_classes: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Target -> (boxes float32 [n, 4] xyxy, labels int64 [n]) without degenerate boxes; checks labels."""
    boxes = torch.as_tensor(t.boxes, dtype=torch.float32, device=device).reshape(-1, 4)
    labels = torch.as_tensor(t.labels, dtype=torch.int64, device=device).reshape(-1)
    if boxes.shape[0] != labels.shape[0]:
        raise ModelError(f"target has {boxes.shape[0]} boxes but {labels.shape[0]} labels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ModelError(f"target labels must be 0-based class indices in [0, {num_classes - 1}], got "
                         f"{labels.min().item()}..{labels.max().item()}")
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


class Detector(nn.Module):
    """Base class of every detector (SSD, YOLOv2, YOLOv3, RetinaNet).

    Subclasses set ``arch`` (registry name) and keep the keyword arguments they were built with in
    ``self.config`` (JSON-serializable), so that ``edge.models.build_model(arch, **config)`` rebuilds
    the same architecture from a checkpoint's model card alone.
    """

    arch: str = ""

    def __init__(self, *, num_classes: int, input_size: Tuple[int, int], normalization: Normalization):
        super().__init__()
        self.num_classes = int(num_classes)
        self.input_size = (int(input_size[0]), int(input_size[1]))  # (H, W)
        self.normalization = normalization
        self.config: Dict[str, Any] = {}

    def forward_raw(self, images: torch.Tensor) -> Any:
        """Run backbone, neck and head; return the family's raw head outputs (a typed dataclass)."""
        raise NotImplementedError

    def compute_loss(self, raw: Any, targets: Sequence[Target]) -> LossDict:
        """Training loss of raw head outputs against per-image targets."""
        raise NotImplementedError

    def decode(self, raw: Any) -> Detections:
        """Raw head outputs -> boxes [B,N,4] xyxy input pixels and scores [B,N,C]. Export traces this."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inference: (boxes [B,N,4] xyxy input pixels, scores [B,N,C]). What ``edge export`` traces."""
        det = self.decode(self.forward_raw(images))
        return det.boxes, det.scores

    def anchors_for_card(self) -> List[Any]:
        """Anchor/prior description for the model card (JSON-serializable); [] when not applicable."""
        return []
