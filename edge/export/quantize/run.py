"""``edge quantize`` itself: ``quantize_file`` reads MODEL.onnx and its sidecar, builds the INT8 and FP16
graphs, runs the accuracy gate and writes OUT.onnx + OUT.json; ``QuantizeConfig`` holds its options.

``quantize_file`` ties the INT8 (``edge.export.quantize.int8``) and FP16 (``edge.export.quantize.fp16``)
graphs to calibration (``edge.data.calibration``), the accuracy gate (``edge.export.quantize.gate``, imported
only when the gate runs) and the sidecar. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.errors import EdgeError, ModelError
from edge.export.quantize.compare import output_errors, run_outputs
from edge.export.quantize.fp16 import DECODE_MODES, DEFAULT_DECODE_TOLERANCE_PX, Fp16Result, build_fp16
from edge.export.quantize.int8 import (
    DEFAULT_PERCENTILE,
    METHODS,
    PERCENTILE_BINS,
    QDQ_MIN_OPSET,
    QUANTIZED_BINS,
    Int8Quantizer,
    check_trt_qdq,
    qdq_summary,
)
from edge.export.quantize.ort_cpu import TARGETS, check_ort_cpu_graph, quantizer_class
from edge.export.quantize.partition import (
    GraphPartition,
    check_pre_nms,
    partition_graph,
    prepare_model,
)
from edge.ort import import_onnx

log = logging.getLogger(__name__)

#: fewer INT8 calibration images than this get a warning: activation ranges measured on a handful of
#: images fit those images, not the scenes the model will see (TensorRT's samples use 500+; 32 is a floor)
MIN_CALIBRATION_IMAGES = 32

PathLike = Union[str, "os.PathLike[str]"]

PRECISIONS = ("int8", "fp16")
#: the calibration method of each --target when none is given: entropy as TensorRT's calibrator; percentile
#: for ONNX Runtime's uint8 activations (asymmetric ranges; on the bundled model: +0.02 mAP50 points on BCCD
#: test, minmax -0.22, entropy -0.90, see benchmarks/RESULTS.md)
DEFAULT_METHODS = {"tensorrt": "entropy", "onnxruntime": "percentile"}


@dataclass
class QuantizeConfig:
    """Options of one ``edge quantize`` run.

    precision: "int8" (explicit Q/DQ) or "fp16".
    method: INT8 calibration: "entropy" (KL divergence, TensorRT's default), "percentile" or "minmax"; None:
        the target's default (``DEFAULT_METHODS``: entropy for tensorrt, percentile for onnxruntime).
    percentile: with "percentile": the kept share of |activations|, in percent (99.999 by default).
    per_channel: per-output-channel weight scales (on: what TensorRT expects).
    calib_batch: images per calibration batch (must equal a fixed batch of the graph).
    keep_float: names of weighted nodes to keep in float from the start (user-chosen mixed precision).
    decode: FP16 decode precision: "auto" (fp32 when fp16 moves boxes by > ``decode_tolerance_px``),
        "fp16" or "fp32".
    decode_tolerance_px: see ``decode``.
    entropy_bins: histogram bins of the entropy method (2048, as TensorRT's calibrator).
    target: the INT8 form: "tensorrt" (explicit symmetric int8 Q/DQ, what TensorRT fuses) or "onnxruntime"
        (uint8-activation QDQ that ONNX Runtime's CPU provider fuses into integer kernels; ``ort_cpu``).
    """

    precision: str = "int8"
    method: Optional[str] = "entropy"
    percentile: Optional[float] = None
    per_channel: bool = True
    calib_batch: int = 1
    keep_float: List[str] = field(default_factory=list)
    decode: str = "auto"
    decode_tolerance_px: float = DEFAULT_DECODE_TOLERANCE_PX
    entropy_bins: int = 2048
    target: str = "tensorrt"

    def validate(self) -> QuantizeConfig:
        if self.precision not in PRECISIONS:
            raise EdgeError(f"--precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if self.target not in TARGETS:
            raise EdgeError(f"--target {self.target!r} is not one of {list(TARGETS)}")
        if self.method is None:
            self.method = DEFAULT_METHODS[self.target]
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
        if self.target != "tensorrt" and self.precision != "int8":
            raise EdgeError(f"--target {self.target} picks the INT8 form; --precision {self.precision} has one form "
                            "for every runtime: drop --target (and note that ONNX Runtime's CPU runs an fp16 graph "
                            "slower than FP32)")
        self.keep_float = [str(n) for n in self.keep_float]
        return self


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
    from edge.model_input import Preprocessor

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
    onnx = import_onnx()
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


def _check_arguments(src: Path, dst: Path, config: QuantizeConfig, calib: Any) -> None:
    """Refuse an output that is not a new ``.onnx`` file, a missing model, and INT8 without calibration images."""
    if dst.suffix != ".onnx":
        raise EdgeError(f"--out {dst} must end in .onnx (its sidecar goes beside it as {dst.stem}.json)")
    if not src.is_file():
        raise ModelError(f"model {src} not found; pass the pre-NMS ONNX from `edge export`")
    if dst.resolve() == src.resolve():
        raise EdgeError(f"--out {dst} is the input model; write the quantized graph to a new file")
    from edge.artifacts import check_output_path

    check_output_path(dst, "--out", make_folder=True)
    if config.precision == "int8" and calib is None:
        raise EdgeError("INT8 needs calibration images: pass --calib calibration/NAME.txt (a manifest) or "
                        "--calib DATA.yaml --calib-split SPLIT")


def _read_model(onnx: Any, src: Path, config: QuantizeConfig, gate: Any) -> Tuple[Any, Dict[str, Any]]:
    """The source graph ready for quantization (``prepare_model``, checked pre-NMS) and its sidecar ({} when
    there is none); with a gate, a sidecar whose output conventions the gate cannot score is refused."""
    from edge.artifacts import read_sidecar

    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ModelError(f"{src} is not a readable ONNX model: {exc}") from None
    model = prepare_model(model, QDQ_MIN_OPSET if config.precision == "int8" and config.per_channel else 0)
    check_pre_nms(model, src.name)
    sidecar = read_sidecar(src, required=False) or {}
    if gate is not None:
        from edge.export.quantize.gate import gate_conventions_problem

        problem = gate_conventions_problem(sidecar)
        if problem:
            raise EdgeError(
                f"the accuracy gate scores 'boxes' as x1,y1,x2,y2 input pixels and 'scores' without a background "
                f"column, as edge export writes them, but for {src.name} {problem}. Quantize the graph from "
                "`edge export`, or pass --no-gate (then evaluate the deploy graph after `edge surgery` yourself)")
    return model, sidecar


def _calibration_batches(calib: Any, fmt: Any, config: QuantizeConfig,
                         source_sha: str) -> Tuple[List[np.ndarray], Optional[Dict[str, Any]]]:
    """The calibration images as full input batches ([] without ``calib``) and, for INT8, the calibration
    provenance recorded in the sidecar (None otherwise)."""
    from edge.data.calibration import ImageBatcher, provenance_record

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
            _warn_few_calibration_images(int(batcher.num_images))
    return batches, provenance


def _warn_few_calibration_images(images: int) -> None:
    if images < MIN_CALIBRATION_IMAGES:
        log.warning("INT8 calibration on %d image(s), fewer than the %d edge asks for: activation ranges measured "
                    "on so few images fit them, not the scenes the model will see, and INT8 accuracy suffers "
                    "where the gate may not look; calibrate on %d or more representative images (a manifest such "
                    "as calibration/bccd-trainval-64.txt, or --calib DATA.yaml --calib-split trainval)",
                    images, MIN_CALIBRATION_IMAGES, MIN_CALIBRATION_IMAGES)


def _check_form(int8_model: Any, target: str) -> None:
    """The INT8 graph is in its target's form: TensorRT's Q/DQ, or standard ops in a plain CPU session."""
    if target == "onnxruntime":
        check_ort_cpu_graph(int8_model)
    else:
        check_trt_qdq(int8_model)


def _int8_graph(quantizer: Int8Quantizer, model: Any, samples: Sequence[np.ndarray], config: QuantizeConfig) -> Any:
    """The INT8 graph (``config.keep_float`` in float), checked (ONNX checker, outputs, its target's form)
    and its output errors against FP32 logged."""
    int8_model = quantizer.quantize(keep_float=config.keep_float)
    _check_output(int8_model, model, samples, "INT8")
    _check_form(int8_model, config.target)
    ref = run_outputs(model, samples)
    int8_err = output_errors(run_outputs(int8_model, samples), ref)
    log.info("INT8 graph vs FP32 on %d calibration batch(es): max box error %.3g px, max score error %.3g",
             len(samples), int8_err["max_box_error_px"], int8_err["max_score_error"])
    return int8_model


@dataclass
class _Choice:
    """The graph ``quantize_file`` hands over: the decision, the layers kept float, and the gate report and
    its path (None without the gate)."""

    decision: str
    model: Any
    float_nodes: List[str]
    gate_report: Optional[Dict[str, Any]] = None
    report_path: Optional[Path] = None


def _gated_choice(model: Any, fp16: Fp16Result, quantizer: Optional[Int8Quantizer], config: QuantizeConfig,
                  gate: Any, *, sidecar: Dict[str, Any], calib: Any, src: Path, dst: Path) -> _Choice:
    """Run the accuracy gate and write its report ``OUT.gate.json``; raise ModelError when it refuses."""
    from edge.artifacts import atomic_write_json
    from edge.export.quantize.gate import run_gate

    outcome = run_gate(model, fp16.model, quantizer, gate, precision=config.precision,
                       sidecar=sidecar, keep_float=config.keep_float, calib=calib,
                       fp16_simulation=fp16.simulation)
    gate_report = outcome.report
    report_path = dst.with_name(dst.stem + ".gate.json")
    atomic_write_json(report_path, gate_report)
    if outcome.decision == "refused":
        raise ModelError(f"accuracy gate refused {src.name}: {outcome.message}; nothing written but the "
                         f"report {report_path}")
    images = int((gate_report.get("validation") or {}).get("images") or 0)
    log.info("accuracy gate (scored on %d validation image(s)): %s", images, outcome.message)
    if images < MIN_CALIBRATION_IMAGES:
        log.warning("the accuracy gate scored only %d validation image(s) (fewer than %d): its mAP figures are "
                    "noisy; pass a larger --val-split or --val-count", images, MIN_CALIBRATION_IMAGES)
    return _Choice(outcome.decision, outcome.model, list(outcome.float_nodes), gate_report, report_path)


def _ungated_choice(config: QuantizeConfig, int8_model: Any, fp16: Fp16Result, dst: Path) -> _Choice:
    """Without the gate (--no-gate): the requested precision's graph, recorded as unverified; the gate report
    of an earlier run is removed."""
    decision = f"unverified-{config.precision}"
    chosen = int8_model if config.precision == "int8" else fp16.model
    log.warning("accuracy gate skipped (--no-gate): %s is not checked against FP32 mAP", dst.name)
    stale = dst.with_name(dst.stem + ".gate.json")
    if stale.exists():  # a report of an earlier run would describe another graph
        stale.unlink()
    return _Choice(decision, chosen, list(config.keep_float))


def _quantization_block(choice: _Choice, precision: str, config: QuantizeConfig, *, src: Path, source_sha: str,
                        partition: GraphPartition, quantizer: Optional[Int8Quantizer],
                        provenance: Optional[Dict[str, Any]], fp16: Fp16Result) -> Dict[str, Any]:
    """The sidecar's ``quantization`` block: precision and decision, source, graph partition, tools, gate
    report, and the INT8 scheme, layers and calibration provenance or the FP16 report."""
    from edge.data.calibration import tool_versions

    decision, chosen, gate_report = choice.decision, choice.model, choice.gate_report
    block: Dict[str, Any] = {
        "precision": precision,
        "requested": config.precision,
        "decision": decision,
        "form": "qdq" if precision == "int8" else "fp16",
        "target": config.target if precision == "int8" else None,
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
            "float_layers": choice.float_nodes,
            "calibration": provenance,
            "calibration_sha256": provenance["calibration_sha256"],
        })
    else:
        block.update({"method": None, "fp16": fp16.report,
                      "io": "float32 inputs/outputs kept (keep_io_types); uint8 inputs stay uint8"})
        if decision == "fp16-fallback":
            block["fallback_from"] = "int8"
    return block


def _write_outputs(src: Path, dst: Path, data: bytes, precision: str,
                   block: Dict[str, Any]) -> Tuple[Dict[str, Any], Path]:
    """Write OUT.onnx and its sidecar (derived from the source's, with ``block``) atomically; returns the
    sidecar and its path."""
    from edge.artifacts import atomic_write_bytes, derive_sidecar, sha256_bytes, write_sidecar

    meta = derive_sidecar(src, dst, "quantize", {"stage": "quantize", "precision": precision, "quantization": block})
    atomic_write_bytes(dst, data, what="--out")
    meta["sha256"] = sha256_bytes(data)
    try:
        sidecar_path = write_sidecar(dst, meta)
    except BaseException:  # a graph without its sidecar is half an output
        with contextlib.suppress(OSError):
            dst.unlink()
        raise
    return meta, sidecar_path


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
        calib: an ``edge.data.calibration.CalibrationSource`` (required for INT8; for FP16 its images are the
            decode-check samples, else synthetic frames).
        gate: an ``edge.export.quantize.gate.GateConfig``, or None to skip the gate (the sidecar then says
            the model is unverified).
    Raises:
        ModelError: a refused model (over the accuracy budget even as FP16): nothing is written but the
            gate report ``OUT.gate.json``.
    """
    onnx = import_onnx()
    from edge.artifacts import sha256_file
    from edge.model_input import model_input_format

    config.validate()
    src, dst = Path(model_path), Path(out_path)
    _check_arguments(src, dst, config, calib)
    if gate is not None:  # a missing gate split fails now, not after calibrating
        from edge.export.quantize.gate import check_gate_splits

        check_gate_splits(gate.val_data, gate.val_split)
    model, sidecar = _read_model(onnx, src, config, gate)
    fmt = model_input_format(model, sidecar)
    source_sha = sha256_file(src)
    partition = partition_graph(model)

    batches, provenance = _calibration_batches(calib, fmt, config, source_sha)
    samples = (batches[:4] if batches else _sample_inputs(fmt))
    fp16 = build_fp16(model, samples, decode=config.decode, tolerance_px=config.decode_tolerance_px)
    _check_output(fp16.model, model, samples, "FP16")

    quantizer: Optional[Int8Quantizer] = None
    try:
        int8_model = None
        if config.precision == "int8":
            quantizer = quantizer_class(config.target)(
                model, batches, method=config.method, percentile=config.percentile,
                per_channel=config.per_channel, entropy_bins=config.entropy_bins)
            int8_model = _int8_graph(quantizer, model, samples, config)
        if gate is not None:
            choice = _gated_choice(model, fp16, quantizer, config, gate, sidecar=sidecar, calib=calib, src=src,
                                   dst=dst)
        else:
            choice = _ungated_choice(config, int8_model, fp16, dst)
    finally:
        if quantizer is not None:
            quantizer.close()

    decision, chosen = choice.decision, choice.model
    precision = "int8" if decision in ("int8", "int8-mixed", "unverified-int8") else "fp16"
    if precision == "int8":
        _check_form(chosen, config.target)
    elif config.target == "onnxruntime" and decision == "fp16-fallback":
        log.warning("the gate fell back to FP16, which ONNX Runtime's CPU runs slower than FP32: for the "
                    "onnxruntime target keep the FP32 graph, or raise --max-drop / --keep-float a layer instead")
    chosen.producer_name = "edge quantize"
    data = chosen.SerializeToString()
    block = _quantization_block(choice, precision, config, src=src, source_sha=source_sha, partition=partition,
                                quantizer=quantizer, provenance=provenance, fp16=fp16)
    meta, sidecar_path = _write_outputs(src, dst, data, precision, block)
    log.info("wrote %s (%s, %s) and its sidecar", dst, precision, decision)
    return QuantizeResult(dst, sidecar_path, meta, precision, decision, choice.report_path)
