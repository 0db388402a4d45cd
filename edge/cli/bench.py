"""``edge bench``: raw inference vs the ``edge-run`` loop vs a naive loop, on one model, input and machine.

    edge bench [MODEL ...] [--source SRC] [--frames N] [--imgsz HxW ...] [--threads N] [--infer-workers N] [--repeats N]
               --json OUT [--report-dir DIR]
    edge bench [MODEL] --streams N [--frames N] [--repeats N] --json OUT

MODEL: deploy ONNX files (NMS inside), TensorRT engines, pre-NMS ONNX files or training checkpoints (made
into deploy graphs as ``edge-run`` does); default: the bundled model. Several models (e.g. the fp32, fp16
and int8 files of one detector) and several ``--imgsz`` (for graphs with a free input size) give one case
each. Without ``--source`` a clip is generated first. Writes the JSON document (``edge.bench.run_bench``);
with ``--report-dir`` also ``bench.md`` (a Markdown table to paste into an issue) and ``bench.png``.
"""

from __future__ import annotations

import argparse
import re
from typing import Tuple

HELP = "benchmark raw inference, the edge-run loop and a naive loop on the same model and input"


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
    p.add_argument("--streams", type=int, default=0, metavar="N",
                   help="instead: N file streams through one batched edge-run against N separate edge-run "
                        "processes on the same clip (--frames each, --repeats interleaved rounds); writes "
                        "batched_fps, separate_fps, batched_rss_mb, separate_rss_mb, per_stream_fps, "
                        "glass_to_glass_p99_ms (edge.bench.streams)")
    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="keep the generated clip here (default: a temporary folder, removed)")


def _echo(text: str) -> None:
    """Print one line of the verb's output (the summary, the files written) on stdout."""
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.streams:
        from edge.bench.streams import run_streams_command

        return run_streams_command(args, echo=_echo)
    from edge.bench import run_command

    return run_command(args, echo=_echo)


__all__ = ["HELP", "add_arguments", "run"]

