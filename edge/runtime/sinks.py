"""Where annotated frames and detections go: a window, a video file, JSON lines, an MJPEG web page.

Every sink gets ``write(packet)`` from the pipeline's sink thread (one thread: a window and a video
writer must stay on the thread that opened them) and ``close()`` exactly once, also on Ctrl-C/SIGTERM.
A packet (``edge.runtime.pipeline.FramePacket``) carries the annotated frame (uint8 [H, W, 3] BGR), its
index and capture time, and the detections in frame pixels (boxes [n, 4] xyxy, scores [n], classes [n]).

* ``DisplaySink`` opens a window only when a display exists: OpenCV's ``imshow`` without one aborts the
  whole process (SIGABRT, uncatchable), so ``display_available`` checks DISPLAY/WAYLAND_DISPLAY first.
* ``VideoFileSink`` writes to a hidden temporary name beside the target and renames it on close, so an
  interrupted run never leaves a half-written file under the real name.
* ``JsonLinesSink`` writes one JSON object per frame (``--detections-out``).
* ``MjpegServer`` (the live page) is in ``edge.runtime.serve``.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge.errors import EdgeError

log = logging.getLogger(__name__)


class Sink(abc.ABC):
    """One output of the pipeline."""

    name = "sink"

    @abc.abstractmethod
    def write(self, packet: Any) -> None:
        """Consume one annotated frame. Must not keep a reference to ``packet.frame`` after returning."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release. Called once, also on interruption."""

    @property
    def wants_stop(self) -> bool:
        """True when the user asked to quit through this sink (a key in the window)."""
        return False


# -- display -------------------------------------------------------------------------------------


def display_available(environ: Optional[Dict[str, str]] = None) -> Tuple[bool, str]:
    """(True, '') when a window can be opened; else (False, why). Never touches cv2.imshow."""
    env = os.environ if environ is None else environ
    if sys.platform.startswith(("win", "darwin")):
        return True, ""
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return True, ""
    return False, (
        "no display (neither DISPLAY nor WAYLAND_DISPLAY is set), so no window is opened. "
        "Use --output FILE to write an annotated video, --serve :8080 to watch in a browser, or "
        "--headless to silence this message"
    )


def _gui_available() -> bool:
    info = cv2.getBuildInformation()
    m = re.search(r"GUI:\s*(\S+)", info)
    return bool(m) and m.group(1).upper() not in ("NONE", "NO")


class DisplaySink(Sink):
    """An OpenCV window; 'q' or Esc stops the run. Construct only after ``display_available()``."""

    name = "display"

    def __init__(self, title: str = "edge-run") -> None:
        ok, why = display_available()
        if not ok:
            raise EdgeError(why)
        if not _gui_available():
            raise EdgeError(
                "this OpenCV has no GUI backend (opencv-python-headless?); install opencv-python, or use "
                "--output/--serve instead of a window"
            )
        self.title = title
        self._stop = False
        self._opened = False

    def write(self, packet: Any) -> None:
        if not self._opened:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
            self._opened = True
        cv2.imshow(self.title, packet.frame)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self._stop = True

    @property
    def wants_stop(self) -> bool:
        return self._stop

    def close(self) -> None:
        if self._opened:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            self._opened = False


# -- video file ----------------------------------------------------------------------------------

_FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


def partial_path(path: Union[str, Path]) -> Path:
    """The hidden temporary name a video is written under: ``dir/.NAME.partial.EXT`` (same suffix,
    so OpenCV picks the same container)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.partial{p.suffix}")


# containers whose muxer takes an MJPEG stream under its own tag (mp4's does not: it would mislabel it)
_RAW_MJPEG_SUFFIXES = (".avi", ".mkv", ".mov")


def raw_mjpeg_supported() -> bool:
    """True when this OpenCV can mux already-encoded frames (``VIDEOWRITER_PROP_RAW_VIDEO``, OpenCV >= 4.7
    with FFMPEG)."""
    return hasattr(cv2, "VIDEOWRITER_PROP_RAW_VIDEO") and bool(re.search(r"FFMPEG:\s*YES", cv2.getBuildInformation()))


class VideoFileSink(Sink):
    """Annotated frames to a video file, finalized by rename on close.

    fourcc: defaults by suffix (.mp4 -> mp4v, .avi -> MJPG); fps: the source's nominal rate.
    The writer opens at the first frame (its size decides the video size); frames of another size are
    resized to it.

    MJPEG (.avi) is the cheapest to write: each frame is JPEG-encoded by ``cv2.imencode`` (libjpeg-turbo,
    ~0.6 ms for 640x480 on the project's CPU) and FFmpeg only muxes it (``VIDEOWRITER_PROP_RAW_VIDEO``),
    instead of FFmpeg's own MJPEG encoder (~1.6 ms) or MPEG-4 part 2 for .mp4 (~1.4 ms). Same file
    format; ``encoder`` says which path was taken (OpenCV builds without raw muxing fall back to FFmpeg's
    encoder). ``jpeg_quality``: 0-100.
    """

    name = "video"

    def __init__(self, path: Union[str, Path], fps: float = 30.0, fourcc: Optional[str] = None,
                 jpeg_quality: int = 90) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC_BY_SUFFIX and not fourcc:
            raise EdgeError(
                f"--output {self.path}: unknown video type {suffix or '(none)'}; use one of "
                f"{', '.join(sorted(_FOURCC_BY_SUFFIX))}"
            )
        if not self.path.parent.exists():
            raise EdgeError(f"--output {self.path}: folder {self.path.parent} does not exist")
        self.fourcc = fourcc or _FOURCC_BY_SUFFIX[suffix]
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.tmp_path = partial_path(self.path)
        if not 0 <= int(jpeg_quality) <= 100:
            raise EdgeError(f"jpeg_quality must be in [0, 100], found {jpeg_quality}")
        self._jpeg_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        self.encoder = ""
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: Optional[Tuple[int, int]] = None
        self._resized: Optional[np.ndarray] = None
        self.frames = 0
        self.closed = False

    def _open(self, w: int, h: int) -> None:
        code = cv2.VideoWriter_fourcc(*self.fourcc)
        if self.fourcc == "MJPG" and self.path.suffix.lower() in _RAW_MJPEG_SUFFIXES and raw_mjpeg_supported():
            writer = cv2.VideoWriter(str(self.tmp_path), cv2.CAP_FFMPEG, code, self.fps, (w, h),
                                     [int(cv2.VIDEOWRITER_PROP_RAW_VIDEO), 1])
            if writer.isOpened():
                self._writer, self._size, self.encoder = writer, (w, h), "imencode+mux"
                return
            writer.release()
            log.debug("raw MJPEG muxing refused for %s; using FFmpeg's encoder", self.tmp_path)
        writer = cv2.VideoWriter(str(self.tmp_path), code, self.fps, (w, h))
        if not writer.isOpened():
            raise EdgeError(
                f"OpenCV cannot write {self.path.suffix} video with codec {self.fourcc} to {self.tmp_path}; "
                "try --output out.avi (MJPG) or check that this OpenCV has FFMPEG"
            )
        self._writer = writer
        self._size = (w, h)
        self.encoder = "opencv"

    def write(self, packet: Any) -> None:
        frame = packet.frame
        h, w = frame.shape[:2]
        if self._writer is None:
            self._open(w, h)
        if (w, h) != self._size:
            sw, sh = self._size  # type: ignore[misc]
            if self._resized is None or self._resized.shape[:2] != (sh, sw):
                self._resized = np.empty((sh, sw, 3), np.uint8)
            cv2.resize(frame, (sw, sh), dst=self._resized)
            frame = self._resized
        if self.encoder == "imencode+mux":
            ok, buf = cv2.imencode(".jpg", frame, self._jpeg_params)
            if not ok:
                raise EdgeError(f"JPEG encoding of frame {self.frames} for {self.path} failed")
            self._writer.write(buf.reshape(1, -1))  # type: ignore[union-attr]
        else:
            self._writer.write(frame)  # type: ignore[union-attr]
        self.frames += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames and self.tmp_path.exists():
            os.replace(self.tmp_path, self.path)
            log.info("wrote %s (%d frames)", self.path, self.frames)
        else:
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()
            log.warning("no frames were written; %s not created", self.path)


# -- JSON lines ----------------------------------------------------------------------------------


class JsonLinesSink(Sink):
    """One line per frame::

        {"frame": 0, "time": 0.0123, "width": 640, "height": 480,
         "detections": [{"box": [x1, y1, x2, y2], "score": 0.91, "class_id": 2, "label": "Platelets"}]}

    Boxes are xyxy in source-frame pixels (rounded to 0.01 px); ``time`` is seconds since the run's
    first capture.
    """

    name = "jsonl"

    def __init__(self, path: Union[str, Path], class_names: Sequence[str] = ()) -> None:
        self.path = Path(path)
        if not self.path.parent.exists():
            raise EdgeError(f"--detections-out {self.path}: folder {self.path.parent} does not exist")
        self.class_names = list(class_names)
        self._fh = open(self.path, "w", encoding="utf-8", buffering=1 << 16)
        self._t0: Optional[float] = None
        self.lines = 0

    def write(self, packet: Any) -> None:
        if self._t0 is None:
            self._t0 = packet.capture_ts
        names = self.class_names
        dets = [
            {
                "box": [round(v, 2) for v in box],
                "score": round(score, 4),
                "class_id": cls,
                "label": names[cls] if 0 <= cls < len(names) else str(cls),
            }
            for box, score, cls in zip(packet.boxes.tolist(), packet.scores.tolist(), packet.classes.tolist())
        ]
        h, w = packet.frame.shape[:2]
        record = {"frame": packet.index, "time": round(packet.capture_ts - self._t0, 4), "width": w,
                  "height": h, "detections": dets}
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
