"""``edge-run``: detect objects live, from a camera, a stream, a video file or images.

    edge-run [MODEL] [--source URI ...] [--camera N ...] [--sources FILE] [--max-frames N] [--headless] [--output FILE]
             [--stats-json FILE] [--detections-out FILE]
             [--serve [HOST]:PORT [--serve-auth FILE | --serve-public]]
             [--backend {auto,onnxruntime,tensorrt}] [--infer-workers N] [--threads N] [--host-nice N]

MODEL: a deploy ONNX (NMS inside, from ``edge surgery``), a TensorRT engine (``edge build``), a pre-NMS
ONNX (NMS is appended first, into ``NAME.nms.onnx``) or a training checkpoint (exported first, into
``NAME_deploy/``, where torch is installed); without it the bundled model in ``edge/assets/`` runs
(``edge.runtime.open_model``). The backend follows the file: TensorRT for engines, ONNX Runtime (CPU, or
CUDA when present) for ONNX. Sources: see ``edge.runtime.sources`` (``test://`` needs no camera);
``--source`` and ``--camera`` repeat and mix, ``--sources FILE`` adds one URI a line: two or more streams run
batched through the one model (``edge.runtime.streams``), ``{stream}`` in --output / --detections-out
becoming each stream's index or name. How many
frames are inferred at once, on how many threads, follows the backend and the source
(``edge.runtime.plan``). The run itself is ``edge.runtime.app.run_live``; this module parses the flags.
It also serves as the ``edge run`` verb (``HELP``, ``add_arguments``, ``run``).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

HELP = "run a detector on a camera, stream, video or images: capture, infer, draw, display/save/serve"


class _Ordered(argparse.Action):
    """--source/--camera: repeatable; each value is also recorded in ``stream_order`` as typed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: Optional[str] = None) -> None:
        items = list(getattr(namespace, self.dest) or [])
        items.append(values)
        setattr(namespace, self.dest, items)
        order = list(getattr(namespace, "stream_order", None) or [])
        order.append((self.dest, values))
        namespace.stream_order = order


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="deploy ONNX (NMS inside), TensorRT engine, pre-NMS ONNX or checkpoint; "
                        "default: the bundled model")
    p.add_argument("--source", action=_Ordered, default=None, metavar="URI",
                   help="test://, a video file, an image folder or glob, v4l2:///dev/videoN, csi://N, "
                        "rtsp://... (default: --camera 0); repeat for several streams, batched in one loop")
    p.add_argument("--camera", action=_Ordered, default=None, metavar="N",
                   help="V4L2 camera /dev/videoN; a mode with 'N?size=WxH&fps=F&format=mjpeg'; repeatable, "
                        "mixes with --source")
    p.add_argument("--sources", default=None, metavar="FILE",
                   help="a text file of source URIs, one a line (NAME=URI names the stream; # comments)")
    p.set_defaults(stream_order=None)
    p.add_argument("--max-frames", type=int, default=0, metavar="N", help="stop after N frames (0: no limit)")
    p.add_argument("--headless", action="store_true", help="no window, even when a display exists")
    p.add_argument("--output", default=None, metavar="FILE",
                   help="write the annotated video (.mp4, .avi); several streams: out_{stream}.mp4")
    p.add_argument("--stats-json", default=None, metavar="FILE", help="write run statistics as JSON")
    p.add_argument("--detections-out", default=None, metavar="FILE",
                   help="write detections as JSON lines; several streams: det_{stream}.jsonl")
    p.add_argument("--serve", default=None, metavar="[HOST]:PORT",
                   help="MJPEG stream and live page over HTTP (loopback unless HOST is given), e.g. :8080, "
                        "0.0.0.0:8080, [::]:8080; beyond loopback it needs --serve-auth or --serve-public")
    access = p.add_mutually_exclusive_group()
    access.add_argument("--serve-auth", default=None, metavar="FILE",
                        help="ask viewers of --serve for a password (HTTP Basic): FILE holds one line "
                             "user:password (chmod 600)")
    access.add_argument("--serve-public", action="store_true",
                        help="serve beyond loopback without a password (anyone who can reach it sees the camera)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                   help="auto: TensorRT for engines, ONNX Runtime for ONNX")
    p.add_argument("--conf", type=float, default=0.0, metavar="T",
                   help="extra score threshold on top of the model's own")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="ONNX Runtime intra-op threads per inference (0: choose: all cores for one worker, "
                        "cores / N for N workers)")
    p.add_argument("--infer-workers", type=int, default=0, metavar="N",
                   help="frames inferred at once (0: choose: 1 for live sources and TensorRT, 2 for files on a "
                        "CPU with 2+ cores; see edge.runtime.plan)")
    p.add_argument("--host-nice", type=int, default=None, metavar="N",
                   help="nice increment of the host-stage threads (default: 10 with one inference worker, "
                        "0 with several)")
    p.add_argument("--queue-size", type=int, default=2, metavar="N", help="frames buffered between stages")
    p.add_argument("--no-draw", action="store_true", help="do not annotate frames")
    p.add_argument("--log-every", type=float, default=5.0, metavar="S",
                   help="seconds between progress lines (0: none)")
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay inference as a CUDA graph")
    p.add_argument("--decode", choices=("auto", "gstreamer", "opencv"), default="auto",
                   help="auto: GStreamer with hardware decode and scaling where this OpenCV has GStreamer and "
                        "NVIDIA's decoder is installed (Jetson), else OpenCV (FFmpeg/V4L2 on the CPU)")
    p.add_argument("--print-pipeline", action="store_true",
                   help="print the GStreamer pipeline for the source (for gst-launch-1.0) and exit")
    p.add_argument("--target", choices=("jetson", "software"), default=None,
                   help="elements of the pipeline: jetson (nvv4l2decoder, nvvidconv) or software equivalents "
                        "(default: jetson for --print-pipeline, else what is installed)")
    p.add_argument("--no-engine-check", action="store_true",
                   help="TensorRT: run an engine even when its sidecar key does not match this machine")


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from edge.runtime.app import RunOptions, run_live

    options = RunOptions(**{f.name: getattr(args, f.name) for f in fields(RunOptions)})
    return run_live(options, announce=lambda line: print(line, flush=True))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-run", description=HELP)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    add_arguments(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from edge.cli.common import run_verb

    args = build_parser().parse_args(argv)
    return run_verb(run, args)


if __name__ == "__main__":
    sys.exit(main())
