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
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn


@dataclass
class Target:
    """Ground truth of one image: boxes float32 [n, 4] x1,y1,x2,y2 input pixels; labels int64 [n]."""

    boxes: torch.Tensor
    labels: torch.Tensor


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
