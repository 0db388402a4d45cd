"""A whole bench: ``run_bench`` times every case on one source (the bench's own clip when none is given) and
returns the JSON-ready document; ``run_command`` is the ``edge bench`` verb on top of it (the CLI's options
to cases, the document written as JSON, the terminal summary and the reports)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from edge.artifacts import model_file_kind
from edge.bench.backends import default_backend_factory
from edge.bench.clip import first_frame, make_clip
from edge.bench.config import BackendFactory, BenchCase, BenchConfig, FixedSizeError
from edge.bench.machine import load_average, machine_info
from edge.bench.measure import bench_case
from edge.bench.report import command_line, format_summary, write_reports
from edge.errors import EdgeError

if TYPE_CHECKING:
    import argparse

log = logging.getLogger(__name__)


def run_bench(cases: Sequence[BenchCase], config: Optional[BenchConfig] = None, source: Optional[str] = None,
              *, backend_factory: BackendFactory = default_backend_factory,
              workdir: Optional[Path] = None) -> Dict[str, Any]:
    """Bench every case on one source (the bench's own clip when ``source`` is None).

    Returns the JSON document: the first case's figures at the top level (``raw_fps``, ``e2e_fps``,
    ``naive_fps``, ``rss_growth_mb``, ratios, ``stages_ms``...), every case under ``cases``, and
    ``machine``, ``source`` and ``config``.
    """
    config = (config or BenchConfig()).validate()
    if not cases:
        raise EdgeError("nothing to bench: pass a model (or install the bundled one)")
    load_before = load_average()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-bench-")))
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        if source is None:
            clip = make_clip(workdir / "clip.mp4", config.frames, size=config.clip_size, fps=config.clip_fps,
                             unique=config.clip_unique)
            source_uri = str(clip)
            source_info: Dict[str, Any] = {"uri": "generated", "kind": "file",
                                           "generated": {"size": list(config.clip_size), "fps": config.clip_fps,
                                                         "frames": config.frames, "codec": "mp4v",
                                                         "distinct_frames": min(config.clip_unique, config.frames)}}
        else:
            from edge.runtime.sources import parse_source

            spec = parse_source(source)
            if spec.live:
                raise EdgeError(
                    f"--source {source} is a live source; the bench compares loops on the same frames, so it needs "
                    "a video file, an image folder or a finite test:// pattern (test://WxH?frames=N)"
                )
            if spec.kind == "test" and not spec.params.get("frames"):
                raise EdgeError("--source test:// must be finite for a bench: add ?frames=N (N >= --frames)")
            source_uri = source
            source_info = {"uri": source, "kind": spec.kind}
        frame = first_frame(source_uri)
        source_info["frame_size"] = [int(frame.shape[1]), int(frame.shape[0])]
        results: List[Dict[str, Any]] = []
        skipped: List[Dict[str, str]] = []
        for c in cases:
            try:
                results.append(bench_case(c, source_uri, config, workdir, backend_factory))
            except FixedSizeError as exc:
                if len(cases) == 1:
                    raise
                log.warning("skipping %s: %s", c.label(), exc)
                skipped.append({"case": c.label(), "reason": str(exc)})
        if not results:
            raise FixedSizeError("no case could run: " + "; ".join(s["reason"] for s in skipped))
    machine = machine_info(config.threads)
    machine["load_average_before"] = load_before
    doc: Dict[str, Any] = {}
    first = results[0]
    for key in ("raw_fps", "e2e_fps", "naive_fps", "rss_growth_mb", "e2e_steady_fps", "e2e_over_raw",
                "e2e_over_naive", "naive_over_raw", "raw_ort_defaults_fps", "e2e_over_raw_ort_defaults",
                "raw_parallel_fps", "e2e_over_raw_parallel", "raw_best_fps", "e2e_over_raw_best", "inference_plan",
                "cpu_ms_per_frame", "raw_latency_ms", "stages_ms", "naive_stages_ms", "glass_to_glass_ms", "model",
                "precision", "input"):
        doc[key] = first[key]
    doc.update({
        "machine": machine,
        "source": source_info,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "cases": results,
        "skipped": skipped,
    })
    return doc


def run_command(args: argparse.Namespace, *, backend_factory: BackendFactory = default_backend_factory,
                echo: Callable[[str], None]) -> int:
    """The ``edge bench`` verb on parsed options (``edge.cli.bench``): one case per model and ``--imgsz``,
    ``run_bench``, the document written to ``--json`` with the command that reproduces it, the summary and
    the written paths passed to ``echo`` (the CLI prints them), and the reports with ``--report-dir``."""
    from edge.artifacts import atomic_write_json

    config = BenchConfig(
        frames=args.frames, repeats=args.repeats, threads=args.threads, queue_size=args.queue_size,
        raw_iterations=args.raw_iterations,
        host_nice=args.host_nice, infer_workers=args.infer_workers, draw=not args.no_draw, raw_reference=not args.no_raw_reference, video_suffix=args.video_suffix, clip_size=tuple(args.clip_size),
    ).validate()
    out = Path(args.json)
    if not out.parent.exists():
        raise EdgeError(f"--json {out}: folder {out.parent} does not exist")
    if args.models:
        models = [Path(m) for m in args.models]
    else:
        from edge.bundled import bundled_model

        models = [bundled_model()]
    for m in models:
        if not m.exists():
            raise EdgeError(f"model {m} not found")
        model_file_kind(m)  # an unknown suffix is refused before the clip is made
    sizes: List[Optional[Tuple[int, int]]] = list(args.imgsz) if args.imgsz else [None]
    cases = [BenchCase(m, s) for m in models for s in sizes]
    log.info("benching %d case(s): %s", len(cases), ", ".join(c.label() for c in cases))
    doc = run_bench(cases, config, args.source, backend_factory=backend_factory,
                    workdir=Path(args.workdir) if args.workdir else None)
    doc["command"] = command_line(args)
    atomic_write_json(out, doc)
    echo(format_summary(doc))
    echo(f"wrote {out}")
    if args.report_dir:
        paths = write_reports(doc, args.report_dir)
        echo(f"wrote {paths['markdown']} and {paths['chart']}")
    return 0


__all__ = ["run_bench", "run_command"]
