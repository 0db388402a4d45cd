"""Standard-ONNX NMS: ``NonMaxSuppression`` plus the gathers and top-K that give EfficientNMS_TRT's outputs.

ONNX Runtime runs it, and TensorRT >= 8.6 imports it (INMSLayer). Needs opset >= 11 (ScatterND,
GatherElements, NonMaxSuppression with its final semantics); surgery converts older graphs first.

Subgraph, for boxes [B, N, 4] xyxy and scores [B, N, C] (activations applied)::

    scores_t  = Transpose(scores) [B, C, N]                     (class-agnostic: max over C -> [B, 1, N])
    selected  = NonMaxSuppression(boxes, scores_t, K, iou, score_threshold)    [M, 3] (image, class, box)
    dense     = ScatterND(full([B, C*N], -1), (image, class*N + box), selected scores)
    dense     = Concat(dense, full([B, K], -1))                 (so TopK(K) is valid for any N*C)
    top, idx  = TopK(dense, K)                                  best K per image over all classes
    valid     = top > -0.5;  num_detections = sum(valid)        (selected scores are > threshold >= 0)
    box = idx - (idx / N) * N;  class = idx / N                 (agnostic: class = argmax of the box)
    outputs   = GatherElements(boxes, box), top, class, masked to 0 where not valid

The outputs are those of EfficientNMS_TRT with the same thresholds except where the two operators
differ by definition: ONNX keeps score > threshold and suppresses IoU > threshold where the plugin uses
``>=``, and the plugin looks only at the best 4096 candidates (``edge.efficient_nms``).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from edge.artifacts import NMS_OUTPUTS
from edge.errors import EdgeError

MIN_OPSET = 11

_FLOAT, _INT32 = 1, 6  # onnx.TensorProto data types


def ordered_corners(ops: Any, boxes: Any, hint: str) -> Any:
    """[B|1, N, 4] corners with each pair put in order (x1 <= x2, y1 <= y2): Min and Max of the two corners.

    What EfficientNMS_TRT's decoder does to a delta and an anchor before adding them (``DecodeBoxes`` in
    ``plugin/efficientNMSPlugin/efficientNMSInference.cu``, NVIDIA/TensorRT; ``edge.efficient_nms.
    reorder_corners``). The plugin swaps by arithmetic (a - b, + b, -), so a swapped pair can differ from
    this exact swap in the last bits; an ordered pair comes out unchanged in both.
    """
    first = ops.slice(boxes, 0, 2, 2, hint=f"{hint}_first")
    second = ops.slice(boxes, 2, 4, 2, hint=f"{hint}_second")
    low = ops.binary("Min", first, second, hint=f"{hint}_low")
    high = ops.binary("Max", first, second, hint=f"{hint}_high")
    return ops.concat([low, high], axis=2, hint=f"{hint}_ordered")


def to_xyxy(ops: Any, boxes: Any, box_format: str, anchors: Any = None) -> Any:
    """[B, N, 4] boxes (or deltas with ``anchors``) in ``box_format`` -> decoded xyxy, as graph nodes.

    Decoding matches EfficientNMS_TRT's fused decoder (``edge.efficient_nms.decode_boxes``): corners decode
    as ordered delta + ordered anchor (see ``ordered_corners``), centre-size ones as given.
    """
    if box_format == "xyxy":
        if anchors is not None:
            return ops.binary("Add", ordered_corners(ops, boxes, "delta"), ordered_corners(ops, anchors, "anchor"),
                              hint="decode_xyxy")
        return boxes
    if box_format != "cxcywh":
        raise EdgeError(f"box format {box_format!r} is not xyxy or cxcywh")
    centre = ops.slice(boxes, 0, 2, 2, hint="box_centre")
    size = ops.slice(boxes, 2, 4, 2, hint="box_size")
    if anchors is not None:
        a_centre = ops.slice(anchors, 0, 2, 2, hint="anchor_centre")
        a_size = ops.slice(anchors, 2, 4, 2, hint="anchor_size")
        centre = ops.binary("Add", ops.binary("Mul", centre, a_size), a_centre, hint="decode_centre")
        size = ops.binary("Mul", a_size, ops.op("Exp", [size], hint="decode_exp"), hint="decode_size")
    half = ops.binary("Mul", size, ops.f32([0.5], hint="half"), hint="half_size")
    top_left = ops.binary("Sub", centre, half, hint="top_left")
    bottom_right = ops.binary("Add", centre, half, hint="bottom_right")
    return ops.concat([top_left, bottom_right], axis=2, hint="xyxy")


def _nms_scores(ops: Any, scores: Any, class_agnostic: bool) -> Tuple[Any, Any]:
    """(NMS scores [B, C, N], None), or class-agnostic (best score [B, 1, N], best class [B, N])."""
    if class_agnostic:
        best = ops.reduce("ReduceMax", scores, [2], keepdims=True, hint="best_score")  # [B, N, 1]
        best_class = ops.op("ArgMax", [scores], {"axis": 2, "keepdims": 0}, hint="best_class")  # [B, N]
        nms_scores = ops.transpose(best, [0, 2, 1], hint="scores_bcn")  # [B, 1, N]
    else:
        best_class = None
        nms_scores = ops.transpose(scores, [0, 2, 1], hint="scores_bcn")  # [B, C, N]
    return nms_scores, best_class


def _dense_selected_scores(ops: Any, boxes: Any, nms_scores: Any, k: int, score_threshold: float,
                           iou_threshold: float) -> Tuple[Any, Any]:
    """NonMaxSuppression, then its selected scores scattered into a dense [B, C'*N + K] tensor (-1 where
    not selected, K columns of -1 appended so TopK(K) is valid for any N*C').

    Returns (dense, N as a [1] int64 tensor).
    """
    import onnx_graphsurgeon as gs

    selected = ops.op(
        "NonMaxSuppression",
        [boxes, nms_scores, ops.i64([k], hint="max_per_class"), ops.f32([iou_threshold], hint="iou_threshold"),
         ops.f32([score_threshold], hint="score_threshold")],
        {"center_point_box": 0},
        hint="nms",
    )  # [M, 3] int64: image, class, box
    sel_image = ops.gather(selected, [0], axis=1, hint="sel_image")  # [M, 1]
    sel_class = ops.gather(selected, [1], axis=1, hint="sel_class")
    sel_box = ops.gather(selected, [2], axis=1, hint="sel_box")
    sel_scores = ops.op("GatherND", [nms_scores, selected], hint="sel_scores")  # [M]

    shape = ops.op("Shape", [nms_scores], hint="scores_shape")  # [3]: B, C', N
    dim_b = ops.gather(shape, [0], axis=0, hint="dim_b")
    dim_c = ops.gather(shape, [1], axis=0, hint="dim_c")
    dim_n = ops.gather(shape, [2], axis=0, hint="dim_n")
    dim_cn = ops.binary("Mul", dim_c, dim_n, hint="dim_cn")

    flat = ops.binary("Add", ops.binary("Mul", sel_class, dim_n), sel_box, hint="flat_index")  # [M, 1]
    scatter_idx = ops.concat([sel_image, flat], axis=1, hint="scatter_index")  # [M, 2]
    fill = gs.Constant(ops.name("fill"), np.array([-1.0], dtype=np.float32))
    dense = ops.op("ConstantOfShape", [ops.concat([dim_b, dim_cn], axis=0, hint="dense_shape")],
                   {"value": fill}, hint="dense_fill")
    dense = ops.op("ScatterND", [dense, scatter_idx, sel_scores], hint="dense_scores")  # [B, C'*N]
    pad = ops.op("ConstantOfShape", [ops.concat([dim_b, ops.i64([k], hint="k")], axis=0, hint="pad_shape")],
                 {"value": gs.Constant(ops.name("fill"), np.array([-1.0], dtype=np.float32))}, hint="pad_fill")
    dense = ops.concat([dense, pad], axis=1, hint="dense_padded")  # [B, C'*N + K]
    return dense, dim_n


def _masked_outputs(ops: Any, boxes: Any, top_scores: Any, valid: Any, count: Any, top_class: Any,
                    top_box: Any, names: List[str], b: Any, k: int) -> List[Any]:
    """The four graph outputs from the top K (scores, valid mask, count, class, box index), zeroed where not
    valid and cast to EfficientNMS_TRT's dtypes."""
    import onnx_graphsurgeon as gs

    box_index = ops.unsqueeze(top_box, [2], hint="box_index")  # [B, K, 1]
    box_index = ops.concat([box_index] * 4, axis=2, hint="box_index4")  # [B, K, 4]
    det_boxes = ops.op("GatherElements", [boxes, box_index], {"axis": 1}, hint="gather_boxes")
    valid3 = ops.unsqueeze(valid, [2], hint="valid3")
    zero_f = ops.f32([0.0], hint="zero")
    zero_i = ops.i64([0], hint="zero_i")

    out_num = gs.Variable(names[0], dtype=np.int32, shape=[b, 1])
    out_boxes = gs.Variable(names[1], dtype=np.float32, shape=[b, k, 4])
    out_scores = gs.Variable(names[2], dtype=np.float32, shape=[b, k])
    out_classes = gs.Variable(names[3], dtype=np.int32, shape=[b, k])
    g = ops.graph
    g.nodes.append(gs.Node("Cast", ops.name("num_detections"), {"to": _INT32}, [count], [out_num]))
    g.nodes.append(gs.Node("Where", ops.name("detection_boxes"), {}, [valid3, det_boxes, zero_f], [out_boxes]))
    g.nodes.append(gs.Node("Where", ops.name("detection_scores"), {}, [valid, top_scores, zero_f], [out_scores]))
    masked_class = ops.op("Where", [valid, top_class, zero_i], hint="masked_class")
    g.nodes.append(gs.Node("Cast", ops.name("detection_classes"), {"to": _INT32}, [masked_class], [out_classes]))
    return [out_num, out_boxes, out_scores, out_classes]


def add_onnx_nms(
    ops: Any,
    boxes: Any,
    scores: Any,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    class_agnostic: bool = False,
    batch: Any = None,
    output_names: Optional[List[str]] = None,
) -> List[Any]:
    """Append the subgraph; returns the four output Variables (named ``output_names``).

    Args:
        ops: ``edge.export.graph_ops.GraphOps`` on the graph (opset >= 11).
        boxes: [B, N, 4] float32 xyxy (input pixels).
        scores: [B, N, C] float32, activations applied (probabilities).
        score_threshold, iou_threshold: in [0, 1]. max_detections: K >= 1 (per image, all classes).
        class_agnostic: one NMS over all classes (each box keeps its best class).
        batch: the batch dim for the output shapes (int or symbolic name).

    Returns:
        [num_detections [B,1] int32, detection_boxes [B,K,4] float32 xyxy, detection_scores [B,K] float32,
        detection_classes [B,K] int32], zero-padded past num_detections.
    """
    if ops.opset < MIN_OPSET:
        raise EdgeError(f"ONNX NMS needs opset >= {MIN_OPSET}, the graph is at opset {ops.opset}")
    k = int(max_detections)
    names = list(output_names or NMS_OUTPUTS)
    b = batch if batch is not None else "batch"

    nms_scores, best_class = _nms_scores(ops, scores, class_agnostic)
    dense, dim_n = _dense_selected_scores(ops, boxes, nms_scores, k, score_threshold, iou_threshold)

    top_scores, top_index = ops.topk(dense, k, axis=1, hint="top_k")  # [B, K] float, int64
    valid = ops.binary("Greater", top_scores, ops.f32([-0.5], hint="valid_cut"), hint="valid")  # [B, K]
    count = ops.reduce("ReduceSum", ops.cast(valid, _FLOAT, hint="valid_f"), [1], keepdims=True, hint="count")

    top_class = ops.binary("Div", top_index, dim_n, hint="top_class")  # [B, K] int64
    top_box = ops.binary("Sub", top_index, ops.binary("Mul", top_class, dim_n), hint="top_box")
    if class_agnostic:
        top_class = ops.op("GatherElements", [best_class, top_box], {"axis": 1}, hint="agnostic_class")

    return _masked_outputs(ops, boxes, top_scores, valid, count, top_class, top_box, names, b, k)
