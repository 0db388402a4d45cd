"""YOLO txt loader: one label file per image, one object per line.

Label line: ``class cx cy w h``, the box centre and size normalized to 0..1 by the image's width and
height (the size is read from the image header). A line ``class x1 y1 x2 y2 ... xn yn`` (a normalized
polygon, n >= 3, as segmentation exports write) becomes the polygon's bounding box. Boxes become xyxy
pixel boxes, checked and clipped to the image. ``image_id`` is the image file's stem.

Split: a text file listing image paths, or a folder of images (see ``edge.data.config``). Labels:
``.../images/<sub>/x.jpg`` -> ``.../labels/<sub>/x.txt`` (the last ``images`` folder), else ``x.txt``
beside the image. An image without a label file is kept as a background image (reported); an empty
label file is a background image (not reported).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import List, Optional, Tuple

from edge.data.config import DatasetConfig
from edge.data.images import list_images
from edge.data.records import ImageRecord
from edge.data.sanitize import Problem, ProblemLog, check_image, clean_box, read_list_file, report_box
from edge.errors import DataError

log = logging.getLogger(__name__)

# A normalized value may exceed 1 by this much (rounding in exporters) before it counts as not normalized.
_NORM_TOLERANCE = 1e-3


def label_path(image_path: Path) -> Path:
    """The label file of an image: the last ``images`` folder swapped for ``labels``, suffix ``.txt``."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def list_split_images(config: DatasetConfig, split: str) -> List[Path]:
    """Image paths of a split: its fraction of the pool (``edge.data.splits``), or the images of each of its
    sources in order (a folder's images, recursive, or the lines of a list file)."""
    if config.split_spec(split).fraction is not None:
        from edge.data.splits import split_members

        return [config.resolve(p) for p in split_members(config, split)]
    return [p for source in config.split_files(split) for p in _source_images(config, split, source)]


def _source_images(config: DatasetConfig, split: str, source: Path) -> List[Path]:
    if source.is_dir():
        images = list_images(source)
        if not images:
            raise DataError(
                f"YOLO split {split!r}: folder {source} holds no images (.jpg, .png, ...); "
                "point the split at the images folder or a list file"
            )
        return images
    entries = read_list_file(source, "YOLO split file", "a text file of image paths or a folder of images",
                             ": fix the split's path in the dataset YAML")
    images = []
    for entry in entries:
        p = Path(entry).expanduser()
        if not p.is_absolute():
            near_list = source.parent / p
            p = near_list if near_list.exists() else config.root / p
        images.append(p)
    return images


def parse_label_line(line: str) -> Tuple[int, Tuple[float, float, float, float]]:
    """``(class, (cx, cy, w, h))`` normalized, from a box or polygon line; ValueError if unparsable."""
    tokens = line.split()
    values = [float(t) for t in tokens]
    if len(values) < 5:
        raise ValueError(f"{len(values)} values, expected 5 (class cx cy w h)")
    cls = values[0]
    if not math.isfinite(cls) or cls != int(cls):
        raise ValueError(f"class {tokens[0]!r} is not an integer")
    if not all(math.isfinite(v) for v in values[1:]):
        raise ValueError("non-finite coordinate")
    if len(values) == 5:
        return int(cls), (values[1], values[2], values[3], values[4])
    coords = values[1:]
    if len(coords) % 2 or len(coords) < 6:
        raise ValueError(f"{len(values)} values: neither a box (5) nor a polygon (class + >= 3 x,y pairs)")
    xs, ys = coords[0::2], coords[1::2]
    x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
    return int(cls), ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)


def load_yolo(
    config: DatasetConfig, split: str, problems: ProblemLog, decode_images: bool = False
) -> List[ImageRecord]:
    """Load one split of a YOLO dataset (float32 [N, 4] xyxy pixel boxes, int64 class indices).

    Raises DataError if the split file/folder is missing; bad images, label files and lines are
    skipped and reported through ``problems``.
    """
    num_classes = len(config.names)
    records: List[ImageRecord] = []
    seen = {}
    for image_path in list_split_images(config, split):
        where = str(image_path)
        stem = image_path.stem
        if stem in seen:
            problems(
                Problem.DUPLICATE_IMAGE,
                where,
                f"image id {stem!r} (the file stem) is already used by {seen[stem]}; image skipped "
                "(detections are matched by stem, so stems must be unique)",
            )
            continue
        size = check_image(image_path, problems, where, decode=decode_images)
        if size is None:
            continue
        record = _load_labels(image_path, size, num_classes, config.names, problems)
        if record is not None:
            seen[stem] = image_path
            records.append(record)
    return records


def _load_labels(
    image_path: Path, size: Tuple[int, int], num_classes: int, names: List[str], problems: ProblemLog
) -> Optional[ImageRecord]:
    width, height = size
    labels_file = label_path(image_path)
    boxes: List[Tuple[float, float, float, float]] = []
    labels: List[int] = []
    if not labels_file.is_file():
        problems(
            Problem.MISSING_LABELS,
            str(image_path),
            f"no label file {labels_file}; kept as a background image (create an empty file to silence this)",
        )
    else:
        try:
            text = labels_file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problems(
                Problem.BAD_ANNOTATION, str(labels_file), f"cannot be read as text ({exc}); image skipped"
            )
            return None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{labels_file}:{n}"
            try:
                cls, (cx, cy, w, h) = parse_label_line(line)
            except ValueError as exc:
                problems(
                    Problem.BAD_LINE, where, f"line {line.strip()[:60]!r} does not parse ({exc}); skipped"
                )
                continue
            if not 0 <= cls < num_classes:
                problems(
                    Problem.UNKNOWN_CLASS,
                    where,
                    f"class {cls} is not in 0..{num_classes - 1} {names}; box skipped",
                )
                continue
            if w <= 0 or h <= 0:
                problems(
                    Problem.DEGENERATE_BOX, where, f"w h = {w:g} {h:g}: zero or negative size; box skipped"
                )
                continue
            if max(cx, cy, w, h) > 1 + _NORM_TOLERANCE:
                problems(
                    Problem.NOT_NORMALIZED,
                    where,
                    f"cx cy w h = {cx:g} {cy:g} {w:g} {h:g} exceed 1: expected values normalized to 0..1 "
                    "(pixel coordinates?); box skipped",
                )
                continue
            xyxy = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            box, status = clean_box(*xyxy, width, height)
            report_box(problems, status, where, xyxy, width, height)
            if box is None:
                continue
            boxes.append(box)
            labels.append(cls)
    return ImageRecord(
        image_id=image_path.stem,
        path=os.path.abspath(str(image_path)),
        width=width,
        height=height,
        boxes=boxes,
        labels=labels,
        difficult=[False] * len(labels),
    )
