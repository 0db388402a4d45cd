"""Opening the models a bench times: ``default_backend_factory`` (ONNX Runtime for ONNX files, TensorRT for
engines, at the case's input size) and ``precision_of`` (fp32 / fp16 / int8 from the sidecar or the graph)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

from edge.artifacts import model_file_kind
from edge.bench.config import FixedSizeError
from edge.errors import ModelError
from edge.runtime.backend import PreNmsModelError
from edge.runtime.open_model import deploy_from_checkpoint, deploy_from_pre_nms

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def precision_of(backend: Any) -> str:
    """fp32 / fp16 / int8: the sidecar's ``precision`` (``edge quantize``, ``edge build``), else what an ONNX
    graph holds (Q/DQ or integer ops: int8; float16 weights: fp16; otherwise fp32)."""
    info = getattr(backend, "info", None)
    sidecar = dict(getattr(info, "sidecar", None) or {})
    precision = sidecar.get("precision")
    if isinstance(precision, str) and precision:
        return precision.lower()
    path = getattr(info, "path", None)
    if path is not None and Path(path).suffix.lower() == ".onnx":
        return onnx_precision(Path(path))
    return "fp32"


def onnx_precision(path: Path) -> str:
    """int8 / fp16 / fp32 from the graph itself (``onnx`` imported here; fp32 when it is missing)."""
    try:
        import onnx
    except ImportError:
        return "fp32"
    model = onnx.load(str(path), load_external_data=False)
    nodes = list(model.graph.node)
    for fn in model.functions:
        nodes.extend(fn.node)
    if any(n.op_type in QDQ_OPS for n in nodes):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def default_backend_factory(model: Path, imgsz: Optional[Tuple[int, int]], threads: int) -> Any:
    """Open ``model`` (any model file ``edge-run`` takes) for inference at ``imgsz``.

    A checkpoint or a pre-NMS ONNX is first made into a deploy graph exactly as ``edge-run`` does
    (``edge.runtime.open_model``). ONNX: ONNX Runtime with ``threads`` intra-op threads and spinning off (as
    ``edge-run`` runs it). A graph with a free height/width (``edge export --dynamic-hw``) runs at
    ``imgsz``; a static graph only at its own size. Engines: the TensorRT backend (their size is fixed at
    build time).
    """
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"model {model} not found")
    if model_file_kind(model) == "checkpoint":
        model = deploy_from_checkpoint(model)
    try:
        return _open_deploy_graph(model, imgsz, threads)
    except PreNmsModelError as exc:
        return _open_deploy_graph(deploy_from_pre_nms(model, exc), imgsz, threads)


def _open_deploy_graph(model: Path, imgsz: Optional[Tuple[int, int]], threads: int) -> Any:
    """A deploy ONNX on ONNX Runtime or an engine on TensorRT, checked against ``imgsz``."""
    if model_file_kind(model) == "engine":
        from edge.runtime.tensorrt_backend import TensorRTBackend

        backend = TensorRTBackend(model)
    else:
        from edge.artifacts import read_sidecar
        from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions

        sidecar = read_sidecar(model, required=False) or {}
        if imgsz is not None:
            sidecar = dict(sidecar, input_size=[int(imgsz[0]), int(imgsz[1])])
        backend = OnnxRuntimeBackend(model, OrtOptions(threads=threads, spin=False), sidecar=sidecar)
    if imgsz is not None:
        fmt = backend.input_format
        if (fmt.height, fmt.width) != tuple(imgsz):
            backend.close()
            raise FixedSizeError(
                f"{model.name} has a fixed {fmt.height}x{fmt.width} input; --imgsz {imgsz[0]}x{imgsz[1]} needs a "
                f"graph exported at that size (`edge export CKPT --imgsz {imgsz[0]}x{imgsz[1]}` + `edge surgery`) "
                "or one with a free size (`edge export --dynamic-hw`)"
            )
    return backend


__all__ = ["default_backend_factory", "onnx_precision", "precision_of"]
