"""COCO loader: one instances JSON per split (``images``, ``annotations``, ``categories``).

``bbox`` is COCO's ``[x, y, w, h]`` in absolute pixels (top-left corner); it becomes an xyxy pixel box,
checked and clipped to the image. ``image_id`` is the JSON's own image id; class indices follow the
dataset YAML's ``names`` when given (matched by category name), else the categories sorted by id, and
``category_ids[class_index]`` maps back to the JSON's category id. ``iscrowd`` annotations are kept with
``difficult=True`` (ignored by mAP scoring). Images without annotations are kept (background images).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from edge.data.config import DatasetConfig
from edge.data.records import ImageRecord
from edge.data.sanitize import Problem, ProblemLog, check_annotated_size, check_image, clean_box, report_box
from edge.errors import DataError

log = logging.getLogger(__name__)


def read_coco_json(path: Path) -> Dict[str, Any]:
    """Parse a COCO instances file; raise DataError if it is missing, not JSON or not COCO-shaped."""
    if not path.is_file():
        raise DataError(
            f"COCO annotation file {path} does not exist; expected an instances JSON: fix the split's path "
            "in the dataset YAML"
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"COCO annotation file {path} is not valid JSON ({exc}); fix or regenerate it"
        ) from None
    except OSError as exc:
        raise DataError(f"COCO annotation file {path} cannot be read ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(
            f"COCO annotation file {path} has no 'images' list; expected a COCO instances JSON with keys "
            "images, annotations, categories"
        )
    if not isinstance(data.get("categories", []), list) or not isinstance(data.get("annotations", []), list):
        raise DataError(f"COCO annotation file {path}: 'categories' and 'annotations' must be lists")
    return data


def coco_classes(
    data: Dict[str, Any], names: List[str], path: Path, problems: ProblemLog
) -> Tuple[List[str], List[int]]:
    """Class names and category ids (class index -> JSON category id).

    With ``names`` given, class i is the category named ``names[i]``; without, the categories sorted by id.
    """
    categories: Dict[int, str] = {}
    for k, cat in enumerate(data.get("categories", [])):
        cid = cat.get("id") if isinstance(cat, dict) else None
        cname = cat.get("name") if isinstance(cat, dict) else None
        if not _is_int(cid) or not isinstance(cname, str) or not cname.strip():
            problems(
                Problem.BAD_ENTRY,
                f"{path} categories[{k}]",
                f"entry {cat!r} lacks an integer id or a name; skipped",
            )
            continue
        if cid in categories:
            problems(
                Problem.BAD_ENTRY,
                f"{path} categories[{k}]",
                f"category id {cid} appears twice; second skipped",
            )
            continue
        categories[int(cid)] = cname.strip()
    if not names:
        ids = sorted(categories)
        found = [categories[i] for i in ids]
        dupes = sorted({n for n in found if found.count(n) > 1})
        if dupes:
            raise DataError(
                f"COCO annotation file {path}: category names {dupes} are used by several ids; "
                "give `names:` in the dataset YAML or make the names unique"
            )
        if not ids:
            raise DataError(
                f"COCO annotation file {path} has no categories; add them or give `names:` in the YAML"
            )
        return found, ids
    by_name: Dict[str, List[int]] = {}
    for cid, cname in categories.items():
        by_name.setdefault(cname, []).append(cid)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(
            f"COCO annotation file {path}: class names {missing} from the dataset YAML are not among its "
            f"categories {sorted(by_name)}; fix `names:` or leave it out to use the file's categories"
        )
    ambiguous = [n for n in names if len(by_name[n]) > 1]
    if ambiguous:
        raise DataError(
            f"COCO annotation file {path}: categories {ambiguous} have several ids; make them unique"
        )
    return list(names), [by_name[n][0] for n in names]


def load_coco(
    config: DatasetConfig, split: str, problems: ProblemLog, decode_images: bool = False
) -> Tuple[List[ImageRecord], List[str], List[int]]:
    """Load one split of a COCO dataset: ``(records, class_names, category_ids)``.

    Records carry float32 [N, 4] xyxy pixel boxes and int64 class indices. Raises DataError if the JSON
    or the image folder is missing or the JSON is unreadable as a whole; bad entries inside it are
    skipped and reported.
    """
    path = config.split_file(split)
    data = read_coco_json(path)
    img_dir = config.images_dir(split)
    if not img_dir.is_dir():
        raise DataError(
            f"COCO image folder {img_dir} does not exist (dataset {config.name!r}, split {split!r}); "
            "set 'images:' for the split or at the top of the dataset YAML"
        )
    names, category_ids = coco_classes(data, config.names, path, problems)
    images, skipped_images, order = _read_images(data, path, img_dir, problems, decode_images)
    _read_annotations(data, path, names, category_ids, images, skipped_images, problems)
    records = [
        ImageRecord(
            image_id=int(i) if _is_int(i) else i,
            path=os.path.abspath(str(images[i]["path"])),
            width=images[i]["size"][0],
            height=images[i]["size"][1],
            boxes=images[i]["boxes"],
            labels=images[i]["labels"],
            difficult=images[i]["crowd"],
        )
        for i in order
    ]
    return records, names, category_ids


def _read_images(
    data: Dict[str, Any], path: Path, img_dir: Path, problems: ProblemLog, decode_images: bool
) -> Tuple[Dict[Any, Dict[str, Any]], Set[Any], List[Any]]:
    """The usable ``images`` entries: ``(images, skipped_images, order)``.

    ``images`` maps image id -> {"path", "size", "boxes", "labels", "crowd"} (annotation lists still
    empty); ``skipped_images`` holds the ids of entries whose image is missing or unreadable (already
    reported); ``order`` is the ids in file order.
    """
    images: Dict[Any, Dict[str, Any]] = {}  # image id -> {"record fields", boxes...}
    skipped_images = set()
    order: List[Any] = []
    for k, entry in enumerate(data["images"]):
        where = f"{path} images[{k}]"
        image_id = entry.get("id") if isinstance(entry, dict) else None
        file_name = entry.get("file_name") if isinstance(entry, dict) else None
        if (
            not (_is_int(image_id) or isinstance(image_id, str))
            or not isinstance(file_name, str)
            or not file_name
        ):
            problems(
                Problem.BAD_ENTRY, where, f"image entry lacks an id or a file_name ({_short(entry)}); skipped"
            )
            continue
        if image_id in images or image_id in skipped_images:
            problems(
                Problem.DUPLICATE_IMAGE, where, f"image id {image_id!r} appears twice; second entry skipped"
            )
            continue
        where = f"{path} image {image_id} ({file_name})"
        image_path = img_dir / file_name
        size = check_image(image_path, problems, where, decode=decode_images)
        if size is None:
            skipped_images.add(image_id)
            continue
        annotated = (_opt_int(entry.get("width")), _opt_int(entry.get("height")))
        check_annotated_size(problems, where, annotated, size, what="width/height")
        images[image_id] = {"path": image_path, "size": size, "boxes": [], "labels": [], "crowd": []}
        order.append(image_id)
    return images, skipped_images, order


def _read_annotations(
    data: Dict[str, Any],
    path: Path,
    names: List[str],
    category_ids: List[int],
    images: Dict[Any, Dict[str, Any]],
    skipped_images: Set[Any],
    problems: ProblemLog,
) -> None:
    """Append each valid annotation's clipped box, class index and crowd flag to its image in ``images``;
    bad annotations are reported and skipped."""
    class_of = {cid: i for i, cid in enumerate(category_ids)}
    known_categories = {
        c.get("id") for c in data.get("categories", []) if isinstance(c, dict) and _is_int(c.get("id"))
    }
    for k, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            problems(
                Problem.BAD_ENTRY,
                f"{path} annotations[{k}]",
                f"entry is {_short(ann)}, expected an object; skipped",
            )
            continue
        where = f"{path} annotation {ann.get('id', k)}"
        image_id = ann.get("image_id")
        if not (_is_int(image_id) or isinstance(image_id, str)):
            problems(
                Problem.BAD_ENTRY, where, f"image_id is {_short(image_id)}, expected an image id; skipped"
            )
            continue
        if image_id in skipped_images:
            continue  # the image was already reported
        if image_id not in images:
            problems(
                Problem.BAD_ENTRY,
                where,
                f"refers to image id {image_id!r}, which is not in 'images'; skipped",
            )
            continue
        img = images[image_id]
        where = f"{where} (image {image_id}, {img['path'].name})"
        cid = ann.get("category_id")
        if not _is_int(cid):
            problems(Problem.BAD_ENTRY, where, f"category_id is {_short(cid)}, expected an integer; skipped")
            continue
        if cid not in class_of:
            if cid in known_categories:
                detail = f"category id {cid} is not among the dataset YAML's names {names}; box skipped"
            else:
                detail = f"category id {cid!r} is not among the file's categories; box skipped"
            problems(Problem.UNKNOWN_CLASS, where, detail)
            continue
        box = _annotation_box(ann.get("bbox"), where, img["size"], problems)
        if box is None:
            continue
        img["boxes"].append(box)
        img["labels"].append(class_of[cid])
        img["crowd"].append(bool(ann.get("iscrowd", 0)))


def _annotation_box(
    bbox: Any, where: str, size: Tuple[int, int], problems: ProblemLog
) -> Optional[Tuple[float, float, float, float]]:
    """COCO ``bbox`` [x, y, w, h] -> an xyxy box checked and clipped to the image of ``size`` (width,
    height), or None (reported) when it is malformed, non-finite or unusable."""
    if (
        not isinstance(bbox, (list, tuple))
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    ):
        problems(Problem.BAD_BOX, where, f"bbox is {bbox!r}, expected [x, y, w, h] numbers; box skipped")
        return None
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        problems(Problem.BAD_BOX, where, f"bbox {bbox!r} has a non-finite value; box skipped")
        return None
    xyxy = (x, y, x + w, y + h)
    width, height = size
    box, status = clean_box(*xyxy, width, height)
    report_box(problems, status, where, xyxy, width, height)
    return box


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_int(v: Any) -> Optional[int]:
    if _is_int(v):
        return int(v)
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)
    return None


def _short(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
