"""What one ``edge bench`` run measures: ``BenchConfig`` (frames, rounds, threads, the e2e's pipeline and
clip settings), ``BenchCase`` (one model at one input size), the modes it times, and ``FixedSizeError``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

from edge.errors import EdgeError, ModelError

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


__all__ = ["BackendFactory", "BenchCase", "BenchConfig", "FixedSizeError", "MODES", "VIDEO_SUFFIXES"]
