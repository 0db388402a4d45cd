"""What the loaders do with bad input: the problem kinds, one warning each, and box clean-up.

Every loader (VOC, COCO, YOLO) reports each skipped or repaired item through a ``ProblemLog``: one
``logging`` warning naming the file and the reason, and one count in the dataset's ``LoadReport`` under a
fixed reason key (the ``Problem`` constants below), so a summary can say "degenerate box: 2".

Boxes here are absolute pixel corners ``x1, y1, x2, y2`` in the source image (see ``edge.data.records``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import List, Optional, Tuple

from edge.data.images import image_size, read_image
from edge.data.records import LoadReport
from edge.errors import DataError

log = logging.getLogger(__name__)


class Problem:
    """Reason keys counted in ``LoadReport.counts`` (stable strings: tests and summaries use them)."""

    # per box
    DEGENERATE_BOX = "degenerate box"  # zero or negative width/height: skipped
    CLIPPED_BOX = "box clipped to image border"  # kept, clipped
    OUTSIDE_BOX = "box outside image"  # nothing left after clipping: skipped
    UNKNOWN_CLASS = "unknown class"  # box skipped
    BAD_BOX = "unparsable box"  # missing/non-numeric/non-finite coordinates: skipped
    NOT_NORMALIZED = "box not normalized"  # YOLO value outside 0..1: skipped
    # per line / entry
    BAD_LINE = "unparsable line"  # YOLO label line or list-file line: skipped
    BAD_ENTRY = "unparsable entry"  # COCO image/annotation entry: skipped
    # per image
    MISSING_IMAGE = "missing image"  # image skipped
    CORRUPT_IMAGE = "corrupt image"  # header (or decode) fails: image skipped
    MISSING_ANNOTATION = "missing annotation file"  # VOC: image skipped
    BAD_ANNOTATION = "unparsable annotation file"  # VOC XML / YOLO label file unreadable: image skipped
    MISSING_LABELS = "missing label file"  # YOLO: kept as a background image
    MISSING_SIZE = "missing image size"  # VOC <size>/COCO width,height absent: used the image's size
    SIZE_MISMATCH = "annotated size differs from image"  # used the image's real size
    DUPLICATE_IMAGE = "duplicate image"  # second occurrence skipped


class ProblemLog:
    """Counts problems in a LoadReport and logs one warning per problem.

    After ``max_warnings_per_reason`` warnings of one reason, the rest of that reason go to DEBUG (the
    counts stay exact) so a dataset with thousands of identical defects does not flood the log.
    """

    def __init__(self, report: LoadReport, label: str, max_warnings_per_reason: Optional[int] = 100):
        self.report = report
        self.label = label
        self.max_warnings = max_warnings_per_reason

    def __call__(self, reason: str, where: str, detail: str) -> None:
        """Record one problem. ``where``: the file (and item); ``detail``: what was found and what was done."""
        self.report.add(reason, where)
        n = self.report.counts[reason]
        if self.max_warnings is None or n <= self.max_warnings:
            log.warning("%s: %s: %s: %s", self.label, where, reason, detail)
            if self.max_warnings is not None and n == self.max_warnings:
                log.warning(
                    "%s: %d '%s' warnings so far; further ones are logged at DEBUG level only "
                    "(all are counted in the load summary)",
                    self.label,
                    n,
                    reason,
                )
        else:
            log.debug("%s: %s: %s: %s", self.label, where, reason, detail)


BoxResult = Tuple[Optional[Tuple[float, float, float, float]], str]


def clean_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> BoxResult:
    """Check and clip one xyxy pixel box to an image of ``width`` x ``height``.

    Returns ``(box, status)``: status "ok" (box unchanged), "clipped" (box clipped to [0, width] x
    [0, height]), or, with ``box`` None, "nonfinite" (NaN/inf), "degenerate" (x2 <= x1 or y2 <= y1 as
    annotated) or "outside" (nothing left inside the image after clipping).
    """
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None, "nonfinite"
    if x2 <= x1 or y2 <= y1:
        return None, "degenerate"
    cx1, cy1 = min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height))
    cx2, cy2 = min(max(x2, 0.0), float(width)), min(max(y2, 0.0), float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        return None, "outside"
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        return (cx1, cy1, cx2, cy2), "clipped"
    return (x1, y1, x2, y2), "ok"


def report_box(
    problems: ProblemLog,
    status: str,
    where: str,
    box: Tuple[float, float, float, float],
    width: int,
    height: int,
) -> None:
    """Log/count the outcome of ``clean_box`` (nothing for "ok")."""
    coords = "({:g}, {:g}, {:g}, {:g})".format(*box)
    if status == "clipped":
        problems(Problem.CLIPPED_BOX, where, f"box {coords} extends past the {width}x{height} image; clipped")
    elif status == "degenerate":
        problems(Problem.DEGENERATE_BOX, where, f"box {coords} has zero or negative width/height; skipped")
    elif status == "outside":
        problems(Problem.OUTSIDE_BOX, where, f"box {coords} lies outside the {width}x{height} image; skipped")
    elif status == "nonfinite":
        problems(Problem.BAD_BOX, where, f"box {coords} has a non-finite coordinate; skipped")


def check_image(
    path: Path, problems: ProblemLog, where: str, decode: bool = False
) -> Optional[Tuple[int, int]]:
    """``(width, height)`` of an image file, or None (reported) if it is missing or corrupt.

    The header is always read (cheap); with ``decode`` the pixels are decoded too (``read_image``),
    which also catches truncated files whose header is intact.
    """
    if not path.is_file():
        problems(Problem.MISSING_IMAGE, where, f"image file {path} does not exist; image skipped")
        problems.report.skipped_images.append(str(path))
        return None
    try:
        size = image_size(path)
        if decode:
            image = read_image(path)
            size = (int(image.shape[1]), int(image.shape[0]))
    except DataError as exc:
        problems(Problem.CORRUPT_IMAGE, where, f"{exc}; image skipped")
        problems.report.skipped_images.append(str(path))
        return None
    return size


def check_annotated_size(
    problems: ProblemLog,
    where: str,
    annotated: Tuple[Optional[int], Optional[int]],
    real: Tuple[int, int],
    what: str = "annotated size",
) -> None:
    """Report a missing/invalid or disagreeing annotated size; the real size is used either way."""
    w, h = annotated
    if w is None or h is None or w <= 0 or h <= 0:
        problems(
            Problem.MISSING_SIZE,
            where,
            f"{what} missing or invalid; used the image's real size {real[0]}x{real[1]}",
        )
    elif (w, h) != tuple(real):
        problems(
            Problem.SIZE_MISMATCH,
            where,
            f"{what} {w}x{h} differs from the image's real size {real[0]}x{real[1]}; used the real size",
        )


def read_list_file(path: Path, what: str, expected: str, fix: str = "") -> List[str]:
    """The entries of a one-entry-per-line text file (split lists, manifests): stripped, with blank lines
    and ``#`` comment lines dropped. A missing or undecodable file raises a DataError naming ``what``
    and the ``expected`` content; ``fix`` (with its own leading separator) says how to repair it."""
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; expected {expected}{fix}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path} cannot be read as UTF-8 text ({exc}); expected {expected}") from None
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]
