"""The only PyCUDA import in the project: a CUDA context, page-locked + device buffers and one stream.

Everything allocated here is owned by a ``CudaBuffers`` object (a context manager) and freed by its
``close()``; the context is released by ``CudaContext.close()``. Used by the TensorRT backend and by the
legacy INT8 calibrator, so neither carries its own CUDA code.

Context model: the device's *primary* context (the one the CUDA runtime, and so TensorRT, uses), retained
with ``Device.retain_primary_context()``. Whichever thread runs inference pushes it once and keeps it
current (``CudaContext.bind()``), then pops it when done (``unbind()``); a call from another thread wraps
itself in ``with ctx.current():``. TensorRT and PyCUDA therefore always work in the same context.

CUDA graphs (``edge-run --cuda-graph``): no released PyCUDA can capture a stream (its ``Stream`` wraps
``synchronize``, ``is_done``, ``wait_for_event`` and ``handle``; nothing else). The capture therefore goes through
cuda-python's driver bindings on PyCUDA's stream handle (``GraphApi``, ``CudaGraph``): ``cuStreamBeginCapture``
(thread-local mode) / ``cuStreamEndCapture`` -> ``CUgraph``, instantiated to a ``CUgraphExec``, replayed with
``cuGraphLaunch`` on the same stream, both freed by ``CudaGraph.close()``. Everything runs in PyCUDA's
(primary) context, which the CUDA driver shares process-wide with cuda-python.

PyCUDA builds only where a CUDA toolkit exists (Jetson, desktop GPUs): ``pip install 'edge-detect[jetson]'``.
Importing this module is free; PyCUDA and cuda-python are imported on first use and a missing one raises
``MissingDependencyError``.

What each attribute holds is annotated with the ``pycuda.driver`` class it is (``drv``, ``self.drv`` and
``ctx.drv`` are the module itself): tests/cuda checks every module attribute and method used here against the
real PyCUDA built from its sdist.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import EdgeError, MissingDependencyError

if TYPE_CHECKING:  # annotations only: PyCUDA is imported on first use (load_driver)
    import pycuda.driver as pycuda_driver

log = logging.getLogger(__name__)

_INSTALL = (
    "PyCUDA must be built against this device's CUDA: on a Jetson run deploy/setup-jetson.sh (it sets "
    "CUDA_ROOT and PATH) or `pip install 'edge-detect[jetson]'` with /usr/local/cuda/bin on PATH; on a "
    "desktop GPU install the CUDA toolkit first. Without a GPU use --backend onnxruntime."
)


def load_driver(module: Any = None) -> Any:
    """``pycuda.driver``, initialized; ``module`` (a stand-in in tests) is used as is."""
    if module is not None:
        drv = module
        drv.init()
        return drv
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
        count: int = self.drv.Device.count()
        if device < 0 or device >= count:
            raise EdgeError(f"CUDA device {device} does not exist; this machine has {count} device(s)")
        self.device_index = device
        self.device: pycuda_driver.Device = self.drv.Device(device)
        self._ctx: pycuda_driver.Context = self.device.retain_primary_context()
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
    host: np.ndarray  # from pagelocked_empty: its ``base`` is the PagelockedHostAllocation
    device: pycuda_driver.DeviceAllocation

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
            self.stream: pycuda_driver.Stream = self.drv.Stream()
        self.buffers: List[HostDeviceBuffer] = []
        self.graph: Optional[CudaGraph] = None
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
            host: np.ndarray = self.drv.pagelocked_empty(shape, np.dtype(dtype))
            device: pycuda_driver.DeviceAllocation = self.drv.mem_alloc(max(1, host.nbytes))
        buf = HostDeviceBuffer(name, host, device)
        self.buffers.append(buf)
        return buf

    def htod(self, buf: HostDeviceBuffer, rows: Optional[int] = None) -> None:
        """Queue host -> device copy of ``buf`` on the stream; ``rows``: only the first ``rows`` entries of
        the leading (batch) dimension, for a buffer sized for a larger batch than this run's."""
        host = buf.host if rows is None else buf.host[:rows]
        self.drv.memcpy_htod_async(buf.device, host, self.stream)

    def dtoh(self, buf: HostDeviceBuffer, rows: Optional[int] = None) -> None:
        """Queue device -> host copy of ``buf`` (or of its first ``rows`` batch entries) on the stream."""
        host = buf.host if rows is None else buf.host[:rows]
        self.drv.memcpy_dtoh_async(host, buf.device, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    # -- CUDA graphs -----------------------------------------------------------------------------
    def capture(self, api: GraphApi, enqueue: Callable[[int], None], key: Hashable) -> bool:
        """Record ``enqueue(stream_handle)`` (TensorRT's enqueue) on the stream into a CUDA graph for replay.

        TensorRT's rules: call after one normal enqueue on this stream (TensorRT allocates lazily on the first
        one, which must not land in the graph), and capture again when the input shapes or tensor addresses
        change: ``key`` stands for them, and ``launch_graph`` replays only for the same key.

        Returns False, logging why, when the capture fails: a CUDA error, or an enqueue that fails while
        capturing (an engine with operations not permitted under capture; trtexec ignores --useCudaGraph then);
        the caller keeps launching normally, and a real enqueue failure shows on the next normal enqueue.
        """
        self.drop_graph()
        try:
            self.graph = CudaGraph.capture(api, self.stream_handle, enqueue, key)
        except EdgeError as exc:  # CudaGraphError, or the enqueue's ModelError under capture
            log.warning("CUDA graph capture failed (%s); running without CUDA graphs", exc)
            return False
        log.info("captured the enqueue as a CUDA graph (%s)", api.package)
        return True

    def launch_graph(self, key: Hashable) -> bool:
        """Replay the captured graph on the stream when it was captured for ``key``; False (nothing queued) when
        there is no graph or it was captured for other shapes/addresses (it is freed then)."""
        if self.graph is None:
            return False
        if self.graph.key != key:
            log.info("input shapes or tensor addresses changed since the CUDA graph was captured; capturing again")
            self.drop_graph()
            return False
        self.graph.launch()
        return True

    def drop_graph(self) -> None:
        if self.graph is not None:
            self.graph.close()
            self.graph = None

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self.ctx.current():
            self.synchronize()
            self.drop_graph()
            for buf in self.buffers:
                buf.device.free()
                host_alloc: pycuda_driver.PagelockedHostAllocation = buf.host.base
                host_alloc.free()
            self.buffers = []
            self.stream = None  # type: ignore[assignment]

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
        self._mem: Optional[pycuda_driver.DeviceAllocation] = self.drv.mem_alloc(self.nbytes)
        self.ptr = int(self._mem)

    def upload(self, array: Any) -> None:
        if array.nbytes != self.nbytes:
            raise ValueError(f"upload of {array.nbytes} bytes into a {self.nbytes}-byte device buffer")
        self.drv.memcpy_htod(self._mem, array)

    def free(self) -> None:
        if self._mem is not None:
            self._mem.free()
            self._mem = None


# -- CUDA graphs through cuda-python ---------------------------------------------------------------------

_GRAPH_INSTALL = (
    "--cuda-graph captures PyCUDA's stream with cuda-python's driver bindings: `pip install cuda-python` "
    "(`pip install 'edge-detect[jetson]'` picks the release for JetPack's Python), with a major version no "
    "newer than the driver's CUDA (JetPack 5: 'cuda-python==11.8.*', JetPack 6: 'cuda-python==12.*'); or run "
    "without --cuda-graph"
)


class CudaGraphError(EdgeError):
    """A cuda-python driver call of the CUDA-graph capture or replay returned an error."""


def _version_tuple(text: str) -> Tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if match is None:
        raise EdgeError(f"unreadable cuda-python version {text!r}; expected MAJOR.MINOR[.PATCH]")
    return tuple(int(g) for g in match.groups() if g is not None)


class GraphApi:
    """cuda-python's driver module as the CUDA-graph code calls it, and the release it comes from.

    ``driver`` is ``cuda.bindings.driver`` (the ``cuda-bindings`` package: cuda-python 11.8.6+ and 12.6+) or
    ``cuda.cuda`` (cuda-python before that; what Python 3.8, JetPack 5, gets). Which one is decided by the
    installed distributions' versions (``load_graph_api``), and the calls by the release's major version:
    CUDA 12 made ``cuGraphInstantiate(hGraph, flags)`` the flags form, while 11.x has it as
    ``cuGraphInstantiateWithFlags(hGraph, flags)`` (its ``cuGraphInstantiate`` takes a log buffer).
    Every call returns ``(CUresult, *values)``.
    """

    def __init__(self, driver: Any, version: str, package: str) -> None:
        self.driver = driver
        self.version = _version_tuple(version)
        self.package = f"{package} {version}"

    def check(self, result: Tuple[Any, ...], call: str) -> Tuple[Any, ...]:
        """The values after the CUresult of ``result``; CudaGraphError naming the error otherwise."""
        err = result[0]
        if err != self.driver.CUresult.CUDA_SUCCESS:
            name_err, name = self.driver.cuGetErrorName(err)
            text = name.decode() if name_err == self.driver.CUresult.CUDA_SUCCESS else str(err)
            raise CudaGraphError(f"{call} returned {text} ({self.package})")
        return tuple(result[1:])

    def stream(self, handle: int) -> Any:
        """PyCUDA's stream (``Stream.handle``) as a ``CUstream``."""
        return self.driver.CUstream(int(handle))

    def begin_capture(self, stream: Any) -> None:
        # thread-local: only this thread's unsafe calls (e.g. a synchronous cudaMalloc) break the capture, so
        # another thread's CUDA work (a second pipeline, the calibrator) cannot invalidate it
        mode = self.driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        self.check(self.driver.cuStreamBeginCapture(stream, mode), "cuStreamBeginCapture")

    def end_capture(self, stream: Any) -> Any:
        (graph,) = self.check(self.driver.cuStreamEndCapture(stream), "cuStreamEndCapture")
        return graph

    def instantiate(self, graph: Any) -> Any:
        if self.version[0] >= 12:
            (graph_exec,) = self.check(self.driver.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        else:
            (graph_exec,) = self.check(self.driver.cuGraphInstantiateWithFlags(graph, 0), "cuGraphInstantiateWithFlags")
        return graph_exec

    def launch(self, graph_exec: Any, stream: Any) -> None:
        self.check(self.driver.cuGraphLaunch(graph_exec, stream), "cuGraphLaunch")

    def destroy_exec(self, graph_exec: Any) -> None:
        self.check(self.driver.cuGraphExecDestroy(graph_exec), "cuGraphExecDestroy")

    def destroy_graph(self, graph: Any) -> None:
        self.check(self.driver.cuGraphDestroy(graph), "cuGraphDestroy")


def load_graph_api() -> GraphApi:
    """cuda-python's driver bindings, by the installed distributions: ``cuda-bindings`` provides
    ``cuda.bindings.driver``; without it, a ``cuda-python`` older than the split provides ``cuda.cuda``.
    MissingDependencyError (naming ``pip install cuda-python``) when neither is installed."""
    from importlib import metadata

    try:
        version = metadata.version("cuda-bindings")
    except metadata.PackageNotFoundError:
        version = None
    if version is not None:
        try:
            from cuda.bindings import driver
        except ImportError as exc:
            raise EdgeError(
                f"cuda-bindings {version} is installed but cuda.bindings.driver does not import ({exc}); reinstall "
                f"it: pip install --force-reinstall 'cuda-python=={version.split('.')[0]}.*' (or run without --cuda-graph)"
            ) from exc
        return GraphApi(driver, version, "cuda-bindings")
    try:
        version = metadata.version("cuda-python")
    except metadata.PackageNotFoundError as exc:
        raise MissingDependencyError("cuda-python", "--cuda-graph (CUDA graph capture)", _GRAPH_INSTALL) from exc
    try:
        from cuda import cuda as legacy_driver
    except ImportError as exc:
        raise EdgeError(
            f"cuda-python {version} is installed without its driver bindings: cuda.cuda does not import ({exc}); "
            f"reinstall it: pip install --force-reinstall 'cuda-python=={version}' (or run without --cuda-graph)"
        ) from exc
    return GraphApi(legacy_driver, version, "cuda-python")


def graph_api(drv: Any, api: Optional[GraphApi] = None) -> GraphApi:
    """The GraphApi for CUDA graphs in PyCUDA's process (``api``, a stand-in in tests, or ``load_graph_api()``),
    refused when its release is for a newer CUDA major than the driver here: cuda-python N.x needs a CUDA N
    driver (its documented minimum), so its calls would fail on the first capture."""
    api = api if api is not None else load_graph_api()
    driver_version = int(drv.get_driver_version())  # e.g. 11040 on JetPack 5, 12060 on JetPack 6.1
    driver_major = driver_version // 1000
    if api.version[0] > driver_major:
        raise EdgeError(
            f"{api.package} is built for CUDA {api.version[0]} drivers, but this driver is CUDA "
            f"{driver_major}.{driver_version % 1000 // 10}: pip install 'cuda-python=={driver_major}.*' for "
            "--cuda-graph (or run without --cuda-graph)"
        )
    return api


class CudaGraph:
    """One stream capture of an enqueue as a CUDA graph and its executable instance, both owned here and
    freed by ``close()`` (idempotent). ``key`` is what the capture is valid for (shapes, addresses)."""

    def __init__(self, api: GraphApi, stream_handle: int, key: Hashable) -> None:
        self.api = api
        self.key = key
        self._stream = api.stream(stream_handle)
        self._graph: Any = None
        self._exec: Any = None
        self.launches = 0

    @classmethod
    def capture(cls, api: GraphApi, stream_handle: int, enqueue: Callable[[int], None], key: Hashable) -> "CudaGraph":
        """Capture ``enqueue(stream_handle)`` (which must only queue work on that stream) and instantiate it.

        A failing enqueue still ends the capture (the stream leaves capture mode; a partial graph is freed)
        and its exception propagates."""
        captured = cls(api, stream_handle, key)
        api.begin_capture(captured._stream)
        try:
            enqueue(stream_handle)
        except BaseException:
            result = api.driver.cuStreamEndCapture(captured._stream)
            if result[0] == api.driver.CUresult.CUDA_SUCCESS and result[1] is not None:
                api.destroy_graph(result[1])
            raise
        captured._graph = api.end_capture(captured._stream)
        try:
            captured._exec = api.instantiate(captured._graph)
        except BaseException:
            captured.close()
            raise
        return captured

    def launch(self) -> None:
        """Queue one replay on the stream it was captured on."""
        if self._exec is None:
            raise EdgeError("the CUDA graph is closed; capture it again")
        self.api.launch(self._exec, self._stream)
        self.launches += 1

    @property
    def closed(self) -> bool:
        return self._exec is None and self._graph is None

    def close(self) -> None:
        graph_exec, graph = self._exec, self._graph
        self._exec = self._graph = None
        try:
            if graph_exec is not None:
                self.api.destroy_exec(graph_exec)
        finally:
            if graph is not None:
                self.api.destroy_graph(graph)
