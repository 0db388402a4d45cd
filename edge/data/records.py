"""The in-memory form of an annotated dataset split, shared by every loader and consumer.

Box format everywhere in this module: absolute pixel corners ``x1, y1, x2, y2`` in the source image,
float32, with ``x2 > x1`` and ``y2 > y1`` (loaders drop or clip anything else before it gets here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Union

import numpy as np

ImageId = Union[str, int]


@dataclass
class ImageRecord:
    """One image and its ground truth.

    Attributes:
        image_id: the file stem (str) for VOC and YOLO datasets, the file's own integer id for COCO.
        path: absolute path of the image file.
        width, height: source image size in pixels.
        boxes: float32 [N, 4], x1,y1,x2,y2 in source pixels.
        labels: int64 [N], 0-based index into the dataset's class list.
        difficult: bool [N]; VOC "difficult" (or COCO "iscrowd") objects, ignored by mAP scoring.
    """

    image_id: ImageId
    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.difficult)):
            raise ValueError(
                f"image {self.image_id!r}: boxes {self.boxes.shape}, labels {self.labels.shape} and "
                f"difficult {self.difficult.shape} must have the same length"
            )


@dataclass
class LoadReport:
    """What a loader skipped or repaired, counted by reason, with one example file per reason."""

    counts: Dict[str, int] = field(default_factory=dict)
    examples: Dict[str, str] = field(default_factory=dict)
    #: every image file left out because it is missing, empty or does not decode (in load order)
    skipped_images: List[str] = field(default_factory=list)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.examples.setdefault(reason, where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "no problems found"
        return "; ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))


@dataclass
class Dataset:
    """A loaded split: its records, the class names, and the load report."""

    name: str
    split: str
    class_names: List[str]
    records: List[ImageRecord]
    report: LoadReport = field(default_factory=LoadReport)
    # "voc"/"yolo": detections' image_id is the file stem and category_id the 0-based class index;
    # "coco": the file's own ids (see category_ids).
    format: str = "voc"
    # COCO only: dataset category id for each class index (class index -> category_id).
    category_ids: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)
