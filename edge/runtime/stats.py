"""Run statistics: end-to-end FPS, per-stage latency p50/p99, glass-to-glass latency, frame counters.

All times are ``time.perf_counter()`` seconds internally and milliseconds in reports. Every tracker is a
fixed-size ring (no allocation per sample); each is written by one stage thread only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

STAGES = ("capture", "preprocess", "infer", "postprocess", "draw", "sink")


class LatencyTracker:
    """The last ``capacity`` latencies of one stage (seconds in, milliseconds out)."""

    def __init__(self, capacity: int = 8192) -> None:
        self._buf = np.zeros(int(capacity), np.float64)
        self._n = 0
        self._total = 0.0
        self._max = 0.0

    def add(self, seconds: float) -> None:
        self._buf[self._n % self._buf.shape[0]] = seconds
        self._n += 1
        self._total += seconds
        if seconds > self._max:
            self._max = seconds

    @property
    def count(self) -> int:
        return self._n

    def percentile(self, q: float) -> float:
        """q in [0, 100] over the retained window, in milliseconds; 0.0 with no samples."""
        n = min(self._n, self._buf.shape[0])
        if n == 0:
            return 0.0
        return float(np.percentile(self._buf[:n], q) * 1000.0)

    def summary(self) -> Dict[str, float]:
        return {
            "count": self._n,
            "mean_ms": round(self._total / self._n * 1000.0, 3) if self._n else 0.0,
            "p50_ms": round(self.percentile(50), 3),
            "p99_ms": round(self.percentile(99), 3),
            "max_ms": round(self._max * 1000.0, 3),
        }


class FpsMeter:
    """Frames per second over the last ``window`` frames (for the overlay and periodic logs)."""

    def __init__(self, window: int = 30) -> None:
        self._t = np.zeros(max(2, int(window)), np.float64)
        self._n = 0

    def tick(self, now: Optional[float] = None) -> None:
        self._t[self._n % self._t.shape[0]] = time.perf_counter() if now is None else now
        self._n += 1

    @property
    def fps(self) -> float:
        n = min(self._n, self._t.shape[0])
        if n < 2:
            return 0.0
        newest = self._t[(self._n - 1) % self._t.shape[0]]
        oldest = self._t[(self._n - n) % self._t.shape[0]]
        span = newest - oldest
        return (n - 1) / span if span > 0 else 0.0


@dataclass
class Counters:
    """Frames counted at each point. ``dropped``: stale live frames replaced before the pipeline took them.
    ``discarded``: frames captured but in flight when the run stopped (a frame a live source delivered
    after the last one taken, frames queued before inference when a run is stopped or aborted), so that
    ``captured == inferred + dropped + discarded`` once the run is over. Counters written by more than
    one thread go through ``add``. ``invalid_dropped``: detections the backend dropped as invalid (NaN boxes,
    scores outside [0, 1], classes outside the class list: ``edge.runtime.backend.drop_invalid``)."""

    captured: int = 0
    inferred: int = 0
    dropped: int = 0
    discarded: int = 0
    written: int = 0
    detections: int = 0
    capture_timeouts: int = 0
    capture_errors: int = 0
    reopens: int = 0
    invalid_dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (thread-safe)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


@dataclass
class RunStats:
    """Everything measured in one run; ``to_dict`` is the ``--stats-json`` document."""

    stages: Dict[str, LatencyTracker] = field(default_factory=lambda: {s: LatencyTracker() for s in STAGES})
    glass_to_glass: LatencyTracker = field(default_factory=LatencyTracker)
    counters: Counters = field(default_factory=Counters)
    fps_meter: FpsMeter = field(default_factory=FpsMeter)
    started: Optional[float] = None
    first_out: Optional[float] = None
    last_out: Optional[float] = None
    stopped: Optional[float] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    output_errors: List[Dict[str, Any]] = field(default_factory=list)
    streams: List[Dict[str, Any]] = field(default_factory=list)  # per-stream figures of a multi-stream run
    #: the highest score seen and the thresholds (``edge.runtime.score_watch.ScoreWatch.to_dict``)
    scores: Dict[str, Any] = field(default_factory=lambda: {"max_score": None, "score_threshold": None})

    def output_failed(self, output: str, exc: Any) -> None:
        """Record an output that failed (``exc``: an ``edge.errors.OutputError``): its sink, path, cause."""
        self.output_errors.append({"output": output, "path": getattr(exc, "path", ""),
                                   "cause": getattr(exc, "cause", type(exc).__name__), "error": str(exc)})

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.stopped = time.perf_counter()

    def frame_out(self, capture_ts: float, now: Optional[float] = None) -> None:
        """A frame left the last stage: count it, time glass-to-glass (capture -> sink)."""
        now = time.perf_counter() if now is None else now
        if self.first_out is None:
            self.first_out = now
        self.last_out = now
        self.counters.written += 1
        self.glass_to_glass.add(now - capture_ts)
        self.fps_meter.tick(now)

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        end = self.stopped if self.stopped is not None else time.perf_counter()
        return max(0.0, end - self.started)

    @property
    def e2e_fps(self) -> float:
        """Frames out per second of wall time, start to stop (includes warm-up and pipeline fill)."""
        return self.counters.written / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def steady_fps(self) -> float:
        """Frames out per second between the first and the last frame out (pipeline full)."""
        if self.first_out is None or self.last_out is None or self.counters.written < 2:
            return 0.0
        span = self.last_out - self.first_out
        return (self.counters.written - 1) / span if span > 0 else 0.0

    def to_dict(self) -> Dict[str, Any]:
        c = self.counters
        return {
            "frames": {
                "captured": c.captured,
                "inferred": c.inferred,
                "dropped": c.dropped,
                "discarded": c.discarded,
                "written": c.written,
                "capture_timeouts": c.capture_timeouts,
                "capture_errors": c.capture_errors,
                "reopens": c.reopens,
            },
            "detections": c.detections,
            "detections_invalid_dropped": c.invalid_dropped,
            **self.scores,
            "elapsed_s": round(self.elapsed, 4),
            "e2e_fps": round(self.e2e_fps, 3),
            "steady_fps": round(self.steady_fps, 3),
            "stages_ms": {name: t.summary() for name, t in self.stages.items() if t.count},
            "glass_to_glass_ms": self.glass_to_glass.summary(),
            "output_errors": [dict(e) for e in self.output_errors],
            **({"streams": [dict(st) for st in self.streams]} if self.streams else {}),
            **({"meta": self.meta} if self.meta else {}),
        }

    def write_json(self, path: Union[str, Path]) -> Path:
        """Write ``to_dict`` atomically (``edge.errors.OutputError`` when the disk refuses it)."""
        from edge.artifacts import atomic_write_json

        atomic_write_json(path, self.to_dict(), what="--stats-json")
        return Path(path)

    def format_line(self) -> str:
        """One periodic progress line."""
        c = self.counters
        inf = self.stages["infer"]
        return (
            f"{c.written} frames, {self.fps_meter.fps:.1f} FPS, infer p50 {inf.percentile(50):.1f} ms, "
            f"glass-to-glass p50 {self.glass_to_glass.percentile(50):.1f} ms, dropped {c.dropped}"
        )

    def format_summary(self) -> str:
        """The end-of-run table."""
        d = self.to_dict()
        f = d["frames"]
        lines = [
            f"frames: captured {f['captured']}, inferred {f['inferred']}, written {f['written']}, "
            f"dropped {f['dropped']}" + (f", discarded {f['discarded']}" if f["discarded"] else ""),
            f"end-to-end: {d['e2e_fps']:.1f} FPS over {d['elapsed_s']:.2f} s "
            f"(steady {d['steady_fps']:.1f} FPS), {d['detections']} detections",
            f"{'stage':<12}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}",
        ]
        for name, s in d["stages_ms"].items():
            lines.append(f"{name:<12}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['mean_ms']:>9.2f}")
        g = d["glass_to_glass_ms"]
        lines.append(f"{'glass2glass':<12}{g['p50_ms']:>9.2f}{g['p99_ms']:>9.2f}{g['mean_ms']:>9.2f}")
        if d["detections_invalid_dropped"]:
            lines.append(f"invalid detections dropped: {d['detections_invalid_dropped']} (NaN boxes, scores "
                         "outside [0, 1] or classes outside the class list; the model is broken)")
        lines += [f"FAILED output {e['output']}: {e['error']}" for e in self.output_errors]
        return "\n".join(lines)
