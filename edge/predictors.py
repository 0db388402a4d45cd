"""Model files as ``edge.evaluate`` predictors: what ``edge eval MODEL`` runs, for every stage's file.

A predictor is a callable ``image_bgr (uint8 [H, W, 3]) -> (boxes float32 [K, 4] xyxy source pixels,
scores float32 [K], classes int64 [K] 0-based)``. Loaders by file kind (registered into
``edge.evaluate.PREDICTOR_LOADERS`` when this module is imported; ``edge.evaluate.load_predictor``
imports it):

``.onnx`` pre-NMS (outputs ``boxes`` [B, N, 4] xyxy input pixels and ``scores`` [B, N, C]; ``edge
    export`` and ``edge quantize`` output): ``OnnxPreNmsPredictor``, an ONNX Runtime session plus
    ``edge.nms.multiclass_nms`` with ``EvalSettings`` (score > 0.001, IoU 0.5 or the sidecar's, at most
    100 per image, the best 1000 candidates), boxes mapped back with ``LetterboxParams.to_source``.
``.onnx`` post-NMS (the four NMS outputs; ``edge surgery`` output, ONNX-NMS or TensorRT-flavoured):
    ``BackendPredictor`` over ``edge.runtime.onnxruntime_backend.OnnxRuntimeBackend``. The graph's own
    thresholds apply: a deploy graph made with ``--score-threshold 0.25`` scores lower mAP than the
    pre-NMS graph (a warning says so); make it with 0.001 to compare.
``.pt`` / ``.pth`` checkpoints (``edge train``): ``edge.train.predict.TorchPredictor`` (needs torch)
    with the same ``EvalSettings``, so a checkpoint and its exported ONNX score the same mAP.
``.engine`` / ``.plan``: ``BackendPredictor`` over ``edge.runtime.tensorrt_backend.TensorRTBackend``
    (needs TensorRT and PyCUDA; a clear error without them).

Preprocessing is the runtime's own (``edge.runtime.pipeline.Preprocessor``: letterbox into the model's
input layout), never a copy of it. No torch here (only the checkpoint loader imports it, lazily).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.errors import MissingDependencyError, ModelError, import_optional

log = logging.getLogger(__name__)

Prediction = Tuple[np.ndarray, np.ndarray, np.ndarray]
ModelSource = Union[str, "os.PathLike[str]", bytes, Any]  # path, serialized bytes or onnx.ModelProto

PRE_NMS_OUTPUTS = ("boxes", "scores")
NMS_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
ONNX_SUFFIXES = (".onnx",)
CHECKPOINT_SUFFIXES = (".pt", ".pth")
ENGINE_SUFFIXES = (".engine", ".plan")
#: a deploy graph whose own score threshold is above this underestimates mAP (warned about)
MAP_SCORE_THRESHOLD_WARN = 0.05

_EMPTY_BOXES = np.zeros((0, 4), np.float32)


@dataclass
class EvalSettings:
    """Postprocessing of a pre-NMS model (or a checkpoint) for mAP scoring.

    score_threshold: a (box, class) candidate enters NMS only if its score is strictly greater.
    iou_threshold: per-class NMS; suppressed when IoU > this.
    max_detections: kept per image after NMS (COCO scores at most 100).
    pre_nms_topk: only the best this-many (box, class) candidates enter NMS (0: all). The same rule as
        ``TorchPredictor``'s, so a checkpoint and its ONNX see the same candidates.
    class_agnostic: one NMS over all classes instead of one per class.
    """

    score_threshold: float = 0.001
    iou_threshold: float = 0.5
    max_detections: int = 100
    pre_nms_topk: int = 1000
    class_agnostic: bool = False

    def validate(self) -> EvalSettings:
        if not 0.0 <= float(self.score_threshold) < 1.0:
            raise ModelError(f"score threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 <= float(self.iou_threshold) <= 1.0:
            raise ModelError(f"IoU threshold must be in [0, 1], got {self.iou_threshold}")
        if int(self.max_detections) < 1:
            raise ModelError(f"max detections must be >= 1, got {self.max_detections}")
        if int(self.pre_nms_topk) < 0:
            raise ModelError(f"pre-NMS top-k must be >= 0 (0: no limit), got {self.pre_nms_topk}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return {"score_threshold": float(self.score_threshold), "iou_threshold": float(self.iou_threshold),
                "max_detections": int(self.max_detections), "pre_nms_topk": int(self.pre_nms_topk),
                "class_agnostic": bool(self.class_agnostic)}


def settings_from_sidecar(sidecar: Optional[Dict[str, Any]], base: Optional[EvalSettings] = None) -> EvalSettings:
    """``base`` (default ``EvalSettings()``) with the sidecar's NMS IoU threshold and class-agnostic flag
    (an ``eval`` block, else an ``nms`` block), when it records them."""
    settings = EvalSettings(**(base or EvalSettings()).to_dict())
    sc = sidecar or {}
    for key in ("eval", "nms"):
        block = sc.get(key)
        if isinstance(block, dict) and "iou_threshold" in block:
            settings.iou_threshold = float(block["iou_threshold"])
            settings.class_agnostic = bool(block.get("class_agnostic", settings.class_agnostic))
            break
    return settings.validate()


# ----------------------------------------------------------------------------------------------- postprocess


def topk_score_threshold(scores: np.ndarray, score_threshold: float, topk: int) -> float:
    """The effective threshold that lets only the best ``topk`` (box, class) scores through.

    ``scores``: [N, C]. With more than ``topk`` entries the threshold becomes just below the k-th largest
    score (float32 ``nextafter``, since candidates need score > threshold), else ``score_threshold``.
    """
    flat = np.asarray(scores, np.float32).reshape(-1)
    if not topk or flat.size <= topk:
        return float(score_threshold)
    kth = np.partition(flat, flat.size - int(topk))[flat.size - int(topk)]
    below = np.nextafter(np.float32(kth), np.float32(-np.inf), dtype=np.float32)
    return max(float(score_threshold), float(below))


def postprocess(boxes: np.ndarray, scores: np.ndarray, params: Any, settings: EvalSettings) -> Prediction:
    """Raw outputs of one image -> detections in source pixels.

    Args:
        boxes: [N, 4] xyxy input pixels (the graph's ``boxes`` for one image).
        scores: [N, C] per-class scores.
        params: the image's ``edge.letterbox.LetterboxParams``.
    Returns:
        (boxes float32 [K, 4] xyxy source pixels clipped to the frame, scores float32 [K], classes int64 [K]),
        by descending score.
    """
    from edge.nms import multiclass_nms

    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = np.asarray(scores, np.float32)
    s = s.reshape(b.shape[0], -1)
    threshold = topk_score_threshold(s, settings.score_threshold, settings.pre_nms_topk)
    kb, ks, kc = multiclass_nms(b, s, threshold, settings.iou_threshold, settings.max_detections,
                                class_agnostic=settings.class_agnostic)
    src = np.asarray(params.to_source(kb), np.float32).reshape(-1, 4) if len(kb) else _EMPTY_BOXES
    return src, np.asarray(ks, np.float32), np.asarray(kc, np.int64)


# ----------------------------------------------------------------------------------------------- ONNX


def _ort() -> Any:
    return import_optional("onnxruntime", "onnxruntime", "running ONNX models", "pip install onnxruntime")


def _onnx() -> Any:
    return import_optional("onnx", "onnx", "reading ONNX models", "pip install onnx")


def load_proto(model: ModelSource) -> Any:
    """An ``onnx.ModelProto`` from a path, serialized bytes or a ModelProto (returned as is)."""
    onnx = _onnx()
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"ONNX model {path} not found")
        try:
            return onnx.load(str(path))
        except Exception as exc:  # protobuf decode errors have several types
            raise ModelError(f"{path} is not a readable ONNX model: {exc}") from None
    if hasattr(model, "graph"):
        return model
    raise TypeError(f"expected an ONNX path, bytes or onnx.ModelProto, got {type(model).__name__}")


def output_names(model: ModelSource) -> List[str]:
    """The graph output names of an ONNX model (a path is read without its external data)."""
    if isinstance(model, (str, os.PathLike)):
        onnx = _onnx()
        try:
            proto = onnx.load(str(model), load_external_data=False)
        except Exception as exc:  # protobuf decode errors have several types
            raise ModelError(f"{model} is not a readable ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); re-export it") from None
    else:
        proto = load_proto(model)
    return [o.name for o in proto.graph.output]


def graph_kind(names: Sequence[str]) -> str:
    """'post-nms' (the four NMS outputs), 'pre-nms' (``boxes`` + ``scores``), or raise ModelError."""
    if all(any(n == c or n.endswith(c) for n in names) for c in NMS_OUTPUTS):
        return "post-nms"
    if all(c in names for c in PRE_NMS_OUTPUTS):
        return "pre-nms"
    raise ModelError(
        f"the ONNX outputs are {list(names)}; expected either a pre-NMS detector (outputs 'boxes' [B,N,4] xyxy "
        f"input pixels and 'scores' [B,N,C], as `edge export` writes) or a deploy graph with {list(NMS_OUTPUTS)} "
        "(as `edge surgery` writes). For another detector ONNX, run `edge surgery MODEL.onnx --boxes NAME "
        "--scores NAME ...` first and evaluate its output"
    )


def make_session(model: ModelSource, *, threads: int = 0, providers: Union[str, Sequence[str]] = "auto") -> Any:
    """An ONNX Runtime session (all graph optimizations, ``threads`` intra-op threads, 0: all cores)."""
    from edge.runtime.onnxruntime_backend import choose_providers

    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if isinstance(model, (str, os.PathLike)):
        data: Any = str(model)
    elif isinstance(model, (bytes, bytearray)):
        data = bytes(model)
    else:
        data = model.SerializeToString()
    try:
        return ort.InferenceSession(data, sess_options=so, providers=choose_providers(providers))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None


class OnnxPreNmsPredictor:
    """A pre-NMS ONNX (``boxes`` + ``scores`` outputs) as a predictor; see the module docstring.

    Args:
        model: path, serialized bytes or ``onnx.ModelProto`` (e.g. a candidate of the accuracy gate).
        sidecar: the model's sidecar (read beside a path when None; required in practice for float inputs,
            whose normalization only the sidecar knows).
        settings: postprocessing (default: ``settings_from_sidecar``).
        threads: ONNX Runtime intra-op threads (0: all cores).

    Besides ``__call__``: ``prepare`` (frame -> input, letterbox params), ``infer`` (input -> raw boxes
    [N, 4] and scores [N, C] of image 0) and ``postprocess``, so a caller may cache prepared inputs.
    """

    def __init__(self, model: ModelSource, *, sidecar: Optional[Dict[str, Any]] = None,
                 settings: Optional[EvalSettings] = None, threads: int = 0,
                 providers: Union[str, Sequence[str]] = "CPUExecutionProvider") -> None:
        from edge.calibration import model_input_format
        from edge.runtime.pipeline import Preprocessor

        if sidecar is None and isinstance(model, (str, os.PathLike)):
            from edge.artifacts import read_sidecar

            sidecar = read_sidecar(model, required=False) or {}
        self.sidecar: Dict[str, Any] = dict(sidecar or {})
        self.name = Path(model).name if isinstance(model, (str, os.PathLike)) else "(in-memory model)"
        proto = load_proto(model) if not isinstance(model, (str, os.PathLike)) else None
        names = output_names(model if proto is None else proto)
        if graph_kind(names) != "pre-nms":
            raise ModelError(f"{self.name} ends in NMS; open it with predictor_from_onnx (BackendPredictor)")
        self.settings = (settings or settings_from_sidecar(self.sidecar)).validate()
        self.input_format = model_input_format(model if proto is None else proto, self.sidecar)
        prov = [providers] if isinstance(providers, str) and providers != "auto" else providers
        self.session = make_session(model if proto is None else proto, threads=threads, providers=prov)
        self.input_name = self.session.get_inputs()[0].name
        self._preprocessor = Preprocessor(self.input_format)
        self._batch = max(1, int(self.input_format.batch))

    def prepare(self, image_bgr: np.ndarray) -> Tuple[np.ndarray, Any]:
        """Frame (uint8 [H, W, 3] BGR) -> (model input with batch 1, ``LetterboxParams``)."""
        out = self._preprocessor.new_buffer()
        params = self._preprocessor(image_bgr, out)
        return out, params

    def infer(self, inputs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Model input of one image (batch 1) -> (boxes float32 [N, 4] xyxy input pixels, scores float32 [N, C])."""
        batch = inputs if self._batch == 1 else np.ascontiguousarray(np.repeat(inputs[:1], self._batch, axis=0))
        try:
            boxes, scores = self.session.run(list(PRE_NMS_OUTPUTS), {self.input_name: batch})
        except Exception as exc:
            raise ModelError(f"ONNX Runtime failed on {self.name}: {str(exc).splitlines()[0]}") from None
        return np.asarray(boxes[0], np.float32), np.asarray(scores[0], np.float32)

    def postprocess(self, boxes: np.ndarray, scores: np.ndarray, params: Any) -> Prediction:
        return postprocess(boxes, scores, params, self.settings)

    def __call__(self, image_bgr: np.ndarray) -> Prediction:
        inputs, params = self.prepare(image_bgr)
        boxes, scores = self.infer(inputs)
        return self.postprocess(boxes, scores, params)

    def close(self) -> None:
        self.session = None


class BackendPredictor:
    """A deploy-graph backend (``edge.runtime.backend.Backend``: NMS inside) as a predictor.

    Frames go through the runtime's ``Preprocessor``; the backend's detections of image 0 are mapped back
    to source pixels with the letterbox inverse (clipped to the frame).
    """

    def __init__(self, backend: Any) -> None:
        from edge.runtime.pipeline import Preprocessor

        self.backend = backend
        self.input_format = backend.input_format
        self._preprocessor = Preprocessor(self.input_format)
        self._batch = max(1, int(self.input_format.batch))
        nms = (backend.info.sidecar or {}).get("nms") if backend.info is not None else None
        threshold = (nms or {}).get("score_threshold")
        if threshold is not None and float(threshold) > MAP_SCORE_THRESHOLD_WARN:
            log.warning(
                "%s keeps only detections scoring >= %.3g (its NMS score threshold), so its mAP is lower "
                "than the pre-NMS model's (scored from 0.001); for an mAP comparison make the deploy graph with "
                "`edge surgery --score-threshold 0.001 --iou-threshold 0.5`", backend.info.path.name, float(threshold))

    def __call__(self, image_bgr: np.ndarray) -> Prediction:
        buf = self._preprocessor.new_buffer()
        params = self._preprocessor(image_bgr, buf)
        if self._batch > 1:
            buf = np.ascontiguousarray(np.repeat(buf, self._batch, axis=0))
        det = self.backend.infer(buf)
        boxes, scores, classes = det.image(0)
        src = np.asarray(params.to_source(boxes), np.float32).reshape(-1, 4) if len(boxes) else _EMPTY_BOXES
        return src, np.asarray(scores, np.float32), np.asarray(classes, np.int64)

    def close(self) -> None:
        self.backend.close()


# ----------------------------------------------------------------------------------------------- loaders


def predictor_from_onnx(path: Union[str, "os.PathLike[str]"], settings: Optional[EvalSettings] = None,
                        *, threads: int = 0) -> Any:
    """An ONNX file as a predictor: pre-NMS -> ``OnnxPreNmsPredictor``; post-NMS (ONNX NMS or
    EfficientNMS_TRT through the reference op) -> ``BackendPredictor(OnnxRuntimeBackend)``."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX model {p} not found")
    kind = graph_kind(output_names(p))
    if kind == "pre-nms":
        return OnnxPreNmsPredictor(p, settings=settings, threads=threads)
    if settings is not None:
        log.info("%s has NMS inside; its own thresholds apply, not %s", p.name, settings.to_dict())
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions

    return BackendPredictor(OnnxRuntimeBackend(p, OrtOptions(threads=threads)))


def predictor_from_checkpoint(path: Union[str, "os.PathLike[str]"], settings: Optional[EvalSettings] = None) -> Any:
    """A checkpoint from ``edge train`` as a predictor (``edge.train.predict.TorchPredictor``, CPU)."""
    s = (settings or EvalSettings()).validate()
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "torch", f"evaluating the PyTorch checkpoint {Path(path).name}",
            "pip install 'edge-detect[train]'; or evaluate its exported ONNX instead (edge export, then "
            "edge eval MODEL.onnx)") from exc
    from edge.train.predict import predictor_from_checkpoint as torch_predictor

    return torch_predictor(path, device="cpu", score_threshold=s.score_threshold, iou_threshold=s.iou_threshold,
                           max_detections=s.max_detections, pre_nms_topk=s.pre_nms_topk,
                           class_agnostic=s.class_agnostic)


def predictor_from_engine(path: Union[str, "os.PathLike[str]"]) -> Any:
    """A TensorRT engine (``edge build``) as a predictor; needs TensorRT and PyCUDA (MissingDependencyError
    naming them otherwise)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"engine {p} not found; build one with `edge build MODEL.onnx --out engines/`")
    from edge.trt.api import load_tensorrt

    load_tensorrt()  # a clear "install TensorRT" error before anything else
    from edge.runtime.tensorrt_backend import TensorRTBackend

    return BackendPredictor(TensorRTBackend(p))


def register(overwrite: bool = False) -> None:
    """Register the loaders with ``edge.evaluate`` (loaders already registered for a suffix are kept
    unless ``overwrite``)."""
    from edge.evaluate import PREDICTOR_LOADERS, register_predictor_loader

    table = ((ONNX_SUFFIXES, predictor_from_onnx), (CHECKPOINT_SUFFIXES, predictor_from_checkpoint),
             (ENGINE_SUFFIXES, predictor_from_engine))
    for suffixes, loader in table:
        todo = [s for s in suffixes if overwrite or s not in PREDICTOR_LOADERS]
        if todo:
            register_predictor_loader(todo, loader)


register()
