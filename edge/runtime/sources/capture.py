"""The capture thread between a ``FrameSource`` and the pipeline.

``CaptureThread`` runs a source in its own thread and hands ``CapturedFrame``s to one consumer: live
sources keep only the latest frame (stale ones are dropped and counted), files are read without drops
(the thread blocks when the pipeline is full), and a live source that fails is reopened with exponential
backoff (``ReopenPolicy``) while the run goes on. Frames live in a ``FramePool`` of reused buffers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from edge.errors import EdgeError
from edge.runtime.sources.base import CaptureStatus, FrameSource
from edge.runtime.sources.uri import redact_uri

log = logging.getLogger(__name__)


@dataclass
class CapturedFrame:
    """One capture result. ``frame`` is a pool buffer (give it back with ``FramePool.release``)."""

    status: CaptureStatus
    frame: Optional[np.ndarray] = None
    index: int = -1
    timestamp: float = 0.0
    error: str = ""


class FramePool:
    """A fixed number of frame buffers shared by the capture thread and the pipeline.

    ``acquire`` blocks while every buffer is in flight (that is how a file source waits for a full
    pipeline); buffers are allocated on first use at the source's frame size and reused afterwards.
    """

    def __init__(self, count: int) -> None:
        if count < 2:
            raise ValueError("a frame pool needs at least 2 buffers")
        self.count = count
        self._free: "queue.Queue[Optional[np.ndarray]]" = queue.Queue()
        for _ in range(count):
            self._free.put(None)

    def acquire(self, timeout: Optional[float] = None) -> Tuple[bool, Optional[np.ndarray]]:
        """(True, buffer-or-None-if-not-yet-allocated), or (False, None) on timeout."""
        try:
            return True, self._free.get(timeout=timeout)
        except queue.Empty:
            return False, None

    def release(self, buf: Optional[np.ndarray]) -> None:
        self._free.put(buf)

    @property
    def available(self) -> int:
        return self._free.qsize()


@dataclass
class ReopenPolicy:
    """Backoff for live sources that fail: the n-th reconnect in a row waits ``initial_s * 2**(n-1)``,
    at most ``max_s``. A reconnect that opens the stream but gets no frames counts as failed too, so a
    camera that accepts connections and sends nothing is retried ever more slowly, not every
    ``initial_s``. The count starts again only once frames flow: ``reset_after_frames`` frames since
    the last reconnect. ``max_attempts`` 0 retries forever (a camera unplugged for a minute comes back);
    else the run ends after that many reconnects in a row without frames flowing."""

    initial_s: float = 0.5
    max_s: float = 8.0
    max_attempts: int = 0
    reset_after_frames: int = 30

    def validate(self) -> "ReopenPolicy":
        if (self.initial_s <= 0 or self.max_s < self.initial_s or self.max_attempts < 0
                or self.reset_after_frames < 1):
            raise ValueError(f"bad reopen policy {self}")
        return self

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect ``attempt`` (1, 2, ...) of a row."""
        return min(self.initial_s * 2.0 ** min(max(attempt - 1, 0), 62), self.max_s)


class CaptureThread:
    """Reads a source in its own thread and hands frames to one consumer through ``get``.

    Live sources: a one-frame slot; a new frame replaces an untaken one (counted in ``dropped``).
    File-like sources: a bounded queue; the thread blocks when the consumer is behind (no drops).
    A frame captured but never delivered because the run stopped is counted in ``discarded`` (see
    ``discard_pending`` for the ones still waiting when the consumer is gone).
    ``stats`` (a ``RunStats``) gets captured/dropped/discarded/error/reopen counts and capture latency.
    ``nice``: added to the capture thread's nice value (``edge.runtime.priority``; the pipeline passes
    its ``host_nice``).
    """

    def __init__(
        self,
        source: FrameSource,
        pool: FramePool,
        stats: Optional[object] = None,
        *,
        queue_size: int = 2,
        reopen: Optional[ReopenPolicy] = None,
        max_frames: int = 0,
        nice: int = 0,
    ) -> None:
        self.source = source
        self.pool = pool
        self.stats = stats
        self.live = bool(source.live)
        self.reopen = (reopen or ReopenPolicy()).validate()
        self.max_frames = int(max_frames)
        self.nice = int(nice)
        self._stop = threading.Event()
        self._queue: "queue.Queue[CapturedFrame]" = queue.Queue(maxsize=max(1, queue_size))
        self._cond = threading.Condition()
        self._slot: Optional[CapturedFrame] = None
        self._final: Optional[CapturedFrame] = None
        self._thread = threading.Thread(target=self._run, name="edge-capture", daemon=True)
        self.captured = 0
        self.dropped = 0
        self.discarded = 0
        self.errors = 0
        self.reopens = 0
        self._failed_attempts = 0  # reconnects in a row since frames last flowed (the backoff exponent)
        self._frames_since_reopen = 0

    def start(self) -> "CaptureThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- consumer side ---------------------------------------------------------------------------
    def get(self, timeout: float = 1.0) -> CapturedFrame:
        """The next frame (FRAME), or TIMEOUT, END (source finished or stopped) or ERROR (gave up)."""
        if self.live:
            deadline = time.perf_counter() + timeout
            with self._cond:
                while self._slot is None:
                    if self._final is not None:
                        return self._final
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        return CapturedFrame(CaptureStatus.TIMEOUT)
                    self._cond.wait(left)
                item, self._slot = self._slot, None
                return item
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if self._final is not None:
                return self._final
            return CapturedFrame(CaptureStatus.TIMEOUT)

    # -- producer side ---------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        counters = getattr(self.stats, "counters", None)
        if counters is None:
            return
        if hasattr(counters, "add"):
            counters.add(name, n)
        else:
            setattr(counters, name, getattr(counters, name) + n)

    def _discard(self, frame: Optional[np.ndarray]) -> None:
        """A captured frame that will never be delivered (the run stopped): back to the pool, counted."""
        self.pool.release(frame)
        self.discarded += 1
        self._count("discarded")

    def discard_pending(self) -> int:
        """After the consumer stopped: give back and count (``discarded``) the frames captured but never
        taken. Returns how many there were."""
        before = self.discarded
        with self._cond:
            stale, self._slot = self._slot, None
        if stale is not None and stale.status is CaptureStatus.FRAME:
            self._discard(stale.frame)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item.status is CaptureStatus.FRAME:
                self._discard(item.frame)
        return self.discarded - before

    def _finish(self, item: CapturedFrame) -> None:
        if self.live:
            with self._cond:
                stale = self._slot if self._stop.is_set() else None
                if stale is not None:  # stopped: a frame nobody took is not delivered after END
                    self._slot = None
                    self._discard(stale.frame)
                self._final = item
                self._cond.notify_all()
        else:
            self._final = item
            while not self._put(item):
                if self._stop.is_set():
                    break

    def _put(self, item: CapturedFrame) -> bool:
        try:
            self._queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            return False

    def _publish(self, item: CapturedFrame) -> None:
        if self.live:
            with self._cond:
                old, self._slot = self._slot, item
                self._cond.notify()
            if old is not None:
                self.pool.release(old.frame)
                self.dropped += 1
                self._count("dropped")
            return
        while not self._put(item):
            if self._stop.is_set():
                self._discard(item.frame)
                return

    def _reopen(self) -> bool:
        """Reopen a failed live source with backoff; False when stopped or out of attempts.

        The attempt count (and so the delay) keeps growing across reconnects that open but deliver no
        frames; ``_delivered`` resets it once frames flow again."""
        while not self._stop.is_set():
            self._failed_attempts += 1
            attempt = self._failed_attempts
            if self.reopen.max_attempts and attempt > self.reopen.max_attempts:
                return False
            delay = self.reopen.delay(attempt)
            log.warning("%s failed; reopening in %.3g s (attempt %d)", self.source.describe(), delay, attempt)
            if self._stop.wait(delay):
                return False
            try:
                self.source.close()
                self.source.open()
            except EdgeError as exc:
                log.warning("reopen failed: %s", redact_uri(str(exc)))
                continue
            self.reopens += 1
            self._count("reopens")
            self._frames_since_reopen = 0
            log.info("%s reopened", self.source.describe())
            return True
        return False

    def _delivered(self) -> None:
        """A frame arrived: once ``reset_after_frames`` came in since the last reconnect, the stream is
        flowing again and the next failure starts the backoff from ``initial_s``."""
        if not self._failed_attempts:
            return
        self._frames_since_reopen += 1
        if self._frames_since_reopen >= self.reopen.reset_after_frames:
            log.info("%s delivers frames again after %d reconnect(s); backoff reset", self.source.describe(),
                     self._failed_attempts)
            self._failed_attempts = 0

    def _run(self) -> None:
        from edge.runtime.priority import lower_thread_priority

        lower_thread_priority(self.nice)
        tracker = None
        stages = getattr(self.stats, "stages", None)
        if stages is not None:
            tracker = stages.get("capture")
        try:
            while not self._stop.is_set():
                if self.max_frames and self.captured >= self.max_frames:
                    self._finish(CapturedFrame(CaptureStatus.END, index=self.captured))
                    return
                ok, buf = self.pool.acquire(timeout=0.1)
                if not ok:
                    continue
                t0 = time.perf_counter()
                try:
                    status, frame = self.source.read(buf)
                except Exception as exc:  # noqa: BLE001 - a driver error must not kill the run silently
                    status, frame = CaptureStatus.ERROR, None
                    log.warning("capture error from %s: %s", self.source.describe(), redact_uri(str(exc)))
                t1 = time.perf_counter()
                if status is CaptureStatus.FRAME and frame is not None:
                    if tracker is not None:
                        tracker.add(t1 - t0)
                    self._count("captured")
                    self._delivered()
                    item = CapturedFrame(CaptureStatus.FRAME, frame, self.captured, t1)
                    self.captured += 1
                    self._publish(item)
                    continue
                self.pool.release(buf)
                if status is CaptureStatus.END:
                    self._finish(CapturedFrame(CaptureStatus.END, index=self.captured))
                    return
                # ERROR (or a TIMEOUT reported by the source)
                self.errors += 1
                self._count("capture_errors")
                if not self.live:
                    self._finish(CapturedFrame(CaptureStatus.ERROR, index=self.captured,
                                               error=f"read failed on {self.source.describe()}"))
                    return
                if not self._reopen():
                    if not self._stop.is_set():
                        self._finish(CapturedFrame(
                            CaptureStatus.ERROR, index=self.captured,
                            error=f"{self.source.describe()} failed and could not be reopened"))
                        return
            self._finish(CapturedFrame(CaptureStatus.END, index=self.captured))
        finally:
            self.source.close()
