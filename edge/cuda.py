"""The only PyCUDA import in the project: a CUDA context, page-locked + device buffers and one stream.

Everything allocated here is owned by a ``CudaBuffers`` object (a context manager) and freed by its
``close()``; the context is released by ``CudaContext.close()``. Used by the TensorRT backend and by the
legacy INT8 calibrator, so neither carries its own CUDA code.

Context model: the device's *primary* context (the one the CUDA runtime, and so TensorRT, uses), retained
with ``Device.retain_primary_context()``. Whichever thread runs inference pushes it once and keeps it
current (``CudaContext.bind()``), then pops it when done (``unbind()``); a call from another thread wraps
itself in ``with ctx.current():``. TensorRT and PyCUDA therefore always work in the same context.

PyCUDA builds only where a CUDA toolkit exists (Jetson, desktop GPUs): ``pip install 'edge-detect[jetson]'``.
Importing this module is free; PyCUDA is imported on first use and a missing one raises
``MissingDependencyError``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np

from edge.errors import EdgeError, MissingDependencyError

log = logging.getLogger(__name__)

_INSTALL = (
    "PyCUDA must be built against this device's CUDA: on a Jetson run deploy/setup-jetson.sh (it sets "
    "CUDA_ROOT and PATH) or `pip install 'edge-detect[jetson]'` with /usr/local/cuda/bin on PATH; on a "
    "desktop GPU install the CUDA toolkit first. Without a GPU use --backend onnxruntime."
)


def load_driver(module: Any = None) -> Any:
    """``pycuda.driver``, initialized; ``module`` (a stand-in in tests) is used as is."""
    if module is not None:
        module.init()
        return module
    try:
        import pycuda.driver as drv
    except ImportError as exc:
        raise MissingDependencyError("pycuda", "the TensorRT backend's CUDA buffers", _INSTALL) from exc
    try:
        drv.init()
    except Exception as exc:  # pycuda._driver.Error: no driver / no device
        raise EdgeError(
            f"CUDA is not usable here ({exc}): no NVIDIA driver or GPU visible. On a Jetson check "
            "`sudo tegrastats` and that the user is in the 'video' group; elsewhere check `nvidia-smi`."
        ) from exc
    return drv


class CudaContext:
    """The primary context of one device. ``bind()`` makes it current on the calling thread until
    ``unbind()``; ``current()`` does so for a ``with`` block. ``close()`` releases it (once)."""

    def __init__(self, device: int = 0, driver: Any = None) -> None:
        self.drv = load_driver(driver)
        count = self.drv.Device.count()
        if device < 0 or device >= count:
            raise EdgeError(f"CUDA device {device} does not exist; this machine has {count} device(s)")
        self.device_index = device
        self.device = self.drv.Device(device)
        self._ctx = self.device.retain_primary_context()
        self._bound_thread: Optional[int] = None
        self._closed = False

    @property
    def name(self) -> str:
        return str(self.device.name())

    @property
    def sm(self) -> str:
        """Compute capability as 'MAJOR.MINOR' (Orin: '8.7'), the engine key's ``device_sm``."""
        major, minor = self.device.compute_capability()
        return f"{major}.{minor}"

    def bind(self) -> None:
        """Push the context on the calling thread and keep it there (the inference thread)."""
        if self._closed:
            raise EdgeError("CUDA context is closed")
        if self._bound_thread == threading.get_ident():
            return
        if self._bound_thread is not None:
            raise EdgeError("CUDA context is already bound to another thread; unbind() it there first")
        self._ctx.push()
        self._bound_thread = threading.get_ident()

    def unbind(self) -> None:
        """Pop the context from the thread that bound it (call on that thread)."""
        if self._bound_thread is None:
            return
        if self._bound_thread != threading.get_ident():
            raise EdgeError("unbind() must run on the thread that called bind()")
        self.drv.Context.pop()
        self._bound_thread = None

    @property
    def bound_here(self) -> bool:
        return self._bound_thread == threading.get_ident()

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make the context current for a block (no-op when already bound to this thread)."""
        if self.bound_here:
            yield
            return
        if self._closed:
            raise EdgeError("CUDA context is closed")
        self._ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def close(self) -> None:
        if self._closed:
            return
        if self.bound_here:
            self.unbind()
        self._closed = True
        self._ctx.detach()

    def __enter__(self) -> "CudaContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class HostDeviceBuffer:
    """One tensor's page-locked host array and device allocation of the same size."""

    name: str
    host: np.ndarray
    device: Any

    @property
    def ptr(self) -> int:
        return int(self.device)

    @property
    def nbytes(self) -> int:
        return int(self.host.nbytes)


class CudaBuffers:
    """Owns one stream and the host/device buffers allocated through it; frees all on ``close()``.

    Create, use and close it with its ``CudaContext`` current (the TensorRT backend does this on the
    inference thread).
    """

    def __init__(self, ctx: CudaContext) -> None:
        self.ctx = ctx
        self.drv = ctx.drv
        with ctx.current():
            self.stream = self.drv.Stream()
        self.buffers: List[HostDeviceBuffer] = []
        self._graph: Any = None
        self._closed = False

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def alloc(self, name: str, shape: Sequence[int], dtype: Any) -> HostDeviceBuffer:
        """Page-locked host array ``shape``/``dtype`` plus a device allocation of the same byte size."""
        if self._closed:
            raise EdgeError("CudaBuffers is closed")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise EdgeError(f"cannot allocate {name} with a dynamic shape {list(shape)}; set the input shape first")
        with self.ctx.current():
            host = self.drv.pagelocked_empty(shape, np.dtype(dtype))
            device = self.drv.mem_alloc(max(1, host.nbytes))
        buf = HostDeviceBuffer(name, host, device)
        self.buffers.append(buf)
        return buf

    def htod(self, buf: HostDeviceBuffer) -> None:
        """Queue host -> device copy of ``buf`` on the stream."""
        self.drv.memcpy_htod_async(buf.device, buf.host, self.stream)

    def dtoh(self, buf: HostDeviceBuffer) -> None:
        """Queue device -> host copy of ``buf`` on the stream."""
        self.drv.memcpy_dtoh_async(buf.host, buf.device, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    # -- CUDA graphs -----------------------------------------------------------------------------
    def graphs_supported(self) -> bool:
        """Stream capture exists in PyCUDA >= 2022.1 (``Stream.begin_capture``)."""
        return hasattr(self.stream, "begin_capture") and hasattr(self.stream, "end_capture")

    def capture(self, enqueue: Callable[[int], None]) -> bool:
        """Record ``enqueue(stream_handle)`` (TensorRT's enqueue) into a CUDA graph for replay.

        Uses PyCUDA's stream capture (``Stream.begin_capture`` / ``end_capture`` -> ``Graph``, instantiated
        and launched on the stream); checked here against the API-contract stand-in only, so any surprise
        on a device falls back to normal launches with a log line rather than failing the run.

        Returns False (and logs why) when this PyCUDA cannot capture, or capture fails; the caller then
        keeps launching normally. Call after one normal run (TensorRT allocates lazily on the first one).
        """
        if not self.graphs_supported():
            log.info("this PyCUDA has no stream capture; CUDA graphs off")
            return False
        try:
            self.stream.begin_capture()
            try:
                enqueue(self.stream_handle)
            finally:
                graph = self.stream.end_capture()
            instantiate = getattr(graph, "instance", None) or getattr(graph, "instantiate", None)
            if instantiate is None:
                log.info("this PyCUDA's Graph cannot be instantiated; CUDA graphs off")
                return False
            self._graph = instantiate()
        except Exception as exc:  # noqa: BLE001 - graphs are an optimization; fall back
            log.warning("CUDA graph capture failed (%s); running without CUDA graphs", exc)
            self._graph = None
            return False
        return True

    @property
    def has_graph(self) -> bool:
        return self._graph is not None

    def launch_graph(self) -> None:
        self._graph.launch(self.stream)

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self.ctx.current():
            self.synchronize()
            self._graph = None
            for buf in self.buffers:
                buf.device.free()
                base = getattr(buf.host, "base", None)
                if base is not None and hasattr(base, "free"):
                    base.free()
            self.buffers = []
            self.stream = None

    def __enter__(self) -> "CudaBuffers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class DeviceBuffer:
    """One linear device allocation with synchronous upload, for TensorRT's legacy INT8 calibrator.

    The caller's thread must have a CUDA context current (TensorRT's builder calls ``get_batch`` on the
    thread that runs ``build_serialized_network``; wrap the build in ``CudaContext.current()``).
    """

    def __init__(self, nbytes: int, driver: Any = None) -> None:
        self.drv = load_driver(driver)
        self.nbytes = int(nbytes)
        self._mem = self.drv.mem_alloc(self.nbytes)
        self.ptr = int(self._mem)

    def upload(self, array: Any) -> None:
        if array.nbytes != self.nbytes:
            raise ValueError(f"upload of {array.nbytes} bytes into a {self.nbytes}-byte device buffer")
        self.drv.memcpy_htod(self._mem, array)

    def free(self) -> None:
        if self._mem is not None:
            self._mem.free()
            self._mem = None
