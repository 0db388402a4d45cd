"""The self-test's graph split: a deploy graph cut just before its NMS (``split_at_nms``), the probe graph
that also outputs the pre-NMS tensors (``probe_graph``), the NMS part alone (``nms_tail``), and
``OrtGraphRunner``, which runs any of them on ONNX Runtime (EfficientNMS_TRT graphs included).

onnx and onnxruntime are imported inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

from edge.errors import MissingDependencyError, ModelError
from edge.ort import import_onnx

NMS_OPS = ("EfficientNMS_TRT", "NonMaxSuppression")
_FLOAT_TYPES = (1, 10, 11)  # onnx FLOAT, FLOAT16, DOUBLE


@dataclass
class NmsSplit:
    """A deploy graph cut just before its NMS.

    flavour: the NMS op ('EfficientNMS_TRT' or 'NonMaxSuppression'). pre_nms: the float tensors that
    enter the NMS part (boxes [B,N,4] xyxy input pixels, scores [B,N,C] or [B,C,N]), exposed as extra
    outputs in the probe graph. tail_inputs: the NMS part's inputs (pre_nms, plus the image input when
    the tail reads it). outputs: the graph's own outputs (the four NMS outputs, then max_score where the
    graph has it: ``edge.artifacts.MAX_SCORE_OUTPUT``).
    """

    flavour: str
    pre_nms: List[str]
    tail_inputs: List[str]
    outputs: List[str]
    elem_types: Dict[str, int]




def split_at_nms(model: Any) -> NmsSplit:
    """Find the NMS part of a deploy graph (an onnx.ModelProto) and the tensors that feed it.

    The tail is every node that leads to an output without leading to an NMS node's data inputs (plus
    the constant nodes it reads); its non-constant inputs are the pre-NMS tensors.
    """
    graph = model.graph
    nodes = list(graph.node)
    nms = [i for i, n in enumerate(nodes) if n.op_type in NMS_OPS]
    if not nms:
        raise ModelError(
            "the model has no NMS node (EfficientNMS_TRT or NonMaxSuppression): the self-test needs a deploy "
            "graph. Run `edge surgery MODEL.onnx --out MODEL.nms.onnx` and pass that file"
        )
    producer: Dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producer[o] = i
    const = {init.name for init in graph.initializer}
    const_nodes = set()
    for i, n in enumerate(nodes):  # ONNX graphs are topologically sorted
        if all((not x) or x in const for x in n.input):
            const_nodes.add(i)
            const.update(o for o in n.output if o)
    graph_inputs = [v.name for v in graph.input if v.name not in {init.name for init in graph.initializer}]

    def ancestors(tensors: Sequence[str]) -> set:
        seen: set = set()
        stack = [producer[t] for t in tensors if t in producer]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(producer[x] for x in nodes[i].input if x in producer)
        return seen

    nms_data_inputs = [x for i in nms for x in nodes[i].input if x and x not in const]
    upstream = ancestors(nms_data_inputs)
    outputs = [o.name for o in graph.output]
    tail = (ancestors(outputs) - upstream) - const_nodes
    consumed = {x for i in tail for x in nodes[i].input if x}
    tail |= {i for i in ancestors(sorted(consumed & const)) if i in const_nodes}
    produced = {o for i in tail for o in nodes[i].output}
    initializers = {init.name for init in graph.initializer}
    external = []
    for i in sorted(tail):
        for x in nodes[i].input:
            if x and x not in produced and x not in initializers and x not in external:
                external.append(x)
    from edge.export.ort_custom_ops import elem_types

    types = elem_types(model)
    pre_nms = [x for x in external if x not in graph_inputs]
    not_float = [x for x in pre_nms if types.get(x, 1) not in _FLOAT_TYPES]
    if not_float:
        raise ModelError(
            f"the NMS part of the graph reads non-float tensors {not_float} from before it; the self-test can "
            "only compare float pre-NMS tensors (boxes, scores). Re-run edge surgery on the pre-NMS model"
        )
    flavour = nodes[nms[0]].op_type
    return NmsSplit(flavour=flavour, pre_nms=pre_nms, tail_inputs=external, outputs=outputs,
                    elem_types={x: types.get(x, 1) for x in external})


def probe_graph(model: Any, split: NmsSplit) -> Any:
    """A copy of ``model`` with the pre-NMS tensors as extra outputs (after the four NMS outputs)."""
    onnx = import_onnx()
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name in split.pre_nms:
        if name not in existing:
            out.graph.output.append(helper.make_tensor_value_info(name, split.elem_types[name], None))
    return out


def nms_tail(model: Any, split: NmsSplit) -> Any:
    """The NMS part alone: ``split.tail_inputs`` in, the graph's outputs out (same ops, same attributes)."""
    import_onnx()
    from onnx import helper

    graph = model.graph
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    inits = {init.name: init for init in graph.initializer}
    keep: set = set()
    stack = [producer[o] for o in split.outputs if o in producer]
    stop = set(split.tail_inputs)
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        stack.extend(producer[x] for x in nodes[i].input if x in producer and x not in stop)
    used = {x for i in keep for x in nodes[i].input if x}
    inputs = []
    for name in split.tail_inputs:
        vi = next((v for v in graph.input if v.name == name), None)
        inputs.append(vi if vi is not None else helper.make_tensor_value_info(name, split.elem_types[name], None))
    tail_graph = helper.make_graph(
        [nodes[i] for i in sorted(keep)], "nms_tail", inputs, list(graph.output),
        [inits[x] for x in sorted(used) if x in inits],
    )
    tail = helper.make_model(tail_graph, opset_imports=list(model.opset_import))
    tail.ir_version = model.ir_version
    return tail


class OrtGraphRunner:
    """Runs an ONNX graph (a ModelProto, EfficientNMS_TRT graphs included) and returns every output by name."""

    def __init__(self, model: Any, threads: int = 0) -> None:
        import onnxruntime as ort

        from edge.export import ort_custom_ops

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        try:
            if ort_custom_ops.trt_nms_nodes(model):
                self.session = ort_custom_ops.make_session(model, sess_options=so)
            else:
                self.session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except (MissingDependencyError, ModelError):
            raise
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load the self-test graph: {str(exc).splitlines()[0]}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        feed = {}
        for name in self.input_names:
            value = np.asarray(feeds[name])
            if self.input_types[name] == "tensor(float)" and value.dtype != np.float32:
                value = value.astype(np.float32)
            elif self.input_types[name] == "tensor(float16)" and value.dtype != np.float16:
                value = value.astype(np.float16)
            feed[name] = np.ascontiguousarray(value)
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))
