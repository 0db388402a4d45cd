"""Which nodes of a pre-NMS detector graph ``edge quantize`` quantizes, and the graph preparation before it.

Only the weighted layers of the network body are quantized (``partition_graph``: Conv, ConvTranspose,
Gemm and MatMul with constant weights); everything downstream of the raw head outputs (decode,
sigmoid/softmax, NMS if present) and the folded input preprocessing stay float. Also here: node naming
(node names are how layers are kept in float), a topological sort, ``prepare_model`` (initializer inputs,
unused initializers, opset) and ``check_pre_nms`` (the ``boxes`` and ``scores`` outputs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List

from edge.artifacts import PRE_NMS_OUTPUTS
from edge.errors import ModelError
from edge.export.opset import model_opset
from edge.ort import import_onnx

log = logging.getLogger(__name__)

#: ops whose constant weight input (index 1) makes them a quantized layer
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")





@dataclass
class GraphPartition:
    """Where a detector graph's layers are (node names, in graph order).

    weighted: Conv/ConvTranspose/Gemm/MatMul nodes with a constant weight: the quantized layers.
    body: the weighted nodes and every node upstream of one (input preprocessing, activations, pooling,
        resizes, concatenations of the backbone/neck/head).
    post: everything else: downstream of the raw head outputs (decode, sigmoid/softmax, NMS), never quantized.
    pre: body nodes upstream of the first weighted node with no weighted node above them (the folded
        input preprocessing).
    head_outputs: body tensors consumed by post nodes or graph outputs (where decode starts).
    """

    weighted: List[str]
    body: List[str]
    post: List[str]
    pre: List[str]
    head_outputs: List[str]

    def to_dict(self) -> Dict[str, Any]:
        return {"weighted": len(self.weighted), "post": len(self.post), "pre": len(self.pre),
                "head_outputs": list(self.head_outputs)}


def name_nodes(model: Any) -> int:
    """Give every unnamed node a unique name (``<op>_<index>``), in place; returns how many were named.
    Node names are how layers are kept in float."""
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for i, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{i}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
        named += 1
    return named


def toposort(model: Any) -> None:
    """Reorder ``model.graph.node`` topologically, in place (stable: ready nodes keep their order).

    Raises ModelError on a cycle or an input that nothing produces."""
    nodes = list(model.graph.node)
    available = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    waiting: Dict[str, List[int]] = {}
    missing: Dict[int, int] = {}
    ready: List[int] = []
    for i, n in enumerate(nodes):
        need = {t for t in n.input if t not in available}
        missing[i] = len(need)
        for t in need:
            waiting.setdefault(t, []).append(i)
        if not need:
            ready.append(i)
    order: List[int] = []
    import heapq

    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for t in nodes[i].output:
            for j in waiting.pop(t, []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = [nodes[i].name for i in range(len(nodes)) if i not in set(order)][:5]
        raise ModelError(f"the graph cannot be sorted topologically (a cycle or an unproduced input at {stuck})")
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)


def _constants(model: Any) -> set:
    names = {i.name for i in model.graph.initializer}
    names.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return names


def partition_graph(model: Any) -> GraphPartition:
    """Split ``model``'s nodes into the quantizable body and the float post-processing (see GraphPartition).

    Raises ModelError when the graph has no weighted layer (nothing to quantize).
    """
    nodes = list(model.graph.node)
    consts = _constants(model)
    producer: Dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producer[o] = i
    weighted = [i for i, n in enumerate(nodes)
                if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in consts]
    if not weighted:
        raise ModelError("the graph has no Conv/ConvTranspose/Gemm/MatMul layer with constant weights: nothing to "
                         "quantize (is it a detector exported by `edge export`?)")
    body = set(weighted)
    stack = list(weighted)
    while stack:  # ancestors of weighted nodes
        i = stack.pop()
        for t in nodes[i].input:
            j = producer.get(t)
            if j is not None and j not in body:
                body.add(j)
                stack.append(j)
    weighted_set = set(weighted)
    has_weighted_above: Dict[int, bool] = {}
    for i, n in enumerate(nodes):  # graph order is topological
        above = False
        for t in n.input:
            j = producer.get(t)
            if j is not None and (j in weighted_set or has_weighted_above.get(j, False)):
                above = True
                break
        has_weighted_above[i] = above
    pre = [i for i in sorted(body) if i not in weighted_set and not has_weighted_above[i]]
    post = [i for i in range(len(nodes)) if i not in body]
    graph_outputs = {o.name for o in model.graph.output}
    heads: List[str] = []
    post_inputs = {t for i in post for t in nodes[i].input}
    for i in sorted(body):
        for o in nodes[i].output:
            if (o in post_inputs or o in graph_outputs) and o not in heads:
                heads.append(o)
    return GraphPartition(
        weighted=[nodes[i].name for i in weighted],
        body=[nodes[i].name for i in sorted(body)],
        post=[nodes[i].name for i in post],
        pre=[nodes[i].name for i in pre],
        head_outputs=heads,
    )

def prepare_model(model: Any, min_opset: int = 0) -> Any:
    """A copy of ``model`` ready for quantization: initializers listed as graph inputs (an old exporter's
    habit, which keeps ONNX Runtime from treating weights as constants) removed from the inputs, unnamed
    nodes named, and the opset raised to ``min_opset`` with ``onnx.version_converter`` when lower."""
    onnx = import_onnx()
    from edge.export.surgery import strip_initializer_inputs

    work = onnx.ModelProto()
    work.CopyFrom(model)
    removed = strip_initializer_inputs(work)
    if removed:
        log.info("removed %d initializers listed as graph inputs", removed)
    used = {t for n in work.graph.node for t in n.input} | {o.name for o in work.graph.output}
    unused = [i for i in work.graph.initializer if i.name not in used]
    if unused:
        keep = [i for i in work.graph.initializer if i.name in used]
        del work.graph.initializer[:]
        work.graph.initializer.extend(keep)
        log.info("removed %d unused initializers", len(unused))
    opset = model_opset(work, default=0)
    if min_opset and opset < min_opset:
        try:
            from onnx import version_converter

            work = version_converter.convert_version(work, int(min_opset))
        except Exception as exc:  # the converter raises several types
            raise ModelError(f"the model is at opset {opset}; INT8 Q/DQ with per-channel weights needs opset "
                             f">= {min_opset} and converting it failed ({str(exc).splitlines()[0]}); re-export "
                             f"it with --opset {min_opset} or newer") from None
        log.info("converted the model from opset %d to %d (per-channel Q/DQ needs %d)", opset, min_opset, min_opset)
    name_nodes(work)
    return work



def check_pre_nms(model: Any, what: str = "model") -> None:
    """Raise ModelError unless ``model`` has one image input and the ``boxes`` and ``scores`` outputs."""
    names = [o.name for o in model.graph.output]
    if not all(n in names for n in PRE_NMS_OUTPUTS):
        nms = any(n.endswith("num_detections") for n in names)
        hint = ("it already ends in NMS: quantize the pre-NMS graph from `edge export`, then run `edge surgery` "
                "on the result" if nms else
                "edge quantize works on the pre-NMS graph that `edge export` writes (or a graph whose outputs are "
                "named boxes and scores)")
        raise ModelError(f"{what} has outputs {names}; expected 'boxes' [B,N,4] and 'scores' [B,N,C]: {hint}")
