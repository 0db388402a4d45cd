"""How the loop runs inference for a backend and a source: parallel workers, threads, host priority.

On a CPU there are two ways to spend the cores on inference:

* **one frame at a time on every core** (one worker, ONNX Runtime's intra-op pool across all cores): the
  lowest latency per frame, but every parallel operator ends in a barrier across the cores, so a host
  stage (decode, letterbox, draw, encode) that holds one core stalls the whole operator. The host threads
  then run at a lower priority (``host_nice`` 10) so that inference preempts them;
* **several frames at once** (N workers, each inference on cores / N threads, frames put back in order
  before drawing): no barrier between the cores, so host work slots in beside inference instead of
  stretching it, and more frames per second, at the cost of a longer latency per frame. Host threads keep
  their normal priority here: a lowered thread that is descheduled while it holds Python's GIL would make
  the inference workers wait for it.

Measured on the bundled model, 2 cores (``benchmarks/RESULTS.md``, 15 interleaved rounds a side): one
worker over both cores runs end to end at 0.89 x the raw single-caller throughput, two single-threaded
workers at 0.98 x.

``plan_inference`` picks: a live source (camera, stream) -> one worker (latency first, the latest frame
only); a file, folder or finite ``test://`` source on an ONNX Runtime CPU session with at least 2 cores ->
2 workers with cores / 2 threads each (throughput first). TensorRT runs one inference at a time (one
execution context, one stream). Every choice can be forced (``--infer-workers``, ``--threads``,
``--host-nice``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge.errors import EdgeError
from edge.runtime.sources.gst import (
    DECODE_CHOICES,
    TARGETS,
    camera_pipeline,
    file_codec,
    file_pipeline,
    out_size_for,
    rtsp_options,
    rtsp_pipeline,
    software_equivalent,
)

PARALLEL_WORKERS = 2
SINGLE_WORKER_NICE = 10


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class InferencePlan:
    """workers: inference threads taking frames at once; threads: ONNX Runtime intra-op threads of the
    session (0: ONNX Runtime's default, every core); host_nice: nice increment of the host-stage threads;
    reason: why, for the log; decode_threads: FFmpeg decoder threads for a video file (1 where inference
    runs on the CPU: the fewest CPU cycles per frame; 0: FFmpeg's choice)."""

    workers: int
    threads: int
    host_nice: int
    reason: str
    decode_threads: int = 0

    def describe(self) -> str:
        threads = "all cores" if self.threads == 0 else f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        if self.workers == 1:
            work = f"1 frame at a time on {threads}"
        else:
            work = f"{self.workers} frames at once on {threads} each"
        return f"{work}, host threads at nice +{self.host_nice} ({self.reason})"


def plan_inference(
    backend: str,
    *,
    live: bool,
    concurrent: Optional[bool] = None,
    cores: Optional[int] = None,
    gpu: bool = False,
    workers: int = 0,
    threads: int = 0,
    host_nice: Optional[int] = None,
) -> InferencePlan:
    """The plan for ``backend`` (its name: "onnxruntime", "tensorrt"...) on a ``live`` or file-like source.

    ``concurrent``: the backend takes inference calls from several threads at once (``Backend.concurrent_infer``;
    default: every backend but "tensorrt"). ``gpu``: the session runs on a GPU provider (ONNX Runtime's
    CUDA). ``workers``/``threads`` 0 and ``host_nice`` None mean "choose"; given values are kept (and checked).
    """
    if concurrent is None:
        concurrent = backend != "tensorrt"
    if workers < 0:
        raise EdgeError(f"--infer-workers must be >= 0 (0: choose), found {workers}")
    if threads < 0:
        raise EdgeError(f"--threads must be >= 0 (0: all cores), found {threads}")
    if host_nice is not None and not 0 <= host_nice <= 19:
        raise EdgeError(f"--host-nice must be in [0, 19], found {host_nice}")
    cores = usable_cores() if cores is None else max(1, int(cores))
    if not concurrent:
        if workers > 1:
            why = ("one execution context and one stream; the GPU overlaps the host work already"
                   if backend == "tensorrt" else "it does not take concurrent calls")
            label = {"tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime"}.get(backend, backend)
            raise EdgeError(
                f"--infer-workers {workers}: the {label} backend runs one inference at a time ({why}); "
                "use --infer-workers 1"
            )
        n, t = 1, threads
        reason = "TensorRT: one execution context on the GPU" if backend == "tensorrt" else "one call at a time"
    elif workers:
        n = workers
        t = threads or (0 if n == 1 else max(1, cores // n))
        reason = "as asked"
    elif gpu:
        n, t, reason = 1, threads, "ONNX Runtime on the GPU"
    elif live:
        n, t, reason = 1, threads, "a live source, so every core on the newest frame for the lowest latency"
    elif cores < 2:
        n, t, reason = 1, threads, "one core"
    else:
        n = PARALLEL_WORKERS
        t = threads or max(1, cores // n)
        reason = f"a file-like source on {cores} cores, so frames side by side for throughput"
    nice = host_nice if host_nice is not None else (SINGLE_WORKER_NICE if n == 1 else 0)
    on_cpu = backend != "tensorrt" and not gpu
    return InferencePlan(workers=n, threads=t, host_nice=nice, reason=reason, decode_threads=1 if on_cpu else 0)




# -------------------------------------------------------------------------------------------------
# Decode path: GStreamer (hardware decode and scaling on a Jetson) or OpenCV (FFmpeg / V4L2 on the CPU)
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodePlan:
    """How a source is decoded. path: "gstreamer" (``pipeline`` opened through cv2.CAP_GSTREAMER),
    "opencv" (FFmpeg or V4L2 inside OpenCV, on the CPU) or "none" (generated frames, images); target:
    "jetson" (NVIDIA elements) or "software" (their software equivalents) on the GStreamer path;
    reason: why, for ``edge-run -v`` and the stats JSON."""

    path: str
    reason: str
    pipeline: Optional[Any] = None
    target: str = ""

    def describe(self) -> str:
        where = f" ({self.target} elements)" if self.target else ""
        return f"{self.path}{where}: {self.reason}"

    def as_dict(self) -> Dict[str, Any]:
        """For the stats JSON: the pipeline with its credentials masked."""
        return {"path": self.path, "target": self.target, "reason": self.reason,
                "pipeline": self.pipeline.redacted() if self.pipeline is not None else None}


def plan_decode(spec: Any, *, decode: str = "auto", target: Optional[str] = None,
                gstreamer: Optional[bool] = None, target_hw: Optional[Tuple[int, int]] = None,
                modes: Optional[List[Any]] = None) -> DecodePlan:
    """The decode path of ``spec`` (a ``SourceSpec``). ``decode``: auto | gstreamer | opencv (--decode).
    ``target``: "jetson" or "software" (None: "jetson" where NVIDIA's decoder element is installed, else
    "software"). ``gstreamer``: whether this OpenCV opens GStreamer pipelines (None: ask OpenCV).
    ``target_hw``: the network input (H, W) that ``nvvidconv`` scales to. ``modes``: a camera's modes
    (None: ask ``v4l2-ctl``). A V4L2 mode the camera lacks raises an error listing the ones it has."""
    from edge.runtime.sources.cameras import gstreamer_available, nvidia_decoder_available

    if decode not in DECODE_CHOICES:
        raise EdgeError(f"--decode {decode!r}: expected one of {', '.join(DECODE_CHOICES)}")
    if spec.kind in ("test", "images"):
        return DecodePlan("none", "generated frames" if spec.kind == "test" else "still images, read by OpenCV")
    if spec.kind == "csi":
        return DecodePlan("gstreamer", "csi:// always runs nvarguscamerasrc -> nvvidconv (ISP scaling)",
                          target="jetson")
    target = target or ("jetson" if nvidia_decoder_available() else "software")
    if target not in TARGETS:
        raise EdgeError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    # a mode the camera lacks is refused on every path, with the list of the modes it has
    mode = v4l2_mode(spec, modes) if spec.kind == "v4l2" else None
    if decode == "opencv":
        return DecodePlan("opencv", "--decode opencv")
    has_gst = gstreamer_available() if gstreamer is None else gstreamer
    if not has_gst:  # no pipeline to build: the files and cameras are not probed for one
        if decode == "gstreamer":
            raise EdgeError("--decode gstreamer: this OpenCV has no GStreamer (pip's opencv-python never does); "
                            "on a Jetson use JetPack's OpenCV (deploy/setup-jetson.sh), or use --decode opencv")
        return DecodePlan("opencv", "this OpenCV has no GStreamer (pip's opencv-python never does)")
    pipeline, why_not = _source_pipeline(spec, target_hw, mode)
    if pipeline is None:
        if decode == "gstreamer":
            raise EdgeError(f"--decode gstreamer: {spec} has no GStreamer pipeline here: {why_not}; "
                            "use --decode auto or opencv")
        return DecodePlan("opencv", why_not)
    if target == "jetson":
        return DecodePlan("gstreamer", "hardware decode (nvv4l2decoder) and scaling (nvvidconv) before the CPU",
                          pipeline, target)
    if decode == "gstreamer":
        return DecodePlan("gstreamer", "--decode gstreamer without NVIDIA's elements: software decoder and "
                          "videoscale", software_equivalent(pipeline), target)
    return DecodePlan("opencv", "no hardware decoder here (nvv4l2decoder not installed); --decode gstreamer "
                      "forces a software GStreamer pipeline")


def _source_pipeline(spec: Any, target_hw: Optional[Tuple[int, int]],
                     mode: Optional[Any]) -> Tuple[Optional[Any], str]:
    """(the Jetson pipeline for ``spec``, or None and why there is none); ``mode``: a V4L2 camera's mode
    (``v4l2_mode``; None where its modes are unknown)."""
    if spec.kind == "rtsp":
        if not spec.uri.lower().startswith(("rtsp://", "rtsps://")):
            return None, "only rtsp:// streams have a GStreamer pipeline (http, rtmp open through FFmpeg)"
        transport, latency, codec = rtsp_options(spec)
        out = out_size_for(spec, spec.size(), target_hw)
        return rtsp_pipeline(spec.path_for_stream(), codec=codec, out_size=out, latency_ms=latency,
                             transport=transport), ""
    if spec.kind == "v4l2":
        fmt = mode.format if mode is not None else spec.camera_format()
        size = (mode.width, mode.height) if mode is not None else spec.size()
        fps = mode.fps if mode is not None else spec.number("fps", 30.0)
        if fmt not in ("mjpeg", "h264"):
            return None, (f"a raw {fmt} camera mode: nothing to decode" if fmt else
                          "the camera's format is not known (v4l2-ctl missing): add ?format=mjpeg&size=WxH&fps=F")
        if size is None:
            return None, "the camera's size is not known (v4l2-ctl missing): add ?size=WxH"
        return camera_pipeline(spec.path, fmt, size, fps, out_size_for(spec, size, target_hw)), ""
    if spec.kind == "file":
        codec = file_codec(spec.path)
        if codec is None:
            return None, "not an H.264/H.265 file (or one OpenCV cannot probe): decoded by FFmpeg"
        try:
            return file_pipeline(spec.path, codec, out_size_for(spec, _video_size(spec.path), target_hw)), ""
        except EdgeError as exc:
            return None, str(exc)
    return None, f"{spec.kind} sources have no GStreamer pipeline"


def v4l2_mode(spec: Any, modes: Optional[List[Any]] = None) -> Optional[Any]:
    """The camera mode ``spec`` asks for (``?format=&size=&fps=``) among ``modes`` (None: ask v4l2-ctl);
    None where the modes cannot be read. Raises DataError listing the modes when the camera lacks it."""
    from edge.runtime.sources.camera_modes import camera_modes, pick_mode

    if modes is None:
        modes = camera_modes(spec.path) if Path(spec.path).exists() else None
    if not modes:
        return None
    fps = spec.number("fps", 0.0) or None
    return pick_mode(spec.path, modes, spec.camera_format(), spec.size(), fps)


def _video_size(path: str) -> Optional[Tuple[int, int]]:
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return (w, h) if w > 0 and h > 0 else None


__all__ = ["DecodePlan", "InferencePlan", "PARALLEL_WORKERS", "plan_decode", "plan_inference", "usable_cores",
           "v4l2_mode"]
