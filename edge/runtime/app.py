"""``edge-run`` as a function: source -> capture thread -> preprocess -> infer -> draw -> sinks.

``run_live(RunOptions(...))`` opens the model (``edge.runtime.open_model``: the backend that fits the file,
the bundled model when none is given), the source (``edge.runtime.sources``), the sinks (window, video
file, detections JSON lines, MJPEG server), runs ``edge.runtime.pipeline.Pipeline`` until the source ends,
``max_frames`` or a signal (SIGTERM finishes the run like Ctrl-C: outputs finalized), and writes the stats.

Outputs are checked before the model or the source is opened (``check_outputs``: a folder given as a
file, a missing or read-only folder, a full disk). From the first Ctrl-C or SIGTERM to the stats file
written, further signals only say that the run is finishing: a second Ctrl-C does not lose the outputs or
the stats. A sink that fails during the run is recorded in the stats and makes the exit status 2.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from edge.artifacts import check_output_path
from edge.bundled import bundled_model
from edge.errors import EdgeError
from edge.runtime.open_model import inference_plan, open_backend
from edge.runtime.pipeline import Pipeline, PipelineConfig
from edge.runtime.plan import DecodePlan, plan_decode
from edge.runtime.serve import MjpegServer, serve_access
from edge.runtime.sinks import DisplaySink, JsonLinesSink, VideoFileSink, display_available
from edge.runtime.sources import camera_spec, open_source, parse_source
from edge.runtime.sources.cameras import CsiSource
from edge.runtime.sources.gst import DECODE_CHOICES, software_equivalent
from edge.runtime.sources.gst import Pipeline as GstPipeline
from edge.runtime.stats import RunStats
from edge.runtime.streams import MultiStreamLoop, Stream, read_sources_file, stream_ids, stream_path

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """What ``edge-run`` was asked to do; the fields are its flags (``edge-run --help``).

    model: a deploy ONNX, engine, pre-NMS ONNX or checkpoint (None: the bundled model).
    source: a source URI (``edge.runtime.sources.parse_source``) or a list of them; None: V4L2 ``camera``
    (default 0), an index or a list of them. sources: a file of URIs, one a line (``NAME=URI`` allowed).
    stream_order: the CLI's ("source", URI) / ("camera", N) in the order given (the stream indexes).
    Two or more streams run batched in one loop (``edge.runtime.streams``).
    """

    model: Optional[str] = None
    source: Union[str, List[str], None] = None
    camera: Union[int, str, List[Union[int, str]], None] = None  # an index, or "N?size=WxH&fps=F&format=mjpeg"
    sources: Optional[str] = None
    stream_order: Optional[List[Tuple[str, Any]]] = None
    max_frames: int = 0
    headless: bool = False
    output: Optional[str] = None
    stats_json: Optional[str] = None
    detections_out: Optional[str] = None
    serve: Optional[str] = None
    serve_auth: Optional[str] = None
    serve_public: bool = False
    backend: str = "auto"
    conf: float = 0.0
    threads: int = 0
    infer_workers: int = 0
    host_nice: Optional[int] = None
    queue_size: int = 2
    no_draw: bool = False
    log_every: float = 5.0
    cuda_graph: bool = False
    no_engine_check: bool = False
    # decode path (edge.runtime.plan.plan_decode): --decode, --print-pipeline, --target
    decode: str = "auto"
    print_pipeline: bool = False
    target: Optional[str] = None

    def validate(self) -> "RunOptions":
        if self.max_frames < 0:
            raise EdgeError(f"--max-frames must be >= 0, found {self.max_frames}")
        if self.decode not in DECODE_CHOICES:
            raise EdgeError(f"--decode {self.decode!r}: expected one of {', '.join(DECODE_CHOICES)}")
        if self.serve or self.serve_auth or self.serve_public:  # before the model opens: one clear line
            serve_access(self.serve, self.serve_auth, self.serve_public)
        return self


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _stream_specs(opts: RunOptions) -> List[Tuple[Optional[str], Any]]:
    """(name or None, SourceSpec) of every stream, in the order given: --source/--camera (as typed, when
    the CLI recorded it), then the --sources file; none given: --camera 0."""
    order = list(opts.stream_order or [])
    if not order:
        order = [("source", u) for u in _as_list(opts.source)] + [("camera", c) for c in _as_list(opts.camera)]
    entries: List[Tuple[Optional[str], Any]] = []
    for kind, value in order:
        entries.append((None, parse_source(value) if kind == "source" else camera_spec(value)))
    if opts.sources:
        entries += [(name, parse_source(uri)) for name, uri in read_sources_file(opts.sources)]
    return entries or [(None, camera_spec(0))]


def _source_spec(opts: RunOptions) -> Any:
    return _stream_specs(opts)[0][1]


def check_outputs(opts: RunOptions, ids: Sequence[str] = ("0",)) -> None:
    """Refuse outputs that cannot be written, before the model and the source are opened: each of
    --output, --detections-out, --stats-json must name a file (not a folder) in an existing, writable
    folder on a disk with space (``edge.artifacts.check_output_path``: OutputError naming the cause).
    With several streams (``ids``), --output and --detections-out are templates: every stream's file."""
    for flag, template in (("--output", opts.output), ("--detections-out", opts.detections_out)):
        for sid in ids:
            path = stream_path(template, sid, flag, len(ids))
            if path:
                check_output_path(path, flag)
    if opts.stats_json:
        check_output_path(opts.stats_json, "--stats-json")


def build_sinks(opts: RunOptions, class_names: List[str], fps: float, stats: Any,
                announce: Callable[[str], None] = log.info) -> List[Any]:
    sinks: List[Any] = []
    try:
        if not opts.headless:
            ok, why = display_available()
            if ok:
                sinks.append(DisplaySink())
            else:
                log.warning("%s", why)
        if opts.output:
            sinks.append(VideoFileSink(opts.output, fps=fps))
        if opts.detections_out:
            sinks.append(JsonLinesSink(opts.detections_out, class_names))
        if opts.serve:
            host, port, credentials = serve_access(opts.serve, opts.serve_auth, opts.serve_public)
            server = MjpegServer(host, port, class_names=class_names, fps_fn=lambda: stats.fps_meter.fps,
                                 credentials=credentials, public=opts.serve_public)
            sinks.append(server)
            announce(f"serving on {server.url}")
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


def run_live(opts: RunOptions, announce: Callable[[str], None] = log.info) -> int:
    """Open the model and the source, run the pipeline to the end, write the stats; the exit status:
    0 (the source ended or ``max_frames`` reached), 1 (capture error), 2 (an output failed: named in the
    log and in the stats' ``output_errors``), 130 (interrupted).

    ``announce`` receives the lines a user watches for (the live page's URL, the run summary).
    """
    opts.validate()
    if opts.print_pipeline:
        announce(print_pipeline(opts))
        return 0
    entries = _stream_specs(opts)
    if len(entries) > 1:
        return run_streams(opts, entries, announce)
    sid = stream_ids([entries[0][0]])[0]  # one stream: {stream} in an output name is its name or 0
    opts = replace(opts, output=stream_path(opts.output, sid, "--output", 1),
                   detections_out=stream_path(opts.detections_out, sid, "--detections-out", 1))
    check_outputs(opts)
    spec = entries[0][1]
    model = Path(opts.model) if opts.model else bundled_model()
    plan = inference_plan(model, opts.backend, live=spec.live, workers=opts.infer_workers, threads=opts.threads,
                          host_nice=opts.host_nice)
    config = PipelineConfig(queue_size=opts.queue_size, conf_threshold=opts.conf, draw=not opts.no_draw,
                            max_frames=opts.max_frames, log_every_s=opts.log_every, infer_workers=plan.workers,
                            host_nice=plan.host_nice).validate()
    log.info("inference: %s", plan.describe())
    backend = open_backend(model, opts.backend, threads=plan.threads, spin=False,
                           cuda_graph=opts.cuda_graph, check_key=not opts.no_engine_check)
    saved = None
    try:
        try:
            fmt = backend.input_format
            decode = plan_decode(spec, decode=opts.decode, target=opts.target, target_hw=(fmt.height, fmt.width))
            log.info("decode: %s", decode.describe())
            source = open_source(spec, target_hw=(fmt.height, fmt.width), decode_threads=plan.decode_threads,
                                 decode=decode)
            source.open()  # a missing camera or file fails here, before any thread starts
            log.info("source: %s%s", source.describe(), " (live: latest frame only)" if source.live else "")
            stats = RunStats()
            stats.meta.update({"model": str(model), "source": spec.describe(),
                               "decode": _decode_stats(decode, spec, source)})
            sinks = build_sinks(opts, backend.info.class_names, source.fps or 30.0, stats, announce)
            pipeline = Pipeline(source, backend, sinks, config, stats=stats, source_opened=True)
            saved = _install_signals(pipeline)
            stats = pipeline.run()
        finally:
            backend.close()
        announce(stats.format_summary())
        if opts.stats_json:
            stats.write_json(opts.stats_json)
            log.info("wrote %s", opts.stats_json)
    finally:
        _restore_signals(saved)  # only now: a second Ctrl-C must not cut the outputs or the stats short
    return _exit_status(stats)


def stream_sinks(opts: RunOptions, sid: str, count: int, class_names: List[str], fps: float) -> List[Any]:
    """One stream's sinks in a multi-stream run: a window titled with its id, its own video file and
    detections file (the --output / --detections-out templates with ``{stream}`` filled in)."""
    sinks: List[Any] = []
    try:
        if not opts.headless and display_available()[0]:
            sinks.append(DisplaySink(title=f"edge-run [{sid}]"))
        video = stream_path(opts.output, sid, "--output", count)
        if video:
            sinks.append(VideoFileSink(video, fps=fps))
        dets = stream_path(opts.detections_out, sid, "--detections-out", count)
        if dets:
            sinks.append(JsonLinesSink(dets, class_names, stream=sid))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


def run_streams(opts: RunOptions, entries: List[Tuple[Optional[str], Any]],
                announce: Callable[[str], None] = log.info) -> int:
    """``run_live`` for two or more streams: one model, one batched loop (``edge.runtime.streams``); the
    exit status as ``run_live``'s."""
    ids = stream_ids([name for name, _ in entries])
    check_outputs(opts, ids)
    model = Path(opts.model) if opts.model else bundled_model()
    # the plan for one stream of that kind: file streams only -> throughput (on a CPU: 2 workers, each
    # inferring a whole batch on cores / 2 threads), any live stream -> latency (one worker)
    live = any(spec.live for _, spec in entries)
    plan = inference_plan(model, opts.backend, live=live, workers=opts.infer_workers, threads=opts.threads,
                          host_nice=opts.host_nice)
    log.info("inference: %s; batches of up to %d streams", plan.describe(), len(ids))
    config = PipelineConfig(queue_size=opts.queue_size, conf_threshold=opts.conf, draw=not opts.no_draw,
                            max_frames=opts.max_frames, log_every_s=opts.log_every, infer_workers=plan.workers,
                            host_nice=plan.host_nice).validate()
    backend = open_backend(model, opts.backend, threads=plan.threads, spin=False,
                           cuda_graph=opts.cuda_graph, check_key=not opts.no_engine_check)
    saved = None
    streams: List[Stream] = []
    server: Optional[MjpegServer] = None
    try:
        try:
            fmt = backend.input_format
            for sid, (_, spec) in zip(ids, entries):
                source = open_source(spec, target_hw=(fmt.height, fmt.width), decode_threads=plan.decode_threads)
                streams.append(Stream(sid, source))
                source.open()  # a missing camera or file fails here, before any thread starts
                log.info("stream %s: %s%s", sid, source.describe(), " (live: latest frame only)" if source.live else "")
            stats = RunStats()
            stats.meta.update({"model": str(model), "source": " + ".join(e[1].describe() for e in entries)})
            for st in streams:
                st.sinks = stream_sinks(opts, st.sid, len(ids), backend.info.class_names, st.source.fps or 30.0)
            if opts.serve:  # one server: the grid at /, each stream at /s/ID/
                host, port, credentials = serve_access(opts.serve, opts.serve_auth, opts.serve_public)
                server = MjpegServer(host, port, class_names=backend.info.class_names, credentials=credentials,
                                     public=opts.serve_public, title=f"{len(ids)} streams")
                for st in streams:
                    st.sinks.append(server.channel(st.sid, fps_fn=lambda m=st.stats.fps_meter: m.fps))
                announce(f"serving on {server.url} ({len(ids)} streams; each at {server.url}s/ID/)")
            loop = MultiStreamLoop(streams, backend, config, stats=stats)
            saved = _install_signals(loop)
            stats = loop.run()
        except BaseException:
            for st in streams:
                st.source.close()
                for sink in st.sinks:
                    sink.close()
            raise
        finally:
            if server is not None:
                server.close()
            backend.close()
        announce(stats.format_summary())
        announce(", ".join(f"stream {d['id']}: {d['frames']['written']} frames, {d['e2e_fps']:.1f} FPS"
                           for d in stats.streams))
        if opts.stats_json:
            stats.write_json(opts.stats_json)
            log.info("wrote %s", opts.stats_json)
    finally:
        _restore_signals(saved)
    return _exit_status(stats)


def _exit_status(stats: RunStats) -> int:
    reason = stats.meta.get("end_reason", "")
    if stats.output_errors:
        return 2
    if reason.startswith("capture error"):
        return 1
    return 130 if reason.startswith("interrupted") else 0


def _decode_stats(decode: DecodePlan, spec: Any, source: Any) -> Dict[str, Any]:
    """The decode path for the stats JSON, with the source's own resolution where it is known (the size
    the camera sends: ``?size=`` of a stream, else the first frames' size on a path that does not scale)."""
    info = decode.as_dict()
    own = spec.size() if spec.kind in ("rtsp", "v4l2") else None
    scaled = decode.pipeline is not None and "width=(int)" in decode.pipeline.description
    if own is None and source.frame_size and not scaled:
        own = source.frame_size
    info["source_size"] = list(own) if own else None
    return info


def print_pipeline(opts: RunOptions) -> str:
    """``--print-pipeline``: the GStreamer pipeline ``edge`` would open for the source on ``--target``
    (default jetson), one shell-quoted line for ``gst-launch-1.0``, credentials masked. Scales to the
    model's input where the model can be opened here (else no scaling)."""
    spec = _source_spec(opts)
    target_hw = None
    try:
        model = Path(opts.model) if opts.model else bundled_model()
        backend = open_backend(model, opts.backend, threads=1, spin=False, check_key=False)
        try:
            target_hw = (backend.input_format.height, backend.input_format.width)
        finally:
            backend.close()
    except EdgeError as exc:
        log.warning("no scaling in the printed pipeline: the model's input size is unknown (%s)", exc)
    if spec.kind == "csi":  # always a pipeline: nvarguscamerasrc -> nvvidconv
        return GstPipeline.parse(CsiSource(spec, target_hw).build_pipeline()).redacted()
    if spec.kind == "file" and not Path(spec.path).is_file():
        raise EdgeError(f"--print-pipeline: video file {spec} not found; pass an existing H.264/H.265 file")
    decode = plan_decode(spec, decode="auto", target="jetson", gstreamer=True, target_hw=target_hw)
    if decode.path != "gstreamer" or decode.pipeline is None:
        raise EdgeError(f"--print-pipeline: {spec} has no GStreamer pipeline ({decode.reason}); edge-run opens it "
                        "through OpenCV")
    pipeline = software_equivalent(decode.pipeline) if opts.target == "software" else decode.pipeline
    return pipeline.redacted()


def _install_signals(pipeline: Any) -> Optional[Any]:
    """SIGTERM (systemd stop, docker stop) and Ctrl-C (SIGINT) finish the run cleanly: frames in flight
    completed, outputs finalized, stats written. Until the previous handlers come back (after the stats),
    a second signal only says the run is finishing: it must not cut the finalization short."""
    if threading.current_thread() is not threading.main_thread():
        return None
    reasons = {signal.SIGTERM: "terminated (SIGTERM)", signal.SIGINT: "interrupted (Ctrl-C)"}

    def handler(signum: int, frame: Any) -> None:
        if pipeline.stopping:
            log.warning("already stopping: finishing the outputs and the stats (Ctrl-\\ quits at once, losing "
                        "them)")
            return
        log.warning("%s: finishing the frames in flight and closing outputs", reasons[signum].split(" ")[0])
        pipeline.request_stop(reasons[signum])

    return {sig: signal.signal(sig, handler) for sig in reasons}


def _restore_signals(saved: Optional[Any]) -> None:
    if saved is not None:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
