"""The model's input: what tensor a graph expects, and how a frame is written into it.

Every stage feeds a network the same pixels through this module: the runtime's pipeline and backends,
``edge eval``, ``edge bench``, INT8 calibration (``edge quantize``, the legacy TensorRT calibrator) and the
doctor's self-test.

``InputFormat``
    The graph input, decided from the input tensor and the model's sidecar (``input_format_from_graph``,
    or ``model_input_format`` for an ONNX path / ``onnx.ModelProto``)::

        uint8_nhwc_bgr   uint8          [B, H, W, 3]  frames as captured (BGR); the graph normalizes
        float_nchw_rgb   float32/16     [B, 3, H, W]  RGB, ``(pixel / scale - mean) / std``

``Preprocessor``
    Frame (uint8 [H, W, 3] BGR) -> that tensor, into preallocated buffers:

    * ``uint8_nhwc_bgr`` graphs: ``edge.letterbox.letterbox`` writes the frame straight into the input
      tensor [1, H, W, 3]; nothing else happens on the CPU.
    * ``float_nchw_rgb`` graphs: letterbox into a uint8 scratch, then per RGB plane
      ``(pixel / scale - mean) / std`` into the float tensor [1, 3, H, W] (float32, or float16 through a
      float32 plane).

    No allocation per frame: the scratch belongs to the ``Preprocessor`` (one per thread), the output
    tensor to the caller (``new_buffer``).

A primitive: numpy, OpenCV (lazily) and onnx (lazily) only; no torch, no onnxruntime.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edge.errors import ModelError
from edge.letterbox import LetterboxParams, letterbox

log = logging.getLogger(__name__)

LAYOUT_UINT8_NHWC_BGR = "uint8_nhwc_bgr"
LAYOUT_FLOAT_NCHW_RGB = "float_nchw_rgb"
LAYOUTS = (LAYOUT_UINT8_NHWC_BGR, LAYOUT_FLOAT_NCHW_RGB)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (-1 for a dynamic dimension) and numpy dtype of one graph input or output."""

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype

    def describe(self) -> str:
        dims = ",".join("?" if d < 0 else str(d) for d in self.shape)
        return f"{self.name} {np.dtype(self.dtype).name}[{dims}]"


@dataclass
class InputFormat:
    """What the graph's input expects, so preprocessing can produce exactly that.

    layout: ``uint8_nhwc_bgr`` (frames as captured; the graph normalizes) or ``float_nchw_rgb``
        (preprocessing converts BGR->RGB, HWC->CHW and applies ``(pixel / scale - mean) / std``).
    height, width: the network input size in pixels (the letterbox target).
    batch: the static batch size, or -1 when the graph's batch dimension is dynamic.
    dtype: numpy dtype name of the input tensor (uint8, float32 or float16).
    pad_value: the letterbox border value (gray 114 unless the sidecar says otherwise).
    """

    layout: str
    height: int
    width: int
    batch: int = 1
    dtype: str = "uint8"
    scale: float = 255.0
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_value: int = 114

    def validate(self) -> "InputFormat":
        if self.layout not in LAYOUTS:
            raise ModelError(f"input layout {self.layout!r} is not supported; expected one of {LAYOUTS}")
        if self.height <= 0 or self.width <= 0:
            raise ModelError(
                f"input size {self.height}x{self.width} is not static; export the model with a fixed "
                "input size (edge export --imgsz H W) or pass one in the sidecar"
            )
        if self.layout == LAYOUT_UINT8_NHWC_BGR and self.dtype != "uint8":
            raise ModelError(f"layout {self.layout} needs a uint8 input, the graph has {self.dtype}")
        if self.layout == LAYOUT_FLOAT_NCHW_RGB and self.dtype not in ("float32", "float16"):
            raise ModelError(f"layout {self.layout} needs a float32/float16 input, the graph has {self.dtype}")
        if any(s == 0 for s in self.std) or self.scale == 0:
            raise ModelError(f"normalization has a zero divisor: scale={self.scale}, std={self.std}")
        return self

    def tensor_shape(self, batch: int = 1) -> Tuple[int, ...]:
        if self.layout == LAYOUT_UINT8_NHWC_BGR:
            return (batch, self.height, self.width, 3)
        return (batch, 3, self.height, self.width)


def input_format_from_graph(
    spec: TensorSpec, sidecar: Optional[Dict[str, Any]] = None
) -> InputFormat:
    """Decide the input format from the sidecar when it says, else from the input tensor itself.

    Sidecar keys read (any stage's sidecar): ``input_layout`` or ``layout`` (one of LAYOUTS),
    ``input_size``/``imgsz`` ([H, W]), ``normalization`` ({scale, mean, std}), ``pad_value``; the same
    inside an ``input`` block (``size``, ``layout``, ``pad_value``, ``normalization``) as ``edge export``
    writes it.
    Without a sidecar: uint8 with last dim 3 -> ``uint8_nhwc_bgr``; float with dim 1 == 3 ->
    ``float_nchw_rgb`` normalized to [0, 1] (logged, since a wrong guess gives bad detections).
    """
    sc = dict(sidecar or {})
    nested = sc.get("input") if isinstance(sc.get("input"), dict) else {}
    for key, alias in (("input_layout", "layout"), ("input_size", "size"), ("pad_value", "pad_value"),
                       ("normalization", "normalization")):
        if key not in sc and alias in nested:  # edge export also writes {"input": {"size", "pad_value"...}}
            sc[key] = nested[alias]
    dtype = np.dtype(spec.dtype).name
    shape = tuple(int(d) for d in spec.shape)
    if len(shape) != 4:
        raise ModelError(f"input {spec.describe()} must be 4-D (NHWC uint8 or NCHW float)")
    layout = sc.get("input_layout") or sc.get("layout")
    if isinstance(layout, dict):  # {"layout": "...", ...} style
        layout = layout.get("name") or layout.get("layout")
    if layout not in LAYOUTS:
        if dtype == "uint8" and shape[3] == 3:
            layout = LAYOUT_UINT8_NHWC_BGR
        elif dtype in ("float32", "float16") and shape[1] == 3:
            layout = LAYOUT_FLOAT_NCHW_RGB
        else:
            raise ModelError(
                f"cannot tell the input layout of {spec.describe()}: expected uint8 [B,H,W,3] BGR or "
                "float [B,3,H,W] RGB; add input_layout to the model's sidecar JSON"
            )
    if layout == LAYOUT_UINT8_NHWC_BGR:
        h, w = shape[1], shape[2]
    else:
        h, w = shape[2], shape[3]
    size = sc.get("input_size") or sc.get("imgsz")
    if (h <= 0 or w <= 0) and isinstance(size, (list, tuple)) and len(size) == 2:
        h, w = int(size[0]), int(size[1])
    norm = sc.get("normalization") or {}
    fmt = InputFormat(
        layout=layout,
        height=int(h),
        width=int(w),
        batch=int(shape[0]),
        dtype=dtype,
        scale=float(norm.get("scale", 255.0)),
        mean=tuple(float(v) for v in norm.get("mean", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
        std=tuple(float(v) for v in norm.get("std", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
        pad_value=int(sc.get("pad_value", 114)),
    )
    if layout == LAYOUT_FLOAT_NCHW_RGB and not norm:
        log.warning(
            "%s: no normalization in the sidecar; assuming RGB pixel/255 (mean 0, std 1)", spec.name
        )
    return fmt.validate()


def model_input_format(model: Any, sidecar: Optional[Dict[str, Any]] = None) -> Any:
    """The ``InputFormat`` of an ONNX model (path or ``onnx.ModelProto``).

    The graph's single image input (initializers listed as inputs are skipped) gives dtype and shape; the
    sidecar (read beside a path when not given) gives layout, size, normalization and pad value.
    """
    from edge.model_input import TensorSpec, input_format_from_graph

    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - a core dependency
        from edge.errors import MissingDependencyError

        raise MissingDependencyError("onnx", "reading an ONNX model's input", "pip install onnx") from exc
    if isinstance(model, (str, os.PathLike)):
        if sidecar is None:
            from edge.artifacts import read_sidecar

            sidecar = read_sidecar(model, required=False) or {}
        proto = onnx.load(str(model), load_external_data=False)
    else:
        proto = model
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(
            f"the model has {len(inputs)} inputs ({[i.name for i in inputs]}); calibration and evaluation "
            "expect one image input"
        )
    vi = inputs[0]
    tt = vi.type.tensor_type
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
    dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
    return input_format_from_graph(TensorSpec(vi.name, dims, np.dtype(np_dtype)), sidecar or {})


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
