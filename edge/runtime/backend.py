"""The one interface every inference backend implements, and the contract each must pass.

A backend runs a *deploy graph*: a detector whose NMS is inside the graph (``edge surgery`` output, or a
TensorRT engine built from it). It has one image input and four outputs:

    input            uint8 [B, H, W, 3] BGR frames (layout ``uint8_nhwc_bgr``), or
                     float32/float16 [B, 3, H, W] RGB normalized (layout ``float_nchw_rgb``)
    num_detections     int32   [B, 1]
    detection_boxes    float32 [B, K, 4]  x1,y1,x2,y2 in *input* pixels (the letterboxed H x W image)
    detection_scores   float32 [B, K]     descending per image; only the first num_detections are valid
    detection_classes  int32   [B, K]     0-based index into the class names
    max_score          float32 [B]        optional (graphs from edge surgery carry it, older ones do not):
                                          each image's highest score before NMS, for "why nothing is seen"

The contract (``conformance_report`` checks it; tests run it on every backend present, and
``edge doctor`` can run it on a device):

1. ``input_spec`` / ``output_specs`` describe exactly one input and the four outputs above.
2. ``infer(batch)`` validates the batch (shape, dtype, contiguity) and raises ``ModelError`` on a
   mismatch (never a crash inside the runtime); it returns a ``DetectionBatch`` whose arrays are owned
   by the caller: a later ``infer`` never overwrites them.
3. Same input, same output (deterministic); different inputs give independent results.
4. ``0 <= num_detections <= K``; boxes finite; classes in ``[0, num_classes)`` when classes are known.
   ``infer`` enforces it on whatever the graph returns: a detection with a non-finite box or score, a
   score outside [0, 1] or a class outside the class list is dropped (``drop_invalid``), counted in
   ``DetectionBatch.invalid_dropped`` and ``Backend.invalid_dropped``, and warned about once.
5. ``close()`` frees everything and is idempotent; ``infer`` after ``close`` raises ``EdgeError``.
   Backends are context managers.
6. A backend whose ``concurrent_infer`` is True may be called from several threads at once (the
   pipeline's parallel inference workers); each call's results equal those of the same call alone.
   Backends that own one set of device buffers and one stream (TensorRT) leave it False.

Public ``infer`` validates, private ``_infer`` works (the Polygraphy pattern).
"""

from __future__ import annotations

import abc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.artifacts import MAX_SCORE_OUTPUT, NMS_OUTPUTS
from edge.errors import EdgeError, ModelError
from edge.model_input import InputFormat, TensorSpec

log = logging.getLogger(__name__)

class PreNmsModelError(ModelError):
    """The graph ends in boxes + scores (no NMS inside): ``edge surgery`` turns it into a deploy graph."""


@dataclass
class ModelInfo:
    """What the runtime knows about a deploy graph: where it is, its input format and class names."""

    path: Path
    input_name: str
    input_format: InputFormat
    class_names: List[str] = field(default_factory=list)
    max_detections: int = -1
    sidecar: Dict[str, Any] = field(default_factory=dict)

    def label(self, class_id: int) -> str:
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return str(class_id)


@dataclass
class DetectionBatch:
    """The four NMS outputs of one batch, owned by the caller.

    num: int32 [B]; boxes: float32 [B, K, 4] xyxy input pixels; scores: float32 [B, K];
    classes: int32 [B, K]. Only the first ``num[i]`` rows of image ``i`` are valid.
    """

    num: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    #: detections of this batch dropped as invalid by ``drop_invalid`` (NaN boxes, scores outside [0, 1],
    #: classes outside the class list)
    invalid_dropped: int = 0
    #: float32 [B]: each image's highest score before NMS (the graph's ``max_score`` output), or None when
    #: the graph does not have that output
    max_score: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.num.shape[0])

    def image(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes [n,4] xyxy input pixels, scores [n], classes [n]) of image ``i``; views, no copies."""
        n = int(self.num[i])
        return self.boxes[i, :n], self.scores[i, :n], self.classes[i, :n]

    def peak(self, i: int) -> Optional[float]:
        """The highest score image ``i`` reached: the graph's ``max_score`` (before NMS, every candidate)
        when it has that output, else its best detection's score; None when neither is known."""
        if self.max_score is not None:
            return float(self.max_score[i])
        n = int(self.num[i])
        return float(self.scores[i, :n].max()) if n else None


def detections_from_outputs(outputs: Dict[str, np.ndarray], *, copy: bool = False) -> DetectionBatch:
    """Build a ``DetectionBatch`` from the four named outputs, normalizing dtypes and shapes.

    Raises ModelError naming what is missing or malformed.
    """
    missing = [n for n in NMS_OUTPUTS if n not in outputs]
    if missing:
        raise ModelError(
            f"backend outputs {sorted(outputs)} lack {missing}; edge-run needs a graph with NMS inside "
            f"({', '.join(NMS_OUTPUTS)}): run `edge surgery MODEL.onnx` first"
        )
    num = np.asarray(outputs["num_detections"])
    boxes = np.asarray(outputs["detection_boxes"])
    scores = np.asarray(outputs["detection_scores"])
    classes = np.asarray(outputs["detection_classes"])
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ModelError(f"detection_boxes must be [B,K,4], found {list(boxes.shape)}")
    b, k = boxes.shape[:2]
    if scores.shape != (b, k) or classes.shape != (b, k) or num.size != b:
        raise ModelError(
            f"NMS outputs disagree: boxes {list(boxes.shape)}, scores {list(scores.shape)}, "
            f"classes {list(classes.shape)}, num_detections {list(num.shape)}; expected [B,K,4], [B,K], "
            "[B,K], [B,1]"
        )
    num = np.clip(num.reshape(b), 0, k).astype(np.int32)
    peak = outputs.get(MAX_SCORE_OUTPUT)
    return DetectionBatch(
        num=num,
        boxes=boxes.astype(np.float32, copy=copy),
        scores=scores.astype(np.float32, copy=copy),
        classes=classes.astype(np.int32, copy=copy),
        max_score=None if peak is None or np.asarray(peak).size != b else
        np.asarray(peak, np.float32).reshape(b).copy(),
    )


def find_max_score_name(names: Sequence[str]) -> Optional[str]:
    """The graph's own name of the optional ``max_score`` output (exact, else a unique suffix match), or None."""
    hits = [n for n in names if n == MAX_SCORE_OUTPUT] or [n for n in names if n.endswith(MAX_SCORE_OUTPUT)]
    return hits[0] if len(hits) == 1 else None


def outputs_to_fetch(names: Sequence[str], mapping: Dict[str, str]) -> Tuple[List[str], List[str]]:
    """(the graph's output names to fetch, their canonical names), in the same order: the four NMS outputs
    (``mapping``: canonical -> graph name, from ``find_output_names``), then ``max_score`` when the graph
    has that optional output among ``names``."""
    graph = [mapping[c] for c in NMS_OUTPUTS]
    canonical = list(NMS_OUTPUTS)
    peak = find_max_score_name([n for n in names if n not in graph])
    if peak is not None:  # the optional fifth output (edge surgery's): the highest score before NMS
        graph.append(peak)
        canonical.append(MAX_SCORE_OUTPUT)
    return graph, canonical


#: a score this little above 1 is rounding (fp16 engines), clamped to 1; further above, the detection is dropped
SCORE_TOLERANCE = 1e-3


def invalid_mask(det: DetectionBatch, num_classes: int = 0) -> np.ndarray:
    """[B, K] bool: the valid rows (the first ``num[i]`` of image ``i``) that break contract point 4: a
    non-finite box coordinate or score, a score below 0 or above 1 (+ ``SCORE_TOLERANCE``), a class below 0
    or, when ``num_classes`` > 0, at or above it."""
    b, k = det.scores.shape
    rows = np.arange(k)[None, :] < det.num[:, None]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(det.boxes).all(axis=-1) | ~np.isfinite(det.scores)
        bad |= (det.scores < 0.0) | (det.scores > 1.0 + SCORE_TOLERANCE) | (det.classes < 0)
        if num_classes > 0:
            bad |= det.classes >= num_classes
    return rows & bad


def drop_invalid(det: DetectionBatch, num_classes: int = 0) -> DetectionBatch:
    """Remove the detections ``invalid_mask`` flags from ``det`` (in place: the rows that stay keep their
    order and move up, ``num`` shrinks) and clamp scores within ``SCORE_TOLERANCE`` above 1 to 1.
    ``det.invalid_dropped`` is set to the number removed. The arrays must be caller-owned."""
    bad = invalid_mask(det, num_classes)
    dropped = int(bad.sum())
    if dropped:
        for i in np.flatnonzero(bad.any(axis=1)):
            n = int(det.num[i])
            keep = np.flatnonzero(~bad[i, :n])
            m = len(keep)
            for a in (det.boxes, det.scores, det.classes):
                a[i, :m] = a[i, keep]
            det.boxes[i, m:n] = 0.0
            det.scores[i, m:n] = 0.0
            det.classes[i, m:n] = 0
            det.num[i] = m
    np.minimum(det.scores, 1.0, out=det.scores)
    det.invalid_dropped = dropped
    return det


def find_output_names(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> Dict[str, str]:
    """Map the four canonical output names to the graph's own names.

    By name first (exact, then suffix match such as ``nms/num_detections``); a graph with exactly four
    outputs shaped [B,1], [B,K,4], [B,K], [B,K] is accepted in that order. Raises ModelError otherwise.
    """
    mapping: Dict[str, str] = {}
    for canonical in NMS_OUTPUTS:
        hits = [n for n in names if n == canonical] or [n for n in names if n.endswith(canonical)]
        if len(hits) == 1:
            mapping[canonical] = hits[0]
    if len(mapping) == 4:
        return mapping
    ranks = [len(s) for s in shapes]
    if len(names) == 4 and ranks == [2, 3, 2, 2] and (shapes[1][-1] in (4, -1)):
        return dict(zip(NMS_OUTPUTS, names))
    found = ", ".join(f"{n}{list(s)}" for n, s in zip(names, shapes))
    error = PreNmsModelError if len(names) == 2 and sorted(ranks) == [3, 3] else ModelError
    raise error(
        f"graph outputs [{found}] are not the four NMS outputs edge-run expects "
        f"({', '.join(NMS_OUTPUTS)}). A pre-NMS model (boxes + scores) needs NMS appended first: "
        "`edge surgery MODEL.onnx --out MODEL.nms.onnx`"
    )


def class_names_from_sidecar(sidecar: Optional[Dict[str, Any]]) -> List[str]:
    sc = sidecar or {}
    names = sc.get("class_names") or sc.get("classes") or sc.get("names") or []
    if isinstance(names, dict):  # {"0": "cat", ...}
        names = [names[k] for k in sorted(names, key=lambda k: int(k))]
    return [str(n) for n in names]


class Backend(abc.ABC):
    """Runs a deploy graph on a batch of preprocessed frames. See the module docstring for the contract.

    Subclasses set ``name``, fill ``self.info``, ``self._input_spec``, ``self._output_specs`` and implement
    ``_infer`` (validated input in, the four named outputs out, caller-owned) and ``_close``.
    """

    name = "backend"
    #: ``infer`` may run on several threads at once (contract point 6); False: one call at a time.
    concurrent_infer = False
    #: the largest batch a dynamic-batch graph runs (a TensorRT engine's profile maximum); None: no limit.
    max_batch: Optional[int] = None

    def __init__(self) -> None:
        self.info: Optional[ModelInfo] = None
        self._input_spec: Optional[TensorSpec] = None
        self._output_specs: List[TensorSpec] = []
        self._closed = False
        #: detections dropped as invalid over this backend's life (``drop_invalid``); thread-safe
        self.invalid_dropped = 0
        self._invalid_lock = threading.Lock()

    # -- description ---------------------------------------------------------------------------
    @property
    def input_spec(self) -> TensorSpec:
        assert self._input_spec is not None
        return self._input_spec

    @property
    def output_specs(self) -> List[TensorSpec]:
        return list(self._output_specs)

    @property
    def input_format(self) -> InputFormat:
        assert self.info is not None
        return self.info.input_format

    def describe(self) -> str:
        """One line for logs: backend, device/provider and model."""
        path = self.info.path if self.info else "?"
        return f"{self.name} ({path})"

    # -- inference -----------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> DetectionBatch:
        """Run the graph on ``batch`` (shape/dtype per ``input_format``); returns caller-owned results."""
        if self._closed:
            raise EdgeError(f"{self.name} backend is closed; create a new one to run inference")
        self._check_input(batch)
        det = detections_from_outputs(self._infer(batch), copy=True)
        num_classes = len(self.info.class_names) if self.info is not None else 0
        drop_invalid(det, num_classes)
        if det.invalid_dropped:
            with self._invalid_lock:
                first = self.invalid_dropped == 0
                self.invalid_dropped += det.invalid_dropped
            if first:
                log.warning(
                    "%s returned %d invalid detection(s) (a NaN or infinite box or score, a score outside [0, 1] "
                    "or a class outside its %d class names): dropped; later ones are dropped silently and "
                    "counted in the stats (detections_invalid_dropped). The model or its engine is broken: "
                    "re-export it and check it with `edge eval`", self.describe(), det.invalid_dropped,
                    num_classes)
        return det

    def _check_input(self, batch: np.ndarray) -> None:
        spec = self.input_spec
        if not isinstance(batch, np.ndarray):
            raise ModelError(f"input must be a numpy array, found {type(batch).__name__}")
        if batch.dtype != np.dtype(spec.dtype):
            raise ModelError(
                f"input dtype {batch.dtype} does not match the graph's {spec.describe()}; preprocess with "
                f"the model's input format ({self.input_format.layout})"
            )
        if batch.ndim != len(spec.shape) or any(
            d >= 0 and d != s for d, s in zip(spec.shape, batch.shape)
        ):
            raise ModelError(
                f"input shape {list(batch.shape)} does not match the graph's {spec.describe()}"
            )
        if not batch.flags.c_contiguous:
            raise ModelError("input must be C-contiguous (np.ascontiguousarray)")

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """Validated batch in; the four canonical output names -> caller-owned arrays out."""

    def warmup(self, iterations: int = 2) -> None:
        """Run a few zero batches so first-frame latency does not skew statistics."""
        batch = np.zeros(self.input_format.tensor_shape(max(1, self.input_format.batch)), self.input_spec.dtype)
        for _ in range(max(0, iterations)):
            self.infer(batch)

    # -- threads -------------------------------------------------------------------------------
    def bind_thread(self) -> None:  # noqa: B027 - optional hook
        """Called once on the thread that will run ``infer`` (the pipeline's infer stage), before the
        first frame. The TensorRT backend makes its CUDA context current there."""

    def release_thread(self) -> None:  # noqa: B027 - optional hook
        """Called on that same thread when it stops running inference."""

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Free resources. Called once."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


def conformance_report(
    backend: Backend, batches: Sequence[np.ndarray], num_classes: Optional[int] = None
) -> List[str]:
    """Check ``backend`` against the contract on at least two different input batches.

    Returns the list of violations (empty when conformant). Does not close the backend.
    """
    problems: List[str] = []
    if len(batches) < 2:
        raise ValueError("conformance_report needs at least two different batches")
    spec = backend.input_spec
    outs = backend.output_specs
    if len(outs) != 4:
        problems.append(f"expected 4 outputs, found {[o.describe() for o in outs]}")
    if backend.info is None:
        problems.append("backend.info is not set")
    # 1. results are caller-owned and deterministic
    invalid_before = getattr(backend, "invalid_dropped", 0)
    first = backend.infer(batches[0])
    snapshot = [a.copy() for a in (first.num, first.boxes, first.scores, first.classes)]
    second = backend.infer(batches[1])
    again = backend.infer(batches[0])
    for name, before, now in zip(("num", "boxes", "scores", "classes"), snapshot,
                                 (first.num, first.boxes, first.scores, first.classes)):
        if not np.array_equal(before, now):
            problems.append(f"{name} of an earlier infer() changed after later calls (not caller-owned)")
    for name, a, b in zip(("num", "boxes", "scores", "classes"), snapshot,
                          (again.num, again.boxes, again.scores, again.classes)):
        if a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
            problems.append(f"{name} differs between two runs of the same input (not deterministic)")
    # 2. dtypes, shapes and value ranges
    for label, det in (("batch 0", first), ("batch 1", second)):
        b = det.boxes.shape[0]
        if b != batches[0].shape[0]:
            problems.append(f"{label}: output batch {b} != input batch {batches[0].shape[0]}")
        if det.num.dtype != np.int32 or det.classes.dtype != np.int32:
            problems.append(f"{label}: num/classes must be int32")
        if det.boxes.dtype != np.float32 or det.scores.dtype != np.float32:
            problems.append(f"{label}: boxes/scores must be float32")
        k = det.boxes.shape[1]
        if np.any(det.num < 0) or np.any(det.num > k):
            problems.append(f"{label}: num_detections {det.num.tolist()} outside [0, {k}]")
        for i in range(b):
            boxes, scores, classes = det.image(i)
            if not np.all(np.isfinite(boxes)):
                problems.append(f"{label} image {i}: non-finite boxes")
            if boxes.size and (np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1])):
                problems.append(f"{label} image {i}: boxes are not x1<=x2, y1<=y2")
            if num_classes is not None and classes.size and (classes.min() < 0 or classes.max() >= num_classes):
                problems.append(f"{label} image {i}: classes {classes.tolist()} outside [0, {num_classes})")
            if scores.size > 1 and np.any(np.diff(scores) > 1e-6):
                problems.append(f"{label} image {i}: scores not in descending order")
    invalid = getattr(backend, "invalid_dropped", 0) - invalid_before
    if invalid:  # infer() dropped them (contract point 4): the graph itself returned them
        problems.append(f"the graph returned {invalid} invalid detection(s) (NaN or infinite boxes or scores, "
                        "scores outside [0, 1] or classes outside the class names), dropped by infer()")
    # 3. concurrent calls (backends that allow them) give what the same calls give alone
    if getattr(backend, "concurrent_infer", False):
        problems.extend(_concurrency_problems(backend, batches[:2], [snapshot, [a.copy() for a in (
            second.num, second.boxes, second.scores, second.classes)]]))
    # 4. validation errors, not crashes
    wrong = np.zeros(tuple(max(1, d) + (1 if i == len(spec.shape) - 1 else 0) for i, d in enumerate(spec.shape)),
                     spec.dtype)
    for bad, what in ((wrong, "a wrong shape"), (batches[0].astype(np.float64), "a wrong dtype")):
        try:
            backend.infer(bad)
            problems.append(f"infer() accepted {what}")
        except ModelError:
            pass
        except Exception as exc:  # noqa: BLE001 - the contract says ModelError
            problems.append(f"infer() with {what} raised {type(exc).__name__}, not ModelError: {exc}")
    return problems


def _concurrency_problems(backend: Backend, batches: Sequence[np.ndarray], expected: Sequence[Sequence[np.ndarray]],
                          threads: int = 4, calls: int = 6) -> List[str]:
    """``threads`` threads call ``infer`` ``calls`` times each at once, alternating the batches; every
    result must equal that batch's result alone (``expected``: num, boxes, scores, classes per batch)."""
    import threading

    problems: List[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            backend.bind_thread()
            try:
                start.wait(timeout=30)
                for c in range(calls):
                    i = (t + c) % len(batches)
                    det = backend.infer(batches[i])
                    got = (det.num, det.boxes, det.scores, det.classes)
                    if any(a.shape != b.shape or not np.allclose(a, b, atol=1e-4) for a, b in zip(got, expected[i])):
                        with lock:
                            problems.append(f"a concurrent infer() of batch {i} differs from the same call alone")
                        return
            finally:
                backend.release_thread()
        except threading.BrokenBarrierError:
            pass  # another thread failed first and said why
        except Exception as exc:  # noqa: BLE001 - reported as a violation
            start.abort()
            with lock:
                problems.append(f"concurrent infer() raised {type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=work, args=(t,), name=f"conformance-{t}") for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sorted(set(problems))


def measure_throughput(backend: Backend, batch: np.ndarray, iterations: int = 100, warmup: int = 5) -> float:
    """Raw inference calls per second on ``batch``, back to back on the calling thread (``edge bench``'s
    ``raw_fps``: the ceiling an end-to-end loop is compared against)."""
    import time

    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    backend.bind_thread()
    try:
        for _ in range(max(0, warmup)):
            backend.infer(batch)
        t0 = time.perf_counter()
        for _ in range(iterations):
            backend.infer(batch)
        return iterations / (time.perf_counter() - t0)
    finally:
        backend.release_thread()
