"""TensorRT backend: a serialized engine run through PyCUDA buffers on one stream (Jetson, desktop GPUs).

* The engine is deserialized by ``edge.trt.api.deserialize_engine`` (plugins such as EfficientNMS_TRT
  loaded first) after its sidecar key is checked: an engine built for another TensorRT, GPU or L4T
  release, or from other ONNX bytes, is refused with the reason and the rebuild command.
* I/O: the name-based tensor API on TensorRT >= 8.5 (``set_input_shape``, ``set_tensor_address``,
  ``execute_async_v3``), the bindings API (``set_binding_shape``, ``execute_async_v2``) on 8.2/8.4,
  decided by ``edge.trt.version.TrtCapabilities`` (never by try/except around API calls).
* Memory: page-locked host and device buffers for every I/O tensor and one stream, all owned by
  ``edge.cuda.CudaBuffers`` and freed by ``close()``; the CUDA context is the device's primary context,
  bound to the inference thread (``bind_thread``) for the whole run.
* Optional CUDA-graph capture of the enqueue (``cuda_graph=True``): one normal enqueue first (TensorRT allocates
  lazily), then the enqueue is captured on the same stream with cuda-python (``edge.cuda.CudaGraph``; no
  released PyCUDA can capture) and replayed with ``cuGraphLaunch``; captured again when the input shape or a
  tensor address changes.
* Dynamic batch (an engine built with ``edge build --batch MIN,OPT,MAX``): buffers are sized for profile 0's
  maximum batch, and each call sets the input shape to its own batch (``set_input_shape`` /
  ``set_binding_shape``) and copies only that many rows each way; ``max_batch`` tells callers (the
  multi-stream loop) the largest batch the engine takes.

TensorRT and PyCUDA are imported only when a ``TensorRTBackend`` is created. ``trt_module`` and
``cuda_driver`` exist for the API-contract tests (strict stand-ins of the documented APIs).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from edge.artifacts import NMS_OUTPUTS
from edge.errors import EdgeError, ModelError
from edge.model_input import InputFormat, TensorSpec, input_format_from_graph
from edge.runtime.backend import (
    Backend,
    ModelInfo,
    class_names_from_sidecar,
    find_output_names,
    outputs_to_fetch,
)

log = logging.getLogger(__name__)

# TensorRT DataType member name -> numpy dtype, for every member numpy can hold (BF16, FP8, INT4, FP4 and
# E8M0 it cannot). Not trt.nptype(): TensorRT 8.4/8.5 build its table with np.bool, which numpy 1.24-1.26
# lack (JetPack 5's venv has 1.24.4), so there it raises on every call.
NUMPY_BY_TRT_DTYPE = {
    "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
    "BOOL": np.bool_, "UINT8": np.uint8,
}


def numpy_dtype(trt_dtype: Any) -> np.dtype:
    """The numpy dtype of a ``tensorrt.DataType`` member, looked up by the member's name."""
    name = trt_dtype.name
    if name not in NUMPY_BY_TRT_DTYPE:
        raise ModelError(
            f"the engine has a tensor of TensorRT type {name}, which has no numpy dtype; edge-run needs "
            f"engine I/O in one of {sorted(NUMPY_BY_TRT_DTYPE)}: rebuild from an ONNX whose inputs and "
            "outputs use those types"
        )
    return np.dtype(NUMPY_BY_TRT_DTYPE[name])


def check_engine_sidecar(
    engine_path: Path,
    sidecar: Optional[Dict[str, Any]],
    *,
    tensorrt_version: str,
    device_name: str,
    device_sm: str,
    l4t_release: Optional[str],
) -> List[str]:
    """Reasons why the engine at ``engine_path`` must not run here (empty list: fine).

    Compares the key recorded by ``edge build`` (sidecar ``engine.key``) with what this machine has:
    TensorRT version, GPU name and SM, L4T release; the ONNX sha256 when the source ONNX is still at
    the recorded path; and the engine file's own sha256. No sidecar: nothing can be checked (a user's
    own engine from trtexec), which is logged and allowed.
    """
    from edge.artifacts import sha256_file
    from edge.trt.engine_key import EngineKey, stale_reasons

    if not sidecar or "engine" not in sidecar:
        log.warning(
            "%s has no edge sidecar with an engine key: cannot check it was built for this TensorRT and GPU",
            engine_path.name,
        )
        return []
    engine = sidecar["engine"]
    try:
        recorded = EngineKey.from_dict(engine["key"])
    except (KeyError, TypeError, ValueError) as exc:
        return [f"the sidecar's engine key is unreadable ({exc})"]
    # edge build records MAJOR.MINOR.PATCH; tensorrt.__version__ reads like "10.3.0.30" on a device
    from edge.trt.version import parse_version

    current = dataclasses.replace(
        recorded,
        tensorrt_version=".".join(str(v) for v in parse_version(tensorrt_version)),
        device_name=device_name,
        device_sm=device_sm,
        l4t_release=l4t_release,
    )
    source = engine.get("source_onnx")
    if source and Path(source).is_file():
        current = dataclasses.replace(current, onnx_sha256=sha256_file(source))
    reasons = stale_reasons(recorded, current)
    recorded_sha = engine.get("sha256")
    if recorded_sha and recorded_sha != sha256_file(engine_path):
        reasons.append("engine bytes do not match the sidecar's sha256 (file replaced or truncated)")
    return reasons


class TensorRTBackend(Backend):
    """A TensorRT engine with NMS inside (the four outputs). See ``edge.runtime.backend``.

    Args:
        engine_path: the serialized engine (``edge build`` output or a user's trtexec engine).
        device: CUDA device index.
        check_key: refuse an engine whose sidecar key does not match this machine (default on).
        cuda_graph: capture the enqueue in a CUDA graph after the first run and replay it (needs cuda-python).
        sidecar: the engine's sidecar (read from ``NAME.json`` when None).
        trt_module / cuda_driver: the ``tensorrt`` module / ``pycuda.driver`` (stand-ins in tests).
        cuda_python: the ``edge.cuda.GraphApi`` for ``cuda_graph`` (a stand-in in tests; default: the installed
            cuda-python, MissingDependencyError when absent).
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: Union[str, Path],
        *,
        device: int = 0,
        check_key: bool = True,
        cuda_graph: bool = False,
        sidecar: Optional[Dict[str, Any]] = None,
        trt_module: Any = None,
        cuda_driver: Any = None,
        cuda_python: Any = None,
    ) -> None:
        super().__init__()
        from edge import cuda
        from edge.trt import api
        from edge.trt.engine_key import read_l4t_release
        from edge.trt.version import require_supported

        path = Path(engine_path)
        if not path.is_file():
            raise ModelError(f"engine {path} not found; build one with `edge build MODEL.onnx --out engines/`")
        trt = trt_module if trt_module is not None else api.load_tensorrt()
        self.trt = trt
        self.caps = api.trt_capabilities(trt)
        require_supported(self.caps, for_build=False)
        if sidecar is None:
            from edge.artifacts import read_sidecar

            sidecar = read_sidecar(path, required=False) or {}
        self.ctx = cuda.CudaContext(device, driver=cuda_driver)
        self._buffers: Optional[cuda.CudaBuffers] = None
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self.cuda_graph = bool(cuda_graph)
        self._graph_api: Optional[cuda.GraphApi] = None
        try:
            if self.cuda_graph:  # fail here, not on the first frame, when cuda-python is missing or too new
                self._graph_api = cuda.graph_api(self.ctx.drv, cuda_python)
            if check_key:
                reasons = check_engine_sidecar(
                    path, sidecar, tensorrt_version=str(trt.__version__), device_name=self.ctx.name,
                    device_sm=self.ctx.sm, l4t_release=read_l4t_release(),
                )
                if reasons:
                    source = (sidecar.get("engine") or {}).get("source_onnx", "MODEL.onnx")
                    raise ModelError(
                        f"engine {path.name} is stale for this machine: {'; '.join(reasons)}. Rebuild it: "
                        f"`edge build {source} --out {path.parent}/` (or pass --no-engine-check to run it anyway)"
                    )
            with self.ctx.current():
                self._runtime, self._engine = api.deserialize_engine(trt, path.read_bytes())
                self._io = self._inspect_io()
        except BaseException:
            self._closed = True
            self.ctx.close()
            raise
        inputs = [t for t in self._io if t[1]]
        outputs = [t for t in self._io if not t[1]]
        if len(inputs) != 1:
            self.close()
            raise ModelError(f"engine {path.name} has {len(inputs)} inputs; edge-run expects one image input")
        in_name, _, in_shape, in_dtype = inputs[0]
        self._input_spec = TensorSpec(in_name, in_shape, np.dtype(in_dtype))
        self._batch_range = self._profile_batch_range()
        self.max_batch = self._batch_range[1]
        mapping = find_output_names([o[0] for o in outputs], [o[2] for o in outputs])
        self._out_names, self._result_names = outputs_to_fetch([o[0] for o in outputs], mapping)
        by_name = {o[0]: o for o in outputs}
        self._output_specs = [
            TensorSpec(c, by_name[mapping[c]][2], np.dtype(by_name[mapping[c]][3])) for c in NMS_OUTPUTS
        ]
        fmt = self._engine_input_format(sidecar, path.name)
        self.info = ModelInfo(
            path=path, input_name=in_name, input_format=fmt, class_names=class_names_from_sidecar(sidecar),
            max_detections=int(self._output_specs[1].shape[1]), sidecar=dict(sidecar),
        )
        self._host_out: Dict[str, Any] = {}
        self._lock = threading.Lock()
        log.info("%s", self.describe())

    # -- engine inspection -----------------------------------------------------------------------
    def _inspect_io(self) -> List[Tuple[str, bool, Tuple[int, ...], Any]]:
        """[(name, is_input, shape, numpy dtype)] for every I/O tensor, in engine order."""
        trt, engine = self.trt, self._engine
        io = []
        if self.caps.tensor_api:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                shape = tuple(int(d) for d in engine.get_tensor_shape(name))
                io.append((name, is_input, shape, numpy_dtype(engine.get_tensor_dtype(name))))
        else:
            for i in range(engine.num_bindings):
                name = engine.get_binding_name(i)
                shape = tuple(int(d) for d in engine.get_binding_shape(i))
                io.append((name, bool(engine.binding_is_input(i)), shape, numpy_dtype(engine.get_binding_dtype(i))))
        return io

    def _engine_input_format(self, sidecar: Dict[str, Any], engine_name: str) -> InputFormat:
        """The input format at the size the engine runs at (profile 0's opt for dynamic H/W).

        Layout and normalization come from the sidecar; the size never does when the engine has its own:
        an engine built from a dynamic-H/W ONNX at another ``--imgsz`` than the export's runs at its
        profile's size, and preprocessing must produce exactly that.
        """
        spec = self._input_spec
        assert spec is not None
        run = self._input_run_shape()
        fmt = input_format_from_graph(TensorSpec(spec.name, (spec.shape[0],) + tuple(run[1:]), spec.dtype), sidecar)
        size = sidecar.get("input_size") or (sidecar.get("input") or {}).get("size")
        if isinstance(size, (list, tuple)) and [int(v) for v in size] != [fmt.height, fmt.width]:
            log.warning(
                "the sidecar's input size %sx%s is not the size engine %s was built for (%dx%d); preprocessing "
                "uses the engine's. Rebuild with `edge build` to refresh the sidecar", size[0], size[1],
                engine_name, fmt.height, fmt.width,
            )
        return fmt

    def _input_profile(self) -> Optional[List[Tuple[int, ...]]]:
        """Profile 0's (min, opt, max) input shapes; None for an engine whose input is fully static."""
        name, _, shape, _ = next(t for t in self._io if t[1])
        if all(d >= 0 for d in shape):
            return None
        engine = self._engine
        if self.caps.tensor_api:
            shapes = engine.get_tensor_profile_shape(name, 0)
        else:
            index = [t[0] for t in self._io].index(name)
            shapes = engine.get_profile_shape(0, index)
        return [tuple(int(d) for d in s) for s in shapes]

    def _profile_batch_range(self) -> Tuple[int, int]:
        """(smallest, largest) batch the engine runs: its static batch twice, or profile 0's min and max."""
        shape = self._input_spec.shape  # type: ignore[union-attr]
        profile = self._input_profile()
        if shape[0] >= 0 or profile is None:
            return int(shape[0]), int(shape[0])
        return profile[0][0], profile[2][0]

    def _input_run_shape(self, batch: Optional[int] = None) -> Tuple[int, ...]:
        """The concrete input shape: static dims as built, dynamic H/W from profile 0's opt, and a dynamic
        batch of ``batch`` (default: 1, or the profile's minimum when that is larger)."""
        name, _, shape, _ = next(t for t in self._io if t[1])
        profile = self._input_profile()
        if profile is None:
            return shape
        run = list(profile[1])
        if shape[0] < 0:
            run[0] = int(batch) if batch is not None else max(1, profile[0][0])
        return tuple(run)

    def _set_run_shape(self, context: Any, run_shape: Tuple[int, ...]) -> None:
        in_name = self._input_spec.name  # type: ignore[union-attr]
        if self.caps.tensor_api:
            ok = context.set_input_shape(in_name, run_shape)
        else:
            ok = context.set_binding_shape([t[0] for t in self._io].index(in_name), run_shape)
        if not ok:
            raise ModelError(f"engine rejects input shape {list(run_shape)} for {in_name}")

    def _context_shapes(self, context: Any) -> Dict[str, Tuple[int, ...]]:
        names = [t[0] for t in self._io]
        if self.caps.tensor_api:
            return {n: tuple(int(d) for d in context.get_tensor_shape(n)) for n in names}
        return {n: tuple(int(d) for d in context.get_binding_shape(i)) for i, n in enumerate(names)}

    # -- inference-thread state ------------------------------------------------------------------
    def bind_thread(self) -> None:
        """Make the calling thread the inference thread: CUDA context current here, execution context,
        buffers and stream created here. Called by the pipeline's infer stage; implicit on first infer."""
        if self._closed:
            raise EdgeError("tensorrt backend is closed")
        self.ctx.bind()
        if self._context is None:
            self._prepare()

    def release_thread(self) -> None:
        """Pop the CUDA context from the inference thread (call on that thread when it finishes)."""
        if self.ctx.bound_here:
            self.ctx.unbind()

    def _prepare(self) -> None:
        from edge import cuda

        engine = self._engine
        context = engine.create_execution_context()
        if context is None:
            raise ModelError("TensorRT could not create an execution context (out of GPU memory?)")
        run_shape = self._input_run_shape()
        dynamic = any(d < 0 for d in self._input_spec.shape)  # type: ignore[union-attr]
        in_name = self._input_spec.name  # type: ignore[union-attr]
        names = [t[0] for t in self._io]
        buffers = cuda.CudaBuffers(self.ctx)
        try:
            if dynamic:  # size every buffer for the largest batch, then run at run_shape's
                self._set_run_shape(context, self._input_run_shape(self._batch_range[1]))
            shapes = self._context_shapes(context)
            if dynamic:
                self._set_run_shape(context, run_shape)
            bad = {n: s for n, s in shapes.items() if any(d < 0 for d in s)}
            if bad:
                raise ModelError(
                    f"engine outputs {bad} have data-dependent shapes; edge-run needs fixed-size NMS outputs "
                    "(edge surgery pads ONNX NMS results to max_detections)"
                )
            by_name = {}
            for name, _, _, dtype in self._io:
                by_name[name] = buffers.alloc(name, shapes[name], dtype)
            if self.caps.tensor_api:
                for name in names:
                    context.set_tensor_address(name, by_name[name].ptr)
                self._bindings = None
            else:
                self._bindings = [by_name[n].ptr for n in names]
        except BaseException:
            buffers.close()
            raise
        self._context = context
        self._buffers = buffers
        self._in_buf = by_name[in_name]
        self._out_bufs = [by_name[n] for n in self._out_names]
        self._run_shape = run_shape
        self._graph_failed = False

    def _enqueue(self, stream_handle: int) -> None:
        if self.caps.tensor_api:
            ok = self._context.execute_async_v3(stream_handle)
        else:
            ok = self._context.execute_async_v2(bindings=self._bindings, stream_handle=stream_handle)
        if not ok:
            raise ModelError("TensorRT execution failed (see the TensorRT log above)")

    def _use_batch(self, batch: np.ndarray) -> int:
        """Check ``batch`` against the engine; for a dynamic batch, set the context's input shape to it."""
        rows = int(batch.shape[0])
        if tuple(batch.shape[1:]) != tuple(self._run_shape[1:]):
            raise ModelError(f"input shape {list(batch.shape)} != the engine's run shape {list(self._run_shape)}")
        if rows != self._run_shape[0]:
            lo, hi = self._batch_range
            if not lo <= rows <= hi:
                raise ModelError(
                    f"a batch of {rows} is outside what engine {self.info.path.name if self.info else ''} takes "
                    f"({lo}..{hi} images); rebuild it with `edge build MODEL.onnx --batch 1,{max(rows, 1)},"
                    f"{max(rows, hi)}` from a --dynamic-batch export"
                )
            run_shape = (rows,) + tuple(self._run_shape[1:])
            self._set_run_shape(self._context, run_shape)
            self._run_shape = run_shape
        return rows

    def _run(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        if self._context is None:
            self._prepare()
        buffers = self._buffers
        assert buffers is not None
        rows = self._use_batch(batch)
        np.copyto(self._in_buf.host[:rows], batch)
        buffers.htod(self._in_buf, rows)
        graph_key = (self._run_shape, tuple(buf.ptr for buf in buffers.buffers))  # what a capture is valid for
        replayed = self._graph_api is not None and buffers.launch_graph(graph_key)
        if not replayed:
            self._enqueue(buffers.stream_handle)
        for buf in self._out_bufs:
            buffers.dtoh(buf, rows)
        buffers.synchronize()
        if self._graph_api is not None and not replayed and not self._graph_failed:
            # after a normal enqueue on this stream (TensorRT allocates lazily on the first one)
            self._graph_failed = not buffers.capture(self._graph_api, self._enqueue, graph_key)
        return {c: buf.host[:rows].copy() for c, buf in zip(self._result_names, self._out_bufs)}

    def _infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        with self._lock:
            if self.ctx.bound_here:
                return self._run(batch)
            with self.ctx.current():
                return self._run(batch)

    def describe(self) -> str:
        name = self.info.path.name if self.info else "?"
        return f"tensorrt {self.caps.version_string} on {self.ctx.name} (SM {self.ctx.sm}): {name}"

    def _close(self) -> None:
        ctx = self.ctx
        try:
            with ctx.current():
                if self._buffers is not None:
                    self._buffers.close()
                    self._buffers = None
                self._context = None
                self._engine = None
                self._runtime = None
        finally:
            ctx.close()
