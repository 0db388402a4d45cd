"""Training-time augmentation: numpy + cv2, no torch.

Box format everywhere here: float32 [N, 4] ``x1, y1, x2, y2`` in absolute pixels of the image they go
with; labels int64 [N]. Images are BGR uint8 HxWx3, as ``edge.data.images.read_image`` returns them.

The transforms follow SSD's recipe (Liu et al. 2016, section 3.6 and the reference Caffe/ssd.pytorch
code): photometric distortion, zoom-out ("expand" onto a larger canvas), an IoU-constrained random crop,
horizontal flip; then the letterbox to the network input via ``edge.letterbox`` (the one letterbox
implementation training, calibration and the runtime share).

Efficiency: zoom-out and crop are both a *window* of the source image (a window larger than the image is
a zoom-out, padded with ``pad_value``). ``TrainTransform`` composes them into one window and renders only
that window, already scaled to the input size, so a 4x zoom-out of a 640x480 frame never allocates a
2560x1920 canvas. Flip and photometric distortion then run on the small input-sized image.

Randomness comes only from the ``numpy.random.Generator`` passed in, so a sample's augmentation is a pure
function of its seed (the training loop seeds it from (seed, epoch, index): identical on every worker
count and after a resume).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.letterbox import letterbox

log = logging.getLogger(__name__)

# SSD's sampling modes for the random crop: None keeps the whole image; a float is the minimum IoU some
# ground-truth box must have with the crop window; 0.0 accepts any window ("randomly sample a patch").
SSD_CROP_MIN_IOUS: Tuple[Optional[float], ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)

AUGMENT_PRESETS = ("ssd", "light", "flip", "none")


@dataclass
class AugmentConfig:
    """What ``TrainTransform`` does to each training sample.

    Attributes:
        photometric: SSD's photometric distortion (brightness, contrast, saturation, hue).
        expand_prob: probability of a zoom-out onto a canvas ``U(1, expand_max_ratio)`` times larger.
        expand_max_ratio: largest zoom-out ratio (SSD: 4).
        crop: SSD's IoU-constrained random crop (one of ``SSD_CROP_MIN_IOUS`` per sample).
        crop_min_scale: smallest crop side as a fraction of the (expanded) image side (SSD: 0.3).
        crop_max_aspect: crop windows have h/w in [1/crop_max_aspect, crop_max_aspect] (SSD: 2).
        crop_trials: windows sampled per mode before giving up and keeping the whole image (SSD: 50).
        hflip_prob: probability of a horizontal flip. vflip_prob: of a vertical flip (off in SSD; useful
            for top-down imagery such as microscopy).
        min_box_size: boxes narrower or shorter than this many *input* pixels after all transforms are
            dropped (degenerate results).
        pad_value: letterbox padding and zoom-out fill, the same grey the runtime's letterbox uses.
    """

    photometric: bool = True
    expand_prob: float = 0.5
    expand_max_ratio: float = 4.0
    crop: bool = True
    crop_min_scale: float = 0.3
    crop_max_aspect: float = 2.0
    crop_trials: int = 50
    hflip_prob: float = 0.5
    vflip_prob: float = 0.0
    min_box_size: float = 2.0
    pad_value: int = 114

    def validate(self) -> "AugmentConfig":
        for name in ("expand_prob", "hflip_prob", "vflip_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name} = {value}: expected a probability in [0, 1]")
        if self.expand_max_ratio < 1.0:
            raise ValueError(f"AugmentConfig.expand_max_ratio = {self.expand_max_ratio}: expected >= 1")
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ValueError(f"AugmentConfig.crop_min_scale = {self.crop_min_scale}: expected in (0, 1]")
        if self.crop_max_aspect < 1.0:
            raise ValueError(f"AugmentConfig.crop_max_aspect = {self.crop_max_aspect}: expected >= 1")
        if self.crop_trials < 1:
            raise ValueError(f"AugmentConfig.crop_trials = {self.crop_trials}: expected >= 1")
        if self.min_box_size < 0:
            raise ValueError(f"AugmentConfig.min_box_size = {self.min_box_size}: expected >= 0")
        if not 0 <= int(self.pad_value) <= 255:
            raise ValueError(f"AugmentConfig.pad_value = {self.pad_value}: expected 0..255")
        return self

    @classmethod
    def preset(cls, name: str, **overrides) -> "AugmentConfig":
        """Named recipes: ``ssd`` (all of SSD's), ``light`` (photometric + flip), ``flip``, ``none``."""
        if name == "ssd":
            cfg = cls()
        elif name == "light":
            cfg = cls(expand_prob=0.0, crop=False)
        elif name == "flip":
            cfg = cls(photometric=False, expand_prob=0.0, crop=False)
        elif name == "none":
            cfg = cls(photometric=False, expand_prob=0.0, crop=False, hflip_prob=0.0)
        else:
            raise ValueError(f"unknown augmentation preset {name!r}; expected one of {AUGMENT_PRESETS}")
        return replace(cfg, **overrides).validate()


# ----------------------------------------------------------------------------------------------------
# Box helpers
# ----------------------------------------------------------------------------------------------------


def iou_with_window(boxes: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """IoU of each box (float [N, 4] xyxy) with one window (x1, y1, x2, y2), same pixel frame -> [N]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wx1, wy1, wx2, wy2 = (float(v) for v in window)
    ix1 = np.maximum(boxes[:, 0], wx1)
    iy1 = np.maximum(boxes[:, 1], wy1)
    ix2 = np.minimum(boxes[:, 2], wx2)
    iy2 = np.minimum(boxes[:, 3], wy2)
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_w = (wx2 - wx1) * (wy2 - wy1)
    union = area_b + area_w - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def clip_and_filter(
    boxes: np.ndarray, labels: np.ndarray, width: float, height: float, min_size: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Clip xyxy boxes to [0, width] x [0, height]; drop those narrower/shorter than ``min_size`` px.

    A box of zero width or height is always dropped, whatever ``min_size``.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, float(width))
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, float(height))
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    keep = (w > 0) & (h > 0) & (w >= min_size) & (h >= min_size)
    return boxes[keep], labels[keep]


# ----------------------------------------------------------------------------------------------------
# Geometric transforms on whole images (simple, exact; used directly and as test references)
# ----------------------------------------------------------------------------------------------------


def hflip(image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: x -> W - x, so [x1, x2] -> [W - x2, W - x1] exactly."""
    width = image.shape[1]
    out = boxes.astype(np.float32, copy=True).reshape(-1, 4)
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), out


def vflip(image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom: y -> H - y, so [y1, y2] -> [H - y2, H - y1] exactly."""
    height = image.shape[0]
    out = boxes.astype(np.float32, copy=True).reshape(-1, 4)
    out[:, 1] = height - boxes[:, 3]
    out[:, 3] = height - boxes[:, 1]
    return np.ascontiguousarray(image[::-1]), out


def sample_expand_window(
    width: int, height: int, rng: np.random.Generator, max_ratio: float
) -> Tuple[int, int, int, int]:
    """SSD's zoom-out as a window in source pixels: a canvas ``ratio`` times the image (ratio ~ U(1, max)),
    the image placed at a uniform random offset. Returns integer (x1, y1, x2, y2) with x1, y1 <= 0."""
    ratio = float(rng.uniform(1.0, max_ratio))
    canvas_w = int(round(width * ratio))
    canvas_h = int(round(height * ratio))
    left = int(rng.integers(0, canvas_w - width + 1))
    top = int(rng.integers(0, canvas_h - height + 1))
    return (-left, -top, canvas_w - left, canvas_h - top)


def sample_crop_window(
    boxes: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator,
    *,
    min_ious: Sequence[Optional[float]] = SSD_CROP_MIN_IOUS,
    min_scale: float = 0.3,
    max_aspect: float = 2.0,
    trials: int = 50,
) -> Tuple[Optional[Tuple[int, int, int, int]], Optional[float]]:
    """SSD's IoU-constrained random crop: pick a mode, then sample windows until one qualifies.

    Args:
        boxes: float [N, 4] xyxy in the frame being cropped (0..width, 0..height).
    Returns:
        (window, min_iou): window is integer (x1, y1, x2, y2) inside the frame, or None to keep the whole
        frame (the "None" mode was drawn, there are no boxes, or no window qualified within ``trials``).
        A returned window satisfies: some box has IoU >= min_iou with it, and at least one box centre lies
        strictly inside it.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return None, None
    min_iou = min_ious[int(rng.integers(0, len(min_ious)))]
    if min_iou is None:
        return None, None
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    for _ in range(trials):
        w = float(rng.uniform(min_scale * width, width))
        h = float(rng.uniform(min_scale * height, height))
        if h / w < 1.0 / max_aspect or h / w > max_aspect:
            continue
        left = float(rng.uniform(0.0, width - w))
        top = float(rng.uniform(0.0, height - h))
        window = (int(left), int(top), int(left + w), int(top + h))
        if window[2] - window[0] < 1 or window[3] - window[1] < 1:
            continue
        if iou_with_window(boxes, window).max() < min_iou:
            continue
        inside = (
            (centers[:, 0] > window[0])
            & (centers[:, 0] < window[2])
            & (centers[:, 1] > window[1])
            & (centers[:, 1] < window[3])
        )
        if not inside.any():
            continue
        return window, float(min_iou)
    return None, None


def crop_boxes(
    boxes: np.ndarray, labels: np.ndarray, window: Sequence[float]
) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes of a crop: keep those whose centre lies inside ``window``, clip to it, shift to its origin."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    x1, y1, x2, y2 = (float(v) for v in window)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    keep = (centers[:, 0] > x1) & (centers[:, 0] < x2) & (centers[:, 1] > y1) & (centers[:, 1] < y2)
    out = boxes[keep].copy()
    out[:, 0::2] = np.clip(out[:, 0::2], x1, x2) - x1
    out[:, 1::2] = np.clip(out[:, 1::2], y1, y2) - y1
    return out, labels[keep]


def render_window(
    image: np.ndarray,
    boxes: np.ndarray,
    window: Sequence[int],
    scale: float,
    pad_value: int = 114,
) -> Tuple[np.ndarray, np.ndarray]:
    """Render the source pixels under ``window`` scaled by ``scale``; outside the image is ``pad_value``.

    Args:
        image: BGR uint8 [H, W, 3].
        boxes: float [N, 4] xyxy source pixels, already inside ``window`` (see ``crop_boxes``).
        window: integer (x1, y1, x2, y2) in source pixels; may extend past the image (a zoom-out).
        scale: output pixels per source pixel.
    Returns:
        (canvas uint8 [round(h*scale), round(w*scale), 3], boxes float32 [N, 4] xyxy canvas pixels). Boxes
        follow the exact integer placement and resize of the visible part, so they match the pixels.
    """
    height, width = image.shape[:2]
    wx1, wy1, wx2, wy2 = (int(v) for v in window)
    out_w = max(1, int(round((wx2 - wx1) * scale)))
    out_h = max(1, int(round((wy2 - wy1) * scale)))
    canvas = np.empty((out_h, out_w, 3), dtype=np.uint8)
    canvas[...] = pad_value
    # visible part of the source inside the window
    ix1, iy1 = max(wx1, 0), max(wy1, 0)
    ix2, iy2 = min(wx2, width), min(wy2, height)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if ix2 <= ix1 or iy2 <= iy1:
        return canvas, np.zeros((0, 4), np.float32)
    dx1 = int(round((ix1 - wx1) * scale))
    dy1 = int(round((iy1 - wy1) * scale))
    dx2 = min(out_w, max(dx1 + 1, int(round((ix2 - wx1) * scale))))
    dy2 = min(out_h, max(dy1 + 1, int(round((iy2 - wy1) * scale))))
    dx1, dy1 = min(dx1, dx2 - 1), min(dy1, dy2 - 1)
    part = image[iy1:iy2, ix1:ix2]
    dw, dh = dx2 - dx1, dy2 - dy1
    if (dw, dh) == (ix2 - ix1, iy2 - iy1):
        canvas[dy1:dy2, dx1:dx2] = part
    else:
        shrinking = dw < (ix2 - ix1) and dh < (iy2 - iy1)
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        canvas[dy1:dy2, dx1:dx2] = cv2.resize(part, (dw, dh), interpolation=interp)
    sx = dw / float(ix2 - ix1)
    sy = dh / float(iy2 - iy1)
    out = np.empty_like(boxes)
    out[:, 0] = dx1 + (boxes[:, 0] - ix1) * sx
    out[:, 2] = dx1 + (boxes[:, 2] - ix1) * sx
    out[:, 1] = dy1 + (boxes[:, 1] - iy1) * sy
    out[:, 3] = dy1 + (boxes[:, 3] - iy1) * sy
    return canvas, out


# ----------------------------------------------------------------------------------------------------
# Photometric distortion (SSD)
# ----------------------------------------------------------------------------------------------------


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD's photometric distortion on a BGR uint8 image; returns a new BGR uint8 image, same shape.

    Each with probability 0.5: brightness + U(-32, 32); contrast x U(0.5, 1.5) (before or after the HSV
    steps, chosen at random); saturation x U(0.5, 1.5); hue + U(-18, 18) degrees.
    """
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img += float(rng.uniform(-32.0, 32.0))
    contrast_first = rng.random() < 0.5

    def contrast(x: np.ndarray) -> np.ndarray:
        if rng.random() < 0.5:
            x *= float(rng.uniform(0.5, 1.5))
        return x

    if contrast_first:
        img = contrast(img)
    np.clip(img, 0.0, 255.0, out=img)
    do_sat = rng.random() < 0.5
    sat = float(rng.uniform(0.5, 1.5))
    do_hue = rng.random() < 0.5
    hue = float(rng.uniform(-18.0, 18.0))
    if do_sat or do_hue:
        hsv = cv2.cvtColor(img / 255.0, cv2.COLOR_BGR2HSV)  # H in [0, 360), S and V in [0, 1]
        if do_sat:
            hsv[:, :, 1] = np.clip(hsv[:, :, 1] * sat, 0.0, 1.0)
        if do_hue:
            hsv[:, :, 0] = np.mod(hsv[:, :, 0] + hue, 360.0)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR) * 255.0
    if not contrast_first:
        img = contrast(img)
    return np.clip(img, 0.0, 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# The composed training transform
# ----------------------------------------------------------------------------------------------------


def multiscale_sizes(base: int, steps: int = 2, stride: int = 32, minimum: int = 64) -> Tuple[int, ...]:
    """YOLOv2 multi-scale choices around ``base``: base + k*stride for k in [-steps, steps], >= minimum.

    The original draws from {320, 352, ..., 608} around 416 every 10 batches; here the range is centred on
    the configured input size so a CPU-sized model keeps a CPU-sized cost.
    """
    if base % stride:
        raise ValueError(f"multi-scale training needs an input size divisible by {stride}, got {base}")
    sizes = [base + k * stride for k in range(-steps, steps + 1)]
    return tuple(s for s in sizes if s >= minimum)


class TrainTransform:
    """Source image + boxes -> augmented, letterboxed input image + boxes.

    Call with a BGR uint8 [H, W, 3] image, float [N, 4] xyxy source-pixel boxes, int64 [N] labels, a
    ``numpy.random.Generator`` and the input size (H_in, W_in); returns (BGR uint8 [H_in, W_in, 3], boxes
    float32 [M, 4] xyxy input pixels, labels int64 [M]), M <= N after crops and degenerate drops.
    """

    def __init__(self, config: AugmentConfig):
        self.config = config.validate()

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
        input_hw: Tuple[int, int],
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        in_h, in_w = int(input_hw[0]), int(input_hw[1])
        height, width = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)

        # 1. zoom-out and crop compose into one window of the source frame
        window = (0, 0, width, height)
        if cfg.expand_prob > 0 and rng.random() < cfg.expand_prob:
            window = sample_expand_window(width, height, rng, cfg.expand_max_ratio)
        if cfg.crop and len(boxes):
            win_w, win_h = window[2] - window[0], window[3] - window[1]
            local = boxes - np.array([window[0], window[1], window[0], window[1]], np.float32)
            crop, _ = sample_crop_window(
                local,
                win_w,
                win_h,
                rng,
                min_scale=cfg.crop_min_scale,
                max_aspect=cfg.crop_max_aspect,
                trials=cfg.crop_trials,
            )
            if crop is not None:
                window = (window[0] + crop[0], window[1] + crop[1], window[0] + crop[2], window[1] + crop[3])
        if window != (0, 0, width, height):
            boxes, labels = crop_boxes(boxes, labels, window)
            boxes += np.array([window[0], window[1], window[0], window[1]], np.float32)  # back to source

        # 2. render the window at letterbox scale, 3. pad to the input size with edge.letterbox
        win_w, win_h = window[2] - window[0], window[3] - window[1]
        scale = min(in_w / float(win_w), in_h / float(win_h))
        if window == (0, 0, width, height):
            out, params = letterbox(image, (in_h, in_w), pad_value=cfg.pad_value)
        else:
            canvas, boxes = render_window(image, boxes, window, scale, cfg.pad_value)
            out, params = letterbox(canvas, (in_h, in_w), pad_value=cfg.pad_value)
        boxes = np.asarray(params.to_input(boxes), dtype=np.float32).reshape(-1, 4)

        # 4. flips and photometric distortion on the small input-sized image
        if cfg.hflip_prob > 0 and rng.random() < cfg.hflip_prob:
            out, boxes = hflip(out, boxes)
        if cfg.vflip_prob > 0 and rng.random() < cfg.vflip_prob:
            out, boxes = vflip(out, boxes)
        if cfg.photometric:
            out = photometric_distort(out, rng)
        boxes, labels = clip_and_filter(boxes, labels, in_w, in_h, cfg.min_box_size)
        return out, boxes, labels


def eval_transform(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, input_hw: Tuple[int, int], pad_value: int = 114
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Letterbox only (what the runtime does): returns (BGR uint8 input image, boxes input px, labels)."""
    out, params = letterbox(image, (int(input_hw[0]), int(input_hw[1])), pad_value=pad_value)
    boxes = np.asarray(params.to_input(np.asarray(boxes, np.float32).reshape(-1, 4)), np.float32)
    boxes, labels = clip_and_filter(boxes, labels, input_hw[1], input_hw[0], 0.0)
    return out, boxes, labels


def seeded_rng(*keys: int) -> np.random.Generator:
    """A Generator determined by integer keys, e.g. (seed, epoch, index): same sample, same augmentation."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])
