"""What a training run reads: its splits, image caches, datasets, batch sampler and DataLoader.

``load_splits`` loads the training split (``limit`` applied) and picks and loads the validation split
(rank 0 only; it warns when validation images are also training images). ``image_caches`` decides
whether the decoded images are kept in memory. ``train_datasets`` builds the augmented dataset and a
letterbox-only twin (for BatchNorm recalibration); ``train_loader`` the per-rank batch sampler and the
DataLoader. ``Prefetcher`` runs a single-process loader one or two batches ahead in a thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any, Optional, Tuple

import torch

from edge.errors import DataError
from edge.train.config import TrainConfig
from edge.train.distributed import DistContext

log = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def _worker_init(_worker_id: int) -> None:
    # each DataLoader worker is one more process on a few cores: keep it single-threaded
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher:
    """Iterate a single-process DataLoader iterator in a background thread, ``depth`` batches ahead.

    Augmentation (cv2/numpy, which release the GIL) then overlaps the model's forward/backward without
    extra processes, shared-memory copies or a second image cache. The iterator is created by the caller
    (in the training thread), so the torch RNG draws it makes stay in the training thread's order.
    """

    _END = object()

    def __init__(self, iterator: Any, depth: int = 2):
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iterator,), name="edge-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, iterator: Any) -> None:
        try:
            for item in iterator:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the training thread
            self._put(_Failure(exc))
            return
        self._put(self._END)

    def __iter__(self):
        try:
            while True:
                item = self._queue.get()
                if item is self._END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


# ----------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------


def load_splits(cfg: TrainConfig, main: bool) -> Tuple[Any, str, Optional[Any]]:
    """The training split (``limit`` applied) and the validation split: ``(train_ds, val_split, val_ds)``.

    ``val_split`` is "none" when there is none; ``val_ds`` is loaded on the main process only (None
    elsewhere, and where the split has no images). Raises DataError for an unknown split or an empty
    training split.
    """
    from edge.data import load_config, load_dataset

    dcfg = load_config(cfg.data)
    if cfg.train_split not in dcfg.splits:
        raise DataError(
            f"dataset {cfg.data} has no split {cfg.train_split!r} (it has {sorted(dcfg.splits)}); "
            "pick one with --train-split"
        )
    train_ds = load_dataset(dcfg, cfg.train_split, log=main, decode_images=True)
    _unreadable_images(cfg, train_ds, cfg.train_split, main)
    if cfg.limit:
        train_ds.records = train_ds.records[: cfg.limit]
    if not train_ds.records:
        raise DataError(f"split {cfg.train_split!r} of {cfg.data} has no usable images to train on")

    val_split = _pick_val_split(cfg, dcfg, main)
    val_ds = None
    if val_split != "none" and main:
        val_ds = _load_val_split(cfg, dcfg, val_split, train_ds)
    return train_ds, val_split, val_ds


def _unreadable_images(cfg: TrainConfig, dataset: Any, split: str, main: bool) -> None:
    """One policy for images that cannot be used (missing, empty, truncated or undecodable: every image is
    decoded once when a split loads): skipped, counted and named in one warning; ``cfg.strict`` stops
    instead with a DataError naming them."""
    skipped = list(dataset.report.skipped_images)
    if not skipped:
        return
    shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
    if cfg.strict:
        raise DataError(f"split {split!r} of {cfg.data}: {len(skipped)} image(s) missing, empty or corrupt ({shown}); "
                        "--strict stops on them: replace or remove them, or train without --strict to skip them")
    if main:
        log.warning("split %r: %d image(s) skipped, missing, empty or corrupt: %s (--strict stops instead)",
                    split, len(skipped), shown)


def _pick_val_split(cfg: TrainConfig, dcfg: Any, main: bool) -> str:
    """``cfg.val_split``, checked; when unset "val", else "test", else "none" (with a warning)."""
    val_split = cfg.val_split
    if val_split is None:
        val_split = next((s for s in ("val", "test") if s in dcfg.splits), "none")
        if val_split == "none" and main:
            log.warning("dataset %s has neither a 'val' nor a 'test' split: no validation mAP", cfg.data)
    elif val_split != "none" and val_split not in dcfg.splits:
        raise DataError(
            f"dataset {cfg.data} has no split {val_split!r} (it has {sorted(dcfg.splits)}); "
            "pick one with --val-split, or --val-split none"
        )
    return val_split


def _load_val_split(cfg: TrainConfig, dcfg: Any, val_split: str, train_ds: Any) -> Optional[Any]:
    """The validation dataset (None when it has no images); warns when it shares images with training."""
    from edge.data import load_dataset

    val_ds = load_dataset(dcfg, val_split, log=True, decode_images=True)
    _unreadable_images(cfg, val_ds, val_split, True)
    if not val_ds.records:
        log.warning("validation split %r has no images: no validation mAP", val_split)
        return None
    train_files = {os.path.abspath(r.path) for r in train_ds.records}
    shared = sum(1 for r in val_ds.records if os.path.abspath(r.path) in train_files)
    if shared:
        log.warning(
            "%d of the %d %r images are also training images (%r): the validation mAP (and the "
            "choice of best.pt) is optimistic; validate on a disjoint split with --val-split",
            shared, len(val_ds.records), val_split, cfg.train_split,
        )
    return val_ds


# ----------------------------------------------------------------------------------------------------
# Caches, datasets, loader
# ----------------------------------------------------------------------------------------------------


def image_caches(cfg: TrainConfig, records: Any, val_ds: Optional[Any], main: bool) -> Tuple[Any, Any]:
    """``(train_cache, val_cache)``: ``ImageCache``s of the decoded images, or None where not caching.

    ``cache_images`` "on"/"off" decides; "auto" caches when the decoded images of both splits fit in
    ``cache_max_gb``.
    """
    from edge.data.torch_dataset import ImageCache, estimate_cache_bytes

    cache_bytes = estimate_cache_bytes(records) + (
        estimate_cache_bytes(val_ds.records) if val_ds is not None else 0
    )
    if cfg.cache_images == "on":
        use_cache = True
    elif cfg.cache_images == "off":
        use_cache = False
    else:
        use_cache = cache_bytes <= cfg.cache_max_gb * 2**30
        if not use_cache and main:
            log.info(
                "not caching images: %.1f GiB decoded > cache_max_gb %.1f (use --cache-images to force)",
                cache_bytes / 2**30, cfg.cache_max_gb,
            )
    threads = max(1, min(4, available_cpus()))
    train_cache = ImageCache(records, threads) if use_cache else None
    val_cache = ImageCache(val_ds.records, threads) if (use_cache and val_ds is not None) else None
    return train_cache, val_cache


def train_datasets(cfg: TrainConfig, records: Any, cache: Any) -> Tuple[Tuple[int, ...], Any, Any]:
    """``(sizes, dataset, plain_dataset)``: the input sizes (several under multi-scale training), the
    augmented training dataset and its letterbox-only twin (for BatchNorm recalibration)."""
    from edge.data.torch_dataset import DetectionDataset
    from edge.data.transforms import AugmentConfig, TrainTransform, multiscale_sizes

    augment = AugmentConfig.preset(cfg.augment_preset)
    sizes = multiscale_sizes(cfg.imgsz, cfg.multiscale_steps) if cfg.use_multiscale else (cfg.imgsz,)
    dataset = DetectionDataset(
        records, transform=TrainTransform(augment), input_size=cfg.imgsz, seed=cfg.seed, cache=cache,
        pad_value=augment.pad_value,
    )
    plain_dataset = DetectionDataset(  # letterbox only, for BatchNorm recalibration
        records, transform=None, input_size=cfg.imgsz, seed=cfg.seed, cache=cache,
        pad_value=augment.pad_value,
    )
    return sizes, dataset, plain_dataset


def train_loader(
    cfg: TrainConfig, dataset: Any, num_images: int, sizes: Any, ctx: DistContext, device: torch.device
) -> Tuple[Any, Any]:
    """``(sampler, loader)``: this rank's ``EpochBatchSampler`` and the DataLoader over ``dataset``."""
    from edge.data.torch_dataset import EpochBatchSampler, collate

    sampler = EpochBatchSampler(
        num_images,
        cfg.batch,
        sizes=sizes,
        size_interval=cfg.multiscale_interval,
        shuffle=True,
        seed=cfg.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        drop_last=True,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        worker_init_fn=_worker_init if cfg.workers > 0 else None,
    )
    return sampler, loader
