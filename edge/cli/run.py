"""``edge-run``: detect objects live, from a camera, a stream, a video file or images.

    edge-run [MODEL] [--source URI | --camera N] [--max-frames N] [--headless] [--output FILE]
             [--stats-json FILE] [--detections-out FILE] [--serve [HOST]:PORT]
             [--backend {auto,onnxruntime,tensorrt}] [--infer-workers N] [--threads N] [--host-nice N]

MODEL: a deploy ONNX (NMS inside, from ``edge surgery``), a TensorRT engine (``edge build``), a pre-NMS
ONNX (NMS is appended first, into ``NAME.nms.onnx``) or a training checkpoint (exported first, into
``NAME_deploy/``, where torch is installed); without it the bundled model in ``edge/assets/`` runs. The
backend follows the file: TensorRT for engines, ONNX Runtime (CPU, or CUDA when present) for ONNX. Sources: see ``edge.runtime.sources`` (``test://`` needs
no camera). How many frames are inferred at once, on how many threads, follows the backend and the source
(``edge.runtime.plan``: live sources one frame at a time for latency, files several for throughput). This
module also serves as the ``edge run`` verb (``HELP``, ``add_arguments``, ``run``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

from edge import bundled
from edge.errors import EdgeError, ModelError

if TYPE_CHECKING:
    from edge.runtime.plan import InferencePlan

HELP = "run a detector on a camera, stream, video or images: capture, infer, draw, display/save/serve"

log = logging.getLogger("edge.run")

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="deploy ONNX (NMS inside), TensorRT engine, pre-NMS ONNX or checkpoint; "
                        "default: the bundled model")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", default=None, metavar="URI",
                     help="test://, a video file, an image folder or glob, v4l2:///dev/videoN, csi://N, "
                          "rtsp://... (default: --camera 0)")
    src.add_argument("--camera", type=int, default=None, metavar="N", help="V4L2 camera /dev/videoN")
    p.add_argument("--max-frames", type=int, default=0, metavar="N", help="stop after N frames (0: no limit)")
    p.add_argument("--headless", action="store_true", help="no window, even when a display exists")
    p.add_argument("--output", default=None, metavar="FILE", help="write the annotated video (.mp4, .avi)")
    p.add_argument("--stats-json", default=None, metavar="FILE", help="write run statistics as JSON")
    p.add_argument("--detections-out", default=None, metavar="FILE", help="write detections as JSON lines")
    p.add_argument("--serve", default=None, metavar="[HOST]:PORT",
                   help="MJPEG stream and live page over HTTP (loopback unless HOST is given), e.g. :8080")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                   help="auto: TensorRT for engines, ONNX Runtime for ONNX")
    p.add_argument("--conf", type=float, default=0.0, metavar="T",
                   help="extra score threshold on top of the model's own")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="ONNX Runtime intra-op threads per inference (0: choose: all cores for one worker, "
                        "cores / N for N workers)")
    p.add_argument("--infer-workers", type=int, default=0, metavar="N",
                   help="frames inferred at once (0: choose: 1 for live sources and TensorRT, 2 for files on a "
                        "CPU with 2+ cores; see edge.runtime.plan)")
    p.add_argument("--host-nice", type=int, default=None, metavar="N",
                   help="nice increment of the host-stage threads (default: 10 with one inference worker, "
                        "0 with several)")
    p.add_argument("--queue-size", type=int, default=2, metavar="N", help="frames buffered between stages")
    p.add_argument("--no-draw", action="store_true", help="do not annotate frames")
    p.add_argument("--log-every", type=float, default=5.0, metavar="S",
                   help="seconds between progress lines (0: none)")
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay inference as a CUDA graph")
    p.add_argument("--no-engine-check", action="store_true",
                   help="TensorRT: run an engine even when its sidecar key does not match this machine")


def build_engine_for(model: Path, out_dir: str = "engines", precision: str = "fp16") -> Path:
    """Build (or reuse, when its cache key still matches) the TensorRT engine of a deploy ONNX.

    Raises a clear error where TensorRT or a GPU is missing: then run the ONNX with ONNX Runtime.
    """
    from edge.cuda import device_info
    from edge.trt.api import load_tensorrt
    from edge.trt.build import EngineBuildConfig, build_engines

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
    from edge.runtime.backend import PreNmsModelError

    suffix = model.suffix.lower()
    if not model.exists():
        raise ModelError(f"model {model} not found")
    if suffix in CHECKPOINT_SUFFIXES:
        model = deploy_from_checkpoint(model)
        suffix = model.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        if choice == "onnxruntime":
            raise ModelError(f"{model.name} is a TensorRT engine; ONNX Runtime cannot run it. Pass the ONNX instead")
        from edge.runtime.tensorrt_backend import TensorRTBackend

        log.info("backend: tensorrt (the model is an engine)")
        return TensorRTBackend(model, cuda_graph=cuda_graph, check_key=check_key)
    if suffix not in ONNX_SUFFIXES:
        raise ModelError(f"{model.name}: unknown model type {suffix!r}; expected .onnx, .engine/.plan or .pt")
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
                   host_nice: Optional[int] = None) -> "InferencePlan":
    """``edge.runtime.plan.plan_inference`` for the backend ``open_backend`` will pick for ``model``."""
    from edge.runtime.plan import plan_inference

    if model.suffix.lower() in ENGINE_SUFFIXES or choice == "tensorrt":
        return plan_inference("tensorrt", live=live, workers=workers, threads=threads, host_nice=host_nice)
    from edge.runtime.onnxruntime_backend import choose_providers

    gpu = choose_providers("auto")[0] != "CPUExecutionProvider"
    return plan_inference("onnxruntime", live=live, gpu=gpu, workers=workers, threads=threads, host_nice=host_nice)


def deploy_from_pre_nms(model: Path, cause: Exception) -> Path:
    """``NAME.nms.onnx`` beside a pre-NMS ``model`` (made now, or reused when made from these bytes)."""
    from edge.artifacts import read_sidecar, sha256_file

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


def _source_spec(args: argparse.Namespace) -> Any:
    from edge.runtime.sources import camera_spec, parse_source

    if args.source is not None:
        return parse_source(args.source)
    return camera_spec(args.camera if args.camera is not None else 0)


def build_sinks(args: argparse.Namespace, class_names: List[str], fps: float, stats: Any) -> List[Any]:
    from edge.runtime.sinks import DisplaySink, JsonLinesSink, MjpegServer, VideoFileSink, display_available

    sinks: List[Any] = []
    try:
        if not args.headless:
            ok, why = display_available()
            if ok:
                sinks.append(DisplaySink())
            else:
                log.warning("%s", why)
        if args.output:
            sinks.append(VideoFileSink(args.output, fps=fps))
        if args.detections_out:
            sinks.append(JsonLinesSink(args.detections_out, class_names))
        if args.serve:
            from edge.runtime.sinks import parse_serve

            host, port = parse_serve(args.serve)
            server = MjpegServer(host, port, class_names=class_names, fps_fn=lambda: stats.fps_meter.fps)
            sinks.append(server)
            print(f"serving on {server.url}", flush=True)
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


def run(args: argparse.Namespace) -> int:
    from edge.runtime.pipeline import Pipeline, PipelineConfig
    from edge.runtime.sources import open_source
    from edge.runtime.stats import RunStats

    if args.max_frames < 0:
        raise EdgeError(f"--max-frames must be >= 0, found {args.max_frames}")
    spec = _source_spec(args)
    model = Path(args.model) if args.model else bundled.bundled_model()
    plan = inference_plan(model, args.backend, live=spec.live, workers=args.infer_workers, threads=args.threads,
                          host_nice=args.host_nice)
    config = PipelineConfig(queue_size=args.queue_size, conf_threshold=args.conf, draw=not args.no_draw,
                            max_frames=args.max_frames, log_every_s=args.log_every, infer_workers=plan.workers,
                            host_nice=plan.host_nice).validate()
    log.info("inference: %s", plan.describe())
    backend = open_backend(model, args.backend, threads=plan.threads, spin=False,
                           cuda_graph=args.cuda_graph, check_key=not args.no_engine_check)
    try:
        fmt = backend.input_format
        source = open_source(spec, target_hw=(fmt.height, fmt.width), decode_threads=plan.decode_threads)
        source.open()  # a missing camera or file fails here, before any thread starts
        log.info("source: %s%s", source.describe(), " (live: latest frame only)" if source.live else "")
        stats = RunStats()
        stats.meta.update({"model": str(model), "source": spec.uri})
        sinks = build_sinks(args, backend.info.class_names, source.fps or 30.0, stats)
        pipeline = Pipeline(source, backend, sinks, config, stats=stats, source_opened=True)
        got_term = _install_sigterm(pipeline)
        try:
            stats = pipeline.run()
        finally:
            _restore_sigterm(got_term)
    finally:
        backend.close()
    print(stats.format_summary(), flush=True)
    if args.stats_json:
        stats.write_json(args.stats_json)
        log.info("wrote %s", args.stats_json)
    reason = stats.meta.get("end_reason", "")
    if reason.startswith("capture error"):
        return 1
    return 130 if reason.startswith("interrupted") else 0


def _install_sigterm(pipeline: Any) -> Optional[Any]:
    """SIGTERM (systemd stop, docker stop) finishes the run cleanly like Ctrl-C: outputs finalized."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        pipeline.stop("terminated (SIGTERM)")

    return (signal.signal(signal.SIGTERM, handler),)


def _restore_sigterm(saved: Optional[Any]) -> None:
    if saved is not None:
        signal.signal(signal.SIGTERM, saved[0])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-run", description=HELP)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    add_arguments(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from edge.cli.main import run_verb

    args = build_parser().parse_args(argv)
    return run_verb(run, args)


if __name__ == "__main__":
    sys.exit(main())
