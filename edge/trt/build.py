"""``edge build``: plan and build TensorRT engines per resolution, never leaving a stale or partial one.

Plan (pure Python, testable anywhere): one engine per requested resolution (or one engine whose profile
spans them all), each with its full cache key, file name and equivalent trtexec command. Build (needs
TensorRT): skip engines whose sidecar key and bytes still match; otherwise build, write the engine
atomically, then its sidecar.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edge.artifacts import atomic_write_bytes, derive_sidecar, read_sidecar, sha256_file, write_sidecar
from edge.errors import EdgeError, ModelError
from edge.trt.engine_key import DeviceInfo, EngineKey, Profile, engine_filename, stale_reasons
from edge.trt.onnx_info import InputInfo, OnnxInfo, inspect_onnx
from edge.trt.trtexec import trtexec_command
from edge.trt.version import TrtCapabilities

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "best")


@dataclass
class EngineBuildConfig:
    """What ``edge build`` was asked for. Shapes: ``imgsz`` as (H, W); ``batch`` as (min, opt, max)."""

    onnx_path: str
    out_dir: str = "engines"
    precision: str = "fp16"
    imgsz: List[Tuple[int, int]] = field(default_factory=list)
    batch: Tuple[int, int, int] = (1, 1, 1)
    span_profile: bool = False
    workspace_mb: int = 1024
    dla_core: Optional[int] = None
    gpu_fallback: bool = False
    timing_cache: Optional[str] = None
    strongly_typed: bool = False
    force: bool = False
    # legacy implicit INT8: hash of the calibration provenance (Q/DQ graphs carry theirs in the sidecar)
    calibration_sha256: Optional[str] = None

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise EdgeError(f"--precision {self.precision!r} is not one of {PRECISIONS}")
        lo, opt, hi = self.batch
        if not (1 <= lo <= opt <= hi):
            raise EdgeError(f"--batch {lo},{opt},{hi}: need 1 <= min <= opt <= max")
        for h, w in self.imgsz:
            if h < 1 or w < 1:
                raise EdgeError(f"--imgsz {h}x{w}: sizes must be positive")
        if self.workspace_mb < 16:
            raise EdgeError(f"--workspace {self.workspace_mb} MB is too small; use at least 16")
        if self.gpu_fallback and self.dla_core is None:
            raise EdgeError("--gpu-fallback only applies with --dla-core N")
        if self.dla_core is not None and self.precision == "fp32":
            raise EdgeError("DLA runs only FP16 or INT8; use --precision fp16, int8 or best with --dla-core")
        if self.span_profile and len(self.imgsz) < 2:
            raise EdgeError("--span-profile needs at least two --imgsz values to span")


@dataclass
class EnginePlan:
    engine_path: Path
    profiles: List[Profile]
    key: EngineKey
    trtexec: str
    input_shape: Tuple[int, ...]  # the opt shape, for the sidecar
    hw: Tuple[int, int] = (0, 0)  # (H, W) of the opt shape: the size the engine runs at


def parse_imgsz(text: str) -> Tuple[int, int]:
    """'320' -> (320, 320); '240x320' -> (240, 320) as H x W."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts if p]
    except ValueError:
        raise EdgeError(f"--imgsz {text!r}: expected S or HxW in pixels, e.g. 320 or 240x320") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise EdgeError(f"--imgsz {text!r}: expected S or HxW in pixels, e.g. 320 or 240x320")


def _input_shape(inp: InputInfo, batch: int, hw: Tuple[int, int]) -> Tuple[int, ...]:
    h, w = hw
    channels = 3
    if inp.is_nhwc:
        return (batch, h, w, channels)
    return (batch, channels, h, w)


def _static_hw(inp: InputInfo) -> Optional[Tuple[int, int]]:
    dims = inp.shape[1:3] if inp.is_nhwc else inp.shape[2:4]
    if len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims):
        return int(dims[0]), int(dims[1])
    return None


def resolutions(cfg: EngineBuildConfig, info: OnnxInfo, sidecar: Dict[str, Any]) -> List[Tuple[int, int]]:
    """Resolutions to build: --imgsz, else the graph's static size, else the sidecar's input size."""
    if len(info.inputs) != 1:
        raise ModelError(
            f"{info.path} has {len(info.inputs)} inputs ({[i.name for i in info.inputs]}); edge build expects "
            "one image input"
        )
    inp = info.inputs[0]
    if len(inp.shape) != 4:
        raise ModelError(f"input {inp.name!r} has rank {len(inp.shape)}, expected 4 (NCHW or NHWC)")
    static = _static_hw(inp)
    if cfg.imgsz:
        if static is not None and any(hw != static for hw in cfg.imgsz):
            raise EdgeError(
                f"{info.path} has a fixed input size {static[0]}x{static[1]} but --imgsz asks for "
                f"{', '.join(f'{h}x{w}' for h, w in cfg.imgsz)}: re-export with `edge export --imgsz ...` "
                "(one ONNX per resolution, or --dynamic) and build each"
            )
        return list(cfg.imgsz)
    if static is not None:
        return [static]
    size = sidecar.get("input", {}).get("size")
    if size:
        return [(int(size[0]), int(size[1]))]
    raise EdgeError(f"{info.path} has a dynamic input size and no sidecar input size: pass --imgsz HxW")


def _engine_groups(cfg: EngineBuildConfig, info: OnnxInfo, sidecar: Dict[str, Any]
                   ) -> Tuple[InputInfo, Tuple[int, int, int], List[List[Tuple[int, int]]]]:
    """(the image input, batch (min, opt, max), the resolutions of each engine: one group per engine)."""
    sizes = resolutions(cfg, info, sidecar)
    inp = info.inputs[0]
    if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0:
        if cfg.batch != (1, 1, 1) and cfg.batch != (inp.shape[0],) * 3:
            raise EdgeError(
                f"{info.path} has a fixed batch of {inp.shape[0]}; re-export with --dynamic-batch to build "
                f"--batch {','.join(map(str, cfg.batch))}"
            )
        batch: Tuple[int, int, int] = (inp.shape[0],) * 3  # type: ignore[assignment]
    else:
        batch = cfg.batch
    groups: List[List[Tuple[int, int]]] = [sizes] if cfg.span_profile else [[s] for s in sizes]
    return inp, batch, groups


def _smallest_largest(group: List[Tuple[int, int]]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    by_area = sorted(group, key=lambda hw: hw[0] * hw[1])
    return by_area[0], by_area[-1]


def _group_profile(inp: InputInfo, batch: Tuple[int, int, int], group: List[Tuple[int, int]]) -> Profile:
    """The profile of one engine: min/max the smallest/largest size, opt the first (the size it runs at)."""
    lo, hi = _smallest_largest(group)
    return Profile(inp.name, _input_shape(inp, batch[0], lo), _input_shape(inp, batch[1], group[0]),
                   _input_shape(inp, batch[2], hi))


def planned_profiles(cfg: EngineBuildConfig, info: OnnxInfo, sidecar: Dict[str, Any]) -> List[Profile]:
    """The optimization profile of each engine ``plan_engines`` will plan, in the same order."""
    inp, batch, groups = _engine_groups(cfg, info, sidecar)
    return [_group_profile(inp, batch, group) for group in groups]


def plan_engines(cfg: EngineBuildConfig, info: OnnxInfo, sidecar: Dict[str, Any], device: DeviceInfo,
                 caps: TrtCapabilities, onnx_sha256: str) -> List[EnginePlan]:
    """The engines this build will produce, with keys, before touching TensorRT."""
    cfg.validate()
    quant = sidecar.get("quantization") or {}
    if quant.get("target") == "onnxruntime":
        raise EdgeError(
            f"{info.path} is edge quantize's ONNX Runtime CPU form (--target onnxruntime: uint8 activations, "
            "preprocessing folded into the first convolution), not TensorRT's Q/DQ form: TensorRT does not build "
            "it. Quantize the pre-NMS graph again with --target tensorrt (the default), run edge surgery on "
            "that, and build the result"
        )
    if info.has_onnx_nms and not caps.onnx_nms_import:
        raise EdgeError(
            f"{info.path} uses ONNX NonMaxSuppression, which TensorRT imports only from 8.6; this is "
            f"TensorRT {caps.version_string}. Re-run edge surgery on the pre-NMS graph with --nms efficient "
            "(EfficientNMS_TRT plugin) for this device"
        )
    if info.class_agnostic_nms and not caps.efficient_nms_class_agnostic:
        raise EdgeError(
            f"{info.path} asks EfficientNMS_TRT for class-agnostic NMS (class_agnostic=1), which the plugin "
            f"reads only from TensorRT 8.6; TensorRT {caps.version_string}'s creator ignores it and would run "
            "per-class NMS. Re-run edge surgery on the pre-NMS graph without --class-agnostic for this device, "
            "or build on TensorRT >= 8.6 (JetPack 6)"
        )
    inp, batch, groups = _engine_groups(cfg, info, sidecar)
    stem = Path(info.path).stem
    plans = []
    calib = cfg.calibration_sha256 or (sidecar.get("quantization") or {}).get("calibration_sha256")
    for group in groups:
        profile = _group_profile(inp, batch, group)
        lo, hi = _smallest_largest(group)
        opt = group[0]
        profiles = [profile]
        key = EngineKey(
            onnx_sha256=onnx_sha256,
            tensorrt_version=caps.version_string,
            device_name=device.name,
            device_sm=device.sm,
            l4t_release=device.l4t_release,
            dla_core=cfg.dla_core,
            gpu_fallback=cfg.gpu_fallback,
            precision=cfg.precision,
            profiles=[p.to_dict() for p in profiles],
            plugin_library=("libnvinfer_plugin " + caps.version_string) if info.plugin_ops else None,
            calibration_sha256=calib,
            nms=sidecar.get("nms"),
            extra={"onnx_precision_form": info.precision_form, "strongly_typed": cfg.strongly_typed},
        )
        name = engine_filename(stem, profile.opt_shape if not cfg.span_profile else profile.max_shape,
                               batch[2], cfg.precision, device, cfg.dla_core)
        if cfg.span_profile:
            name = name.replace(f"_{hi[0]}x{hi[1]}_", f"_{lo[0]}x{lo[1]}-{hi[0]}x{hi[1]}_")
        engine_path = Path(cfg.out_dir) / name
        cmd = trtexec_command(caps, info.path, str(engine_path), cfg.precision, profiles, cfg.workspace_mb,
                              cfg.dla_core, cfg.gpu_fallback, cfg.timing_cache, None, cfg.strongly_typed,
                              dynamic_inputs=info.dynamic_input_names)
        plans.append(EnginePlan(engine_path, profiles, key, cmd, profile.opt_shape, opt))
    return plans


def engine_status(plan: EnginePlan) -> Tuple[str, List[str]]:
    """('missing'|'stale'|'up-to-date', reasons) for a planned engine already on disk."""
    if not plan.engine_path.exists():
        return "missing", []
    sidecar = read_sidecar(plan.engine_path, required=False)
    if not sidecar or "engine" not in sidecar:
        return "stale", ["no sidecar with an engine key"]
    try:
        recorded = EngineKey.from_dict(sidecar["engine"]["key"])
    except (KeyError, TypeError, ValueError) as exc:
        return "stale", [f"unreadable engine key ({exc})"]
    reasons = stale_reasons(recorded, plan.key)
    if sidecar["engine"].get("sha256") != sha256_file(plan.engine_path):
        reasons.append("engine bytes do not match the sidecar's sha256 (file changed or truncated)")
    return ("stale" if reasons else "up-to-date"), reasons


def check_int8_scales(cfg: EngineBuildConfig, info: OnnxInfo, caps: TrtCapabilities, calibrator: Any) -> None:
    """Refuse ``--precision best`` when its INT8 flag would have no scales, as ``int8`` is refused.

    ``best`` sets FP16 and INT8 on TensorRT <= 10 (``edge.trt.api``); without Q/DQ in the graph and without
    a calibrator TensorRT fails the build ("Calibration failure occurred with no scaling factors
    detected"). No INT8 flag is set on TensorRT 11 or for a strongly typed network, so nothing is refused
    there.
    """
    if cfg.precision != "best" or info.precision_form == "qdq" or calibrator is not None:
        return
    if not caps.implicit_precision or (cfg.strongly_typed and caps.strongly_typed_flag):
        return
    raise EdgeError(
        f"--precision best turns on INT8 beside FP16, and {info.path} is an {info.precision_form} graph (no "
        "Q/DQ) with no calibration data: TensorRT would fail with no INT8 scales. Pass --calib SOURCE (legacy "
        "calibrator), build the Q/DQ graph from `edge quantize --precision int8`, or use --precision fp16."
    )


@dataclass
class BuiltEngine:
    path: Path
    status: str  # built | up-to-date
    seconds: float
    reasons: List[str]


def build_engines(
    cfg: EngineBuildConfig,
    trt: Any,
    device: DeviceInfo,
    build_fn: Optional[Callable[..., Any]] = None,
    calibrator: Any = None,
) -> List[BuiltEngine]:
    """Build every planned engine that is missing or stale. ``trt``: the tensorrt module (or a stand-in)."""
    from edge.trt import api

    build_fn = build_fn or api.build_engine
    caps = api.trt_capabilities(trt)
    info = inspect_onnx(cfg.onnx_path)
    sidecar = read_sidecar(cfg.onnx_path, required=False) or {}
    onnx_sha = sha256_file(cfg.onnx_path)
    plans = plan_engines(cfg, info, sidecar, device, caps, onnx_sha)
    check_int8_scales(cfg, info, caps, calibrator)
    timing = None
    if cfg.timing_cache and Path(cfg.timing_cache).exists():
        timing = Path(cfg.timing_cache).read_bytes()
    results = []
    for plan in plans:
        status, reasons = engine_status(plan)
        if status == "up-to-date" and not cfg.force:
            log.info("%s is up to date", plan.engine_path)
            results.append(BuiltEngine(plan.engine_path, "up-to-date", 0.0, []))
            continue
        if status == "stale":
            log.warning("rebuilding stale engine %s: %s", plan.engine_path, "; ".join(reasons))
        req = api.BuildRequest(
            onnx_path=cfg.onnx_path, precision=cfg.precision, profiles=plan.profiles,
            workspace_mb=cfg.workspace_mb, dla_core=cfg.dla_core, gpu_fallback=cfg.gpu_fallback,
            onnx_precision_form=info.precision_form, plugin_ops=info.plugin_ops, timing_cache=timing,
            calibrator=calibrator, strongly_typed=cfg.strongly_typed,
        )
        start = time.perf_counter()
        result = build_fn(trt, req)
        seconds = time.perf_counter() - start
        atomic_write_bytes(plan.engine_path, result.engine)
        meta = derive_sidecar(cfg.onnx_path, plan.engine_path, "build", {
            "format": "tensorrt-engine",
            "engine": {
                "key": plan.key.to_dict(),
                "sha256": sha256_file(plan.engine_path),
                "builder_flags": list(result.flags),
                "input_shape": list(plan.input_shape),
                "trtexec": plan.trtexec,
                "build_seconds": round(seconds, 2),
                "source_onnx": str(Path(cfg.onnx_path).resolve()),
            },
        })
        _record_input_size(meta, plan)
        write_sidecar(plan.engine_path, meta)
        if cfg.timing_cache and result.timing_cache:
            atomic_write_bytes(cfg.timing_cache, result.timing_cache)
            timing = result.timing_cache
        log.info("built %s in %.1f s", plan.engine_path, seconds)
        results.append(BuiltEngine(plan.engine_path, "built", seconds, reasons))
    return results


def _record_input_size(meta: Dict[str, Any], plan: EnginePlan) -> None:
    """The engine runs at its profile's opt shape: its sidecar's input size is that, not the ONNX's.

    A dynamic-H/W ONNX carries the export's size; an engine built from it at another ``--imgsz`` must not
    tell the runtime to letterbox to the export's size (``input_size`` and ``input.size`` as export
    writes them; ``edge.model_input.input_format_from_graph`` reads both).
    """
    h, w = plan.hw
    meta["input_size"] = [h, w]
    if isinstance(meta.get("input"), dict):
        meta["input"] = dict(meta["input"], size=[h, w])


def plan_summary(plans: Sequence[EnginePlan]) -> List[Dict[str, Any]]:
    return [{"engine": str(p.engine_path), "status": engine_status(p)[0], "trtexec": p.trtexec} for p in plans]
