"""Synthetic sources for ``test://``: ``TestPatternSource`` (moving shapes) and ``SmearSource``
(``test://smear``, a generated blood-smear slide). No camera and no files needed; frame i is the same
on every run.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Tuple

import cv2
import numpy as np

from edge.runtime.sources.base import CaptureStatus, FrameSource
from edge.runtime.sources.uri import SourceSpec


class TestPatternSource(FrameSource):
    """Synthetic frames: a gradient background with moving coloured shapes and the frame number.

    Options: ``size=WxH`` (640x480), ``frames=N`` (0: endless), ``fps=F`` (30), ``live=1`` (paced at
    ``fps``, treated like a camera). Deterministic: frame i is the same on every run.
    """

    __test__ = False  # not a pytest class

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.width, self.height = spec.size() or (640, 480)
        self.frames = int(spec.number("frames", 0))
        self.fps = spec.number("fps", 30.0)
        self.live = spec.live
        self.frame_size = (self.width, self.height)
        self._i = 0
        self._background: Optional[np.ndarray] = None
        self._next_t = 0.0

    def open(self) -> None:
        h, w = self.height, self.width
        y = np.linspace(40, 140, h, dtype=np.float32)[:, None]
        x = np.linspace(30, 90, w, dtype=np.float32)[None, :]
        bg = np.empty((h, w, 3), np.uint8)
        bg[..., 0] = (y + x).astype(np.uint8)
        bg[..., 1] = (y * 0.8 + 20).astype(np.uint8)
        bg[..., 2] = (x * 1.2 + 10).astype(np.uint8)
        self._background = bg
        self._i = 0
        self._next_t = time.perf_counter()

    def read(self, out: Optional[np.ndarray] = None) -> Tuple[CaptureStatus, Optional[np.ndarray]]:
        if self._background is None:
            return CaptureStatus.ERROR, None
        if self.frames and self._i >= self.frames:
            return CaptureStatus.END, None
        if self.live:
            now = time.perf_counter()
            if self._next_t > now:
                time.sleep(self._next_t - now)
            self._next_t = max(self._next_t + 1.0 / self.fps, time.perf_counter() - 1.0 / self.fps)
        frame = out if out is not None and out.shape == self._background.shape else np.empty_like(self._background)
        self._render(frame, self._i)
        self._i += 1
        return CaptureStatus.FRAME, frame

    def _render(self, frame: np.ndarray, i: int) -> None:
        """Fill ``frame`` with frame ``i``: the background, then the moving shapes."""
        np.copyto(frame, self._background)
        self._draw(frame, i)

    def _draw(self, frame: np.ndarray, i: int) -> None:
        h, w = frame.shape[:2]
        s = max(8, min(w, h) // 6)
        t = i / max(self.fps, 1.0)
        cx = int((w - s) * (0.5 + 0.45 * np.sin(t * 1.3))) + s // 2
        cy = int((h - s) * (0.5 + 0.45 * np.cos(t * 0.9))) + s // 2
        cv2.rectangle(frame, (cx - s // 2, cy - s // 3), (cx + s // 2, cy + s // 3), (40, 200, 240), -1)
        cx2 = int((w - s) * (0.5 + 0.45 * np.cos(t * 0.7))) + s // 2
        cv2.circle(frame, (cx2, h // 2), s // 2, (220, 60, 60), -1)
        cv2.putText(frame, f"test {i}", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, h / 800), (255, 255, 255), 1)

    def close(self) -> None:
        self._background = None


class SmearSource(TestPatternSource):
    """``test://smear``: generated blood-smear footage (``edge.synth.SmearScene``), frame i rendered into
    the caller's buffer. Options as ``test://`` plus ``seed=N`` (0). Building the slide takes ~1 s."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.seed = int(spec.number("seed", 0))
        self._scene: Any = None

    def open(self) -> None:
        from edge.synth import SmearScene

        self._scene = SmearScene(self.seed, self.width, self.height)
        # marks the source open and gives read() the frame shape; never copied for this source
        self._background = np.zeros((self.height, self.width, 3), np.uint8)
        self._i = 0
        self._next_t = time.perf_counter()

    def _render(self, frame: np.ndarray, i: int) -> None:
        self._scene.image(i, out=frame)  # the scene writes every pixel: no background copy first

    def close(self) -> None:
        self._scene = None
        super().close()
