"""The input side of an exported graph: which tensor the graph takes, and the preprocessing folded into it.

Two input layouts (``--input`` of ``edge export``):

``uint8-nhwc-bgr`` (default)
    ``images`` uint8 [B, H, W, 3], BGR, letterboxed frames exactly as OpenCV captures them and
    ``edge.letterbox`` pads them (pad value 114). The graph does the rest::

        x = float(images)                     [B, H, W, 3]  BGR, 0..255
        x = x[..., ::-1]                      [B, H, W, 3]  RGB        (channel swap)
        x = x.permute(0, 3, 1, 2)             [B, 3, H, W]  RGB        (NHWC -> NCHW)
        x = (x / scale - mean) / std          per channel, folded into one Mul and one Add:
          = x * (1 / (scale * std)) + (-mean / std)

    so the runtime copies raw bytes to the device (4x less host-to-device traffic than float32) and does
    no per-pixel arithmetic on a weak CPU.

``float-nchw``
    ``images`` float32 [B, 3, H, W], RGB, already normalized with ``(pixel / scale - mean) / std``: the
    detector's own input, for users with their own preprocessing.

``preprocess_numpy`` is the numpy reference of the folded preprocessing (uint8 BGR NHWC -> normalized
float32 RGB NCHW); the export tests use it to prove both layouts equal. This module needs torch only for
``wrap_with_preprocessing`` (imported lazily there), so its constants and the numpy reference stay
usable without torch.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from edge.errors import ModelError, import_optional

log = logging.getLogger(__name__)

INPUT_NAME = "images"

LAYOUT_UINT8_NHWC_BGR = "uint8-nhwc-bgr"
LAYOUT_FLOAT_NCHW = "float-nchw"
INPUT_LAYOUTS = (LAYOUT_UINT8_NHWC_BGR, LAYOUT_FLOAT_NCHW)

# the names edge.runtime.backend uses for the same layouts (sidecar key ``input_layout``)
RUNTIME_LAYOUT_NAMES = {LAYOUT_UINT8_NHWC_BGR: "uint8_nhwc_bgr", LAYOUT_FLOAT_NCHW: "float_nchw_rgb"}


@dataclass
class NormalizationSpec:
    """Per-channel input normalization of RGB pixels in [0, 255]: ``(pixel / scale - mean) / std``.

    mean and std are in RGB order (the model's order), as in ``edge.models.base.Normalization``.
    """

    scale: float = 255.0
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)

    def validate(self) -> NormalizationSpec:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ModelError(f"normalization scale is {self.scale}; expected a positive number (255 for [0, 1])")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ModelError(f"normalization needs 3 means and 3 stds (RGB), got mean={list(self.mean)} "
                             f"std={list(self.std)}")
        if not all(np.isfinite(v) for v in self.mean) or not all(np.isfinite(v) and v > 0 for v in self.std):
            raise ModelError(f"normalization mean must be finite and std positive, got mean={list(self.mean)} "
                             f"std={list(self.std)}")
        return self

    @classmethod
    def from_any(cls, value: Any) -> NormalizationSpec:
        """A ``Normalization``-like object (scale/mean/std attributes) or its dict form (channel_order RGB)."""
        if isinstance(value, cls):
            return value.validate()
        if isinstance(value, dict):
            order = value.get("channel_order", "RGB")
            if order != "RGB":
                raise ModelError(f"normalization channel_order {order!r}; expected 'RGB' (models take RGB input)")
            data = value
        elif value is not None and hasattr(value, "mean") and hasattr(value, "std"):
            data = {"scale": getattr(value, "scale", 255.0), "mean": value.mean, "std": value.std}
        else:
            raise ModelError(f"cannot read a normalization from {value!r}; expected {{scale, mean, std}}")
        mean = [float(v) for v in data.get("mean", (0.0, 0.0, 0.0))]
        std = [float(v) for v in data.get("std", (1.0, 1.0, 1.0))]
        if len(mean) != 3 or len(std) != 3:
            raise ModelError(f"normalization needs 3 means and 3 stds (RGB), got mean={mean} std={std}")
        return cls(scale=float(data.get("scale", 255.0)), mean=(mean[0], mean[1], mean[2]),
                   std=(std[0], std[1], std[2])).validate()

    def to_dict(self) -> Dict[str, Any]:
        return {"scale": float(self.scale), "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std], "channel_order": "RGB"}

    def folded(self) -> Tuple[np.ndarray, np.ndarray]:
        """(multiplier, offset), float32 [3] each in RGB order: normalized = pixel * multiplier + offset."""
        std = np.asarray(self.std, np.float64)
        mul = 1.0 / (float(self.scale) * std)
        add = -np.asarray(self.mean, np.float64) / std
        return mul.astype(np.float32), add.astype(np.float32)


def check_layout(layout: str) -> str:
    if layout not in INPUT_LAYOUTS:
        raise ModelError(f"input layout {layout!r} is not supported; expected one of {list(INPUT_LAYOUTS)}")
    return layout


def input_shape(layout: str, batch: Union[int, str], size: Tuple[int, int]) -> List[Union[int, str]]:
    """The graph input's shape for ``layout``: [B, H, W, 3] (uint8-nhwc-bgr) or [B, 3, H, W] (float-nchw).

    ``batch`` may be a symbolic name ("batch") for a dynamic batch.
    """
    h, w = int(size[0]), int(size[1])
    if check_layout(layout) == LAYOUT_UINT8_NHWC_BGR:
        return [batch, h, w, 3]
    return [batch, 3, h, w]


def input_description(layout: str, size: Tuple[int, int], pad_value: int) -> Dict[str, Any]:
    """The sidecar's ``input`` block (name, size [H, W], layout, dtype, channel order, letterbox pad value)."""
    check_layout(layout)
    uint8 = layout == LAYOUT_UINT8_NHWC_BGR
    return {
        "name": INPUT_NAME,
        "size": [int(size[0]), int(size[1])],
        "layout": "NHWC" if uint8 else "NCHW",
        "dtype": "uint8" if uint8 else "float32",
        "channel_order": "BGR" if uint8 else "RGB",
        "resize": "letterbox",
        "pad_value": int(pad_value),
        "normalization_in_graph": uint8,
        "format": RUNTIME_LAYOUT_NAMES[layout],
    }


def preprocess_numpy(frames: np.ndarray, normalization: NormalizationSpec) -> np.ndarray:
    """numpy reference of the folded preprocessing.

    Args:
        frames: uint8 [B, H, W, 3] BGR (or [H, W, 3] for one frame), letterboxed.
    Returns:
        float32 [B, 3, H, W] RGB normalized, ``(pixel / scale - mean) / std`` computed as
        ``pixel * (1 / (scale * std)) - mean / std`` in float32, the graph's own order of operations.
    """
    x = np.asarray(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ModelError(f"frames have shape {x.shape}; expected uint8 [B, H, W, 3] BGR")
    if x.dtype != np.uint8:
        raise ModelError(f"frames have dtype {x.dtype}; expected uint8 (letterboxed BGR frames)")
    mul, add = normalization.folded()
    rgb = x[..., ::-1].astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(rgb * mul.reshape(1, 3, 1, 1) + add.reshape(1, 3, 1, 1), dtype=np.float32)


def _torch():
    return import_optional("torch", "torch", "exporting a PyTorch model to ONNX", "pip install 'edge-detect[export]'")


@functools.lru_cache(maxsize=None)
def _wrapper_class() -> Any:
    torch = _torch()

    class Uint8BGRInput(torch.nn.Module):
        """uint8 [B, H, W, 3] BGR frames -> ``model`` on float32 [B, 3, H, W] normalized RGB.

        Forward returns whatever ``model`` returns (the detectors: boxes [B, N, 4] xyxy input pixels,
        scores [B, N, C]). Exported as Cast -> Gather(channels 2,1,0) -> Transpose -> Mul -> Add.
        """

        def __init__(self, model: Any, normalization: NormalizationSpec):
            super().__init__()
            self.model = model
            mul, add = normalization.folded()
            # buffers, so they travel with .to(device) and are constants in the graph
            self.register_buffer("mul", torch.from_numpy(mul).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("add", torch.from_numpy(add).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("bgr_to_rgb", torch.tensor([2, 1, 0], dtype=torch.long), persistent=False)

        def forward(self, images: Any) -> Any:
            x = images.to(torch.float32)
            x = torch.index_select(x, 3, self.bgr_to_rgb)
            x = x.permute(0, 3, 1, 2)
            x = x * self.mul + self.add
            return self.model(x)

    return Uint8BGRInput


def wrap_with_preprocessing(model: Any, layout: str, normalization: Union[NormalizationSpec, Any]) -> Any:
    """The module ``edge export`` traces for ``layout``.

    ``uint8-nhwc-bgr``: a wrapper taking uint8 [B, H, W, 3] BGR with cast, channel swap, layout change and
    normalization inside; ``float-nchw``: ``model`` itself (float32 [B, 3, H, W] normalized RGB).
    The wrapper is in eval mode when ``model`` is.
    """
    if check_layout(layout) == LAYOUT_FLOAT_NCHW:
        return model
    spec = NormalizationSpec.from_any(normalization)
    wrapped = _wrapper_class()(model, spec)
    wrapped.train(bool(getattr(model, "training", False)))
    return wrapped


def sample_frames(batch: int, size: Tuple[int, int], seed: int) -> np.ndarray:
    """Random uint8 [batch, H, W, 3] BGR frames with a letterbox-like grey (114) band, reproducible by seed.

    Noise alone makes near-constant detector outputs; a smooth random gradient plus noise and a pad band
    exercise the whole value range of boxes and scores.
    """
    rng = np.random.default_rng(seed)
    h, w = int(size[0]), int(size[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((batch, h, w, 3), np.uint8)
    for b in range(batch):
        base = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 2 * np.pi)
            base[..., c] = 127.5 + 100.0 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + phase)
        base += rng.normal(0.0, 20.0, size=base.shape)
        frame = np.clip(base, 0, 255).astype(np.uint8)
        band = int(rng.integers(0, max(1, h // 6)))
        if band:
            frame[:band] = 114
            frame[h - band:] = 114
        frames[b] = frame
    return frames


def frames_for_layout(frames: np.ndarray, layout: str, normalization: NormalizationSpec) -> np.ndarray:
    """uint8 BGR NHWC frames -> the array the graph's ``images`` input takes for ``layout``."""
    if check_layout(layout) == LAYOUT_UINT8_NHWC_BGR:
        return np.ascontiguousarray(frames, dtype=np.uint8)
    return preprocess_numpy(frames, normalization)


def letterboxed_frames(images: Sequence[np.ndarray], size: Tuple[int, int], batch: int,
                       pad_value: int = 114) -> List[np.ndarray]:
    """BGR uint8 images of any size -> batches uint8 [batch, H, W, 3], letterboxed with ``edge.letterbox``.

    Images are taken in order and the last batch is filled by cycling from the first image.
    """
    from edge.letterbox import letterbox

    boxed = [letterbox(np.asarray(img), (int(size[0]), int(size[1])), pad_value=pad_value)[0] for img in images]
    if not boxed:
        return []
    out: List[np.ndarray] = []
    for start in range(0, len(boxed), batch):
        chunk = [boxed[(start + i) % len(boxed)] for i in range(batch)]
        out.append(np.stack(chunk))
    return out
