"""What a training run reads: its splits, image caches, datasets, batch sampler and DataLoader.

``load_splits`` loads the training split (``limit`` applied) and picks and loads the validation split
(rank 0 only; it warns when validation images are also training images). ``image_caches`` decides
whether the decoded images are kept in memory. ``train_datasets`` builds the augmented dataset and a
letterbox-only twin (for BatchNorm recalibration); ``train_loader`` the per-rank batch sampler and the
DataLoader. ``Prefetcher`` runs a single-process loader one or two batches ahead in a thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from edge.errors import DataError
from edge.train.config import TrainConfig
from edge.train.distributed import DistContext

log = logging.getLogger(__name__)

#: where a run writes the splits it made (fractions, a carved validation part), under OUT
SPLITS_FOLDER = "splits"


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


@dataclass
class DerivedSplits:
    """Splits this run made itself (fraction splits of the YAML, a validation part carved from the training
    split): their files' lines (VOC ids, or YOLO image paths relative to the root) and how they were made.
    ``write_split_files`` writes them under ``OUT/splits`` so the run's split can be reproduced."""

    lines: Dict[str, List[str]]
    how: Dict[str, str]
    seed: int
    dataset: Dict[str, Any]

    def record(self, folder: str = SPLITS_FOLDER) -> Dict[str, Any]:
        """The model card's ``data.split_files``: per split its file (relative to OUT), image count, sha256."""
        return {
            "folder": folder, "seed": self.seed, "yaml": f"{folder}/data.yaml",
            "files": {name: {"file": f"{folder}/{name}.txt", "images": len(lines), "how": self.how[name],
                             "sha256": hashlib.sha256(_split_text(lines).encode()).hexdigest()}
                      for name, lines in self.lines.items()},
        }


def load_splits(cfg: TrainConfig, main: bool) -> Tuple[Any, str, Optional[Any], Optional[DerivedSplits]]:
    """The training split (``limit`` applied) and the validation split: ``(train_ds, val_split, val_ds,
    derived)``.

    ``val_split`` is "none" when there is none; ``val_ds`` is loaded on the main process only (None
    elsewhere, and where the split has no images). Without ``cfg.val_split`` the YAML's ``val`` is used,
    else a seeded part of the training split (``edge.data.splits.resolve_val_split``), never the test split.
    ``derived``: the splits made here, to write beside the run (None when every split came from a file).
    Raises DataError for an unknown split, an empty training split, or one too small to carve.
    """
    from edge.data import load_config, load_dataset
    from edge.data.splits import resolve_val_split

    dcfg = load_config(cfg.data)
    if cfg.train_split not in dcfg.splits:
        raise DataError(
            f"dataset {cfg.data} has no split {cfg.train_split!r} (it has {sorted(dcfg.splits)}); "
            "pick one with --train-split"
        )
    choice = resolve_val_split(dcfg, cfg.val_split, cfg.train_split)
    train_ds = load_dataset(dcfg, cfg.train_split, log=main, decode_images=True)
    _unreadable_images(cfg, train_ds, cfg.train_split, main)
    carved = _carve_validation(cfg, dcfg, train_ds, choice, main) if choice.carve else None
    derived = _derived_splits(dcfg, cfg, train_ds, carved, choice)
    if cfg.limit:
        train_ds.records = train_ds.records[: cfg.limit]
    if not train_ds.records:
        raise DataError(f"split {cfg.train_split!r} of {cfg.data} has no usable images to train on")

    val_split = choice.split
    if choice.explicit and val_split == "test" and main:
        log.warning("validating on the test split (--val-split test): best.pt is then chosen on the test split, "
                    "and its test mAP is optimistic; report test figures from a run that validated on val")
    val_ds = None
    if carved is not None:
        val_ds = carved if main else None
    elif val_split != "none" and main:
        val_ds = _load_val_split(cfg, dcfg, val_split, train_ds)
    return train_ds, val_split, val_ds, derived


def _carve_validation(cfg: TrainConfig, dcfg: Any, train_ds: Any, choice: Any, main: bool) -> Any:
    """Take a seeded ``choice.fraction`` of the training images out as the validation dataset (removed from
    ``train_ds``); refuse a training split of fewer than ``MIN_CARVE_IMAGES`` images."""
    from edge.data.splits import MIN_CARVE_IMAGES, carve

    n = len(train_ds.records)
    if n < MIN_CARVE_IMAGES:
        raise DataError(
            f"dataset {cfg.data} has no 'val' split (it has {', '.join(dcfg.splits)}) and its {cfg.train_split!r} "
            f"split has {n} usable image(s), too few to carve a validation part from (at least {MIN_CARVE_IMAGES}); "
            "add a val split to the YAML (a split file, or fractions such as `splits: {train: 0.8, val: 0.2}`), "
            "or train without validation with --val-split none")
    ids = [str(r.image_id) for r in train_ds.records]
    _, taken = carve(ids, choice.fraction, dcfg.seed)
    chosen = set(taken)
    val_records = [r for r in train_ds.records if str(r.image_id) in chosen]
    train_ds.records = [r for r in train_ds.records if str(r.image_id) not in chosen]
    if main:
        log.warning(
            "dataset %s has no 'val' split: validating on %d of the %d %r images (a seeded %g%%, seed %d, taken "
            "out of training for this run; written to %s/%s/val.txt); best.pt is chosen on them. Add a val split "
            "or pass --val-split to choose", cfg.data, len(val_records), n, cfg.train_split, choice.fraction * 100,
            dcfg.seed, cfg.out, SPLITS_FOLDER)
    from edge.data.records import LoadReport

    return dataclasses.replace(train_ds, split="val", records=val_records, report=LoadReport())


def _derived_splits(dcfg: Any, cfg: TrainConfig, train_ds: Any, carved: Optional[Any],
                    choice: Any) -> Optional[DerivedSplits]:
    """The splits this run made (fraction splits, a carve) as split-file lines, or None."""
    if not dcfg.has_fractions and carved is None:
        return None
    from edge.data.splits import fraction_splits

    lines: Dict[str, List[str]] = {}
    how: Dict[str, str] = {}
    if dcfg.has_fractions:
        for name, members in fraction_splits(dcfg).items():
            lines[name] = list(members)
            how[name] = f"fraction {dcfg.splits[name].fraction:g} of the dataset (seed {dcfg.seed})"
    if carved is not None:
        # the training images left once the carve is taken out (before --limit)
        lines[cfg.train_split] = [_line(dcfg, r) for r in train_ds.records]
        how[cfg.train_split] = f"{cfg.train_split!r} less the validation part"
        lines["val"] = [_line(dcfg, r) for r in carved.records]
        how["val"] = f"{choice.fraction:g} of {cfg.train_split!r} carved out (seed {dcfg.seed})"
    dataset = dcfg.to_dict()
    return DerivedSplits(lines, how, dcfg.seed, dataset)


def _line(dcfg: Any, record: Any) -> str:
    """A record as a split-file line: its VOC id, or its YOLO image path relative to the root."""
    if dcfg.format == "voc":
        return str(record.image_id)
    try:
        return Path(record.path).resolve().relative_to(dcfg.root.resolve()).as_posix()
    except ValueError:
        return str(record.path)


def _split_text(lines: List[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def write_split_files(out: Path, derived: DerivedSplits) -> Path:
    """Write ``OUT/splits/<split>.txt`` for every derived split and ``OUT/splits/data.yaml``, a dataset YAML
    whose splits are these files (``edge eval --data OUT/splits/data.yaml --split val``); atomically."""
    import yaml

    from edge.artifacts import atomic_write_text

    folder = Path(out) / SPLITS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in derived.lines.items():
        atomic_write_text(folder / f"{name}.txt", _split_text(lines))
    dataset = dict(derived.dataset)
    splits = {k: v for k, v in dataset.get("splits", {}).items() if not isinstance(v, float)}
    splits.update({name: str((folder / f"{name}.txt").resolve()) for name in derived.lines})
    dataset["splits"] = splits
    dataset.pop("seed", None)
    header = "# the splits of this training run (edge train); split files beside this file\n"
    atomic_write_text(folder / "data.yaml", header + yaml.safe_dump(dataset, sort_keys=False))
    return folder


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
