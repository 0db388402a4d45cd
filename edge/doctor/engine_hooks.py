"""How the self-test builds and opens engines: ``EngineHooks`` (build, open, device and TensorRT
version), ``tensorrt_hooks`` on TensorRT + PyCUDA, and ``EngineUnavailable``, raised with the reason when
TensorRT, PyCUDA or a CUDA device is missing.

Two kinds of engine:

* probe engines (``build`` / ``open``): ``edge.trt.build`` on the probe graph (the deploy graph plus its
  pre-NMS tensors as outputs), run by a TensorRT backend that also copies the pre-NMS outputs back;
* shipped engines (``build_config`` / ``open_engine``): exactly what ``edge build`` writes, through its
  code path (``edge.trt.build.build_engines`` inside the device's CUDA context, with the legacy INT8
  calibrator of ``edge.runtime.engines`` when asked), run by the plain ``TensorRTBackend`` as ``edge-run``
  runs it (sidecar key checked, ``cuda_graph`` as asked).

Tests pass their own ``EngineHooks`` to run the engine checks without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from edge.errors import EdgeError, MissingDependencyError


def _tensorrt_backend_class() -> Any:
    """A TensorRTBackend that also copies the pre-NMS outputs back when asked (``capture_extra``)."""
    from edge.runtime.tensorrt_backend import TensorRTBackend

    class SelftestTensorRTBackend(TensorRTBackend):
        capture_extra = False

        def _run(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
            out = super()._run(batch)
            if self.capture_extra:
                buffers = self._buffers
                assert buffers is not None
                wanted = set(self._out_names) | {self._in_buf.name}
                extra = [b for b in buffers.buffers if b.name not in wanted]
                for buf in extra:
                    buffers.dtoh(buf)
                buffers.synchronize()
                self.last_extra = {b.name: b.host.copy() for b in extra}
            return out

    return SelftestTensorRTBackend


class EngineUnavailable(EdgeError):
    """The engine checks cannot run here (no TensorRT, no CUDA device, a TensorRT too old to build)."""


@dataclass
class EngineHooks:
    """How the self-test builds and opens engines: TensorRT (``tensorrt_hooks``) on a device.

    build(onnx_path, precision, workspace_mb, out_dir) -> (engine path, build seconds): a probe engine.
    open(engine_path) -> a ``Backend`` (context manager) with ``capture_extra`` (bool attribute) and
    ``last_extra`` (the graph's other outputs, by name, from the last ``infer`` with capture_extra on).
    build_config(EngineBuildConfig, CalibrationRequest or None) -> ``edge.trt.build.BuiltEngine``: the
    engine ``edge build`` ships for that configuration (None: these hooks cannot, and the shipped-engine
    checks are skipped saying so).
    open_engine(engine_path, cuda_graph) -> the backend ``edge-run`` runs it with.
    dla_cores: DLA cores TensorRT reports on this device.
    """

    label: str
    version: str
    device_sm: str
    build: Callable[[str, str, int, str], Tuple[Path, float]]
    open: Callable[[Path], Any]
    build_config: Optional[Callable[[Any, Any], Any]] = None
    open_engine: Optional[Callable[[Path, bool], Any]] = None
    dla_cores: int = 0


def tensorrt_hooks(trt_module: Any = None, cuda_driver: Any = None, cuda_python: Any = None) -> EngineHooks:
    """Engine hooks on TensorRT + PyCUDA (``edge.trt.build`` and the TensorRT backend).

    ``trt_module``, ``cuda_driver``, ``cuda_python``: the tensorrt module, pycuda.driver and the
    ``edge.cuda.GraphApi`` for ``--cuda-graph`` (default: the installed ones; stand-ins in tests).

    Raises EngineUnavailable saying why when TensorRT, PyCUDA or a CUDA device is missing here.
    """
    from edge import cuda
    from edge.runtime.engines import legacy_calibrator
    from edge.runtime.tensorrt_backend import TensorRTBackend
    from edge.trt import api
    from edge.trt.build import EngineBuildConfig, build_engines
    from edge.trt.engine_key import DeviceInfo, read_l4t_release
    from edge.trt.version import capabilities, require_supported

    try:
        trt = trt_module if trt_module is not None else api.load_tensorrt()
    except MissingDependencyError as exc:
        raise EngineUnavailable(
            "TensorRT is not installed here (the tensorrt Python module: JetPack's python3-libnvinfer, or "
            "pip's tensorrt on a desktop GPU)"
        ) from exc
    caps = capabilities(str(trt.__version__))
    try:
        require_supported(caps, for_build=True)
    except EdgeError as exc:
        raise EngineUnavailable(str(exc)) from exc
    try:
        ctx = cuda.CudaContext(0, driver=cuda_driver)
    except EdgeError as exc:
        raise EngineUnavailable(f"no usable CUDA device ({exc})") from exc
    try:
        device = DeviceInfo(ctx.name, ctx.sm, read_l4t_release())
    finally:
        ctx.close()
    backend_cls = _tensorrt_backend_class()

    def build(onnx_path: str, precision: str, workspace_mb: int, out_dir: str) -> Tuple[Path, float]:
        cfg = EngineBuildConfig(onnx_path=onnx_path, out_dir=out_dir, precision=precision, workspace_mb=workspace_mb)
        built = build_engines(cfg, trt, device)[0]
        return built.path, built.seconds

    def open_probe(path: Path) -> Any:
        return backend_cls(path, trt_module=trt, cuda_driver=cuda_driver)

    def build_config(cfg: Any, calib: Any = None) -> Any:
        """``edge build`` (edge.runtime.engines.build_engines_for_model) on this TensorRT and device."""
        with cuda.CudaContext(0, driver=cuda_driver) as build_ctx, build_ctx.current():
            calibrator = legacy_calibrator(calib, cfg, trt, cuda_driver=cuda_driver) if calib is not None else None
            return build_engines(cfg, trt, device, calibrator=calibrator)[0]

    def open_engine(path: Path, cuda_graph: bool = False) -> Any:
        return TensorRTBackend(path, cuda_graph=cuda_graph, trt_module=trt, cuda_driver=cuda_driver,
                               cuda_python=cuda_python if cuda_graph else None)

    return EngineHooks(f"TensorRT {caps.version_string} on {device.name}", caps.version_string, device.sm,
                       build, open_probe, build_config, open_engine, api.dla_core_count(trt))
