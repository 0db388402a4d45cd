"""The bench's input clip: ``make_clip`` writes one (blood-smear renders from ``edge.synth`` when that is
installed, else the ``test://`` pattern), ``first_frame`` reads the first frame of a clip or any source."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np

from edge.errors import DataError

log = logging.getLogger(__name__)


def _clip_frames(size: Tuple[int, int], unique: int) -> Iterator[np.ndarray]:
    """``unique`` distinct BGR frames (width, height = ``size``): blood-smear renders, else test patterns."""
    w, h = size
    try:
        from edge.synth import iter_smear_frames
    except ImportError:
        iter_smear_frames = None  # type: ignore[assignment]
    if iter_smear_frames is not None:
        yield from iter_smear_frames(0, w, h, frames=unique)
        return
    from edge.runtime.sources import CaptureStatus, TestPatternSource, parse_source

    src = TestPatternSource(parse_source(f"test://{w}x{h}?frames={unique}"))
    src.open()
    try:
        while True:
            status, frame = src.read()
            if status is not CaptureStatus.FRAME or frame is None:
                return
            yield frame
    finally:
        src.close()


def make_clip(path: Path, frames: int, *, size: Tuple[int, int] = (640, 480), fps: float = 30.0,
              unique: int = 150) -> Path:
    """Write a ``frames``-frame clip (uint8 BGR ``size`` = (width, height), mp4v for .mp4, MJPG for .avi)
    to ``path``: ``unique`` rendered frames repeated cyclically. Returns ``path``."""
    import cv2

    path = Path(path)
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), tuple(size))
    if not writer.isOpened():
        raise DataError(
            f"OpenCV cannot write a {path.suffix} clip ({fourcc}) to {path}; pass --source with an existing "
            "video, or check that this OpenCV has FFMPEG (cv2.getBuildInformation())"
        )
    t0 = time.perf_counter()
    try:
        rendered = list(_clip_frames(size, max(1, min(unique, frames))))
        for i in range(frames):
            writer.write(rendered[i % len(rendered)])
    finally:
        writer.release()
    log.info("wrote the bench clip %s (%d frames, %dx%d, %d distinct) in %.1f s", path, frames, size[0],
             size[1], len(rendered), time.perf_counter() - t0)
    return path


def first_frame(source_uri: str) -> np.ndarray:
    """The first frame of ``source_uri`` (uint8 [H, W, 3] BGR)."""
    from edge.runtime.sources import CaptureStatus, open_source, parse_source

    src = open_source(parse_source(source_uri))
    src.open()
    try:
        status, frame = src.read()
    finally:
        src.close()
    if status is not CaptureStatus.FRAME or frame is None:
        raise DataError(f"{source_uri}: no frame could be read ({status.value})")
    return frame


__all__ = ["first_frame", "make_clip"]
