"""Why a run sees nothing: ``ScoreWatch`` follows the highest score of a run (or of one stream) and, when no
detection came out, says once, at WARNING, how far below the threshold the model stayed and which
threshold held it back (the deploy graph's own, or ``--conf``), with the fix.

The highest score of a frame is ``FramePacket.peak``: the deploy graph's ``max_score`` output (every
candidate before NMS; graphs from ``edge surgery`` carry it), else the best detection the graph returned
(which ``--conf`` may then have dropped). An older graph without ``max_score`` that returns nothing gives no
score at all: the warning then names the threshold only. The figures also go into the stats JSON
(``max_score``, ``score_threshold``; per stream in a multi-stream run).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Dict, Optional

log = logging.getLogger(__name__)

#: frames without any detection before the warning comes, mid-run (a run that ends sooner warns at its end)
WARN_AFTER_FRAMES = 300
DOC = "docs/troubleshooting.md#no-detections-the-highest-score-stays-below-the-threshold"


def graph_score_threshold(sidecar: Optional[Dict[str, Any]]) -> Optional[float]:
    """The deploy graph's own score threshold, from its sidecar's ``nms`` block (None when not recorded)."""
    nms = (sidecar or {}).get("nms")
    value = nms.get("score_threshold") if isinstance(nms, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def suggested_threshold(score: float) -> float:
    """A round threshold below ``score``: one significant digit, rounded down (0.048 -> 0.04), or one finer
    step down when the score is round itself (0.1 -> 0.09: ONNX NMS keeps only scores above it)."""
    score = float(f"{score:.2g}")  # float32's 0.1 is 0.10000000149, its 0.9 is 0.89999998
    if score <= 0:
        return 0.0
    step = 10.0 ** math.floor(math.log10(score))
    value = math.floor(score / step + 1e-9) * step
    if value >= score - step / 1000.0:
        value = math.floor(score / step * 10.0 - 1.0 + 1e-9) * step / 10.0
    return float(f"{value:.3g}")


def _below(peak: float, bound: float) -> str:
    """``peak`` with 3 significant digits, or as many more as it takes to print it below ``bound``
    (0.99998 against --conf 0.99999 reads "0.99998", not "1")."""
    for digits in range(3, 10):
        text = f"{peak:.{digits}g}"
        if float(text) < bound:
            return text
    return repr(float(peak))


def no_detections_message(frames: int, peak: Optional[float], graph_threshold: Optional[float], conf: float,
                          stream: str = "") -> str:
    """The one line of ``ScoreWatch``'s warning (see the module docstring)."""
    where = f"stream {stream}: " if stream else ""
    head = f"{where}no detections in {frames} frame{'s' if frames != 1 else ''}"
    graph = f"score threshold {graph_threshold:g} (the graph's)" if graph_threshold is not None else \
        "the graph's score threshold (not recorded in its sidecar)"
    check = f"or check the model (see {DOC})"
    if peak is None:
        at = f"{graph} and --conf {conf:g}" if conf > 0 else graph
        return (f"{head} at {at}; this graph does not report its highest score (re-run edge surgery to add its "
                f"max_score output), {check}")
    if graph_threshold is not None and peak < graph_threshold:  # NMS inside the graph dropped everything
        also = f" (and --conf {conf:g} above it)" if conf > graph_threshold else ""
        return (f"{head}: max score {_below(peak, graph_threshold)} < {graph}{also}; re-run edge surgery on the pre-NMS model with "
                f"--score-threshold {suggested_threshold(peak):g} (--conf can only raise it), {check}")
    if conf > 0 and peak < conf:
        return f"{head}: max score {_below(peak, conf)} < --conf {conf:g}; lower it with --conf {suggested_threshold(peak):g}, {check}"
    if graph_threshold is None:
        conf_part = f" or --conf {conf:g}" if conf > 0 else ""
        return (f"{head}: max score {peak:.3g} did not pass {graph}{conf_part}; lower it (edge surgery "
                f"--score-threshold {suggested_threshold(peak):g}), {check}")
    return (f"{head} although the max score {peak:.3g} reached {graph}: were they dropped as invalid "
            f"(detections_invalid_dropped in the stats)? {check[0].upper()}{check[1:]}")


class ScoreWatch:
    """Counts the frames and detections of one run or stream and keeps its highest score; ``observe`` per
    frame, ``finish`` at the end (warns once when nothing was detected, fills the stats). ``warn=False``:
    record only (a multi-stream run's total, whose streams warn on their own)."""

    def __init__(self, graph_threshold: Optional[float], conf: float = 0.0, *, stream: str = "",
                 warn: bool = True, warn_after: int = WARN_AFTER_FRAMES) -> None:
        self.graph_threshold = graph_threshold
        self.conf = float(conf)
        self.stream = stream
        self.warn = warn
        self.warn_after = int(warn_after)
        self.frames = 0
        self.detections = 0
        self.max_score: Optional[float] = None
        self.warned = False
        self._lock = threading.Lock()

    @classmethod
    def for_backend(cls, backend: Any, conf: float = 0.0, **kwargs: Any) -> "ScoreWatch":
        info = getattr(backend, "info", None)
        return cls(graph_score_threshold(getattr(info, "sidecar", None)), conf, **kwargs)

    def observe(self, peak: Optional[float], detections: int) -> None:
        """One frame: its highest score (``FramePacket.peak``) and its detections after ``--conf``."""
        with self._lock:
            self.frames += 1
            self.detections += int(detections)
            if peak is not None and (self.max_score is None or peak > self.max_score):
                self.max_score = float(peak)
            due = self.frames == self.warn_after and not self.detections
        if due:
            self._warn()

    def message(self) -> str:
        """The warning's line for what was observed so far."""
        return no_detections_message(self.frames, self.max_score, self.graph_threshold, self.conf, self.stream)

    def _warn(self) -> None:
        if self.warn and not self.warned:
            self.warned = True
            log.warning("%s", self.message())

    def finish(self, stats: Any = None, *, warn: bool = True) -> None:
        """The run (or stream) ended: warn once when it saw frames but no detection (``warn``: False for a
        run that failed, whose error says more); write the figures into ``stats.scores`` (an
        ``edge.runtime.stats.RunStats``) when given."""
        if warn and self.frames and not self.detections:
            self._warn()
        if stats is not None:
            stats.scores = self.to_dict()

    def to_dict(self) -> Dict[str, Any]:
        return {"max_score": None if self.max_score is None else round(self.max_score, 6),
                "score_threshold": {"graph": self.graph_threshold, "conf": self.conf}}
