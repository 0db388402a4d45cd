"""The on-device self-test of ``edge doctor --selftest`` (``run_selftest``, configured by
``SelftestConfig``):

1. ONNX Runtime on the deploy model: the backend contract, the graph split at its NMS (the NMS "tail"
   alone reproduces the detections from the pre-NMS tensors), and timings.
2. For each precision the device supports (``edge.doctor.precisions``):

   * a probe engine (the deploy graph plus its pre-NMS tensors as outputs) built through the
     ``EngineHooks`` (``edge.doctor.engine_hooks``): the backend contract, the pre-NMS tensors against
     ONNX Runtime's (``PRE_NMS_TOLERANCE``), the engine's NMS output identical to the reference NMS tail
     run on the engine's own pre-NMS tensors, and its timing;
   * the engine ``edge build`` ships (the deploy graph as it is), run as ``edge-run`` runs it, its
     detections matched one to one with ONNX Runtime's (``edge.doctor.shipped``).

3. What else ships: ``--cuda-graph`` replay of the shipped engine, a legacy-calibrated INT8 build
   (TensorRT <= 10), a dynamic-H/W engine at a size other than the model's own
   (``edge.doctor.dynamic_hw``), and DLA where the device has one.

Where TensorRT, PyCUDA or a GPU is missing, the engine checks are ``skip`` with the exact reason.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.doctor.compare import (
    POST_NMS_TOLERANCE,
    PRE_NMS_TOLERANCE,
    NmsParams,
    compare_detections,
    make_batches,
    pre_nms_errors,
    selftest_frames,
    timing,
)
from edge.doctor.dynamic_hw import check_dynamic_hw
from edge.doctor.engine_hooks import EngineHooks, EngineUnavailable, tensorrt_hooks
from edge.doctor.nms_split import NmsSplit, OrtGraphRunner, nms_tail, probe_graph, split_at_nms
from edge.doctor.precisions import (
    PrecisionPlan,
    calibrated_int8_skip_reason,
    dla_precision,
    plan_precisions,
    preferred_precision,
)
from edge.doctor.report import FAIL, OK, SKIP, WARN, Check
from edge.doctor.shipped import (
    EngineRun,
    ShipContext,
    check_calibrated_int8,
    check_cuda_graph,
    check_dla,
    check_shipped,
    skip_shipped_parts,
)
from edge.errors import EdgeError, ModelError
from edge.ort import import_onnx

log = logging.getLogger(__name__)


@dataclass
class SelftestConfig:
    """What ``edge doctor --selftest`` runs.

    model: deploy ONNX (NMS inside; the bundled model by default, resolved by ``run_doctor``).
    int8_model: a Q/DQ version of it for the INT8 engine (optional).
    images: folder of images to feed (default: test:// pattern frames). frames: how many inputs.
    precisions: subset of fp32/fp16/int8 (default: every one the device supports).
    iterations / warmup: timing runs. workspace_mb: builder workspace (small devices: keep it small).
    work_dir: where engines are written (default: a temporary folder, removed afterwards unless keep).
    dynamic_size: (H, W) of the dynamic-H/W engine (default ``edge.doctor.dynamic_hw.other_size``).
    """

    model: str
    int8_model: Optional[str] = None
    images: Optional[str] = None
    frames: int = 3
    precisions: Optional[List[str]] = None
    iterations: int = 20
    warmup: int = 3
    workspace_mb: int = 256
    work_dir: Optional[str] = None
    keep: bool = False
    dynamic_size: Optional[Tuple[int, int]] = None

    def validate(self) -> "SelftestConfig":
        if not Path(self.model).is_file():
            raise ModelError(f"self-test model {self.model} not found; pass --model path/to/deploy.onnx")
        if self.int8_model and not Path(self.int8_model).is_file():
            raise ModelError(f"--int8-model {self.int8_model} not found")
        if self.images and not Path(self.images).is_dir():
            raise EdgeError(f"--images {self.images} is not a folder")
        if self.frames < 2:
            raise EdgeError(f"the self-test needs at least 2 input frames, got {self.frames}")
        if self.iterations < 1 or self.warmup < 0:
            raise EdgeError("--iterations must be >= 1 and warmup >= 0")
        if self.workspace_mb < 16:
            raise EdgeError(f"--workspace {self.workspace_mb} MB is too small; use at least 16")
        for p in self.precisions or []:
            if p not in PRE_NMS_TOLERANCE:
                raise EdgeError(f"--precision {p!r} is not one of {sorted(PRE_NMS_TOLERANCE)}")
        if self.dynamic_size is not None and (len(self.dynamic_size) != 2 or min(self.dynamic_size) < 1):
            raise EdgeError(f"dynamic_size {self.dynamic_size}: expected (height, width) in pixels, both positive")
        return self


@dataclass
class _Reference:
    """ONNX Runtime's results on the self-test inputs: every output of the probe graph, per batch."""

    split: NmsSplit
    tail: OrtGraphRunner
    batches: List[np.ndarray]
    outputs: List[Dict[str, np.ndarray]]
    input_name: str
    num_classes: Optional[int]
    probe_path: Path
    frames: List[np.ndarray] = field(default_factory=list)  # the frames the batches were made from
    input_format: Any = None  # the InputFormat they were made for


def _reference(model_path: Path, batches: List[np.ndarray], input_name: str, num_classes: Optional[int],
               work: Path) -> _Reference:
    """Split ``model_path`` at its NMS, run the probe graph on ``batches`` with ONNX Runtime, check that the
    NMS part alone replays the detections, and write the probe graph (+ sidecar) into ``work``."""
    onnx = import_onnx()
    model = onnx.load(str(model_path))
    split = split_at_nms(model)
    probe = probe_graph(model, split)
    runner = OrtGraphRunner(probe)
    tail = OrtGraphRunner(nms_tail(model, split))
    outputs = [runner.run({input_name: b}) for b in batches]
    problems: List[str] = []
    for i, out in enumerate(outputs):
        replay = tail.run({**{x: out[x] for x in split.pre_nms}, input_name: batches[i]})
        problems += [f"input {i}: {p}" for p in compare_detections(replay, {k: out[k] for k in split.outputs}, 1e-6)]
    if problems:
        raise ModelError(
            f"{model_path.name}: the NMS part of the graph, run alone on its pre-NMS tensors {split.pre_nms}, "
            f"does not reproduce the graph's detections ({'; '.join(problems[:3])})"
        )
    probe_path = work / (model_path.stem + ".selftest.onnx")
    probe_path.write_bytes(probe.SerializeToString())
    sidecar = model_path.with_suffix(".json")
    if sidecar.is_file():
        shutil.copyfile(sidecar, probe_path.with_suffix(".json"))
    return _Reference(split, tail, batches, outputs, input_name, num_classes, probe_path)


def _check_onnxruntime(cfg: SelftestConfig, work: Path, checks: List[Check]) -> Optional[_Reference]:
    """The CPU part: load, contract, timings, NMS split. Returns the reference for the TensorRT part."""
    from edge.runtime.backend import conformance_report
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions

    model_path = Path(cfg.model)
    try:
        backend = OnnxRuntimeBackend(model_path, OrtOptions(spin=False))
    except (EdgeError, ValueError) as exc:
        checks.append(Check("onnxruntime: load", FAIL, f"{model_path.name}: {exc}",
                            "pass a deploy ONNX from edge surgery (NMS inside) with --model"))
        return None
    with backend:
        info = backend.info
        assert info is not None
        num_classes = len(info.class_names) or None
        frames = selftest_frames(cfg.frames, cfg.images)
        batches = make_batches(info.input_format, frames)
        input_format = info.input_format
        checks.append(Check("onnxruntime: load", OK, f"{backend.describe()}; input {backend.input_spec.describe()}",
                            details={"model": str(model_path), "providers": backend.providers}))
        problems = conformance_report(backend, batches, num_classes)
        if problems:
            checks.append(Check("onnxruntime: contract", FAIL, "; ".join(problems[:4]),
                                "the deploy graph's outputs are malformed: re-run edge surgery", {"problems": problems}))
        else:
            dets = [backend.infer(b) for b in batches]
            counts = [int(d.num.sum()) for d in dets]
            checks.append(Check("onnxruntime: contract", OK, f"outputs well formed on {len(batches)} inputs "
                                f"(detections per input: {counts})", details={"detections": counts}))
            if not any(counts):
                checks.append(_no_detections(dets, info.sidecar))
        t = timing(lambda: backend.infer(batches[0]), cfg.warmup, cfg.iterations)
        checks.append(Check("onnxruntime: timing", OK, f"{t['median_ms']:.2f} ms median, p90 {t['p90_ms']:.2f} ms "
                            f"({t['fps']:.1f} FPS) on {backend.providers[0]}", details=t))
        input_name = info.input_name
    try:
        ref = _reference(model_path, batches, input_name, num_classes, work)
    except EdgeError as exc:
        checks.append(Check("onnxruntime: NMS split", FAIL, str(exc), "pass a deploy ONNX from edge surgery"))
        return None
    ref.frames, ref.input_format = frames, input_format
    checks.append(Check("onnxruntime: NMS split", OK, f"{ref.split.flavour} fed by {ref.split.pre_nms}; the NMS part "
                        "alone reproduces the detections from them",
                        details={"pre_nms": ref.split.pre_nms, "flavour": ref.split.flavour}))
    return ref


def _no_detections(dets: List[Any], sidecar: Dict[str, Any]) -> Check:
    """The WARN for self-test inputs that give no detection, with the highest score they reached (the deploy
    graph's max_score output) against the graph's score threshold, as ``edge-run`` says it."""
    from edge.runtime.score_watch import ScoreWatch, graph_score_threshold

    watch = ScoreWatch(graph_score_threshold(sidecar), warn=False)
    for det in dets:
        for i in range(len(det)):
            watch.observe(det.peak(i), 0)
    return Check("onnxruntime: detections", WARN, f"{watch.message()}; so post-NMS comparisons compare empty outputs",
                 "pass --images DIR with a few images of the model's classes", details=watch.to_dict())


def _skip_engines(checks: List[Check], reason: str, precisions: Sequence[str]) -> None:
    for p in precisions:
        checks.append(Check(f"tensorrt {p}", SKIP, "not run (probe and shipped engines: build, run, parity with "
                            f"ONNX Runtime, timing): {reason}"))
    skip_shipped_parts(checks, reason)


def _probe_engine(cfg: SelftestConfig, ref: _Reference, plan: PrecisionPlan, form: str, work: Path,
                  checks: List[Check], hooks: EngineHooks) -> bool:
    """The probe engine of one planned precision; False when its model is unusable (nothing else to run)."""
    name = f"tensorrt {plan.precision}"
    this_ref = ref
    if plan.precision == "int8" and cfg.int8_model and form != "qdq":
        try:
            this_ref = _reference(Path(cfg.int8_model), ref.batches, ref.input_name, ref.num_classes, work)
        except EdgeError as exc:
            checks.append(Check(name, FAIL, f"--int8-model: {exc}",
                                "pass the Q/DQ deploy graph (edge quantize, then edge surgery) with the same input"))
            return False
    try:
        engine_path, seconds = hooks.build(str(this_ref.probe_path), plan.precision, cfg.workspace_mb,
                                           str(work / "engines"))
    except Exception as exc:  # noqa: BLE001 - one precision's failure must not hide the others
        log.debug("engine build failed", exc_info=True)
        checks.append(Check(f"{name}: build", FAIL, f"{type(exc).__name__}: {exc}",
                            "see the TensorRT log above; on small devices lower --workspace or close other "
                            "programs"))
        return True
    checks.append(Check(f"{name}: build", OK, f"{engine_path.name} in {seconds:.1f} s ({hooks.label})",
                        details={"engine": str(engine_path), "seconds": seconds}))
    try:
        _run_engine_checks(cfg, this_ref, plan.precision, engine_path, hooks, checks)
    except Exception as exc:  # noqa: BLE001 - report, and go on with the next precision
        log.debug("engine checks failed", exc_info=True)
        checks.append(Check(f"{name}: run", FAIL, f"{type(exc).__name__}: {exc}",
                            "run `edge -v doctor --selftest` for details and report it"))
    return True


def _check_engines(cfg: SelftestConfig, ref: _Reference, work: Path, checks: List[Check], hooks: EngineHooks) -> None:
    from edge.artifacts import read_sidecar
    from edge.trt.onnx_info import inspect_onnx

    form = inspect_onnx(cfg.model).precision_form
    plans = plan_precisions(hooks.version, hooks.device_sm, str(ref.probe_path), form, cfg.int8_model,
                            cfg.precisions)
    ctx = ShipContext(hooks, work, ref.frames, ref.batches, ref.input_format, ref.input_name, ref.num_classes,
                      NmsParams.from_sidecar(read_sidecar(cfg.model, required=False)), cfg.warmup, cfg.iterations,
                      cfg.workspace_mb, checks)
    shipped: Dict[str, EngineRun] = {}
    for plan in plans:
        if plan.model is None:
            checks.append(Check(f"tensorrt {plan.precision}", SKIP, f"not run: {plan.skip_reason}"))
            continue
        if not _probe_engine(cfg, ref, plan, form, work, checks, hooks):
            continue
        deploy = cfg.int8_model if plan.precision == "int8" and form != "qdq" else cfg.model
        run = check_shipped(ctx, plan.precision, str(deploy))
        if run is not None:
            shipped[plan.precision] = run
    graph_precision = preferred_precision(plans)
    dla, why = dla_precision(hooks.dla_cores, plans)
    parts = [
        ("tensorrt cuda graph", lambda: check_cuda_graph(
            ctx, shipped.get(graph_precision or ""), f"the shipped {graph_precision} engine failed above"
            if graph_precision else "no engine precision is built here")),
        ("tensorrt int8 calibrated", lambda: check_calibrated_int8(
            ctx, cfg.model, calibrated_int8_skip_reason(hooks.version, hooks.device_sm, form, cfg.precisions),
            cfg.images)),
        ("tensorrt dynamic H/W", lambda: check_dynamic_hw(
            ctx, cfg.model, preferred_precision(plans, ("fp16", "fp32")), "", cfg.dynamic_size)),
        ("tensorrt DLA", lambda: check_dla(
            ctx, dla, cfg.int8_model if dla == "int8" and form != "qdq" else cfg.model, why)),
    ]
    for name, part in parts:
        try:
            part()
        except Exception as exc:  # noqa: BLE001 - one part's surprise must not hide the others
            log.debug("%s failed", name, exc_info=True)
            checks.append(Check(name, FAIL, f"{type(exc).__name__}: {exc}",
                                "run `edge -v doctor --selftest` for details and report it with this JSON"))


def _run_engine_checks(cfg: SelftestConfig, ref: _Reference, precision: str, engine_path: Path,
                       hooks: EngineHooks, checks: List[Check]) -> None:
    from edge.runtime.backend import conformance_report

    name = f"tensorrt {precision}"
    with hooks.open(engine_path) as backend:
        problems = conformance_report(backend, ref.batches, ref.num_classes)
        if problems:
            checks.append(Check(f"{name}: contract", FAIL, "; ".join(problems[:4]), details={"problems": problems}))
        else:
            checks.append(Check(f"{name}: contract", OK, f"outputs well formed on {len(ref.batches)} inputs"))
        worst: Dict[str, float] = {}
        post_problems: List[str] = []
        same_as_ort = 0
        backend.capture_extra = True
        try:
            for i, batch in enumerate(ref.batches):
                det = backend.infer(batch)
                got = {"num_detections": det.num.reshape(-1, 1), "detection_boxes": det.boxes,
                       "detection_scores": det.scores, "detection_classes": det.classes}
                extra = dict(backend.last_extra)
                missing = [x for x in ref.split.pre_nms if x not in extra]
                if missing:
                    post_problems.append(f"the engine does not output the pre-NMS tensors {missing}")
                    break
                for k, v in pre_nms_errors(extra, ref.outputs[i], ref.split.pre_nms).items():
                    worst[k] = max(worst.get(k, 0.0), v)
                replay = ref.tail.run({**{x: extra[x] for x in ref.split.pre_nms}, ref.input_name: batch})
                post_problems += [f"input {i}: {p}" for p in
                                  compare_detections(got, replay, POST_NMS_TOLERANCE[precision])]
                expected = {k: ref.outputs[i][k] for k in ref.split.outputs}
                if not compare_detections(got, expected, PRE_NMS_TOLERANCE[precision]):
                    same_as_ort += 1
        finally:
            backend.capture_extra = False
        tol = PRE_NMS_TOLERANCE[precision]
        bad = {k: v for k, v in worst.items() if not v <= tol}
        details = {"errors": worst, "tolerance": tol, "formula": "max|engine - onnxruntime| / max(1, max|onnxruntime|)"}
        if not worst:
            checks.append(Check(f"{name}: pre-NMS parity", FAIL, "no pre-NMS tensors could be compared",
                                "report this with the model", details))
        elif bad:
            checks.append(Check(f"{name}: pre-NMS parity", FAIL, "errors " + ", ".join(
                f"{k} {v:.3g}" for k, v in bad.items()) + f" exceed the tolerance {tol:g}",
                "for INT8, calibrate on more representative images (edge quantize); otherwise report it", details))
        else:
            checks.append(Check(f"{name}: pre-NMS parity", OK, "max error " + ", ".join(
                f"{k} {v:.2g}" for k, v in worst.items()) + f" (tolerance {tol:g})", details=details))
        if post_problems:
            checks.append(Check(f"{name}: post-NMS identity", FAIL, "; ".join(post_problems[:3]),
                                "the engine's NMS differs from the reference on the same pre-NMS tensors: check the "
                                "plugin library (the TensorRT line above)", {"problems": post_problems}))
        else:
            checks.append(Check(f"{name}: post-NMS identity", OK, "detections identical to the reference NMS run on "
                                f"the engine's own pre-NMS tensors; {same_as_ort}/{len(ref.batches)} inputs also give "
                                "ONNX Runtime's detections", details={"same_as_onnxruntime": same_as_ort}))
        t = timing(lambda: backend.infer(ref.batches[0]), cfg.warmup, cfg.iterations)
        checks.append(Check(f"{name}: timing", OK, f"{t['median_ms']:.2f} ms median, p90 {t['p90_ms']:.2f} ms "
                            f"({t['fps']:.1f} FPS), host copies included", details=t))


def run_selftest(cfg: SelftestConfig, *, engine_hooks: Optional[EngineHooks] = None, trt_module: Any = None,
                 cuda_driver: Any = None, cuda_python: Any = None) -> List[Check]:
    """Run the self-test; returns its checks (``fail`` only for checks that ran and failed).

    ``engine_hooks``: how engines are built and run (default: ``tensorrt_hooks(trt_module, cuda_driver,
    cuda_python)``).
    """
    cfg.validate()
    checks: List[Check] = []
    precisions = cfg.precisions or ["fp32", "fp16", "int8"]
    own_dir = cfg.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="edge-selftest-")) if own_dir else Path(cfg.work_dir or ".")
    work.mkdir(parents=True, exist_ok=True)
    try:
        ref = _check_onnxruntime(cfg, work, checks)
        if ref is None:
            _skip_engines(checks, "the ONNX Runtime reference failed above", precisions)
            return checks
        try:
            hooks = engine_hooks or tensorrt_hooks(trt_module, cuda_driver, cuda_python)
        except EngineUnavailable as exc:
            _skip_engines(checks, str(exc), precisions)
            return checks
        _check_engines(cfg, ref, work, checks, hooks)
    finally:
        if own_dir and not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif cfg.keep:
            log.info("self-test files kept in %s", work)
    return checks
