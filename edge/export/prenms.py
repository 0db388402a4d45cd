"""A pre-NMS graph (``edge export`` / ``edge quantize`` output) as a predictor, and how its raw outputs
become detections for mAP scoring.

A predictor is a callable ``image_bgr (uint8 [H, W, 3]) -> (boxes float32 [K, 4] xyxy source pixels,
scores float32 [K], classes int64 [K] 0-based)`` (``edge.evaluate``).

``OnnxPreNmsPredictor``: an ONNX Runtime session on a graph with outputs ``boxes`` [B, N, 4] xyxy input
pixels and ``scores`` [B, N, C], plus ``edge.nms.multiclass_nms`` with ``EvalSettings`` (score > 0.001,
IoU 0.5 or the sidecar's, at most 100 per image, the best 1000 candidates), boxes mapped back with
``LetterboxParams.to_source``. Frames go through the runtime's own ``edge.model_input.Preprocessor``.
The accuracy gate of ``edge quantize`` scores its candidates with it; ``edge eval`` opens pre-NMS files
with it (``edge.runtime.predictors``), and checkpoints with the same ``EvalSettings``, so a checkpoint and
its exported ONNX score the same mAP. No torch here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from edge.artifacts import PRE_NMS_OUTPUTS, read_sidecar
from edge.errors import ModelError
from edge.model_input import Preprocessor, model_input_format
from edge.ort import ModelSource, graph_kind, load_proto, open_session, output_names

log = logging.getLogger(__name__)

Prediction = Tuple[np.ndarray, np.ndarray, np.ndarray]

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


def postprocess_pre_nms(boxes: np.ndarray, scores: np.ndarray, params: Any, settings: EvalSettings) -> Prediction:
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
        if sidecar is None and isinstance(model, (str, os.PathLike)):
            sidecar = read_sidecar(model, required=False) or {}
        self.sidecar: Dict[str, Any] = dict(sidecar or {})
        self.name = Path(model).name if isinstance(model, (str, os.PathLike)) else "(in-memory model)"
        proto = load_proto(model) if not isinstance(model, (str, os.PathLike)) else None
        names = output_names(model if proto is None else proto)
        if graph_kind(names) != "pre-nms":
            raise ModelError(f"{self.name} ends in NMS; open it with edge.runtime.predictors.predictor_from_onnx")
        self.settings = (settings or settings_from_sidecar(self.sidecar)).validate()
        self.input_format = model_input_format(model if proto is None else proto, self.sidecar)
        prov = [providers] if isinstance(providers, str) and providers != "auto" else providers
        self.session = open_session(model if proto is None else proto, threads=threads, providers=prov)
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
        return postprocess_pre_nms(boxes, scores, params, self.settings)

    def __call__(self, image_bgr: np.ndarray) -> Prediction:
        inputs, params = self.prepare(image_bgr)
        boxes, scores = self.infer(inputs)
        return self.postprocess(boxes, scores, params)

    def close(self) -> None:
        self.session = None
