"""Export-stage tools: graph surgery (NMS), the EfficientNMS_TRT CPU reference op, presets for foreign models.

Modules, each imported on its own (nothing is imported here, so ``edge.export.ort_custom_ops`` stays light
for the runtime):

* ``surgery``            ``edge surgery``: append NMS to a pre-NMS detector ONNX (``apply_surgery``,
                         ``surgery_file``, ``SurgeryConfig``)
* ``presets``            bring-your-own heads: named boxes/scores tensors, YOLOv5/YOLOv8 layouts
* ``nms_graph``          standard ONNX NonMaxSuppression + top-K subgraph
* ``efficient_nms_node`` the EfficientNMS_TRT plugin node
* ``ort_custom_ops``     run graphs with EfficientNMS_TRT on ONNX Runtime through ``edge.efficient_nms``
* ``graph_ops``          opset-aware node builders shared by the above
"""

from __future__ import annotations
