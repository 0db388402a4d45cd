"""The capture -> preprocess -> infer -> postprocess -> draw -> sink loop, one thread per stage.

::

                                             +-> infer 0 -+
    CaptureThread --get()--> preprocess --q--+    ...     +--q--> postprocess --q--> draw --q--> sink(s)
         ^                                   +-> infer N -+       (in order)                    |
         +----------------------------- frame buffers (FramePool) <-----------------------------+

* Bounded queues between stages (``queue_size``), so a slow stage applies back-pressure instead of
  growing memory; frame buffers come from a fixed pool and go back after the sinks, and network inputs
  from a second fixed pool: nothing frame-sized is allocated per frame once the pipeline is warm.
* preprocess: ``edge.letterbox.letterbox`` straight into the input tensor (uint8 NHWC graphs: nothing
  else), or letterbox + BGR->RGB + HWC->CHW + normalization into a preallocated float tensor.
* infer: ``Backend.infer`` (ONNX Runtime or TensorRT); the only stage that touches the backend, so a
  TensorRT backend's CUDA context lives on this thread. With ``infer_workers`` N > 1 (backends whose
  ``concurrent_infer`` is True: ONNX Runtime) N threads take frames from the same queue and run
  inference on N frames at once: on a CPU, N single-threaded inferences side by side do more frames per
  second than one inference spread over every core (no barrier between the cores after each operator),
  at the cost of each frame's own latency. ``edge.runtime.plan`` decides N for a backend and source.
* postprocess: puts frames back in capture order (a reorder buffer keyed by the preprocess sequence
  number; with parallel workers frames can finish out of order), then maps boxes from network-input
  pixels back to frame pixels (``LetterboxParams.to_source``), optional extra score threshold.
* draw: boxes, labels, scores and FPS drawn in place on the frame.
* sink: every sink in turn (window, video file, JSON lines, MJPEG); encoding happens here or in the
  MJPEG server's own thread, never in the inference thread. A sink that cannot write (``OutputError``:
  a full disk) is dropped from the run and recorded in ``stats.output_errors``; the other sinks go on,
  and the run stops when none is left.
* accounting: every captured frame ends inferred, dropped (a live source's stale frame) or discarded (in
  flight before inference when the run stopped): ``captured == inferred + dropped + discarded``.
* priorities: every stage thread but infer lowers its own nice value by ``host_nice`` (Linux), so on a
  small CPU the inference threads preempt host work instead of waiting for it (``edge.runtime.priority``).

``naive_loop`` runs the same stages sequentially in one thread (the TensorRT samples' loop), the baseline
that ``edge bench`` compares against.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from edge.errors import EdgeError, ModelError, OutputError
from edge.model_input import Preprocessor
from edge.runtime.backend import Backend
from edge.runtime.draw import Drawer
from edge.runtime.naive import naive_loop
from edge.runtime.packet import FramePacket, postprocess
from edge.runtime.priority import lower_thread_priority
from edge.runtime.score_watch import ScoreWatch
from edge.runtime.sinks import Sink
from edge.runtime.sources import CaptureStatus, CaptureThread, FramePool, FrameSource, ReopenPolicy
from edge.runtime.stats import RunStats

log = logging.getLogger(__name__)

MAX_INFER_WORKERS = 16

__all__ = ["FramePacket", "Pipeline", "PipelineConfig", "Preprocessor", "naive_loop", "postprocess"]


@dataclass
class PipelineConfig:
    """Loop settings.

    queue_size: capacity of each inter-stage queue (2: enough to overlap stages, little latency).
    conf_threshold: drop detections below this score (on top of the graph's own threshold).
    draw / show_fps: annotate frames (boxes, labels, scores) / add the FPS line.
    max_frames: stop after this many frames through the loop (0: until the source ends or Ctrl-C).
    log_every_s: seconds between progress lines in the log (0: none).
    warmup: backend warm-up runs before the clock starts.
    capture_timeout_s: how long the loop waits for a frame before counting a capture timeout.
    infer_workers: inference threads taking frames from the preprocess queue (1: one frame at a time;
        N > 1 needs a backend with ``concurrent_infer``, see ``edge.runtime.plan``).
    host_nice: added to the nice value of the host-stage threads (capture, preprocess, postprocess,
        draw, sink; Linux), so the inference threads preempt them and host work fills the gaps inference
        leaves instead of stretching it (see ``edge.runtime.priority``). 0 keeps every thread equal.
    """

    queue_size: int = 2
    conf_threshold: float = 0.0
    draw: bool = True
    show_fps: bool = True
    max_frames: int = 0
    log_every_s: float = 5.0
    warmup: int = 1
    capture_timeout_s: float = 2.0
    host_nice: int = 10
    infer_workers: int = 1
    reopen: ReopenPolicy = field(default_factory=ReopenPolicy)

    def validate(self) -> "PipelineConfig":
        if self.queue_size < 1:
            raise EdgeError(f"queue_size must be >= 1, found {self.queue_size}")
        if not 0.0 <= self.conf_threshold <= 1.0:
            raise EdgeError(f"conf_threshold must be in [0, 1], found {self.conf_threshold}")
        if self.max_frames < 0:
            raise EdgeError(f"--max-frames must be >= 0, found {self.max_frames}")
        if self.capture_timeout_s <= 0:
            raise EdgeError("capture_timeout_s must be > 0")
        if not 0 <= self.host_nice <= 19:
            raise EdgeError(f"host_nice must be in [0, 19], found {self.host_nice}")
        if not 1 <= self.infer_workers <= MAX_INFER_WORKERS:
            raise EdgeError(f"--infer-workers must be in [1, {MAX_INFER_WORKERS}], found {self.infer_workers}")
        self.reopen.validate()
        return self



_STOP = object()


class Pipeline:
    """The threaded loop. ``run()`` blocks until the source ends, ``max_frames`` is reached, a sink
    asks to quit, ``stop()`` is called (from a signal handler or another thread) or Ctrl-C; it always
    closes the sinks (so a video file is finalized) and returns the ``RunStats``.

    The source must not be opened yet or already opened; ``run`` opens it when needed (errors such as a
    missing camera surface here, before any thread starts). The backend is not closed by ``run``.
    """

    def __init__(
        self,
        source: FrameSource,
        backend: Backend,
        sinks: Sequence[Sink] = (),
        config: Optional[PipelineConfig] = None,
        *,
        stats: Optional[RunStats] = None,
        class_names: Optional[Sequence[str]] = None,
        source_opened: bool = False,
    ) -> None:
        self.source = source
        self.backend = backend
        self.sinks = list(sinks)
        self.config = (config or PipelineConfig()).validate()
        self.stats = stats or RunStats()
        fmt = backend.input_format
        workers = self.config.infer_workers
        if workers > 1 and not getattr(backend, "concurrent_infer", False):
            raise ModelError(
                f"{backend.describe()} runs one inference at a time (one set of buffers and one stream); "
                f"--infer-workers {workers} needs a backend that takes concurrent calls (ONNX Runtime): "
                "use --infer-workers 1"
            )
        if fmt.batch not in (1, -1):
            raise ModelError(
                f"{backend.describe()} has a static batch of {fmt.batch}; edge-run feeds one frame at a time: "
                "export with batch 1 (or a dynamic batch) for live inference"
            )
        names = list(class_names) if class_names is not None else list(backend.info.class_names if backend.info else [])
        self.drawer = Drawer(names)
        self.preprocessor = Preprocessor(fmt)
        self.score_watch = ScoreWatch.for_backend(backend, self.config.conf_threshold)  # why nothing is seen
        self._source_opened = source_opened
        self._stop = threading.Event()
        self._requested = ""  # a stop asked for by a signal handler (request_stop)
        self._abort = threading.Event()
        self._errors: List[BaseException] = []
        self._ready = threading.Event()
        self.end_reason = ""
        qs = self.config.queue_size
        # every frame in flight holds a pool buffer: queues, the stage threads (N inference workers among
        # them), the capture queue and the reorder buffer's share; inputs are held from preprocess to infer
        self.frame_pool = FramePool(2 * qs + 5 + 2 * workers)
        self._input_free: "queue.Queue[np.ndarray]" = queue.Queue()
        for _ in range(qs + 1 + workers):
            self._input_free.put(self.preprocessor.new_buffer())
        self._queues = [queue.Queue(maxsize=qs) for _ in range(4)]
        self._infer_lock = threading.Lock()  # the infer tracker and counter, shared by the workers
        self._workers_ready = 0
        self._workers_running = workers
        self._active_sinks = list(self.sinks)  # the sinks still written to (a failed one leaves)
        self.capture: Optional[CaptureThread] = None

    # -- control ---------------------------------------------------------------------------------
    def stop(self, reason: str = "") -> None:
        """Ask the loop to finish (thread- and signal-safe). Frames already inside are completed.
        ``reason`` (e.g. "terminated (SIGTERM)") becomes ``stats.meta['end_reason']``."""
        if reason:
            self._end(reason)
        self._stop.set()

    def request_stop(self, reason: str) -> None:
        """``stop`` for a signal handler: takes no lock (the interrupted main thread may hold the one
        ``stop`` needs); ``run`` acts on it within 0.1 s."""
        self._requested = self._requested or reason

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or bool(self._requested)

    def _poll_request(self) -> None:
        if self._requested and not self._stop.is_set():
            self.stop(self._requested)

    def _end(self, reason: str) -> None:
        """Record why the run ended; the first reason wins (a stop request outranks the END it causes)."""
        if not self.end_reason:
            self.end_reason = reason

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self._abort.set()
        self._stop.set()

    def _put(self, q: "queue.Queue[Any]", item: Any) -> bool:
        while True:
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._abort.is_set():
                    return False

    def _get(self, q: "queue.Queue[Any]") -> Any:
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self._abort.is_set():
                    return _STOP

    def _take_input_buffer(self) -> Optional[np.ndarray]:
        while True:
            try:
                return self._input_free.get(timeout=0.1)
            except queue.Empty:
                if self._abort.is_set():
                    return None

    def _release(self, packet: FramePacket) -> None:
        if packet.input is not None:
            self._input_free.put(packet.input)
            packet.input = None
        self.frame_pool.release(packet.frame)

    # -- stages ----------------------------------------------------------------------------------
    def _preprocess_loop(self) -> None:
        cfg = self.config
        tracker = self.stats.stages["preprocess"]
        capture = self.capture
        assert capture is not None
        taken = 0
        last_timeout_log = 0.0
        lower_thread_priority(cfg.host_nice)
        try:
            while not self._stop.is_set():
                if cfg.max_frames and taken >= cfg.max_frames:
                    self._end(f"--max-frames {cfg.max_frames} reached")
                    break
                item = capture.get(timeout=cfg.capture_timeout_s)
                if item.status is CaptureStatus.TIMEOUT:
                    self.stats.counters.capture_timeouts += 1
                    now = time.perf_counter()
                    if now - last_timeout_log > 10.0:
                        log.warning("no frame from %s for %.1f s; still waiting", self.source.describe(),
                                    cfg.capture_timeout_s)
                        last_timeout_log = now
                    continue
                if item.status is CaptureStatus.END:
                    self._end("end of stream")
                    break
                if item.status is CaptureStatus.ERROR:
                    self._end(f"capture error: {item.error}")
                    log.error("%s", item.error)
                    break
                buf = self._take_input_buffer()
                if buf is None:
                    self.frame_pool.release(item.frame)
                    self.stats.counters.add("discarded")
                    return
                t0 = time.perf_counter()
                packet = FramePacket(item.index, item.frame, item.timestamp, seq=taken,  # type: ignore[arg-type]
                                     input=buf)
                try:
                    packet.params = self.preprocessor(packet.frame, buf)
                except BaseException:
                    self._discard(packet)
                    raise
                tracker.add(time.perf_counter() - t0)
                taken += 1
                if not self._put(self._queues[0], packet):
                    self._discard(packet)
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._fail(exc)
        finally:
            capture.stop()
            for _ in range(cfg.infer_workers):  # one end marker per inference worker
                self._put(self._queues[0], _STOP)

    def _stage_loop(self, name: str, q_in: "queue.Queue[Any]", q_out: Optional["queue.Queue[Any]"],
                    fn: Callable[[FramePacket], None], *, in_order: bool = False) -> None:
        """One host stage: take packets from ``q_in``, apply ``fn``, pass them on. ``in_order``: hold a
        packet until every packet with a lower ``seq`` has passed (the reorder buffer behind parallel
        inference workers)."""
        tracker = self.stats.stages[name]
        pending: Dict[int, FramePacket] = {}
        next_seq = 0
        try:
            lower_thread_priority(self.config.host_nice)
            running = True
            while running:
                packet = self._get(q_in)
                if packet is _STOP:
                    break
                if in_order:
                    pending[packet.seq] = packet
                    packet = pending.pop(next_seq, None)
                while packet is not None:
                    next_seq = packet.seq + 1
                    t0 = time.perf_counter()
                    try:
                        fn(packet)
                    except BaseException:
                        self._release(packet)
                        raise
                    tracker.add(time.perf_counter() - t0)
                    if q_out is not None and not self._put(q_out, packet):
                        self._release(packet)
                        running = False
                        break
                    packet = pending.pop(next_seq, None) if in_order else None
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._fail(exc)
        finally:
            if pending and not self._abort.is_set():
                log.error("%s: %d frame(s) never got their turn (first missing: %d)", name, len(pending), next_seq)
            for leftover in pending.values():
                self._release(leftover)
            if q_out is not None:
                self._put(q_out, _STOP)
            self._drain(q_in)

    def _drain(self, q: "queue.Queue[Any]", *, discard: bool = False) -> None:
        """Give back the buffers of packets left in ``q`` (after an abort; empty after a normal end);
        ``discard``: they were never inferred (counted in ``discarded``)."""
        while True:
            try:
                leftover = q.get_nowait()
            except queue.Empty:
                break
            if isinstance(leftover, FramePacket):
                if discard:
                    self._discard(leftover)
                else:
                    self._release(leftover)

    def _discard(self, packet: FramePacket) -> None:
        """A captured frame that will never be inferred (the run stopped or failed): released, counted."""
        self._release(packet)
        self.stats.counters.add("discarded")

    def _infer_loop(self) -> None:
        """One inference worker (``infer_workers`` of them share the preprocess queue). The last worker to
        finish passes the end marker on."""
        tracker = self.stats.stages["infer"]
        q_in, q_out = self._queues[0], self._queues[1]
        try:
            self._infer_setup()
            while True:
                packet = self._get(q_in)
                if packet is _STOP:
                    break
                t0 = time.perf_counter()
                try:
                    packet.detections = self.backend.infer(packet.input)  # type: ignore[arg-type]
                except BaseException:
                    self._discard(packet)
                    raise
                elapsed = time.perf_counter() - t0
                self._input_free.put(packet.input)  # type: ignore[arg-type]
                packet.input = None
                with self._infer_lock:
                    tracker.add(elapsed)
                    self.stats.counters.inferred += 1
                    self.stats.counters.invalid_dropped += getattr(packet.detections, "invalid_dropped", 0)
                if not self._put(q_out, packet):
                    self._release(packet)
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._fail(exc)
            self._ready.set()
        finally:
            self._infer_teardown()
            with self._infer_lock:
                self._workers_running -= 1
                last = self._workers_running == 0
            if last:
                self._put(q_out, _STOP)
                self._drain(q_in, discard=True)

    def _infer_setup(self) -> None:
        """On an inference thread, before any frame: bind the backend (CUDA context) and warm it up; the
        run starts when every worker is ready."""
        self.backend.bind_thread()
        if self.config.warmup:
            self.backend.warmup(self.config.warmup)
        with self._infer_lock:
            self._workers_ready += 1
            if self._workers_ready == self.config.infer_workers:
                self._ready.set()

    def _infer_teardown(self) -> None:
        try:
            self.backend.release_thread()
        except Exception as exc:  # noqa: BLE001 - never mask the run's own outcome
            log.warning("releasing the inference thread failed: %s", exc)

    def _postprocess(self, packet: FramePacket) -> None:
        n = postprocess(packet, self.config.conf_threshold)
        self.stats.counters.detections += n
        self.score_watch.observe(packet.peak, n)

    def _draw(self, packet: FramePacket) -> None:
        if self.config.draw:
            fps = self.stats.fps_meter.fps if self.config.show_fps else None
            self.drawer.draw(packet.frame, packet.boxes, packet.scores, packet.classes, fps=fps)

    def _sink(self, packet: FramePacket) -> None:
        for sink in self._active_sinks:
            try:
                sink.write(packet)
            except OutputError as exc:
                self._output_failed(sink, exc)
                continue
            if sink.wants_stop:
                self.stop(f"stopped from the {sink.name} sink")
        self.stats.frame_out(packet.capture_ts)
        self._release(packet)

    def _output_failed(self, sink: Sink, exc: OutputError) -> None:
        """A sink could not write (it removed its partial file): say so once, record it, feed it no more;
        with no sink left the run stops."""
        log.error("%s", exc)
        self.stats.output_failed(sink.name, exc)
        self._active_sinks = [s for s in self._active_sinks if s is not sink]
        if not self._active_sinks:
            self.stop(f"output failed ({exc.cause})")

    # -- run -------------------------------------------------------------------------------------
    def run(self) -> RunStats:
        cfg = self.config
        if not self._source_opened:
            self.source.open()
        self.capture = CaptureThread(
            self.source, self.frame_pool, self.stats, queue_size=cfg.queue_size, reopen=cfg.reopen,
            max_frames=cfg.max_frames if not self.source.live else 0, nice=cfg.host_nice,
        )
        q = self._queues
        workers = cfg.infer_workers
        infer_threads = [
            threading.Thread(target=self._infer_loop, name="edge-infer" if workers == 1 else f"edge-infer-{i}",
                             daemon=True)
            for i in range(workers)
        ]
        threads = [
            threading.Thread(target=self._preprocess_loop, name="edge-preprocess", daemon=True),
            *infer_threads,
            threading.Thread(target=self._stage_loop, args=("postprocess", q[1], q[2], self._postprocess),
                             kwargs={"in_order": True}, name="edge-postprocess", daemon=True),
            threading.Thread(target=self._stage_loop, args=("draw", q[2], q[3], self._draw),
                             name="edge-draw", daemon=True),
            threading.Thread(target=self._stage_loop, args=("sink", q[3], None, self._sink),
                             name="edge-sink", daemon=True),
        ]
        self.stats.meta.setdefault("source", self.source.describe())
        self.stats.meta.setdefault("backend", self.backend.describe())
        self.stats.meta["infer_workers"] = workers
        # the infer threads bind the backend and warm it up before the clock and the capture start
        for t in infer_threads:
            t.start()
        while not self._ready.wait(0.1):
            self._poll_request()
            if not any(t.is_alive() for t in infer_threads):
                break
        if self._errors:  # binding or warming up the backend failed: nothing ran, release everything
            for t in infer_threads:  # the failure aborted the run: the other workers stop too
                t.join()
            self.source.close()
            self._close_sinks()
            raise self._errors[0]
        self.stats.start()
        self.capture.start()
        for t in threads:
            if t not in infer_threads:
                t.start()
        next_log = time.perf_counter() + cfg.log_every_s if cfg.log_every_s > 0 else float("inf")
        try:
            sink_thread = threads[-1]
            while sink_thread.is_alive():
                sink_thread.join(timeout=0.1)
                self._poll_request()
                now = time.perf_counter()
                if now >= next_log:
                    log.info("%s", self.stats.format_line())
                    next_log = now + cfg.log_every_s
        except KeyboardInterrupt:
            self._end("interrupted (Ctrl-C)")
            log.warning("interrupted: finishing the frames in flight and closing outputs")
            self.stop()
            self._join(threads)
        finally:
            self.stop()
            self._join(threads)
            self.stats.stop()
            self._close_sinks()
            self.score_watch.finish(self.stats, warn=all(isinstance(e, KeyboardInterrupt) for e in self._errors))
        if self.capture.reopens:
            self.stats.meta["reopens"] = self.capture.reopens
        self.stats.meta["end_reason"] = self.end_reason or "stopped"
        if self._errors:
            exc = self._errors[0]
            if isinstance(exc, KeyboardInterrupt):
                return self.stats
            raise exc
        return self.stats

    def _join(self, threads: Sequence[threading.Thread], timeout: float = 10.0) -> None:
        deadline = time.perf_counter() + timeout
        if self.capture is not None:
            self.capture.stop()
        for t in threads:
            t.join(max(0.0, deadline - time.perf_counter()))
        if self.capture is not None:
            self.capture.join(max(0.1, deadline - time.perf_counter()))
            if not self.capture.alive:  # frames it captured that preprocess never took
                self.capture.discard_pending()
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.warning("threads still running at exit: %s", ", ".join(stuck))

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except OutputError as exc:  # finalizing failed (a full disk, the rename): recorded, run fails
                log.error("%s", exc)
                self.stats.output_failed(sink.name, exc)
            except Exception as exc:  # noqa: BLE001 - close every sink even if one fails
                log.error("closing %s sink failed: %s", sink.name, exc)

