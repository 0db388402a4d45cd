"""Convolutional backbones built from scratch (no torchvision): VGG16 (SSD flavour), a MobileNetV1-style
depthwise-separable network with a width multiplier, and ResNet 18/34/50.

Every backbone maps images float32 [B, 3, H, W] to a list of feature maps of increasing stride and
exposes, for the necks and heads built on top of it:

    out_channels: List[int]  channels of each returned map
    strides: List[int]       nominal stride of each returned map relative to the input (8, 16, 32, ...)

``build_backbone(name, width=...)`` is the one constructor the detectors use; ``BACKBONES`` lists names.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

log = logging.getLogger(__name__)


def _scaled(channels: int, width: float, minimum: int = 8) -> int:
    """Channel count times a width multiplier, rounded to a multiple of 8 (at least ``minimum``)."""
    return max(minimum, int(channels * width + 4) // 8 * 8)


def conv_bn_relu(cin: int, cout: int, k: int = 3, s: int = 1, p: int = -1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU; padding defaults to ``k // 2`` (same size at stride 1)."""
    pad = k // 2 if p < 0 else p
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Backbone(nn.Module):
    """Base class: ``forward(x [B,3,H,W]) -> List[Tensor]`` with ``out_channels`` and ``strides``."""

    def __init__(self) -> None:
        super().__init__()
        self.out_channels: List[int] = []
        self.strides: List[int] = []


class L2Norm(nn.Module):
    """SSD's channel-wise L2 normalization with a learned per-channel scale (init 20) for conv4_3.

    x [B, C, H, W] -> x / ||x||_2 (over C) * weight[C].
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


class VGG16(Backbone):
    """VGG16 as modified by SSD300: ceil-mode pool3, pool5 3x3/s1, dilated conv6 (fc6) and 1x1 conv7 (fc7).

    Returns [conv4_3 (L2-normalized, 512*w ch, stride 8), fc7 (1024*w ch, stride 16)].
    ``batch_norm`` adds BN after every conv (the paper's VGG has none; BN helps training from scratch).
    """

    _CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512]

    def __init__(self, width: float = 1.0, batch_norm: bool = False, l2norm: bool = True):
        super().__init__()
        layers: List[nn.Module] = []
        cin = 3
        for v in self._CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            elif v == "C":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                cout = _scaled(int(v), width)
                layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(cout))
                layers.append(nn.ReLU(inplace=True))
                cin = cout
        self.stage1 = nn.Sequential(*layers)  # up to conv4_3 + ReLU, stride 8
        c4 = cin
        layers = [nn.MaxPool2d(2, 2)]
        for _ in range(3):  # conv5_1..conv5_3
            layers.append(nn.Conv2d(cin, c4, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c4))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.MaxPool2d(3, 1, 1))  # pool5
        c7 = _scaled(1024, width)
        layers += [
            nn.Conv2d(c4, c7, 3, padding=6, dilation=6),  # fc6 as dilated conv
            nn.ReLU(inplace=True),
            nn.Conv2d(c7, c7, 1),  # fc7
            nn.ReLU(inplace=True),
        ]
        self.stage2 = nn.Sequential(*layers)  # stride 16
        self.l2norm = L2Norm(c4) if l2norm else nn.Identity()
        self.out_channels = [c4, c7]
        self.strides = [8, 16]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c4 = self.stage1(x)
        c7 = self.stage2(c4)
        return [self.l2norm(c4), c7]


def _depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv (stride s) + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class MobileNetV1(Backbone):
    """MobileNetV1 layout of depthwise-separable blocks with a width multiplier.

    Returns [stride 8 (256*w ch), stride 16 (512*w ch), stride 32 (1024*w ch)].
    """

    # (out channels, stride) of each depthwise-separable block after the 3x3/s2 stem of 32 channels
    _BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    _TAPS = (4, 10, 12)  # block indices whose outputs are returned (strides 8, 16, 32)

    def __init__(self, width: float = 1.0):
        super().__init__()
        cin = _scaled(32, width)
        self.stem = conv_bn_relu(3, cin, 3, 2)
        blocks: List[nn.Module] = []
        for cout, stride in self._BLOCKS:
            cout = _scaled(cout, width)
            blocks.append(_depthwise_separable(cin, cout, stride))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = [_scaled(self._BLOCKS[i][0], width) for i in self._TAPS]
        self.strides = [8, 16, 32]
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(x)
        outs: List[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._TAPS:
                outs.append(x)
        return outs


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs, identity or 1x1/s projection shortcut."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3 (stride here, as in ResNet v1.5), 1x1 expand x4."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x), inplace=True)


def _projection(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(Backbone):
    """ResNet (He et al. 2016): 7x7/s2 stem, 3x3/s2 max pool, four stages of blocks.

    Returns [C3 (stride 8), C4 (stride 16), C5 (stride 32)] with channels (128, 256, 512) * w * expansion.
    The last BN of every residual branch starts at zero ("zero-init residual"), which helps from scratch.
    """

    def __init__(self, block: type, layers: Sequence[int], width: float = 1.0):
        super().__init__()
        base = [_scaled(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, base[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(base[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        cin = base[0]
        stages: List[nn.Module] = []
        for i, (planes, n) in enumerate(zip(base, layers)):
            blocks: List[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, planes, stride))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = [c * block.expansion for c in base[1:]]
        self.strides = [8, 16, 32]
        _init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


def _init_conv_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


BACKBONES: Dict[str, Callable[..., Backbone]] = {
    "vgg16": lambda width=1.0: VGG16(width=width, batch_norm=False),
    "vgg16_bn": lambda width=1.0: VGG16(width=width, batch_norm=True),
    "mobilenet": lambda width=1.0: MobileNetV1(width=width),
    "resnet18": lambda width=1.0: ResNet(BasicBlock, (2, 2, 2, 2), width=width),
    "resnet34": lambda width=1.0: ResNet(BasicBlock, (3, 4, 6, 3), width=width),
    "resnet50": lambda width=1.0: ResNet(Bottleneck, (3, 4, 6, 3), width=width),
}


def build_backbone(name: str, *, width: float = 1.0) -> Backbone:
    """Build a backbone by name (see ``BACKBONES``) with a channel width multiplier in (0, 4]."""
    if name not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    if not 0.0 < float(width) <= 4.0:
        raise ModelError(f"backbone width multiplier {width} is out of range; expected 0 < width <= 4")
    return BACKBONES[name](width=float(width))
