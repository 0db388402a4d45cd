"""The engines ``edge build`` ships, run as ``edge-run`` runs them and checked against ONNX Runtime's
detections on the same inputs (``edge.doctor.compare.match_detections``):

* ``tensorrt <precision>: shipped engine``: the deploy graph itself (no extra outputs, so TensorRT fuses it
  as it fuses the engine a user ships) built through ``edge build``'s code path, for each precision the
  device gets; the file run is the file written, and its sha256 must be the one its sidecar records;
* ``tensorrt cuda graph``: that engine opened with ``cuda_graph=True`` (``edge-run --cuda-graph``): the
  replayed runs must give the detections of the plain runs;
* ``tensorrt int8 calibrated``: ``edge build --precision int8 --calib`` (TensorRT's legacy entropy
  calibrator fed by ``edge.data.calibration.ImageBatcher`` over the self-test frames), INT8 tolerances;
* ``tensorrt DLA``: DLA core 0 with GPU fallback, where the device has a DLA.

Every check records what a bug report needs: the engine's path, sha256, size, build flags and profile,
the input size, the largest deviations from ONNX Runtime, and the timings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from edge.artifacts import NMS_OUTPUTS, read_sidecar, sha256_file
from edge.doctor.compare import (
    ENGINE_VS_ONNXRUNTIME_TOLERANCE,
    POST_NMS_TOLERANCE,
    DetectionMatch,
    NmsParams,
    match_detections,
    timing,
)
from edge.doctor.engine_hooks import EngineHooks
from edge.doctor.nms_split import OrtGraphRunner
from edge.doctor.report import FAIL, OK, SKIP, WARN, Check
from edge.errors import EdgeError
from edge.ort import import_onnx

log = logging.getLogger(__name__)

SHIPPED_PARTS = ("tensorrt cuda graph", "tensorrt int8 calibrated", "tensorrt dynamic H/W", "tensorrt DLA")
_NO_SHIPPED_HOOKS = "these engine hooks cannot build the engines edge build ships (a test stand-in)"


def onnxruntime_outputs(model: str, input_name: str, batches: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
    """The four NMS outputs of deploy graph ``model`` run by ONNX Runtime on each batch."""
    from edge.runtime.backend import find_output_names

    onnx = import_onnx()
    runner = OrtGraphRunner(onnx.load(str(model)))
    out = []
    for batch in batches:
        values = runner.run({input_name: batch})
        names = list(values)
        mapping = find_output_names(names, [values[n].shape for n in names])
        out.append({c: values[mapping[c]] for c in NMS_OUTPUTS})
    return out


def engine_outputs(backend: Any, batches: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
    """The four NMS outputs of ``backend.infer`` on each batch."""
    out = []
    for batch in batches:
        det = backend.infer(batch)
        out.append({"num_detections": det.num.reshape(-1, 1), "detection_boxes": det.boxes,
                    "detection_scores": det.scores, "detection_classes": det.classes})
    return out


def engine_record(path: Path) -> Dict[str, Any]:
    """What a bug report needs of an engine file: path, sha256 (and whether its sidecar records the same),
    size, and the build facts its sidecar holds (flags, profile, precision, DLA, calibration, trtexec)."""
    sidecar = read_sidecar(path, required=False) or {}
    engine = sidecar.get("engine") or {}
    key = engine.get("key") or {}
    sha = sha256_file(path)
    return {
        "engine": str(path), "sha256": sha, "bytes": path.stat().st_size,
        "sidecar_sha256_matches": engine.get("sha256") == sha,
        "builder_flags": engine.get("builder_flags"), "input_shape": engine.get("input_shape"),
        "profiles": key.get("profiles"), "precision": key.get("precision"), "dla_core": key.get("dla_core"),
        "gpu_fallback": key.get("gpu_fallback"), "calibration_sha256": key.get("calibration_sha256"),
        "tensorrt_version": key.get("tensorrt_version"), "trtexec": engine.get("trtexec"),
        "build_seconds": engine.get("build_seconds"),
    }


@dataclass
class EngineRun:
    """A shipped engine that ran: its file, precision, NMS outputs on the self-test batches, timing."""

    path: Path
    precision: str
    outputs: List[Dict[str, np.ndarray]]
    timing: Dict[str, float]


@dataclass
class ShipContext:
    """What the shipped-engine checks share: the hooks, the work folder, the self-test frames and batches
    (and the input format they were made for), the model's NMS settings, timing options, and the report."""

    hooks: EngineHooks
    work: Path
    frames: List[np.ndarray]
    batches: List[np.ndarray]
    input_format: Any
    input_name: str
    num_classes: Optional[int]
    nms: NmsParams
    warmup: int
    iterations: int
    workspace_mb: int
    checks: List[Check]
    _expected: Dict[str, List[Dict[str, np.ndarray]]] = field(default_factory=dict)

    def expected(self, model: str) -> List[Dict[str, np.ndarray]]:
        """ONNX Runtime's NMS outputs of deploy graph ``model`` on the self-test batches (computed once)."""
        if model not in self._expected:
            self._expected[model] = onnxruntime_outputs(model, self.input_name, self.batches)
        return self._expected[model]

    def build_config(self, model: str, precision: str, **options: Any) -> Any:
        """The ``EngineBuildConfig`` ``edge build MODEL --precision P --workspace W`` makes, plus ``options``."""
        from edge.trt.build import EngineBuildConfig

        out_dir = str(self.work / "shipped")
        return EngineBuildConfig(onnx_path=str(model), out_dir=out_dir, precision=precision,
                                 workspace_mb=self.workspace_mb, **options)


def _summary(record: Dict[str, Any], match: DetectionMatch, tol: float, inputs: int, t: Dict[str, float]) -> str:
    flags = ",".join(record.get("builder_flags") or []) or "none"
    text = (f"{Path(record['engine']).name} (sha256 {record['sha256'][:12]}, flags {flags}): {match.matched} "
            f"detections on {inputs} inputs match ONNX Runtime's, max deviation box {match.max_box_px:.3g} px, "
            f"score {match.max_score:.3g} (tolerance {tol:g})")
    if match.borderline:
        text += f", {len(match.borderline)} borderline at an NMS threshold"
    return text + f"; {t['median_ms']:.2f} ms median"


def build_and_compare(ctx: ShipContext, name: str, cfg: Any, precision: str, *, calib: Any = None,
                      batches: Optional[List[np.ndarray]] = None,
                      expected: Optional[List[Dict[str, np.ndarray]]] = None,
                      extra_problems: Optional[Callable[[Any], List[str]]] = None, extra_fix: str = "",
                      details: Optional[Dict[str, Any]] = None) -> Optional[EngineRun]:
    """Build ``cfg`` with ``edge build``'s code path, run the engine as ``edge-run`` does on ``batches``
    (default: the self-test batches), and compare its detections with ``expected`` (default: ONNX Runtime's
    on ``cfg.onnx_path``) within the precision's tolerance; ``extra_problems(backend)`` adds its own
    (reported first, with ``extra_fix``).
    Appends one check named ``name``; returns the run, or None when the build or the run failed."""
    from edge.runtime.backend import conformance_report

    hooks = ctx.hooks
    assert hooks.build_config is not None and hooks.open_engine is not None
    batches = ctx.batches if batches is None else batches
    info: Dict[str, Any] = dict(details or {})
    try:
        built = hooks.build_config(cfg, calib)
    except Exception as exc:  # noqa: BLE001 - one engine's failure must not hide the other checks
        log.debug("%s: build failed", name, exc_info=True)
        ctx.checks.append(Check(name, FAIL, f"edge build failed: {type(exc).__name__}: {exc}",
                                "see the TensorRT log above; on small devices lower --workspace or close other "
                                "programs", info))
        return None
    record = engine_record(Path(built.path))
    info.update(record)
    info.update(build_status=built.status, build_seconds_here=round(float(built.seconds), 2))
    tol = ENGINE_VS_ONNXRUNTIME_TOLERANCE[precision]
    try:
        expected = ctx.expected(cfg.onnx_path) if expected is None else expected
        with hooks.open_engine(Path(built.path), False) as backend:
            extra = list(extra_problems(backend)) if extra_problems is not None else []
            problems = extra + conformance_report(backend, batches, ctx.num_classes)
            outputs = engine_outputs(backend, batches)
            t = timing(lambda: backend.infer(batches[0]), ctx.warmup, ctx.iterations)
    except Exception as exc:  # noqa: BLE001 - report, and go on with the next check
        log.debug("%s: run failed", name, exc_info=True)
        ctx.checks.append(Check(name, FAIL, f"{Path(built.path).name} did not run: {type(exc).__name__}: {exc}",
                                "run `edge -v doctor --selftest` for details and report it with this JSON", info))
        return None
    match = DetectionMatch()
    for i, (got, want) in enumerate(zip(outputs, expected)):
        match.merge(match_detections(got, want, tol, ctx.nms), f"input {i}: ")
    info.update({"inputs": len(batches), "input_size": list(np.asarray(batches[0]).shape),
                 "tolerance": tol, "comparison": match.to_dict(), "timing": t})
    if not record["sidecar_sha256_matches"]:
        problems.append("the engine's bytes are not the ones its sidecar records (sha256 differs)")
    problems += match.problems
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        fix = extra_fix if extra and extra_fix else (
            "the engine differs from ONNX Runtime on the same inputs: report it with this JSON (for INT8, "
            "calibrate on representative images: --images DIR)")
        ctx.checks.append(Check(name, FAIL, "; ".join(problems[:3]) + more, fix, info))
        return None
    ctx.checks.append(Check(name, OK, _summary(record, match, tol, len(batches), t), details=info))
    return EngineRun(Path(built.path), precision, outputs, t)


def check_shipped(ctx: ShipContext, precision: str, model: str) -> Optional[EngineRun]:
    """``tensorrt <precision>: shipped engine``: ``edge build MODEL --precision P`` run and compared."""
    name = f"tensorrt {precision}: shipped engine"
    if ctx.hooks.build_config is None or ctx.hooks.open_engine is None:
        ctx.checks.append(Check(name, SKIP, f"not run: {_NO_SHIPPED_HOOKS}"))
        return None
    return build_and_compare(ctx, name, ctx.build_config(model, precision), precision)


def _warnings_while(fn: Callable[[], Any]) -> List[str]:
    """Run ``fn`` and return the warnings edge logged meanwhile (e.g. a CUDA-graph capture that fell back)."""
    records: List[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.name}: {record.getMessage()}")

    handler = Keep(logging.WARNING)
    root = logging.getLogger("edge")
    root.addHandler(handler)
    try:
        fn()
    finally:
        root.removeHandler(handler)
    return records


def check_cuda_graph(ctx: ShipContext, shipped: Optional[EngineRun], reason: str = "") -> None:
    """``tensorrt cuda graph``: the shipped engine with ``cuda_graph=True`` (the first run captures, the next
    replay) gives the plain runs' detections (one to one within ``POST_NMS_TOLERANCE``), and its timing;
    a warning edge logs meanwhile (a capture that fell back to plain launches) makes it a warning."""
    name = "tensorrt cuda graph"
    if ctx.hooks.open_engine is None:
        ctx.checks.append(Check(name, SKIP, f"not run: {_NO_SHIPPED_HOOKS}"))
        return
    if shipped is None:
        ctx.checks.append(Check(name, SKIP, f"not run: {reason or 'no shipped engine ran above'}"))
        return
    info: Dict[str, Any] = engine_record(shipped.path)
    tol = POST_NMS_TOLERANCE[shipped.precision]
    state: Dict[str, Any] = {}

    def run() -> None:
        with ctx.hooks.open_engine(shipped.path, True) as backend:  # type: ignore[misc]
            engine_outputs(backend, ctx.batches)  # the first run captures the graph
            state["outputs"] = engine_outputs(backend, ctx.batches)  # replays
            state["timing"] = timing(lambda: backend.infer(ctx.batches[0]), ctx.warmup, ctx.iterations)

    try:
        warnings = _warnings_while(run)
    except Exception as exc:  # noqa: BLE001 - report, and go on with the next check
        log.debug("cuda graph run failed", exc_info=True)
        ctx.checks.append(Check(name, FAIL, f"{shipped.path.name} with cuda_graph=True did not run: "
                                f"{type(exc).__name__}: {exc}", "run edge-run without --cuda-graph and report it",
                                info))
        return
    match = DetectionMatch()  # no NMS settings: the same engine must keep the same detections
    for i, (got, want) in enumerate(zip(state["outputs"], shipped.outputs)):
        match.merge(match_detections(got, want, tol), f"input {i}: ")
    info.update({"tolerance": tol, "comparison": match.to_dict(), "timing_cuda_graph": state["timing"],
                 "timing_plain": shipped.timing, "warnings": warnings})
    if match.problems:
        ctx.checks.append(Check(name, FAIL, "replayed runs differ from plain runs: " + "; ".join(match.problems[:3]),
                                "run edge-run without --cuda-graph and report it with this JSON", info))
        return
    summary = (f"{shipped.path.name} ({shipped.precision}) with cuda_graph=True: the same detections as without on "
               f"{len(ctx.batches)} inputs; {state['timing']['median_ms']:.2f} ms median vs "
               f"{shipped.timing['median_ms']:.2f} ms without")
    if warnings:
        ctx.checks.append(Check(name, WARN, summary + "; but: " + "; ".join(warnings[:2]),
                                "the CUDA graph may not have been used: see the warnings", info))
        return
    ctx.checks.append(Check(name, OK, summary, details=info))


def _calibration_manifest(ctx: ShipContext, images: Optional[str]) -> Path:
    """A manifest of the self-test frames: the --images files themselves, or the pattern frames as PNG."""
    from edge.data.calibration import write_manifest

    folder = ctx.work / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    if images:
        files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        paths = files[:len(ctx.frames)]
    else:
        import cv2

        paths = []
        for i, frame in enumerate(ctx.frames):
            path = folder / f"frame{i:03d}.png"
            if not cv2.imwrite(str(path), frame):
                raise EdgeError(f"cannot write the calibration frame {path}")
            paths.append(path)
    return write_manifest(folder / "selftest.txt", paths, ["self-test frames (edge doctor --selftest)"])


def check_calibrated_int8(ctx: ShipContext, model: str, skip_reason: str, images: Optional[str]) -> None:
    """``tensorrt int8 calibrated``: ``edge build MODEL --precision int8 --calib <the self-test frames>``."""
    name = "tensorrt int8 calibrated"
    if ctx.hooks.build_config is None or ctx.hooks.open_engine is None:
        skip_reason = skip_reason or _NO_SHIPPED_HOOKS
    if skip_reason:
        ctx.checks.append(Check(name, SKIP, f"not run: {skip_reason}"))
        return
    from edge.runtime.engines import CalibrationRequest

    try:
        manifest = _calibration_manifest(ctx, images)
    except EdgeError as exc:
        ctx.checks.append(Check(name, FAIL, str(exc), "check the free space and permissions of --work-dir"))
        return
    cache = ctx.work / "calibration" / (Path(model).stem + ".cache")
    calib = CalibrationRequest(str(manifest), cache=str(cache))
    details = {"calibration_manifest": str(manifest), "calibration_images": len(ctx.frames),
               "calibration_cache": str(cache)}
    run = build_and_compare(ctx, name, ctx.build_config(model, "int8"), "int8", calib=calib, details=details)
    if run is not None:
        ctx.checks[-1].details["calibration_cache_written"] = cache.is_file()


def check_dla(ctx: ShipContext, precision: Optional[str], model: Optional[str], skip_reason: str) -> None:
    """``tensorrt DLA``: ``edge build MODEL --precision P --dla-core 0 --gpu-fallback`` run and compared."""
    name = "tensorrt DLA"
    if ctx.hooks.build_config is None or ctx.hooks.open_engine is None:
        skip_reason = skip_reason or _NO_SHIPPED_HOOKS
    if skip_reason or precision is None or model is None:
        ctx.checks.append(Check(name, SKIP, f"not run: {skip_reason or 'no DLA precision planned'}"))
        return
    cfg = ctx.build_config(model, precision, dla_core=0, gpu_fallback=True)
    build_and_compare(ctx, name, cfg, precision, details={"dla_cores": ctx.hooks.dla_cores})


def skip_shipped_parts(checks: List[Check], reason: str) -> None:
    """One skip line per shipped-engine part that needs TensorRT (when the engine checks cannot run)."""
    for part in SHIPPED_PARTS:
        checks.append(Check(part, SKIP, f"not run: {reason}"))
