"""N streams through one model in one process: ``edge-run --source A --source B ...`` (or ``--sources FILE``).

::

    CaptureThread 0 -+                                                  +-> stream 0: draw -> its sinks
    CaptureThread 1 -+--> gather + preprocess into one batch -> infer --+-> stream 1: draw -> its sinks
         ...         +        (the infer thread)                  q     +   (the output thread)

* Each source has its own ``CaptureThread`` (its own frame pool and reopen policy): a live stream keeps
  only its newest frame, a file is read without drops, a live stream that fails reconnects on its own
  while the others go on.
* The infer thread takes at most one frame from every stream that has one (a stream with no new frame is
  skipped, it does not stall the others), preprocesses each into its row of one batch tensor and runs one
  inference for all of them: a model with a dynamic batch takes the batch as it is, a static batch B is
  filled in chunks of B (padded with zero rows), a batch-1 model runs the frames one after another (said
  once in the log).
* The output thread maps each frame's detections back to its pixels, draws, and writes the stream's own
  sinks (``--output out_{stream}.mp4``, ``--detections-out det_{stream}.jsonl``: ``{stream}`` is the
  stream's index or its ``name=``).
* Stats: the run's ``RunStats`` keeps today's totals (``frames``, stages, glass-to-glass) and gains
  ``streams``: per-stream counters, FPS and glass-to-glass latency. ``captured == inferred + dropped +
  discarded`` holds per stream and in total.
* The run ends when every file stream has ended (live streams then stop too); with live streams only, on
  a signal or when every stream reached ``max_frames`` (counted per stream), or when a live stream gives
  up reconnecting and no other is left.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import EdgeError, ModelError, OutputError
from edge.model_input import Preprocessor
from edge.runtime.backend import Backend
from edge.runtime.draw import Drawer
from edge.runtime.packet import FramePacket, postprocess
from edge.runtime.pipeline import PipelineConfig
from edge.runtime.priority import lower_thread_priority
from edge.runtime.score_watch import ScoreWatch
from edge.runtime.sinks import Sink
from edge.runtime.sources import CaptureStatus, CaptureThread, FramePool, FrameSource
from edge.runtime.stats import RunStats

log = logging.getLogger(__name__)

STREAM_FIELD = "{stream}"
_NAME = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")
_STOP = object()


def read_sources_file(path: str) -> List[Tuple[Optional[str], str]]:
    """``--sources FILE``: one source URI per line, ``NAME=URI`` to name it; blank lines and ``#``
    comments skipped. Returns (name or None, uri) in file order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgeError(f"--sources {path}: cannot read it ({exc.strerror or exc}); give a text file with one "
                        "source URI per line") from None
    entries: List[Tuple[Optional[str], str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _NAME.match(line)
        if m and "/" not in m.group(1) and ":" not in m.group(1):
            entries.append((m.group(1), m.group(2).strip()))
        else:
            entries.append((None, line))
    if not entries:
        raise EdgeError(f"--sources {path}: found no source in it; expected one URI per line (NAME=URI allowed)")
    return entries


def stream_ids(names: Sequence[Optional[str]]) -> List[str]:
    """The id of each stream: its given name, else its index; names must be unique."""
    ids = [name if name else str(i) for i, name in enumerate(names)]
    seen = set()
    for sid in ids:
        if sid in seen:
            raise EdgeError(f"two streams are called {sid!r}; give each stream in --sources a different name")
        seen.add(sid)
    return ids


def stream_path(template: Optional[str], sid: str, flag: str, count: int) -> Optional[str]:
    """``out_{stream}.mp4`` -> ``out_cam1.mp4``. With several streams the template must hold ``{stream}``."""
    if not template:
        return None
    if STREAM_FIELD not in template:
        if count > 1:
            raise EdgeError(f"{flag} {template}: {count} streams would write one file; put {STREAM_FIELD} in "
                            f"the name (e.g. {flag} out_{STREAM_FIELD}{Path(template).suffix}), which becomes "
                            "each stream's index or name")
        return template
    return template.replace(STREAM_FIELD, sid)


class _TeeCounters:
    """Counters for one stream's capture thread: every count goes to the stream and to the run's totals."""

    def __init__(self, *targets: Any) -> None:
        self._targets = targets

    def add(self, name: str, n: int = 1) -> None:
        for counters in self._targets:
            counters.add(name, n)


class _TeeTracker:
    """Capture latency of one stream, also added (under a lock: several capture threads) to the run's."""

    def __init__(self, own: Any, total: Any, lock: threading.Lock) -> None:
        self._own, self._total, self._lock = own, total, lock

    def add(self, seconds: float) -> None:
        self._own.add(seconds)
        with self._lock:
            self._total.add(seconds)


@dataclass
class _CaptureStats:
    counters: Any
    stages: Any


@dataclass
class Stream:
    """One source of a multi-stream run, with its own stats and sinks."""

    sid: str
    source: FrameSource
    sinks: List[Sink] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)
    capture: Optional[CaptureThread] = None
    ended: str = ""
    taken: int = 0
    last_frame: float = 0.0
    watch: Optional[ScoreWatch] = None  # its highest score (``edge.runtime.score_watch``), set by the loop

    @property
    def live(self) -> bool:
        return bool(self.source.live)

    def summary(self) -> dict:
        d = self.stats.to_dict()
        out = {"id": self.sid, "source": self.source.describe(), "live": self.live, "frames": d["frames"],
               "detections": d["detections"], "max_score": d["max_score"], "e2e_fps": d["e2e_fps"], "steady_fps": d["steady_fps"],
               "glass_to_glass_ms": d["glass_to_glass_ms"], "end_reason": self.ended or "stopped"}
        if self.capture is not None and self.capture.reopens:
            out["reopens"] = self.capture.reopens
        return out


class MultiStreamLoop:
    """The batched loop over several streams. ``run()`` returns the run's ``RunStats`` (totals at the top,
    per-stream figures in ``stats.streams``); sources must be open, sinks are closed at the end, the
    backend is not. ``stop``/``request_stop``/``stopping`` as ``edge.runtime.pipeline.Pipeline``."""

    def __init__(self, streams: Sequence[Stream], backend: Backend, config: Optional[PipelineConfig] = None,
                 *, stats: Optional[RunStats] = None, class_names: Optional[Sequence[str]] = None) -> None:
        if not streams:
            raise EdgeError("no stream to run")
        self.streams = list(streams)
        self.backend = backend
        self.config = (config or PipelineConfig()).validate()
        self.stats = stats or RunStats()
        fmt = backend.input_format
        self.preprocessor = Preprocessor(fmt)
        names = list(class_names) if class_names is not None else list(backend.info.class_names if backend.info else [])
        self.drawer = Drawer(names)
        n = len(self.streams)
        self.batch_limit = n if fmt.batch == -1 else max(1, fmt.batch)
        cap = getattr(backend, "max_batch", None)
        if fmt.batch == -1 and cap and cap < n:
            log.warning("%s takes batches of at most %d: its %d streams are inferred in batches of %d (rebuild "
                        "with `edge build --batch 1,%d,%d` to batch them all)", backend.describe(), cap, n, cap, n, n)
            self.batch_limit = max(1, int(cap))
        self.workers = self.config.infer_workers
        if self.workers > 1 and not getattr(backend, "concurrent_infer", False):
            raise EdgeError(f"{backend.describe()} runs one inference at a time; --infer-workers {self.workers} "
                            "needs a backend that takes concurrent calls (ONNX Runtime): use --infer-workers 1")
        dtype = self.preprocessor.new_buffer().dtype
        self._batches = [np.zeros(fmt.tensor_shape(self.batch_limit), dtype) for _ in range(self.workers)]
        self._gather_lock = threading.Lock()  # one worker gathers at a time: each frame goes to one batch
        self._lock = threading.Lock()  # the stage trackers and the worker count, shared by the workers
        self._workers_ready = 0
        self._workers_running = self.workers
        if fmt.batch == 1 and n > 1:
            log.warning("%s has batch 1: its %d streams are inferred one after another, not batched (export "
                        "with --dynamic-batch or --batch %d to batch them)", backend.describe(), n, n)
        self._out: "queue.Queue[Any]" = queue.Queue(maxsize=self.config.queue_size)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._requested = ""
        self._errors: List[BaseException] = []
        self.end_reason = ""
        self._had_sinks = any(s.sinks for s in self.streams)
        for s in self.streams:  # each stream says once when it saw nothing; the total is recorded only
            s.watch = ScoreWatch.for_backend(backend, self.config.conf_threshold, stream=s.sid)
        self.score_watch = ScoreWatch.for_backend(backend, self.config.conf_threshold, warn=False)
        self._ready = threading.Event()  # the backend is bound and warm
        self._go = threading.Event()  # the capture threads run

    # -- control (the Pipeline's interface, for the signal handlers) -------------------------------
    def stop(self, reason: str = "") -> None:
        if reason and not self.end_reason:
            self.end_reason = reason
        self._stop.set()

    def request_stop(self, reason: str) -> None:
        self._requested = self._requested or reason

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or bool(self._requested)

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self._abort.set()
        self._stop.set()

    # -- capture -----------------------------------------------------------------------------------
    def _start_captures(self) -> None:
        qs, cfg = self.config.queue_size, self.config
        lock = threading.Lock()
        for s in self.streams:
            tee = _CaptureStats(_TeeCounters(s.stats.counters, self.stats.counters),
                                {"capture": _TeeTracker(s.stats.stages["capture"], self.stats.stages["capture"], lock)})
            pool = FramePool(2 * qs + 5)
            s.capture = CaptureThread(s.source, pool, tee, queue_size=qs, reopen=cfg.reopen,
                                      max_frames=cfg.max_frames if not s.live else 0, nice=cfg.host_nice)
            s.stats.start()
            s.last_frame = time.perf_counter()
            s.capture.start()

    def _all_done(self) -> bool:
        files = [s for s in self.streams if not s.live]
        if files:
            return all(s.ended for s in files)
        return all(s.ended for s in self.streams)

    def _take(self, s: Stream) -> Optional[FramePacket]:
        """The stream's next frame (a live stream's newest) as a packet, or None (none yet, or ended)."""
        cfg = self.config
        assert s.capture is not None
        if cfg.max_frames and s.taken >= cfg.max_frames:
            s.ended = s.ended or f"--max-frames {cfg.max_frames} reached"
            return None
        item = s.capture.get(timeout=0.0)
        now = time.perf_counter()
        if item.status is CaptureStatus.TIMEOUT:
            if now - s.last_frame > cfg.capture_timeout_s:
                s.stats.counters.add("capture_timeouts")
                self.stats.counters.add("capture_timeouts")
                log.warning("stream %s: no frame from %s for %.1f s; still waiting", s.sid, s.source.describe(),
                            cfg.capture_timeout_s)
                s.last_frame = now
            return None
        if item.status is CaptureStatus.END:
            s.ended = "end of stream"
            log.info("stream %s ended", s.sid)
            return None
        if item.status is CaptureStatus.ERROR:
            s.ended = f"capture error: {item.error}"
            log.error("stream %s: %s", s.sid, item.error)
            return None
        s.last_frame = now
        packet = FramePacket(item.index, item.frame, item.timestamp, seq=s.taken)  # type: ignore[arg-type]
        s.taken += 1
        return packet

    def _gather(self) -> List[Tuple[Stream, FramePacket]]:
        """At most one frame from every stream that has one; waits (briefly) only while none has."""
        while not self._stop.is_set():
            taken = []
            for s in self.streams:
                if not s.ended:
                    packet = self._take(s)
                    if packet is not None:
                        taken.append((s, packet))
            if taken or self._all_done():
                return taken
            if self._requested:
                self.stop(self._requested)
            time.sleep(0.002)
        return []

    # -- infer -------------------------------------------------------------------------------------
    def _infer_batch(self, taken: List[Tuple[Stream, FramePacket]], buffer: np.ndarray) -> None:
        """Preprocess every frame into its row of the batch tensor, infer in chunks of ``batch_limit``."""
        pre, infer_t = self.stats.stages["preprocess"], self.stats.stages["infer"]
        fixed = self.backend.input_format.batch > 0
        for start in range(0, len(taken), self.batch_limit):
            chunk = taken[start:start + self.batch_limit]
            rows = self.batch_limit if fixed else len(chunk)
            batch = buffer[:rows]
            times = []
            for i, (_, packet) in enumerate(chunk):
                t0 = time.perf_counter()
                packet.params = self.preprocessor(packet.frame, batch[i:i + 1])
                times.append(time.perf_counter() - t0)
            if fixed and len(chunk) < rows:
                batch[len(chunk):] = 0
            t0 = time.perf_counter()
            det = self.backend.infer(batch)
            elapsed = time.perf_counter() - t0
            with self._lock:
                for t in times:
                    pre.add(t)
                infer_t.add(elapsed)
            for i, (s, packet) in enumerate(chunk):
                packet.detections = _Row(det, i)  # type: ignore[assignment]
                s.stats.counters.add("inferred")
                self.stats.counters.add("inferred")

    def _probe_batch(self, worker: int) -> None:
        """A dynamic batch the backend cannot run at the streams' count (a TensorRT engine whose profile,
        or whose buffers, are for batch 1): said once, and the streams run one after another."""
        if self.batch_limit == 1 or self.backend.input_format.batch != -1:
            return
        try:
            self.backend.infer(self._batches[worker])
        except ModelError as exc:
            with self._lock:
                if self.batch_limit > 1:
                    log.warning("%s does not run a batch of %d (%s): the streams are inferred one after another",
                                self.backend.describe(), self.batch_limit, exc)
                    self.batch_limit = 1

    def _infer_loop(self, worker: int) -> None:
        """One inference worker: gather a batch (one worker at a time), preprocess it into this worker's
        buffer, infer, pass it on. The last worker to finish passes the end marker on."""
        taken: List[Tuple[Stream, FramePacket]] = []
        try:
            self.backend.bind_thread()
            if self.config.warmup:
                self.backend.warmup(self.config.warmup)
            self._probe_batch(worker)
            with self._lock:
                self._workers_ready += 1
                if self._workers_ready == self.workers:
                    self._ready.set()
            self._go.wait()
            while not self._stop.is_set():
                with self._gather_lock:
                    taken = self._gather()
                if not taken:
                    break
                self._infer_batch(taken, self._batches[worker])
                if not self._put(taken):
                    self._discard(taken)
                    taken = []
                    break
                taken = []
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._discard([t for t in taken if t[1].detections is None])
            self._release([t for t in taken if t[1].detections is not None])
            self._fail(exc)
        finally:
            if self._errors:
                self._ready.set()
            try:
                self.backend.release_thread()
            except Exception as exc:  # noqa: BLE001 - never mask the run's own outcome
                log.warning("releasing the inference thread failed: %s", exc)
            with self._lock:
                self._workers_running -= 1
                last = self._workers_running == 0
            if last:
                self._put(_STOP)

    def _put(self, item: Any) -> bool:
        while True:
            try:
                self._out.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._abort.is_set():
                    return False

    def _release(self, taken: Sequence[Tuple[Stream, FramePacket]]) -> None:
        for s, packet in taken:
            assert s.capture is not None
            s.capture.pool.release(packet.frame)

    def _discard(self, taken: Sequence[Tuple[Stream, FramePacket]]) -> None:
        self._release(taken)
        for s, _ in taken:
            s.stats.counters.add("discarded")
            self.stats.counters.add("discarded")

    # -- output ------------------------------------------------------------------------------------
    def _output_loop(self) -> None:
        """Each stream's frames in capture order (with several workers, batches can finish out of order):
        a reorder buffer per stream keyed by the packet's ``seq``."""
        stages = self.stats.stages
        pending: dict = {s.sid: {} for s in self.streams}
        next_seq = {s.sid: 0 for s in self.streams}
        try:
            lower_thread_priority(self.config.host_nice)
            while True:
                try:
                    item = self._out.get(timeout=0.1)
                except queue.Empty:
                    if self._abort.is_set():
                        return
                    continue
                if item is _STOP:
                    return
                for s, packet in item:
                    pending[s.sid][packet.seq] = (s, packet)
                for s, _ in item:
                    waiting = pending[s.sid]
                    while next_seq[s.sid] in waiting:
                        st, packet = waiting.pop(next_seq[s.sid])
                        next_seq[s.sid] += 1
                        self._output_one(st, packet, stages)
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._fail(exc)
        finally:
            for waiting in pending.values():
                self._release(list(waiting.values()))
            self._drain()

    def _output_one(self, s: Stream, packet: FramePacket, stages: Any) -> None:
        t0 = time.perf_counter()
        n = postprocess(packet, self.config.conf_threshold)
        s.stats.counters.add("detections", n)
        self.stats.counters.add("detections", n)
        for watch in (s.watch, self.score_watch):
            if watch is not None:
                watch.observe(packet.peak, n)
        t1 = time.perf_counter()
        if self.config.draw:
            fps = s.stats.fps_meter.fps if self.config.show_fps else None
            self.drawer.draw(packet.frame, packet.boxes, packet.scores, packet.classes, fps=fps)
        t2 = time.perf_counter()
        for sink in list(s.sinks):
            try:
                sink.write(packet)
            except OutputError as exc:
                log.error("%s", exc)
                self.stats.output_failed(f"{sink.name}[{s.sid}]", exc)
                s.sinks.remove(sink)
                if self._had_sinks and not any(x.sinks for x in self.streams):
                    self.stop(f"output failed ({exc.cause})")
                continue
            if sink.wants_stop:
                self.stop(f"stopped from the {sink.name} sink")
        now = time.perf_counter()
        stages["postprocess"].add(t1 - t0)
        stages["draw"].add(t2 - t1)
        stages["sink"].add(now - t2)
        s.stats.frame_out(packet.capture_ts, now)
        self.stats.frame_out(packet.capture_ts, now)
        assert s.capture is not None
        s.capture.pool.release(packet.frame)

    def _drain(self) -> None:
        while True:
            try:
                item = self._out.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self._release(item)

    # -- run ---------------------------------------------------------------------------------------
    def run(self) -> RunStats:
        infers = [threading.Thread(target=self._infer_loop, args=(i,), daemon=True,
                                   name="edge-infer" if self.workers == 1 else f"edge-infer-{i}")
                  for i in range(self.workers)]
        output = threading.Thread(target=self._output_loop, name="edge-output", daemon=True)
        self.stats.meta.setdefault("source", " + ".join(s.source.describe() for s in self.streams))
        self.stats.meta.setdefault("backend", self.backend.describe())
        self.stats.meta["streams"] = len(self.streams)
        self.stats.meta["infer_workers"] = self.workers
        for t in infers:
            t.start()
        while not self._ready.wait(0.1):
            if not any(t.is_alive() for t in infers):
                break
        if self._errors:  # binding or warming up the backend failed: nothing ran, release everything
            self._go.set()
            for t in infers:
                t.join()
            self._close(start=False)
            raise self._errors[0]
        self.stats.meta["batch"] = self.batch_limit  # after the workers' probe (_probe_batch)
        self.stats.start()
        try:
            self._start_captures()
        finally:
            self._go.set()
        output.start()
        self._wait(infers, output)
        if self._errors and not isinstance(self._errors[0], KeyboardInterrupt):
            raise self._errors[0]
        return self.stats

    def _wait(self, infers: Sequence[threading.Thread], output: threading.Thread) -> None:
        next_log = time.perf_counter() + self.config.log_every_s if self.config.log_every_s > 0 else float("inf")
        try:
            while output.is_alive():
                output.join(timeout=0.1)
                if self._requested and not self._stop.is_set():
                    self.stop(self._requested)
                now = time.perf_counter()
                if now >= next_log:
                    log.info("%s | %s", self.stats.format_line(), ", ".join(
                        f"{s.sid} {s.stats.fps_meter.fps:.1f} FPS" for s in self.streams))
                    next_log = now + self.config.log_every_s
        except KeyboardInterrupt:
            self.stop("interrupted (Ctrl-C)")
            log.warning("interrupted: finishing the frames in flight and closing outputs")
        finally:
            self.stop()
            deadline = time.perf_counter() + 10.0
            for t in (*infers, output):
                t.join(max(0.1, deadline - time.perf_counter()))
            self._close(start=True)

    def _close(self, *, start: bool) -> None:
        ok = all(isinstance(e, KeyboardInterrupt) for e in self._errors)  # a failed run's error says more
        for s in self.streams:
            if s.capture is not None:
                s.capture.stop()
                s.capture.join(5.0)
                if not s.capture.alive:
                    s.capture.discard_pending()
            elif not start:
                s.source.close()
            s.stats.stop()
            if s.watch is not None:
                s.watch.finish(s.stats, warn=ok)
            for sink in s.sinks:
                try:
                    sink.close()
                except OutputError as exc:
                    log.error("%s", exc)
                    self.stats.output_failed(f"{sink.name}[{s.sid}]", exc)
                except Exception as exc:  # noqa: BLE001 - close every sink even if one fails
                    log.error("closing %s sink of stream %s failed: %s", sink.name, s.sid, exc)
        self.stats.stop()
        self.score_watch.finish(self.stats)
        if not self.end_reason:
            failed = [f"stream {s.sid}: {s.ended[len('capture error: '):]}" for s in self.streams
                      if s.ended.startswith("capture error")]
            ends = {s.ended for s in self.streams if s.ended}
            if failed:  # as with one stream: a source that could not be read makes the exit status 1
                self.end_reason = "capture error: " + "; ".join(failed)
            elif ends == {"end of stream"}:
                self.end_reason = "end of stream"
            else:
                self.end_reason = "; ".join(f"{s.sid}: {s.ended}" for s in self.streams if s.ended) or "stopped"
        self.stats.meta["end_reason"] = self.end_reason
        reopens = sum(s.capture.reopens for s in self.streams if s.capture is not None)
        if reopens:
            self.stats.meta["reopens"] = reopens
        self.stats.streams = [s.summary() for s in self.streams]


class _Row:
    """Image ``i`` of a batch's detections, as ``postprocess`` reads them (``image(0)``)."""

    def __init__(self, det: Any, i: int) -> None:
        self._det, self._i = det, i

    def image(self, _: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._det.image(self._i)

    def peak(self, _: int) -> Optional[float]:
        return self._det.peak(self._i)
