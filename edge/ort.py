"""ONNX Runtime sessions and ONNX files as every stage opens them.

``open_session``     an ``onnxruntime.InferenceSession`` (all graph optimizations, N intra-op threads) from a
                     path, serialized bytes or an ``onnx.ModelProto``; ``choose_providers`` picks CUDA where
                     this onnxruntime build has it, else CPU.
``load_proto``       an ``onnx.ModelProto`` from any of those; ``output_names`` reads a file's outputs
                     without its external data; ``graph_kind`` says whether outputs are a pre-NMS graph's
                     or a deploy graph's (``edge.artifacts.PRE_NMS_OUTPUTS`` / ``NMS_OUTPUTS``).
``import_onnx``, ``import_ort``   the lazy imports of onnx and onnxruntime, with the install hint.

Graphs with an ``EfficientNMS_TRT`` node need the reference op: ``edge.export.ort_custom_ops``. A
primitive: onnx and onnxruntime are imported when first needed; no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Sequence, Union

from edge.artifacts import NMS_OUTPUTS, PRE_NMS_OUTPUTS
from edge.errors import ModelError, import_optional

ModelSource = Union[str, "os.PathLike[str]", bytes, Any]  # path, serialized bytes or onnx.ModelProto


def import_onnx(needed_for: str = "reading ONNX models") -> Any:
    """The ``onnx`` module, or MissingDependencyError saying what needed it."""
    return import_optional("onnx", "onnx", needed_for, "pip install onnx")


def import_ort(needed_for: str = "running ONNX models") -> Any:
    """The ``onnxruntime`` module, or MissingDependencyError saying what needed it."""
    return import_optional("onnxruntime", "onnxruntime", needed_for, "pip install onnxruntime (or onnxruntime-gpu)")


def choose_providers(requested: Union[str, Sequence[str]] = "auto") -> List[str]:
    """'auto' -> CUDA (when this onnxruntime build has it) then CPU; a list is checked and kept."""
    ort = import_ort()
    available = list(ort.get_available_providers())
    if requested == "auto":
        chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
        return chosen + ["CPUExecutionProvider"]
    wanted = list(requested)
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ModelError(
            f"ONNX Runtime provider(s) {missing} are not available in this onnxruntime build "
            f"(available: {available}); install onnxruntime-gpu for CUDA, or leave providers on auto"
        )
    return wanted


def load_proto(model: ModelSource) -> Any:
    """An ``onnx.ModelProto`` from a path, serialized bytes or a ModelProto (returned as is)."""
    onnx = import_onnx()
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
        onnx = import_onnx()
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


def open_session(model: ModelSource, *, threads: int = 0, providers: Union[str, Sequence[str]] = "auto") -> Any:
    """An ONNX Runtime session (all graph optimizations, ``threads`` intra-op threads, 0: all cores)."""
    ort = import_ort()
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
