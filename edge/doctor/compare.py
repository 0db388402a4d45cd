"""The self-test's comparisons, timing and inputs: pre-NMS errors and their tolerances, post-NMS identity
(``compare_detections``), wall-clock timing, the input frames (a folder of images or the test:// pattern)
and the network-input batches made from them by the runtime's own preprocessing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import EdgeError

# Pre-NMS parity, error = max|trt - ort| / max(1, max|ort|). TensorRT's "fp32" uses TF32 on Ampere/Orin.
PRE_NMS_TOLERANCE = {"fp32": 5e-3, "fp16": 2e-2, "int8": 1e-1}
# Post-NMS identity against the reference NMS run on TensorRT's own pre-NMS tensors: same count, same
# classes, boxes and scores equal up to the NMS plugin's arithmetic (fp16 inside fp16 engines).
POST_NMS_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-3, "int8": 2e-3}


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
