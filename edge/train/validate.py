"""The validation pass of a training run: BatchNorm recalibration ("precise BN"), the mAP of the evaluated
weights on the validation split, and the history columns those metrics fill.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Sequence

import numpy as np
import torch
from torch import nn

from edge.train.config import TrainConfig
from edge.train.predict import TorchPredictor, normalize_batch

log = logging.getLogger(__name__)


def recompute_batchnorm(model: nn.Module, batches: Any, forward: Any = None, keep: Sequence[nn.Module] = ()) -> int:
    """Replace every BatchNorm's running statistics by their average over ``batches`` ("precise BN").

    BatchNorm's running mean/var trail the weights by ~1/momentum steps (33 steps for Darknet's 0.03);
    in short trainings on small datasets that lag is large and eval-mode outputs drift from train-mode
    ones. Recomputing the statistics with the current weights on a few letterboxed training images
    before evaluating (and saving) removes it. Training itself is unaffected (it uses batch statistics).

    Args:
        batches: iterable of normalized float32 [B, 3, H, W] input batches (B >= 2).
        forward: callable run on each batch (default ``model.forward_raw``).
        keep: modules whose BatchNorm statistics stay as they are (a frozen backbone's; eval mode meanwhile).
    Returns: the number of images seen (0 when the model has no BatchNorm).
    """
    kept = {id(m) for k in keep for m in k.modules()}
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
           and id(m) not in kept]
    if not bns:
        return 0
    forward = forward or model.forward_raw
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the plain mean over the batches
    seen = 0
    model.train()
    for k in keep:
        k.eval()
    try:
        with torch.no_grad():
            for x in batches:
                forward(x)
                seen += int(x.shape[0])
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return seen


def precise_bn(
    model: nn.Module, plain_dataset: Any, num_images: int, count: int, batch: int, device: torch.device,
    keep: Sequence[nn.Module] = (),
) -> None:
    """``recompute_batchnorm`` on the evaluated ``model`` over ``count`` letterboxed training images
    (no augmentation, evenly spread over the ``num_images`` of ``plain_dataset``, always the same ones),
    in batches of ``batch`` (at least 2)."""
    n = min(count, num_images)
    if n < 2:
        return
    picks = np.unique(np.linspace(0, num_images - 1, n).round().astype(int)).tolist()
    chunk = max(2, batch)
    groups = [picks[i : i + chunk] for i in range(0, len(picks), chunk)]
    if len(groups) > 1 and len(groups[-1]) < 2:
        groups[-2].extend(groups.pop())

    def batches():
        for group in groups:
            imgs = torch.stack([plain_dataset[i][0] for i in group]).to(device)
            yield normalize_batch(imgs, model.normalization)

    t0 = time.perf_counter()
    seen = recompute_batchnorm(model, batches(), keep=keep)
    if seen:
        log.debug("recomputed BatchNorm statistics on %d images in %.1f s", seen, time.perf_counter() - t0)


def validate(
    model: nn.Module,
    val_ds: Any,
    val_cache: Any,
    cfg: TrainConfig,
    device: torch.device,
    split: str,
    epoch: int,
    weights: str,
) -> Dict[str, Any]:
    """mAP of ``model`` on ``val_ds`` (images from ``val_cache`` when given) after ``epoch`` (0-based).

    Returns the metrics a checkpoint's card records: split, epoch, map50, map50_95, per_class (ap50,
    ap50_95 per class name), weights ("ema" or "model") and eval_s.
    """
    from edge.data.images import read_image
    from edge.evaluate import evaluate_detections
    from edge.metrics import ImageDetections

    t0 = time.perf_counter()
    predictor = TorchPredictor(
        model,
        device=device,
        score_threshold=cfg.score_threshold,
        iou_threshold=cfg.iou_threshold,
        max_detections=cfg.max_detections,
    )
    records = val_ds.records
    detections: Dict[Any, ImageDetections] = {}
    chunk = max(1, min(cfg.batch, 16))
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        if val_cache is not None:
            images = [val_cache[start + i] for i in range(len(part))]
        else:
            images = [read_image(r.path) for r in part]
        for rec, (boxes, scores, classes) in zip(part, predictor.predict_batch(images)):
            detections[rec.image_id] = ImageDetections(boxes, scores, classes)
    result = evaluate_detections(val_ds, detections).to_json()
    metrics = {
        "split": split,
        "epoch": epoch + 1,
        "map50": result.get("map50"),
        "map50_95": result.get("map50_95"),
        "per_class": {
            name: {"ap50": v.get("ap50"), "ap50_95": v.get("ap50_95")}
            for name, v in result.get("per_class", {}).items()
        },
        "weights": weights,
        "eval_s": round(time.perf_counter() - t0, 2),
    }
    return metrics


def metric_columns(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Flatten validation metrics into history columns: map50, map50_95, ap50_<class>."""
    cols: Dict[str, Any] = {"map50": metrics.get("map50"), "map50_95": metrics.get("map50_95")}
    for name, values in (metrics.get("per_class") or {}).items():
        cols[f"ap50_{name}"] = values.get("ap50")
    return cols
