"""A "device" for the self-test's tests: the strict TensorRT builder stand-in (tests/trt_standin.py) and the
strict TensorRT runtime and PyCUDA stand-ins (tests/runtime/test_standins.py) joined into one ``tensorrt``
module and one ``pycuda.driver``. NOT TensorRT, and nothing runs on a GPU.

It adds no API name the stand-ins lack; what it adds is behaviour the self-test's code paths need end to
end, as a device has it:

* the builder's serialized engine deserializes in the runtime (``onnx_engine_bytes``): the engine computes
  the ONNX graph it was built from with ONNX Runtime, at the shapes of the build's optimization profile,
  reading its input from and writing its outputs to the stand-in device memory the backend bound;
* a build with an INT8 calibrator drives it as TensorRT does (``read_calibration_cache``,
  ``get_batch_size``, ``get_batch`` until it returns nothing, ``write_calibration_cache``) and reads each
  batch from the device pointer it was given, which must hold the whole batch;
* ``miscompile(onnx_path, record)`` (record: the build's ONNX, flags, profiles, DLA core, whether a
  calibrator was set) may return another ONNX for a build, to play an engine that computes
  something else (drifting INT8 scores, say), so tests can show the self-test catches it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from edge.cuda import GraphApi
from tests.cuda.standin import make_cuda_python
from tests.runtime.test_standins import make_pycuda, onnx_engine_bytes
from tests.runtime.test_standins import make_tensorrt as make_runtime
from tests.trt_standin import StrictModule
from tests.trt_standin import make_tensorrt as make_builder

# ONNX element type -> the TensorRT DataType member the engine reports
_DATA_TYPES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 6: "INT32", 9: "BOOL", 10: "HALF"}
_NUMPY_DATA_TYPES = {np.dtype(np.float32): "FLOAT", np.dtype(np.uint8): "UINT8", np.dtype(np.int8): "INT8",
                     np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL", np.dtype(np.float16): "HALF"}
_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 9: np.bool_, 10: np.float16}


@dataclass
class Device:
    """The joined stand-ins: ``trt`` (module), ``drv`` (pycuda.driver), the driver's ``state``, and one record
    per engine build (ONNX, builder flags, profiles, DLA core, calibration batches read)."""

    trt: StrictModule
    drv: StrictModule
    state: Any
    builds: List[Dict[str, Any]] = field(default_factory=list)
    #: the ``edge.cuda.GraphApi`` over the cuda-python stand-in (tests/cuda/standin.py) for --cuda-graph
    cuda_python: Any = None


def _input(onnx_path: str) -> Tuple[str, List[int], int]:
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    value = next(v for v in model.graph.input if v.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    return value.name, dims, value.type.tensor_type.elem_type


def _engine_io(onnx_path: str, profile: Optional[List[List[int]]]) -> List[Tuple[str, bool, List[int], str]]:
    """The engine's I/O: the input as the graph declares it, the outputs' shapes from ONNX Runtime at the
    profile's min and max input shapes (-1 where they differ)."""
    from tests.runtime.test_standins import OnnxGraphRunner

    name, dims, elem = _input(onnx_path)
    runner = OnnxGraphRunner(onnx_path)
    shapes = [tuple(profile[0]), tuple(profile[2])] if profile else [tuple(dims)]
    runs = [runner.run({name: np.zeros(s, _NUMPY[elem])}) for s in shapes]
    io = [(name, True, dims, _DATA_TYPES[elem])]
    for out, value in runs[0].items():
        dims_out = [a if all(r[out].shape[i] == a for r in runs) else -1 for i, a in enumerate(value.shape)]
        io.append((out, False, dims_out, _NUMPY_DATA_TYPES[np.dtype(value.dtype)]))
    return io


def _calibrate(calibrator: Any, onnx_path: str, profile: Optional[List[List[int]]], state: Any) -> Dict[str, Any]:
    """Drive a legacy INT8 calibrator as TensorRT's builder does; the batches are read from device memory."""
    cache = calibrator.read_calibration_cache()
    if cache:
        return {"from_cache": True, "batches": []}
    name, dims, elem = _input(onnx_path)
    batch_size = int(calibrator.get_batch_size())
    shape = tuple(profile[1]) if profile else tuple(dims)  # the calibration profile: the opt shape
    assert shape[0] == batch_size, f"calibrator batch size {batch_size} != the input's batch {shape[0]}"
    nbytes = int(np.prod(shape)) * np.dtype(_NUMPY[elem]).itemsize
    batches = []
    while True:
        pointers = calibrator.get_batch([name])
        if not pointers:
            break
        assert len(pointers) == 1, f"get_batch returned {len(pointers)} pointers for 1 input"
        memory = state.view(int(pointers[0]))
        if memory.nbytes < nbytes:
            raise RuntimeError(f"calibration batch of {nbytes} bytes, but the device buffer has {memory.nbytes}")
        batches.append(memory[:nbytes].view(_NUMPY[elem]).reshape(shape).copy())
    calibrator.write_calibration_cache(b"STANDIN-CALIBRATION" + json.dumps({"batches": len(batches)}).encode())
    return {"from_cache": False, "batches": batches}


def make_device(version: str = "10.3.0", *, num_dla_cores: int = 0,
                miscompile: Optional[Callable[[str, Dict[str, Any]], str]] = None) -> Device:
    """The joined stand-ins of TensorRT ``version`` (8.5.2, 10.3.0, 11.0.0) and PyCUDA on an "Orin" (SM 8.7)."""
    drv, state = make_pycuda()
    # the hand-written halves (real=None): joined, their two ILogger bases become one class below, which the real
    # bindings' single ILogger cannot; every name they offer is checked against the real bindings in tests/trt
    runtime = make_runtime(version, state, real=None)
    builder = make_builder(version, num_dla_cores=num_dla_cores, real=None)
    device = Device(trt=None, drv=drv, state=state)  # type: ignore[arg-type]
    graphs, _ = make_cuda_python(state, "12.9.4")  # the stand-in driver is CUDA 12.6 (JetPack 6.1)
    device.cuda_python = GraphApi(graphs, "12.9.4", "stand-in cuda-python")

    class ILogger(builder.ILogger, runtime.ILogger):  # one logger class both halves accept
        pass

    ILogger.Severity = runtime.ILogger.Severity  # type: ignore[attr-defined]

    class Logger(ILogger):
        def __init__(self, min_severity: Any = ILogger.Severity.WARNING) -> None:  # type: ignore[attr-defined]
            ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            pass

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        return bool(builder.init_libnvinfer_plugins(logger, namespace) and
                    runtime.init_libnvinfer_plugins(logger, namespace))

    class OnnxParser(builder.OnnxParser):
        def parse_from_file(self, model: str) -> bool:
            self._network._onnx_path = str(model)
            return bool(super().parse_from_file(model))

    class Builder(builder.Builder):
        def build_serialized_network(self, network: Any, config: Any) -> Optional[bytes]:
            data = super().build_serialized_network(network, config)
            if data is None:
                return None
            onnx_path = network._onnx_path
            record = dict(json.loads(bytes(data)[len(b"ENGINE"):]), onnx=onnx_path)
            name = _input(onnx_path)[0]
            profile = record["profiles"].get(name)
            calibration = None
            if record["calibrator"] and "INT8" in record["flags"]:
                calibration = _calibrate(config.int8_calibrator, onnx_path, profile, state)
            source = miscompile(onnx_path, record) if miscompile is not None else onnx_path
            device.builds.append(dict(record, computes=source, calibration=calibration))
            return onnx_engine_bytes(source, _engine_io(source, profile), profile)

    members = dict(object.__getattribute__(runtime, "_members"))
    members.update({k: v for k, v in object.__getattribute__(builder, "_members").items() if k != "calls"})
    members.update(ILogger=ILogger, Logger=Logger, init_libnvinfer_plugins=init_libnvinfer_plugins,
                   OnnxParser=OnnxParser, Builder=Builder)
    version_string = members.pop("__version__")
    device.trt = StrictModule(version_string, members)
    return device


def drifting_scores(factor: float, when: Callable[[Dict[str, Any]], bool]) -> Callable[[str, Dict[str, Any]], str]:
    """A ``miscompile`` whose engines scale the pre-NMS ``scores`` by ``factor`` for the builds ``when``
    selects (from the build record: flags, calibrator, dla, profiles)."""

    def miscompile(onnx_path: str, record: Dict[str, Any]) -> str:
        if not when(record):
            return onnx_path
        import onnx
        from onnx import helper, numpy_helper

        model = onnx.load(onnx_path)
        nodes = list(model.graph.node)
        at = next(i for i, n in enumerate(nodes) if "scores" in n.output)
        outputs = list(nodes[at].output)
        outputs[outputs.index("scores")] = "scores_undrifted"
        del nodes[at].output[:]
        nodes[at].output.extend(outputs)
        model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "drift"))
        nodes.insert(at + 1, helper.make_node("Mul", ["scores_undrifted", "drift"], ["scores"]))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        out = Path(onnx_path).with_name(f"{Path(onnx_path).stem}.drift_{'_'.join(record['flags']) or 'none'}.onnx")
        onnx.save(model, str(out))
        return str(out)

    return miscompile
