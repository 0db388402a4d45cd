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

Nothing here imports torch. ``run_bench`` returns a JSON-ready dict; ``edge.bench.report`` turns it into a
Markdown table and a PNG chart. ``run_command`` is the verb ``edge.cli.bench`` calls.

Modules: ``config`` (``BenchConfig``, ``BenchCase``), ``machine`` (CPU, load, CPU time, resident memory),
``clip`` (the input clip), ``backends`` (opening a model, its precision), ``measure`` (raw, raw parallel,
e2e and naive, and ``bench_case``), ``runner`` (``run_bench``, ``run_command``) and ``report``. This package
re-exports the public API below.
"""

from edge.bench.backends import default_backend_factory, onnx_precision
from edge.bench.clip import make_clip
from edge.bench.config import BenchCase, BenchConfig, FixedSizeError
from edge.bench.machine import RssSampler, load_average, machine_info, rss_mb, rss_summary
from edge.bench.measure import (
    bench_case,
    measure_e2e,
    measure_naive,
    measure_raw,
    measure_raw_parallel,
    plan_for,
)
from edge.bench.runner import run_bench, run_command

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
    "run_command",
]
