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
from typing import Optional

from edge.errors import EdgeError

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


__all__ = ["InferencePlan", "PARALLEL_WORKERS", "plan_inference", "usable_cores"]
