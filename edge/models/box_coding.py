"""Center-size box coding of boxes relative to anchors, with variances (SSD) or unit weights (RetinaNet).

With an anchor (acx, acy, aw, ah) and a box (cx, cy, w, h), the encoded offsets are

    tx = (cx - acx) / aw / v0      ty = (cy - acy) / ah / v1
    tw = log(w / aw) / v2          th = log(h / ah) / v3

``variances`` v: SSD uses (0.1, 0.1, 0.2, 0.2); RetinaNet (1, 1, 1, 1). Faster R-CNN style ``weights``
are their reciprocals (``BoxCoder.from_weights``). Decoding clamps tw, th at log(1000/16) before exp so an
untrained head cannot overflow. Units of boxes and anchors are the caller's (here: input pixels).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch

from ..errors import ModelError
from .ops import cxcywh_to_xyxy, xyxy_to_cxcywh

_MAX_LOG_RATIO = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes xyxy boxes into [..., 4] center-size offsets against cxcywh anchors, and back.

    Broadcasting: ``anchors`` [N, 4] (cx, cy, w, h) against boxes / deltas [..., N, 4].
    """

    def __init__(self, variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2)):
        v = tuple(float(x) for x in variances)
        if len(v) != 4 or min(v) <= 0:
            raise ModelError(f"box coder variances must be 4 positive numbers, got {list(variances)}")
        self.variances: Tuple[float, float, float, float] = v  # type: ignore[assignment]

    @classmethod
    def from_weights(cls, weights: Sequence[float]) -> BoxCoder:
        """Faster R-CNN style weights (wx, wy, ww, wh): offsets multiplied by them = divided by 1/w."""
        return cls([1.0 / float(w) for w in weights])

    def encode(self, boxes_xyxy: torch.Tensor, anchors_cxcywh: torch.Tensor) -> torch.Tensor:
        """Boxes [..., N, 4] xyxy + anchors [N, 4] cxcywh (same units) -> offsets [..., N, 4]."""
        cx, cy, w, h = xyxy_to_cxcywh(boxes_xyxy).unbind(-1)
        w, h = w.clamp(min=1e-6), h.clamp(min=1e-6)
        acx, acy, aw, ah = anchors_cxcywh.unbind(-1)
        v0, v1, v2, v3 = self.variances
        return torch.stack(
            [(cx - acx) / aw / v0, (cy - acy) / ah / v1, torch.log(w / aw) / v2, torch.log(h / ah) / v3],
            dim=-1,
        )

    def decode(self, deltas: torch.Tensor, anchors_cxcywh: torch.Tensor) -> torch.Tensor:
        """Offsets [..., N, 4] + anchors [N, 4] cxcywh -> boxes [..., N, 4] xyxy (anchor units).

        ONNX-exportable (elementwise ops only, no data-dependent shapes).
        """
        v0, v1, v2, v3 = self.variances
        acx, acy, aw, ah = anchors_cxcywh.unbind(-1)
        dx, dy, dw, dh = deltas.unbind(-1)
        cx = dx * v0 * aw + acx
        cy = dy * v1 * ah + acy
        w = torch.exp((dw * v2).clamp(max=_MAX_LOG_RATIO)) * aw
        h = torch.exp((dh * v3).clamp(max=_MAX_LOG_RATIO)) * ah
        return cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1))
