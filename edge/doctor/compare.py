"""The self-test's comparisons, timing and inputs: pre-NMS errors and their tolerances, post-NMS identity
(``compare_detections``), engine detections against ONNX Runtime's (``match_detections``: one to one within
tolerances, with the detections that sit on an NMS threshold told apart), wall-clock timing, the input
frames (a folder of images or the test:// pattern) and the network-input batches made from them by the
runtime's own preprocessing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import EdgeError

# Pre-NMS parity, error = max|trt - ort| / max(1, max|ort|). TensorRT's "fp32" uses TF32 on Ampere/Orin.
PRE_NMS_TOLERANCE = {"fp32": 5e-3, "fp16": 2e-2, "int8": 1e-1}
# Post-NMS identity against the reference NMS run on TensorRT's own pre-NMS tensors: same count, same
# classes, boxes and scores equal up to the NMS plugin's arithmetic (fp16 inside fp16 engines).
POST_NMS_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-3, "int8": 2e-3}
# An engine's detections against ONNX Runtime's on the same inputs (``match_detections``): boxes within
# tolerance * max(1, max|box|) pixels, scores within tolerance; the pre-NMS tolerances carried through NMS.
ENGINE_VS_ONNXRUNTIME_TOLERANCE = dict(PRE_NMS_TOLERANCE)


def pre_nms_errors(actual: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], names: Sequence[str]) -> Dict[str, float]:
    """Per tensor ``max|actual - expected| / max(1, max|expected|)`` (edge.export.verify.relative_error)."""
    from edge.export.verify import relative_error

    out = {}
    for name in names:
        a = np.asarray(actual[name], np.float64)
        b = np.asarray(expected[name], np.float64)
        if a.shape != b.shape:
            out[name] = float("inf")
            continue
        out[name] = relative_error(a, b)
    return out


def compare_detections(actual: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], tolerance: float) -> List[str]:
    """Differences between two sets of NMS outputs (empty: identical up to ``tolerance``).

    Identical means: the same number of detections per image, and a one-to-one match of detections with
    the same class, boxes within ``tolerance * max(1, max|box|)`` and scores within ``tolerance``
    (matching, not position, so that exact score ties may come in either order).
    """
    from edge.runtime.backend import detections_from_outputs

    a = detections_from_outputs(actual, copy=True)
    b = detections_from_outputs(expected, copy=True)
    problems: List[str] = []
    if len(a) != len(b):
        return [f"batch size {len(a)} vs {len(b)}"]
    for i in range(len(b)):
        ab, as_, ac = a.image(i)
        bb, bs, bc = b.image(i)
        if len(ab) != len(bb):
            problems.append(f"image {i}: {len(ab)} detections vs {len(bb)} expected")
            continue
        box_tol = tolerance * max(1.0, float(np.max(np.abs(bb))) if len(bb) else 1.0)
        used = np.zeros(len(bb), bool)
        for j in range(len(ab)):
            ok = (~used) & (bc == ac[j]) & (np.abs(bs - as_[j]) <= tolerance) & \
                 (np.max(np.abs(bb - ab[j]), axis=1) <= box_tol if len(bb) else np.zeros(0, bool))
            hit = np.flatnonzero(ok)
            if hit.size == 0:
                problems.append(f"image {i}: detection {j} (class {int(ac[j])}, score {float(as_[j]):.4f}, box "
                                f"{np.round(ab[j], 2).tolist()}) has no counterpart")
                break
            used[hit[0]] = True
    return problems


@dataclass
class NmsParams:
    """What the deploy graph's NMS keeps (its sidecar's ``nms`` block, written by ``edge surgery``).

    A detection whose score is within the tolerance of ``score_threshold``, that is among the last kept when
    ``max_detections`` were kept, or that a kept box of its class overlaps with an IoU near
    ``iou_threshold``, may be kept by one runtime and dropped by the other for a rounding difference:
    ``match_detections`` reports such unmatched detections as borderline, not as differences. Unknown
    fields (None) excuse nothing.
    """

    score_threshold: Optional[float] = None
    iou_threshold: Optional[float] = None
    max_detections: Optional[int] = None
    class_agnostic: bool = False

    @classmethod
    def from_sidecar(cls, sidecar: Optional[Dict[str, Any]]) -> "NmsParams":
        nms = (sidecar or {}).get("nms") or {}

        def number(key: str) -> Optional[float]:
            value = nms.get(key)
            return float(value) if isinstance(value, (int, float)) else None

        k = number("max_detections")
        return cls(number("score_threshold"), number("iou_threshold"), int(k) if k is not None else None,
                   bool(nms.get("class_agnostic", False)))


@dataclass
class DetectionMatch:
    """``match_detections``' result over one or more batches: pairs matched, the largest deviations of the
    matched pairs (box in pixels and relative to ``max(1, max|box|)``, score), the unmatched detections
    that sit on an NMS threshold (``borderline``) and those that do not (``problems``: a real difference)."""

    matched: int = 0
    max_box_px: float = 0.0
    max_box_rel: float = 0.0
    max_score: float = 0.0
    borderline: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    def merge(self, other: "DetectionMatch", label: str = "") -> None:
        self.matched += other.matched
        self.max_box_px = max(self.max_box_px, other.max_box_px)
        self.max_box_rel = max(self.max_box_rel, other.max_box_rel)
        self.max_score = max(self.max_score, other.max_score)
        self.borderline += [f"{label}{x}" for x in other.borderline]
        self.problems += [f"{label}{x}" for x in other.problems]

    def to_dict(self) -> Dict[str, Any]:
        return {"matched": self.matched, "max_box_deviation_px": round(self.max_box_px, 6),
                "max_box_deviation_relative": round(self.max_box_rel, 8), "max_score_deviation": round(self.max_score, 8),
                "borderline": list(self.borderline), "problems": list(self.problems)}


def _describe(what: str, box: np.ndarray, score: float, cls: int) -> str:
    return f"{what} detection (class {cls}, score {score:.4f}, box {np.round(box, 2).tolist()})"


def _borderline(box: np.ndarray, score: float, cls: int, other: Tuple[np.ndarray, np.ndarray, np.ndarray],
                kept: Tuple[np.ndarray, np.ndarray, np.ndarray], tolerance: float, nms: NmsParams) -> str:
    """Why a detection kept on one side (``kept``: that side's detections) and missing on the ``other`` may
    be a rounding flip at an NMS threshold ('' when it is not)."""
    from edge.boxes import box_iou

    if nms.score_threshold is not None and score <= nms.score_threshold + tolerance:
        return f"score within {tolerance:g} of the score threshold {nms.score_threshold:g}"
    if nms.max_detections and len(kept[1]) >= nms.max_detections and score <= float(np.min(kept[1])) + tolerance:
        return f"among the last of the {nms.max_detections} detections kept"
    if nms.iou_threshold is not None and len(other[0]):
        boxes, scores, classes = other
        same = (scores >= score - tolerance) & ((classes == cls) | nms.class_agnostic)
        if same.any():
            iou = box_iou(box[None].astype(np.float64), boxes[same].astype(np.float64))[0]
            margin = max(2.0 * tolerance, 0.01)
            if np.any(np.abs(iou - nms.iou_threshold) <= margin):
                return f"overlaps a kept box with an IoU within {margin:g} of the IoU threshold {nms.iou_threshold:g}"
    return ""


def match_image(actual: Tuple[np.ndarray, np.ndarray, np.ndarray], expected: Tuple[np.ndarray, np.ndarray, np.ndarray],
                tolerance: float, nms: NmsParams) -> DetectionMatch:
    """One image's detections (boxes [n,4], scores [n], classes [n]) against the expected ones, one to one.

    Expected detections are taken in descending score; each is paired with the unused actual detection of
    the same class whose box is within ``tolerance * max(1, max|expected box|)`` and score within
    ``tolerance`` (the closest box first). What stays unmatched on either side is borderline or a problem.
    """
    ab, as_, ac = (np.asarray(x) for x in actual)
    bb, bs, bc = (np.asarray(x) for x in expected)
    result = DetectionMatch()
    scale = max(1.0, float(np.max(np.abs(bb))) if len(bb) else 1.0)
    box_tol = tolerance * scale
    used = np.zeros(len(ab), bool)
    unmatched_expected = []
    for j in np.argsort(-bs, kind="stable"):
        dev = np.max(np.abs(ab - bb[j]), axis=1) if len(ab) else np.zeros(0)
        ok = (~used) & (ac == bc[j]) & (np.abs(as_ - bs[j]) <= tolerance) & (dev <= box_tol)
        hits = np.flatnonzero(ok)
        if hits.size == 0:
            unmatched_expected.append(int(j))
            continue
        i = int(hits[np.argmin(dev[hits])])
        used[i] = True
        result.matched += 1
        result.max_box_px = max(result.max_box_px, float(dev[i]))
        result.max_box_rel = max(result.max_box_rel, float(dev[i]) / scale)
        result.max_score = max(result.max_score, float(abs(as_[i] - bs[j])))
    sides = (("ONNX Runtime's", unmatched_expected, (bb, bs, bc), (ab, as_, ac)),
             ("the engine's", [int(i) for i in np.flatnonzero(~used)], (ab, as_, ac), (bb, bs, bc)))
    for side, indices, own, other in sides:
        for i in indices:
            text = _describe(side, own[0][i], float(own[1][i]), int(own[2][i]))
            why = _borderline(own[0][i], float(own[1][i]), int(own[2][i]), other, own, tolerance, nms)
            if why:
                result.borderline.append(f"{text} unmatched: {why}")
            else:
                result.problems.append(f"{text} has no counterpart")
    return result


def match_detections(actual: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], tolerance: float,
                     nms: Optional[NmsParams] = None) -> DetectionMatch:
    """An engine's NMS outputs (``actual``) against ONNX Runtime's (``expected``) on the same batch, image by
    image (``match_image``); a batch size difference is one problem."""
    from edge.runtime.backend import detections_from_outputs

    a = detections_from_outputs(actual, copy=True)
    b = detections_from_outputs(expected, copy=True)
    result = DetectionMatch()
    if len(a) != len(b):
        result.problems.append(f"batch size {len(a)} vs {len(b)}")
        return result
    for i in range(len(b)):
        result.merge(match_image(a.image(i), b.image(i), tolerance, nms or NmsParams()), f"image {i}: ")
    return result


def timing(fn: Callable[[], Any], warmup: int, iterations: int) -> Dict[str, float]:
    """Wall-clock latency of ``fn``: median and p90 in ms, and the FPS of the median."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(max(1, iterations)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    median = float(np.median(times))
    return {"median_ms": round(median, 3), "p90_ms": round(float(np.percentile(times, 90)), 3),
            "fps": round(1000.0 / median, 1) if median > 0 else float("inf"), "iterations": len(times)}


def selftest_frames(count: int, images: Optional[str] = None, size: Tuple[int, int] = (640, 480)) -> List[np.ndarray]:
    """``count`` BGR uint8 frames: the first images of folder ``images``, else the test:// pattern."""
    if images:
        import cv2

        files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        if not files:
            raise EdgeError(f"--images {images}: no .jpg/.jpeg/.png/.bmp files there")
        frames = []
        for p in files[:count]:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise EdgeError(f"cannot read image {p}")
            frames.append(img)
        while len(frames) < count:
            frames.append(frames[len(frames) % len(files)].copy())
        return frames
    from edge.runtime.sources import CaptureStatus, TestPatternSource, parse_source

    src = TestPatternSource(parse_source(f"test://?size={size[0]}x{size[1]}&frames={count * 15}"))
    src.open()
    frames = []
    try:
        for i in range(count * 15):
            status, frame = src.read()
            if status != CaptureStatus.FRAME or frame is None:
                break
            if i % 15 == 0:
                frames.append(frame.copy())
    finally:
        src.close()
    return frames


def make_batches(fmt: Any, frames: Sequence[np.ndarray]) -> List[np.ndarray]:
    """One network-input batch per frame (batch size from ``fmt``, 1 when dynamic), via the runtime's
    own ``Preprocessor`` (letterbox, layout, normalization)."""
    from edge.model_input import Preprocessor

    pre = Preprocessor(fmt)
    batch = max(1, int(fmt.batch))
    out = []
    for i in range(len(frames)):
        buf = np.empty(fmt.tensor_shape(batch), np.dtype(fmt.dtype))
        for b in range(batch):
            one = pre.new_buffer()
            pre(frames[(i + b) % len(frames)], one)
            buf[b] = one[0]
        out.append(buf)
    return out
