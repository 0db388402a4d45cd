"""``naive_loop``: capture, preprocess, infer, postprocess, draw and sink one frame at a time in one thread
(the TensorRT samples' loop), the sequential baseline ``edge bench`` compares the threaded
``edge.runtime.pipeline.Pipeline`` against (same stages, same statistics, no overlap)."""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from edge.model_input import Preprocessor
from edge.runtime.backend import Backend
from edge.runtime.draw import Drawer
from edge.runtime.packet import FramePacket, postprocess
from edge.runtime.sinks import Sink
from edge.runtime.sources import CaptureStatus, FrameSource
from edge.runtime.stats import RunStats


def naive_loop(
    source: FrameSource,
    backend: Backend,
    sinks: Sequence[Sink] = (),
    *,
    max_frames: int = 0,
    draw: bool = True,
    stats: Optional[RunStats] = None,
) -> RunStats:
    """Capture, preprocess, infer, postprocess, draw and sink one frame at a time in this thread.

    The baseline for ``edge bench``; same stages and statistics as ``Pipeline``, no overlap. The source
    must be open; sinks are not closed.
    """
    stats = stats or RunStats()
    pre = Preprocessor(backend.input_format)
    drawer = Drawer(backend.info.class_names if backend.info else [])
    inp = pre.new_buffer()
    frame_buf: Optional[np.ndarray] = None
    backend.bind_thread()
    stats.start()
    n = 0
    while not max_frames or n < max_frames:
        t0 = time.perf_counter()
        status, frame = source.read(frame_buf)
        t1 = time.perf_counter()
        if status is not CaptureStatus.FRAME or frame is None:
            break
        frame_buf = frame
        stats.counters.captured += 1
        stats.stages["capture"].add(t1 - t0)
        packet = FramePacket(n, frame, t1, input=inp)
        packet.params = pre(frame, inp)
        t2 = time.perf_counter()
        packet.detections = backend.infer(inp)
        t3 = time.perf_counter()
        stats.counters.inferred += 1
        stats.counters.invalid_dropped += getattr(packet.detections, "invalid_dropped", 0)
        stats.counters.detections += postprocess(packet)
        t4 = time.perf_counter()
        if draw:
            drawer.draw(frame, packet.boxes, packet.scores, packet.classes, fps=stats.fps_meter.fps)
        t5 = time.perf_counter()
        for sink in sinks:
            sink.write(packet)
        t6 = time.perf_counter()
        for name, a, b in (("preprocess", t1, t2), ("infer", t2, t3), ("postprocess", t3, t4),
                           ("draw", t4, t5), ("sink", t5, t6)):
            stats.stages[name].add(b - a)
        stats.frame_out(t1, t6)
        n += 1
    stats.stop()
    backend.release_thread()
    return stats
