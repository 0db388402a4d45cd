"""Letterbox: resize keeping the aspect ratio, pad to the network input, and map boxes both ways.

The one implementation used by training (``edge.data.transforms``), INT8 calibration and the runtime,
so the network sees the same pixels everywhere and boxes map back to the frame exactly.

Geometry (all sizes in pixels, boxes xyxy in continuous pixel coordinates, where pixel ``i`` covers
``[i, i + 1)``)::

    scale            = min(input_w / src_w, input_h / src_h)
    resized_w, _h    = round(src_w * scale), round(src_h * scale)   (at least 1, at most the input size)
    pad_x, pad_y     = (input_w - resized_w) // 2, (input_h - resized_h) // 2   (the odd pixel goes right/bottom)
    input box        = source box * (resized_w / src_w, resized_h / src_h) + (pad_x, pad_y)

The box mapping uses the per-axis factors ``resized / src`` (``scale_x``, ``scale_y``), which are exactly the
factors ``cv2.resize`` applies to the pixel grid; ``scale`` (the nominal factor) differs from them by the
rounding of the resized size only. ``to_source`` is the exact inverse of ``to_input`` (and clips to the frame).

numpy + OpenCV only: no torch (runtime path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from edge.errors import import_optional

PadValue = Union[int, float, Sequence[float]]


@dataclass(frozen=True)
class LetterboxParams:
    """How one source frame maps into the network input.

    Attributes:
        src_w, src_h: source frame size.
        input_w, input_h: network input size.
        scale: nominal resize factor, min(input_w / src_w, input_h / src_h).
        pad_x, pad_y: left and top padding of the resized image inside the input.
        resized_w, resized_h: size of the resized image (the non-padded area of the input).
    """

    src_w: int
    src_h: int
    input_w: int
    input_h: int
    scale: float
    pad_x: int
    pad_y: int
    resized_w: int
    resized_h: int

    @property
    def scale_x(self) -> float:
        """Exact horizontal factor source -> input (resized_w / src_w)."""
        return self.resized_w / self.src_w

    @property
    def scale_y(self) -> float:
        """Exact vertical factor source -> input (resized_h / src_h)."""
        return self.resized_h / self.src_h

    def validate(self) -> LetterboxParams:
        for name in ("src_w", "src_h", "input_w", "input_h", "resized_w", "resized_h"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LetterboxParams.{name} is {getattr(self, name)}, expected >= 1")
        if not (0 <= self.pad_x and self.pad_x + self.resized_w <= self.input_w):
            raise ValueError(
                f"pad_x {self.pad_x} + resized_w {self.resized_w} exceeds input_w {self.input_w}"
            )
        if not (0 <= self.pad_y and self.pad_y + self.resized_h <= self.input_h):
            raise ValueError(
                f"pad_y {self.pad_y} + resized_h {self.resized_h} exceeds input_h {self.input_h}"
            )
        return self

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Source-frame boxes -> input boxes. ``boxes``: [..., 4] xyxy pixels; same shape returned.

        float64 in -> float64 out, anything else -> float32. No clipping (the input contains the whole frame).
        """
        b = _as_boxes(boxes)
        out = np.empty(b.shape, np.float64)
        out[..., 0::2] = b[..., 0::2] * self.scale_x + self.pad_x
        out[..., 1::2] = b[..., 1::2] * self.scale_y + self.pad_y
        return out.astype(_out_dtype(boxes), copy=False)

    def to_source(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """Input boxes (network output) -> source-frame boxes, the exact inverse of ``to_input``.

        ``boxes``: [..., 4] xyxy input pixels; same shape returned. With ``clip`` (default) the result is
        clipped to ``[0, src_w] x [0, src_h]`` (boxes reaching into the padding end at the frame border).
        """
        b = _as_boxes(boxes)
        out = np.empty(b.shape, np.float64)
        out[..., 0::2] = (b[..., 0::2] - self.pad_x) / self.scale_x
        out[..., 1::2] = (b[..., 1::2] - self.pad_y) / self.scale_y
        if clip:
            np.clip(out[..., 0::2], 0.0, float(self.src_w), out=out[..., 0::2])
            np.clip(out[..., 1::2], 0.0, float(self.src_h), out=out[..., 1::2])
        return out.astype(_out_dtype(boxes), copy=False)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "src_w": self.src_w,
            "src_h": self.src_h,
            "input_w": self.input_w,
            "input_h": self.input_h,
            "scale": self.scale,
            "pad_x": self.pad_x,
            "pad_y": self.pad_y,
            "resized_w": self.resized_w,
            "resized_h": self.resized_h,
        }


def compute_letterbox(src_hw: Tuple[int, int], dst_hw: Tuple[int, int]) -> LetterboxParams:
    """Letterbox geometry for a ``src_hw = (height, width)`` frame into a ``dst_hw = (height, width)`` input.

    Keeps the aspect ratio (one scale for both axes, up or down), centres the resized image, integer pads.
    """
    src_h, src_w = (int(v) for v in src_hw)
    dst_h, dst_w = (int(v) for v in dst_hw)
    if src_h < 1 or src_w < 1:
        raise ValueError(f"source size (h, w) = {tuple(src_hw)}; expected positive integers")
    if dst_h < 1 or dst_w < 1:
        raise ValueError(f"input size (h, w) = {tuple(dst_hw)}; expected positive integers")
    scale = min(dst_w / src_w, dst_h / src_h)
    # round half up (not Python's banker's rounding), so any other implementation can match it
    resized_w = min(dst_w, max(1, int(math.floor(src_w * scale + 0.5))))
    resized_h = min(dst_h, max(1, int(math.floor(src_h * scale + 0.5))))
    return LetterboxParams(
        src_w=src_w,
        src_h=src_h,
        input_w=dst_w,
        input_h=dst_h,
        scale=scale,
        pad_x=(dst_w - resized_w) // 2,
        pad_y=(dst_h - resized_h) // 2,
        resized_w=resized_w,
        resized_h=resized_h,
    )


def letterbox(
    image: np.ndarray,
    dst_hw: Tuple[int, int],
    pad_value: PadValue = 114,
    out: Optional[np.ndarray] = None,
    interpolation: Optional[int] = None,
) -> Tuple[np.ndarray, LetterboxParams]:
    """Resize ``image`` into a ``dst_hw = (height, width)`` canvas keeping its aspect ratio; pad the rest.

    Args:
        image: [H, W] or [H, W, C] array (BGR uint8 for the detectors).
        dst_hw: network input (height, width).
        pad_value: border value, a scalar or one value per channel (114 grey by default).
        out: optional preallocated C-contiguous [dst_h, dst_w(, C)] array of the image's dtype: the result is
            written into it (resize straight into its centre, pads filled) with no new frame-sized
            allocation, so a runtime can reuse one buffer frame after frame.
        interpolation: an OpenCV flag, default ``cv2.INTER_LINEAR``.

    Returns:
        ``(letterboxed image, params)``; the image is ``out`` when given, else a new array.
    """
    cv2 = _cv2()
    if interpolation is None:
        interpolation = cv2.INTER_LINEAR
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has shape {image.shape}; expected [H, W] or [H, W, C] with H, W >= 1")
    params = compute_letterbox(image.shape[:2], dst_hw)
    shape = (params.input_h, params.input_w) + image.shape[2:]
    if out is None:
        out = np.empty(shape, image.dtype)
    else:
        if out.shape != shape or out.dtype != image.dtype:
            raise ValueError(
                f"out has shape {out.shape} and dtype {out.dtype}; expected {shape} {image.dtype} for this "
                "image and input size"
            )
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writeable C-contiguous array")

    y0, x0 = params.pad_y, params.pad_x
    y1, x1 = y0 + params.resized_h, x0 + params.resized_w
    fill = pad_value if np.isscalar(pad_value) else np.asarray(pad_value, dtype=out.dtype)
    out[:y0] = fill
    out[y1:] = fill
    out[y0:y1, :x0] = fill
    out[y0:y1, x1:] = fill

    roi = out[y0:y1, x0:x1]
    if (params.resized_h, params.resized_w) == image.shape[:2]:
        np.copyto(roi, image)
    elif image.ndim == 3 and image.shape[2] == 1:  # cv2 drops a trailing channel of 1: resize the plane
        _resize_into(cv2, image[:, :, 0], roi[:, :, 0], params, interpolation)
    else:
        _resize_into(cv2, image, roi, params, interpolation)
    return out, params


def _resize_into(cv2, src: np.ndarray, roi: np.ndarray, params: LetterboxParams, interpolation: int) -> None:
    result = cv2.resize(src, (params.resized_w, params.resized_h), dst=roi, interpolation=interpolation)
    if result is not roi:  # OpenCV could not write in place (it does for these layouts): copy
        np.copyto(roi, result.reshape(roi.shape))


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"boxes have shape {b.shape}; expected [..., 4] xyxy")
    return b


def _out_dtype(boxes: Any) -> type:
    return np.float64 if getattr(boxes, "dtype", None) == np.float64 else np.float32


def _cv2():
    return import_optional("cv2", "opencv-python", "letterbox resizing",
                           "install it with `pip install opencv-python` (on a Jetson: `sudo apt install python3-opencv`)")
