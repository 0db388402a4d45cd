"""Detectors assembled from parts: backbones, necks, heads, anchors, box coding, losses.

``build_model(arch, **config)`` is the one constructor the training loop, checkpoints and export use.
Each family module registers itself in ``edge.models.registry.MODEL_REGISTRY`` (arch name -> callable
returning a Detector) when ``build_model`` first imports it from ``_FAMILY_MODULES``.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

from edge.errors import ModelError
from edge.models.options import check_model_args, describe
from edge.models.registry import MODEL_REGISTRY, register

__all__ = ["MODEL_REGISTRY", "build_model", "model_options_help", "register"]


# arch name -> module that registers it on import
_FAMILY_MODULES = {
    "ssd": "edge.models.ssd",
    "yolov2": "edge.models.yolov2",
    "yolov3": "edge.models.yolov3",
    "yolov3-tiny": "edge.models.yolov3",
    "retinanet": "edge.models.retinanet",
}


def build_model(arch: str, **config: Any):
    """Build a detector by registry name with keyword-only config (as stored in a model card)."""
    if arch not in MODEL_REGISTRY:
        if arch not in _FAMILY_MODULES:
            raise ValueError(f"unknown model architecture {arch!r}; expected one of {sorted(_FAMILY_MODULES)}")
        importlib.import_module(_FAMILY_MODULES[arch])
    check_model_args(arch, config)  # every family refuses an unknown option the same way
    return MODEL_REGISTRY[arch](**config)


def model_options_help(arch: Optional[str] = None) -> str:
    """``edge train [--model ARCH] --help-model``: the ``--model-arg`` options of ``arch`` (default: every
    family), with their defaults and each variant's values (``edge.models.options.describe``)."""
    archs = [arch] if arch else list(_FAMILY_MODULES)
    for a in archs:
        if a not in _FAMILY_MODULES:
            raise ModelError(f"unknown model {a!r}; expected one of {', '.join(_FAMILY_MODULES)}")
        importlib.import_module(_FAMILY_MODULES[a])
    return "\n\n".join(describe(a) for a in archs)
