"""The backbone's start and freezing in a training run: ``--pretrained``, ``--backbone-weights FILE``,
``--freeze-backbone N``.

Loading and key mapping live in ``edge.models.pretrained``; this module decides when to load (a new run,
not a resumed one: the checkpoint's weights win) and which epochs train with a frozen backbone.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from torch import nn

from edge.models.pretrained import (
    backbone_modules,
    load_backbone_weights,
    load_pretrained_backbone,
    torchvision_weights_name,
)
from edge.train.config import TrainConfig

log = logging.getLogger(__name__)


def initial_backbone_weights(cfg: TrainConfig, model: nn.Module) -> Optional[Dict[str, Any]]:
    """Load the backbone weights a new run starts from; returns the model card's ``backbone_weights`` entry
    (None when the backbone starts from random weights)."""
    if cfg.backbone_weights:
        return load_backbone_weights(model, cfg.backbone_weights).to_card()
    if cfg.pretrained:
        return load_pretrained_backbone(model).to_card()
    return None


def check_pretrained(cfg: TrainConfig) -> None:
    """``--pretrained`` on a backbone without torchvision weights is refused before the data loads (a model
    with one class stands in for the real one; build errors are left to the real build to report)."""
    if not cfg.pretrained:
        return
    from edge.models import build_model

    try:
        probe = build_model(cfg.model, num_classes=1, input_size=(cfg.imgsz, cfg.imgsz), **dict(cfg.model_args))
    except Exception:  # noqa: BLE001 - reported, with its own message, by the real build
        return
    torchvision_weights_name(probe)


class BackboneFreeze:
    """Keeps the backbone frozen for the first ``epochs`` epochs: its parameters get no gradients
    (``requires_grad`` False, so the optimizer leaves them, weight decay included, untouched) and its
    BatchNorm layers run in eval mode (their ImageNet statistics stay). Which epochs are frozen follows from
    the epoch number alone, so a resumed run freezes exactly as the first one would have."""

    def __init__(self, model: nn.Module, epochs: int, enabled: bool = True):
        self.model = model
        self.epochs = int(epochs)
        self.frozen = False
        self.started = False
        self.log = enabled

    def set_epoch(self, epoch: int) -> None:
        """Call after ``model.train()`` at the start of every (0-based) ``epoch``."""
        if not self.epochs:
            return
        want = epoch < self.epochs
        backbone = backbone_modules(self.model)
        if want:
            for p in backbone.parameters():
                p.requires_grad_(False)
            for m in batchnorms(backbone):
                m.eval()
            if not self.frozen and self.log:
                log.info("epoch %d: backbone frozen (no gradients, BatchNorm in eval mode) through epoch %d; "
                         "it trains from epoch %d", epoch + 1, self.epochs, self.epochs + 1)
        elif self.frozen:
            for p in backbone.parameters():
                p.requires_grad_(True)
            if self.log:
                log.info("epoch %d: backbone unfrozen, all layers train from here", epoch + 1)
        elif not self.started and self.log:  # a run resumed after the frozen epochs
            log.info("epoch %d: the backbone was frozen for the first %d epochs; all layers train from here",
                     epoch + 1, self.epochs)
        self.frozen = want
        self.started = True

    def kept(self, model: nn.Module) -> List[nn.Module]:
        """The modules of ``model`` (the trained model or its EMA copy) whose BatchNorm statistics precise BN
        must leave alone while the backbone is frozen."""
        return [backbone_modules(model)] if self.frozen else []


def batchnorms(module: nn.Module) -> List[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
