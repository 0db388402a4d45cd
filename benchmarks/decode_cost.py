"""CPU cost per frame of each decode path `edge-run` can take (issue 15), on the machine it runs on.

    python benchmarks/decode_cost.py [--size 1920x1080] [--frames 150] [--out 320x180] [--rounds 3]

Generates the test clips with GStreamer (H.264 in MP4 and MJPEG, colour bars scrolling sideways), then measures the
CPU time (user + system of every thread, so decoder threads count) per frame of:

1. opencv path, H.264: OpenCV's FFmpeg decodes the full frame (1 decoder thread, what edge-run uses when
   inference runs on the CPU), then ``cv2.resize`` to the network size (the letterbox's resize);
2. opencv path, MJPEG (a USB camera's mode): ``cv2.imdecode`` of each JPEG, then ``cv2.resize``;
3. gstreamer path with software elements (what ``--decode gstreamer`` runs without NVIDIA's elements):
   the software equivalent of edge's pipeline (``avdec_h264``/``jpegdec`` -> ``videoconvert ! videoscale``
   -> BGR), run by ``gst-launch-1.0`` into ``fakesink``, CPU time of the process;
4. the CPU work left on a Jetson when NVDEC decodes and the VIC scales: ``videoconvert`` of the scaled
   BGRx frame to BGR, the one step of edge's Jetson pipeline that stays on the CPU (measured here on a
   generated BGRx stream at the output size).

Each figure is the median of ``--rounds`` rounds. Prints a Markdown table (benchmarks/RESULTS.md).
Needs gst-launch-1.0 with Debian's plugins (see tests/runtime/sources/conftest.py).
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

import cv2
import numpy as np


def _gst(line: str) -> float:
    """CPU seconds (user + sys) of ``gst-launch-1.0 line`` as a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["bash", "-c", f"gst-launch-1.0 -q {line}"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _cpu(fn: Callable[[], int]) -> Tuple[float, int]:
    before = time.process_time()
    n = fn()
    return time.process_time() - before, n


def make_clips(folder: Path, size: Tuple[int, int], frames: int) -> Tuple[Path, Path]:
    w, h = size
    raw = f"videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=8 ! video/x-raw, width={w}, height={h}, framerate=30/1"
    h264 = folder / "clip.mp4"
    mjpeg = folder / "clip.mjpeg"  # concatenated JPEGs: a USB camera's MJPEG stream
    subprocess.run(["bash", "-c", f"gst-launch-1.0 -q {raw} ! x264enc ! h264parse ! mp4mux ! "
                                  f"filesink location={shlex.quote(str(h264))}"], check=True)
    subprocess.run(["bash", "-c", f"gst-launch-1.0 -q {raw} ! jpegenc quality=85 ! "
                                  f"filesink location={shlex.quote(str(mjpeg))}"], check=True)
    return h264, mjpeg


def split_jpegs(data: bytes) -> List[bytes]:
    out, start = [], 0
    while True:
        end = data.find(b"\xff\xd9", start)
        if end < 0:
            return out
        out.append(data[start:end + 2])
        start = end + 2


def measure(size: Tuple[int, int], frames: int, out: Tuple[int, int], rounds: int) -> List[Tuple[str, float]]:
    results: List[Tuple[str, List[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        h264, mjpeg = make_clips(Path(tmp), size, frames)
        jpegs = split_jpegs(mjpeg.read_bytes())

        def opencv_h264(resize: bool) -> int:
            cap = cv2.VideoCapture(str(h264), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
            n = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if resize:
                    cv2.resize(frame, out, interpolation=cv2.INTER_LINEAR)
                n += 1
            cap.release()
            return n

        def opencv_mjpeg(resize: bool) -> int:
            for buf in jpegs:
                frame = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
                if resize:
                    cv2.resize(frame, out, interpolation=cv2.INTER_LINEAR)
            return len(jpegs)

        frame1080 = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)

        def resize_only() -> int:
            for _ in range(frames):
                cv2.resize(frame1080, out, interpolation=cv2.INTER_LINEAR)
            return frames

        tail = (f"videoconvert ! videoscale ! video/x-raw, width={out[0]}, height={out[1]}, format=BGRx ! "
                "videoconvert ! video/x-raw, format=BGR ! fakesink sync=false")
        gst_h264 = f"filesrc location={shlex.quote(str(h264))} ! qtdemux ! h264parse ! avdec_h264 max-threads=1 ! {tail}"
        gst_mjpeg = (f"filesrc location={shlex.quote(str(mjpeg))} ! image/jpeg, framerate=30/1 ! jpegparse ! "
                     f"jpegdec ! {tail}")
        jetson_left = (f"videotestsrc num-buffers={frames} ! video/x-raw, width={out[0]}, height={out[1]}, "
                       "format=BGRx ! videoconvert ! video/x-raw, format=BGR ! fakesink sync=false")
        empty = f"videotestsrc num-buffers={frames} ! video/x-raw, width={out[0]}, height={out[1]}, " \
                "format=BGRx ! fakesink sync=false"
        cases: List[Tuple[str, Callable[[], float]]] = [
            ("opencv: FFmpeg H.264 decode (1 thread)", lambda: _cpu(lambda: opencv_h264(False))[0]),
            ("opencv: FFmpeg H.264 decode + cv2.resize", lambda: _cpu(lambda: opencv_h264(True))[0]),
            ("opencv: cv2.imdecode MJPEG", lambda: _cpu(lambda: opencv_mjpeg(False))[0]),
            ("opencv: cv2.imdecode MJPEG + cv2.resize", lambda: _cpu(lambda: opencv_mjpeg(True))[0]),
            ("cv2.resize alone (full frame -> out)", lambda: _cpu(resize_only)[0]),
            ("gstreamer software: avdec_h264 + videoscale -> BGR", lambda: _gst(gst_h264)),
            ("gstreamer software: jpegdec + videoscale -> BGR", lambda: _gst(gst_mjpeg)),
            ("jetson path, CPU part: videoconvert BGRx -> BGR at out size",
             lambda: _gst(jetson_left) - _gst(empty)),
        ]
        for name, fn in cases:
            results.append((name, [fn() for _ in range(rounds)]))
    return [(name, statistics.median(v) / frames * 1000.0) for name, v in results]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1920x1080", help="the camera's frame size")
    p.add_argument("--out", default="320x180", help="what the network takes (16:9 into 320x320)")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    size = tuple(int(x) for x in args.size.split("x"))
    out = tuple(int(x) for x in args.out.split("x"))
    rows = measure(size, args.frames, out, args.rounds)  # type: ignore[arg-type]
    print(f"| path ({args.size} -> {args.out}, {args.frames} frames, median of {args.rounds}) | CPU ms / frame |")
    print("| --- | --- |")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
