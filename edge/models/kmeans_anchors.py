"""Anchor priors by k-means over a dataset's box sizes with the 1 - IoU distance (YOLO9000, section 2).

Boxes are compared by size only: both boxes centred on the same point, so IoU((w1, h1), (w2, h2)) =
min(w1, w2) * min(h1, h2) / (w1 h1 + w2 h2 - min(w1, w2) * min(h1, h2)). Unlike Euclidean k-means on
(w, h), large boxes do not dominate the error.

Deterministic for a given seed: k-means++ seeding and restarts draw from ``numpy.random.default_rng(seed)``.
Results are sorted by area (smallest first), which is also how YOLOv3 splits them over its levels (fine
to coarse). numpy only (no torch): ``edge anchors`` runs wherever the datasets load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from edge.data.records import Dataset
from edge.errors import DataError
from edge.letterbox import compute_letterbox

log = logging.getLogger(__name__)


def wh_iou(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of box sizes centred on one point: wh [N, 2], centroids [K, 2] (w, h, any units) -> [N, K]."""
    wh = np.asarray(wh, np.float64)
    centroids = np.asarray(centroids, np.float64)
    inter = np.minimum(wh[:, None, 0], centroids[None, :, 0]) * np.minimum(wh[:, None, 1], centroids[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (centroids[:, 0] * centroids[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


@dataclass
class KMeansConfig:
    """Options of ``kmeans_anchors``."""

    k: int = 9
    seed: int = 0
    max_iter: int = 300
    restarts: int = 5
    center: str = "mean"  # cluster centre update: "mean" (YOLO9000) or "median"

    def validate(self) -> KMeansConfig:
        if int(self.k) < 1:
            raise ValueError(f"k (number of anchors) must be >= 1, got {self.k}")
        if int(self.max_iter) < 1 or int(self.restarts) < 1:
            raise ValueError(f"max_iter and restarts must be >= 1, got {self.max_iter} and {self.restarts}")
        if self.center not in ("mean", "median"):
            raise ValueError(f"center must be 'mean' or 'median', got {self.center!r}")
        return self


@dataclass
class AnchorResult:
    """k-means anchors and how well they fit the boxes they came from.

    Attributes:
        anchors: float64 [k, 2] (w, h), sorted by area, smallest first, in the boxes' units.
        mean_iou: mean over boxes of the IoU with their best anchor (the paper's "Avg IoU").
        counts: boxes per anchor [k] (same order as ``anchors``).
        num_boxes: boxes clustered.
        iterations: Lloyd iterations of the best restart.
    """

    anchors: np.ndarray
    mean_iou: float
    counts: np.ndarray
    num_boxes: int
    iterations: int
    meta: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self, decimals: int = 2) -> Dict[str, Any]:
        return {
            "anchors": [[round(float(w), decimals), round(float(h), decimals)] for w, h in self.anchors],
            "k": int(len(self.anchors)),
            "mean_iou": round(float(self.mean_iou), 6),
            "counts": [int(c) for c in self.counts],
            "num_boxes": int(self.num_boxes),
            **self.meta,
        }


def _kmeans_pp(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with d = 1 - IoU: each next centre drawn with probability proportional to d^2."""
    centroids = [wh[rng.integers(len(wh))]]
    dist = 1.0 - wh_iou(wh, np.array(centroids))[:, 0]
    for _ in range(1, k):
        weights = dist ** 2
        total = weights.sum()
        if total <= 0:  # fewer distinct sizes than k: take any box not yet a centre
            idx = int(rng.integers(len(wh)))
        else:
            idx = int(rng.choice(len(wh), p=weights / total))
        centroids.append(wh[idx])
        dist = np.minimum(dist, 1.0 - wh_iou(wh, wh[idx:idx + 1])[:, 0])
    return np.array(centroids, np.float64)


def _lloyd(wh: np.ndarray, centroids: np.ndarray, max_iter: int, center: str
           ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Lloyd iterations with 1 - IoU assignment; empty clusters take the worst-fitting box."""
    assign = np.full(len(wh), -1, np.int64)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        iou = wh_iou(wh, centroids)
        new_assign = iou.argmax(axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        best = iou.max(axis=1)
        for j in range(len(centroids)):
            members = wh[assign == j]
            if len(members) == 0:
                worst = int(best.argmin())
                centroids[j] = wh[worst]
                best[worst] = 1.0
                continue
            centroids[j] = members.mean(axis=0) if center == "mean" else np.median(members, axis=0)
    return centroids, assign, iterations


def kmeans_anchors(wh: Union[np.ndarray, Sequence[Sequence[float]]], k: int = 9, *, seed: int = 0,
                   max_iter: int = 300, restarts: int = 5, center: str = "mean") -> AnchorResult:
    """Cluster box sizes into ``k`` anchors with the 1 - IoU distance.

    Args:
        wh: box sizes [N, 2] (w, h), any units (pixels of the network input for anchors); non-positive
            or non-finite rows are dropped.
        k: number of anchors. seed: makes the result reproducible. restarts: independent k-means++
            seedings, the one with the best mean IoU is kept. center: "mean" or "median" update.

    Returns:
        AnchorResult with anchors [k, 2] sorted by area (smallest first).

    Raises:
        DataError: fewer usable boxes than ``k``.
    """
    cfg = KMeansConfig(k=int(k), seed=int(seed), max_iter=int(max_iter), restarts=int(restarts),
                       center=center).validate()
    data = np.asarray(wh, np.float64).reshape(-1, 2)
    ok = np.isfinite(data).all(axis=1) & (data > 0).all(axis=1)
    if not ok.all():
        log.warning("k-means anchors: dropped %d of %d box sizes that are not positive and finite",
                       int((~ok).sum()), len(data))
    data = data[ok]
    if len(data) < cfg.k:
        raise DataError(f"k-means anchors: found {len(data)} usable boxes, expected at least k={cfg.k}; "
                        f"use a smaller -k or a split with more annotated boxes")
    rng = np.random.default_rng(cfg.seed)
    best_result = None
    for _ in range(cfg.restarts):
        centroids, assign, iterations = _lloyd(data, _kmeans_pp(data, cfg.k, rng), cfg.max_iter, cfg.center)
        mean_iou = float(wh_iou(data, centroids).max(axis=1).mean())
        if best_result is None or mean_iou > best_result[0] + 1e-12:
            best_result = (mean_iou, centroids.copy(), iterations)
    assert best_result is not None
    mean_iou, centroids, iterations = best_result
    order = np.argsort(centroids[:, 0] * centroids[:, 1], kind="stable")
    centroids = centroids[order]
    counts = np.bincount(wh_iou(data, centroids).argmax(axis=1), minlength=cfg.k)
    return AnchorResult(anchors=centroids, mean_iou=mean_iou, counts=counts, num_boxes=len(data),
                        iterations=iterations)


def dataset_box_sizes(dataset: Dataset, input_size: Tuple[int, int]) -> np.ndarray:
    """Box sizes [N, 2] (w, h) in pixels of the network input, each image letterboxed to ``input_size`` (H, W).

    Uses ``edge.letterbox.compute_letterbox``'s per-axis factors, the ones training applies to the boxes.
    """
    sizes: List[np.ndarray] = []
    for record in dataset.records:
        if len(record.boxes) == 0:
            continue
        params = compute_letterbox((record.height, record.width), input_size)
        wh = record.boxes[:, 2:4] - record.boxes[:, 0:2]
        sizes.append(wh.astype(np.float64) * np.array([params.scale_x, params.scale_y]))
    return np.concatenate(sizes) if sizes else np.zeros((0, 2), np.float64)


def anchors_for_dataset(dataset: Dataset, k: int, input_size: Tuple[int, int], *, seed: int = 0,
                        restarts: int = 5, center: str = "mean") -> AnchorResult:
    """k-means anchors for a loaded split, in pixels of a letterboxed ``input_size`` (H, W) input."""
    wh = dataset_box_sizes(dataset, input_size)
    if len(wh) == 0:
        raise DataError(f"dataset {dataset.name!r} split {dataset.split!r}: found no annotated boxes, "
                        f"expected some to cluster; check the split file and annotations")
    result = kmeans_anchors(wh, k, seed=seed, restarts=restarts, center=center)
    result.meta.update({"input_size": [int(input_size[0]), int(input_size[1])], "seed": int(seed),
                        "dataset": dataset.name, "split": dataset.split, "images": len(dataset.records),
                        "order": "by area, smallest first", "units": "input pixels (letterboxed)"})
    return result
