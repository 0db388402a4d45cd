"""The timed cases of ``edge bench``: ``measure_raw`` (inference alone), ``measure_raw_parallel`` (inference
alone from several threads), ``measure_e2e`` (the ``edge-run`` Pipeline) and ``measure_naive`` (the one-thread
loop), and ``bench_case``, which runs them in interleaved rounds on one case and reduces the rounds to
medians and ratios."""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.bench.backends import default_backend_factory, precision_of
from edge.bench.clip import first_frame
from edge.bench.config import MODES, BackendFactory, BenchCase, BenchConfig
from edge.bench.machine import RssSampler, load_average, process_cpu_s
from edge.errors import EdgeError
from edge.runtime.plan import InferencePlan, plan_inference

log = logging.getLogger(__name__)


def _latency_summary(samples_s: Sequence[float]) -> Dict[str, float]:
    if not samples_s:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    a = np.asarray(samples_s, np.float64) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def measure_raw(backend: Any, frame: np.ndarray, iterations: int, warmup: int = 5) -> Dict[str, Any]:
    """``iterations`` inference calls back to back on ``frame`` preprocessed once; FPS and call latency."""
    from edge.model_input import Preprocessor

    pre = Preprocessor(backend.input_format)
    batch = pre.new_buffer()
    pre(frame, batch)
    backend.bind_thread()
    try:
        for _ in range(max(0, warmup)):
            backend.infer(batch)
        lat = np.empty(int(iterations), np.float64)
        c0 = process_cpu_s()
        t0 = time.perf_counter()
        prev = t0
        for i in range(int(iterations)):
            backend.infer(batch)
            now = time.perf_counter()
            lat[i] = now - prev
            prev = now
        elapsed = prev - t0
        cpu = process_cpu_s() - c0
    finally:
        backend.release_thread()
    return {"fps": round(iterations / elapsed, 3) if elapsed > 0 else 0.0, "iterations": int(iterations),
            "elapsed_s": round(elapsed, 4), "latency_ms": _latency_summary(lat.tolist()),
            "cpu_ms_per_frame": round(cpu / iterations * 1000.0, 3)}


def measure_raw_parallel(backend: Any, frame: np.ndarray, iterations: int, workers: int, warmup: int = 5
                         ) -> Dict[str, Any]:
    """``iterations`` inference calls in all, from ``workers`` threads at once (each with its own input),
    back to back: the throughput ceiling of a pipeline with that many inference workers."""
    from edge.model_input import Preprocessor

    if workers < 2 or not getattr(backend, "concurrent_infer", False):
        raise EdgeError(f"{backend.describe()}: raw parallel needs >= 2 workers and a backend with concurrent_infer")
    pre = Preprocessor(backend.input_format)
    batches = []
    for _ in range(workers):
        batches.append(pre.new_buffer())
        pre(frame, batches[-1])
    share = [int(iterations) // workers + (1 if i < int(iterations) % workers else 0) for i in range(workers)]
    start = threading.Barrier(workers + 1)
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            backend.bind_thread()
            try:
                for _ in range(max(0, warmup)):
                    backend.infer(batches[i])
                start.wait()
                for _ in range(share[i]):
                    backend.infer(batches[i])
            finally:
                backend.release_thread()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=work, args=(i,), name=f"edge-bench-raw-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    c0 = process_cpu_s()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = process_cpu_s() - c0
    if errors:
        raise errors[0]
    return {"fps": round(iterations / elapsed, 3) if elapsed > 0 else 0.0, "iterations": int(iterations),
            "workers": int(workers), "elapsed_s": round(elapsed, 4),
            "cpu_ms_per_frame": round(cpu / iterations * 1000.0, 3)}


def _video_sink(path: Path, fps: float) -> Any:
    from edge.runtime.sinks import VideoFileSink

    return VideoFileSink(path, fps=fps)


def measure_e2e(backend: Any, source_uri: str, frames: int, out_video: Path, config: BenchConfig,
                plan: Optional[InferencePlan] = None) -> Dict[str, Any]:
    """The ``edge-run`` Pipeline from ``source_uri`` for ``frames`` frames, drawing (per ``config``) and
    writing ``out_video``, with ``plan``'s inference workers, host priority and decoder threads (default: one
    worker, host threads at nice +10, FFmpeg's decoder threads); returns the run's statistics plus
    resident-memory figures."""
    from edge.runtime.pipeline import Pipeline, PipelineConfig
    from edge.runtime.sources import open_source, parse_source
    from edge.runtime.stats import RunStats

    source = open_source(parse_source(source_uri), decode_threads=plan.decode_threads if plan is not None else 0)
    source.open()
    stats = RunStats()
    workers = plan.workers if plan is not None else 1
    nice = plan.host_nice if plan is not None else (10 if config.host_nice is None else config.host_nice)
    pcfg = PipelineConfig(queue_size=config.queue_size, draw=config.draw, max_frames=frames, log_every_s=0.0,
                          warmup=config.warmup, host_nice=nice, infer_workers=workers)
    try:
        sink = _video_sink(out_video, source.fps or config.clip_fps)
        try:
            pipeline = Pipeline(source, backend, [sink], pcfg, stats=stats, source_opened=True)
        except BaseException:
            sink.close()
            raise
    except BaseException:
        source.close()
        raise
    # the pipeline closes the source (capture thread) and the sink (end of run), also on errors
    with RssSampler(lambda: stats.counters.written, config.rss_interval_s) as rss:
        c0 = process_cpu_s()
        pipeline.run()
        cpu = process_cpu_s() - c0
    out = stats.to_dict()
    out["cpu_ms_per_frame"] = round(cpu / max(1, stats.counters.written) * 1000.0, 3)
    out.update(rss.summary(warm_frames=min(100, max(1, frames // 10))))
    out["fps"] = out["e2e_fps"]
    return out


def measure_naive(backend: Any, source_uri: str, frames: int, out_video: Path, config: BenchConfig
                  ) -> Dict[str, Any]:
    """``naive_loop``: capture, preprocess, infer, postprocess, draw and write one frame at a time."""
    from edge.runtime.pipeline import naive_loop
    from edge.runtime.sources import open_source, parse_source

    source = open_source(parse_source(source_uri))
    source.open()
    sink = _video_sink(out_video, source.fps or config.clip_fps)
    try:
        backend.bind_thread()
        try:
            backend.warmup(config.warmup)
        finally:
            backend.release_thread()
        c0 = process_cpu_s()
        stats = naive_loop(source, backend, [sink], max_frames=frames, draw=config.draw)
        cpu = process_cpu_s() - c0
    finally:
        sink.close()
        source.close()
    out = stats.to_dict()
    out["cpu_ms_per_frame"] = round(cpu / max(1, stats.counters.written) * 1000.0, 3)
    out["fps"] = out["e2e_fps"]
    return out


def _median(values: Sequence[float]) -> float:
    return round(float(statistics.median(values)), 3) if values else 0.0


def _stage_table(stages: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    return {name: {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "mean_ms": s["mean_ms"]}
            for name, s in stages.items()}


def plan_for(backend: Any, config: BenchConfig) -> InferencePlan:
    """The inference plan ``edge-run`` would use for ``backend`` on a file source, per ``config``."""
    providers = getattr(backend, "providers", None) or ["CPUExecutionProvider"]
    return plan_inference(
        getattr(backend, "name", "backend"), live=False, concurrent=bool(getattr(backend, "concurrent_infer", False)),
        gpu=providers[0] != "CPUExecutionProvider", workers=config.infer_workers, threads=config.threads,
        host_nice=config.host_nice,
    )


def bench_case(case: BenchCase, source_uri: str, config: BenchConfig, workdir: Path,
               backend_factory: BackendFactory = default_backend_factory) -> Dict[str, Any]:
    """Raw, e2e and naive on one case, ``config.repeats`` interleaved rounds; medians and ratios.

    raw and naive run on a session with ``config.threads`` (0: every core); e2e on the session its
    inference plan asks for (the same one when the threads agree), raw parallel on that one too.
    """
    backend = backend_factory(case.model, case.imgsz, config.threads)
    e2e_backend = backend
    reference = None
    try:
        fmt = backend.input_format
        frame = first_frame(source_uri)
        plan = plan_for(backend, config)
        if plan.threads != config.threads:
            e2e_backend = backend_factory(case.model, case.imgsz, plan.threads)
        log.info("%s e2e inference: %s", case.label(), plan.describe())
        reference = _reference_backend(backend, config)
        rounds: List[Dict[str, Any]] = []
        details: Dict[str, List[Dict[str, Any]]] = {m: [] for m in MODES}
        for r in range(config.repeats):
            got, figures = _bench_round(r, case, backend, e2e_backend, reference, frame, source_uri, config,
                                        workdir, plan)
            for mode in MODES:
                details[mode].append(got[mode])
            rounds.append(figures)
        return _case_result(case, backend, e2e_backend, fmt, plan, rounds, details)
    finally:
        backend.close()
        if e2e_backend is not backend:
            e2e_backend.close()
        if reference is not None:
            reference.close()


def _reference_backend(backend: Any, config: BenchConfig) -> Any:
    """ONNX Runtime alone with its own defaults (all cores, spinning threads) on the same graph, the second
    ceiling timed in each round; None unless ``config.raw_reference`` and ``backend`` is ONNX Runtime."""
    if config.raw_reference and getattr(backend, "name", "") == "onnxruntime":
        from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions

        return OnnxRuntimeBackend(backend.info.path, OrtOptions(threads=0, spin=True),
                                  sidecar=dict(backend.info.sidecar))
    return None


def _measure_mode(mode: str, backend: Any, e2e_backend: Any, frame: np.ndarray, source_uri: str,
                  config: BenchConfig, workdir: Path, plan: InferencePlan) -> Dict[str, Any]:
    """One measurement of ``mode`` (raw, e2e or naive); the annotated video e2e and naive write is removed."""
    if mode == "raw":
        return measure_raw(backend, frame, config.iterations, config.warmup)
    video = workdir / f"{mode}{config.video_suffix}"
    if mode == "e2e":
        got = measure_e2e(e2e_backend, source_uri, config.frames, video, config, plan)
    else:
        got = measure_naive(backend, source_uri, config.frames, video, config)
    with contextlib.suppress(OSError):
        video.unlink()
    return got


def _bench_round(r: int, case: BenchCase, backend: Any, e2e_backend: Any, reference: Any, frame: np.ndarray,
                 source_uri: str, config: BenchConfig, workdir: Path, plan: InferencePlan
                 ) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """Round ``r`` (0-based): raw, e2e and naive in this round's order (rotated by ``r``), then the ceilings
    (ORT defaults, raw parallel). Returns each mode's measurement and the round's figures and ratios."""
    order = MODES[r % 3:] + MODES[:r % 3]
    got: Dict[str, Dict[str, Any]] = {}
    for mode in order:
        got[mode] = _measure_mode(mode, backend, e2e_backend, frame, source_uri, config, workdir, plan)
    raw, e2e, naive = (got[m]["fps"] for m in MODES)
    ref = measure_raw(reference, frame, config.iterations, config.warmup)["fps"] if reference else None
    par = (measure_raw_parallel(e2e_backend, frame, config.iterations, plan.workers, config.warmup)["fps"]
           if plan.workers > 1 else None)
    best = max(v for v in (raw, ref, par) if v)
    figures = {
        "order": list(order),
        "raw_fps": raw, "e2e_fps": e2e, "naive_fps": naive,
        "raw_ort_defaults_fps": ref,
        "raw_parallel_fps": par,
        "raw_best_fps": best,
        "e2e_over_raw_ort_defaults": round(e2e / ref, 4) if ref else None,
        "e2e_over_raw_parallel": round(e2e / par, 4) if par else None,
        "e2e_over_raw_best": round(e2e / best, 4) if best else 0.0,
        "e2e_steady_fps": got["e2e"]["steady_fps"],
        "e2e_over_raw": round(e2e / raw, 4) if raw else 0.0,
        "e2e_over_naive": round(e2e / naive, 4) if naive else 0.0,
        "naive_over_raw": round(naive / raw, 4) if raw else 0.0,
        "rss_growth_mb": got["e2e"]["rss_growth_mb"],
        "cpu_ms_per_frame": {m: got[m]["cpu_ms_per_frame"] for m in MODES},
        "load_average": load_average(),
    }
    log.info("%s round %d/%d: raw %.1f FPS, e2e %.1f FPS (%.2fx raw, %.2fx the best ceiling %.1f), "
             "naive %.1f FPS", case.label(), r + 1, config.repeats, raw, e2e, figures["e2e_over_raw"],
             figures["e2e_over_raw_best"], best, naive)
    return got, figures


def _case_result(case: BenchCase, backend: Any, e2e_backend: Any, fmt: Any, plan: InferencePlan,
                 rounds: List[Dict[str, Any]], details: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """The case's document: medians and ratios over ``rounds``, stage latencies from the median round."""
    # the round whose e2e FPS is the median supplies the stage latencies
    mid = sorted(range(len(rounds)), key=lambda i: rounds[i]["e2e_fps"])[len(rounds) // 2]
    e2e_mid, naive_mid, raw_mid = details["e2e"][mid], details["naive"][mid], details["raw"][mid]
    frames_out = [d["frames"]["written"] for d in details["e2e"]]

    def median_of(key: str) -> Optional[float]:
        values = [r[key] for r in rounds if r[key] is not None]
        return _median(values) if values else None

    return {
        "model": str(case.model),
        "model_name": case.model.name,
        "precision": precision_of(backend),
        "input": [fmt.height, fmt.width],
        "input_layout": fmt.layout,
        "backend": backend.describe(),
        "e2e_backend": e2e_backend.describe(),
        "inference_plan": asdict(plan),
        "raw_fps": _median([r["raw_fps"] for r in rounds]),
        "e2e_fps": _median([r["e2e_fps"] for r in rounds]),
        "naive_fps": _median([r["naive_fps"] for r in rounds]),
        "e2e_steady_fps": _median([r["e2e_steady_fps"] for r in rounds]),
        "e2e_over_raw": _median([r["e2e_over_raw"] for r in rounds]),
        "e2e_over_naive": _median([r["e2e_over_naive"] for r in rounds]),
        "naive_over_raw": _median([r["naive_over_raw"] for r in rounds]),
        "raw_ort_defaults_fps": median_of("raw_ort_defaults_fps"),
        "e2e_over_raw_ort_defaults": median_of("e2e_over_raw_ort_defaults"),
        "raw_parallel_fps": median_of("raw_parallel_fps"),
        "e2e_over_raw_parallel": median_of("e2e_over_raw_parallel"),
        "raw_best_fps": _median([r["raw_best_fps"] for r in rounds]),
        "e2e_over_raw_best": _median([r["e2e_over_raw_best"] for r in rounds]),
        "rss_growth_mb": max(r["rss_growth_mb"] for r in rounds),
        "cpu_ms_per_frame": {m: _median([r["cpu_ms_per_frame"][m] for r in rounds]) for m in MODES},
        "rss": {k: v for k, v in e2e_mid.items() if k.startswith("rss_")},
        "frames": min(frames_out),
        "raw_latency_ms": raw_mid["latency_ms"],
        "stages_ms": _stage_table(e2e_mid.get("stages_ms", {})),
        "glass_to_glass_ms": e2e_mid.get("glass_to_glass_ms", {}),
        "naive_stages_ms": _stage_table(naive_mid.get("stages_ms", {})),
        "naive_glass_to_glass_ms": naive_mid.get("glass_to_glass_ms", {}),
        "detections_per_frame": round(e2e_mid["detections"] / max(1, e2e_mid["frames"]["written"]), 2),
        "rounds": rounds,
    }


__all__ = ["bench_case", "measure_e2e", "measure_naive", "measure_raw", "measure_raw_parallel", "plan_for"]
