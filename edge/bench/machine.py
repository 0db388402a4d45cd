"""The machine a bench runs on: CPU model, cores, library versions, load average, and this process's CPU time
and resident memory (``RssSampler`` samples it through a run, ``rss_summary`` turns the samples into growth
and slope)."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np


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


__all__ = ["RssSampler", "cpu_model", "load_average", "machine_info", "process_cpu_s", "rss_mb",
           "rss_summary"]
