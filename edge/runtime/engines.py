"""Engines for a model file on this device: ``edge build``, and ``edge-run --backend tensorrt`` on an ONNX.

``build_engines_for_model`` resolves any model file ``edge-run`` takes to the deploy ONNX it stands for
(``edge.runtime.open_model.deploy_graph_for``: a checkpoint is exported, a pre-NMS graph given NMS, an
engine rebuilt from the ONNX its sidecar names), then plans (``--dry-run``: no TensorRT, no GPU) or builds
one engine per resolution with ``edge.trt.build``, optionally with TensorRT's legacy INT8 calibrator fed
by the same batches as ``edge quantize`` (``edge.data.calibration``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from edge.artifacts import read_sidecar, sha256_file
from edge.cuda import CudaContext, DeviceBuffer
from edge.data.calibration import ImageBatcher, calibration_sha256, calibration_source, provenance_record
from edge.errors import EdgeError
from edge.model_input import LAYOUT_UINT8_NHWC_BGR, InputFormat, model_input_format
from edge.runtime.open_model import deploy_graph_for
from edge.trt import build as trt_build
from edge.trt.api import load_tensorrt, trt_capabilities
from edge.trt.build import BuiltEngine, EngineBuildConfig, build_engines
from edge.trt.calibrator import CalibrationCache, CalibrationFeeder, make_entropy_calibrator
from edge.trt.engine_key import DeviceInfo, device_info, read_l4t_release
from edge.trt.onnx_info import inspect_onnx
from edge.trt.version import capabilities

log = logging.getLogger(__name__)


@dataclass
class CalibrationRequest:
    """Legacy implicit INT8 (TensorRT <= 10): calibration images and where the cache goes.

    source: a manifest or a dataset YAML; split / count: with a YAML, which split and how many images;
    cache: the calibration cache file (default ``calibration/cache/<model>.cache``).
    """

    source: str
    split: Optional[str] = None
    count: Optional[int] = None
    cache: Optional[str] = None


@dataclass
class PlanTarget:
    """``--dry-run``: the TensorRT version and device to plan for (nothing is queried)."""

    trt_version: str
    device_name: str
    device_sm: str


def build_engines_for_model(cfg: EngineBuildConfig, *, calib: Optional[CalibrationRequest] = None,
                            dry_run: Optional[PlanTarget] = None,
                            announce: Callable[[str], None] = log.info) -> List[BuiltEngine]:
    """``edge build``: engines for ``cfg.onnx_path`` (any model file; see the module docstring).

    With ``dry_run`` the plan (engine files, status, trtexec lines) goes to ``announce`` as JSON and no
    engine is built (returns []); otherwise one line per engine (built or up to date).
    """
    deploy = deploy_graph_for(Path(cfg.onnx_path))
    if str(deploy) != str(cfg.onnx_path):
        cfg = dataclasses.replace(cfg, onnx_path=str(deploy))
    if dry_run is not None:
        caps = capabilities(dry_run.trt_version)
        device = DeviceInfo(dry_run.device_name, dry_run.device_sm, read_l4t_release())
        plans = trt_build.plan_engines(cfg, inspect_onnx(cfg.onnx_path), read_sidecar(cfg.onnx_path, required=False)
                                       or {}, device, caps, sha256_file(cfg.onnx_path))
        announce(json.dumps(trt_build.plan_summary(plans), indent=2))
        return []
    trt = load_tensorrt()
    device = device_info()
    calibrator = None
    with CudaContext(0).current():
        if calib is not None:
            calibrator = legacy_calibrator(calib, cfg, trt)
        results = build_engines(cfg, trt, device, calibrator=calibrator)
    for r in results:
        announce(f"{r.status:>10}  {r.path}" + (f"  ({r.seconds:.1f} s)" if r.status == "built" else ""))
    return results


def legacy_calibrator(calib: CalibrationRequest, cfg: EngineBuildConfig, trt: Any, cuda_driver: Any = None) -> Any:
    """TensorRT's IInt8EntropyCalibrator2 fed by edge quantize's batcher (same letterbox, same layout).

    TensorRT calibrates a network with dynamic dimensions at the calibration profile's opt shape
    (``edge.trt.api`` sets it to the engine profile's opt): the batcher letterboxes to that size (not the
    export's, which a dynamic-H/W ONNX's sidecar carries), in batches of the opt batch, and the feeder
    checks every batch against it byte for byte.

    ``cuda_driver``: the ``pycuda.driver`` the device buffer is allocated through (default: PyCUDA's; the
    doctor's self-test passes its own, a stand-in in tests).
    """
    caps = trt_capabilities(trt)
    if not caps.int8_calibrator:
        raise EdgeError(f"TensorRT {caps.version_string} has no INT8 calibrator (removed in 11): run "
                        "`edge quantize --precision int8` and build the Q/DQ graph instead of --calib")
    if cfg.precision not in ("int8", "best"):
        raise EdgeError("--calib only applies with --precision int8 or best")
    profiles = trt_build.planned_profiles(cfg, inspect_onnx(cfg.onnx_path),
                                          read_sidecar(cfg.onnx_path, required=False) or {})
    if len(profiles) != 1:
        sizes = ", ".join("x".join(map(str, p.opt_shape)) for p in profiles)
        raise EdgeError(
            f"--calib calibrates at one input shape, but this build makes {len(profiles)} engines ({sizes}), "
            "each calibrated at its own size: run edge build --calib with one --imgsz at a time, or pass "
            "--span-profile for one engine spanning them (calibrated at the first --imgsz)"
        )
    opt = tuple(int(d) for d in profiles[0].opt_shape)
    fmt = _format_at(model_input_format(cfg.onnx_path), opt)
    batcher = ImageBatcher(calibration_source(calib.source, calib.split, calib.count), fmt, batch_size=opt[0])
    record = provenance_record(batcher, method="entropy", source_onnx_sha256=sha256_file(cfg.onnx_path),
                               tools={"tensorrt": caps.version_string})
    cfg.calibration_sha256 = calibration_sha256(record)
    cache_path = calib.cache or str(Path("calibration") / "cache" / (Path(cfg.onnx_path).stem + ".cache"))
    device_buffer = DeviceBuffer if cuda_driver is None else functools.partial(DeviceBuffer, driver=cuda_driver)
    feeder = CalibrationFeeder(batcher, batcher.batch_size, device_buffer, shape=opt, dtype=batcher.dtype)
    return make_entropy_calibrator(trt, feeder, CalibrationCache(cache_path, record))


def _format_at(fmt: InputFormat, shape: Tuple[int, ...]) -> InputFormat:
    """``fmt`` letterboxing to the H x W of ``shape`` (the profile's opt shape, in ``fmt``'s layout)."""
    h, w = (shape[1], shape[2]) if fmt.layout == LAYOUT_UINT8_NHWC_BGR else (shape[2], shape[3])
    sized = dataclasses.replace(fmt, height=int(h), width=int(w))
    if sized.tensor_shape(shape[0]) != tuple(shape):
        raise EdgeError(
            f"the calibration profile's opt shape {list(shape)} is not a {fmt.layout} input "
            f"({list(sized.tensor_shape(shape[0]))}); check the model's input_layout in its sidecar"
        )
    return sized
