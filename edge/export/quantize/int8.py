"""INT8 as explicit Q/DQ: calibration once, then Q/DQ graphs with any set of layers kept in float.

INT8 (``Int8Quantizer``)
    ONNX Runtime's ``quantize_static`` in the form TensorRT 11 requires and TensorRT 8.x-10.x accept:
    ``QuantFormat.QDQ``; int8 symmetric activations, per tensor (zero point 0); int8 symmetric weights,
    per output channel; float weights followed by a QuantizeLinear/DequantizeLinear pair
    (``AddQDQPairToWeight``), bias left in float (``QuantizeBias`` off: TensorRT rejects an int32
    DequantizeLinear), one Q/DQ pair per consumer (``DedicatedQDQPair``), no Q/DQ on the outputs of the
    weighted layers. Only the weighted layers of the network body are quantized (``partition_graph``:
    Conv, ConvTranspose, Gemm and MatMul with constant weights); everything downstream of the raw head
    outputs (decode, sigmoid/softmax, NMS if present) and the folded input preprocessing stay float.
    Calibration (entropy, percentile or min-max over the images of an ``edge.data.calibration.ImageBatcher``)
    runs once; later quantizations with other layers kept in float (the accuracy gate's mixed precision)
    reuse its tensor ranges.

Also here: ``check_trt_qdq`` (the Q/DQ form TensorRT accepts) and ``qdq_summary`` (what a Q/DQ graph
quantizes, for the sidecar).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import numpy as np

from edge.errors import EdgeError, MissingDependencyError, ModelError, OutputError, import_optional
from edge.export.quantize.partition import WEIGHTED_OPS, check_pre_nms, partition_graph, prepare_model
from edge.ort import import_onnx

log = logging.getLogger(__name__)

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_PERCENTILE = 99.999
#: per-channel axis of the weights by op (Conv/Gemm: output channels first; ConvTranspose: second)
PER_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1}


def _ort_quantization() -> Any:
    return import_optional("onnxruntime.quantization", "onnxruntime (with its quantization tools)",
                           "INT8 quantization", "pip install 'onnxruntime>=1.10'")


#: per-channel QuantizeLinear/DequantizeLinear (the ``axis`` attribute) need opset 13
QDQ_MIN_OPSET = 13


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
    """What a Q/DQ graph quantizes: weighted nodes whose activation and weight inputs are both dequantized
    (a float layer may read a dequantized activation), Q/DQ counts."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def dequantized(t: str) -> bool:
        return producer.get(t) is not None and producer[t].op_type == "DequantizeLinear"

    quantized = []
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and dequantized(n.input[0]) and dequantized(n.input[1]):
            quantized.append(n.name)
    ops = [n.op_type for n in model.graph.node]
    return {"quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "quantized_layers": quantized}


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
        onnx = import_onnx()
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
        self.batches = [np.ascontiguousarray(b) for b in batches]
        work = prepare_model(model, QDQ_MIN_OPSET if per_channel else 0)
        check_pre_nms(work)
        work = self._prepare_graph(work)
        self.model = work
        self.partition = partition_graph(work)
        self.method = method
        self.percentile = (DEFAULT_PERCENTILE if percentile is None else float(percentile)) \
            if method == "percentile" else None
        self.per_channel = bool(per_channel)
        self.entropy_bins = int(entropy_bins)
        inits = {i.name for i in work.graph.initializer}
        self.input_name = [i.name for i in work.graph.input if i.name not in inits][0]
        self._ops = sorted({n.op_type for n in work.graph.node if n.name in set(self.partition.weighted)})
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-quantize-")
        self._model_path = Path(self._tmp.name) / "model.onnx"
        try:
            onnx.save(work, str(self._model_path))
        except OSError as exc:
            self._tmp.cleanup()
            raise self._scratch_error(exc) from None
        import inspect

        q = _ort_quantization()
        self._cache_supported = "calibration_cache_path" in inspect.signature(q.quantize_static).parameters
        self._cache_path = Path(self._tmp.name) / "calibration.json"
        self.calibration_seconds = 0.0
        if not self._cache_supported:
            log.warning("onnxruntime %s cannot reuse calibration ranges: every quantization recalibrates, with "
                        "its own entropy histogram (128 bins); upgrade onnxruntime for TensorRT-like entropy "
                        "calibration", _ort_version())

    @contextlib.contextmanager
    def _ort_step(self, what: str) -> Iterator[None]:
        """An ONNX Runtime step (``what``: calibration, quantization) with its console noise quieted; its
        failures become one clear error (a scratch-folder write: OutputError; anything else: ModelError)."""
        try:
            with _quiet_ort():
                yield
        except (EdgeError, MemoryError):
            raise
        except OSError as exc:
            raise self._scratch_error(exc) from None
        except Exception as exc:  # onnxruntime raises many types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"ONNX Runtime {what} failed ({type(exc).__name__}: {first})") from None

    def _scratch_error(self, exc: OSError) -> OutputError:
        """A write into the scratch folder failed (a full /tmp): say where, and how to move it."""
        return OutputError.from_os_error(exc.filename or self._tmp.name, exc, note="a scratch file of edge quantize",
                                         hint="set TMPDIR to a folder on a disk with space")

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Int8Quantizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what a subclass changes (the ONNX Runtime CPU target: edge.export.quantize.ort_cpu) -------
    def _prepare_graph(self, work: Any) -> Any:
        """The graph calibrated and quantized, from the prepared source graph (here: unchanged)."""
        return work

    def _calibrated_ops(self) -> Sequence[str]:
        """Op types whose input and output ranges calibration records."""
        return list(self._ops)

    def _static_options(self, chosen: Sequence[str]) -> Dict[str, Any]:
        """The ``quantize_static`` arguments that set the form: format, types, ops and nodes quantized."""
        q = _ort_quantization()
        return {"quant_format": q.QuantFormat.QDQ, "op_types_to_quantize": list(self._ops),
                "activation_type": q.QuantType.QInt8, "weight_type": q.QuantType.QInt8,
                "nodes_to_quantize": list(chosen),
                "nodes_to_exclude": [n.name for n in self.model.graph.node if n.name not in set(chosen)]}

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
        with self._ort_step("calibration"):
            calibrator = q.create_calibrator(
                self._model_path, list(self._calibrated_ops()),
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
        self.calibration_seconds = time.perf_counter() - start
        log.info("calibrated the inputs of %d layers with %s on %d batch(es) in %.1f s", len(self.partition.weighted),
                 self.method, len(self.batches), self.calibration_seconds)

    def quantize(self, keep_float: Sequence[str] = (), only: Optional[Sequence[str]] = None) -> Any:
        """A Q/DQ graph quantizing the weighted layers (``only`` these when given) except ``keep_float``.

        Returns a float copy of the model when no layer is left to quantize.
        """
        onnx = import_onnx()
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
        out_path = Path(self._tmp.name) / "quantized.onnx"
        if self._cache_supported:
            kwargs: Dict[str, Any] = {"calibration_cache_path": str(self._cache_path)}
            reader = None
        else:
            kwargs = {}
            reader = _Reader(self.input_name, self.batches)
        with self._ort_step("quantization"):
            q.quantize_static(
                str(self._model_path), str(out_path), reader, per_channel=self.per_channel, reduce_range=False,
                calibrate_method=self._method(), extra_options=self.extra_options(),
                **self._static_options(chosen), **kwargs)
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
