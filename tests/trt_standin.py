"""Strict stand-ins for the ``tensorrt`` Python module of TensorRT 8.5, 10.x and 11 (API-contract tests).

These are NOT TensorRT: no engine is built and nothing runs on a GPU. They expose only the attributes
that the documented Python API of each version has, and raise AttributeError on anything else, so that
code calling an API a version lacks (BuilderFlag.INT8 on 11, ``all_creators`` on 8.5, ``int8_calibrator``
on 11) fails here as it would on a device. They record the calls made, so tests can check that the
builder configures what the request asked for.

Sources: the TensorRT Python API reference for 8.5 / 10.x and the TensorRT 10.x -> 11.x migration guide
("Removed Python APIs": BuilderFlag.FP16/INT8/..., IBuilderConfig.int8_calibrator, calibrators; strongly
typed networks are the default in 11).
"""

from __future__ import annotations

import enum
import json
from typing import Any, Dict, List, Optional, Sequence


class Strict:
    """An object whose attribute set is fixed: reading or writing anything else raises AttributeError."""

    _allowed: Sequence[str] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in self._allowed:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} in this TensorRT version")
        object.__setattr__(self, name, value)


class StrictModule:
    def __init__(self, version: str, members: Dict[str, Any]):
        object.__setattr__(self, "_members", dict(members, __version__=version))

    def __getattr__(self, name: str) -> Any:
        members = object.__getattribute__(self, "_members")
        if name not in members:
            raise AttributeError(f"module 'tensorrt' (stand-in {members['__version__']}) has no attribute {name!r}")
        return members[name]


def make_tensorrt(version: str, plugins: Sequence[str] = ("EfficientNMS_TRT", "BatchedNMS_TRT"),
                  num_dla_cores: int = 0, fail_build: bool = False) -> StrictModule:
    """A stand-in ``tensorrt`` module for ``version`` ('8.5.2', '10.3.0', '11.0.0')."""
    major = int(version.split(".")[0])
    calls: List[Any] = []

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        pass

    ILogger.Severity = Severity  # type: ignore[attr-defined]

    flag_names = ["EXPLICIT_BATCH"] if major < 10 else ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if major == 10 else [
        "STRONGLY_TYPED"]
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {n: i for i, n in enumerate(flag_names)})
    builder_flags = ["GPU_FALLBACK", "REFIT", "DEBUG", "TF32", "SPARSE_WEIGHTS"]
    if major <= 10:
        builder_flags += ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    BuilderFlag = enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(builder_flags)})
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})

    class Creator:
        def __init__(self, name: str):
            self.name = name
            self.plugin_version = "1"

    class Registry(Strict):
        _allowed = ("plugin_creator_list",) + (("all_creators",) if major >= 10 else ())

        def __init__(self) -> None:
            creators = [Creator(n) for n in plugins]
            self.plugin_creator_list = creators
            if major >= 10:
                self.all_creators = creators

    registry = Registry()
    plugins_loaded = {"done": False}

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        assert isinstance(logger, ILogger), "init_libnvinfer_plugins needs an ILogger"
        plugins_loaded["done"] = True
        calls.append(("init_libnvinfer_plugins", namespace))
        return True

    def get_plugin_registry() -> Registry:
        return registry

    class Dims(tuple):
        pass

    class Tensor:
        def __init__(self, name: str, shape: Sequence[int]):
            self.name = name
            self.shape = Dims(shape)

    class Network:
        def __init__(self, flags: int):
            self.flags = flags
            self.inputs: List[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any):
            self.network = network
            self.errors: List[str] = []

        def parse_from_file(self, path: str) -> bool:
            assert plugins_loaded["done"], "plugins must be loaded before parsing (EfficientNMS_TRT)"
            import onnx

            model = onnx.load(path)
            inits = {i.name for i in model.graph.initializer}
            for v in model.graph.input:
                if v.name in inits:
                    continue
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                self.network.inputs.append(Tensor(v.name, dims))
            calls.append(("parse_from_file", path))
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class Profile:
        def __init__(self) -> None:
            self.shapes: Dict[str, Any] = {}

        def set_shape(self, name: str, lo: Sequence[int], opt: Sequence[int], hi: Sequence[int]) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self) -> bytes:
            return b"TIMING" + self.data[:0]

    class Config(Strict):
        _allowed = ("default_device_type", "DLA_core") + (("int8_calibrator",) if major <= 10 else ())

        def __init__(self) -> None:
            self._flags: List[Any] = []
            self._pools: Dict[Any, int] = {}
            self._profiles: List[Profile] = []
            self._calibration_profile: Optional[Profile] = None
            self._timing: Optional[TimingCache] = None

        def set_flag(self, flag: Any) -> None:
            self._flags.append(flag)

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self._pools[pool] = size

        def add_optimization_profile(self, profile: Profile) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

        if major <= 10:  # IBuilderConfig.set_calibration_profile: 8.x, 10.x (deprecated 10.1), removed in 11
            def set_calibration_profile(self, profile: Profile) -> bool:
                assert isinstance(profile, Profile), "set_calibration_profile takes an IOptimizationProfile"
                self._calibration_profile = profile
                return True

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self._timing = cache
            return True

        def get_timing_cache(self) -> Optional[TimingCache]:
            return self._timing

    class Builder:
        def __init__(self, logger: Any):
            assert isinstance(logger, ILogger)
            self.num_DLA_cores = num_dla_cores
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            allowed = 0
            for member in NetworkDefinitionCreationFlag:
                allowed |= 1 << int(member)
            assert flags & ~allowed == 0, f"unknown network flags {flags}"
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> Optional[bytes]:
            if fail_build:
                self.logger.log(Severity.ERROR, "out of memory while building")
                return None
            record = {
                "network_flags": network.flags,
                "flags": sorted(BuilderFlag(f).name for f in config._flags),
                "workspace": config._pools.get(MemoryPoolType.WORKSPACE),
                "profiles": {k: v for p in config._profiles for k, v in p.shapes.items()},
                "calibrator": major <= 10 and getattr(config, "int8_calibrator", None) is not None,
                "calibration_profile": config._calibration_profile.shapes if config._calibration_profile else None,
                "dla": getattr(config, "DLA_core", None),
            }
            calls.append(("build", record))
            return b"ENGINE" + json.dumps(record, sort_keys=True).encode()

    members: Dict[str, Any] = dict(
        ILogger=ILogger, Logger=ILogger, init_libnvinfer_plugins=init_libnvinfer_plugins,
        get_plugin_registry=get_plugin_registry, Builder=Builder, OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, BuilderFlag=BuilderFlag,
        MemoryPoolType=MemoryPoolType, DeviceType=DeviceType, calls=calls,
    )
    if major <= 10:
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        members["IInt8EntropyCalibrator2"] = IInt8EntropyCalibrator2
    return StrictModule(version, members)
