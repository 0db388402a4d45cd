"""Opset-aware node builders on an onnx-graphsurgeon graph, for the nodes graph surgery appends.

A handful of operators moved attributes to inputs between opsets (Slice at 10, TopK at 10, Unsqueeze,
Squeeze and ReduceSum at 13, ReduceMax at 18); ``GraphOps`` writes whichever form the graph's opset
needs, so the same surgery code works on an old opset-9 export and on an opset-17 one.

Needs onnx-graphsurgeon (the ``export`` extra); callers import this module lazily.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edge.errors import MissingDependencyError

try:  # pragma: no cover - exercised where the export extra is missing
    import onnx_graphsurgeon as gs
except ImportError as _exc:  # pragma: no cover
    raise MissingDependencyError(
        "onnx-graphsurgeon", "graph surgery", "pip install 'edge-detect[export]'"
    ) from _exc

INT_MAX = 2**31 - 1  # "to the end" for Slice: fits TensorRT's int32 shape arithmetic

Tensor = Union["gs.Variable", "gs.Constant"]


class GraphOps:
    """Appends nodes to ``graph`` with unique names under ``prefix``, in the form ``opset`` requires."""

    def __init__(self, graph: gs.Graph, opset: int, prefix: str = "edge_nms") -> None:
        self.graph = graph
        self.opset = int(opset)
        self.prefix = prefix
        self._count = 0
        self._taken = set(graph.tensors().keys()) | {n.name for n in graph.nodes if n.name}

    def name(self, hint: str) -> str:
        while True:
            self._count += 1
            candidate = f"{self.prefix}/{hint}_{self._count}"
            if candidate not in self._taken:
                self._taken.add(candidate)
                return candidate

    # -- tensors -------------------------------------------------------------------------------------
    def const(self, values: Any, hint: str = "const", dtype: Any = None) -> gs.Constant:
        arr = np.asarray(values, dtype=dtype)
        return gs.Constant(self.name(hint), arr)

    def i64(self, values: Sequence[int], hint: str = "i64") -> gs.Constant:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def f32(self, values: Any, hint: str = "f32") -> gs.Constant:
        return self.const(np.asarray(values, dtype=np.float32), hint)

    def op(
        self,
        op_type: str,
        inputs: Sequence[Tensor],
        attrs: Optional[Dict[str, Any]] = None,
        *,
        num_outputs: int = 1,
        dtype: Any = None,
        shape: Optional[Sequence[Any]] = None,
        hint: Optional[str] = None,
        domain: Optional[str] = None,
    ) -> Any:
        """Append one node; returns its output Variable (or a list when ``num_outputs`` > 1)."""
        base = hint or op_type.lower()
        outputs = [gs.Variable(self.name(f"{base}_out"), dtype=dtype, shape=shape) for _ in range(num_outputs)]
        node = gs.Node(op=op_type, name=self.name(base), attrs=dict(attrs or {}), inputs=list(inputs),
                       outputs=outputs, domain=domain)
        self.graph.nodes.append(node)
        return outputs[0] if num_outputs == 1 else outputs

    # -- opset-dependent forms -----------------------------------------------------------------------
    def slice(self, x: Tensor, start: int, end: int, axis: int, hint: str = "slice") -> gs.Variable:
        """x[..., start:end, ...] along ``axis`` (Slice: attributes before opset 10, inputs from 10)."""
        if self.opset < 10:
            return self.op("Slice", [x], {"starts": [int(start)], "ends": [int(end)], "axes": [int(axis)]},
                           hint=hint)
        return self.op("Slice", [x, self.i64([start]), self.i64([end]), self.i64([axis])], hint=hint)

    def unsqueeze(self, x: Tensor, axes: Sequence[int], hint: str = "unsqueeze") -> gs.Variable:
        if self.opset < 13:
            return self.op("Unsqueeze", [x], {"axes": [int(a) for a in axes]}, hint=hint)
        return self.op("Unsqueeze", [x, self.i64(axes)], hint=hint)

    def reduce(self, op_type: str, x: Tensor, axes: Sequence[int], keepdims: bool, hint: str = "") -> gs.Variable:
        """ReduceMax / ReduceSum over ``axes`` (axes moved to an input: ReduceSum at 13, the others at 18)."""
        as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        attrs: Dict[str, Any] = {"keepdims": int(bool(keepdims))}
        if as_input:
            return self.op(op_type, [x, self.i64(axes)], attrs, hint=hint or op_type.lower())
        attrs["axes"] = [int(a) for a in axes]
        return self.op(op_type, [x], attrs, hint=hint or op_type.lower())

    def topk(self, x: Tensor, k: int, axis: int, hint: str = "topk") -> List[gs.Variable]:
        """Largest ``k`` along ``axis``, sorted: [values, int64 indices]."""
        if self.opset < 10:
            return self.op("TopK", [x], {"k": int(k), "axis": int(axis)}, num_outputs=2, hint=hint)
        attrs: Dict[str, Any] = {"axis": int(axis)}
        if self.opset >= 11:
            attrs.update(largest=1, sorted=1)
        return self.op("TopK", [x, self.i64([k])], attrs, num_outputs=2, hint=hint)

    # -- plain helpers -------------------------------------------------------------------------------
    def gather(self, x: Tensor, indices: Any, axis: int, hint: str = "gather") -> gs.Variable:
        idx = indices if isinstance(indices, gs.Tensor) else self.i64(indices)
        return self.op("Gather", [x, idx], {"axis": int(axis)}, hint=hint)

    def concat(self, xs: Sequence[Tensor], axis: int, hint: str = "concat") -> gs.Variable:
        return self.op("Concat", list(xs), {"axis": int(axis)}, hint=hint)

    def transpose(self, x: Tensor, perm: Sequence[int], hint: str = "transpose") -> gs.Variable:
        return self.op("Transpose", [x], {"perm": [int(p) for p in perm]}, hint=hint)

    def cast(self, x: Tensor, to: int, hint: str = "cast") -> gs.Variable:
        return self.op("Cast", [x], {"to": int(to)}, hint=hint)

    def binary(self, op_type: str, a: Tensor, b: Tensor, hint: str = "") -> gs.Variable:
        return self.op(op_type, [a, b], hint=hint or op_type.lower())
