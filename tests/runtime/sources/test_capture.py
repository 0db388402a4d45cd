"""``edge.runtime.sources.capture``: the capture thread: statuses, drops, reopen with backoff."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge.errors import DataError
from edge.runtime.sources.base import CaptureStatus, FrameSource
from edge.runtime.sources.capture import CaptureThread, FramePool, ReopenPolicy
from edge.runtime.sources.factory import open_source
from edge.runtime.sources.synthetic import TestPatternSource
from edge.runtime.sources.uri import parse_source
from edge.runtime.stats import RunStats
from tests.runtime.sources.test_files import _write_video


def test_capture_thread_file_source_has_no_drops(tmp_path):
    path = _write_video(tmp_path / "clip.mp4", 20)
    src = open_source(parse_source(str(path)))
    src.open()
    pool = FramePool(4)
    stats = RunStats()
    cap = CaptureThread(src, pool, stats, queue_size=2).start()
    got = []
    while True:
        item = cap.get(timeout=5.0)
        if item.status is not CaptureStatus.FRAME:
            assert item.status is CaptureStatus.END
            break
        got.append(item.index)
        time.sleep(0.002)  # a slower consumer: the reader must wait, not drop
        pool.release(item.frame)
    cap.join(2.0)
    assert got == list(range(20))
    assert stats.counters.captured == 20 and stats.counters.dropped == 0 and not cap.alive


def test_capture_thread_live_source_keeps_latest_and_counts_drops():
    src = TestPatternSource(parse_source("test://32x24?live=1&fps=200&frames=60"))
    src.open()
    pool = FramePool(4)
    stats = RunStats()
    cap = CaptureThread(src, pool, stats).start()
    taken = []
    while True:
        item = cap.get(timeout=2.0)
        if item.status is CaptureStatus.END:
            break
        assert item.status is CaptureStatus.FRAME
        taken.append(item.index)
        time.sleep(0.02)  # 50 FPS consumer of a 200 FPS camera
        pool.release(item.frame)
    cap.join(2.0)
    assert taken == sorted(taken) and len(taken) < 60
    assert stats.counters.dropped > 0
    assert stats.counters.captured == 60 == len(taken) + stats.counters.dropped + (60 - cap.captured)


def test_capture_timeout_is_an_explicit_status():
    src = TestPatternSource(parse_source("test://32x24?live=1&fps=2"))
    src.open()
    pool = FramePool(2)
    cap = CaptureThread(src, pool).start()
    first = cap.get(timeout=2.0)
    assert first.status is CaptureStatus.FRAME
    pool.release(first.frame)
    assert cap.get(timeout=0.05).status is CaptureStatus.TIMEOUT
    cap.stop()
    cap.join(2.0)
    assert cap.get(timeout=0.5).status is CaptureStatus.END


class FlakyCamera(FrameSource):
    """A live source that fails after 5 frames, refuses the first reopen, then works again
    (a USB camera unplugged and plugged back in)."""

    live = True

    def __init__(self) -> None:
        super().__init__(parse_source("v4l2:///dev/video0"))
        self.opens = 0
        self.reads = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens == 2:
            raise DataError("camera /dev/video0 not found")

    def read(self, out=None):
        self.reads += 1
        if self.reads == 6:
            return CaptureStatus.ERROR, None
        if self.reads > 12:
            time.sleep(0.01)
        frame = out if out is not None else np.zeros((8, 8, 3), np.uint8)
        frame[:] = self.reads % 255
        return CaptureStatus.FRAME, frame


def test_live_source_that_disappears_is_reopened_with_backoff():
    src = FlakyCamera()
    src.open()
    pool = FramePool(3)
    stats = RunStats()
    cap = CaptureThread(src, pool, stats, reopen=ReopenPolicy(initial_s=0.02, max_s=0.05)).start()
    frames = 0
    deadline = time.time() + 5
    while frames < 10 and time.time() < deadline:
        item = cap.get(timeout=1.0)
        if item.status is CaptureStatus.FRAME:
            frames += 1
            pool.release(item.frame)
    cap.stop()
    cap.join(2.0)
    assert frames >= 10
    assert src.opens == 3  # initial, failed reopen, successful reopen
    assert stats.counters.reopens == 1 and stats.counters.capture_errors == 1


def test_live_source_gives_up_after_max_attempts():
    class DeadCamera(FlakyCamera):
        def open(self) -> None:
            self.opens += 1
            if self.opens > 1:
                raise DataError("camera /dev/video0 not found")

    src = DeadCamera()
    src.open()
    pool = FramePool(3)
    cap = CaptureThread(src, pool, reopen=ReopenPolicy(initial_s=0.01, max_s=0.02, max_attempts=2)).start()
    statuses = []
    for _ in range(20):
        item = cap.get(timeout=1.0)
        statuses.append(item.status)
        if item.frame is not None:
            pool.release(item.frame)
        if item.status is CaptureStatus.ERROR:
            assert "could not be reopened" in item.error
            break
    assert statuses[-1] is CaptureStatus.ERROR


# -- backoff that grows while a stream opens but sends nothing -----------------------------------------


class ScriptedStream(FrameSource):
    """A network camera that accepts every connection; the i-th connection delivers ``script[i]`` frames
    and then fails to read (``script`` runs out: no frames at all, forever)."""

    live = True

    def __init__(self, script):
        super().__init__(parse_source("rtsp://cam.invalid/live"))
        self.script = list(script)
        self.opens = 0
        self.left = 0

    def open(self) -> None:
        self.left = self.script[self.opens] if self.opens < len(self.script) else 0
        self.opens += 1

    def read(self, out=None):
        if self.left <= 0:
            return CaptureStatus.ERROR, None
        self.left -= 1
        frame = out if out is not None else np.zeros((8, 8, 3), np.uint8)
        return CaptureStatus.FRAME, frame


def _reconnects(caplog):
    """(attempt, delay) of every 'reopening in X s (attempt N)' warning, in order."""
    import re

    return [(int(m.group(2)), float(m.group(1))) for m in
            (re.search(r"reopening in ([\d.]+) s \(attempt (\d+)\)", r.getMessage()) for r in caplog.records) if m]


def _drain(cap, pool, until, timeout=10.0):
    deadline = time.time() + timeout
    while not until() and time.time() < deadline:
        item = cap.get(timeout=0.05)
        if item.frame is not None:
            pool.release(item.frame)
    cap.stop()
    cap.join(2.0)


def test_backoff_grows_while_the_stream_opens_but_never_reads(caplog):
    src = ScriptedStream([])  # connects every time, never a frame
    src.open()
    pool = FramePool(2)
    stats = RunStats()
    cap = CaptureThread(src, pool, stats, reopen=ReopenPolicy(initial_s=0.01, max_s=0.08)).start()
    _drain(cap, pool, lambda: len(_reconnects(caplog)) >= 7)
    seen = _reconnects(caplog)[:7]
    assert [a for a, _ in seen] == [1, 2, 3, 4, 5, 6, 7]  # not 'attempt 1' over and over
    assert [d for _, d in seen] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.08, 0.08, 0.08])  # capped
    assert stats.counters.reopens >= 6


def test_backoff_resets_only_after_frames_flow_again(caplog):
    # connections 1-3: nothing; 4: one frame (not yet flowing); 5: nothing; 6: 40 frames (flowing); 7: nothing
    src = ScriptedStream([0, 0, 0, 1, 0, 40, 0])
    src.open()
    pool = FramePool(2)
    policy = ReopenPolicy(initial_s=0.01, max_s=0.04)
    assert policy.reset_after_frames <= 40
    cap = CaptureThread(src, pool, reopen=policy).start()
    _drain(cap, pool, lambda: len(_reconnects(caplog)) >= 7)
    seen = _reconnects(caplog)[:7]
    assert [a for a, _ in seen] == [1, 2, 3, 4, 5, 1, 2]
    assert [d for _, d in seen] == pytest.approx([0.01, 0.02, 0.04, 0.04, 0.04, 0.01, 0.02])


def test_max_attempts_counts_connections_that_never_deliver():
    src = ScriptedStream([])
    src.open()
    pool = FramePool(2)
    cap = CaptureThread(src, pool, reopen=ReopenPolicy(initial_s=0.01, max_s=0.02, max_attempts=3)).start()
    deadline = time.time() + 5
    item = cap.get(timeout=0.1)
    while item.status is not CaptureStatus.ERROR and time.time() < deadline:
        item = cap.get(timeout=0.1)
    assert item.status is CaptureStatus.ERROR and "could not be reopened" in item.error
    assert src.opens == 4  # the first open and 3 reconnects, not forever
