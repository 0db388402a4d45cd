"""Feature Pyramid Network (Lin et al. 2017) as used by RetinaNet: P3-P5 from C3-C5, P6-P7 by strided convs.

Input: [C3, C4, C5] backbone maps (strides 8, 16, 32). Output: [P3, ..., P7] (strides 8 .. 128), each with
``out_channels`` channels. Bottom-up is the backbone; top-down upsamples (nearest, to the lateral's exact
size, so odd sizes work) and adds 1x1 lateral projections; a 3x3 conv smooths each merged map.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError


class FPN(nn.Module):
    """P3-P(2+num_levels) pyramid over [C3, C4, C5].

    Args:
        in_channels: channels of C3, C4, C5.
        out_channels: channels of every pyramid level (256 in the paper; 64-128 for CPU-sized models).
        num_levels: 3 (P3-P5), 4 (to P6) or 5 (to P7, RetinaNet's default).
        p6_from: "c5" (RetinaNet paper: P6 = conv3x3/s2 on C5) or "p5" (on P5, as in FCOS/torchvision).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, *, num_levels: int = 5,
                 p6_from: str = "c5"):
        super().__init__()
        if len(in_channels) != 3:
            raise ModelError(f"FPN expects 3 input maps (C3, C4, C5), got {len(in_channels)} channel counts")
        if num_levels not in (3, 4, 5):
            raise ModelError(f"FPN num_levels must be 3, 4 or 5 (P3-P5 .. P3-P7), got {num_levels}")
        if p6_from not in ("c5", "p5"):
            raise ModelError(f"FPN p6_from must be 'c5' or 'p5', got {p6_from!r}")
        self.num_levels = num_levels
        self.p6_from = p6_from
        self.lateral = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in in_channels])
        self.output = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels])
        extra: List[nn.Module] = []
        for i in range(num_levels - 3):
            cin = in_channels[-1] if (i == 0 and p6_from == "c5") else out_channels
            extra.append(nn.Conv2d(cin, out_channels, 3, stride=2, padding=1))
        self.extra = nn.ModuleList(extra)
        self.out_channels = [out_channels] * num_levels
        self.strides = [8 * 2**i for i in range(num_levels)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        c3, c4, c5 = feats
        lat = [conv(c) for conv, c in zip(self.lateral, (c3, c4, c5))]
        merged = [lat[2]]
        for i in (1, 0):  # top-down: P5 -> P4 -> P3
            up = F.interpolate(merged[0], size=lat[i].shape[-2:], mode="nearest")
            merged.insert(0, lat[i] + up)
        outs = [conv(m) for conv, m in zip(self.output, merged)]
        if self.extra:
            x = c5 if self.p6_from == "c5" else outs[-1]
            for i, conv in enumerate(self.extra):
                if i > 0:
                    x = F.relu(x)  # P7 = conv(ReLU(P6))
                x = conv(x)
                outs.append(x)
        return outs
