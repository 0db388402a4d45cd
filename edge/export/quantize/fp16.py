"""FP16: the fp16 graph of a pre-NMS detector, its CPU-faithful simulation, and the decode precision check.

FP16 (``build_fp16``)
    ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32 inputs and outputs kept
    (``keep_io_types``), for TensorRT 11's strongly typed builds. Decode works in input pixels, where
    fp16 resolves only 0.25 px at 256-512 px, so it stays fp32 when running it in fp16 moves any box by
    more than ``decode_tolerance_px`` (1e-2 px) on the sample inputs (``decode="auto"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

from edge.errors import MissingDependencyError, ModelError
from edge.export.quantize.compare import output_errors, run_outputs
from edge.export.quantize.partition import check_pre_nms, name_nodes, partition_graph, toposort
from edge.ort import import_onnx

log = logging.getLogger(__name__)

DECODE_MODES = ("auto", "fp16", "fp32")
DEFAULT_DECODE_TOLERANCE_PX = 1e-2


def convert_fp16(model: Any, *, float32_nodes: Sequence[str] = ()) -> Any:
    """An fp16 copy of ``model`` with float32 inputs and outputs kept; ``float32_nodes`` stay fp32."""
    onnx = import_onnx()
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - part of the onnxruntime wheel
        raise MissingDependencyError("onnxruntime (transformers tools)", "FP16 conversion",
                                     "pip install 'onnxruntime>=1.10'") from exc
    work = onnx.ModelProto()
    work.CopyFrom(model)
    name_nodes(work)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = convert_float_to_float16(work, keep_io_types=True, node_block_list=list(float32_nodes) or None)
    for w in caught:
        log.debug("float16 conversion: %s", str(w.message).splitlines()[0])
    toposort(out)  # the converter appends the casts of blocked nodes at the end
    return out


def fp16_simulation(model: Any, *, float32_nodes: Sequence[str] = ()) -> Any:
    """An fp32 graph that computes like the fp16 graph of ``model`` runs on a GPU: float weights rounded to
    fp16 (clipped to +-65504), and every float tensor a node outside ``float32_nodes`` writes rounded to fp16
    through a Cast pair (so an activation above 65504 becomes inf, as in fp16); arithmetic inside a node
    stays float32.

    Why: ONNX Runtime's CPU runs an fp16 graph by casting runs of nodes lacking fp16 kernels to float32 as
    a whole, so the real fp16 graph on CPU rounds little more than its weights and never overflows; the
    accuracy gate scores this simulation as well and keeps the worse figure.
    """
    onnx = import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    work = onnx.ModelProto()
    work.CopyFrom(model)
    name_nodes(work)
    keep32 = set(float32_nodes)
    try:
        inferred = onnx.shape_inference.infer_shapes(work)
    except Exception as exc:  # without types we cannot tell float tensors from index tensors
        raise ModelError(f"shape inference failed on the model ({exc}); cannot simulate fp16") from None
    types: Dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    consumers_of: Dict[str, List[str]] = {}
    for n in work.graph.node:
        for t in n.input:
            consumers_of.setdefault(t, []).append(n.name)
    for i, init in enumerate(work.graph.initializer):
        users = consumers_of.get(init.name, [])
        if init.data_type == TensorProto.FLOAT and users and not all(u in keep32 for u in users):
            arr = numpy_helper.to_array(init)
            rounded = np.clip(arr, -65504.0, 65504.0).astype(np.float16).astype(np.float32)
            work.graph.initializer[i].CopyFrom(numpy_helper.from_array(rounded, init.name))
    nodes = []
    for n in work.graph.node:
        nodes.append(n)
        if n.name in keep32:
            continue
        for k, out in enumerate(list(n.output)):
            if not out or types.get(out) != TensorProto.FLOAT:
                continue
            raw = f"{out}__fp32"
            n.output[k] = raw
            nodes.append(helper.make_node("Cast", [raw], [f"{out}__fp16"], to=TensorProto.FLOAT16,
                                          name=f"{n.name}__to_fp16_{k}"))
            nodes.append(helper.make_node("Cast", [f"{out}__fp16"], [out], to=TensorProto.FLOAT,
                                          name=f"{n.name}__from_fp16_{k}"))
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    return work


@dataclass
class Fp16Result:
    """The FP16 graph (``model``), its CPU-faithful simulation (``simulation``) and the report."""

    model: Any
    simulation: Any
    float32_nodes: List[str]
    report: Dict[str, Any]


def build_fp16(model: Any, samples: Sequence[np.ndarray], *, decode: str = "auto",
               tolerance_px: float = DEFAULT_DECODE_TOLERANCE_PX, threads: int = 0) -> Fp16Result:
    """The FP16 graph, decode in fp16 or fp32 (see the module docstring), checked on ``samples``.

    The decode decision compares ``fp16_simulation`` with and without the decode nodes in fp32 (ONNX
    Runtime's CPU would hide fp16 rounding). Report: decode precision and why, the fp16-decode loss in px,
    and the errors against FP32 of the chosen graph on ONNX Runtime (``vs_fp32_*``) and of its simulation
    (``sim_vs_fp32_*``): max box error in px, max/mean score error.
    """
    onnx = import_onnx()
    work = onnx.ModelProto()
    work.CopyFrom(model)
    name_nodes(work)
    check_pre_nms(work)
    part = partition_graph(work)
    reference = run_outputs(work, samples, threads)
    report: Dict[str, Any] = {"samples": len(samples), "tolerance_px": float(tolerance_px),
                              "decode_nodes": len(part.post)}
    sim_mixed = fp16_simulation(work, float32_nodes=part.post)
    if decode == "auto":
        out_full = run_outputs(fp16_simulation(work), samples, threads)
        out_mixed = run_outputs(sim_mixed, samples, threads)
        loss = output_errors(out_full, out_mixed)["max_box_error_px"]
        report["decode_fp16_loss_px"] = loss
        chosen = "fp32" if (loss > tolerance_px or not np.isfinite(loss)) else "fp16"
        report["reason"] = (f"fp16 decode moves boxes by up to {loss:.3g} px (> {tolerance_px:g} px): decode kept in fp32"
                            if chosen == "fp32" else
                            f"fp16 decode moves boxes by at most {loss:.3g} px (<= {tolerance_px:g} px): all fp16")
    else:
        chosen = decode
        report["reason"] = f"decode precision {decode} requested"
    float32_nodes = list(part.post) if chosen == "fp32" else []
    model_out = convert_fp16(work, float32_nodes=float32_nodes)
    simulation = sim_mixed if chosen == "fp32" else fp16_simulation(work)
    report["decode"] = chosen
    report.update({f"vs_fp32_{k}": v for k, v in output_errors(run_outputs(model_out, samples, threads),
                                                               reference).items()})
    report.update({f"sim_vs_fp32_{k}": v for k, v in output_errors(run_outputs(simulation, samples, threads),
                                                                   reference).items()})
    log.info("FP16 graph: %s; vs FP32: max box error %.3g px, max score error %.3g (simulated fp16 tensors: "
             "%.3g px, %.3g)", report["reason"], report["vs_fp32_max_box_error_px"],
             report["vs_fp32_max_score_error"], report["sim_vs_fp32_max_box_error_px"],
             report["sim_vs_fp32_max_score_error"])
    return Fp16Result(model_out, simulation, float32_nodes, report)
