"""Stand-ins for the ``tensorrt`` Python module of TensorRT 8.5, 10.x and 11 (API-contract tests), held to the
real bindings.

These are NOT TensorRT: no engine is built and nothing runs on a GPU. They record the calls made, so tests
can check that the builder configures what the request asked for, and they are held to the real API twice:

* Hand-written, they offer only a subset of the real module of the matching version (class by class,
  attribute by attribute, enum member by member, parameter names included): tests/trt/test_bindings.py
  compares them with the real bindings (8.5.2 -> 8.6.1, the closest API on PyPI; 10.3.0 -> 10.3.0;
  11.0.0 -> 11.4.0.106).
* Validated (``real=`` a real bindings module, or ``"auto"``: whenever tests/trt/bindings.py can load
  them), the enums, ``Logger`` / ``ILogger`` and the calibrator bases ARE the real ones, and every read,
  write and call on the factory-made objects (``Builder``, ``IBuilderConfig``, ``OnnxParser``...) is checked
  against the real class of the same name (tests/trt/checked.py).

The shared pieces (loggers, calibrator bases, plugin registry) also serve the runtime stand-in in
tests/runtime/test_standins.py.
"""

from __future__ import annotations

import enum
import json
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from tests.trt import bindings
from tests.trt.checked import PybindLike, RealApi, StrictModule, TrtObject

Real = Union[None, str, ModuleType]


def real_api(version: str, real: Real) -> Optional[RealApi]:
    """The real API a stand-in of ``version`` is checked against: ``"auto"`` loads the matching bindings when
    they can be had here (tests/trt/bindings.py), None checks nothing, a module is used as given."""
    if real == "auto":
        module = bindings.available(bindings.real_version_for(version))
    else:
        module = real  # type: ignore[assignment]
    return RealApi(module) if module is not None else None


def bind_api(api: Optional[RealApi], *classes: type) -> None:
    for cls in classes:
        cls._api = api  # type: ignore[attr-defined]


def int_enum(name: str, members: Dict[str, int]) -> Any:
    return enum.IntEnum(name, members)  # type: ignore[call-overload]


# -- loggers and calibrator bases (Python-subclassable in TensorRT) ----------------------------------


def logger_members(api: Optional[RealApi]) -> Dict[str, Any]:
    """``ILogger`` (with ``ILogger.Severity``) and ``Logger``: the real classes, or hand-written ones that
    behave like them (severity values also on the class, ``Logger(Logger.WARNING)``, base ``__init__`` due)."""
    if api is not None:
        return {"ILogger": api.module.ILogger, "Logger": api.module.Logger}

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger(metaclass=PybindLike):
        def __init__(self) -> None:
            self._trt_initialized = True

        def log(self, severity: Any, msg: str) -> None:
            raise RuntimeError('Tried to call pure virtual function "ILogger::log"')

    ILogger.Severity = Severity  # type: ignore[attr-defined]
    for member in Severity:
        setattr(ILogger, member.name, member)

    class Logger(ILogger):
        def __init__(self, min_severity: Any = Severity.WARNING) -> None:
            ILogger.__init__(self)
            self._min_severity = Severity(min_severity)

        @property
        def min_severity(self) -> Any:
            return self._min_severity

        def log(self, severity: Any, msg: str) -> None:
            pass

    return {"ILogger": ILogger, "Logger": Logger}


def calibrator_members(api: Optional[RealApi], major: int) -> Dict[str, Any]:
    """``IInt8Calibrator`` / ``IInt8EntropyCalibrator2`` on TensorRT <= 10 (removed in 11)."""
    if major > 10:
        return {}
    if api is not None:
        return {"IInt8Calibrator": api.module.IInt8Calibrator,
                "IInt8EntropyCalibrator2": api.module.IInt8EntropyCalibrator2}

    class IInt8Calibrator(metaclass=PybindLike):
        def __init__(self) -> None:
            self._trt_initialized = True

    class IInt8EntropyCalibrator2(IInt8Calibrator):
        def __init__(self) -> None:
            IInt8Calibrator.__init__(self)

    return {"IInt8Calibrator": IInt8Calibrator, "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2}


# -- plugins ------------------------------------------------------------------------------------------


def plugin_members(api: Optional[RealApi], major: int, plugins: Sequence[str], logger_base: type,
                   on_init: Callable[[str], None]) -> Tuple[Dict[str, Any], List[type]]:
    """``init_libnvinfer_plugins`` / ``get_plugin_registry`` and the registry's classes. The registry lists
    creators in ``plugin_creator_list`` up to 10.x and ``all_creators`` from 10.0 (11 has only that)."""

    class IPluginCreator(TrtObject):
        _trt_name = "IPluginCreator"

        def __init__(self, name: str) -> None:
            self._name = name

        @property
        def name(self) -> str:
            return self._name

        @property
        def plugin_version(self) -> str:
            return "1"

    def _creators(self: Any) -> List[Any]:
        return list(self._creators)

    body: Dict[str, Any] = {"_trt_name": "IPluginRegistry"}
    if major <= 10:
        body["plugin_creator_list"] = property(_creators)
    if major >= 10:
        body["all_creators"] = property(_creators)
    IPluginRegistry = type("IPluginRegistry", (TrtObject,), body)
    bind_api(api, IPluginCreator, IPluginRegistry)
    registry = IPluginRegistry._new()
    registry._creators = [IPluginCreator._new(n) for n in plugins]

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        if not isinstance(logger, logger_base):
            raise TypeError(f"init_libnvinfer_plugins(): logger must be a tensorrt.ILogger, not {type(logger).__name__}")
        on_init(namespace)
        return True

    def get_plugin_registry() -> Any:
        return registry

    members = {"init_libnvinfer_plugins": init_libnvinfer_plugins, "get_plugin_registry": get_plugin_registry}
    return members, [IPluginCreator, IPluginRegistry]


# -- the builder API ----------------------------------------------------------------------------------

#: Real values of the members offered (8.5.2 is held to 8.6.1, whose values match 8.5's for these).
_BUILDER_FLAGS = {
    8: {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 5, "TF32": 7, "SPARSE_WEIGHTS": 8,
        "OBEY_PRECISION_CONSTRAINTS": 10, "PREFER_PRECISION_CONSTRAINTS": 11},
    10: {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "TF32": 6, "SPARSE_WEIGHTS": 7,
         "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10},
    11: {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "TF32": 6, "SPARSE_WEIGHTS": 7},
}
_NETWORK_FLAGS = {8: {"EXPLICIT_BATCH": 0}, 10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}, 11: {"STRONGLY_TYPED": 0}}


def builder_enums(api: Optional[RealApi], major: int) -> Dict[str, Any]:
    if api is not None:
        return {n: getattr(api.module, n) for n in ("NetworkDefinitionCreationFlag", "BuilderFlag",
                                                    "MemoryPoolType", "DeviceType")}
    key = 8 if major < 10 else min(major, 11)
    return {
        "NetworkDefinitionCreationFlag": int_enum("NetworkDefinitionCreationFlag", _NETWORK_FLAGS[key]),
        "BuilderFlag": int_enum("BuilderFlag", _BUILDER_FLAGS[key]),
        "MemoryPoolType": int_enum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1}),
        "DeviceType": int_enum("DeviceType", {"GPU": 0, "DLA": 1}),
    }


def make_tensorrt(version: str, plugins: Sequence[str] = ("EfficientNMS_TRT", "BatchedNMS_TRT"),
                  num_dla_cores: int = 0, fail_build: bool = False, real: Real = "auto") -> StrictModule:
    """A stand-in ``tensorrt`` module (builder API) for ``version`` ('8.5.2', '10.3.0', '11.0.0').

    ``real``: the real bindings module to check against, ``"auto"`` (the matching real bindings when they can
    be loaded here) or None (hand-written only).
    """
    major = int(version.split(".")[0])
    api = real_api(version, real)
    calls: List[Any] = []
    enums = builder_enums(api, major)
    loggers = logger_members(api)
    calibrators = calibrator_members(api, major)
    plugins_loaded = {"done": False}

    def on_init(namespace: str) -> None:
        plugins_loaded["done"] = True
        calls.append(("init_libnvinfer_plugins", namespace))

    plugin_api, plugin_classes = plugin_members(api, major, plugins, loggers["ILogger"], on_init)
    classes = _builder_classes(major, enums, loggers["ILogger"], calibrators, plugins_loaded, calls,
                               num_dla_cores=num_dla_cores, fail_build=fail_build)
    bind_api(api, *classes.values())
    members: Dict[str, Any] = dict(loggers, **plugin_api, **enums, **calibrators,
                                   Builder=classes["Builder"], OnnxParser=classes["OnnxParser"], calls=calls)
    return StrictModule(version, members, api=api, classes=list(classes.values()) + plugin_classes)


def _network_classes(plugins_loaded: Dict[str, bool], calls: List[Any], logger_base: type) -> Dict[str, type]:
    class Dims(tuple):
        pass

    class ITensor(TrtObject):
        _trt_name = "ITensor"

        def __init__(self, name: str, shape: Sequence[int]) -> None:
            self._name, self._shape = name, Dims(shape)

        @property
        def name(self) -> str:
            return self._name

        @property
        def shape(self) -> Any:
            return self._shape

    class INetworkDefinition(TrtObject):
        _trt_name = "INetworkDefinition"

        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._inputs: List[ITensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

    class OnnxParser(TrtObject):
        _trt_name = "OnnxParser"
        _constructible = True

        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            if not isinstance(network, INetworkDefinition) or not isinstance(logger, logger_base):
                raise TypeError("OnnxParser(network, logger): an INetworkDefinition and an ILogger")
            self._network = network
            self._errors: List[str] = []

        def parse_from_file(self, model: str) -> bool:
            assert plugins_loaded["done"], "plugins must be loaded before parsing (EfficientNMS_TRT)"
            import onnx

            graph = onnx.load(model).graph
            inits = {i.name for i in graph.initializer}
            for v in graph.input:
                if v.name in inits:
                    continue
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                self._network._inputs.append(ITensor._new(v.name, dims))
            calls.append(("parse_from_file", model))
            return True

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> str:
            return self._errors[index]

    return {"ITensor": ITensor, "INetworkDefinition": INetworkDefinition, "OnnxParser": OnnxParser}


def _config_classes(major: int, enums: Dict[str, Any], calibrators: Dict[str, Any]) -> Dict[str, type]:
    class IOptimizationProfile(TrtObject):
        _trt_name = "IOptimizationProfile"

        def __init__(self) -> None:
            self._shapes: Dict[str, Any] = {}

        def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class ITimingCache(TrtObject):
        _trt_name = "ITimingCache"

        def __init__(self, data: bytes) -> None:
            self._data = data

        def serialize(self) -> bytes:
            return b"TIMING" + self._data[:0]

    def _check(value: Any, kind: Any, what: str) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"IBuilderConfig.{what}: incompatible value {type(value).__name__}")
        return value

    body: Dict[str, Any] = {"_trt_name": "IBuilderConfig"}

    def __init__(self: Any) -> None:
        self._flags, self._pools, self._profiles = [], {}, []
        self._timing, self._calibrator, self._calibration_profile = None, None, None
        self._device_type, self._dla_core = enums["DeviceType"].GPU, -1

    def set_flag(self: Any, flag: Any) -> None:
        self._flags.append(_check(flag, enums["BuilderFlag"], "set_flag"))

    def set_memory_pool_limit(self: Any, pool: Any, pool_size: int) -> None:
        self._pools[_check(pool, enums["MemoryPoolType"], "set_memory_pool_limit")] = int(pool_size)

    def add_optimization_profile(self: Any, profile: Any) -> int:
        self._profiles.append(_check(profile, IOptimizationProfile, "add_optimization_profile"))
        return len(self._profiles) - 1

    def create_timing_cache(self: Any, serialized_timing_cache: bytes) -> Any:
        return ITimingCache._new(bytes(serialized_timing_cache))

    def set_timing_cache(self: Any, cache: Any, ignore_mismatch: bool) -> bool:
        self._timing = _check(cache, ITimingCache, "set_timing_cache")
        return True

    def get_timing_cache(self: Any) -> Any:
        return self._timing

    def _set_device_type(self: Any, value: Any) -> None:
        self._device_type = _check(value, enums["DeviceType"], "default_device_type")

    def _set_dla_core(self: Any, value: int) -> None:
        self._dla_core = int(_check(value, int, "DLA_core"))

    body.update(__init__=__init__, set_flag=set_flag, set_memory_pool_limit=set_memory_pool_limit,
                add_optimization_profile=add_optimization_profile, create_timing_cache=create_timing_cache,
                set_timing_cache=set_timing_cache, get_timing_cache=get_timing_cache,
                default_device_type=property(lambda self: self._device_type, _set_device_type),
                DLA_core=property(lambda self: self._dla_core, _set_dla_core))
    if major <= 10:  # implicit INT8 (removed in 11)
        def _set_calibrator(self: Any, value: Any) -> None:
            self._calibrator = _check(value, calibrators["IInt8Calibrator"], "int8_calibrator")

        def set_calibration_profile(self: Any, profile: Any) -> bool:
            self._calibration_profile = _check(profile, IOptimizationProfile, "set_calibration_profile")
            return True

        def get_calibration_profile(self: Any) -> Any:
            return self._calibration_profile

        body.update(int8_calibrator=property(lambda self: self._calibrator, _set_calibrator),
                    set_calibration_profile=set_calibration_profile, get_calibration_profile=get_calibration_profile)
    IBuilderConfig = type("IBuilderConfig", (TrtObject,), body)
    return {"IOptimizationProfile": IOptimizationProfile, "ITimingCache": ITimingCache, "IBuilderConfig": IBuilderConfig}


def _builder_classes(major: int, enums: Dict[str, Any], logger_base: type, calibrators: Dict[str, Any],
                     plugins_loaded: Dict[str, bool], calls: List[Any], *, num_dla_cores: int,
                     fail_build: bool) -> Dict[str, type]:
    net = _network_classes(plugins_loaded, calls, logger_base)
    cfg = _config_classes(major, enums, calibrators)
    INetworkDefinition, IBuilderConfig = net["INetworkDefinition"], cfg["IBuilderConfig"]
    net_flags = enums["NetworkDefinitionCreationFlag"]
    severity = logger_base.Severity  # type: ignore[attr-defined]

    class Builder(TrtObject):
        _trt_name = "Builder"
        _constructible = True

        def __init__(self, logger: Any) -> None:
            if not isinstance(logger, logger_base):
                raise TypeError(f"Builder(logger): a tensorrt.ILogger, not {type(logger).__name__}")
            self._logger = logger

        @property
        def num_DLA_cores(self) -> int:
            return num_dla_cores

        def create_network(self, flags: int = 0) -> Any:
            allowed = 0
            for member in net_flags.__members__.values():
                allowed |= 1 << int(member)
            assert flags & ~allowed == 0, f"unknown network flags {flags}"
            return INetworkDefinition._new(flags)

        def create_builder_config(self) -> Any:
            return IBuilderConfig._new()

        def create_optimization_profile(self) -> Any:
            return cfg["IOptimizationProfile"]._new()

        def build_serialized_network(self, network: Any, config: Any) -> Optional[bytes]:
            if fail_build:
                self._logger.log(severity.ERROR, "out of memory while building")
                return None
            record = {
                "network_flags": network._flags,
                "flags": sorted(f.name for f in config._flags),
                "workspace": config._pools.get(enums["MemoryPoolType"].WORKSPACE),
                "profiles": {k: v for p in config._profiles for k, v in p._shapes.items()},
                "calibrator": config._calibrator is not None,
                "calibration_profile": config._calibration_profile._shapes if config._calibration_profile else None,
                "dla": config._dla_core if config._device_type == enums["DeviceType"].DLA else None,
            }
            calls.append(("build", record))
            return b"ENGINE" + json.dumps(record, sort_keys=True).encode()

    return dict(net, **cfg, Builder=Builder)
