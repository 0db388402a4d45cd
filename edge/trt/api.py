"""The only module that calls the ``tensorrt`` Python API (imported lazily, passed in for tests).

Written to the documented APIs of TensorRT 8.5 (JetPack 5), 10.x (JetPack 6) and 11 (strongly typed
only). Every version difference is decided by ``edge.trt.version.TrtCapabilities``, never by try/except
around an API call, so that an unexpected API surface fails loudly instead of building the wrong engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

from edge.errors import EdgeError, MissingDependencyError, ModelError
from edge.trt.engine_key import Profile
from edge.trt.version import TrtCapabilities, capabilities, require_supported

log = logging.getLogger(__name__)


def load_tensorrt() -> Any:
    """Import ``tensorrt`` or explain how to get it."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "tensorrt",
            "building and running TensorRT engines",
            "on a Jetson it comes with JetPack (python3-libnvinfer; create the venv with "
            "--system-site-packages, see deploy/setup-jetson.sh); on a desktop GPU: pip install tensorrt "
            "from NVIDIA's index. Without TensorRT, run the ONNX model with the onnxruntime backend.",
        ) from exc
    return tensorrt


@dataclass
class BuildRequest:
    """One engine build. ``precision`` is what the builder is allowed to use:

    - 'fp32': no reduced-precision flags.
    - 'fp16': FP16 flag on TensorRT <= 10 for an fp32 graph; on 11 the graph must already be fp16.
    - 'int8': Q/DQ graph (explicit INT8: INT8 flag on <= 10, strongly typed on 11) or, legacy, an fp32
      graph plus ``calibrator`` on <= 10.
    - 'best': INT8 + FP16 flags on <= 10 (mixed); on 11, whatever the graph's types say.
    """

    onnx_path: str
    precision: str
    profiles: List[Profile]
    workspace_mb: int = 1024
    dla_core: Optional[int] = None
    gpu_fallback: bool = False
    onnx_precision_form: str = "fp32"  # from OnnxInfo.precision_form: fp32 | fp16 | qdq
    plugin_ops: Sequence[str] = ()
    timing_cache: Optional[bytes] = None
    calibrator: Any = None
    strongly_typed: bool = False  # request STRONGLY_TYPED on TensorRT 10 (always on in 11)


@dataclass
class BuildResult:
    engine: bytes
    timing_cache: Optional[bytes]
    tensorrt_version: str
    flags: List[str] = field(default_factory=list)


class _Logger:
    """Factory for an ILogger subclass that forwards to ``logging`` and keeps errors for messages."""

    @staticmethod
    def create(trt: Any) -> Any:
        class EdgeTrtLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: List[str] = []

            def log(self, severity: Any, msg: str) -> None:
                sev = trt.ILogger.Severity
                if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                    self.errors.append(msg)
                    log.error("TensorRT: %s", msg)
                elif severity == sev.WARNING:
                    log.warning("TensorRT: %s", msg)
                elif severity == sev.INFO:
                    log.info("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)

        return EdgeTrtLogger()


def make_logger(trt: Any) -> Any:
    """A TensorRT ILogger that forwards to Python logging and keeps error messages in ``.errors``."""
    return _Logger.create(trt)


def trt_capabilities(trt: Any) -> TrtCapabilities:
    return capabilities(trt.__version__)


def init_plugins(trt: Any, logger: Any) -> List[str]:
    """Load libnvinfer_plugin's creators (EfficientNMS_TRT lives there); return the registered names."""
    trt.init_libnvinfer_plugins(logger, "")
    registry = trt.get_plugin_registry()
    caps = trt_capabilities(trt)
    creators = registry.all_creators if caps.version[0] >= 10 else registry.plugin_creator_list
    return sorted({c.name for c in creators})


def dla_core_count(trt: Any) -> int:
    """The DLA cores TensorRT can build for on this device (``IBuilder.num_DLA_cores``): 2 on Xavier and
    Orin AGX/NX, 0 on Orin Nano and on GPUs without DLA."""
    return int(trt.Builder(make_logger(trt)).num_DLA_cores)


def check_plugins(needed: Sequence[str], available: Sequence[str], version: str) -> None:
    missing = sorted(set(needed) - set(available))
    if missing:
        raise ModelError(
            f"the graph needs TensorRT plugin(s) {missing}, which this TensorRT {version} does not register "
            "(libnvinfer_plugin missing or too old). Re-run edge surgery with --nms onnx (TensorRT >= 8.6 "
            "imports ONNX NonMaxSuppression), or install JetPack's libnvinfer-plugin."
        )


def _precision_flags(caps: TrtCapabilities, req: BuildRequest) -> List[str]:
    """Names of BuilderFlag members to set, or raise when this version cannot honour the request."""
    form, precision = req.onnx_precision_form, req.precision
    if caps.strongly_typed_only:
        if precision == "fp16" and form == "fp32":
            raise EdgeError(
                f"TensorRT {caps.version_string} is strongly typed only: FP16 must be in the ONNX. Run "
                "`edge quantize MODEL.onnx --precision fp16` and build that file."
            )
        if precision == "int8" and form != "qdq":
            raise EdgeError(
                f"TensorRT {caps.version_string} removed implicit INT8 (no calibrator): INT8 must be explicit "
                "Q/DQ in the ONNX. Run `edge quantize MODEL.onnx --precision int8 --calib ...` and build that file."
            )
        flags = []
    else:
        flags = []
        if precision in ("fp16", "best"):
            flags.append("FP16")
        if precision in ("int8", "best"):
            flags.append("INT8")
            if form != "qdq" and req.calibrator is None and precision == "int8":
                raise EdgeError(
                    "INT8 on an fp32 graph needs calibration data: pass --calib (legacy calibrator) or, "
                    "better, build the Q/DQ graph from `edge quantize --precision int8`."
                )
        if req.strongly_typed and caps.strongly_typed_flag:
            flags = []  # strongly typed networks forbid precision flags; types come from the graph
    if req.dla_core is not None and req.gpu_fallback:
        flags.append("GPU_FALLBACK")
    return flags


def build_engine(trt: Any, req: BuildRequest) -> BuildResult:
    """Parse ``req.onnx_path`` and build a serialized engine. Raises ModelError/EdgeError with causes."""
    caps = trt_capabilities(trt)
    require_supported(caps, for_build=True)
    logger = make_logger(trt)
    available = init_plugins(trt, logger)
    check_plugins(req.plugin_ops, available, caps.version_string)

    builder = trt.Builder(logger)
    flags = 0
    if caps.explicit_batch_flag_needed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    elif req.strongly_typed and caps.strongly_typed_flag and not caps.strongly_typed_only:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(req.onnx_path):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT {caps.version_string} could not parse {req.onnx_path}: " + "; ".join(errors))

    config = builder.create_builder_config()
    workspace = int(req.workspace_mb) * (1 << 20)
    if caps.memory_pools:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # pragma: no cover - 8.2/8.3 cannot build here (require_supported)
        config.max_workspace_size = workspace

    flag_names = _precision_flags(caps, req)
    for name in flag_names:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if req.calibrator is not None:
        if not caps.int8_calibrator:
            raise EdgeError(f"TensorRT {caps.version_string} has no IInt8Calibrator; use a Q/DQ graph")
        config.int8_calibrator = req.calibrator

    if req.dla_core is not None:
        if builder.num_DLA_cores <= req.dla_core:
            raise EdgeError(
                f"DLA core {req.dla_core} requested but this device has {builder.num_DLA_cores} DLA core(s) "
                "(Orin NX/AGX: 0-1; Orin Nano: none). Drop --dla-core or pick an existing one."
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(req.dla_core)

    _add_profiles(trt, builder, network, config, req.profiles)
    if req.calibrator is not None:
        _set_calibration_profile(builder, network, config, req.profiles)

    cache = config.create_timing_cache(req.timing_cache or b"")
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(logger.errors[-5:]) or "no error text from TensorRT"
        hint = " (out of memory? lower --workspace, close other GPU users)" if "memory" in detail.lower() else ""
        raise EdgeError(f"TensorRT failed to build an engine from {req.onnx_path}: {detail}{hint}")
    timing = config.get_timing_cache()
    timing_bytes = bytes(timing.serialize()) if timing is not None else None
    return BuildResult(engine=bytes(serialized), timing_cache=timing_bytes, tensorrt_version=caps.version_string,
                       flags=flag_names)


def _add_profiles(trt: Any, builder: Any, network: Any, config: Any, profiles: Sequence[Profile]) -> None:
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    dynamic = [
        network.get_input(i).name for i in range(network.num_inputs)
        if any(int(d) < 0 for d in network.get_input(i).shape)
    ]
    by_name = {p.input_name: p for p in profiles}
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise ModelError(f"profile given for input(s) {unknown}, but the network's inputs are {names}")
    if not dynamic:
        return
    missing = sorted(set(dynamic) - set(by_name))
    if missing:
        raise ModelError(
            f"input(s) {missing} have dynamic dimensions; give their shapes with --imgsz HxW and --batch min,opt,max"
        )
    profile = builder.create_optimization_profile()
    for name in dynamic:
        p = by_name[name]
        profile.set_shape(name, tuple(p.min_shape), tuple(p.opt_shape), tuple(p.max_shape))
    config.add_optimization_profile(profile)


def _set_calibration_profile(builder: Any, network: Any, config: Any, profiles: Sequence[Profile]) -> None:
    """Legacy INT8 calibration of a network with dynamic dimensions runs at the calibration profile's opt
    shape (``IBuilderConfig.set_calibration_profile``, TensorRT 8.x-10.x; min and max are taken as opt):
    the shape the calibrator's batches must have (``edge.runtime.engines.legacy_calibrator``)."""
    dynamic = [network.get_input(i).name for i in range(network.num_inputs)
               if any(int(d) < 0 for d in network.get_input(i).shape)]
    if not dynamic:
        return
    by_name = {p.input_name: p for p in profiles}
    profile = builder.create_optimization_profile()
    for name in dynamic:
        opt = tuple(by_name[name].opt_shape)
        profile.set_shape(name, opt, opt, opt)
    if not config.set_calibration_profile(profile):
        raise EdgeError(f"TensorRT refused the calibration profile {[by_name[n].to_dict() for n in dynamic]}")


def deserialize_engine(trt: Any, engine_bytes: bytes) -> Tuple[Any, Any]:
    """(runtime, engine) from serialized bytes, plugins loaded first. Raises ModelError on a bad file."""
    caps = trt_capabilities(trt)
    require_supported(caps, for_build=False)
    logger = make_logger(trt)
    init_plugins(trt, logger)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise ModelError(
            "TensorRT could not deserialize the engine: " + ("; ".join(logger.errors[-3:]) or "unknown reason")
            + ". Engines are specific to the TensorRT version and GPU they were built with: rebuild with edge build."
        )
    return runtime, engine
