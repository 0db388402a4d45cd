"""What an ONNX file tells the engine builder: inputs, precision form, plugins, NMS flavour.

Reads the graph with the ``onnx`` package (no TensorRT), so the build plan can be checked on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge.errors import MissingDependencyError, ModelError

# ONNX TensorProto element types we care about
_FLOAT, _UINT8, _FLOAT16 = 1, 2, 10

PLUGIN_OPS = {"EfficientNMS_TRT", "BatchedNMSDynamic_TRT", "BatchedNMS_TRT", "EfficientNMS_ONNX_TRT"}


@dataclass
class InputInfo:
    """One graph input: name, ONNX element type, shape with None for symbolic dims."""

    name: str
    elem_type: int
    shape: Tuple[Optional[int], ...]

    @property
    def dtype_name(self) -> str:
        return {_FLOAT: "float32", _UINT8: "uint8", _FLOAT16: "float16"}.get(self.elem_type, str(self.elem_type))

    @property
    def is_nhwc(self) -> bool:
        return len(self.shape) == 4 and self.shape[-1] == 3

    @property
    def is_dynamic(self) -> bool:
        """Any dimension symbolic or unset: the input needs an optimization profile (and trtexec shapes)."""
        return any(d is None or d <= 0 for d in self.shape)


@dataclass
class OnnxInfo:
    """The facts the builder needs. ``precision_form``: 'qdq' (explicit INT8), 'fp16' graph, or 'fp32'."""

    path: str
    opset: int
    inputs: List[InputInfo]
    outputs: List[str]
    has_qdq: bool
    has_fp16: bool
    plugin_ops: List[str] = field(default_factory=list)
    has_onnx_nms: bool = False
    # plugin op type -> the attributes of each node of that type (what the plugin creator is given)
    plugin_attributes: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)

    @property
    def class_agnostic_nms(self) -> bool:
        """An EfficientNMS_TRT node asks for one NMS over all classes (honoured from TensorRT 8.6 only)."""
        return any(bool(attrs.get("class_agnostic", 0)) for attrs in self.plugin_attributes.get("EfficientNMS_TRT", []))

    @property
    def dynamic_input_names(self) -> List[str]:
        """Inputs with a dynamic dimension: the only ones a profile (or trtexec's --*Shapes) may name."""
        return [i.name for i in self.inputs if i.is_dynamic]

    @property
    def precision_form(self) -> str:
        if self.has_qdq:
            return "qdq"
        if self.has_fp16:
            return "fp16"
        return "fp32"


def inspect_onnx(path: str) -> OnnxInfo:
    """Load ``path`` (graph only; external data not needed) and summarize it for the builder."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is a core dependency
        raise MissingDependencyError("onnx", "reading ONNX models", "pip install onnx") from exc
    if not Path(path).exists():
        raise ModelError(f"ONNX file {path} not found; pass the .onnx written by edge export/surgery/quantize")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{path} is not a readable ONNX model ({exc}); re-export it") from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:  # old exporters list weights as inputs
            continue
        ttype = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
        inputs.append(InputInfo(value.name, ttype.elem_type, dims))
    if not inputs:
        raise ModelError(f"{path} has no graph inputs besides its weights; it is not a runnable model")
    op_types = {node.op_type for node in graph.node}
    has_fp16 = any(init.data_type == _FLOAT16 for init in graph.initializer) or any(
        v.type.tensor_type.elem_type == _FLOAT16 for v in list(graph.value_info) + list(graph.output)
    ) or any(node.op_type == "Cast" and any(a.name == "to" and a.i == _FLOAT16 for a in node.attribute)
             for node in graph.node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    plugin_attributes: Dict[str, List[Dict[str, Any]]] = {}
    for node in graph.node:
        if node.op_type in PLUGIN_OPS:
            plugin_attributes.setdefault(node.op_type, []).append(
                {a.name: _attribute_value(onnx, a) for a in node.attribute})
    return OnnxInfo(
        path=str(path),
        opset=opset,
        inputs=inputs,
        outputs=[o.name for o in graph.output],
        has_qdq=bool(op_types & {"QuantizeLinear", "DequantizeLinear"}),
        has_fp16=has_fp16,
        plugin_ops=sorted(op_types & PLUGIN_OPS),
        has_onnx_nms="NonMaxSuppression" in op_types,
        plugin_attributes=plugin_attributes,
    )


def _attribute_value(onnx: Any, attr: Any) -> Any:
    """A node attribute as Python: numbers and strings as such (bytes decoded), lists as lists."""
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in value]
    return value
