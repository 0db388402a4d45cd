"""Run TensorRT-flavoured graphs (with ``EfficientNMS_TRT`` nodes) on CPU with ONNX Runtime.

ONNX Runtime has no EfficientNMS_TRT. onnxruntime-extensions can serve a Python implementation of an op
in its ``ai.onnx.contrib`` domain, so:

* ``register()`` registers the numpy reference (``edge.efficient_nms``) once per process, as
  ``ai.onnx.contrib::EfficientNMS_TRT`` (boxes, scores) and ``ai.onnx.contrib::EfficientNMS_TRT_Anchors``
  (boxes, scores, anchors: the fused-decoder form; onnxruntime-extensions needs a fixed input count);
* ``make_cpu_runnable(model)`` returns a copy of the graph with every EfficientNMS_TRT node moved to that
  domain (absent attributes filled with the plugin's defaults, fp16 inputs cast to fp32 and back);
* ``make_session(model)`` does both and opens an ``onnxruntime.InferenceSession``.

The copy is for CPU checks and the ONNX Runtime backend; the file given to TensorRT keeps the node in
the default domain. Runtime path: no torch, no onnx-graphsurgeon; onnx and onnxruntime-extensions are
imported when needed (``pip install 'edge-detect[quantize]'``).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edge.efficient_nms import PLUGIN_NAME, EfficientNMSParams, efficient_nms
from edge.errors import MissingDependencyError, ModelError
from edge.ort import import_onnx

log = logging.getLogger(__name__)

CONTRIB_DOMAIN = "ai.onnx.contrib"
FUSED_OP = PLUGIN_NAME + "_Anchors"
TRT_DOMAINS = ("", "ai.onnx", "trt", "trt.plugins")  # where TensorRT-flavoured graphs put the plugin node

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto data types
_lock = threading.Lock()
_registered = False

ModelLike = Union[str, "os.PathLike[str]", bytes, Any]


def _ortx() -> Any:
    try:
        import onnxruntime_extensions
    except ImportError as exc:
        raise MissingDependencyError(
            "onnxruntime-extensions",
            "running EfficientNMS_TRT graphs on ONNX Runtime (the reference op)",
            "pip install 'edge-detect[quantize]' (or onnxruntime-extensions>=0.8)",
        ) from exc
    return onnxruntime_extensions




def _params_from(kwargs: Dict[str, Any]) -> EfficientNMSParams:
    return EfficientNMSParams.from_attributes(kwargs)


def _run(boxes: np.ndarray, scores: np.ndarray, anchors: Optional[np.ndarray], attrs: Dict[str, Any]):
    out = efficient_nms(boxes, scores, _params_from(attrs), anchors=anchors)
    return (
        out.num_detections.astype(np.int32),
        out.detection_boxes.astype(np.float32),
        out.detection_scores.astype(np.float32),
        out.detection_classes.astype(np.int32),
    )


def register() -> str:
    """Register the reference ops with onnxruntime-extensions (once); returns its custom-op library path."""
    global _registered
    ortx = _ortx()
    with _lock:
        if not _registered:
            from onnxruntime_extensions import PyCustomOpDef, onnx_op

            attrs = {
                "score_threshold": PyCustomOpDef.dt_float,
                "iou_threshold": PyCustomOpDef.dt_float,
                "max_output_boxes": PyCustomOpDef.dt_int64,
                "background_class": PyCustomOpDef.dt_int64,
                "score_activation": PyCustomOpDef.dt_int64,
                "class_agnostic": PyCustomOpDef.dt_int64,
                "box_coding": PyCustomOpDef.dt_int64,
                "plugin_version": PyCustomOpDef.dt_string,
            }
            outputs = [PyCustomOpDef.dt_int32, PyCustomOpDef.dt_float, PyCustomOpDef.dt_float,
                       PyCustomOpDef.dt_int32]

            @onnx_op(op_type=PLUGIN_NAME, inputs=[PyCustomOpDef.dt_float] * 2, outputs=outputs, attrs=attrs)
            def _efficient_nms_trt(boxes, scores, **kwargs):  # pragma: no cover - called from C++
                return _run(boxes, scores, None, kwargs)

            @onnx_op(op_type=FUSED_OP, inputs=[PyCustomOpDef.dt_float] * 3, outputs=outputs, attrs=attrs)
            def _efficient_nms_trt_anchors(boxes, scores, anchors, **kwargs):  # pragma: no cover
                return _run(boxes, scores, anchors, kwargs)

            _registered = True
            log.debug("registered %s and %s in %s", PLUGIN_NAME, FUSED_OP, CONTRIB_DOMAIN)
    return ortx.get_library_path()


def _load(model: ModelLike) -> Any:
    onnx = import_onnx()
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    path = Path(os.fspath(model))
    if not path.is_file():
        raise ModelError(f"ONNX model {path} not found")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX file ({exc})") from exc


def trt_nms_nodes(model: Any) -> List[Any]:
    """The EfficientNMS_TRT nodes of ``model``'s main graph (in any of the domains TensorRT accepts)."""
    return [n for n in model.graph.node if n.op_type == PLUGIN_NAME and n.domain in TRT_DOMAINS]


def elem_types(model: Any) -> Dict[str, int]:
    """Tensor name -> element type, from inputs, initializers, value_info and shape inference."""
    onnx = import_onnx()
    types: Dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort here
        inferred = model
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:  # Constant nodes are not always typed by inference
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def make_cpu_runnable(model: ModelLike) -> Any:
    """A copy of ``model`` whose EfficientNMS_TRT nodes run on the reference op (see the module docstring).

    Also the form that passes ``onnx.checker``: the plugin lives in a custom domain there.
    Raises ModelError when the graph has no EfficientNMS_TRT node.
    """
    onnx = import_onnx()
    from onnx import helper

    src = _load(model)
    out = onnx.ModelProto()
    out.CopyFrom(src)
    nodes = trt_nms_nodes(out)
    if not nodes:
        raise ModelError("the graph has no EfficientNMS_TRT node: it runs on ONNX Runtime as it is")
    types = elem_types(out)
    new_nodes = []
    for node in out.graph.node:
        if node.op_type != PLUGIN_NAME or node.domain not in TRT_DOMAINS:
            new_nodes.append(node)
            continue
        n_in = len([i for i in node.input if i])
        if n_in not in (2, 3) or len(node.output) != 4:
            raise ModelError(
                f"EfficientNMS_TRT node {node.name!r} has {n_in} inputs and {len(node.output)} outputs; "
                "expected 2 or 3 inputs (boxes, scores[, anchors]) and 4 outputs"
            )
        present = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        try:
            params = EfficientNMSParams.from_attributes(
                {k: (v.decode() if isinstance(v, bytes) else v) for k, v in present.items()}
            )
        except Exception as exc:
            raise ModelError(f"EfficientNMS_TRT node {node.name!r}: bad attributes ({exc})") from exc
        attrs = params.to_attributes()
        if "plugin_version" in present:
            pv = present["plugin_version"]
            attrs["plugin_version"] = pv.decode() if isinstance(pv, bytes) else str(pv)
        fp16 = types.get(node.input[0]) == _FLOAT16
        inputs: List[str] = list(node.input[:n_in])
        outputs: List[str] = list(node.output)
        if fp16:
            cast_in = []
            for name in inputs:
                cast_name = f"{name}__fp32_for_{node.name or 'efficient_nms'}"
                new_nodes.append(helper.make_node("Cast", [name], [cast_name], to=_FLOAT))
                cast_in.append(cast_name)
            inputs = cast_in
            outputs = [
                outputs[0],
                f"{outputs[1]}__fp32",
                f"{outputs[2]}__fp32",
                outputs[3],
            ]
        new_nodes.append(
            helper.make_node(
                FUSED_OP if n_in == 3 else PLUGIN_NAME,
                inputs,
                outputs,
                name=node.name,
                domain=CONTRIB_DOMAIN,
                **attrs,
            )
        )
        if fp16:
            new_nodes.append(helper.make_node("Cast", [outputs[1]], [node.output[1]], to=_FLOAT16))
            new_nodes.append(helper.make_node("Cast", [outputs[2]], [node.output[2]], to=_FLOAT16))
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    if not any(o.domain == CONTRIB_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return out


def session_options(sess_options: Any = None) -> Any:
    """``sess_options`` (or new SessionOptions) with the onnxruntime-extensions library registered."""
    import onnxruntime as ort

    so = sess_options if sess_options is not None else ort.SessionOptions()
    so.register_custom_ops_library(register())
    return so


def make_session(
    model: ModelLike,
    sess_options: Any = None,
    providers: Optional[Sequence[str]] = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for a TensorRT-flavoured graph (path, bytes or ModelProto).

    Graphs without an EfficientNMS_TRT node are opened as they are (with the library registered anyway).
    """
    import onnxruntime as ort

    proto = _load(model)
    runnable = make_cpu_runnable(proto) if trt_nms_nodes(proto) else proto
    so = session_options(sess_options)
    return ort.InferenceSession(
        runnable.SerializeToString(), so, providers=list(providers or ["CPUExecutionProvider"])
    )
