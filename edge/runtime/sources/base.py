"""The ``FrameSource`` interface, the ``CaptureStatus`` every read returns, and ``VideoCaptureSource``,
the ``cv2.VideoCapture`` base shared by video files and cameras.
"""

from __future__ import annotations

import abc
import enum
from typing import Optional, Tuple

import cv2
import numpy as np

from edge.errors import DataError, EdgeError
from edge.runtime.sources.uri import SourceSpec


class CaptureStatus(enum.Enum):
    FRAME = "frame"
    TIMEOUT = "timeout"
    END = "end"
    ERROR = "error"


class FrameSource(abc.ABC):
    """One stream of BGR frames. ``open`` raises with a how-to-fix message; ``read`` never raises for
    ordinary end/failure: it returns (status, frame)."""

    live = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.fps = 0.0  # nominal frame rate; 0 when unknown
        self.frame_size: Optional[Tuple[int, int]] = None  # (width, height) once known

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device/file. Raises DataError/EdgeError saying what was tried and how to fix it."""

    @abc.abstractmethod
    def read(self, out: Optional[np.ndarray] = None) -> Tuple[CaptureStatus, Optional[np.ndarray]]:
        """Next frame, written into ``out`` when its size matches (else a new array)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device/file. Idempotent."""

    def describe(self) -> str:
        """The source as shown in logs, errors and stats: credentials masked (``redact_uri``)."""
        return self.spec.describe()

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoCaptureSource(FrameSource):
    """Anything ``cv2.VideoCapture`` opens: files, V4L2 devices, GStreamer pipelines, RTSP."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._cap: Optional[cv2.VideoCapture] = None

    def _open_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _open_failed(self) -> EdgeError:
        return DataError(f"cannot open {self.describe()}")

    def open(self) -> None:
        self.close()
        cap = self._open_capture()
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise self._open_failed()
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else self.fps
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_size = (w, h) if w > 0 and h > 0 else None

    def read(self, out: Optional[np.ndarray] = None) -> Tuple[CaptureStatus, Optional[np.ndarray]]:
        if self._cap is None:
            return CaptureStatus.ERROR, None
        try:
            ok, frame = self._cap.read(out) if out is not None else self._cap.read()
        except cv2.error:
            # a preallocated buffer of the wrong size (the stream changed size): read fresh
            ok, frame = self._cap.read()
        if not ok or frame is None:
            return (CaptureStatus.ERROR if self.live else CaptureStatus.END), None
        if frame.ndim == 2 or frame.shape[2] != 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_BGRA2BGR)
        return CaptureStatus.FRAME, frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
