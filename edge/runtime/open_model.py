"""Opening a model file for running: the backend that fits it, after making what it lacks.

Every verb that runs a model (``edge-run``, ``edge bench``, ``edge eval`` through
``edge.runtime.predictors``, the doctor's self-test) opens it here, so they accept the same files
(``edge.artifacts.MODEL_SUFFIXES``):

* an engine (.engine/.plan/.trt) -> TensorRT;
* a deploy ONNX (NMS inside) -> ONNX Runtime, or TensorRT through an engine built (or reused) for it;
* a pre-NMS ONNX (boxes + scores) -> ``edge surgery`` (ONNX NMS) into ``NAME.nms.onnx`` beside it, reused
  while its sidecar says it came from these exact bytes;
* a training checkpoint -> ``edge export`` + ``edge surgery`` into ``NAME_deploy/`` (needs torch).

``inference_plan`` says how many frames are inferred at once, on how many threads, for the backend
``open_backend`` will pick (``edge.runtime.plan``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from edge.artifacts import ENGINE_SUFFIXES, model_file_kind, read_sidecar, sha256_file
from edge.errors import EdgeError, ModelError
from edge.ort import choose_providers, graph_kind, output_names
from edge.runtime.backend import PreNmsModelError
from edge.runtime.plan import InferencePlan, plan_inference

log = logging.getLogger(__name__)


def build_engine_for(model: Path, out_dir: str = "engines", precision: str = "fp16") -> Path:
    """Build (or reuse, when its cache key still matches) the TensorRT engine of a deploy ONNX.

    Raises a clear error where TensorRT or a GPU is missing: then run the ONNX with ONNX Runtime.
    """
    from edge.trt.api import load_tensorrt
    from edge.trt.build import EngineBuildConfig, build_engines
    from edge.trt.engine_key import device_info

    trt = load_tensorrt()
    results = build_engines(EngineBuildConfig(str(model), out_dir=out_dir, precision=precision), trt, device_info())
    return results[0].path


def open_backend(model: Path, choice: str = "auto", *, threads: int = 0, spin: bool = False,
                 cuda_graph: bool = False, check_key: bool = True) -> Any:
    """Pick and open the backend for ``model``, making the deploy graph first when that is possible:

    * an engine (.engine/.plan/.trt) -> TensorRT;
    * a deploy ONNX (NMS inside) -> ONNX Runtime;
    * a pre-NMS ONNX (boxes + scores) -> ``edge surgery`` (ONNX NMS) into ``NAME.nms.onnx`` beside it, reused
      while its sidecar says it came from these exact bytes; then ONNX Runtime;
    * a training checkpoint -> ``edge export`` + ``edge surgery`` into ``NAME_deploy/`` (needs torch).

    Logs what was chosen and why.
    """
    if not model.exists():
        raise ModelError(f"model {model} not found")
    kind = model_file_kind(model)
    if kind == "checkpoint":
        model = deploy_from_checkpoint(model)
        kind = model_file_kind(model)
    if kind == "engine":
        if choice == "onnxruntime":
            raise ModelError(f"{model.name} is a TensorRT engine; ONNX Runtime cannot run it. Pass the ONNX instead")
        from edge.runtime.tensorrt_backend import TensorRTBackend

        log.info("backend: tensorrt (the model is an engine)")
        return TensorRTBackend(model, cuda_graph=cuda_graph, check_key=check_key)
    if choice == "tensorrt":
        engine = build_engine_for(model)
        from edge.runtime.tensorrt_backend import TensorRTBackend

        log.info("backend: tensorrt (engine %s built or reused from %s)", engine, model.name)
        return TensorRTBackend(engine, cuda_graph=cuda_graph, check_key=check_key)
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions

    options = OrtOptions(threads=threads, spin=spin)
    try:
        backend = OnnxRuntimeBackend(model, options)
    except PreNmsModelError as exc:
        deploy = deploy_from_pre_nms(model, exc)
        backend = OnnxRuntimeBackend(deploy, options)
    log.info("backend: onnxruntime (%s)%s", backend.providers[0],
             "" if choice == "onnxruntime" else "; for TensorRT, `edge build` this ONNX and run the engine")
    return backend


def inference_plan(model: Path, choice: str = "auto", *, live: bool, workers: int = 0, threads: int = 0,
                   host_nice: Optional[int] = None) -> InferencePlan:
    """``edge.runtime.plan.plan_inference`` for the backend ``open_backend`` will pick for ``model``."""
    if model.suffix.lower() in ENGINE_SUFFIXES or choice == "tensorrt":
        return plan_inference("tensorrt", live=live, workers=workers, threads=threads, host_nice=host_nice)

    gpu = choose_providers("auto")[0] != "CPUExecutionProvider"
    return plan_inference("onnxruntime", live=live, gpu=gpu, workers=workers, threads=threads, host_nice=host_nice)


def deploy_from_pre_nms(model: Path, cause: Exception) -> Path:
    """``NAME.nms.onnx`` beside a pre-NMS ``model`` (made now, or reused when made from these bytes)."""
    out = model.with_name(model.stem + ".nms.onnx")
    if out.exists():
        history = (read_sidecar(out, required=False) or {}).get("history") or [{}]
        if history[-1].get("input_sha256") == sha256_file(model):
            log.info("%s has no NMS inside; using %s made from it by edge surgery", model.name, out.name)
            return out
    try:
        from edge.export.surgery import SurgeryConfig, surgery_file
    except Exception as exc:  # MissingDependencyError (onnx, onnx-graphsurgeon) or ImportError
        raise ModelError(f"{cause} (automatic surgery is not available here: {exc})") from exc
    log.info("%s has no NMS inside: appending ONNX NMS with edge surgery (defaults) -> %s", model.name, out.name)
    try:
        surgery_file(model, out, SurgeryConfig(nms="onnx"))
    except Exception as exc:
        raise ModelError(
            f"{cause}. Automatic surgery with default settings failed ({exc}); run `edge surgery` with the "
            "options that describe this model's head (--boxes, --scores, --box-format, --normalized, ...)"
        ) from exc
    return out


def deploy_from_checkpoint(checkpoint: Path) -> Path:
    """Export a training checkpoint and append NMS, into ``NAME_deploy/`` beside it (reused when newer)."""
    out_dir = checkpoint.with_name(checkpoint.stem + "_deploy")
    deploy = out_dir / f"{checkpoint.stem}.nms.onnx"
    if deploy.exists() and deploy.stat().st_mtime >= checkpoint.stat().st_mtime:
        log.info("%s: using %s exported from it earlier", checkpoint.name, deploy)
        return deploy
    commands = (f"`edge export {checkpoint} --out DIR` then `edge surgery DIR/MODEL.onnx --out MODEL.nms.onnx`, "
                "and run MODEL.nms.onnx (or an engine built from it with `edge build`)")
    try:
        from edge.export.surgery import SurgeryConfig, surgery_file
        from edge.export.torch_export import ExportConfig, export_checkpoint
    except Exception as exc:  # torch / onnx / onnx-graphsurgeon missing (a Jetson runtime install)
        raise ModelError(
            f"{checkpoint.name} is a training checkpoint and exporting it needs the export extra ({exc}). "
            f"On a machine with `pip install 'edge-detect[export]'`: {commands}"
        ) from exc
    log.info("%s is a checkpoint: exporting and appending NMS into %s", checkpoint.name, out_dir)
    try:
        results = export_checkpoint(checkpoint, out_dir, ExportConfig(name=checkpoint.stem))
        surgery_file(results[0].onnx_path, deploy, SurgeryConfig(nms="onnx"))
    except EdgeError:
        raise
    except Exception as exc:
        raise ModelError(f"exporting {checkpoint.name} failed ({exc}); run the stages yourself: {commands}") from exc
    return deploy


def deploy_graph_for(model: Path) -> Path:
    """The deploy ONNX (NMS inside) that ``model`` stands for, made when it is missing.

    A checkpoint is exported and given NMS, a pre-NMS ONNX is given NMS (both as ``open_backend`` does);
    a deploy ONNX is itself; an engine stands for the ONNX it was built from (its sidecar's
    ``engine.source_onnx``), which must still exist.
    """
    if not model.exists():
        raise ModelError(f"model {model} not found")
    kind = model_file_kind(model)
    if kind == "checkpoint":
        return deploy_from_checkpoint(model)
    if kind == "engine":
        source = ((read_sidecar(model, required=False) or {}).get("engine") or {}).get("source_onnx")
        if not source or not Path(source).is_file():
            raise ModelError(
                f"{model.name} is a TensorRT engine and its sidecar names no ONNX that still exists "
                f"({source or 'none recorded'}); pass the deploy ONNX it was built from")
        log.info("%s was built from %s", model.name, source)
        return Path(source)
    try:
        kind = graph_kind(output_names(model))
    except ModelError:  # neither a pre-NMS detector nor a deploy graph: the user's own ONNX, built as it is
        return model
    if kind == "pre-nms":
        return deploy_from_pre_nms(model, PreNmsModelError(f"{model.name} ends in boxes + scores (no NMS inside)"))
    return model
