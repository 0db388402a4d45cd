"""Self-check of an exported graph: ONNX Runtime outputs against reference outputs (PyTorch's).

The error of one output ``a`` (ONNX Runtime) against its reference ``b`` (PyTorch) is measured relative to
the reference's scale::

    error(a, b) = max|a - b| / max(1, max|b|)

so boxes in input pixels (values up to a few hundred) may differ by ``tolerance * max|b|`` pixels while
scores in [0, 1] must agree to ``tolerance`` absolutely. fp32 graphs use ``tolerance = 1e-4``
(``DEFAULT_TOLERANCE``). NaN or Inf anywhere in ``a`` where ``b`` is finite, or a shape or dtype mismatch,
is a failure whatever the tolerance.

A comparison proves something only when the outputs move with the input: ``input_spread`` measures, with
the same formula, how much each output changes between two different inputs; under ``MIN_INPUT_SPREAD``
the outputs barely depend on the input (random or untrained weights) and a matching graph proves little
(``warn_if_input_independent``).

Also here: ``check_graph`` (``onnx.checker`` with full checks plus strict shape inference), which every
graph the export writes must pass. numpy + onnx + onnxruntime only (no torch), so ``edge quantize`` and
other stages can reuse the comparison.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np

from edge.errors import ModelError, import_optional
from edge.ort import import_onnx

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4
#: an output that moves by less than this (``input_spread``) between two different inputs barely depends on
#: its input: ten times the parity tolerance, so a graph ignoring its input could still pass the parity check
MIN_INPUT_SPREAD = 1e-3
ERROR_FORMULA = "max|onnx - torch| / max(1, max|torch|)"

ModelSource = Union[str, "os.PathLike[str]", bytes, Any]  # a path, serialized bytes, or an onnx.ModelProto


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual - expected| / max(1, max|expected|)`` (0.0 for empty arrays; inf if non-finite)."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(finite_a, finite_b):
        return float("inf")
    if not finite_b.all():  # non-finite at the same places: they must be the same inf (or both NaN)
        na, nb = a[~finite_b], b[~finite_b]
        if not ((np.isnan(na) & np.isnan(nb)) | (na == nb)).all():
            return float("inf")
        a, b = a[finite_b], b[finite_b]
        if a.size == 0:
            return 0.0
    scale = max(1.0, float(np.max(np.abs(b))))
    return float(np.max(np.abs(a - b))) / scale


def input_spread(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """How much each output moves between two different inputs: ``relative_error(second, first)`` per output
    name both have (``max|a - b| / max(1, max|b|)``: scores in [0, 1] absolutely, boxes relative to their
    magnitude). Under ``MIN_INPUT_SPREAD`` the output barely depends on its input."""
    return {k: relative_error(np.asarray(second[k]), np.asarray(first[k])) for k in first if k in second}


def samples_input_spread(samples: Sequence["Sample"]) -> Dict[str, float]:
    """``input_spread`` of the reference outputs over the samples' images: the first image of one output
    shape against every other image of that shape (the largest spread per output); {} with fewer than two."""
    groups: Dict[Any, List[Dict[str, np.ndarray]]] = {}
    for sample in samples:
        outs = {k: np.asarray(v) for k, v in sample.expected.items()}
        batch = min((v.shape[0] for v in outs.values() if v.ndim), default=0)
        for i in range(batch):
            image = {k: v[i] for k, v in outs.items()}
            groups.setdefault(tuple((k, v.shape) for k, v in image.items()), []).append(image)
    images = max(groups.values(), key=len, default=[])
    spread: Dict[str, float] = {}
    for other in images[1:]:
        for k, v in input_spread(images[0], other).items():
            spread[k] = max(spread.get(k, 0.0), v)
    return spread


def warn_if_input_independent(spread: Mapping[str, float], what: str) -> bool:
    """Warn (once, here) when an output's ``input_spread`` is under ``MIN_INPUT_SPREAD``; returns True then."""
    flat = {k: v for k, v in spread.items() if v < MIN_INPUT_SPREAD}
    if flat:
        moved = ", ".join(f"{k} {v:.1e}" for k, v in flat.items())
        log.warning("%s: the comparison proves little: outputs barely depend on the input (random or untrained "
                    "weights?): between different inputs they moved by %s of their magnitude (under %g)", what,
                    moved, MIN_INPUT_SPREAD)
    return bool(flat)


@dataclass
class SampleResult:
    """One verification sample: its description and the error of each output (see the module docstring)."""

    name: str
    input_shape: List[int]
    errors: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "input_shape": list(self.input_shape),
                "errors": {k: float(v) for k, v in self.errors.items()}}


@dataclass
class VerificationReport:
    """Per-sample errors; ``max_errors`` is the worst error per output over all samples."""

    tolerance: float
    samples: List[SampleResult] = field(default_factory=list)
    #: ``samples_input_spread`` of the reference outputs ({} when fewer than two images were compared)
    input_spread: Dict[str, float] = field(default_factory=dict)

    @property
    def max_errors(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for s in self.samples:
            for k, v in s.errors.items():
                out[k] = max(out.get(k, 0.0), v)
        return out

    @property
    def passed(self) -> bool:
        return all(v <= self.tolerance for v in self.max_errors.values())

    def failures(self) -> List[str]:
        return [f"{s.name}: {k} error {v:.3g}" for s in self.samples for k, v in s.errors.items()
                if not v <= self.tolerance]

    def to_dict(self) -> Dict[str, Any]:
        spread = {k: float(v) for k, v in self.input_spread.items()}
        return {"tolerance": self.tolerance, "formula": ERROR_FORMULA, "passed": self.passed,
                "max_errors": self.max_errors, "samples": [s.to_dict() for s in self.samples],
                "input_spread": spread,
                "input_dependent": all(v >= MIN_INPUT_SPREAD for v in spread.values()) if spread else None}


@dataclass
class Sample:
    """One verification case: graph inputs by name and the reference outputs by name."""

    name: str
    inputs: Dict[str, np.ndarray]
    expected: Dict[str, np.ndarray]


def _ort() -> Any:
    return import_optional("onnxruntime", "onnxruntime", "verifying an exported ONNX", "pip install onnxruntime")




def _model_bytes(model: ModelSource) -> bytes:
    if isinstance(model, bytes):
        return model
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise TypeError(f"expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")


def ort_session(model: ModelSource, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session on ``model`` (path, bytes or ModelProto), all graph optimizations on."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(_model_bytes(model), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several exception types for an invalid graph
        raise ModelError(f"ONNX Runtime cannot load the exported graph: {str(exc).splitlines()[0]}") from None


def run_onnx(session: Any, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Run ``session`` on ``inputs``; returns every graph output by name."""
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, dict(inputs))
    except Exception as exc:
        shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in inputs.items()}
        raise ModelError(f"ONNX Runtime failed to run the graph on inputs {shapes}: "
                         f"{str(exc).splitlines()[0]}") from None
    return dict(zip(names, values))


def compare_outputs(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], name: str,
                    input_shape: Sequence[int]) -> SampleResult:
    """Errors of ``actual`` against ``expected`` for each expected output (shape/dtype kind must match)."""
    result = SampleResult(name=name, input_shape=[int(d) for d in input_shape])
    for key, ref in expected.items():
        if key not in actual:
            raise ModelError(f"{name}: the graph has no output {key!r} (outputs: {sorted(actual)}); "
                             "expected the PyTorch model's outputs boxes and scores")
        got = np.asarray(actual[key])
        ref = np.asarray(ref)
        if got.shape != ref.shape:
            raise ModelError(f"{name}: output {key!r} has shape {list(got.shape)} in ONNX Runtime but "
                             f"{list(ref.shape)} in PyTorch; the graph does not compute the model's output")
        if got.dtype.kind != ref.dtype.kind:
            raise ModelError(f"{name}: output {key!r} is {got.dtype} in ONNX Runtime but {ref.dtype} in PyTorch")
        result.errors[key] = relative_error(got, ref)
    return result


def verify_samples(model: ModelSource, samples: Sequence[Sample], tolerance: float = DEFAULT_TOLERANCE,
                   what: str = "exported graph", raise_on_failure: bool = True) -> VerificationReport:
    """Run ``model`` in ONNX Runtime on every sample and compare with the sample's reference outputs.

    Raises:
        ModelError: any output's error (``max|a - b| / max(1, max|b|)``) exceeds ``tolerance`` (when
            ``raise_on_failure``), or a shape/dtype/output-name mismatch, or the graph does not load/run.
    """
    if not samples:
        raise ValueError("verify_samples needs at least one sample")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    session = ort_session(model)
    report = VerificationReport(tolerance=float(tolerance), input_spread=samples_input_spread(samples))
    for sample in samples:
        outputs = run_onnx(session, sample.inputs)
        first = next(iter(sample.inputs.values()))
        result = compare_outputs(outputs, sample.expected, sample.name, first.shape)
        log.debug("verify %s: %s", sample.name, {k: f"{v:.2e}" for k, v in result.errors.items()})
        report.samples.append(result)
    if raise_on_failure and not report.passed:
        worst = ", ".join(report.failures()[:6])
        raise ModelError(
            f"{what} does not match PyTorch: {worst} (allowed {tolerance:g}, error = {ERROR_FORMULA}). "
            "The graph computes something else than the model: look for data-dependent Python control flow "
            "or shapes read as Python numbers in forward(), an unsupported op, or a corrupted file; "
            "re-export with another --opset or fix the model code"
        )
    return report


def check_graph(model: ModelSource, what: str = "graph") -> Any:
    """``onnx.checker.check_model(full_check=True)`` plus strict shape inference; returns the inferred model.

    Raises ModelError naming ``what`` and the checker's message.
    """
    onnx = import_onnx()
    proto = model if hasattr(model, "graph") else onnx.load_from_string(_model_bytes(model))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ModelError(f"{what} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ModelError(f"{what} fails ONNX shape inference: {str(exc).splitlines()[0]}") from None
    return inferred


def output_shapes(model: Any) -> Dict[str, List[Union[int, str, None]]]:
    """Graph output name -> shape (ints, symbolic names, or None for unknown dims) of a ModelProto."""
    out: Dict[str, List[Union[int, str, None]]] = {}
    for value in model.graph.output:
        dims: List[Union[int, str, None]] = []
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            for d in tensor.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    dims.append(str(d.dim_param))
                else:
                    dims.append(None)
        out[value.name] = dims
    return out


def expect_outputs(model: Any, names: Sequence[str], what: str = "graph") -> None:
    """Raise ModelError unless ``model``'s graph outputs are exactly ``names`` in order."""
    found = [o.name for o in model.graph.output]
    if found != list(names):
        raise ModelError(f"{what} has outputs {found}; expected {list(names)}")

