"""ONNX Runtime backend: CPU by default (the embedded default anywhere without a GPU), CUDA when present.

Runs both deploy-graph flavours that ``edge surgery`` writes:

* the ONNX-NMS graph (standard ``NonMaxSuppression``): loads as is;
* the TensorRT-flavoured graph (an ``EfficientNMS_TRT`` plugin node): ONNX Runtime has no such op, so
  the graph is run through the reference implementation in ``edge.export.ort_custom_ops`` (an
  onnxruntime-extensions custom op), loaded lazily; that needs the ``onnx`` and
  ``onnxruntime-extensions`` packages (``pip install 'edge-detect[quantize]'``).
"""

from __future__ import annotations

import logging
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edge.artifacts import NMS_OUTPUTS
from edge.errors import MissingDependencyError, ModelError
from edge.model_input import TensorSpec, input_format_from_graph
from edge.ort import choose_providers, import_ort
from edge.runtime.backend import (
    Backend,
    ModelInfo,
    class_names_from_sidecar,
    find_output_names,
    outputs_to_fetch,
)

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}

TRT_NMS_OP = b"EfficientNMS_TRT"


@dataclass
class OrtOptions:
    """Session settings.

    providers: "auto" (CUDA when onnxruntime-gpu offers it, else CPU), or an explicit provider list.
    threads: intra-op threads; 0 lets ONNX Runtime use every core.
    spin: let idle ONNX Runtime threads spin. Spinning lowers the latency of ONNX Runtime alone but
        burns the CPU that the pipeline's other stages need on small devices, so the pipeline turns it off.
    """

    providers: Union[str, Sequence[str]] = "auto"
    threads: int = 0
    spin: bool = True

    def validate(self) -> "OrtOptions":
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, found {self.threads}")
        if isinstance(self.providers, str) and self.providers != "auto":
            raise ValueError(f"providers must be 'auto' or a list of provider names, found {self.providers!r}")
        return self


def graph_uses_trt_nms(path: Union[str, Path]) -> bool:
    """True when the ONNX file contains an EfficientNMS_TRT node (a byte scan: no onnx import)."""
    with open(path, "rb") as fh:
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return mm.find(TRT_NMS_OP) >= 0
        except ValueError:  # empty file
            return False


def _shape(dims: Sequence[Any]) -> tuple:
    return tuple(int(d) if isinstance(d, int) and d >= 0 else -1 for d in dims)


class OnnxRuntimeBackend(Backend):
    """A deploy ONNX (NMS inside) run by ONNX Runtime. See ``edge.runtime.backend`` for the contract."""

    name = "onnxruntime"
    # InferenceSession.run may be called from several threads at once; each call gets its own
    # intermediate buffers (pipeline parallel inference workers, ``PipelineConfig.infer_workers``)
    concurrent_infer = True

    def __init__(
        self,
        model_path: Union[str, Path],
        options: Optional[OrtOptions] = None,
        sidecar: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.options = (options or OrtOptions()).validate()
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"ONNX model {path} not found; pass the path of an .onnx file")
        if sidecar is None:
            from edge.artifacts import read_sidecar

            sidecar = read_sidecar(path, required=False) or {}
        ort = import_ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(self.options.threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not self.options.spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = choose_providers(self.options.providers)
        self.trt_flavoured = graph_uses_trt_nms(path)
        if self.trt_flavoured:
            self._session = _trt_flavoured_session(path, so, self.providers)
        else:
            try:
                self._session = ort.InferenceSession(str(path), sess_options=so, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(
                f"{path.name} has {len(inputs)} inputs ({[i.name for i in inputs]}); edge-run expects one image input"
            )
        inp = inputs[0]
        if inp.type not in _ORT_TYPES:
            raise ModelError(f"input {inp.name} has unsupported type {inp.type}")
        self._input_spec = TensorSpec(inp.name, _shape(inp.shape), np.dtype(_ORT_TYPES[inp.type]))
        outs = self._session.get_outputs()
        names = [o.name for o in outs]
        mapping = find_output_names(names, [_shape(o.shape) for o in outs])
        self._canonical = {v: k for k, v in mapping.items()}
        self._run_names, self._result_names = outputs_to_fetch(names, mapping)
        by_name = {o.name: o for o in outs}
        self._output_specs = [
            TensorSpec(c, _shape(by_name[mapping[c]].shape), np.dtype(_ORT_TYPES.get(by_name[mapping[c]].type, np.float32)))
            for c in NMS_OUTPUTS
        ]
        fmt = input_format_from_graph(self._input_spec, sidecar)
        k = self._output_specs[1].shape[1]
        self.info = ModelInfo(
            path=path,
            input_name=inp.name,
            input_format=fmt,
            class_names=class_names_from_sidecar(sidecar),
            max_detections=int(k),
            sidecar=dict(sidecar),
        )
        log.info("%s", self.describe())

    def describe(self) -> str:
        flavour = " (EfficientNMS_TRT through the reference op)" if self.trt_flavoured else ""
        threads = self.options.threads or "all"
        return (
            f"onnxruntime {import_ort().__version__} on {self._session.get_providers()[0]}, "
            f"{threads} threads: {self.info.path.name if self.info else '?'}{flavour}"
        )

    def _infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        # a feed dict per call: InferenceSession.run is thread-safe, so concurrent callers share the session
        try:
            results = self._session.run(self._run_names, {self._input_spec.name: batch})  # type: ignore[union-attr]
        except Exception as exc:
            raise ModelError(f"ONNX Runtime failed on {self.info.path.name}: {exc}") from exc  # type: ignore[union-attr]
        return dict(zip(self._result_names, results))

    def _close(self) -> None:
        self._session = None


def _trt_flavoured_session(path: Path, so: Any, providers: List[str]) -> Any:
    """An InferenceSession for a graph with EfficientNMS_TRT, through the reference custom op."""
    try:
        from edge.export import ort_custom_ops
    except ImportError as exc:
        if getattr(exc, "name", "") in ("onnx", "onnxruntime_extensions"):
            raise MissingDependencyError(
                exc.name or "onnx",
                "running a TensorRT-flavoured graph (EfficientNMS_TRT) on ONNX Runtime",
                "pip install 'edge-detect[quantize]' (onnx + onnxruntime-extensions), or run the engine "
                "built from it with --backend tensorrt, or export the ONNX-NMS flavour for ONNX Runtime",
            ) from exc
        raise ModelError(
            f"{path.name} uses EfficientNMS_TRT, which ONNX Runtime can only run through "
            f"edge.export.ort_custom_ops, and that module failed to import: {exc}"
        ) from exc
    try:
        return ort_custom_ops.make_session(str(path), sess_options=so, providers=providers)
    except (MissingDependencyError, ModelError):
        raise
    except Exception as exc:
        raise ModelError(
            f"cannot run {path.name} (EfficientNMS_TRT) through the reference op: {exc}"
        ) from exc
