"""``edge quantize``: INT8 as explicit Q/DQ and FP16 as an fp16 graph, on CPU, accuracy-gated.

Input: the pre-NMS graph of ``edge export`` (one image input; outputs ``boxes`` [B, N, 4] xyxy input
pixels and ``scores`` [B, N, C]) and its sidecar. Output: ``OUT.onnx`` with the same input and outputs
(names, dtypes, shapes) plus ``OUT.json``, the sidecar carried forward with a ``quantization`` block.
``edge surgery`` then appends NMS to it as to any other pre-NMS graph.

INT8 (``Int8Quantizer``)
    ONNX Runtime's ``quantize_static`` in the form TensorRT 11 requires and TensorRT 8.x-10.x accept:
    ``QuantFormat.QDQ``; int8 symmetric activations, per tensor (zero point 0); int8 symmetric weights,
    per output channel; float weights followed by a QuantizeLinear/DequantizeLinear pair
    (``AddQDQPairToWeight``), bias left in float (``QuantizeBias`` off: TensorRT rejects an int32
    DequantizeLinear), one Q/DQ pair per consumer (``DedicatedQDQPair``), no Q/DQ on the outputs of the
    weighted layers. Only the weighted layers of the network body are quantized (``partition_graph``:
    Conv, ConvTranspose, Gemm and MatMul with constant weights); everything downstream of the raw head
    outputs (decode, sigmoid/softmax, NMS if present) and the folded input preprocessing stay float.
    Calibration (entropy, percentile or min-max over the images of an ``edge.calibration.ImageBatcher``)
    runs once; later quantizations with other layers kept in float (the accuracy gate's mixed precision)
    reuse its tensor ranges.

FP16 (``build_fp16``)
    ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32 inputs and outputs kept
    (``keep_io_types``), for TensorRT 11's strongly typed builds. Decode works in input pixels, where
    fp16 resolves only 0.25 px at 256-512 px, so it stays fp32 when running it in fp16 moves any box by
    more than ``decode_tolerance_px`` (1e-2 px) on the sample inputs (``decode="auto"``).

``quantize_file`` ties these to calibration (``edge.calibration``), the accuracy gate
(``edge.export.accuracy_gate``) and the sidecar. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.errors import EdgeError, MissingDependencyError, ModelError, import_optional
from edge.export.opset import model_opset

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

PRECISIONS = ("int8", "fp16")
METHODS = ("entropy", "percentile", "minmax")
DEFAULT_PERCENTILE = 99.999
DECODE_MODES = ("auto", "fp16", "fp32")
#: ops whose constant weight input (index 1) makes them a quantized layer
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: per-channel axis of the weights by op (Conv/Gemm: output channels first; ConvTranspose: second)
PER_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1}
DEFAULT_DECODE_TOLERANCE_PX = 1e-2
PRE_NMS_OUTPUTS = ("boxes", "scores")


def _onnx() -> Any:
    return import_optional("onnx", "onnx", "edge quantize", "pip install 'edge-detect[quantize]'")


def _ort_quantization() -> Any:
    return import_optional("onnxruntime.quantization", "onnxruntime (with its quantization tools)",
                           "INT8 quantization", "pip install 'onnxruntime>=1.10'")


# ------------------------------------------------------------------------------------------------ config


@dataclass
class QuantizeConfig:
    """Options of one ``edge quantize`` run.

    precision: "int8" (explicit Q/DQ) or "fp16".
    method: INT8 calibration: "entropy" (KL divergence, TensorRT's default), "percentile" or "minmax".
    percentile: with "percentile": the kept share of |activations|, in percent (99.999 by default).
    per_channel: per-output-channel weight scales (on: what TensorRT expects).
    calib_batch: images per calibration batch (must equal a fixed batch of the graph).
    keep_float: names of weighted nodes to keep in float from the start (user-chosen mixed precision).
    decode: FP16 decode precision: "auto" (fp32 when fp16 moves boxes by > ``decode_tolerance_px``),
        "fp16" or "fp32".
    decode_tolerance_px: see ``decode``.
    entropy_bins: histogram bins of the entropy method (2048, as TensorRT's calibrator).
    """

    precision: str = "int8"
    method: str = "entropy"
    percentile: Optional[float] = None
    per_channel: bool = True
    calib_batch: int = 1
    keep_float: List[str] = field(default_factory=list)
    decode: str = "auto"
    decode_tolerance_px: float = DEFAULT_DECODE_TOLERANCE_PX
    entropy_bins: int = 2048

    def validate(self) -> QuantizeConfig:
        if self.precision not in PRECISIONS:
            raise EdgeError(f"--precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if self.method not in METHODS:
            raise EdgeError(f"--method {self.method!r} is not one of {list(METHODS)}")
        if self.percentile is not None:
            if self.method != "percentile":
                raise EdgeError(f"--percentile applies to --method percentile only (got --method {self.method})")
            if not 50.0 < float(self.percentile) <= 100.0:
                raise EdgeError(f"--percentile must be in (50, 100], got {self.percentile}")
        elif self.method == "percentile":
            self.percentile = DEFAULT_PERCENTILE
        if int(self.calib_batch) < 1:
            raise EdgeError(f"calibration batch must be >= 1, got {self.calib_batch}")
        if self.decode not in DECODE_MODES:
            raise EdgeError(f"decode precision {self.decode!r} is not one of {list(DECODE_MODES)}")
        if not (self.decode_tolerance_px > 0 and np.isfinite(self.decode_tolerance_px)):
            raise EdgeError(f"decode tolerance must be a positive number of pixels, got {self.decode_tolerance_px}")
        if int(self.entropy_bins) < 256:
            raise EdgeError(f"entropy bins must be >= 256, got {self.entropy_bins}")
        self.keep_float = [str(n) for n in self.keep_float]
        return self


# ------------------------------------------------------------------------------------------------ graph


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


#: per-channel QuantizeLinear/DequantizeLinear (the ``axis`` attribute) need opset 13
QDQ_MIN_OPSET = 13


def prepare_model(model: Any, min_opset: int = 0) -> Any:
    """A copy of ``model`` ready for quantization: initializers listed as graph inputs (an old exporter's
    habit, which keeps ONNX Runtime from treating weights as constants) removed from the inputs, unnamed
    nodes named, and the opset raised to ``min_opset`` with ``onnx.version_converter`` when lower."""
    onnx = _onnx()
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


def gate_conventions_problem(sidecar: Dict[str, Any]) -> Optional[str]:
    """Why the accuracy gate cannot score this model, or None: the gate reads ``boxes`` as xyxy input pixels
    and ``scores`` as per-class scores without a background column, which the sidecar of ``edge export``
    (carried forward by later stages) states in its ``outputs`` block."""
    outputs = sidecar.get("outputs") if isinstance(sidecar, dict) else None
    if not isinstance(outputs, dict) or "boxes" not in outputs or "scores" not in outputs:
        return ("its sidecar does not describe the boxes and scores outputs (a model edge export did not write?)")
    boxes, scores = outputs.get("boxes") or {}, outputs.get("scores") or {}
    if boxes.get("format", "xyxy") != "xyxy" or boxes.get("normalized", False) \
            or boxes.get("units", "input pixels") != "input pixels":
        return f"its boxes are {boxes.get('format')} {boxes.get('units')} (normalized: {boxes.get('normalized')})"
    if scores.get("background_column", False):
        return "its scores have a background column"
    return None


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


#: the first onnxruntime whose quantizer can leave the bias in float (``QuantizeBias``, PR 14549)
MIN_ORT_FOR_QDQ = (1, 15)


def check_trt_qdq(model: Any) -> None:
    """Raise ModelError unless every Q/DQ of ``model`` is int8 and symmetric (zero point 0): TensorRT
    rejects a DequantizeLinear of int32 (a quantized bias) and expects symmetric int8."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is None or zp.data_type != TensorProto.INT8:
            raise ModelError(f"{node.op_type} {node.name} has a {'missing' if zp is None else 'non-int8'} zero "
                             "point; TensorRT needs int8 Q/DQ (is onnxruntime too old? it needs >= 1.15)")
        if numpy_helper.to_array(zp).any():
            raise ModelError(f"{node.op_type} {node.name} is asymmetric (zero point != 0); TensorRT needs symmetric "
                             "int8")
        if node.op_type == "DequantizeLinear" and node.input[0] in inits \
                and inits[node.input[0]].data_type != TensorProto.INT8:
            raise ModelError(f"DequantizeLinear {node.name} reads a non-int8 constant (a quantized bias?); TensorRT "
                             "rejects it (only activation types allowed as input)")


def qdq_summary(model: Any) -> Dict[str, Any]:
    """What a Q/DQ graph quantizes: weighted nodes with a dequantized activation input, Q/DQ counts."""
    producer = {o: n for n in model.graph.node for o in n.output}
    quantized = []
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS and n.input and producer.get(n.input[0]) is not None \
                and producer[n.input[0]].op_type == "DequantizeLinear":
            quantized.append(n.name)
    ops = [n.op_type for n in model.graph.node]
    return {"quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "quantized_layers": quantized}


# ------------------------------------------------------------------------------------------------ running


def session(model: Any, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session for an in-memory ``onnx.ModelProto`` (or bytes)."""
    from edge.predictors import make_session

    return make_session(model, threads=threads, providers=["CPUExecutionProvider"])


def run_outputs(model: Any, inputs: Sequence[np.ndarray], threads: int = 0) -> List[Dict[str, np.ndarray]]:
    """Run ``model`` on each input batch; returns {"boxes", "scores"} per batch (float32)."""
    sess = session(model, threads)
    name = sess.get_inputs()[0].name
    out = []
    for x in inputs:
        try:
            boxes, scores = sess.run(list(PRE_NMS_OUTPUTS), {name: x})
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot run the quantized graph: {str(exc).splitlines()[0]}") from None
        out.append({"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32)})
    return out


def output_errors(actual: Sequence[Dict[str, np.ndarray]], expected: Sequence[Dict[str, np.ndarray]]) -> Dict[str, float]:
    """Max |box difference| in pixels, max and mean |score difference| over all batches."""
    box, score, score_sum, count = 0.0, 0.0, 0.0, 0
    for a, e in zip(actual, expected):
        if a["boxes"].shape != e["boxes"].shape or a["scores"].shape != e["scores"].shape:
            raise ModelError(f"output shapes changed: boxes {a['boxes'].shape} vs {e['boxes'].shape}, scores "
                             f"{a['scores'].shape} vs {e['scores'].shape}")
        box = max(box, float(np.max(np.abs(a["boxes"].astype(np.float64) - e["boxes"]))) if a["boxes"].size else 0.0)
        d = np.abs(a["scores"].astype(np.float64) - e["scores"])
        if d.size:
            score = max(score, float(d.max()))
            score_sum += float(d.sum())
            count += d.size
    return {"max_box_error_px": box, "max_score_error": score, "mean_score_error": score_sum / max(1, count)}


# ------------------------------------------------------------------------------------------------ INT8


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """ONNX Runtime's quantization tools print progress to stdout and log a pre-processing hint through the
    root logger; send the former to our debug log and drop the latter."""

    class _DropHint(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-process" not in record.getMessage() and "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    hint = _DropHint()
    root.addFilter(hint)
    for h in root.handlers:
        h.addFilter(hint)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        root.removeFilter(hint)
        for h in root.handlers:
            h.removeFilter(hint)
        text = buf.getvalue().strip()
        if text:
            log.debug("onnxruntime.quantization: %s", " | ".join(text.splitlines()[:20]))


#: TensorRT's entropy calibration: 2048 histogram bins, 128 quantized bins (ONNX Runtime's default of 128
#: histogram bins leaves the KL search a single candidate, i.e. min-max)
DEFAULT_ENTROPY_BINS = 2048
QUANTIZED_BINS = 128
PERCENTILE_BINS = 2048
#: calibration batches run per ``collect_data`` call (bounds the calibrator's memory)
CALIBRATION_CHUNK = 4


class Int8Quantizer:
    """Calibrate a pre-NMS graph once, then write Q/DQ graphs with any set of layers kept in float.

    Args:
        model: ``onnx.ModelProto`` (copied; unnamed nodes get names).
        batches: calibration inputs, each the graph input's full [B, ...] array (``ImageBatcher`` output).
        method, percentile, per_channel: see ``QuantizeConfig``.
        entropy_bins: histogram bins of the entropy method (2048 as TensorRT; fewer is faster and coarser).

    Calibration runs on the first ``quantize`` with ONNX Runtime's calibrators (``create_calibrator``;
    symmetric ranges; entropy with ``entropy_bins`` bins), and its ranges are handed to every
    ``quantize_static`` call through ``calibration_cache_path``. (ONNX Runtime releases without that
    parameter recalibrate on every call with their own defaults: a warning says so.)

    ``quantize(keep_float=..., only=...)`` -> ``onnx.ModelProto``. A context manager (a temporary folder
    holds the model copy and the calibration ranges).
    """

    def __init__(self, model: Any, batches: Sequence[np.ndarray], *, method: str = "entropy",
                 percentile: Optional[float] = None, per_channel: bool = True,
                 entropy_bins: int = DEFAULT_ENTROPY_BINS) -> None:
        onnx = _onnx()
        if method not in METHODS:
            raise EdgeError(f"calibration method {method!r} is not one of {list(METHODS)}")
        if not batches:
            raise EdgeError("INT8 calibration needs at least one batch of images")
        version = tuple(int(p) for p in _ort_version().split(".")[:2] if p.isdigit())
        if len(version) == 2 and version < MIN_ORT_FOR_QDQ:
            raise MissingDependencyError(
                f"onnxruntime >= {MIN_ORT_FOR_QDQ[0]}.{MIN_ORT_FOR_QDQ[1]} (found {_ort_version()})",
                "INT8 Q/DQ graphs in TensorRT's form (float bias, symmetric int8)",
                "pip install -U 'onnxruntime>=1.15' on the machine that quantizes (a desktop is fine)")
        if int(entropy_bins) < 2 * QUANTIZED_BINS:
            raise EdgeError(f"entropy_bins must be >= {2 * QUANTIZED_BINS}, got {entropy_bins}")
        work = prepare_model(model, QDQ_MIN_OPSET if per_channel else 0)
        check_pre_nms(work)
        self.model = work
        self.partition = partition_graph(work)
        self.method = method
        self.percentile = (DEFAULT_PERCENTILE if percentile is None else float(percentile)) \
            if method == "percentile" else None
        self.per_channel = bool(per_channel)
        self.entropy_bins = int(entropy_bins)
        self.batches = [np.ascontiguousarray(b) for b in batches]
        inits = {i.name for i in work.graph.initializer}
        self.input_name = [i.name for i in work.graph.input if i.name not in inits][0]
        self._ops = sorted({n.op_type for n in work.graph.node if n.name in set(self.partition.weighted)})
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-quantize-")
        self._model_path = Path(self._tmp.name) / "model.onnx"
        onnx.save(work, str(self._model_path))
        import inspect

        q = _ort_quantization()
        self._cache_supported = "calibration_cache_path" in inspect.signature(q.quantize_static).parameters
        self._cache_path = Path(self._tmp.name) / "calibration.json"
        self.calibration_seconds = 0.0
        if not self._cache_supported:
            log.warning("onnxruntime %s cannot reuse calibration ranges: every quantization recalibrates, with "
                        "its own entropy histogram (128 bins); upgrade onnxruntime for TensorRT-like entropy "
                        "calibration", _ort_version())

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Int8Quantizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- quantization ----------------------------------------------------------------------------
    def _method(self) -> Any:
        q = _ort_quantization()
        return {"entropy": q.CalibrationMethod.Entropy, "percentile": q.CalibrationMethod.Percentile,
                "minmax": q.CalibrationMethod.MinMax}[self.method]

    def calibrator_options(self) -> Dict[str, Any]:
        """Options of ONNX Runtime's ``create_calibrator`` (symmetric ranges; bins per method)."""
        opts: Dict[str, Any] = {"symmetric": True}
        if self.method == "entropy":
            opts.update(num_bins=self.entropy_bins, num_quantized_bins=QUANTIZED_BINS)
        elif self.method == "percentile":
            opts.update(num_bins=PERCENTILE_BINS, percentile=float(self.percentile))  # type: ignore[arg-type]
        return opts

    def extra_options(self) -> Dict[str, Any]:
        """The ``quantize_static`` extra options (the TensorRT-friendly Q/DQ form, see the module docstring)."""
        opts: Dict[str, Any] = {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": True,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
            "QDQOpTypePerChannelSupportToAxis": dict(PER_CHANNEL_AXIS),
            "ForceQuantizeNoInputCheck": False,
        }
        if self.method == "percentile":
            opts["CalibPercentile"] = float(self.percentile)  # type: ignore[arg-type]
        return opts

    def settings(self) -> Dict[str, Any]:
        """The quantization scheme, as recorded in the sidecar."""
        return {
            "format": "QDQ (QuantizeLinear/DequantizeLinear, ONNX standard domain)",
            "activations": "int8, symmetric (zero point 0), per tensor",
            "weights": "int8, symmetric, " + ("per output channel" if self.per_channel else "per tensor")
                       + "; float weights followed by a Q/DQ pair",
            "bias": "float (not quantized)",
            "quantized_op_types": list(self._ops),
            "kept_float": "decode, sigmoid/softmax, NMS and input preprocessing (everything outside the weighted layers)",
            "method": self.method,
            "percentile": self.percentile,
            "calibrator": self.calibrator_options(),
        }

    def calibrate(self) -> None:
        """Compute the activation ranges (once) and store them for ``quantize_static``."""
        if not self._cache_supported or self._cache_path.exists():
            return
        q = _ort_quantization()
        from onnxruntime.quantization.calibrate import save_tensors_data

        start = time.perf_counter()
        try:
            with _quiet_ort():
                calibrator = q.create_calibrator(
                    self._model_path, list(self._ops),
                    augmented_model_path=str(Path(self._tmp.name) / "augmented.onnx"),
                    calibrate_method=self._method(), extra_options=self.calibrator_options())
                # a few batches at a time: ONNX Runtime's calibrators hold every intermediate output of
                # what one collect_data call reads (gigabytes for a 416 px YOLOv3 over 64 images)
                for start_i in range(0, len(self.batches), CALIBRATION_CHUNK):
                    calibrator.collect_data(_Reader(self.input_name,
                                                    self.batches[start_i:start_i + CALIBRATION_CHUNK]))
                ranges = calibrator.compute_data()
                del calibrator
                save_tensors_data(ranges, self._cache_path)
        except (EdgeError, MemoryError):
            raise
        except Exception as exc:  # onnxruntime raises many types from calibration
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"ONNX Runtime calibration failed ({type(exc).__name__}: {first})") from None
        self.calibration_seconds = time.perf_counter() - start
        log.info("calibrated the inputs of %d layers with %s on %d batch(es) in %.1f s", len(self.partition.weighted),
                 self.method, len(self.batches), self.calibration_seconds)

    def quantize(self, keep_float: Sequence[str] = (), only: Optional[Sequence[str]] = None) -> Any:
        """A Q/DQ graph quantizing the weighted layers (``only`` these when given) except ``keep_float``.

        Returns a float copy of the model when no layer is left to quantize.
        """
        onnx = _onnx()
        q = _ort_quantization()
        weighted = list(self.partition.weighted)
        unknown = [n for n in list(keep_float) + list(only or []) if n not in weighted]
        if unknown:
            raise EdgeError(f"layers {unknown[:5]} are not weighted layers of the graph; known: {weighted[:8]}"
                            + (" ..." if len(weighted) > 8 else ""))
        chosen = [n for n in (only if only is not None else weighted) if n not in set(keep_float)]
        if not chosen:
            out = onnx.ModelProto()
            out.CopyFrom(self.model)
            return out
        self.calibrate()
        exclude = [n.name for n in self.model.graph.node if n.name not in set(chosen)]
        out_path = Path(self._tmp.name) / "quantized.onnx"
        if self._cache_supported:
            kwargs: Dict[str, Any] = {"calibration_cache_path": str(self._cache_path)}
            reader = None
        else:
            kwargs = {}
            reader = _Reader(self.input_name, self.batches)
        try:
            with _quiet_ort():
                q.quantize_static(
                    str(self._model_path), str(out_path), reader,
                    quant_format=q.QuantFormat.QDQ, op_types_to_quantize=list(self._ops),
                    per_channel=self.per_channel, reduce_range=False,
                    activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                    nodes_to_quantize=chosen, nodes_to_exclude=exclude, calibrate_method=self._method(),
                    extra_options=self.extra_options(), **kwargs)
        except (EdgeError, MemoryError):
            raise
        except Exception as exc:  # onnxruntime raises many types from quantization
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"ONNX Runtime quantization failed ({type(exc).__name__}: {first})") from None
        out = onnx.load(str(out_path))
        out_path.unlink()
        return out


def _ort_version() -> str:
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover
        return "?"


def _Reader(input_name: str, batches: Sequence[np.ndarray]) -> Any:  # noqa: N802 - reads as a class
    """A ``CalibrationDataReader`` over in-memory batches (a fresh one per calibration)."""
    base = _ort_quantization().CalibrationDataReader

    class Reader(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

        def __len__(self) -> int:
            return len(batches)

    return Reader()


# ------------------------------------------------------------------------------------------------ FP16


def convert_fp16(model: Any, *, float32_nodes: Sequence[str] = ()) -> Any:
    """An fp16 copy of ``model`` with float32 inputs and outputs kept; ``float32_nodes`` stay fp32."""
    onnx = _onnx()
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
    onnx = _onnx()
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
    onnx = _onnx()
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


# ------------------------------------------------------------------------------------------------ the verb


@dataclass
class QuantizeResult:
    """What ``quantize_file`` wrote and decided."""

    path: Path
    sidecar_path: Path
    sidecar: Dict[str, Any]
    precision: str  # of the written graph: int8 | fp16
    decision: str  # int8 | int8-mixed | fp16 | fp16-fallback | unverified-int8 | unverified-fp16
    gate_report_path: Optional[Path] = None


def _sample_inputs(fmt: Any, count: int = 2, seed: int = 0) -> List[np.ndarray]:
    """Synthetic inputs in the model's layout (smooth random frames through the runtime preprocessing)."""
    from edge.export.preprocess import sample_frames
    from edge.runtime.pipeline import Preprocessor

    pre = Preprocessor(fmt)
    out = []
    for frame in sample_frames(count, (fmt.height, fmt.width), seed):
        buf = pre.new_buffer()
        pre(frame, buf)
        out.append(_full_batch(buf, fmt))
    return out


def _full_batch(x: np.ndarray, fmt: Any) -> np.ndarray:
    b = int(fmt.batch)
    return x if b <= 1 else np.ascontiguousarray(np.repeat(x[:1], b, axis=0))


def _check_output(candidate: Any, source: Any, samples: Sequence[np.ndarray], what: str) -> None:
    """onnx.checker, same inputs/outputs as the source, runs in ONNX Runtime with finite outputs."""
    onnx = _onnx()
    try:
        onnx.checker.check_model(candidate)
    except Exception as exc:
        raise ModelError(f"the {what} graph fails the ONNX checker: {exc}") from None

    def io(m: Any) -> Tuple[List[Tuple[str, int]], List[Tuple[str, int]]]:
        inits = {i.name for i in m.graph.initializer}
        ins = [(i.name, i.type.tensor_type.elem_type) for i in m.graph.input if i.name not in inits]
        return ins, [(o.name, o.type.tensor_type.elem_type) for o in m.graph.output]

    if io(candidate) != io(source):
        raise ModelError(f"the {what} graph's inputs/outputs {io(candidate)} differ from the source's {io(source)}")
    for out in run_outputs(candidate, samples[:1]):
        if not (np.all(np.isfinite(out["boxes"])) and np.all(np.isfinite(out["scores"]))):
            raise ModelError(f"the {what} graph gives NaN or infinite outputs")


def quantize_file(
    model_path: PathLike,
    out_path: PathLike,
    config: QuantizeConfig,
    *,
    calib: Any = None,
    gate: Any = None,
) -> QuantizeResult:
    """``edge quantize``: read MODEL.onnx (+ sidecar), quantize, gate, write OUT.onnx + OUT.json atomically.

    Args:
        calib: an ``edge.calibration.CalibrationSource`` (required for INT8; for FP16 its images are the
            decode-check samples, else synthetic frames).
        gate: an ``edge.export.accuracy_gate.GateConfig``, or None to skip the gate (the sidecar then says
            the model is unverified).
    Raises:
        ModelError: a refused model (over the accuracy budget even as FP16): nothing is written but the
            gate report ``OUT.gate.json``.
    """
    onnx = _onnx()
    from edge.artifacts import (
        atomic_write_bytes,
        atomic_write_json,
        derive_sidecar,
        read_sidecar,
        sha256_bytes,
        sha256_file,
        write_sidecar,
    )
    from edge.calibration import ImageBatcher, model_input_format, provenance_record, tool_versions

    config.validate()
    src, dst = Path(model_path), Path(out_path)
    if dst.suffix != ".onnx":
        raise EdgeError(f"--out {dst} must end in .onnx (its sidecar goes beside it as {dst.stem}.json)")
    if not src.is_file():
        raise ModelError(f"model {src} not found; pass the pre-NMS ONNX from `edge export`")
    if dst.resolve() == src.resolve():
        raise EdgeError(f"--out {dst} is the input model; write the quantized graph to a new file")
    if config.precision == "int8" and calib is None:
        raise EdgeError("INT8 needs calibration images: pass --calib calibration/NAME.txt (a manifest) or "
                        "--calib DATA.yaml --calib-split SPLIT")
    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ModelError(f"{src} is not a readable ONNX model: {exc}") from None
    model = prepare_model(model, QDQ_MIN_OPSET if config.precision == "int8" and config.per_channel else 0)
    check_pre_nms(model, src.name)
    sidecar = read_sidecar(src, required=False) or {}
    if gate is not None:
        problem = gate_conventions_problem(sidecar)
        if problem:
            raise EdgeError(
                f"the accuracy gate scores 'boxes' as x1,y1,x2,y2 input pixels and 'scores' without a background "
                f"column, as edge export writes them, but for {src.name} {problem}. Quantize the graph from "
                "`edge export`, or pass --no-gate (then evaluate the deploy graph after `edge surgery` yourself)")
    fmt = model_input_format(model, sidecar)
    source_sha = sha256_file(src)
    partition = partition_graph(model)

    batches: List[np.ndarray] = []
    provenance: Optional[Dict[str, Any]] = None
    if calib is not None:
        calib_batch = int(fmt.batch) if fmt.batch > 1 and config.calib_batch == 1 else config.calib_batch
        batcher = ImageBatcher(calib, fmt, calib_batch)
        batches = [_full_batch(b, fmt) for b in batcher]
        if config.precision == "int8":
            options = {"num_bins": int(config.entropy_bins), "num_quantized_bins": QUANTIZED_BINS} \
                if config.method == "entropy" else ({"num_bins": PERCENTILE_BINS} if config.method == "percentile"
                                                    else {})
            provenance = provenance_record(batcher, method=config.method, percentile=config.percentile,
                                           source_onnx_sha256=source_sha, options=options)
    samples = (batches[:4] if batches else _sample_inputs(fmt))
    fp16 = build_fp16(model, samples, decode=config.decode, tolerance_px=config.decode_tolerance_px)
    _check_output(fp16.model, model, samples, "FP16")

    quantizer: Optional[Int8Quantizer] = None
    try:
        int8_model = None
        if config.precision == "int8":
            quantizer = Int8Quantizer(model, batches, method=config.method, percentile=config.percentile,
                                      per_channel=config.per_channel, entropy_bins=config.entropy_bins)
            int8_model = quantizer.quantize(keep_float=config.keep_float)
            _check_output(int8_model, model, samples, "INT8")
            check_trt_qdq(int8_model)
            ref = run_outputs(model, samples)
            int8_err = output_errors(run_outputs(int8_model, samples), ref)
            log.info("INT8 graph vs FP32 on %d calibration batch(es): max box error %.3g px, max score error %.3g",
                     len(samples), int8_err["max_box_error_px"], int8_err["max_score_error"])

        gate_report: Optional[Dict[str, Any]] = None
        report_path: Optional[Path] = None
        float_nodes = list(config.keep_float)
        if gate is not None:
            from edge.export.accuracy_gate import run_gate

            outcome = run_gate(model, fp16.model, quantizer, gate, precision=config.precision,
                               sidecar=sidecar, keep_float=config.keep_float, calib=calib,
                               fp16_simulation=fp16.simulation)
            gate_report = outcome.report
            report_path = dst.with_name(dst.stem + ".gate.json")
            atomic_write_json(report_path, gate_report)
            if outcome.decision == "refused":
                raise ModelError(f"accuracy gate refused {src.name}: {outcome.message}; nothing written but the "
                                 f"report {report_path}")
            decision = outcome.decision
            chosen = outcome.model
            float_nodes = list(outcome.float_nodes)
            log.info("accuracy gate: %s", outcome.message)
        else:
            decision = f"unverified-{config.precision}"
            chosen = int8_model if config.precision == "int8" else fp16.model
            log.warning("accuracy gate skipped (--no-gate): %s is not checked against FP32 mAP", dst.name)
            stale = dst.with_name(dst.stem + ".gate.json")
            if stale.exists():  # a report of an earlier run would describe another graph
                stale.unlink()
    finally:
        if quantizer is not None:
            quantizer.close()

    precision = "int8" if decision in ("int8", "int8-mixed", "unverified-int8") else "fp16"
    if precision == "int8":
        check_trt_qdq(chosen)
    chosen.producer_name = "edge quantize"
    data = chosen.SerializeToString()
    block: Dict[str, Any] = {
        "precision": precision,
        "requested": config.precision,
        "decision": decision,
        "form": "qdq" if precision == "int8" else "fp16",
        "source_onnx": src.name,
        "source_onnx_sha256": source_sha,
        "graph": partition.to_dict(),
        "tools": tool_versions(),
        "gate": gate_report if gate_report is not None else {"skipped": True,
                                                            "reason": "--no-gate: accuracy not checked"},
    }
    if precision == "int8":
        assert quantizer is not None and provenance is not None
        block.update({
            "method": config.method,
            "percentile": config.percentile,
            "scheme": quantizer.settings(),
            "layers": qdq_summary(chosen),
            "float_layers": float_nodes,
            "calibration": provenance,
            "calibration_sha256": provenance["calibration_sha256"],
        })
    else:
        block.update({"method": None, "fp16": fp16.report,
                      "io": "float32 inputs/outputs kept (keep_io_types); uint8 inputs stay uint8"})
        if decision == "fp16-fallback":
            block["fallback_from"] = "int8"
    meta = derive_sidecar(src, dst, "quantize", {"stage": "quantize", "precision": precision, "quantization": block})
    atomic_write_bytes(dst, data)
    meta["sha256"] = sha256_bytes(data)
    sidecar_path = write_sidecar(dst, meta)
    log.info("wrote %s (%s, %s) and its sidecar", dst, precision, decision)
    return QuantizeResult(dst, sidecar_path, meta, precision, decision, report_path)
