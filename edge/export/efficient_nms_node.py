"""The ``EfficientNMS_TRT`` plugin node (TensorRT 8.0.1 - 10.x), appended with onnx-graphsurgeon.

The node stays in the default ONNX domain, where TensorRT's ONNX parser looks plugins up by op type.
That makes the graph fail ``onnx.checker`` and ONNX Runtime ("no op registered"): check and run its
CPU copy from ``edge.export.ort_custom_ops.make_cpu_runnable`` instead (node moved to ``ai.onnx.contrib``
and served by the numpy reference ``edge.efficient_nms``).

Every plugin attribute is written explicitly, so no TensorRT version's defaults are relied on
(``class_agnostic`` reaches the plugin creator only from TensorRT 8.6: the 8.5.x creator parses six fields, so
``edge build`` refuses a class-agnostic graph for TensorRT 8.5 and older).
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from edge.artifacts import NMS_OUTPUTS
from edge.efficient_nms import PLUGIN_NAME, EfficientNMSParams
from edge.errors import EdgeError


def add_efficient_nms(
    ops: Any,
    boxes: Any,
    scores: Any,
    params: EfficientNMSParams,
    *,
    anchors: Any = None,
    batch: Any = None,
    output_names: Optional[List[str]] = None,
    domain: str = "",
) -> List[Any]:
    """Append one EfficientNMS_TRT node; returns its four output Variables.

    Args:
        ops: ``edge.export.graph_ops.GraphOps`` on the graph.
        boxes: [B, N, 4] float32, corners (box_coding 0) or cx,cy,w,h (box_coding 1); deltas when
            ``anchors`` is given (fused decoder).
        scores: [B, N, C] float32 (raw logits when ``params.score_activation``).
        params: the plugin attributes (validated here).
        anchors: optional [1|B, N, 4] tensor, same coding as boxes (fused-decoder form; with corners the
            plugin orders each delta's and anchor's corner pairs before adding them, see
            ``edge.efficient_nms.decode_boxes``).
        batch: the batch dim for the output shapes (int or a symbolic name).
        domain: node domain; "" (default) is what TensorRT's parser expects.

    Returns:
        [num_detections [B,1] int32, detection_boxes [B,K,4] float32 corners, detection_scores [B,K]
        float32, detection_classes [B,K] int32].
    """
    import onnx_graphsurgeon as gs

    params.validate()
    if anchors is not None and params.box_coding not in (0, 1):
        raise EdgeError("the fused decoder needs box_coding 0 or 1")
    k = int(params.max_output_boxes)
    b = batch if batch is not None else "batch"
    names = list(output_names or NMS_OUTPUTS)
    outputs = [
        gs.Variable(names[0], dtype=np.int32, shape=[b, 1]),
        gs.Variable(names[1], dtype=np.float32, shape=[b, k, 4]),
        gs.Variable(names[2], dtype=np.float32, shape=[b, k]),
        gs.Variable(names[3], dtype=np.int32, shape=[b, k]),
    ]
    inputs = [boxes, scores] + ([anchors] if anchors is not None else [])
    node = gs.Node(
        op=PLUGIN_NAME,
        name=ops.name("efficient_nms"),
        attrs=params.to_attributes(),
        inputs=inputs,
        outputs=outputs,
        domain=domain or None,
    )
    ops.graph.nodes.append(node)
    return outputs
