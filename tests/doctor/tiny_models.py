"""Deploy graphs for the self-test's tests: a tiny pre-NMS detector written here, with NMS appended by the
real ``edge surgery`` (both flavours: EfficientNMS_TRT and ONNX NonMaxSuppression).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def write_pre_nms_model(path: Path, size: int = 64, classes: int = 3, seed: int = 0) -> Path:
    """A tiny pre-NMS detector: uint8 [1,S,S,3] BGR -> boxes [1,N,4] xyxy input pixels, scores [1,N,C].

    One strided conv predicts per-cell offsets, log sizes and class logits around a grid of anchor
    centres, so boxes are well formed and scores vary with the image. Sidecar with class names beside it.
    """
    rng = np.random.default_rng(seed)
    stride = 8
    c_out = 4 + classes
    weights = (rng.standard_normal((c_out, 3, stride, stride)) * 0.05).astype(np.float32)
    bias = (rng.standard_normal(c_out) * 0.5).astype(np.float32)
    g = size // stride
    n = g * g
    ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    centres = np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], -1).astype(np.float32)[None]
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["nchw", "c255"], ["x"]),
        helper.make_node("Conv", ["x", "W", "B"], ["y"], kernel_shape=[stride, stride], strides=[stride, stride]),
        helper.make_node("Reshape", ["y", "shape3"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Slice", ["t", "s0", "s2", "ax2"], ["dxy"]),
        helper.make_node("Slice", ["t", "s2", "s4", "ax2"], ["dwh"]),
        helper.make_node("Slice", ["t", "s4", "s99", "ax2"], ["logits"]),
        helper.make_node("Mul", ["dxy", "cstride"], ["oxy"]),
        helper.make_node("Add", ["oxy", "centres"], ["cxy"]),
        helper.make_node("Exp", ["dwh"], ["ewh"]),
        helper.make_node("Mul", ["ewh", "cbase"], ["wh"]),
        helper.make_node("Mul", ["wh", "chalf"], ["hwh"]),
        helper.make_node("Sub", ["cxy", "hwh"], ["tl"]),
        helper.make_node("Add", ["cxy", "hwh"], ["br"]),
        helper.make_node("Concat", ["tl", "br"], ["boxes"], axis=2),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(255, np.float32), "c255"),
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "B"),
        numpy_helper.from_array(np.array([1, c_out, n], np.int64), "shape3"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([2], np.int64), "s2"),
        numpy_helper.from_array(np.array([4], np.int64), "s4"),
        numpy_helper.from_array(np.array([99], np.int64), "s99"),
        numpy_helper.from_array(np.array([2], np.int64), "ax2"),
        numpy_helper.from_array(np.array(float(stride), np.float32), "cstride"),
        numpy_helper.from_array(centres, "centres"),
        numpy_helper.from_array(np.array(2.0 * stride, np.float32), "cbase"),
        numpy_helper.from_array(np.array(0.5, np.float32), "chalf"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, size, size, 3])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n, classes])],
        inits,
    )
    return _save_detector(graph, path, {"classes": [f"cell{i}" for i in range(classes)],
                                        "input_size": [size, size], "input_layout": "uint8_nhwc_bgr"})


def write_deploy_model(directory: Path, nms: str = "efficient", score_threshold: float = 0.3,
                       max_detections: int = 20) -> Path:
    """The tiny detector with NMS appended by the real ``edge surgery`` (``nms``: efficient | onnx)."""
    from edge.export.surgery import SurgeryConfig, surgery_file

    directory.mkdir(parents=True, exist_ok=True)
    pre = directory / "tiny.onnx"
    if not pre.exists():
        write_pre_nms_model(pre)
    out = directory / f"tiny.{nms}.onnx"
    surgery_file(pre, out, SurgeryConfig(nms=nms, score_threshold=score_threshold, max_detections=max_detections))
    return out


def write_fcn_pre_nms_model(path: Path, size: int = 64, classes: int = 3, seed: int = 1,
                            dynamic_hw: bool = False) -> Path:
    """A tiny fully convolutional pre-NMS detector whose shapes follow its input (no grid constants):
    uint8 [1,H,W,3] BGR -> boxes [1,N,4] xyxy pixels, scores [1,N,C], N = (H/8)(W/8).

    Each cell predicts a box from softplus of four outputs (x1, y1, then width and height of at least 8 px)
    and class logits, so boxes are well formed at any input size. ``dynamic_hw``: the input's height and
    width are free (as ``edge export --dynamic-hw`` writes them); else fixed at ``size``.
    """
    rng = np.random.default_rng(seed)
    stride = 8
    c_out = 4 + classes
    weights = (rng.standard_normal((c_out, 3, stride, stride)) * 0.05).astype(np.float32)
    bias = (rng.standard_normal(c_out) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["nchw", "c255"], ["x"]),
        helper.make_node("Conv", ["x", "W", "B"], ["y"], kernel_shape=[stride, stride], strides=[stride, stride]),
        helper.make_node("Reshape", ["y", "shape3"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Slice", ["t", "s0", "s2", "ax2"], ["dxy"]),
        helper.make_node("Slice", ["t", "s2", "s4", "ax2"], ["dwh"]),
        helper.make_node("Slice", ["t", "s4", "s99", "ax2"], ["logits"]),
        helper.make_node("Softplus", ["dxy"], ["pxy"]),
        helper.make_node("Mul", ["pxy", "c16"], ["tl"]),
        helper.make_node("Softplus", ["dwh"], ["pwh"]),
        helper.make_node("Mul", ["pwh", "c16"], ["swh"]),
        helper.make_node("Add", ["swh", "c8"], ["wh"]),
        helper.make_node("Add", ["tl", "wh"], ["br"]),
        helper.make_node("Concat", ["tl", "br"], ["boxes"], axis=2),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(255, np.float32), "c255"),
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "B"),
        numpy_helper.from_array(np.array([1, c_out, -1], np.int64), "shape3"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([2], np.int64), "s2"),
        numpy_helper.from_array(np.array([4], np.int64), "s4"),
        numpy_helper.from_array(np.array([99], np.int64), "s99"),
        numpy_helper.from_array(np.array([2], np.int64), "ax2"),
        numpy_helper.from_array(np.array(16.0, np.float32), "c16"),
        numpy_helper.from_array(np.array(8.0, np.float32), "c8"),
    ]
    h, w = ("height", "width") if dynamic_hw else (size, size)
    n = "num_boxes" if dynamic_hw else (size // stride) ** 2
    graph = helper.make_graph(
        nodes, "tiny_fcn_detector",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, h, w, 3])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n, classes])],
        inits,
    )
    return _save_detector(graph, path, {"classes": [f"fcn{i}" for i in range(classes)],
                                        "input_size": [size, size], "input_layout": "uint8_nhwc_bgr",
                                        "input": {"dynamic_hw": dynamic_hw}})


def write_fcn_deploy_model(directory: Path, nms: str = "onnx", dynamic_hw: bool = False,
                           score_threshold: float = 0.3, max_detections: int = 20) -> Path:
    """``write_fcn_pre_nms_model`` with NMS appended by the real ``edge surgery`` (``nms``: efficient | onnx)."""
    from edge.export.surgery import SurgeryConfig, surgery_file

    directory.mkdir(parents=True, exist_ok=True)
    tag = "dynamic" if dynamic_hw else "static"
    pre = write_fcn_pre_nms_model(directory / f"fcn_{tag}.onnx", dynamic_hw=dynamic_hw)
    out = directory / f"fcn_{tag}.nms_{nms}.onnx"
    surgery_file(pre, out, SurgeryConfig(nms=nms, score_threshold=score_threshold, max_detections=max_detections))
    return out


def _save_detector(graph: Any, path: Path, sidecar: Dict[str, Any]) -> Path:
    """Check and save a tiny detector graph (opset 13, IR 8) with its sidecar beside it."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path
