"""``edge bench``: raw backend throughput, the threaded ``edge-run`` loop and the naive loop, in one run.

For each *case* (one deploy model at one input size), on the same machine, model and input clip:

* **raw**: ``Backend.infer`` alone, back to back on the calling thread, on one preprocessed frame of the
  clip, on a session over every core (``threads``): the ceiling every loop is compared against (the
  issue's "raw throughput");
* **e2e**: the ``edge-run`` ``Pipeline`` (capture thread, preprocess, infer, postprocess, draw, sink) from
  the video file, with drawing on and the annotated video written to a temporary file, run as ``edge-run``
  runs a file: ``edge.runtime.plan`` decides its inference workers, their threads and the host priority
  (on a CPU with 2+ cores: 2 frames side by side, cores / 2 threads each);
* **raw parallel** (when the plan has several workers): ``Backend.infer`` alone on the e2e's own session
  from as many threads as the plan has workers, back to back: the ceiling of the e2e's configuration;
  ``raw_best_fps`` is the highest of raw, raw parallel and ORT defaults, the strictest ceiling;
* **naive**: ``naive_loop``, the same stages one after another in one thread (the TensorRT samples' loop),
  writing the same kind of video.

The three are measured ``repeats`` times, interleaved (the order rotates each round), so a neighbour's
load hits them alike; the document reports the median of each FPS and the median of the per-round ratios
``e2e/raw`` and ``e2e/naive``. Resident memory is sampled through the e2e runs: ``rss_growth_mb`` is the
growth after warm-up (the largest over the rounds; pool buffers and codec set-up are allocated during
warm-up), ``rss_slope_mb_per_1k`` its least-squares slope per 1,000 frames.

Without a source the bench writes its own clip first (``make_clip``: procedurally rendered blood-smear
frames from ``edge.synth`` when that is installed, else the ``test://`` pattern; mp4v in .mp4).

Nothing here imports torch. ``run_bench`` returns a JSON-ready dict; ``edge.bench_report`` turns it into a
Markdown table and a PNG chart. Only ``edge.cli.bench`` imports this module.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import DataError, EdgeError, ModelError
from edge.runtime.plan import InferencePlan, plan_inference

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
MODES = ("raw", "e2e", "naive")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".m4v", ".mov")

# (model path, input (height, width) or None for the model's own, ORT intra-op threads) -> open backend
BackendFactory = Callable[[Path, Optional[Tuple[int, int]], int], Any]


class FixedSizeError(ModelError):
    """A fixed-size graph was asked to run at another input size."""


@dataclass
class BenchConfig:
    """What one bench run measures.

    frames: frames per e2e and naive run (the clip has at least this many when the bench writes it).
    repeats: rounds of (raw, e2e, naive), interleaved; medians are reported.
    threads: ONNX Runtime intra-op threads of raw and naive, and of each e2e worker when given (0: all
        cores for raw and naive; the plan's choice for e2e).
    infer_workers: the e2e's inference workers (0: ``edge.runtime.plan`` chooses, as ``edge-run`` does).
    raw_iterations: inference calls per raw measurement (0: as many as ``frames``).
    warmup: backend warm-up calls before each measurement.
    queue_size: the pipeline's inter-stage queue capacity (``edge-run --queue-size``).
    host_nice: the pipeline's host-stage priority drop (``PipelineConfig.host_nice``; None: the plan's).
    draw: annotate frames (boxes, labels, FPS) in e2e and naive.
    video_suffix: container of the annotated videos e2e and naive write: .avi (MJPEG, JPEG-encoded by
        libjpeg-turbo and muxed by FFmpeg: the cheapest to write, ``VideoFileSink``) or .mp4 (MPEG-4 part 2).
    clip_size: (width, height) of the clip the bench writes when no source is given.
    clip_fps: its nominal frame rate (the loops are not paced by it: a file is read as fast as it goes).
    clip_unique: distinct frames rendered for the clip (repeated cyclically up to ``frames``), so a
        10,000-frame clip costs the rendering of a few hundred.
    rss_interval_s: resident-memory sampling period during e2e runs.
    raw_reference: for ONNX models, also time ONNX Runtime alone with its own defaults (all cores,
        spinning threads: "ONNX Runtime alone" as a user would run it) in each round, a second ceiling
        beside the raw figure of the session the loops use (spinning off, ``threads``).
    """

    frames: int = 300
    repeats: int = 3
    threads: int = 0
    raw_iterations: int = 0
    warmup: int = 5
    queue_size: int = 2
    host_nice: Optional[int] = None
    infer_workers: int = 0
    draw: bool = True
    video_suffix: str = ".avi"
    clip_size: Tuple[int, int] = (640, 480)
    clip_fps: float = 30.0
    clip_unique: int = 150
    rss_interval_s: float = 0.2
    raw_reference: bool = True

    def validate(self) -> "BenchConfig":
        if self.frames < 2:
            raise EdgeError(f"--frames must be >= 2, found {self.frames}")
        if self.repeats < 1:
            raise EdgeError(f"--repeats must be >= 1, found {self.repeats}")
        if self.threads < 0:
            raise EdgeError(f"--threads must be >= 0 (0: all cores), found {self.threads}")
        if self.raw_iterations < 0 or self.warmup < 0:
            raise EdgeError("raw_iterations and warmup must be >= 0")
        if self.queue_size < 1:
            raise EdgeError(f"--queue-size must be >= 1, found {self.queue_size}")
        if self.host_nice is not None and not 0 <= self.host_nice <= 19:
            raise EdgeError(f"--host-nice must be in [0, 19], found {self.host_nice}")
        if self.infer_workers < 0:
            raise EdgeError(f"--infer-workers must be >= 0 (0: choose), found {self.infer_workers}")
        if self.video_suffix not in VIDEO_SUFFIXES:
            raise EdgeError(f"video suffix {self.video_suffix!r} is not one of {VIDEO_SUFFIXES}")
        w, h = self.clip_size
        if w < 16 or h < 16:
            raise EdgeError(f"clip size {w}x{h} is too small; expected at least 16x16")
        if self.clip_fps <= 0 or self.clip_unique < 1 or self.rss_interval_s <= 0:
            raise EdgeError("clip_fps, clip_unique and rss_interval_s must be positive")
        return self

    @property
    def iterations(self) -> int:
        return self.raw_iterations or self.frames


@dataclass
class BenchCase:
    """One model at one input size. ``imgsz`` (height, width) None: the model's own size."""

    model: Path
    imgsz: Optional[Tuple[int, int]] = None

    def label(self) -> str:
        size = f"{self.imgsz[0]}x{self.imgsz[1]}" if self.imgsz else "native"
        return f"{self.model.name}@{size}"


# -- machine and memory ------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> Optional[List[float]]:
    """(1, 5, 15)-minute load averages, or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(threads: int = 0) -> Dict[str, Any]:
    """Where the numbers come from: CPU, cores, library versions, ORT threads, load, date (UTC)."""
    info: Dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ort_threads": threads if threads else "default (all cores)",
        "load_average": load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(ImportError):
        import cv2

        info["opencv"] = cv2.__version__
        info["opencv_threads"] = cv2.getNumThreads()
    return info


def process_cpu_s() -> float:
    """User + system CPU seconds of this process so far (all threads, ONNX Runtime's included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    """This process's resident set size in MB (``/proc/self/statm``; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


class RssSampler:
    """Samples (frames written, RSS MB) every ``interval_s`` in a thread while a run goes on.

    ``frames_fn`` returns the frames written so far (e.g. ``lambda: stats.counters.written``).
    """

    def __init__(self, frames_fn: Callable[[], int], interval_s: float = 0.2) -> None:
        self.frames_fn = frames_fn
        self.interval_s = float(interval_s)
        self.samples: List[Tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-bench-rss", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((int(self.frames_fn()), rss_mb()))
            if self._stop.wait(self.interval_s):
                break

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.samples.append((int(self.frames_fn()), rss_mb()))

    def summary(self, warm_frames: int) -> Dict[str, float]:
        """Growth after the first ``warm_frames`` frames (MB), slope (MB per 1,000 frames), start/peak/end."""
        return rss_summary(self.samples, warm_frames)


def rss_summary(samples: Sequence[Tuple[int, float]], warm_frames: int) -> Dict[str, float]:
    """``samples``: (frames written, RSS MB) in time order. Growth is measured from the first sample at
    or after ``warm_frames`` (the pipeline's buffers, the codec and ONNX Runtime's arenas are set up by
    then) to the last; the slope is a least-squares fit over the same samples."""
    if not samples:
        return {"rss_start_mb": 0.0, "rss_baseline_mb": 0.0, "rss_end_mb": 0.0, "rss_peak_mb": 0.0,
                "rss_growth_mb": 0.0, "rss_slope_mb_per_1k": 0.0}
    after = [s for s in samples if s[0] >= warm_frames] or [samples[-1]]
    base = after[0][1]
    end = samples[-1][1]
    slope = 0.0
    frames = np.array([s[0] for s in after], np.float64)
    if len(after) >= 3 and float(np.ptp(frames)) > 0:
        mb = np.array([s[1] for s in after], np.float64)
        slope = float(np.polyfit(frames, mb, 1)[0]) * 1000.0
    return {
        "rss_start_mb": round(samples[0][1], 2),
        "rss_baseline_mb": round(base, 2),
        "rss_end_mb": round(end, 2),
        "rss_peak_mb": round(max(s[1] for s in samples), 2),
        "rss_growth_mb": round(end - base, 2),
        "rss_slope_mb_per_1k": round(slope, 3),
    }


# -- input clip --------------------------------------------------------------------------------------


def _clip_frames(size: Tuple[int, int], unique: int) -> Iterator[np.ndarray]:
    """``unique`` distinct BGR frames (width, height = ``size``): blood-smear renders, else test patterns."""
    w, h = size
    try:
        from edge.synth import iter_smear_frames
    except ImportError:
        iter_smear_frames = None  # type: ignore[assignment]
    if iter_smear_frames is not None:
        yield from iter_smear_frames(0, w, h, frames=unique)
        return
    from edge.runtime.sources import CaptureStatus, TestPatternSource, parse_source

    src = TestPatternSource(parse_source(f"test://{w}x{h}?frames={unique}"))
    src.open()
    try:
        while True:
            status, frame = src.read()
            if status is not CaptureStatus.FRAME or frame is None:
                return
            yield frame
    finally:
        src.close()


def make_clip(path: Path, frames: int, *, size: Tuple[int, int] = (640, 480), fps: float = 30.0,
              unique: int = 150) -> Path:
    """Write a ``frames``-frame clip (uint8 BGR ``size`` = (width, height), mp4v for .mp4, MJPG for .avi)
    to ``path``: ``unique`` rendered frames repeated cyclically. Returns ``path``."""
    import cv2

    path = Path(path)
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), tuple(size))
    if not writer.isOpened():
        raise DataError(
            f"OpenCV cannot write a {path.suffix} clip ({fourcc}) to {path}; pass --source with an existing "
            "video, or check that this OpenCV has FFMPEG (cv2.getBuildInformation())"
        )
    t0 = time.perf_counter()
    try:
        rendered = list(_clip_frames(size, max(1, min(unique, frames))))
        for i in range(frames):
            writer.write(rendered[i % len(rendered)])
    finally:
        writer.release()
    log.info("wrote the bench clip %s (%d frames, %dx%d, %d distinct) in %.1f s", path, frames, size[0],
             size[1], len(rendered), time.perf_counter() - t0)
    return path


# -- backends ----------------------------------------------------------------------------------------


QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def precision_of(backend: Any) -> str:
    """fp32 / fp16 / int8: the sidecar's ``precision`` (``edge quantize``, ``edge build``), else what an ONNX
    graph holds (Q/DQ or integer ops: int8; float16 weights: fp16; otherwise fp32)."""
    info = getattr(backend, "info", None)
    sidecar = dict(getattr(info, "sidecar", None) or {})
    precision = sidecar.get("precision")
    if isinstance(precision, str) and precision:
        return precision.lower()
    path = getattr(info, "path", None)
    if path is not None and Path(path).suffix.lower() == ".onnx":
        return onnx_precision(Path(path))
    return "fp32"


def onnx_precision(path: Path) -> str:
    """int8 / fp16 / fp32 from the graph itself (``onnx`` imported here; fp32 when it is missing)."""
    try:
        import onnx
    except ImportError:
        return "fp32"
    model = onnx.load(str(path), load_external_data=False)
    nodes = list(model.graph.node)
    for fn in model.functions:
        nodes.extend(fn.node)
    if any(n.op_type in QDQ_OPS for n in nodes):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def default_backend_factory(model: Path, imgsz: Optional[Tuple[int, int]], threads: int) -> Any:
    """Open ``model`` (a deploy ONNX or a TensorRT engine) for inference at ``imgsz``.

    ONNX: ONNX Runtime with ``threads`` intra-op threads and spinning off (as ``edge-run`` runs it). A graph
    with a free height/width (``edge export --dynamic-hw``) runs at ``imgsz``; a static graph only at its
    own size. Engines: the TensorRT backend (their size is fixed at build time).
    """
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"model {model} not found")
    if model.suffix.lower() in ENGINE_SUFFIXES:
        from edge.runtime.tensorrt_backend import TensorRTBackend

        backend = TensorRTBackend(model)
    else:
        from edge.artifacts import read_sidecar
        from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions

        sidecar = read_sidecar(model, required=False) or {}
        if imgsz is not None:
            sidecar = dict(sidecar, input_size=[int(imgsz[0]), int(imgsz[1])])
        backend = OnnxRuntimeBackend(model, OrtOptions(threads=threads, spin=False), sidecar=sidecar)
    if imgsz is not None:
        fmt = backend.input_format
        if (fmt.height, fmt.width) != tuple(imgsz):
            backend.close()
            raise FixedSizeError(
                f"{model.name} has a fixed {fmt.height}x{fmt.width} input; --imgsz {imgsz[0]}x{imgsz[1]} needs a "
                f"graph exported at that size (`edge export CKPT --imgsz {imgsz[0]}x{imgsz[1]}` + `edge surgery`) "
                "or one with a free size (`edge export --dynamic-hw`)"
            )
    return backend


# -- measurements ------------------------------------------------------------------------------------


def _latency_summary(samples_s: Sequence[float]) -> Dict[str, float]:
    if not samples_s:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    a = np.asarray(samples_s, np.float64) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def first_frame(source_uri: str) -> np.ndarray:
    """The first frame of ``source_uri`` (uint8 [H, W, 3] BGR)."""
    from edge.runtime.sources import CaptureStatus, open_source, parse_source

    src = open_source(parse_source(source_uri))
    src.open()
    try:
        status, frame = src.read()
    finally:
        src.close()
    if status is not CaptureStatus.FRAME or frame is None:
        raise DataError(f"{source_uri}: no frame could be read ({status.value})")
    return frame


def measure_raw(backend: Any, frame: np.ndarray, iterations: int, warmup: int = 5) -> Dict[str, Any]:
    """``iterations`` inference calls back to back on ``frame`` preprocessed once; FPS and call latency."""
    from edge.model_input import Preprocessor

    pre = Preprocessor(backend.input_format)
    batch = pre.new_buffer()
    pre(frame, batch)
    backend.bind_thread()
    try:
        for _ in range(max(0, warmup)):
            backend.infer(batch)
        lat = np.empty(int(iterations), np.float64)
        c0 = process_cpu_s()
        t0 = time.perf_counter()
        prev = t0
        for i in range(int(iterations)):
            backend.infer(batch)
            now = time.perf_counter()
            lat[i] = now - prev
            prev = now
        elapsed = prev - t0
        cpu = process_cpu_s() - c0
    finally:
        backend.release_thread()
    return {"fps": round(iterations / elapsed, 3) if elapsed > 0 else 0.0, "iterations": int(iterations),
            "elapsed_s": round(elapsed, 4), "latency_ms": _latency_summary(lat.tolist()),
            "cpu_ms_per_frame": round(cpu / iterations * 1000.0, 3)}


def measure_raw_parallel(backend: Any, frame: np.ndarray, iterations: int, workers: int, warmup: int = 5
                         ) -> Dict[str, Any]:
    """``iterations`` inference calls in all, from ``workers`` threads at once (each with its own input),
    back to back: the throughput ceiling of a pipeline with that many inference workers."""
    from edge.model_input import Preprocessor

    if workers < 2 or not getattr(backend, "concurrent_infer", False):
        raise EdgeError(f"{backend.describe()}: raw parallel needs >= 2 workers and a backend with concurrent_infer")
    pre = Preprocessor(backend.input_format)
    batches = []
    for _ in range(workers):
        batches.append(pre.new_buffer())
        pre(frame, batches[-1])
    share = [int(iterations) // workers + (1 if i < int(iterations) % workers else 0) for i in range(workers)]
    start = threading.Barrier(workers + 1)
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            backend.bind_thread()
            try:
                for _ in range(max(0, warmup)):
                    backend.infer(batches[i])
                start.wait()
                for _ in range(share[i]):
                    backend.infer(batches[i])
            finally:
                backend.release_thread()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=work, args=(i,), name=f"edge-bench-raw-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    c0 = process_cpu_s()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = process_cpu_s() - c0
    if errors:
        raise errors[0]
    return {"fps": round(iterations / elapsed, 3) if elapsed > 0 else 0.0, "iterations": int(iterations),
            "workers": int(workers), "elapsed_s": round(elapsed, 4),
            "cpu_ms_per_frame": round(cpu / iterations * 1000.0, 3)}


def _video_sink(path: Path, fps: float) -> Any:
    from edge.runtime.sinks import VideoFileSink

    return VideoFileSink(path, fps=fps)


def measure_e2e(backend: Any, source_uri: str, frames: int, out_video: Path, config: BenchConfig,
                plan: Optional[InferencePlan] = None) -> Dict[str, Any]:
    """The ``edge-run`` Pipeline from ``source_uri`` for ``frames`` frames, drawing (per ``config``) and
    writing ``out_video``, with ``plan``'s inference workers, host priority and decoder threads (default: one
    worker, host threads at nice +10, FFmpeg's decoder threads); returns the run's statistics plus
    resident-memory figures."""
    from edge.runtime.pipeline import Pipeline, PipelineConfig
    from edge.runtime.sources import open_source, parse_source
    from edge.runtime.stats import RunStats

    source = open_source(parse_source(source_uri), decode_threads=plan.decode_threads if plan is not None else 0)
    source.open()
    stats = RunStats()
    workers = plan.workers if plan is not None else 1
    nice = plan.host_nice if plan is not None else (10 if config.host_nice is None else config.host_nice)
    pcfg = PipelineConfig(queue_size=config.queue_size, draw=config.draw, max_frames=frames, log_every_s=0.0,
                          warmup=config.warmup, host_nice=nice, infer_workers=workers)
    try:
        sink = _video_sink(out_video, source.fps or config.clip_fps)
        try:
            pipeline = Pipeline(source, backend, [sink], pcfg, stats=stats, source_opened=True)
        except BaseException:
            sink.close()
            raise
    except BaseException:
        source.close()
        raise
    # the pipeline closes the source (capture thread) and the sink (end of run), also on errors
    with RssSampler(lambda: stats.counters.written, config.rss_interval_s) as rss:
        c0 = process_cpu_s()
        pipeline.run()
        cpu = process_cpu_s() - c0
    out = stats.to_dict()
    out["cpu_ms_per_frame"] = round(cpu / max(1, stats.counters.written) * 1000.0, 3)
    out.update(rss.summary(warm_frames=min(100, max(1, frames // 10))))
    out["fps"] = out["e2e_fps"]
    return out


def measure_naive(backend: Any, source_uri: str, frames: int, out_video: Path, config: BenchConfig
                  ) -> Dict[str, Any]:
    """``naive_loop``: capture, preprocess, infer, postprocess, draw and write one frame at a time."""
    from edge.runtime.pipeline import naive_loop
    from edge.runtime.sources import open_source, parse_source

    source = open_source(parse_source(source_uri))
    source.open()
    sink = _video_sink(out_video, source.fps or config.clip_fps)
    try:
        backend.bind_thread()
        try:
            backend.warmup(config.warmup)
        finally:
            backend.release_thread()
        c0 = process_cpu_s()
        stats = naive_loop(source, backend, [sink], max_frames=frames, draw=config.draw)
        cpu = process_cpu_s() - c0
    finally:
        sink.close()
        source.close()
    out = stats.to_dict()
    out["cpu_ms_per_frame"] = round(cpu / max(1, stats.counters.written) * 1000.0, 3)
    out["fps"] = out["e2e_fps"]
    return out


def _median(values: Sequence[float]) -> float:
    return round(float(statistics.median(values)), 3) if values else 0.0


def _stage_table(stages: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    return {name: {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "mean_ms": s["mean_ms"]}
            for name, s in stages.items()}


def plan_for(backend: Any, config: BenchConfig) -> InferencePlan:
    """The inference plan ``edge-run`` would use for ``backend`` on a file source, per ``config``."""
    providers = getattr(backend, "providers", None) or ["CPUExecutionProvider"]
    return plan_inference(
        getattr(backend, "name", "backend"), live=False, concurrent=bool(getattr(backend, "concurrent_infer", False)),
        gpu=providers[0] != "CPUExecutionProvider", workers=config.infer_workers, threads=config.threads,
        host_nice=config.host_nice,
    )


def bench_case(case: BenchCase, source_uri: str, config: BenchConfig, workdir: Path,
               backend_factory: BackendFactory = default_backend_factory) -> Dict[str, Any]:
    """Raw, e2e and naive on one case, ``config.repeats`` interleaved rounds; medians and ratios.

    raw and naive run on a session with ``config.threads`` (0: every core); e2e on the session its
    inference plan asks for (the same one when the threads agree), raw parallel on that one too.
    """
    backend = backend_factory(case.model, case.imgsz, config.threads)
    e2e_backend = backend
    reference = None
    try:
        fmt = backend.input_format
        frame = first_frame(source_uri)
        plan = plan_for(backend, config)
        if plan.threads != config.threads:
            e2e_backend = backend_factory(case.model, case.imgsz, plan.threads)
        log.info("%s e2e inference: %s", case.label(), plan.describe())
        if config.raw_reference and getattr(backend, "name", "") == "onnxruntime":
            from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions

            reference = OnnxRuntimeBackend(backend.info.path, OrtOptions(threads=0, spin=True),
                                           sidecar=dict(backend.info.sidecar))
        rounds: List[Dict[str, Any]] = []
        details: Dict[str, List[Dict[str, Any]]] = {m: [] for m in MODES}
        for r in range(config.repeats):
            order = MODES[r % 3:] + MODES[:r % 3]
            got: Dict[str, Dict[str, Any]] = {}
            for mode in order:
                if mode == "raw":
                    got[mode] = measure_raw(backend, frame, config.iterations, config.warmup)
                else:
                    video = workdir / f"{mode}{config.video_suffix}"
                    if mode == "e2e":
                        got[mode] = measure_e2e(e2e_backend, source_uri, config.frames, video, config, plan)
                    else:
                        got[mode] = measure_naive(backend, source_uri, config.frames, video, config)
                    with contextlib.suppress(OSError):
                        video.unlink()
                details[mode].append(got[mode])
            raw, e2e, naive = (got[m]["fps"] for m in MODES)
            ref = measure_raw(reference, frame, config.iterations, config.warmup)["fps"] if reference else None
            par = (measure_raw_parallel(e2e_backend, frame, config.iterations, plan.workers, config.warmup)["fps"]
                   if plan.workers > 1 else None)
            best = max(v for v in (raw, ref, par) if v)
            rounds.append({
                "order": list(order),
                "raw_fps": raw, "e2e_fps": e2e, "naive_fps": naive,
                "raw_ort_defaults_fps": ref,
                "raw_parallel_fps": par,
                "raw_best_fps": best,
                "e2e_over_raw_ort_defaults": round(e2e / ref, 4) if ref else None,
                "e2e_over_raw_parallel": round(e2e / par, 4) if par else None,
                "e2e_over_raw_best": round(e2e / best, 4) if best else 0.0,
                "e2e_steady_fps": got["e2e"]["steady_fps"],
                "e2e_over_raw": round(e2e / raw, 4) if raw else 0.0,
                "e2e_over_naive": round(e2e / naive, 4) if naive else 0.0,
                "naive_over_raw": round(naive / raw, 4) if raw else 0.0,
                "rss_growth_mb": got["e2e"]["rss_growth_mb"],
                "cpu_ms_per_frame": {m: got[m]["cpu_ms_per_frame"] for m in MODES},
                "load_average": load_average(),
            })
            log.info("%s round %d/%d: raw %.1f FPS, e2e %.1f FPS (%.2fx raw, %.2fx the best ceiling %.1f), "
                     "naive %.1f FPS", case.label(), r + 1, config.repeats, raw, e2e, rounds[-1]["e2e_over_raw"],
                     rounds[-1]["e2e_over_raw_best"], best, naive)
        # the round whose e2e FPS is the median supplies the stage latencies
        mid = sorted(range(len(rounds)), key=lambda i: rounds[i]["e2e_fps"])[len(rounds) // 2]
        e2e_mid, naive_mid, raw_mid = details["e2e"][mid], details["naive"][mid], details["raw"][mid]
        frames_out = [d["frames"]["written"] for d in details["e2e"]]

        def median_of(key: str) -> Optional[float]:
            values = [r[key] for r in rounds if r[key] is not None]
            return _median(values) if values else None

        return {
            "model": str(case.model),
            "model_name": case.model.name,
            "precision": precision_of(backend),
            "input": [fmt.height, fmt.width],
            "input_layout": fmt.layout,
            "backend": backend.describe(),
            "e2e_backend": e2e_backend.describe(),
            "inference_plan": asdict(plan),
            "raw_fps": _median([r["raw_fps"] for r in rounds]),
            "e2e_fps": _median([r["e2e_fps"] for r in rounds]),
            "naive_fps": _median([r["naive_fps"] for r in rounds]),
            "e2e_steady_fps": _median([r["e2e_steady_fps"] for r in rounds]),
            "e2e_over_raw": _median([r["e2e_over_raw"] for r in rounds]),
            "e2e_over_naive": _median([r["e2e_over_naive"] for r in rounds]),
            "naive_over_raw": _median([r["naive_over_raw"] for r in rounds]),
            "raw_ort_defaults_fps": median_of("raw_ort_defaults_fps"),
            "e2e_over_raw_ort_defaults": median_of("e2e_over_raw_ort_defaults"),
            "raw_parallel_fps": median_of("raw_parallel_fps"),
            "e2e_over_raw_parallel": median_of("e2e_over_raw_parallel"),
            "raw_best_fps": _median([r["raw_best_fps"] for r in rounds]),
            "e2e_over_raw_best": _median([r["e2e_over_raw_best"] for r in rounds]),
            "rss_growth_mb": max(r["rss_growth_mb"] for r in rounds),
            "cpu_ms_per_frame": {m: _median([r["cpu_ms_per_frame"][m] for r in rounds]) for m in MODES},
            "rss": {k: v for k, v in e2e_mid.items() if k.startswith("rss_")},
            "frames": min(frames_out),
            "raw_latency_ms": raw_mid["latency_ms"],
            "stages_ms": _stage_table(e2e_mid.get("stages_ms", {})),
            "glass_to_glass_ms": e2e_mid.get("glass_to_glass_ms", {}),
            "naive_stages_ms": _stage_table(naive_mid.get("stages_ms", {})),
            "naive_glass_to_glass_ms": naive_mid.get("glass_to_glass_ms", {}),
            "detections_per_frame": round(e2e_mid["detections"] / max(1, e2e_mid["frames"]["written"]), 2),
            "rounds": rounds,
        }
    finally:
        backend.close()
        if e2e_backend is not backend:
            e2e_backend.close()
        if reference is not None:
            reference.close()


def run_bench(cases: Sequence[BenchCase], config: Optional[BenchConfig] = None, source: Optional[str] = None,
              *, backend_factory: BackendFactory = default_backend_factory,
              workdir: Optional[Path] = None) -> Dict[str, Any]:
    """Bench every case on one source (the bench's own clip when ``source`` is None).

    Returns the JSON document: the first case's figures at the top level (``raw_fps``, ``e2e_fps``,
    ``naive_fps``, ``rss_growth_mb``, ratios, ``stages_ms``...), every case under ``cases``, and
    ``machine``, ``source`` and ``config``.
    """
    config = (config or BenchConfig()).validate()
    if not cases:
        raise EdgeError("nothing to bench: pass a model (or install the bundled one)")
    load_before = load_average()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-bench-")))
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        if source is None:
            clip = make_clip(workdir / "clip.mp4", config.frames, size=config.clip_size, fps=config.clip_fps,
                             unique=config.clip_unique)
            source_uri = str(clip)
            source_info: Dict[str, Any] = {"uri": "generated", "kind": "file",
                                           "generated": {"size": list(config.clip_size), "fps": config.clip_fps,
                                                         "frames": config.frames, "codec": "mp4v",
                                                         "distinct_frames": min(config.clip_unique, config.frames)}}
        else:
            from edge.runtime.sources import parse_source

            spec = parse_source(source)
            if spec.live:
                raise EdgeError(
                    f"--source {source} is a live source; the bench compares loops on the same frames, so it needs "
                    "a video file, an image folder or a finite test:// pattern (test://WxH?frames=N)"
                )
            if spec.kind == "test" and not spec.params.get("frames"):
                raise EdgeError("--source test:// must be finite for a bench: add ?frames=N (N >= --frames)")
            source_uri = source
            source_info = {"uri": source, "kind": spec.kind}
        frame = first_frame(source_uri)
        source_info["frame_size"] = [int(frame.shape[1]), int(frame.shape[0])]
        results: List[Dict[str, Any]] = []
        skipped: List[Dict[str, str]] = []
        for c in cases:
            try:
                results.append(bench_case(c, source_uri, config, workdir, backend_factory))
            except FixedSizeError as exc:
                if len(cases) == 1:
                    raise
                log.warning("skipping %s: %s", c.label(), exc)
                skipped.append({"case": c.label(), "reason": str(exc)})
        if not results:
            raise FixedSizeError("no case could run: " + "; ".join(s["reason"] for s in skipped))
    machine = machine_info(config.threads)
    machine["load_average_before"] = load_before
    doc: Dict[str, Any] = {}
    first = results[0]
    for key in ("raw_fps", "e2e_fps", "naive_fps", "rss_growth_mb", "e2e_steady_fps", "e2e_over_raw",
                "e2e_over_naive", "naive_over_raw", "raw_ort_defaults_fps", "e2e_over_raw_ort_defaults",
                "raw_parallel_fps", "e2e_over_raw_parallel", "raw_best_fps", "e2e_over_raw_best", "inference_plan",
                "cpu_ms_per_frame", "raw_latency_ms", "stages_ms", "naive_stages_ms", "glass_to_glass_ms", "model",
                "precision", "input"):
        doc[key] = first[key]
    doc.update({
        "machine": machine,
        "source": source_info,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "cases": results,
        "skipped": skipped,
    })
    return doc


__all__ = [
    "BenchCase",
    "BenchConfig",
    "FixedSizeError",
    "RssSampler",
    "bench_case",
    "default_backend_factory",
    "load_average",
    "machine_info",
    "make_clip",
    "onnx_precision",
    "measure_e2e",
    "measure_naive",
    "measure_raw",
    "measure_raw_parallel",
    "plan_for",
    "rss_mb",
    "rss_summary",
    "run_bench",
]
