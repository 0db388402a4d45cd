"""Frames -> network input tensors, into preallocated buffers (the runtime's one preprocessing).

Used by the pipeline, ``edge bench``, evaluation of deploy graphs and INT8 calibration, so every stage feeds
the network exactly the same pixels:

* ``uint8_nhwc_bgr`` graphs (normalization inside the graph): ``edge.letterbox.letterbox`` writes the frame
  straight into the input tensor [1, H, W, 3]; nothing else happens on the CPU.
* ``float_nchw_rgb`` graphs: letterbox into a uint8 scratch, then per RGB plane
  ``(pixel / scale - mean) / std`` into the float tensor [1, 3, H, W] (float32, or float16 through a
  float32 plane).

No allocation per frame: the scratch belongs to the ``Preprocessor`` (one per thread), the output
tensor to the caller (``new_buffer``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from edge.letterbox import LetterboxParams, letterbox
from edge.runtime.backend import LAYOUT_UINT8_NHWC_BGR, InputFormat


class Preprocessor:
    """Frame -> network input, into preallocated buffers. One instance per thread (owns a scratch)."""

    def __init__(self, fmt: InputFormat) -> None:
        self.fmt = fmt.validate()
        self.hw = (fmt.height, fmt.width)
        self.dtype = np.dtype(fmt.dtype)
        self._scratch: Optional[np.ndarray] = None
        if fmt.layout != LAYOUT_UINT8_NHWC_BGR:
            std = np.asarray(fmt.std, np.float64)
            mean = np.asarray(fmt.mean, np.float64)
            # (pixel / scale - mean) / std == pixel * a - b, per RGB channel
            self._a = (1.0 / (fmt.scale * std)).astype(np.float32)
            self._b = (mean / std).astype(np.float32)
            self._scratch = np.empty((fmt.height, fmt.width, 3), np.uint8)
            # contiguous uint8 planes (cv2.split): numpy converts them ~1.5x faster than strided channel views
            self._planes = [np.empty((fmt.height, fmt.width), np.uint8) for _ in range(3)]
            self._center = bool(np.any(self._b != 0))  # skip the subtraction for mean 0 (pixel / 255 models)
            self._plane = np.empty((fmt.height, fmt.width), np.float32) if self.dtype != np.float32 else None

    def new_buffer(self) -> np.ndarray:
        return np.empty(self.fmt.tensor_shape(1), self.dtype)

    def __call__(self, frame: np.ndarray, out: np.ndarray) -> LetterboxParams:
        """Write ``frame`` (uint8 [H, W, 3] BGR) into ``out`` (the input tensor, batch 1)."""
        if self._scratch is None:
            _, params = letterbox(frame, self.hw, self.fmt.pad_value, out=out[0])
            return params
        _, params = letterbox(frame, self.hw, self.fmt.pad_value, out=self._scratch)
        planes = self._planes
        _split(self._scratch, planes)
        for c in range(3):  # RGB plane c comes from BGR channel 2 - c
            src = planes[2 - c]
            dst = out[0, c] if self._plane is None else self._plane
            np.multiply(src, self._a[c], out=dst, dtype=np.float32)
            if self._center:
                np.subtract(dst, self._b[c], out=dst)
            if self._plane is not None:
                np.copyto(out[0, c], self._plane, casting="same_kind")
        return params


def _split(image: np.ndarray, planes: list) -> None:
    """BGR [H, W, 3] uint8 -> three contiguous [H, W] planes, in place (OpenCV's SIMD split)."""
    import cv2

    cv2.split(image, planes)
