"""Where annotated frames and detections go: a window, a video file, JSON lines, an MJPEG web page.

Every sink gets ``write(packet)`` from the pipeline's sink thread (one thread: a window and a video
writer must stay on the thread that opened them) and ``close()`` exactly once, also on Ctrl-C/SIGTERM.
A packet (``edge.runtime.pipeline.FramePacket``) carries the annotated frame (uint8 [H, W, 3] BGR), its
index and capture time, and the detections in frame pixels (boxes [n, 4] xyxy, scores [n], classes [n]).

* ``DisplaySink`` opens a window only when a display exists: OpenCV's ``imshow`` without one aborts the
  whole process (SIGABRT, uncatchable), so ``display_available`` checks DISPLAY/WAYLAND_DISPLAY first.
* ``VideoFileSink`` writes to a hidden temporary name beside the target and renames it on close, so an
  interrupted run never leaves a half-written file under the real name.
* ``JsonLinesSink`` writes one JSON object per frame (``--detections-out``), under a hidden temporary
  name too.
* A sink that cannot write (a full disk, a folder under its name, no permission) raises
  ``edge.errors.OutputError`` naming its path and the cause, after removing its partial file: the
  pipeline then stops feeding it, records the failure in the stats and the run exits non-zero, while the
  other sinks go on. OpenCV's ``VideoWriter.write`` reports nothing, so the video sink watches the free
  space of its disk after every frame and checks the finished file before renaming it.
* ``MjpegServer`` (the live page) is in ``edge.runtime.serve``.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge.artifacts import LOW_SPACE_BYTES, check_output_path, free_bytes
from edge.errors import EdgeError, OutputError

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
        check_output_path(self.path, "--output")
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
            self._check_folder()  # a full disk or a read-only folder, rather than the codec
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
        self._check_folder()

    def _check_folder(self) -> None:
        """``VideoWriter.write`` returns nothing and FFmpeg drops what it cannot write: a disk with less
        than ``LOW_SPACE_BYTES`` free means the writer's next flush fails (or just failed)."""
        try:
            free = free_bytes(self.tmp_path.parent)
        except OSError as exc:  # the folder itself went away
            self._fail(exc)
        if free < LOW_SPACE_BYTES:
            self._fail(OSError(errno.ENOSPC, "No space left on device"))

    def _fail(self, exc: OSError, *, keep: bool = False) -> None:
        """Stop writing: release the writer, remove the partial file (a broken video; its space may be
        what the stats need) unless ``keep``, and raise the OutputError that says so."""
        self.closed = True
        if self._writer is not None:
            with contextlib.suppress(cv2.error):
                self._writer.release()
            self._writer = None
        if keep and self.tmp_path.exists():
            note = f"after {self.frames} frames; the finished video is kept as {self.tmp_path}"
        else:
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()
            note = f"after {self.frames} frames; the partial video was removed"
        raise OutputError.from_os_error(self.path, exc, what="--output", note=note)

    def _verify(self) -> Optional[str]:
        """Why the finished temporary file is not a complete video (None when it is): OpenCV must open
        it and count the frames written (a file cut short by a full disk has no index, or a wrong one)."""
        if not self.tmp_path.exists():
            return f"{self.tmp_path} is gone"
        cap = cv2.VideoCapture(str(self.tmp_path))
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) if cap.isOpened() else None
        cap.release()
        if count is None or not abs(count - self.frames) <= 1:
            return "OpenCV cannot read the finished file" if count is None else \
                f"the finished file holds {count:.0f} frames, not {self.frames}"
        return None

    def close(self) -> None:
        """Finish the file and rename it to its final name. A file the disk cut short is removed and a
        rename that fails keeps the finished file under its temporary name: OutputError either way."""
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if not self.frames:
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()
            log.warning("no frames were written; %s not created", self.path)
            return
        broken = self._verify()
        if broken is not None:  # cut short by a full disk (removed), or else unreadable (kept, to look at)
            full = self.tmp_path.parent.is_dir() and free_bytes(self.tmp_path.parent) < LOW_SPACE_BYTES
            self._fail(OSError(errno.ENOSPC, "No space left on device") if full else OSError(errno.EIO, broken),
                       keep=not full)
        try:
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            self._fail(exc, keep=True)
        log.info("wrote %s (%d frames)", self.path, self.frames)


# -- JSON lines ----------------------------------------------------------------------------------


class JsonLinesSink(Sink):
    """One line per frame::

        {"frame": 0, "time": 0.0123, "width": 640, "height": 480,
         "detections": [{"box": [x1, y1, x2, y2], "score": 0.91, "class_id": 2, "label": "Platelets"}]}

    Boxes are xyxy in source-frame pixels (rounded to 0.01 px); ``time`` is seconds since the run's
    first capture. ``stream`` (a multi-stream run): the stream's id, written as the first key of every line.
    """

    name = "jsonl"

    def __init__(self, path: Union[str, Path], class_names: Sequence[str] = (), stream: Optional[str] = None) -> None:
        self.path = check_output_path(path, "--detections-out")
        self.stream = stream
        self.class_names = list(class_names)
        self.tmp_path = partial_path(self.path)
        try:
            self._fh = open(self.tmp_path, "w", encoding="utf-8", buffering=1 << 16)
        except OSError as exc:
            raise OutputError.from_os_error(self.path, exc, what="--detections-out") from None
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
        record = {} if self.stream is None else {"stream": self.stream}
        record.update({"frame": packet.index, "time": round(packet.capture_ts - self._t0, 4), "width": w,
                  "height": h, "detections": dets})
        if self._fh.closed:
            return
        try:
            line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        except ValueError:  # NaN/inf: never written (the backend drops them first; this is the last guard)
            finite = [d for d in dets if all(math.isfinite(v) for v in (*d["box"], d["score"]))]
            log.warning("--detections-out: frame %d: %d detection(s) with NaN or infinite values left out",
                        packet.index, len(dets) - len(finite))
            line = json.dumps(dict(record, detections=finite), separators=(",", ":"), allow_nan=False)
        try:
            self._fh.write(line + "\n")
        except OSError as exc:
            self._fail(exc)
        self.lines += 1

    def _fail(self, exc: OSError) -> None:
        """Stop writing, remove the partial file (its space may be what the stats need), raise OutputError."""
        with contextlib.suppress(OSError):
            self._fh.close()  # flushing again fails too; the file is closed all the same
        with contextlib.suppress(OSError):
            self.tmp_path.unlink()
        raise OutputError.from_os_error(self.path, exc, what="--detections-out",
                                        note=f"after {self.lines} lines; the partial file was removed")

    def close(self) -> None:
        """Flush, fsync and rename the file to its final name (OutputError when that fails)."""
        if self._fh.closed:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError as exc:
            self._fail(exc)
        try:
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            raise OutputError.from_os_error(self.path, exc, what="--detections-out",
                                            note=f"the finished file is kept as {self.tmp_path}") from None
