"""Exponential moving average of a model's weights (as in YOLOv5 / timm's ModelEmaV2).

After each optimizer step, with ``n`` the number of updates so far (including this one)::

    d_n = decay * (1 - exp(-n / tau))
    ema = d_n * ema + (1 - d_n) * model          for every floating-point parameter and buffer
    ema = model                                  for integer buffers (BatchNorm's num_batches_tracked)

The ramp keeps early (random) weights from dominating: d is ~0 at first and tends to ``decay``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict

import torch
from torch import nn


class ModelEMA:
    """Keeps ``self.module``, an eval-mode copy of the model whose weights are the moving average."""

    def __init__(self, model: nn.Module, decay: float = 0.999, tau: float = 200.0, updates: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay}: expected a value in (0, 1)")
        if not tau > 0:
            raise ValueError(f"EMA tau {tau}: expected > 0")
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = int(updates)

    def current_decay(self, updates: int) -> float:
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Fold the model's current weights in; returns the decay used."""
        self.updates += 1
        d = self.current_decay(self.updates)
        src = _unwrap(model).state_dict()
        for name, value in self.module.state_dict().items():
            new = src[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(new.to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(new)
        return d

    def state_dict(self) -> Dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel wrappers."""
    return getattr(model, "module", model) if isinstance(
        model, (nn.parallel.DistributedDataParallel, nn.DataParallel)
    ) else model
