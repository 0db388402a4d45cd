"""Score a dataset split: from a detections file or by running a model, then ``edge.metrics``.

Detections file: the standard COCO results format, a JSON list of::

    {"image_id": ID, "category_id": CAT, "bbox": [x, y, w, h], "score": S}

with ``bbox`` as top-left corner and size (xywh) in source-image pixels. For VOC and YOLO datasets
``image_id`` is the image file's stem (a string, e.g. ``"BloodImage_00001"``) and ``category_id`` the
0-based index of the class in the dataset YAML's class list; for COCO JSON datasets both are the
annotation file's own integer ids. Other keys in an entry are ignored. Loading validates every entry
and reports the bad ones (which entry, what was found, what was expected) in one ``DataError``.

Models: a *predictor* is any callable ``image_bgr (uint8 [H, W, 3]) -> (boxes [K, 4] xyxy source
pixels, scores [K], classes [K] 0-based)``. This module knows no model file formats: opening a file as a
predictor is ``edge.runtime.predictors.load_predictor`` (and the training loop passes its own).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from edge.errors import DataError, MissingDependencyError, ModelError
from edge.metrics import COCO_MAX_DETS, EvalResult, ImageDetections, ImageId, evaluate

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover - Python 3.6 on JetPack 4.6 (best effort)
    Protocol = object  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
DetectionsInput = Union[PathLike, Sequence[Mapping[str, Any]], Mapping[ImageId, ImageDetections]]

#: How many bad entries a ``DataError`` lists before summarizing the rest.
MAX_LISTED_PROBLEMS = 10

_FORMAT_HELP = (
    'expected the COCO results format: a JSON list of {"image_id", "category_id", "bbox": [x, y, w, h], '
    '"score"} in source-image pixels'
)


class Predictor(Protocol):
    """A model ready to run: one BGR frame in, detections in source-image pixels out."""

    def __call__(self, image_bgr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """image_bgr: uint8 [H, W, 3] -> (boxes float [K, 4] xyxy source pixels, scores [K], classes int [K])."""
        ...  # pragma: no cover


# ---------------------------------------------------------------------------------------------------
# Detections files
# ---------------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _id_hint(dataset: Any) -> str:
    example = dataset.records[0].image_id if dataset.records else None
    if dataset.format == "coco":
        return f"the integer image id from the COCO annotation file (e.g. {example!r})"
    return f"the image file stem as a string (e.g. {example!r})"


def _category_hint(dataset: Any) -> str:
    names = list(dataset.class_names)
    if dataset.format == "coco":
        pairs = ", ".join(f"{cid}={name}" for cid, name in zip(dataset.category_ids, names))
        return f"one of the COCO category ids of the dataset ({pairs})"
    pairs = ", ".join(f"{i}={name}" for i, name in enumerate(names))
    return f"an integer 0-based class index 0..{len(names) - 1} ({pairs})"


def parse_detections(
    entries: Any, dataset: Any, *, source: str = "detections"
) -> Dict[ImageId, ImageDetections]:
    """Validate COCO-results-format entries against ``dataset`` and group them per image.

    Args:
        entries: the decoded JSON (must be a list of dicts, see the module docstring).
        dataset: an ``edge.data.records.Dataset`` (its ``format`` decides the id conventions).
        source: what to call the input in error messages (a file name).
    Returns:
        image_id -> ``ImageDetections`` (boxes [K, 4] xyxy source pixels, scores [K], 0-based labels),
        only for images with at least one detection.
    Raises:
        DataError: anything malformed; lists the first ``MAX_LISTED_PROBLEMS`` bad entries.
    """
    _check_is_a_list(entries, source)
    rules = _EntryRules(dataset)
    problems: List[str] = []
    num_problems = 0
    grouped: Dict[ImageId, Tuple[List[List[float]], List[float], List[int]]] = {}
    for i, entry in enumerate(entries):
        found = rules.problems(entry)
        num_problems += len(found)
        problems.extend(f"entry {i}: {m}" for m in found[: max(0, MAX_LISTED_PROBLEMS - len(problems))])
        if found:
            continue
        boxes, scores, labels = grouped.setdefault(entry["image_id"], ([], [], []))
        x, y, w, h = (float(v) for v in entry["bbox"])
        boxes.append([x, y, x + w, y + h])
        scores.append(float(entry["score"]))
        labels.append(rules.category_to_index[int(entry["category_id"])])

    if num_problems:
        more = f"\n  ... and {num_problems - len(problems)} more" if num_problems > len(problems) else ""
        raise DataError(
            f"{source}: {num_problems} bad detection entr{'y' if num_problems == 1 else 'ies'} of "
            f"{len(entries)}:\n  " + "\n  ".join(problems) + more + f"\nFix or drop them; {_FORMAT_HELP}."
        )
    out = {
        image_id: ImageDetections(np.asarray(b, np.float64).reshape(-1, 4), s, lab)
        for image_id, (b, s, lab) in grouped.items()
    }
    log.debug("%s: %d detections on %d images", source, len(entries), len(out))
    return out


def _check_is_a_list(entries: Any, source: str) -> None:
    """DataError unless the decoded JSON is a list (a COCO *annotation* file is named as such)."""
    if isinstance(entries, dict):
        hint = ""
        if "annotations" in entries or "images" in entries:
            hint = (
                " It looks like a COCO *annotation* file; a results file is the bare list of detections "
                "(what COCO.loadRes takes)."
            )
        raise DataError(f"{source}: found a JSON object, {_FORMAT_HELP}.{hint}")
    if not isinstance(entries, list):
        raise DataError(f"{source}: found a JSON {type(entries).__name__}, {_FORMAT_HELP}")


class _EntryRules:
    """What a valid detection entry is for ``dataset``: its image ids, category ids and box/score rules."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.is_coco = dataset.format == "coco"
        self.known_ids = {r.image_id for r in dataset.records}
        if self.is_coco:
            self.category_to_index = {int(c): i for i, c in enumerate(dataset.category_ids)}
        else:
            self.category_to_index = {i: i for i in range(len(dataset.class_names))}
        self.split_name = f"split {dataset.split!r} of dataset {dataset.name!r}"

    def problems(self, entry: Any) -> List[str]:
        """Every problem of one entry (empty: the entry is valid)."""
        if not isinstance(entry, dict):
            return [f"found a JSON {type(entry).__name__} ({_short(entry)}), expected an object"]
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in entry]
        if missing:
            return [f"missing key(s) {', '.join(missing)}; every entry needs image_id, category_id, bbox, score"]
        return (self._image_id_problems(entry["image_id"]) + self._category_problems(entry["category_id"])
                + _bbox_problems(entry["bbox"]) + _score_problems(entry["score"]))

    def _image_id_problems(self, image_id: Any) -> List[str]:
        dataset = self.dataset
        if self.is_coco and not _is_int(image_id):
            return [f"image_id {_short(image_id)} is not an integer; expected {_id_hint(dataset)}"]
        if not self.is_coco and not isinstance(image_id, str):
            return [f"image_id {_short(image_id)} is a {type(image_id).__name__}; for {dataset.format.upper()} "
                    f"datasets expected {_id_hint(dataset)}"]
        if image_id not in self.known_ids:
            return [f"unknown image_id {image_id!r}: not an image of {self.split_name}; expected "
                    f"{_id_hint(dataset)} (write detections only for this split, or pass the matching --split)"]
        return []

    def _category_problems(self, category: Any) -> List[str]:
        if not _is_int(category) or int(category) not in self.category_to_index:
            return [f"bad category_id {_short(category)}; expected {_category_hint(self.dataset)}"]
        return []


def _bbox_problems(bbox: Any) -> List[str]:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return [f"bbox {_short(bbox)} is not a list of 4 numbers [x, y, w, h] in source-image pixels"]
    if not all(math.isfinite(float(v)) for v in bbox):
        return [f"bbox {_short(bbox)} has a NaN or infinite value; expected finite pixel coordinates"]
    if float(bbox[2]) < 0 or float(bbox[3]) < 0:
        return [f"bbox {_short(bbox)} has a negative width or height; expected [x, y, w, h] with w, h >= 0 "
                "(if these are x1, y1, x2, y2 corners, convert them to w = x2 - x1, h = y2 - y1)"]
    return []


def _score_problems(score: Any) -> List[str]:
    if not _is_number(score):
        return [f"score {_short(score)} is not a number; expected a finite confidence"]
    if not math.isfinite(float(score)):
        return [f"score {_short(score)} is NaN or infinite; expected a finite confidence"]
    return []


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def load_detections(path: PathLike, dataset: Any) -> Dict[ImageId, ImageDetections]:
    """Read and validate a COCO-results-format detections file for ``dataset`` (see ``parse_detections``)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"detections file {p} does not exist; check the path given to --detections")
    if p.is_dir():
        raise DataError(f"detections path {p} is a folder; expected a JSON file ({_FORMAT_HELP})")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"detections file {p} is not UTF-8 text ({exc}); {_FORMAT_HELP}") from None
    except OSError as exc:
        raise DataError(f"detections file {p} cannot be read ({exc}); check its permissions") from None
    if not text.strip():
        raise DataError(
            f"detections file {p} is empty; {_FORMAT_HELP} (an empty list [] means no detections)"
        )
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"detections file {p} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            f"{_FORMAT_HELP}"
        ) from None
    return parse_detections(entries, dataset, source=f"detections file {p}")


def detections_to_coco(detections: Mapping[ImageId, ImageDetections], dataset: Any) -> List[Dict[str, Any]]:
    """The inverse of ``parse_detections``: COCO results entries (xywh source pixels), per image in order."""
    out: List[Dict[str, Any]] = []
    is_coco = dataset.format == "coco"
    for image_id, det in detections.items():
        for box, score, label in zip(det.boxes, det.scores, det.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            category = int(dataset.category_ids[int(label)]) if is_coco else int(label)
            out.append(
                {
                    "image_id": int(image_id) if is_coco else str(image_id),
                    "category_id": category,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return out


def save_detections(path: PathLike, detections: Mapping[ImageId, ImageDetections], dataset: Any) -> None:
    """Write ``detections`` as a COCO results file (atomically), loadable by ``load_detections``."""
    from edge.artifacts import atomic_write_json

    atomic_write_json(path, detections_to_coco(detections, dataset))


# ---------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------


def evaluate_detections(
    dataset: Any, detections: DetectionsInput, *, max_dets: int = COCO_MAX_DETS
) -> EvalResult:
    """Score detections on a dataset split.

    Args:
        dataset: an ``edge.data.records.Dataset``.
        detections: a detections file path, its decoded list of entries, or a mapping
            image_id -> ``ImageDetections`` (xyxy source pixels, 0-based labels).
        max_dets: COCO's per-image, per-class cap.
    Raises:
        DataError: malformed detections or detections for images outside the split.
    """
    if isinstance(detections, (str, os.PathLike)):
        per_image = load_detections(detections, dataset)
    elif isinstance(detections, Mapping):
        per_image = dict(detections)
    else:
        per_image = parse_detections(detections, dataset)
    if not dataset.records:
        raise DataError(
            f"dataset {dataset.name!r} split {dataset.split!r} has no images to evaluate; "
            "check the split file and the load warnings above"
        )
    try:
        return evaluate(dataset.records, per_image, dataset.class_names, max_dets=max_dets)
    except ValueError as exc:
        raise DataError(f"cannot score detections on {dataset.name!r}/{dataset.split}: {exc}") from None


def _check_prediction(output: Any, image_id: ImageId, num_classes: int) -> ImageDetections:
    try:
        boxes, scores, classes = output
    except (TypeError, ValueError):
        raise ModelError(
            f"predictor output for image {image_id!r} is {type(output).__name__}; expected a tuple "
            "(boxes [K, 4] xyxy source pixels, scores [K], classes [K])"
        ) from None
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes_f = np.asarray(classes).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not (len(boxes) == len(scores) == len(classes_f)):
        raise ModelError(
            f"predictor output for image {image_id!r}: boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)}, "
            f"classes {tuple(classes_f.shape)}; expected [K, 4], [K], [K]"
        )
    if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
        raise ModelError(f"predictor output for image {image_id!r} has NaN or infinite boxes or scores")
    classes_i = classes_f.astype(np.int64)
    if len(classes_i) and (
        np.any(classes_i != classes_f) or classes_i.min() < 0 or classes_i.max() >= num_classes
    ):
        raise ModelError(
            f"predictor output for image {image_id!r} has class ids {sorted(set(classes_f.tolist()))[:10]}; "
            f"expected integers 0..{num_classes - 1} (does the model's class list match the dataset's?)"
        )
    return ImageDetections(boxes, scores, classes_i)


def predict_dataset(
    predictor: Callable[[np.ndarray], Any], dataset: Any, *, progress_every: int = 50
) -> Dict[ImageId, ImageDetections]:
    """Run ``predictor`` on every image of ``dataset`` (BGR uint8 [H, W, 3] as read from disk).

    Returns image_id -> ``ImageDetections`` (xyxy source pixels). Raises ModelError on malformed
    predictor output and DataError on an unreadable image.
    """
    from edge.data.images import read_image

    out: Dict[ImageId, ImageDetections] = {}
    total = len(dataset.records)
    for n, record in enumerate(dataset.records, 1):
        image = read_image(record.path)
        out[record.image_id] = _check_prediction(predictor(image), record.image_id, len(dataset.class_names))
        if progress_every and (n % progress_every == 0 or n == total):
            log.info("predicted %d/%d images", n, total)
    return out


def evaluate_model(
    predictor: Callable[[np.ndarray], Any], dataset: Any, *, max_dets: int = COCO_MAX_DETS
) -> EvalResult:
    """Run ``predictor`` over the split and score it (see ``predict_dataset`` and ``evaluate_detections``)."""
    return evaluate_detections(dataset, predict_dataset(predictor, dataset), max_dets=max_dets)


# ---------------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------------


def plot_pr_curves(result: EvalResult, path: PathLike, *, title: Optional[str] = None) -> Path:
    """Write a PNG of the per-class VOC precision/recall curves at IoU > 0.5 (raw curves, AP in the legend).

    matplotlib is imported here (the ``plot`` extra); MissingDependencyError where absent.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError(
            "matplotlib", "the PR-curve plot (--plot-pr)", "install it with `pip install 'edge-detect[plot]'`"
        ) from exc
    from edge.artifacts import atomic_open

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    try:
        for c in result.per_class:
            if c.voc_ap50 is None:
                continue
            curve = c.voc_curve
            recall = np.concatenate(([0.0], curve.recall))
            precision = np.concatenate(([1.0 if len(curve.precision) else 0.0], curve.precision))
            ax.plot(recall, precision, label=f"{c.name} (AP50 {c.voc_ap50:.3f})", linewidth=1.5)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.grid(True, alpha=0.3)
        map50 = "n/a" if result.map50 is None else f"{result.map50:.3f}"
        ax.set_title(f"{title or 'precision/recall at IoU 0.5'} (mAP50 {map50})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        out = Path(path)
        with atomic_open(out, "wb") as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------------
# Text report
# ---------------------------------------------------------------------------------------------------


def _fmt(value: Optional[float]) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def format_table(result: EvalResult) -> str:
    """A fixed-width text table: one row per class (GT, detections, VOC AP50 both ways, COCO AP50-95),
    the mean row, and the COCO summary line. ``n/a`` marks a class without ground truth."""
    width = max([len("class"), len("all")] + [len(c.name) for c in result.per_class])
    header = f"{'class':<{width}}  {'gt':>6}  {'dets':>7}  {'AP50':>6}  {'AP50-11':>7}  {'AP50-95':>7}"
    lines = [header, "-" * len(header)]
    for c in result.per_class:
        lines.append(
            f"{c.name:<{width}}  {c.num_gt:>6}  {c.num_detections:>7}  {_fmt(c.voc_ap50)}  "
            f"{_fmt(c.voc_ap50_11pt):>7}  {_fmt(c.coco_ap):>7}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'all':<{width}}  {result.num_gt:>6}  {result.num_detections:>7}  {_fmt(result.map50)}  "
        f"{_fmt(result.map50_11pt):>7}  {_fmt(result.map50_95):>7}"
    )
    coco = result.coco
    lines.append(
        f"COCO bbox (maxDets {result.max_dets}, {result.num_images} images): "
        f"AP {_fmt(coco['ap']).strip()}  AP50 {_fmt(coco['ap50']).strip()}  AP75 {_fmt(coco['ap75']).strip()}  "
        f"APs {_fmt(coco['ap_small']).strip()}  APm {_fmt(coco['ap_medium']).strip()}  "
        f"APl {_fmt(coco['ap_large']).strip()}"
    )
    lines.append("AP50 and AP50-11: Pascal VOC (IoU > 0.5, all-points / 11-point); AP50-95: COCO")
    return "\n".join(lines)
