"""Strict stand-ins for the TensorRT *runtime* API (8.2, 8.5, 10.x, 11) and ``pycuda.driver`` (API contract).

These are NOT TensorRT or CUDA: nothing runs on a GPU. Each exposes only the attributes the documented
Python API of that version has (anything else raises AttributeError), enforces the rules a real device
enforces (driver calls need a current CUDA context on the calling thread; TensorRT deserializes and
executes only with one; every I/O tensor needs an address before ``execute_async_v3``; freed memory
cannot be used again), and computes real outputs so data flow is checked end to end: the "engine" is the
red-box detector of ``edge.runtime.synthetic`` in numpy (``engine_bytes``), or the ONNX graph a stand-in
builder built it from, run by ONNX Runtime (``onnx_engine_bytes``; tests/doctor/device_standin.py), reading
its input from and writing its outputs to the stand-in device memory at the addresses the backend bound.

Sources: TensorRT Python API reference 8.5 (ICudaEngine / IExecutionContext: bindings API and the new
name-based tensor API side by side), the 8.x -> 10.x migration guide (bindings API, ``execute_async_v2``
and ``max_batch_size`` removed in 10), the 10.x -> 11.x migration guide (``device_memory_size`` removed;
``execute_async_v3`` and the tensor API unchanged), PyCUDA's driver API (``Device.retain_primary_context``,
``Context.push/pop/detach``, ``pagelocked_empty``, ``mem_alloc``, ``Stream``, ``memcpy_*_async``).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tests.trt.checked import TrtObject
from tests.trt_standin import StrictModule, bind_api, int_enum, logger_members, plugin_members, real_api

# -- pycuda.driver ---------------------------------------------------------------------------------


class DriverState:
    """Everything the fake driver tracks, for assertions."""

    def __init__(self) -> None:
        self.memory: Dict[int, np.ndarray] = {}
        self.next_addr = 0x10000
        self.freed: List[int] = []
        self.host_allocs: List[Any] = []
        self.host_freed = 0
        self.retained = 0
        self.detached = 0
        self.pushes: List[int] = []  # thread ids of pushes
        self.stack = threading.local()
        self.streams: Dict[int, Any] = {}
        #: stream handle -> the operations queued while it is capturing (tests/cuda/standin.py's cuda-python)
        self.capturing: Dict[int, List[Callable[[], None]]] = {}
        self.calls: List[str] = []
        self.driver_version = 12060

    def ctx_stack(self) -> List[Any]:
        if not hasattr(self.stack, "items"):
            self.stack.items = []
        return self.stack.items

    def require_context(self, what: str) -> None:
        if not self.ctx_stack():
            raise LogicError(f"{what}: no CUDA context is current on this thread (CUDA_ERROR_INVALID_CONTEXT)")

    def alloc(self, nbytes: int) -> int:
        addr = self.next_addr
        self.next_addr += (nbytes + 0xFFF) & ~0xFFF or 0x1000
        self.memory[addr] = np.zeros(nbytes, np.uint8)
        return addr

    def view(self, addr: int) -> np.ndarray:
        if addr not in self.memory:
            raise LogicError(f"invalid device pointer 0x{addr:x} (freed or never allocated)")
        return self.memory[addr]

    def enqueue(self, stream_handle: Optional[int], op: Callable[[], None]) -> None:
        """Run ``op`` now (the stand-in's stream is synchronous) or record it while the stream is capturing."""
        if stream_handle is not None and stream_handle in self.capturing:
            self.capturing[stream_handle].append(op)
        else:
            op()


class Error(Exception):
    pass


class LogicError(Error):
    pass


def make_pycuda(devices: int = 1) -> Tuple[StrictModule, DriverState]:
    """A stand-in ``pycuda.driver`` and its state.

    It offers only names the real PyCUDA has (tests/cuda/test_pycuda_real.py checks every public name and
    method against PyCUDA built from its sdist): no stream capture, which no released PyCUDA has; CUDA graphs
    come from the cuda-python stand-in (tests/cuda/standin.py) on this driver's stream handles.
    """
    st = DriverState()

    class Context:
        def __init__(self, device: "Device") -> None:
            self._device = device

        def push(self) -> None:
            st.ctx_stack().append(self)
            st.pushes.append(threading.get_ident())

        @staticmethod
        def pop() -> None:
            stack = st.ctx_stack()
            if not stack:
                raise LogicError("Context.pop: context stack is empty on this thread")
            stack.pop()

        def detach(self) -> None:
            st.detached += 1

    class Device:
        def __init__(self, index: int) -> None:
            if not 0 <= index < devices:
                raise LogicError(f"invalid device ordinal {index}")
            self._index = index

        @staticmethod
        def count() -> int:
            return devices

        def name(self) -> str:
            return "Orin (stand-in)"

        def compute_capability(self) -> Tuple[int, int]:
            return (8, 7)

        def retain_primary_context(self) -> Context:
            st.retained += 1
            return Context(self)

    class PagelockedHostAllocation:
        """The ``base`` of a ``pagelocked_empty`` array, as in PyCUDA (numpy takes it as the array's base)."""

        def __init__(self, shape: Tuple[int, ...], dtype: np.dtype) -> None:
            self._data = np.zeros(max(int(np.prod(shape)) * dtype.itemsize, 1), np.uint8)
            self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                        "data": (self._data.ctypes.data, False)}

        def free(self) -> None:
            st.host_freed += 1

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self._addr = st.alloc(nbytes)

        def __int__(self) -> int:
            return self._addr

        def __index__(self) -> int:
            return self._addr

        def free(self) -> None:
            st.require_context("DeviceAllocation.free")
            if self._addr not in st.memory:
                raise LogicError("double free")
            del st.memory[self._addr]
            st.freed.append(self._addr)

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            st.require_context("Stream()")
            self._handle = 0x5000 + len(st.streams)
            st.streams[self._handle] = self

        @property
        def handle(self) -> int:
            return self._handle

        def synchronize(self) -> None:
            st.require_context("Stream.synchronize")
            if self._handle in st.capturing:
                raise LogicError("cuStreamSynchronize failed: operation not permitted when stream is capturing")

    def init(flags: int = 0) -> None:
        st.calls.append("init")

    def get_driver_version() -> int:
        return st.driver_version

    def pagelocked_empty(shape: Sequence[int], dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        st.require_context("pagelocked_empty")
        alloc = PagelockedHostAllocation(tuple(int(d) for d in shape), np.dtype(dtype))
        st.host_allocs.append(alloc)
        return np.asarray(alloc)

    def mem_alloc(bytesize: int) -> DeviceAllocation:
        st.require_context("mem_alloc")
        return DeviceAllocation(int(bytesize))

    def _handle(stream: Optional[Stream]) -> Optional[int]:
        return None if stream is None else stream.handle

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Optional[Stream] = None) -> None:
        st.require_context("memcpy_htod_async")
        src = np.ascontiguousarray(src)
        mem = st.view(int(dest))

        def op() -> None:
            mem[: src.nbytes] = src.view(np.uint8).reshape(-1)

        st.calls.append("htod")
        st.enqueue(_handle(stream), op)

    def memcpy_htod(dest: Any, src: np.ndarray) -> None:
        st.require_context("memcpy_htod")
        src = np.ascontiguousarray(src)
        mem = st.view(int(dest))
        if src.nbytes > mem.nbytes:
            raise LogicError(f"memcpy_htod: {src.nbytes} bytes into a {mem.nbytes}-byte allocation")
        mem[: src.nbytes] = src.view(np.uint8).reshape(-1)
        st.calls.append("htod_sync")

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Optional[Stream] = None) -> None:
        st.require_context("memcpy_dtoh_async")
        mem = st.view(int(src))

        def op() -> None:
            dest.view(np.uint8).reshape(-1)[:] = mem[: dest.nbytes]

        st.calls.append("dtoh")
        st.enqueue(_handle(stream), op)

    module = StrictModule("2024.1", dict(
        init=init, get_driver_version=get_driver_version, Device=Device, Context=Context, Stream=Stream,
        pagelocked_empty=pagelocked_empty, mem_alloc=mem_alloc, memcpy_htod=memcpy_htod,
        memcpy_htod_async=memcpy_htod_async,
        memcpy_dtoh_async=memcpy_dtoh_async, DeviceAllocation=DeviceAllocation,
        PagelockedHostAllocation=PagelockedHostAllocation, Error=Error, LogicError=LogicError,
    ))
    return module, st


# -- tensorrt ----------------------------------------------------------------------------------------


def red_box_outputs(images: np.ndarray, k: int) -> Dict[str, np.ndarray]:
    """What ``edge.runtime.synthetic.red_box_model`` (uint8 NHWC BGR) computes, in numpy."""
    b = images.shape[0]
    num = np.zeros((b, 1), np.int32)
    boxes = np.zeros((b, k, 4), np.float32)
    scores = np.zeros((b, k), np.float32)
    classes = np.zeros((b, k), np.int32)
    for i in range(b):
        img = images[i].astype(np.float32)
        mask = (img[..., 2] > 200) & (img[..., 1] < 100)
        ys, xs = np.nonzero(mask)
        if xs.size:
            x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            num[i, 0] = 1
            boxes[i, 0] = (x1, y1, x2, y2)
            scores[i, 0] = 0.9
            classes[i, 0] = int((x2 - x1) > (y2 - y1))
    return {"num_detections": num, "detection_boxes": boxes, "detection_scores": scores,
            "detection_classes": classes}


def engine_bytes(height: int = 96, width: int = 128, k: int = 8, dynamic_batch: bool = False,
                 profile_hw: Optional[Sequence[Sequence[int]]] = None) -> bytes:
    """A serialized stand-in engine: the red-box detector with uint8 [B,H,W,3] input.

    ``profile_hw``: ((min H, W), (opt H, W), (max H, W)) for an engine built with dynamic H/W (input
    [B,-1,-1,3], profile 0 spanning those sizes); ``height``/``width`` are then unused.
    """
    desc = {"height": height, "width": width, "k": k, "dynamic_batch": dynamic_batch,
            "profile_hw": [list(hw) for hw in profile_hw] if profile_hw else None}
    return b"STANDIN-ENGINE" + json.dumps(desc).encode()


def onnx_engine_bytes(onnx_path: str, io: Sequence[Tuple[str, bool, Sequence[int], str]],
                      profile: Optional[Sequence[Sequence[int]]] = None) -> bytes:
    """A serialized stand-in engine that computes the ONNX graph at ``onnx_path`` with ONNX Runtime.

    io: (name, is_input, shape with -1 for a dynamic dim, DataType member name) per I/O tensor, inputs
    first; profile: the input's (min, opt, max) shapes (default: its static shape).
    """
    desc = {"onnx": str(onnx_path), "io": [[n, bool(i), [int(d) for d in s], str(t)] for n, i, s, t in io],
            "profile": [list(map(int, p)) for p in profile] if profile else None}
    return b"STANDIN-ENGINE" + json.dumps(desc).encode()


class OnnxGraphRunner:
    """What an ONNX-built stand-in engine computes: its graph run by ONNX Runtime (EfficientNMS_TRT through
    edge's reference implementation), and the output shapes for an input shape."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._session: Any = None
        self._shapes: Dict[Tuple[int, ...], Dict[str, Tuple[int, ...]]] = {}

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._session is None:
            import onnx
            import onnxruntime as ort

            from edge.export import ort_custom_ops

            model = onnx.load(self.path)
            if ort_custom_ops.trt_nms_nodes(model):
                self._session = ort_custom_ops.make_session(model)
            else:
                self._session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, feeds)))

    def output_shapes(self, name: str, shape: Tuple[int, ...], dtype: Any) -> Dict[str, Tuple[int, ...]]:
        if shape not in self._shapes:
            outs = self.run({name: np.zeros(shape, dtype)})
            self._shapes[shape] = {k: tuple(v.shape) for k, v in outs.items()}
        return self._shapes[shape]


def make_tensorrt(version: str, drv_state: DriverState, real: Any = "auto") -> StrictModule:
    """A stand-in ``tensorrt`` module (runtime API) of ``version``: '8.2.1', '8.5.2', '10.3.0', '11.0.0'.

    Held to the real bindings as tests/trt_standin.py's builder stand-in is: hand-written, it offers a subset of
    the real module (8.2.1 and 8.5.2 -> 8.6.1, whose API holds both the bindings and the name-based tensor API;
    10.3.0; 11.0.0 -> 11.4.0.106); validated (``real`` a real bindings module, or ``"auto"``), ``Logger``,
    ``ILogger``, ``DataType`` and ``TensorIOMode`` are the real ones and every call on the runtime, engine and
    execution context is checked against the real signatures.
    """
    major, minor = (int(v) for v in version.split(".")[:2])
    tensor_api = (major, minor) >= (8, 5)
    bindings_api = major < 10
    api = real_api(version, real)
    calls: List[Any] = []
    loggers = logger_members(api)
    severity = loggers["ILogger"].Severity
    if api is not None:
        DataType, TensorIOMode = api.module.DataType, api.module.TensorIOMode
    else:
        DataType = int_enum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5})
        TensorIOMode = int_enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    _np = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
           DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8}

    def nptype(trt_type: Any) -> Any:
        if (8, 4) <= (major, minor) < (8, 6):
            # TensorRT 8.4/8.5's own nptype builds its mapping with np.bool (fixed in 8.6), which numpy
            # 1.24-1.26 removed; JetPack 5's venv gets numpy 1.24.4, so there it always raises this.
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        return _np[trt_type]

    plugins_loaded: List[str] = []
    plugin_api, plugin_classes = plugin_members(api, major, ("EfficientNMS_TRT", "BatchedNMS_TRT"),
                                                loggers["ILogger"], plugins_loaded.append)
    io_types = {"uint8": DataType.UINT8, "int32": DataType.INT32, "float32": DataType.FLOAT,
                "by_name": lambda name: getattr(DataType, name)}
    ICudaEngine = _engine_class(major, tensor_api, bindings_api, drv_state, io_types, TensorIOMode, calls, _np)
    ICudaEngine._context_class = IExecutionContext = _context_class(tensor_api, bindings_api, drv_state, calls, _np)

    class Runtime(TrtObject):
        _trt_name = "Runtime"
        _constructible = True

        def __init__(self, logger: Any) -> None:
            if not isinstance(logger, loggers["ILogger"]):
                raise TypeError("Runtime(logger): logger must be a tensorrt.ILogger")
            self._logger = logger

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> Any:
            drv_state.require_context("deserialize_cuda_engine")
            if not plugins_loaded:
                raise RuntimeError("plugin creators not registered before deserialization")
            data = bytes(serialized_engine)
            if not data.startswith(b"STANDIN-ENGINE"):
                self._logger.log(severity.ERROR, "Serialization assertion failed: magic tag mismatch")
                return None
            calls.append(("deserialize", len(data)))
            return ICudaEngine._new(json.loads(data[len(b"STANDIN-ENGINE"):]))

    bind_api(api, Runtime, ICudaEngine, IExecutionContext)
    members: Dict[str, Any] = dict(loggers, **plugin_api, Runtime=Runtime, DataType=DataType, nptype=nptype,
                                   calls=calls)
    if tensor_api:
        members["TensorIOMode"] = TensorIOMode
    return StrictModule(version, members, api=api, classes=[Runtime, ICudaEngine, IExecutionContext] + plugin_classes)


def _engine_class(major: int, tensor_api: bool, bindings_api: bool, drv_state: DriverState, io_types: Dict[str, Any],
                  TensorIOMode: Any, calls: List[Any], np_types: Dict[Any, Any]) -> Any:
    def __init__(self: Any, desc: Dict[str, Any]) -> None:
        if "onnx" in desc:  # onnx_engine_bytes
            self._graph, self._k = OnnxGraphRunner(desc["onnx"]), None
            self._io = [(n, i, tuple(shape), io_types["by_name"](t)) for n, i, shape, t in desc["io"]]
            static = next(t[2] for t in self._io if t[1])
            self._profile = [tuple(p) for p in desc["profile"]] if desc["profile"] else [static] * 3
            return
        self._graph = None
        h, w, k = desc["height"], desc["width"], desc["k"]
        b = -1 if desc["dynamic_batch"] else 1
        self._k = k
        hw = desc.get("profile_hw")
        lo, opt, hi = [tuple(x) for x in hw] if hw else [(h, w)] * 3
        self._io = [
            ("images", True, (b, -1, -1, 3) if hw else (b, h, w, 3), io_types["uint8"]),
            ("num_detections", False, (b, 1), io_types["int32"]),
            ("detection_boxes", False, (b, k, 4), io_types["float32"]),
            ("detection_scores", False, (b, k), io_types["float32"]),
            ("detection_classes", False, (b, k), io_types["int32"]),
        ]
        self._profile = [(1,) + lo + (3,), (1,) + opt + (3,), (4,) + hi + (3,)]

    def _index(self: Any, name: str) -> int:
        for i, t in enumerate(self._io):
            if t[0] == name:
                return i
        raise KeyError(name)

    def create_execution_context(self: Any) -> Any:
        drv_state.require_context("create_execution_context")
        return type(self)._context_class._new(self)

    def get_tensor_name(self: Any, index: int) -> str:
        return self._io[index][0]

    def get_tensor_mode(self: Any, name: str) -> Any:
        return TensorIOMode.INPUT if self._io[self._index(name)][1] else TensorIOMode.OUTPUT

    def get_tensor_shape(self: Any, name: str) -> Tuple[int, ...]:
        return self._io[self._index(name)][2]

    def get_tensor_dtype(self: Any, name: str) -> Any:
        return self._io[self._index(name)][3]

    def get_tensor_profile_shape(self: Any, name: str, profile_index: int) -> List[Tuple[int, ...]]:
        return list(self._profile)

    def get_binding_name(self: Any, index: int) -> str:
        return self._io[index][0]

    def binding_is_input(self: Any, index: int) -> bool:
        return self._io[index][1]

    def get_binding_shape(self: Any, index: int) -> Tuple[int, ...]:
        return self._io[index][2]

    def get_binding_dtype(self: Any, index: int) -> Any:
        return self._io[index][3]

    def get_profile_shape(self: Any, profile_index: int, binding: int) -> List[Tuple[int, ...]]:
        return list(self._profile)

    body: Dict[str, Any] = {"_trt_name": "ICudaEngine", "__init__": __init__, "_index": _index,
                            "create_execution_context": create_execution_context}
    if tensor_api:
        body.update(num_io_tensors=property(lambda self: len(self._io)), get_tensor_name=get_tensor_name,
                    get_tensor_mode=get_tensor_mode, get_tensor_shape=get_tensor_shape,
                    get_tensor_dtype=get_tensor_dtype, get_tensor_profile_shape=get_tensor_profile_shape)
    if bindings_api:
        body.update(num_bindings=property(lambda self: len(self._io)), max_batch_size=property(lambda self: 1),
                    get_binding_name=get_binding_name, binding_is_input=binding_is_input,
                    get_binding_shape=get_binding_shape, get_binding_dtype=get_binding_dtype,
                    get_profile_shape=get_profile_shape)
    if major >= 10:
        body["device_memory_size_v2"] = property(lambda self: 1 << 20)
    if major < 11:  # removed in 11 (device_memory_size_v2 replaces it)
        body["device_memory_size"] = property(lambda self: 1 << 20)
    return type("ICudaEngine", (TrtObject,), body)


def _context_class(tensor_api: bool, bindings_api: bool, drv_state: DriverState, calls: List[Any],
                   np_types: Dict[Any, Any]) -> Any:
    def __init__(self: Any, engine: Any) -> None:
        self._engine = engine
        self._shapes = {t[0]: tuple(t[2]) for t in engine._io}
        self._addr: Dict[str, int] = {}

    def _resolve(self: Any) -> None:
        engine = self._engine
        if engine._graph is not None:
            name, _, _, dtype = next(t for t in engine._io if t[1])
            self._shapes.update(engine._graph.output_shapes(name, self._shapes[name], np_types[dtype]))
            return
        b = self._shapes["images"][0]
        for name, is_input, shape, _ in engine._io:
            if not is_input:
                self._shapes[name] = (b,) + tuple(shape[1:])

    def _set_shape(self: Any, name: str, shape: Sequence[int]) -> bool:
        shape = tuple(int(d) for d in shape)
        lo, _, hi = self._engine._profile
        if len(shape) != 4 or not all(a <= s <= c for a, s, c in zip(lo, shape, hi)):
            return False
        self._shapes[name] = shape
        self._resolve()
        return True

    def _execute(self: Any, addresses: Dict[str, int], stream_handle: int) -> bool:
        drv_state.require_context("execute")
        if stream_handle not in drv_state.streams:
            raise RuntimeError(f"unknown CUDA stream handle {stream_handle}")
        in_name = next(t[0] for t in self._engine._io if t[1])
        shape = self._shapes[in_name]
        if any(d < 0 for d in shape):
            raise RuntimeError("input shape not set (dynamic dimension)")
        for name, *_ in self._engine._io:
            if name not in addresses:
                raise RuntimeError(f"no address set for tensor {name}")
        images_mem = drv_state.view(addresses[in_name])
        out_mems = {n: drv_state.view(addresses[n]) for n, inp, *_ in self._engine._io if not inp}
        k = self._engine._k
        graph = self._engine._graph
        dtypes = {t[0]: np_types[t[3]] for t in self._engine._io}
        shapes = dict(self._shapes)

        def op() -> None:
            nbytes = int(np.prod(shape)) * np.dtype(dtypes[in_name]).itemsize
            images = images_mem[:nbytes].view(dtypes[in_name]).reshape(shape)
            outs = graph.run({in_name: images.copy()}) if graph is not None else red_box_outputs(images, k)
            for name, arr in outs.items():
                data = arr.astype(dtypes[name]).reshape(shapes[name])
                out_mems[name][: data.nbytes] = data.view(np.uint8).reshape(-1)

        drv_state.enqueue(stream_handle, op)  # recorded when the stream is capturing a CUDA graph
        return True

    def set_input_shape(self: Any, name: str, shape: Sequence[int]) -> bool:
        return self._set_shape(name, shape)

    def get_tensor_shape(self: Any, name: str) -> Tuple[int, ...]:
        return self._shapes[name]

    def set_tensor_address(self: Any, name: str, memory: int) -> bool:
        self._engine._index(name)
        self._addr[name] = int(memory)
        calls.append(("set_tensor_address", name))
        return True

    def execute_async_v3(self: Any, stream_handle: int) -> bool:
        calls.append(("execute_async_v3", stream_handle))
        return self._execute(self._addr, stream_handle)

    def set_binding_shape(self: Any, binding: int, shape: Sequence[int]) -> bool:
        return self._set_shape(self._engine._io[binding][0], shape)

    def get_binding_shape(self: Any, binding: int) -> Tuple[int, ...]:
        return self._shapes[self._engine._io[binding][0]]

    def execute_async_v2(self: Any, bindings: Sequence[int], stream_handle: int, input_consumed: Any = None) -> bool:
        calls.append(("execute_async_v2", stream_handle))
        names = [t[0] for t in self._engine._io]
        if len(bindings) != len(names):
            raise RuntimeError(f"expected {len(names)} bindings, got {len(bindings)}")
        return self._execute(dict(zip(names, (int(b) for b in bindings))), stream_handle)

    def execute_v2(self: Any, bindings: Sequence[int]) -> bool:
        return True

    body: Dict[str, Any] = {"_trt_name": "IExecutionContext", "__init__": __init__, "_resolve": _resolve,
                            "_set_shape": _set_shape, "_execute": _execute, "execute_v2": execute_v2}
    if tensor_api:
        body.update(set_input_shape=set_input_shape, get_tensor_shape=get_tensor_shape,
                    set_tensor_address=set_tensor_address, execute_async_v3=execute_async_v3)
    if bindings_api:
        body.update(set_binding_shape=set_binding_shape, get_binding_shape=get_binding_shape,
                    execute_async_v2=execute_async_v2)
    return type("IExecutionContext", (TrtObject,), body)


# -- the stand-ins' own strictness (so the contract tests can be trusted) ------------------------------


def test_standin_surfaces_follow_each_versions_documented_api():
    _, st = make_pycuda()
    for version, v3, v2 in (("8.2.1", False, True), ("8.5.2", True, True), ("10.3.0", True, False),
                            ("11.0.0", True, False)):
        trt = make_tensorrt(version, st)
        assert hasattr(trt, "TensorIOMode") == v3, version
        st.ctx_stack().append("ctx")
        try:
            trt.init_libnvinfer_plugins(trt.Logger(), "")
            engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(engine_bytes())
            ctx = engine.create_execution_context()
        finally:
            st.ctx_stack().pop()
        assert hasattr(engine, "num_io_tensors") == v3 and hasattr(ctx, "execute_async_v3") == v3, version
        assert hasattr(engine, "num_bindings") == v2 and hasattr(ctx, "execute_async_v2") == v2, version
        assert hasattr(engine, "device_memory_size") == (version != "11.0.0"), version
    import pytest

    with pytest.raises(AttributeError):
        make_tensorrt("10.3.0", st).BuilderFlag  # noqa: B018 - not part of the runtime stand-in: strict


def test_standin_driver_refuses_calls_without_a_current_context():
    import pytest

    drv, st = make_pycuda()
    with pytest.raises(LogicError):
        drv.mem_alloc(16)
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()
    mem = drv.mem_alloc(16)
    drv.Context.pop()
    with pytest.raises(LogicError):
        mem.free()
    with pytest.raises(AttributeError):
        drv.autoinit  # noqa: B018 - strict module
