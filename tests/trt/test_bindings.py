"""Checks against the real TensorRT Python bindings 8.6.1, 10.3.0 and 11.4.0.106 (``pytest -m trt_bindings``).

tests/trt/bindings.py fetches the wheels from PyPI, stubs the few C entry points they import and loads them
here: each version's real classes, enums, properties and pybind11 signatures, with nothing behind them. Every
test takes the ``real_trt`` fixture, so its id names the version (``[trt-10.3.0]``), and skips with the reason
only where the bindings cannot be had (no index, no C compiler, no wheel for this Python).

What is checked, per version:

* the stand-ins (tests/trt_standin.py for building, tests/runtime/test_standins.py for running) offer a subset
  of the real module: class by class, attribute by attribute (kind, settability, parameter names and
  defaults), enum member by enum member (name and value);
* edge's real code paths (``edge.trt.api.build_engine`` with every option, ``edge.trt.calibrator``, the
  TensorRT backend) run on the stand-ins in validated mode: every attribute edge reads or writes exists on
  the real class, every call binds to a real signature (arity, keyword names, argument types), and the enums
  and the Python-subclassable classes (``ILogger``, ``Logger``, the calibrator base) are the real ones;
* edge's own subclasses of the real ``ILogger`` and ``IInt8EntropyCalibrator2`` construct, and the real C++
  trampolines dispatch into them;
* ``edge.trt.version``'s capability table agrees with what each real module has.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Set

import numpy as np
import pytest

from edge.errors import EdgeError, ModelError
from edge.trt import api
from edge.trt.calibrator import CalibrationCache, CalibrationFeeder, make_entropy_calibrator
from edge.trt.engine_key import Profile
from edge.trt.onnx_info import inspect_onnx
from edge.trt.version import capabilities
from tests.runtime import test_standins as runtime_standin
from tests.trt import bindings
from tests.trt import signatures as sig
from tests.trt.bindings import real_version_for
from tests.trt.checked import RealApi, StrictModule, TrtObject, surface_mismatches
from tests.trt.test_build import HostBackedBuffer, _conv_model
from tests.trt_standin import make_tensorrt

#: The stand-in versions each real version checks (8.2 and 8.5 have no bindings wheel; 8.6.1 holds their API).
BUILD_STANDINS = {"8.6.1": ("8.5.2",), "10.3.0": ("10.3.0",), "11.4.0.106": ("11.0.0",)}
RUNTIME_STANDINS = {"8.6.1": ("8.2.1", "8.5.2"), "10.3.0": ("10.3.0",), "11.4.0.106": ("11.0.0",)}


def _major(real_trt: Any) -> int:
    return int(real_trt.__version__.split(".")[0])


def _touched(module: StrictModule) -> Set[str]:
    checker = object.__getattribute__(module, "_api")
    assert isinstance(checker, RealApi), "the stand-in was not validated against the real module"
    return checker.touched


# -- the bindings themselves --------------------------------------------------------------------------


def test_real_bindings_import_with_nothing_behind_them(real_trt):
    assert real_trt.__version__ in BUILD_STANDINS
    logger = real_trt.Logger(real_trt.Logger.WARNING)
    assert logger.min_severity == real_trt.ILogger.Severity.WARNING
    with pytest.raises(TypeError, match="nullptr"):  # the stubbed factory returns NULL
        real_trt.Builder(logger)
    assert real_trt.get_plugin_registry() is None
    # loaded under its own name, from the cache, without touching sys.path: `import tensorrt` is not affected
    assert real_trt.__name__ == bindings.package_name(real_trt.__version__)
    assert str(Path(real_trt.__file__).resolve()).startswith(str(bindings.cache_dir().resolve()))
    assert not any(str(bindings.cache_dir()) in p for p in sys.path)
    spec = importlib.util.find_spec("tensorrt")
    assert spec is None or not str(spec.origin).startswith(str(bindings.cache_dir()))


def test_signature_parser_reads_every_docstring(real_trt):
    """Every method and property of every class parses into named, annotated parameters."""
    package = real_trt.__name__
    parsed = 0
    for cname, cls in vars(real_trt.tensorrt).items():
        if not isinstance(cls, type):
            continue
        for name, attr in vars(cls).items():
            if isinstance(attr, property):
                overloads = sig.parse_doc(attr.fget.__doc__ if attr.fget else None)
            elif type(attr).__name__ == "instancemethod" and not name.startswith("__"):
                overloads = sig.parse_doc(attr.__doc__, name)
            else:
                continue
            for ov in overloads:
                parsed += 1
                for p in ov.params:
                    ok = p.name.isidentifier() and (p.annotation or p.name in ("*args", "**kwargs"))
                    assert ok, f"{package} {cname}.{name}: odd parameter {p}"
    assert parsed > 600


# -- the stand-ins offer nothing the real modules lack --------------------------------------------------


@pytest.mark.parametrize("kind", ["builder", "runtime"])
def test_standin_surface_is_within_the_real_module(real_trt, kind):
    checker = RealApi(real_trt)
    versions = BUILD_STANDINS if kind == "builder" else RUNTIME_STANDINS
    for version in versions[real_trt.__version__]:
        assert real_version_for(version) == real_trt.__version__
        if kind == "builder":
            standin = make_tensorrt(version, real=None, num_dla_cores=1)
        else:
            standin = runtime_standin.make_tensorrt(version, runtime_standin.make_pycuda()[1], real=None)
        assert surface_mismatches(standin, checker) == [], f"{kind} stand-in {version}"


def test_surface_check_catches_what_the_old_stand_ins_offered(real_trt):
    """The comparison has teeth: the lies of the stand-ins before this check are reported."""
    major = _major(real_trt)

    class IPluginRegistry(TrtObject):
        _trt_name = "IPluginRegistry"
        plugin_creator_list = property(lambda self: [])  # the old stand-in offered it on 11 too

    class IOptimizationProfile(TrtObject):
        _trt_name = "IOptimizationProfile"

        def set_shape(self, name, lo, opt, hi):  # the old parameter names
            pass

    class ILogger:
        WARNING = 7  # a member that is not the real one

    import enum

    lies = StrictModule("x", {"BuilderFlag": enum.IntEnum("BuilderFlag", {"FP16": 0, "INT8": 1}),
                              "ILogger": ILogger, "calls": []}, classes=[IPluginRegistry, IOptimizationProfile])
    found = "\n".join(surface_mismatches(lies, RealApi(real_trt)))
    assert "IOptimizationProfile.set_shape" in found and "ILogger.WARNING" in found
    assert ("IPluginRegistry.plugin_creator_list" in found) == (major >= 11)
    assert ("BuilderFlag" in found) == (major >= 11)  # FP16/INT8 are gone in 11


def _standins(real_trt: Any, real: Any) -> List[StrictModule]:
    """Every stand-in held to ``real_trt``: hand-written (``real=None``) or validated (``real=real_trt``)."""
    state = runtime_standin.make_pycuda()[1]
    return ([make_tensorrt(v, real=real) for v in BUILD_STANDINS[real_trt.__version__]]
            + [runtime_standin.make_tensorrt(v, state, real=real) for v in RUNTIME_STANDINS[real_trt.__version__]])


def test_logger_takes_a_severity_as_the_real_one(real_trt):
    for real in (None, real_trt):
        for trt in _standins(real_trt, real):
            logger = trt.Logger(trt.Logger.WARNING)
            assert isinstance(logger, trt.ILogger)
            assert int(trt.ILogger.Severity.ERROR) == int(real_trt.ILogger.Severity.ERROR)


def test_calibrator_setting_refuses_what_is_not_a_calibrator(real_trt):
    for version in BUILD_STANDINS[real_trt.__version__]:
        for real in (None, real_trt):
            trt = make_tensorrt(version, real=real)
            config = trt.Builder(api.make_logger(trt)).create_builder_config()
            if _major(real_trt) >= 11:
                with pytest.raises(AttributeError):
                    config.int8_calibrator = None
                continue
            with pytest.raises(TypeError):
                config.int8_calibrator = object()
            config.int8_calibrator = _calibrator(trt, "/nonexistent/c.cache")


def test_plugin_registry_lists_creators_as_the_real_one(real_trt):
    real_registry = real_trt.IPluginRegistry
    for real in (None, real_trt):
        for trt in _standins(real_trt, real):
            registry = trt.get_plugin_registry()
            for name in ("plugin_creator_list", "all_creators"):
                assert hasattr(registry, name) == hasattr(real_registry, name), (trt.__version__, name)


def _calibrator(trt: Any, cache: str) -> Any:
    feeder = CalibrationFeeder([np.zeros((1, 3, 32, 32), np.float32)], 1, HostBackedBuffer)
    return make_entropy_calibrator(trt, feeder, CalibrationCache(cache, {"images": "seeded zeros"}))


# -- edge's builder, run through the stand-in held to the real module ----------------------------------

BUILD_BASE = {
    "tensorrt.ILogger", "tensorrt.init_libnvinfer_plugins", "tensorrt.get_plugin_registry", "IPluginCreator.name",
    "tensorrt.Builder", "Builder.__init__", "Builder.create_network", "tensorrt.OnnxParser", "OnnxParser.__init__",
    "OnnxParser.parse_from_file", "Builder.create_builder_config", "tensorrt.MemoryPoolType",
    "IBuilderConfig.set_memory_pool_limit", "INetworkDefinition.num_inputs", "INetworkDefinition.get_input",
    "ITensor.name", "ITensor.shape", "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache",
    "Builder.build_serialized_network", "IBuilderConfig.get_timing_cache", "ITimingCache.serialize",
}
FLAGS = {"tensorrt.BuilderFlag", "IBuilderConfig.set_flag"}
SCENARIOS = ["fp32", "fp16", "int8-qdq", "best-qdq", "int8-calibrator", "strongly-typed", "dla", "dynamic",
             "timing-cache", "plugin", "build-failure", "missing-plugin"]


def _scenario(tmp_path, scenario: str, major: int) -> Dict[str, Any]:
    """(graph options, request options, stand-in options, API beyond BUILD_BASE that the path must touch)."""
    implicit = major <= 10
    graph: Dict[str, Any] = {}
    req: Dict[str, Any] = {"precision": "fp32"}
    standin: Dict[str, Any] = {}
    extra: Set[str] = set()
    if scenario == "fp16":
        graph, req, extra = ({}, {"precision": "fp16"}, FLAGS) if implicit else ({"fp16": True}, {"precision": "fp16"},
                                                                               set())
    elif scenario in ("int8-qdq", "best-qdq"):
        graph, req = {"qdq": True}, {"precision": scenario.split("-")[0]}
        extra = FLAGS if implicit else set()
    elif scenario == "int8-calibrator":
        req, extra = {"precision": "int8", "calibrator": "made in the test"}, FLAGS | {"IBuilderConfig.int8_calibrator"}
    elif scenario == "strongly-typed":
        graph, req = {"fp16": True}, {"precision": "fp16", "strongly_typed": True}
        extra = {"tensorrt.NetworkDefinitionCreationFlag"} if major == 10 else FLAGS if implicit else set()
    elif scenario == "dla":
        req = {"precision": "fp32", "dla_core": 1, "gpu_fallback": True}
        standin = {"num_dla_cores": 2}
        extra = FLAGS | {"Builder.num_DLA_cores", "tensorrt.DeviceType", "IBuilderConfig.default_device_type",
                         "IBuilderConfig.DLA_core"}
    elif scenario == "dynamic":
        graph = {"dynamic": True}
        extra = {"Builder.create_optimization_profile", "IOptimizationProfile.set_shape",
                 "IBuilderConfig.add_optimization_profile"}
    elif scenario == "timing-cache":
        req = {"precision": "fp32", "timing_cache": b"timing cache of an earlier build"}
    elif scenario in ("plugin", "missing-plugin"):
        graph = {"plugin": True}
        standin = {"plugins": ("BatchedNMS_TRT",)} if scenario == "missing-plugin" else {}
    elif scenario == "build-failure":
        standin = {"fail_build": True}
    if major < 10:
        extra = extra | {"tensorrt.NetworkDefinitionCreationFlag"}
    path = _conv_model(tmp_path / f"{scenario}.onnx", **graph)
    return {"path": path, "req": req, "standin": standin, "extra": extra}


def _request(path, req: Dict[str, Any]) -> api.BuildRequest:
    info = inspect_onnx(str(path))
    shape = tuple(d if isinstance(d, int) else 1 for d in info.inputs[0].shape)
    hi = tuple(d if isinstance(d, int) else 4 for d in info.inputs[0].shape)
    return api.BuildRequest(onnx_path=str(path), profiles=[Profile("images", shape, shape, hi)],
                            onnx_precision_form=info.precision_form, plugin_ops=info.plugin_ops, **req)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_edge_builder_path_binds_to_the_real_api(real_trt, tmp_path, scenario):
    """edge.trt.api.build_engine, each option, on the stand-in in validated mode: every attribute it touches
    exists on the real class and every call binds to the real signature."""
    major = _major(real_trt)
    case = _scenario(tmp_path, scenario, major)
    (version,) = BUILD_STANDINS[real_trt.__version__]
    trt = make_tensorrt(version, real=real_trt, **case["standin"])
    req = dict(case["req"])
    if scenario == "int8-calibrator":
        if major >= 11:  # the legacy path does not exist: neither in the real module, nor in the stand-in
            assert not hasattr(real_trt, "IInt8EntropyCalibrator2") and not hasattr(trt, "IInt8EntropyCalibrator2")
            assert not hasattr(real_trt.IBuilderConfig, "int8_calibrator")
            assert not capabilities(real_trt.__version__).int8_calibrator
            return
        req["calibrator"] = _calibrator(trt, str(tmp_path / "c.cache"))
    request = _request(case["path"], req)
    if scenario == "build-failure":
        with pytest.raises(EdgeError, match="out of memory"):
            api.build_engine(trt, request)
    elif scenario == "missing-plugin":
        with pytest.raises(ModelError, match="EfficientNMS_TRT"):
            api.build_engine(trt, request)
        return
    else:
        result = api.build_engine(trt, request)
        record = json.loads(result.engine[len(b"ENGINE"):])
        assert record["flags"] == sorted(result.flags)
        if scenario == "dynamic":
            assert record["profiles"]["images"][2][0] == 4
    registry = "IPluginRegistry.plugin_creator_list" if major < 10 else "IPluginRegistry.all_creators"
    expected = BUILD_BASE | case["extra"] | {registry}
    if scenario == "build-failure":  # no engine, so no timing cache to read back
        expected -= {"IBuilderConfig.get_timing_cache", "ITimingCache.serialize"}
    missing = expected - _touched(trt)
    assert not missing, f"the {scenario} path did not touch {sorted(missing)}: is the stand-in still checked?"


# -- edge's runtime, run through the stand-in held to the real module ----------------------------------

RUN_BASE = {"tensorrt.ILogger", "tensorrt.init_libnvinfer_plugins", "tensorrt.Runtime", "Runtime.__init__",
            "Runtime.deserialize_cuda_engine", "ICudaEngine.create_execution_context"}
TENSOR_API = {"ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
              "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_dtype", "IExecutionContext.get_tensor_shape",
              "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3"}
BINDINGS_API = {"ICudaEngine.num_bindings", "ICudaEngine.get_binding_name", "ICudaEngine.binding_is_input",
                "ICudaEngine.get_binding_shape", "ICudaEngine.get_binding_dtype",
                "IExecutionContext.get_binding_shape", "IExecutionContext.execute_async_v2"}
SIDECAR = {"class_names": ["tall", "wide"], "input_layout": "uint8_nhwc_bgr", "input_size": [96, 128]}


@pytest.mark.parametrize("dynamic_batch", [False, True], ids=["static", "dynamic-batch"])
def test_edge_tensorrt_backend_binds_to_the_real_api(real_trt, tmp_path, dynamic_batch):
    """TensorRTBackend (deserialize, I/O queries, shapes, addresses, enqueue) on the runtime stand-in in
    validated mode: the bindings API on 8.2 (held to 8.6.1), the name-based tensor API on 8.5+."""
    from edge.runtime.synthetic import draw_red_box
    from edge.runtime.tensorrt_backend import TensorRTBackend

    for version in RUNTIME_STANDINS[real_trt.__version__]:
        drv, st = runtime_standin.make_pycuda()
        trt = runtime_standin.make_tensorrt(version, st, real=real_trt)
        path = tmp_path / f"red-{version}.engine"
        path.write_bytes(runtime_standin.engine_bytes(dynamic_batch=dynamic_batch))
        path.with_suffix(".json").write_text(json.dumps(SIDECAR))
        frame = np.zeros((1, 96, 128, 3), np.uint8)
        draw_red_box(frame[0], (10, 20, 50, 40))
        backend = TensorRTBackend(path, trt_module=trt, cuda_driver=drv)
        try:
            assert backend.infer(frame).image(0)[0].tolist() == [[10.0, 20.0, 50.0, 40.0]]
        finally:
            backend.close()
        tensor_api = capabilities(version).tensor_api
        expected = RUN_BASE | (TENSOR_API if tensor_api else BINDINGS_API)
        if dynamic_batch:
            expected |= {"IExecutionContext.set_input_shape" if tensor_api else "IExecutionContext.set_binding_shape"}
        missing = expected - _touched(trt)
        assert not missing, f"stand-in {version}: the backend did not touch {sorted(missing)}"


# -- edge's subclasses of the real classes ------------------------------------------------------------


def _overrides_bind(subclass: type, base: type) -> List[str]:
    """Methods the subclass overrides whose arity differs from the real virtual's (C++ calls them positionally)."""
    bad = []
    for name, func in vars(subclass).items():
        if name.startswith("_") or not inspect.isfunction(func) or not hasattr(base, name):
            continue
        overloads = sig.parse_doc(getattr(base, name).__doc__, name)
        mine = len(inspect.signature(func).parameters) - 1
        if not any(len(ov.params) == mine for ov in overloads):
            bad.append(f"{name}{inspect.signature(func)} vs {[ov.describe() for ov in overloads]}")
    return bad


def test_edge_logger_is_a_real_ilogger(real_trt):
    logger = api.make_logger(real_trt)
    assert isinstance(logger, real_trt.ILogger)
    assert _overrides_bind(type(logger), real_trt.ILogger) == []
    # through the C++ virtual ILogger::log and pybind11's trampoline into edge's override
    real_trt.ILogger.log(logger, real_trt.ILogger.Severity.ERROR, "from C++")
    real_trt.ILogger.log(logger, real_trt.ILogger.Severity.VERBOSE, "quiet")
    assert logger.errors == ["from C++"]
    # the real plugin loader takes it (the stub library answers False), and refuses what is not a logger
    assert real_trt.init_libnvinfer_plugins(logger, "") is False
    with pytest.raises(TypeError):
        real_trt.init_libnvinfer_plugins(object(), "")


def test_edge_calibrator_is_a_real_entropy_calibrator(real_trt, tmp_path):
    if not capabilities(real_trt.__version__).int8_calibrator:
        assert not hasattr(real_trt, "IInt8EntropyCalibrator2") and not hasattr(real_trt, "IInt8Calibrator")
        return
    cal = _calibrator(real_trt, str(tmp_path / "c.cache"))
    assert isinstance(cal, real_trt.IInt8Calibrator)
    assert _overrides_bind(type(cal), real_trt.IInt8EntropyCalibrator2) == []
    with warnings.catch_warnings():  # 10.x deprecates get_batch_size (implicit batch is gone)
        warnings.simplefilter("ignore", DeprecationWarning)
        assert real_trt.IInt8EntropyCalibrator2.get_batch_size(cal) == 1  # the trampoline reaches edge's override
    assert {"get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"} <= set(vars(type(cal)))


def test_capabilities_agree_with_the_real_module(real_trt):
    """edge.trt.version decides every branch from the version string: each switch against the real API."""
    caps = capabilities(real_trt.__version__)
    t = real_trt
    assert caps.implicit_precision == hasattr(t.BuilderFlag, "FP16") == hasattr(t.BuilderFlag, "INT8")
    assert caps.int8_calibrator == hasattr(t.IBuilderConfig, "int8_calibrator") == hasattr(t, "IInt8EntropyCalibrator2")
    assert caps.strongly_typed_flag == hasattr(t.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    assert not caps.explicit_batch_flag_needed or hasattr(t.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert caps.memory_pools == hasattr(t.IBuilderConfig, "set_memory_pool_limit")
    assert caps.tensor_api == hasattr(t.IExecutionContext, "execute_async_v3") == hasattr(t.ICudaEngine,
                                                                                          "num_io_tensors")
    if not caps.tensor_api or caps.version[0] < 10:  # edge's bindings path (8.2/8.4) is in 8.x only
        assert hasattr(t.IExecutionContext, "execute_async_v2") and hasattr(t.ICudaEngine, "num_bindings")
    registry = "all_creators" if caps.version[0] >= 10 else "plugin_creator_list"
    assert hasattr(t.IPluginRegistry, registry)
    assert hasattr(t, "nptype") and all(hasattr(t.DataType, n) for n in ("FLOAT", "HALF", "INT8", "INT32", "UINT8"))
