"""``edge bench``: raw inference vs the ``edge-run`` loop vs a naive loop, on one model, input and machine.

    edge bench [MODEL ...] [--source SRC] [--frames N] [--imgsz HxW ...] [--threads N] [--infer-workers N] [--repeats N]
               --json OUT [--report-dir DIR]

MODEL: deploy ONNX files (NMS inside), TensorRT engines, pre-NMS ONNX files or training checkpoints (made
into deploy graphs as ``edge-run`` does); default: the bundled model. Several models (e.g. the fp32, fp16
and int8 files of one detector) and several ``--imgsz`` (for graphs with a free input size) give one case
each. Without ``--source`` a clip is generated first. Writes the JSON document (``edge.bench.run_bench``);
with ``--report-dir`` also ``bench.md`` (a Markdown table to paste into an issue) and ``bench.png``.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any, List, Optional, Tuple

from edge.errors import EdgeError

HELP = "benchmark raw inference, the edge-run loop and a naive loop on the same model and input"

log = logging.getLogger("edge.bench")


def _imgsz(text: str) -> Tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"--imgsz {text!r}: expected HxW such as 320x320, or one number")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"--imgsz {text!r}: sizes must be positive")
    return h, w


def _clip_size(text: str) -> Tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"--clip-size {text!r}: expected WxH such as 640x480")
    return int(m.group(1)), int(m.group(2))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="deploy ONNX, engine, pre-NMS ONNX or checkpoint (default: the bundled model); "
                        "several give one case each")
    p.add_argument("--source", default=None, metavar="SRC",
                   help="a video file, an image folder or test://WxH?frames=N (default: a generated clip)")
    p.add_argument("--frames", type=int, default=300, metavar="N", help="frames per e2e / naive run (300)")
    p.add_argument("--imgsz", type=_imgsz, nargs="+", default=None, metavar="HxW",
                   help="input sizes to bench: graphs with a free size (edge export --dynamic-hw) run at each, "
                        "a fixed-size graph at its own size only (the other sizes are skipped for it)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="ONNX Runtime intra-op threads of raw and naive, and of each e2e worker when given "
                        "(0: all cores for raw and naive, edge-run's choice for e2e)")
    p.add_argument("--infer-workers", type=int, default=0, metavar="N",
                   help="edge-run's inference workers in e2e (0: edge-run's choice for a file source)")
    p.add_argument("--repeats", type=int, default=3, metavar="N", help="interleaved rounds; medians reported (3)")
    p.add_argument("--raw-iterations", type=int, default=0, metavar="N",
                   help="inference calls per raw measurement (0: as many as --frames)")
    p.add_argument("--json", required=True, metavar="OUT", help="write the results document here")
    p.add_argument("--report-dir", default=None, metavar="DIR", help="also write bench.md and bench.png here")
    p.add_argument("--queue-size", type=int, default=2, metavar="N", help="edge-run's queue size (2)")
    p.add_argument("--host-nice", type=int, default=None, metavar="N",
                   help="nice increment of edge-run's host-stage threads (default: edge-run's choice, "
                        "10 with one inference worker, 0 with several)")
    p.add_argument("--no-draw", action="store_true", help="do not annotate frames in e2e and naive")
    p.add_argument("--no-raw-reference", action="store_true",
                   help="skip timing ONNX Runtime alone with its own defaults (spinning threads) as a second ceiling")
    p.add_argument("--video-suffix", default=".avi", choices=(".avi", ".mp4", ".mkv"),
                   help="container of the annotated videos written during the runs (.avi: MJPEG, the cheapest "
                        "to write; .mp4: MPEG-4 part 2)")
    p.add_argument("--clip-size", type=_clip_size, default=(640, 480), metavar="WxH",
                   help="size of the generated clip (640x480)")
    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="keep the generated clip here (default: a temporary folder, removed)")


def _backend_factory(model: Path, imgsz: Optional[Tuple[int, int]], threads: int) -> Any:
    """``edge.bench.default_backend_factory``, after making a deploy graph from a checkpoint or a pre-NMS
    ONNX exactly as ``edge-run`` does."""
    from edge.artifacts import CHECKPOINT_SUFFIXES
    from edge.bench import default_backend_factory
    from edge.runtime.backend import PreNmsModelError
    from edge.runtime.open_model import deploy_from_checkpoint, deploy_from_pre_nms

    if model.suffix.lower() in CHECKPOINT_SUFFIXES:
        model = deploy_from_checkpoint(model)
    try:
        return default_backend_factory(model, imgsz, threads)
    except PreNmsModelError as exc:
        return default_backend_factory(deploy_from_pre_nms(model, exc), imgsz, threads)


def command_line(args: argparse.Namespace) -> str:
    """The ``edge bench`` command that reproduces this run (recorded in the document)."""
    parts = ["edge bench"] + [str(m) for m in (args.models or [])]
    if args.source:
        parts += ["--source", str(args.source)]
    parts += ["--frames", str(args.frames)]
    if args.imgsz:
        parts += ["--imgsz"] + [f"{h}x{w}" for h, w in args.imgsz]
    parts += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    if args.raw_iterations:
        parts += ["--raw-iterations", str(args.raw_iterations)]
    if args.queue_size != 2:
        parts += ["--queue-size", str(args.queue_size)]
    if args.infer_workers:
        parts += ["--infer-workers", str(args.infer_workers)]
    if args.host_nice is not None:
        parts += ["--host-nice", str(args.host_nice)]
    if args.no_draw:
        parts.append("--no-draw")
    if args.no_raw_reference:
        parts.append("--no-raw-reference")
    if args.video_suffix != ".avi":
        parts += ["--video-suffix", args.video_suffix]
    if tuple(args.clip_size) != (640, 480):
        parts += ["--clip-size", f"{args.clip_size[0]}x{args.clip_size[1]}"]
    parts += ["--json", str(args.json)]
    if args.report_dir:
        parts += ["--report-dir", str(args.report_dir)]
    return " ".join(parts)


def format_summary(doc: dict) -> str:
    """A few lines for the terminal: one per case."""
    from edge.bench_report import case_label, machine_line

    lines = [machine_line(doc)]
    for c in doc["cases"]:
        cpu = c.get("cpu_ms_per_frame", {})
        lines.append(
            f"{case_label(c, True)}: raw {c['raw_fps']:.1f} FPS"
            + (f" (ORT defaults {c['raw_ort_defaults_fps']:.1f})" if c.get("raw_ort_defaults_fps") else "")
            + (f" (parallel {c['raw_parallel_fps']:.1f})" if c.get("raw_parallel_fps") else "")
            + f", e2e {c['e2e_fps']:.1f} FPS "
            f"({c['e2e_over_raw']:.2f}x raw, {c.get('e2e_over_raw_best') or 0:.2f}x the best raw, "
            f"{c['e2e_over_naive']:.2f}x naive), naive {c['naive_fps']:.1f} FPS, "
            f"RSS growth {c['rss_growth_mb']:.1f} MB, CPU ms/frame raw {cpu.get('raw', 0):.1f} "
            f"e2e {cpu.get('e2e', 0):.1f} naive {cpu.get('naive', 0):.1f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from edge.artifacts import atomic_write_json
    from edge.bench import BenchCase, BenchConfig, run_bench

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
    sizes: List[Optional[Tuple[int, int]]] = list(args.imgsz) if args.imgsz else [None]
    cases = [BenchCase(m, s) for m in models for s in sizes]
    log.info("benching %d case(s): %s", len(cases), ", ".join(c.label() for c in cases))
    doc = run_bench(cases, config, args.source, backend_factory=_backend_factory,
                    workdir=Path(args.workdir) if args.workdir else None)
    doc["command"] = command_line(args)
    atomic_write_json(out, doc)
    print(format_summary(doc), flush=True)
    print(f"wrote {out}", flush=True)
    if args.report_dir:
        from edge.bench_report import write_reports

        paths = write_reports(doc, args.report_dir)
        print(f"wrote {paths['markdown']} and {paths['chart']}", flush=True)
    return 0


__all__ = ["HELP", "add_arguments", "command_line", "format_summary", "run"]


if __name__ == "__main__":  # pragma: no cover - `edge bench` is the entry point
    import sys

    from edge.cli.main import main

    sys.exit(main(["bench"] + sys.argv[1:]))
