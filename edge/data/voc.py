"""Pascal VOC loader: ``ImageSets/Main/<split>.txt`` ids, ``Annotations/<id>.xml``, ``JPEGImages/``.

Boxes are read as written in ``<bndbox>`` (xmin, ymin, xmax, ymax, absolute pixels, no 1-based shift),
checked and clipped to the image. ``image_id`` is the image file's stem. ``<difficult>`` is kept in
``ImageRecord.difficult``. Bad input is skipped or repaired and reported (see ``edge.data.sanitize``).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edge.data.config import DatasetConfig
from edge.data.records import ImageRecord
from edge.data.sanitize import (
    Problem,
    ProblemLog,
    check_annotated_size,
    check_image,
    clean_box,
    read_list_file,
    report_box,
)
from edge.errors import DataError

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


def read_id_list(path: Path) -> List[str]:
    """Image ids from an ImageSets file: first token of each non-empty line (``#`` lines are comments)."""
    lines = read_list_file(
        path, "split file", "a text file with one image id per line (VOC ImageSets/Main/<split>.txt)",
        ": create it or fix the split's path in the dataset YAML",
    )
    return [line.split()[0] for line in lines]


def split_ids(config: DatasetConfig, split: str) -> List[str]:
    """A split's image ids: its fraction of the annotation ids (``edge.data.splits``), or the ids of its
    split files in order."""
    if config.split_spec(split).fraction is not None:
        from edge.data.splits import split_members

        return split_members(config, split)
    return [i for path in config.split_files(split) for i in read_id_list(path)]


def load_voc(
    config: DatasetConfig, split: str, problems: ProblemLog, decode_images: bool = False
) -> List[ImageRecord]:
    """Load one split of a VOC dataset.

    Returns ImageRecords with float32 [N, 4] xyxy pixel boxes, int64 labels (index into
    ``config.names``) and bool difficult flags. Images whose annotation or image file is missing or
    broken are skipped; boxes that are degenerate, outside the image or of an unknown class are skipped;
    boxes past the border are clipped. Each case is reported through ``problems``.

    Raises:
        DataError: the split file, the annotation folder or the image folder does not exist.
    """
    ids = split_ids(config, split)
    ann_dir = config.annotations_dir()
    img_dir = config.images_dir(split)
    for folder, what, key in ((ann_dir, "annotation", "annotations"), (img_dir, "image", "images")):
        if not folder.is_dir():
            raise DataError(
                f"VOC {what} folder {folder} does not exist (dataset {config.name!r}); expected "
                f"<root>/{'Annotations' if key == 'annotations' else 'JPEGImages'}: fix 'root' or set "
                f"'{key}:' in the dataset YAML"
            )
    class_index = {n: i for i, n in enumerate(config.names)}
    records: List[ImageRecord] = []
    seen = set()
    for image_id in ids:
        if image_id in seen:
            problems(
                Problem.DUPLICATE_IMAGE,
                str(config.split_file(split)),
                f"id {image_id!r} listed twice; second entry skipped",
            )
            continue
        seen.add(image_id)
        record = _load_one(image_id, ann_dir, img_dir, class_index, problems, decode_images)
        if record is not None:
            records.append(record)
    return records


def _load_one(
    image_id: str,
    ann_dir: Path,
    img_dir: Path,
    class_index: Dict[str, int],
    problems: ProblemLog,
    decode_images: bool,
) -> Optional[ImageRecord]:
    xml_path = ann_dir / f"{image_id}.xml"
    if not xml_path.is_file():
        problems(
            Problem.MISSING_ANNOTATION,
            str(xml_path),
            f"no annotation file for id {image_id!r}; image skipped",
        )
        return None
    try:
        root = ET.parse(str(xml_path)).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
        problems(Problem.BAD_ANNOTATION, str(xml_path), f"XML does not parse ({exc}); image skipped")
        return None
    if root.tag != "annotation":
        problems(
            Problem.BAD_ANNOTATION,
            str(xml_path),
            f"root element is <{root.tag}>, expected <annotation>; image skipped",
        )
        return None

    image_path = _find_image(img_dir, image_id, (root.findtext("filename") or "").strip())
    size = check_image(image_path, problems, str(xml_path), decode=decode_images)
    if size is None:
        return None
    width, height = size
    size_el = root.find("size")
    annotated = (
        (_int(size_el.findtext("width")), _int(size_el.findtext("height")))
        if size_el is not None
        else (None, None)
    )
    check_annotated_size(problems, str(xml_path), annotated, size, what="<size>")

    boxes: List[Tuple[float, float, float, float]] = []
    labels: List[int] = []
    difficult: List[bool] = []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"{xml_path} object {k} ({name or 'no name'})"
        if name not in class_index:
            problems(
                Problem.UNKNOWN_CLASS,
                where,
                f"class {name!r} is not one of {sorted(class_index)}; box skipped",
            )
            continue
        coords = _bndbox(obj.find("bndbox"))
        if coords is None:
            problems(
                Problem.BAD_BOX,
                where,
                "<bndbox> missing or with non-numeric xmin/ymin/xmax/ymax; box skipped",
            )
            continue
        box, status = clean_box(*coords, width, height)
        report_box(problems, status, where, coords, width, height)
        if box is None:
            continue
        boxes.append(box)
        labels.append(class_index[name])
        difficult.append(_int(obj.findtext("difficult")) == 1)
    return ImageRecord(
        image_id=image_path.stem,
        path=os.path.abspath(str(image_path)),
        width=width,
        height=height,
        boxes=boxes,
        labels=labels,
        difficult=difficult,
    )


def _find_image(img_dir: Path, image_id: str, filename: str) -> Path:
    """The XML's <filename> in the image folder if it exists, else <id>.<common suffix>, else the former."""
    candidates = []
    if filename:
        candidates.append(img_dir / Path(filename).name)
    candidates.extend(img_dir / f"{image_id}{suffix}" for suffix in _IMAGE_SUFFIXES)
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def _bndbox(el) -> Optional[Tuple[float, float, float, float]]:
    if el is None:
        return None
    try:
        return tuple(float((el.findtext(k) or "").strip()) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[return-value]
    except ValueError:
        return None


def _int(text: Optional[str]) -> Optional[int]:
    """An integer from XML text ("640", "640.0"), or None."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        return None
    return int(value)
