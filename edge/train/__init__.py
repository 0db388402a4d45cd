"""Training: ``edge train`` and its parts (needs torch: ``pip install 'edge-detect[train]'``).

    from edge.train import TrainConfig, train, load_checkpoint
    result = train(TrainConfig(model="ssd", data="data/bccd.yaml", imgsz=256, epochs=60, out="runs/ssd"))
    model, card = load_checkpoint(result.best)        # rebuilt from the model card alone

Modules: ``config`` (TrainConfig), ``loop`` (train, config_for_resume), ``data`` (splits, image caches,
datasets, DataLoader), ``validate`` (precise BN, validation mAP), ``checkpoint`` (save/load, model
card, dataset hash), ``predict`` (TorchPredictor: a Detector as an ``edge.evaluate`` predictor), ``ema``,
``schedule`` (warm-up + cosine/step), ``distributed`` (torchrun helpers), ``progress``, ``history``.
"""

from __future__ import annotations

from edge.train.checkpoint import (
    build_card,
    dataset_hash,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    strip_checkpoint,
)
from edge.train.config import TrainConfig
from edge.train.loop import TrainResult, config_for_resume, train
from edge.train.predict import TorchPredictor, predictor_from_checkpoint

__all__ = [
    "TorchPredictor",
    "TrainConfig",
    "TrainResult",
    "build_card",
    "config_for_resume",
    "dataset_hash",
    "load_checkpoint",
    "predictor_from_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "strip_checkpoint",
    "train",
]
