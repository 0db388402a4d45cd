"""Datasets: one YAML describes a dataset (VOC XML, COCO JSON or YOLO txt); ``load_dataset`` reads a split.

    from edge.data import load_dataset
    ds = load_dataset("data/bccd.yaml", "trainval")     # -> Dataset (edge.data.records)
    ds.records[0].boxes                                 # float32 [N, 4] xyxy, source-image pixels

Bad input (degenerate boxes, boxes past the border, unknown classes, missing/corrupt images, unparsable
annotation files or lines) is skipped or clipped with one warning per item and counted in
``Dataset.report``; a missing dataset root or split file raises ``DataError``.

No torch in this package's loaders: they are on the runtime path (evaluation, calibration).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Union

from edge.data.config import DatasetConfig, SplitSpec, load_config
from edge.data.images import image_size, read_image
from edge.data.records import Dataset, ImageRecord, LoadReport
from edge.data.sanitize import Problem, ProblemLog

log = logging.getLogger(__name__)

__all__ = [
    "Dataset",
    "DatasetConfig",
    "ImageRecord",
    "LoadReport",
    "Problem",
    "SplitSpec",
    "class_counts",
    "image_size",
    "load_config",
    "load_dataset",
    "log_summary",
    "read_image",
    "summary_text",
]


def load_dataset(
    config: Union[DatasetConfig, str, Path],
    split: str,
    *,
    decode_images: bool = False,
    max_warnings_per_reason: Optional[int] = 100,
    log: bool = True,
) -> Dataset:
    """Load one split of a dataset described by a DatasetConfig or a dataset YAML path.

    Args:
        config: a DatasetConfig, or the path of a dataset YAML.
        split: a split name from the YAML's ``splits``.
        decode_images: also decode every image (slow) instead of the cheap header check, to catch
            truncated files.
        max_warnings_per_reason: warnings logged per problem kind before the rest go to DEBUG
            (None: no limit); counts in ``Dataset.report`` are always complete.
        log: log the summary (``log_summary``) when done.

    Returns:
        Dataset with records in split-file order; boxes float32 [N, 4] xyxy in source pixels.

    Raises:
        DataError: bad YAML, unknown split, missing root, split file or image/annotation folder, or a
            COCO JSON that does not parse.
    """
    cfg = load_config(config)
    cfg.split_spec(split)  # unknown split -> DataError listing the splits
    cfg.check_files()  # every problem of the YAML and on disk (root, split files, folders) in one DataError
    report = LoadReport()
    problems = ProblemLog(report, f"{cfg.name}/{split}", max_warnings_per_reason)
    names = list(cfg.names)
    category_ids = []
    if cfg.format == "voc":
        from edge.data.voc import load_voc

        records = load_voc(cfg, split, problems, decode_images=decode_images)
    elif cfg.format == "coco":
        from edge.data.coco import load_coco

        records, names, category_ids = load_coco(cfg, split, problems, decode_images=decode_images)
    else:
        from edge.data.yolo import load_yolo

        records = load_yolo(cfg, split, problems, decode_images=decode_images)
    dataset = Dataset(
        name=cfg.name,
        split=split,
        class_names=names,
        records=records,
        report=report,
        format=cfg.format,
        category_ids=category_ids,
    )
    if log:
        log_summary(dataset)
    return dataset


def class_counts(dataset: Dataset) -> Dict[str, int]:
    """Number of boxes per class name (difficult boxes included), in class-index order."""
    counts = [0] * len(dataset.class_names)
    for r in dataset.records:
        for label in r.labels.tolist():
            counts[label] += 1
    return dict(zip(dataset.class_names, counts))


def summary_text(dataset: Dataset) -> str:
    """One line: images, boxes per class, and what was skipped or clipped."""
    counts = class_counts(dataset)
    boxes = sum(counts.values())
    per_class = ", ".join(f"{n} {c}" for n, c in counts.items())
    empty = sum(1 for r in dataset.records if len(r.boxes) == 0)
    text = (
        f"{dataset.name}/{dataset.split} ({dataset.format}): {len(dataset.records)} images "
        f"({empty} without boxes), {boxes} boxes ({per_class})"
    )
    if dataset.report.total:
        text += f"; skipped or repaired: {dataset.report.summary()}"
    return text


def log_summary(dataset: Dataset, logger: Optional[logging.Logger] = None) -> None:
    """Log ``summary_text`` (to ``logger``, default this module's): INFO when the split loaded cleanly,
    WARNING when anything was skipped/clipped."""
    level = logging.WARNING if dataset.report.total else logging.INFO
    (logger or log).log(level, "%s", summary_text(dataset))
