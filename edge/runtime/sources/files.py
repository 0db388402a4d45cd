"""File sources, read without drops: ``VideoFileSource`` (anything OpenCV's FFmpeg decodes) and
``ImageFolderSource`` (a folder of images or a glob, in sorted order).
"""

from __future__ import annotations

import glob as globlib
import logging
import re
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from edge.errors import DataError, EdgeError
from edge.runtime.sources.base import CaptureStatus, FrameSource, VideoCaptureSource
from edge.runtime.sources.uri import IMAGE_EXTENSIONS, SourceSpec, _has_glob, redact_uri

log = logging.getLogger(__name__)


def _ffmpeg_available() -> bool:
    return bool(re.search(r"FFMPEG:\s*YES", cv2.getBuildInformation()))



class VideoFileSource(VideoCaptureSource):
    """A video file, read frame by frame without drops.

    decode_threads: FFmpeg decoder threads (0: FFmpeg's choice, a frame thread per core). One thread costs
    the least CPU per frame (no hand-off between decoder threads: 0.40 against 0.56 ms for a 640x480 MPEG-4
    frame on the project's CPU), which is what a CPU that is busy with inference needs; the capture thread
    already overlaps decoding with the rest of the loop. Where OpenCV cannot set it (< 4.6), FFmpeg chooses.
    """

    live = False

    def __init__(self, spec: SourceSpec, decode_threads: int = 0) -> None:
        super().__init__(spec)
        if decode_threads < 0:
            raise EdgeError(f"decode_threads must be >= 0 (0: FFmpeg's choice), found {decode_threads}")
        self.decode_threads = int(decode_threads)

    def _open_capture(self) -> cv2.VideoCapture:
        if not Path(self.spec.path).is_file():
            raise DataError(
                f"video file {redact_uri(self.spec.path)} not found; pass an existing file, a folder of images, or "
                "test:// for a synthetic source"
            )
        api = cv2.CAP_FFMPEG if _ffmpeg_available() else cv2.CAP_ANY
        prop = getattr(cv2, "CAP_PROP_N_THREADS", None)
        if self.decode_threads and prop is not None:
            try:
                return cv2.VideoCapture(self.spec.path, api, [int(prop), self.decode_threads])
            except (TypeError, cv2.error) as exc:  # an OpenCV without open parameters
                log.debug("cannot set %d decoder thread(s) for %s: %s", self.decode_threads, self.describe(), exc)
        return cv2.VideoCapture(self.spec.path, api)

    def _open_failed(self) -> EdgeError:
        return DataError(
            f"OpenCV cannot decode {redact_uri(self.spec.path)} (unsupported container or codec; FFMPEG in this "
            f"OpenCV: {'yes' if _ffmpeg_available() else 'no'}); convert it, e.g. "
            "`ffmpeg -i IN -c:v libx264 out.mp4`"
        )


class ImageFolderSource(FrameSource):
    """Images from a folder (sorted by name) or a glob, one frame each, no drops."""

    live = False

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.files: List[str] = []
        self._i = 0

    def open(self) -> None:
        path = self.spec.path
        if _has_glob(path):
            files = sorted(globlib.glob(path))
        elif Path(path).is_dir():
            files = sorted(str(p) for p in Path(path).iterdir())
        else:
            files = [path] if Path(path).is_file() else []
        self.files = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        if not self.files:
            raise DataError(
                f"no images found at {redact_uri(path)} (looked for {', '.join(IMAGE_EXTENSIONS)}); pass a folder of "
                "images, a quoted glob such as 'frames/*.jpg', or a video file"
            )
        self._i = 0
        first = cv2.imread(self.files[0], cv2.IMREAD_COLOR)
        if first is not None:
            self.frame_size = (first.shape[1], first.shape[0])
        self.fps = self.spec.number("fps", 30.0)

    def read(self, out: Optional[np.ndarray] = None) -> Tuple[CaptureStatus, Optional[np.ndarray]]:
        while self._i < len(self.files):
            name = self.files[self._i]
            self._i += 1
            img = cv2.imread(name, cv2.IMREAD_COLOR)
            if img is None:
                log.warning("skipping unreadable image %s", name)
                continue
            if out is not None and out.shape == img.shape:
                np.copyto(out, img)
                return CaptureStatus.FRAME, out
            return CaptureStatus.FRAME, img
        return CaptureStatus.END, None
