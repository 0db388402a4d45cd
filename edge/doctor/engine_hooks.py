"""How the self-test builds and opens engines: ``EngineHooks`` (build, open, device and TensorRT
version), ``tensorrt_hooks`` on TensorRT + PyCUDA (``edge.trt.build`` and the TensorRT backend, which
also copies the pre-NMS outputs back when asked), and ``EngineUnavailable``, raised with the reason when
TensorRT, PyCUDA or a CUDA device is missing.

Tests pass their own ``EngineHooks`` to run the engine checks without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

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

    build(onnx_path, precision, workspace_mb, out_dir) -> (engine path, build seconds).
    open(engine_path) -> a ``Backend`` (context manager) with ``capture_extra`` (bool attribute) and
    ``last_extra`` (the graph's other outputs, by name, from the last ``infer`` with capture_extra on).
    """

    label: str
    version: str
    device_sm: str
    build: Callable[[str, str, int, str], Tuple[Path, float]]
    open: Callable[[Path], Any]


def tensorrt_hooks(trt_module: Any = None, cuda_driver: Any = None) -> EngineHooks:
    """Engine hooks on TensorRT + PyCUDA (``edge.trt.build`` and the TensorRT backend).

    Raises EngineUnavailable saying why when TensorRT, PyCUDA or a CUDA device is missing here.
    """
    from edge import cuda
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

    def open_engine(path: Path) -> Any:
        return backend_cls(path, trt_module=trt, cuda_driver=cuda_driver)

    return EngineHooks(f"TensorRT {caps.version_string} on {device.name}", caps.version_string, device.sm,
                       build, open_engine)
