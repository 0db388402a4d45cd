"""Box formats, areas, IoU and clipping in numpy (runtime path: no torch).

Formats (the last axis always has 4 values, any leading axes are allowed for conversions):
    xyxy:    x1, y1, x2, y2 (corners; x1 <= x2 and y1 <= y2 expected)
    xywh:    x, y, w, h with (x, y) the top-left corner (COCO ``bbox``)
    cxcywh:  cx, cy, w, h with (cx, cy) the center (YOLO, SSD default boxes)
Coordinates are either pixels or normalized to [0, 1] by the image width/height; every conversion
between formats works the same for both, and ``normalized_to_pixel`` / ``pixel_to_normalized`` move
between the two (for any of the three formats, since each has the x, y, x, y layout).

Dtypes: float16/32/64 inputs keep their dtype; anything else (ints, lists) becomes float64.
Empty inputs (shape [0, 4]) give empty outputs of the right shape. Inputs are never modified.

The torch twins of these functions (same names, same formulas) live in ``edge.models.ops``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "as_boxes",
    "xyxy_to_xywh",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "box_area",
    "box_iou",
    "clip_boxes",
]


def as_boxes(boxes: Any, *, ndim: int = 0, name: str = "boxes") -> np.ndarray:
    """Return ``boxes`` as a float numpy array [..., 4] (float dtypes kept, others -> float64).

    ``ndim`` > 0 also requires exactly that many dimensions (2 for [N, 4]). A list of no boxes
    (``[]``) is accepted as shape [0, 4]. Raises ValueError naming ``name`` on a wrong shape.
    """
    arr = np.asarray(boxes)
    if arr.size == 0 and arr.ndim == 1:
        arr = arr.reshape(0, 4)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 4:
        raise ValueError(f"{name}: expected an array of shape [..., 4], got shape {tuple(arr.shape)}")
    if ndim and arr.ndim != ndim:
        raise ValueError(
            f"{name}: expected {ndim} dimensions ([N, 4]), got shape {tuple(arr.shape)}; "
            "reshape to (-1, 4) first"
        )
    return arr


def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """[..., 4] x1,y1,x2,y2 -> [..., 4] x,y,w,h (top-left corner and size, COCO bbox)."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., 0:2], b[..., 2:4] - b[..., 0:2]], axis=-1)


def xywh_to_xyxy(boxes: Any) -> np.ndarray:
    """[..., 4] x,y,w,h (top-left corner and size) -> [..., 4] x1,y1,x2,y2."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., 0:2], b[..., 0:2] + b[..., 2:4]], axis=-1)


def xyxy_to_cxcywh(boxes: Any) -> np.ndarray:
    """[..., 4] x1,y1,x2,y2 -> [..., 4] cx,cy,w,h (center and size)."""
    b = as_boxes(boxes)
    half = b.dtype.type(0.5)
    return np.concatenate([(b[..., 0:2] + b[..., 2:4]) * half, b[..., 2:4] - b[..., 0:2]], axis=-1)


def cxcywh_to_xyxy(boxes: Any) -> np.ndarray:
    """[..., 4] cx,cy,w,h (center and size) -> [..., 4] x1,y1,x2,y2."""
    b = as_boxes(boxes)
    half_wh = b[..., 2:4] * b.dtype.type(0.5)
    return np.concatenate([b[..., 0:2] - half_wh, b[..., 0:2] + half_wh], axis=-1)


def _xyxy_scale(b: np.ndarray, width: float, height: float) -> np.ndarray:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    return np.array([width, height, width, height], dtype=b.dtype)


def normalized_to_pixel(boxes: Any, width: float, height: float) -> np.ndarray:
    """[..., 4] boxes normalized to [0, 1] -> pixels of a ``width`` x ``height`` image.

    Works for xyxy, xywh and cxcywh alike (x values scale by width, y values by height).
    """
    b = as_boxes(boxes)
    return b * _xyxy_scale(b, width, height)


def pixel_to_normalized(boxes: Any, width: float, height: float) -> np.ndarray:
    """[..., 4] boxes in pixels of a ``width`` x ``height`` image -> normalized to [0, 1]."""
    b = as_boxes(boxes)
    return b / _xyxy_scale(b, width, height)


def box_area(boxes: Any) -> np.ndarray:
    """[..., 4] xyxy -> [...] area (w * h; negative for inverted boxes, 0 for degenerate ones)."""
    b = as_boxes(boxes)
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def box_iou(boxes1: Any, boxes2: Any) -> np.ndarray:
    """Pairwise IoU: [N, 4] xyxy and [M, 4] xyxy -> [N, M] in [0, 1].

    Same float formula as ONNX Runtime's NonMaxSuppression (inter = overlap_w * overlap_h,
    union = area1 + area2 - inter), computed in the inputs' common float dtype. Pairs that do not
    overlap (touching edges included) and pairs involving a zero-area box give exactly 0, never NaN.
    """
    a = as_boxes(boxes1, ndim=2, name="boxes1")
    b = as_boxes(boxes2, ndim=2, name="boxes2")
    dtype = np.result_type(a.dtype, b.dtype)
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    zero = dtype.type(0)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, zero) * np.maximum(ih, zero)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    iou = np.zeros(inter.shape, dtype=dtype)
    np.divide(inter, union, out=iou, where=inter > zero)
    return iou


def clip_boxes(boxes: Any, width: float, height: float) -> np.ndarray:
    """[..., 4] xyxy pixels -> the same boxes clipped to the image: x in [0, width], y in [0, height].

    Boxes entirely outside the image become zero-width or zero-height (callers that need it drop
    them by ``box_area(...) > 0``).
    """
    b = as_boxes(boxes)
    lo = np.zeros(4, dtype=b.dtype)
    hi = np.array([width, height, width, height], dtype=b.dtype)
    return np.clip(b, lo, hi)
