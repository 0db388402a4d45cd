"""Model files as ``edge.evaluate`` predictors: what ``edge eval MODEL`` runs, for every stage's file.

A predictor is a callable ``image_bgr (uint8 [H, W, 3]) -> (boxes float32 [K, 4] xyxy source pixels,
scores float32 [K], classes int64 [K] 0-based)``. ``load_predictor(path)`` picks the loader by the file's
suffix (``PREDICTOR_LOADERS``, filled from ``edge.artifacts.MODEL_SUFFIXES``, the table every verb uses;
``register_predictor_loader`` adds one):

``.onnx`` pre-NMS (``edge export`` and ``edge quantize`` output): ``edge.export.prenms.OnnxPreNmsPredictor``.
``.onnx`` post-NMS (the four NMS outputs; ``edge surgery`` output, ONNX-NMS or TensorRT-flavoured):
    ``BackendPredictor`` over ``edge.runtime.onnxruntime_backend.OnnxRuntimeBackend``. The graph's own
    thresholds apply: a deploy graph made with ``--score-threshold 0.25`` scores lower mAP than the
    pre-NMS graph (a warning says so); make it with 0.001 to compare.
checkpoints (``edge train``): ``edge.train.predict.TorchPredictor`` (needs torch) with the same
    ``EvalSettings``, so a checkpoint and its exported ONNX score the same mAP.
engines: ``BackendPredictor`` over ``edge.runtime.tensorrt_backend.TensorRTBackend`` (needs TensorRT and
    PyCUDA; a clear error without them).

Preprocessing is the runtime's own (``edge.model_input.Preprocessor``: letterbox into the model's input
layout), never a copy of it. No torch here (only the checkpoint loader imports it, lazily).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.artifacts import MODEL_SUFFIXES, sidecar_path
from edge.errors import EdgeError, MissingDependencyError, ModelError
from edge.export.prenms import EvalSettings, OnnxPreNmsPredictor, Prediction
from edge.model_input import Preprocessor
from edge.ort import graph_kind, output_names
from edge.runtime.backend import class_names_from_sidecar

log = logging.getLogger(__name__)

#: a deploy graph whose own score threshold is above this underestimates mAP (warned about)
MAP_SCORE_THRESHOLD_WARN = 0.05

_EMPTY_BOXES = np.zeros((0, 4), np.float32)


class BackendPredictor:
    """A deploy-graph backend (``edge.runtime.backend.Backend``: NMS inside) as a predictor.

    Frames go through the runtime's ``Preprocessor``; the backend's detections of image 0 are mapped back
    to source pixels with the letterbox inverse (clipped to the frame).
    """

    def __init__(self, backend: Any) -> None:
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


#: file suffix (lower case, with the dot) -> loader(path) -> predictor
PREDICTOR_LOADERS: Dict[str, Callable[[Path], Callable[[np.ndarray], Any]]] = {}
_LOADER_OF_KIND = {"onnx": predictor_from_onnx, "checkpoint": predictor_from_checkpoint, "engine": predictor_from_engine}


def register_predictor_loader(
    suffixes: Iterable[str], loader: Callable[[Path], Callable[[np.ndarray], Any]]
) -> None:
    """Make ``load_predictor`` open files ending in ``suffixes`` (e.g. ``[".onnx"]``) with ``loader``."""
    for suffix in suffixes:
        suffix = suffix.lower()
        if not suffix.startswith("."):
            raise ValueError(f"suffix must start with a dot, got {suffix!r}")
        PREDICTOR_LOADERS[suffix] = loader


def register(overwrite: bool = False) -> None:
    """Register the built-in loader of every suffix in ``MODEL_SUFFIXES`` (a loader already registered
    for a suffix is kept unless ``overwrite``)."""
    for suffix, kind in MODEL_SUFFIXES.items():
        if overwrite or suffix not in PREDICTOR_LOADERS:
            register_predictor_loader([suffix], _LOADER_OF_KIND[kind])


register()


def load_predictor(path: Union[str, "os.PathLike[str]"]) -> Callable[[np.ndarray], Any]:
    """Open a model file (checkpoint, ONNX, engine) as a predictor.

    Raises:
        ModelError: the file does not exist.
        EdgeError: no loader handles this kind of file (use a detections file instead).
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {p} does not exist; check the MODEL argument")
    loader = PREDICTOR_LOADERS.get(p.suffix.lower())
    if loader is None:
        supported = ", ".join(sorted(PREDICTOR_LOADERS))
        raise EdgeError(
            f"evaluating model files ({p.suffix or 'no suffix'}: {p.name}) is not supported yet "
            f"(model kinds supported: {supported}); run the model yourself and score its output with "
            "--detections FILE (the COCO results format)"
        )
    return loader(p)


# -- class names: the model's against the dataset's -----------------------------------------------


def predictor_class_names(predictor: Any, path: Union[str, "os.PathLike[str]"]) -> Tuple[List[str], str]:
    """The class names a predictor of ``path`` was made with, and where they come from (for messages).

    ``BackendPredictor``: its backend's sidecar (``backend.info.class_names``); ``OnnxPreNmsPredictor``: its
    sidecar; ``TorchPredictor``: the checkpoint's model card (``class_names``, set by its loader). An empty
    list: the model names no classes (no sidecar, or a sidecar without class names).
    """
    p = Path(path)
    sidecar = sidecar_path(p)
    backend = getattr(predictor, "backend", None)
    if backend is not None and getattr(backend, "info", None) is not None:
        names = list(backend.info.class_names)
    elif isinstance(getattr(predictor, "sidecar", None), dict):
        names = class_names_from_sidecar(predictor.sidecar)
    elif getattr(predictor, "class_names", None) is not None:
        names = [str(n) for n in predictor.class_names]
        return names, ("its model card" if names else "nowhere: its model card has no class names")
    else:
        names = []
    if names:
        return names, f"its sidecar {sidecar}"
    state = "has no class names" if sidecar.is_file() else "was not found"
    return [], f"nowhere: its sidecar {sidecar} {state}"


def _same_name(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def check_class_names(model_names: Sequence[str], dataset_names: Sequence[str], *, origin: str, model: str,
                      by_index: bool = False) -> List[str]:
    """Compare the model's class names with the dataset's before scoring; returns the lines to print.

    Equal lists (case and surrounding spaces aside) pass. A model with no names is scored by index, said in
    a warning line (its ids are taken as the dataset's classes in order). Different lists raise
    ``EdgeError`` naming both, unless ``by_index`` (``edge eval --map-classes-by-index``): then the mapping
    is printed, model class i scored as dataset class i (a model with more classes than the dataset is
    refused all the same).
    """
    model_names, dataset_names = list(model_names), list(dataset_names)
    listed = ", ".join(f"{i} {n}" for i, n in enumerate(dataset_names))
    if not model_names:
        msg = (f"warning: {model} has no class names (they come from {origin}); its class ids are scored as "
               f"the dataset's classes by index: {listed}. Put the class names in the model's sidecar to have "
               "them checked")
        return [msg]
    if len(model_names) == len(dataset_names) and all(map(_same_name, model_names, dataset_names)):
        return [f"class names: {model}'s match the dataset's ({len(model_names)}: {', '.join(model_names)})"]
    both = f"the model has {len(model_names)} {model_names} (from {origin}), the dataset {len(dataset_names)} " \
           f"{dataset_names}"
    if by_index and len(model_names) > len(dataset_names):
        raise EdgeError(
            f"class names differ ({both}) and the model has more classes than the dataset, so "
            "--map-classes-by-index cannot map them all; evaluate on the dataset the model was trained for")
    if not by_index:
        order = (" (the same names in another order: class ids would be scored as the wrong classes)"
                 if sorted(map(str.casefold, model_names)) == sorted(map(str.casefold, dataset_names)) else "")
        raise EdgeError(
            f"class names differ{order}: {both}; scoring them against each other would report a meaningless mAP. "
            "Evaluate on the dataset the model was trained for, or pass --map-classes-by-index to score model "
            "class i as dataset class i anyway")
    lines = [f"warning: class names differ ({both}); --map-classes-by-index scores model class i as dataset "
             "class i:"]
    for i, name in enumerate(model_names):
        lines.append(f"  model {i} {name} -> dataset {i} {dataset_names[i]}")
    for i in range(len(model_names), len(dataset_names)):
        lines.append(f"  (no model class) -> dataset {i} {dataset_names[i]}: never detected")
    return lines
