"""Darknet backbones for the YOLO family: Darknet-19 (YOLOv2), Darknet-53 (YOLOv3), the yolov3-tiny trunk.

Every convolution is ``Conv2d(bias=False) -> BatchNorm2d -> LeakyReLU(0.1)`` (batch norm everywhere, as in
YOLOv2/v3). Images go in as float32 [B, 3, H, W] with H and W multiples of 32; each backbone returns a
list of feature maps ordered from fine to coarse (stride 8/16/32) and lists their channel counts in
``out_channels`` and nominal strides in ``strides`` (the same contract as ``edge.models.backbones``).

``width`` multiplies every channel count (rounded to a multiple of 8, at least 8) and ``depth`` (Darknet-53
only) the number of residual blocks per stage (at least 1), so that small variants train on a CPU while
``width=1, depth=1`` gives the faithful layouts of the papers' tables.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

# Darknet-19 (YOLO9000 paper, table 6), without the classification head. Entries are
# (out_channels, kernel) for convolutions and "M" for a 2x2/2 max pool.
DARKNET19_LAYOUT: Tuple[object, ...] = (
    (32, 3), "M",
    (64, 3), "M",
    (128, 3), (64, 1), (128, 3), "M",
    (256, 3), (128, 1), (256, 3), "M",
    (512, 3), (256, 1), (512, 3), (256, 1), (512, 3),  # stride 16: the passthrough source
    "M",
    (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),  # stride 32
)

# Darknet-53 (YOLOv3 paper, table 1): residual blocks per stage at strides 2, 4, 8, 16, 32.
DARKNET53_BLOCKS: Tuple[int, int, int, int, int] = (1, 2, 8, 8, 4)


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Channel count ``channels * width`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``)."""
    if width <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return max(divisor, int(channels * width + divisor / 2) // divisor * divisor)


def scale_depth(blocks: int, depth: float) -> int:
    """Number of repeated blocks ``blocks * depth`` rounded, at least 1."""
    if depth <= 0:
        raise ValueError(f"depth multiplier must be > 0, got {depth}")
    return max(1, int(round(blocks * depth)))


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> LeakyReLU(0.1): [B,Cin,H,W] -> [B,Cout,H/s,W/s]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.03),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.out_channels = out_channels


class Residual(nn.Module):
    """Darknet-53 residual block: x + conv3x3(conv1x1(x)), the 1x1 halving the channels. Shape-preserving."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.reduce = ConvBNAct(channels, hidden, 1)
        self.expand = ConvBNAct(hidden, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.reduce(x))


class MaxPoolStride1(nn.Module):
    """Darknet's ``maxpool size=2 stride=1``: out[i, j] = max of x[i:i+2, j:j+2], borders ignored. Keeps H, W.

    Implemented as a padded 2x2 pool and a slice (plain MaxPool + Slice in ONNX, no edge-mode Pad).
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # padded output index k covers input rows k-1..k; we want rows i..i+1, i.e. k = i + 1
        return self.pool(x)[:, :, 1:, 1:]


class Darknet19(nn.Module):
    """Darknet-19 trunk (YOLOv2). forward: [B,3,H,W] -> [C4 [B,c4,H/16,W/16], C5 [B,c5,H/32,W/32]].

    With ``width=1``: c4 = 512 (the 13th convolution, source of YOLOv2's passthrough), c5 = 1024.
    """

    def __init__(self, *, width: float = 1.0):
        super().__init__()
        stem: List[nn.Module] = []  # up to the 13th convolution (stride 16)
        tail: List[nn.Module] = []  # the 5th pool and the stride-32 block
        layers = stem
        channels = 3
        pools = 0
        for entry in DARKNET19_LAYOUT:
            if entry == "M":
                pools += 1
                if pools == 5:
                    layers = tail
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out, kernel = entry  # type: ignore[misc]
            out = scale_channels(out, width)
            layers.append(ConvBNAct(channels, out, kernel))
            channels = out
        self.stage16 = nn.Sequential(*stem)
        self.stage32 = nn.Sequential(*tail)
        c4 = [m for m in stem if isinstance(m, ConvBNAct)][-1].out_channels
        c5 = [m for m in tail if isinstance(m, ConvBNAct)][-1].out_channels
        self.out_channels: List[int] = [c4, c5]
        self.strides: List[int] = [16, 32]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c4 = self.stage16(x)
        c5 = self.stage32(c4)
        return [c4, c5]


class Darknet53(nn.Module):
    """Darknet-53 trunk (YOLOv3). forward: [B,3,H,W] -> [C3 /8, C4 /16, C5 /32].

    Layout (paper's table 1): conv 32 3x3; then per stage a 3x3/2 downsampling convolution followed by
    ``blocks[i]`` residual blocks (1x1 to half the channels, 3x3 back), with 64, 128, 256, 512, 1024 output
    channels and (1, 2, 8, 8, 4) blocks. With ``width=1`` the outputs have 256, 512, 1024 channels.
    """

    def __init__(self, *, width: float = 1.0, depth: float = 1.0,
                 blocks: Sequence[int] = DARKNET53_BLOCKS):
        super().__init__()
        if len(blocks) != 5:
            raise ValueError(f"Darknet-53 needs 5 stage block counts, got {list(blocks)}")
        c = [scale_channels(n, width) for n in (32, 64, 128, 256, 512, 1024)]
        self.stem = ConvBNAct(3, c[0], 3)
        stages: List[nn.Sequential] = []
        for i, n in enumerate(blocks):
            cin, cout = c[i], c[i + 1]
            layers: List[nn.Module] = [ConvBNAct(cin, cout, 3, stride=2)]
            layers += [Residual(cout, cout // 2) for _ in range(scale_depth(n, depth))]
            stages.append(nn.Sequential(*layers))
        self.stage2, self.stage4, self.stage8, self.stage16, self.stage32 = stages
        self.out_channels: List[int] = [c[3], c[4], c[5]]
        self.strides: List[int] = [8, 16, 32]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stage4(self.stage2(self.stem(x)))
        c3 = self.stage8(x)
        c4 = self.stage16(c3)
        c5 = self.stage32(c4)
        return [c3, c4, c5]


class DarknetTiny(nn.Module):
    """The yolov3-tiny trunk. forward: [B,3,H,W] -> [C4 [B,c4,H/16,W/16], C5 [B,c5,H/32,W/32]].

    Layout (yolov3-tiny.cfg layers 0-12): conv 16, pool, conv 32, pool, conv 64, pool, conv 128, pool,
    conv 256 (C4), pool, conv 512, maxpool 2x2/1, conv 1024 (C5); all 3x3 convolutions, 2x2/2 pools.
    With ``width=1``: c4 = 256, c5 = 1024.
    """

    def __init__(self, *, width: float = 1.0):
        super().__init__()
        c = [scale_channels(n, width) for n in (16, 32, 64, 128, 256, 512, 1024)]
        stage16: List[nn.Module] = []
        cin = 3
        for i in range(5):
            if i > 0:
                stage16.append(nn.MaxPool2d(2, 2))
            stage16.append(ConvBNAct(cin, c[i], 3))
            cin = c[i]
        self.stage16 = nn.Sequential(*stage16)
        self.stage32 = nn.Sequential(
            nn.MaxPool2d(2, 2),
            ConvBNAct(c[4], c[5], 3),
            MaxPoolStride1(),
            ConvBNAct(c[5], c[6], 3),
        )
        self.out_channels: List[int] = [c[4], c[6]]
        self.strides: List[int] = [16, 32]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c4 = self.stage16(x)
        c5 = self.stage32(c4)
        return [c4, c5]
