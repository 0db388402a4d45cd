"""Training targets: the ground truth of one image as the detectors' losses take it.

Datasets (``edge.data.torch_dataset``) produce them, the detector families (``edge.models``) consume them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Target:
    """Ground truth of one image: boxes float32 [n, 4] x1,y1,x2,y2 input pixels; labels int64 [n]."""

    boxes: torch.Tensor
    labels: torch.Tensor
