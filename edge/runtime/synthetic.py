"""A tiny, exactly predictable "detector" as ONNX, for runtime tests and on-device self-checks.

``red_box_model`` finds the bounding box of red pixels (R > 200 and G < 100 in 0..255 units) in the
network input and reports it as one detection: class 1 ("wide") when wider than tall, else class 0
("tall"), score 0.9. No training, no data: where a red rectangle is drawn in a frame is where the
detection must come back, through letterbox, inference and the inverse mapping, which makes the whole
capture-infer-draw path testable to the pixel. Channel order and normalization are tested too: a blue
rectangle is not detected.

Flavours (``outputs``):
    "nms"     the four NMS outputs directly (num_detections [1,1] int32, detection_boxes [1,K,4] xyxy
              input pixels, detection_scores [1,K], detection_classes [1,K] int32)
    "prenms"  boxes [1,3,4] xyxy input pixels + scores [1,3,2]: candidate 0 is the red box (0.9 for its
              class, 0.05 for the other), candidate 1 the same box shrunk by one pixel (0.8: NMS must
              suppress it), candidate 2 a fixed 8x8 box at the origin (0.1: below any sane threshold).
              Append NMS with graph surgery (ONNX NonMaxSuppression or EfficientNMS_TRT).

Needs the ``onnx`` package (imported on call). A JSON sidecar with class names, input size, layout and
normalization is written beside the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple, Union

import numpy as np

from edge.artifacts import atomic_write_bytes, atomic_write_json
from edge.model_input import LAYOUT_UINT8_NHWC_BGR, LAYOUTS
from edge.ort import import_onnx

CLASS_NAMES = ["tall", "wide"]




class _Graph:
    """The nodes and initializers of the graph being built, added in order by ``const`` and ``node``."""

    def __init__(self) -> None:
        self.nodes: List[Any] = []
        self.inits: List[Any] = []

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: List[str], out: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def red_box_model(
    path: Union[str, Path],
    *,
    size: Tuple[int, int] = (96, 128),
    layout: str = LAYOUT_UINT8_NHWC_BGR,
    max_detections: int = 8,
    outputs: str = "nms",
    opset: int = 13,
) -> Path:
    """Write the model to ``path`` (and ``path``.json); ``size`` is the input (height, width)."""
    onnx = import_onnx()
    from onnx import helper

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    if outputs not in ("nms", "prenms"):
        raise ValueError("outputs must be 'nms' or 'prenms'")
    h, w = int(size[0]), int(size[1])
    k = int(max_detections)
    g = _Graph()
    inp, red, green, hi, lo = _red_green_planes(g, layout, h, w)
    box, box3, wide, score, found = _red_box(g, red, green, hi, lo, h, w)

    graph_outputs: List[Any]
    if outputs == "nms":
        graph_outputs = _nms_outputs(g, box3, score, wide, found, k)
    else:
        graph_outputs = _prenms_outputs(g, box, box3, wide, found)
    graph = helper.make_graph(g.nodes, "red_box", [inp], graph_outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edge.synthetic")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    path = Path(path)
    atomic_write_bytes(path, model.SerializeToString())
    _write_sidecar(path, h, w, layout)
    return path


def _red_green_planes(g: _Graph, layout: str, h: int, w: int) -> Tuple[Any, str, str, str, str]:
    """The graph input for ``layout``, its red and green planes [1,H,W] as float, and the red (``hi``) and
    green (``lo``) thresholds in the same units."""
    from onnx import TensorProto, helper

    const, node = g.const, g.node
    if layout == LAYOUT_UINT8_NHWC_BGR:
        inp = helper.make_tensor_value_info("images", TensorProto.UINT8, [1, h, w, 3])
        x = node("Cast", ["images"], "x", to=TensorProto.FLOAT)
        red = node("Slice", [x, const("c2", [2], np.int64), const("c3", [3], np.int64),
                             const("ax3", [3], np.int64)], "red4")
        green = node("Slice", [x, const("c1", [1], np.int64), const("c2b", [2], np.int64),
                               const("ax3b", [3], np.int64)], "green4")
        red = node("Squeeze", [red, const("sq3", [3], np.int64)], "red")
        green = node("Squeeze", [green, const("sq3b", [3], np.int64)], "green")
        hi, lo = const("hi", 200.0), const("lo", 100.0)
    else:
        inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])
        red = node("Slice", ["images", const("c0", [0], np.int64), const("c1", [1], np.int64),
                             const("ax1", [1], np.int64)], "red4")
        green = node("Slice", ["images", const("c1b", [1], np.int64), const("c2", [2], np.int64),
                               const("ax1b", [1], np.int64)], "green4")
        red = node("Squeeze", [red, const("sq1", [1], np.int64)], "red")
        green = node("Squeeze", [green, const("sq1b", [1], np.int64)], "green")
        hi, lo = const("hi", 200.0 / 255.0), const("lo", 100.0 / 255.0)  # sidecar: pixel / 255
    return inp, red, green, hi, lo


def _red_box(g: _Graph, red: str, green: str, hi: str, lo: str, h: int, w: int) -> Tuple[str, str, str, str, str]:
    """The box around the red pixels: ``box`` [1,4] and ``box3`` [1,1,4] xyxy, ``wide`` [1,1] (1.0 when
    wider than tall), ``score`` [1,1] (0.9 when found) and ``found`` [1,1] (1.0 / 0.0)."""
    from onnx import TensorProto

    const, node = g.const, g.node
    is_red = node("Greater", [red, hi], "is_red")
    not_green = node("Less", [green, lo], "not_green")
    mask = node("Cast", [node("And", [is_red, not_green], "mask_b")], "mask", to=TensorProto.FLOAT)  # [1,H,W]
    col = node("ReduceMax", [mask], "col", axes=[1], keepdims=0)  # [1,W]
    row = node("ReduceMax", [mask], "row", axes=[2], keepdims=0)  # [1,H]

    x1, x2 = _extent(g, col, w, "x")
    y1, y2 = _extent(g, row, h, "y")
    found = node("ReduceMax", [col], "found", axes=[1], keepdims=1)  # [1,1] 1.0 / 0.0
    box = node("Concat", [x1, y1, x2, y2], "box", axis=1)  # [1,4]
    box3 = node("Unsqueeze", [box, const("ax_1", [1], np.int64)], "box3")  # [1,1,4]
    wide = node("Cast", [node("Greater", [node("Sub", [x2, x1], "bw"), node("Sub", [y2, y1], "bh")], "is_wide")],
                "wide_f", to=TensorProto.FLOAT)  # [1,1]
    score = node("Mul", [found, const("s09", [[0.9]])], "score")  # [1,1]
    return box, box3, wide, score, found


def _extent(g: _Graph, v: str, n: int, tag: str) -> Tuple[str, str]:
    """First index and last index + 1 of the ones in the 0/1 row ``v`` [1,n]."""
    const, node = g.const, g.node
    up = const(f"{tag}_up", np.arange(1, n + 1, dtype=np.float32))  # index + 1
    down = const(f"{tag}_down", np.arange(n, 0, -1, dtype=np.float32))  # n - index
    hi_ = node("ReduceMax", [node("Mul", [v, up], f"{tag}_m1")], f"{tag}_2", axes=[1], keepdims=1)
    lo_t = node("ReduceMax", [node("Mul", [v, down], f"{tag}_m0")], f"{tag}_t", axes=[1], keepdims=1)
    lo_ = node("Sub", [const(f"{tag}_n", [[float(n)]]), lo_t], f"{tag}_1")
    return lo_, hi_  # [1,1] each: first index, last index + 1 (continuous pixel edges)


def _nms_outputs(g: _Graph, box3: str, score: str, wide: str, found: str, k: int) -> List[Any]:
    """The "nms" flavour: the red box padded to ``k`` detections, as the four NMS outputs."""
    from onnx import TensorProto, helper

    const, node = g.const, g.node
    pad_b = const("pad_boxes", np.zeros((1, k - 1, 4), np.float32))
    pad_s = const("pad_scores", np.zeros((1, k - 1), np.float32))
    pad_c = const("pad_classes", np.zeros((1, k - 1), np.int32), np.int32)
    node("Concat", [box3, pad_b], "detection_boxes", axis=1)
    node("Concat", [score, pad_s], "detection_scores", axis=1)
    cls = node("Cast", [wide], "cls_i", to=TensorProto.INT32)
    node("Concat", [cls, pad_c], "detection_classes", axis=1)
    node("Cast", [found], "num_detections", to=TensorProto.INT32)
    return [
        helper.make_tensor_value_info("num_detections", TensorProto.INT32, [1, 1]),
        helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [1, k, 4]),
        helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [1, k]),
        helper.make_tensor_value_info("detection_classes", TensorProto.INT32, [1, k]),
    ]


def _prenms_outputs(g: _Graph, box: str, box3: str, wide: str, found: str) -> List[Any]:
    """The "prenms" flavour: three candidate boxes [1,3,4] and their class scores [1,3,2]."""
    from onnx import TensorProto, helper

    const, node = g.const, g.node
    one = const("one", [[1.0]])
    shrink = const("shrink", [[1.0, 1.0, -1.0, -1.0]])
    box_b = node("Unsqueeze", [node("Add", [box, shrink], "box_s"), const("ax_1b", [1], np.int64)], "box_b3")
    box_c = const("box_c", np.array([[[0, 0, 8, 8]]], np.float32))
    node("Concat", [box3, box_b, box_c], "boxes", axis=1)  # [1,3,4]
    tall = node("Sub", [one, wide], "tall_f")
    # class scores of candidate 0: 0.9 for its class, 0.05 for the other (times found)
    s_wide = node("Add", [node("Mul", [wide, const("s085", [[0.85]])], "sw0"), const("s005", [[0.05]])], "sw")
    s_tall = node("Add", [node("Mul", [tall, const("s085b", [[0.85]])], "st0"), const("s005b", [[0.05]])], "st")
    c0 = node("Mul", [node("Concat", [s_tall, s_wide], "c0raw", axis=1), found], "cand0")  # [1,2]
    c1 = node("Mul", [c0, const("r089", [[0.8 / 0.9]])], "cand1")
    c2 = const("cand2", [[0.1, 0.0]])
    cat = node("Concat", [c0, c1, c2], "cand", axis=1)  # [1,6]
    node("Reshape", [cat, const("shape132", [1, 3, 2], np.int64)], "scores")
    return [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3, 2]),
    ]


def _write_sidecar(path: Path, h: int, w: int, layout: str) -> None:
    """The JSON sidecar beside the model: class names, input size, layout and normalization."""
    sidecar = {
        "class_names": CLASS_NAMES,
        "input_size": [h, w],
        "input_layout": layout,
        "normalization": {"scale": 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "pad_value": 114,
        "synthetic": "red_box",
    }
    atomic_write_json(path.with_suffix(".json"), sidecar)


def draw_red_box(frame: np.ndarray, box: Tuple[int, int, int, int]) -> np.ndarray:
    """Fill ``box`` (x1, y1, x2, y2 pixel edges, x2/y2 exclusive) with pure red (BGR 0,0,255) in place."""
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = (0, 0, 255)
    return frame
