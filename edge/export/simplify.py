"""Simplify an exported graph (constant folding, dead-node removal, shape-op folding) and re-verify it.

Tools, in order of preference (``tool="auto"``):

* onnxslim (the ``export`` extra): constant folding, shape-op elimination and pattern fusions (e.g. a
  Conv followed by a foldable BatchNormalization/Mul/Add), iterated until the graph stops changing.
* onnx-graphsurgeon: ``fold_constants()`` + ``cleanup()`` + ``toposort()``.

A simplified graph is kept only when it passes ``onnx.checker`` and shape inference, keeps the graph's
opset and its input/output names, and still matches the reference outputs (PyTorch's) within the same
tolerance as the unsimplified one (``edge.export.verify``); otherwise the unsimplified graph is kept and a
warning says why. Simplification never fails an export.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge.errors import EdgeError, ModelError
from edge.export.verify import DEFAULT_TOLERANCE, Sample, VerificationReport, check_graph, verify_samples

log = logging.getLogger(__name__)

TOOLS = ("auto", "onnxslim", "onnx-graphsurgeon")


@dataclass
class SimplifyOutcome:
    """What simplification did: ``simplified`` is False when the original graph was kept (``reason`` says why)."""

    simplified: bool
    tool: Optional[str] = None
    tool_version: Optional[str] = None
    nodes_before: int = 0
    nodes_after: int = 0
    reason: str = ""
    report: Optional[VerificationReport] = None
    ops_before: Dict[str, int] = field(default_factory=dict)
    ops_after: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"simplified": self.simplified, "tool": self.tool, "tool_version": self.tool_version,
                               "nodes_before": self.nodes_before, "nodes_after": self.nodes_after}
        if self.reason:
            out["reason"] = self.reason
        return out


def op_counts(model: Any) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if not node.domain else f"{node.domain}::{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _default_opset(model: Any) -> Optional[int]:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _with_onnxslim(model: Any) -> Tuple[Any, str]:
    import onnxslim

    slimmed = onnxslim.slim(model)
    if slimmed is None:
        raise ModelError("onnxslim returned no model")
    return slimmed, str(getattr(onnxslim, "__version__", "?"))


def _with_graphsurgeon(model: Any) -> Tuple[Any, str]:
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.fold_constants().cleanup().toposort()
    out = gs.export_onnx(graph)
    # export_onnx may write a newer IR version than the input; keep the original's
    out.ir_version = model.ir_version
    return out, str(getattr(gs, "__version__", "?"))


def _available_tool(tool: str) -> Optional[str]:
    import importlib.util

    if tool not in TOOLS:
        raise ValueError(f"simplify tool {tool!r} is unknown; expected one of {list(TOOLS)}")
    candidates = ["onnxslim", "onnx-graphsurgeon"] if tool == "auto" else [tool]
    modules = {"onnxslim": "onnxslim", "onnx-graphsurgeon": "onnx_graphsurgeon"}
    for name in candidates:
        if importlib.util.find_spec(modules[name]) is not None:
            return name
    return None


def simplify_graph(model: Any, tool: str = "auto") -> Tuple[Any, str, str]:
    """Simplify a ModelProto with ``tool``; returns (new model, tool name, tool version).

    Raises ModelError when no tool is installed or the tool fails.
    """
    name = _available_tool(tool)
    if name is None:
        raise ModelError("neither onnxslim nor onnx-graphsurgeon is installed, so the graph cannot be "
                         "simplified; pip install 'edge-detect[export]' (or export with --no-simplify)")
    try:
        if name == "onnxslim":
            out, version = _with_onnxslim(model)
        else:
            out, version = _with_graphsurgeon(model)
    except EdgeError:
        raise
    except Exception as exc:  # the tools raise anything from AssertionError to RuntimeError
        raise ModelError(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") \
            from None
    return out, name, version


def simplify_and_verify(model: Any, samples: Sequence[Sample], tolerance: float = DEFAULT_TOLERANCE,
                        tool: str = "auto", what: str = "graph") -> Tuple[Any, SimplifyOutcome]:
    """Simplify ``model`` (a verified ModelProto) and re-verify it on ``samples``.

    Returns (the model to keep, outcome): the simplified model when every check passes, else ``model``
    unchanged with ``outcome.simplified = False`` and the reason (logged as a warning).
    """
    before = len(model.graph.node)
    outcome = SimplifyOutcome(simplified=False, nodes_before=before, nodes_after=before,
                              ops_before=op_counts(model), ops_after=op_counts(model))
    try:
        slim, outcome.tool, outcome.tool_version = simplify_graph(model, tool)
        problems: List[str] = []
        if _default_opset(slim) != _default_opset(model):
            problems.append(f"opset changed from {_default_opset(model)} to {_default_opset(slim)}")
        for kind in ("input", "output"):
            names_before = [v.name for v in getattr(model.graph, kind)]
            names_after = [v.name for v in getattr(slim.graph, kind)]
            if names_before != names_after:
                problems.append(f"graph {kind}s changed from {names_before} to {names_after}")
        if problems:
            raise ModelError("; ".join(problems))
        check_graph(slim, f"simplified {what}")
        report = verify_samples(slim, samples, tolerance, what=f"simplified {what}")
    except ModelError as exc:
        outcome.reason = str(exc)
        log.warning("%s: keeping the unsimplified graph, simplification was rejected: %s", what, exc)
        return model, outcome
    outcome.simplified = True
    outcome.report = report
    outcome.nodes_after = len(slim.graph.node)
    outcome.ops_after = op_counts(slim)
    log.info("%s: simplified with %s %s, %d -> %d nodes", what, outcome.tool, outcome.tool_version, before,
             outcome.nodes_after)
    return slim, outcome
