"""What SSD and RetinaNet share: a fixed set of anchors for one input size, decoded by center-size coding.

Subclasses set ``self.anchors`` (buffer [N, 4] cxcywh input pixels), ``self.anchor_levels``,
``self.box_coder`` and ``self.cfg`` (with ``clip_boxes``), and ``first_level`` (the level number of their
first feature map on the model card: SSD counts maps from 0, RetinaNet names FPN levels P3...).
"""

from __future__ import annotations

from typing import Any, List

import torch

from .base import Detector
from .ops import clip_boxes


class AnchorDetector(Detector):
    first_level: int = 0

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[0])

    def decode_boxes(self, deltas: torch.Tensor) -> torch.Tensor:
        """Encoded offsets [B, N, 4] -> boxes [B, N, 4] xyxy input pixels, clipped to the input when the
        config asks. Elementwise ops only: exportable to ONNX with a free batch dimension."""
        boxes = self.box_coder.decode(deltas, self.anchors)
        if self.cfg.clip_boxes:
            boxes = clip_boxes(boxes, float(self.input_size[1]), float(self.input_size[0]))
        return boxes

    def anchors_for_card(self) -> List[Any]:
        """Per level: feature size, stride, offset 0.5 and the anchors' (w, h) in input pixels, plus the box
        coding (center-size, variances) needed to decode raw offsets outside PyTorch."""
        return [dict(lv.to_dict(), level=i + self.first_level, format="cxcywh_pixels", coding="center_size",
                     variances=list(self.box_coder.variances)) for i, lv in enumerate(self.anchor_levels)]
