"""Export-stage tools: torch -> ONNX, graph surgery (NMS), quantization, the EfficientNMS_TRT CPU reference op.

Modules, each imported on its own (nothing is imported here, so ``edge.export.ort_custom_ops`` stays light
for the runtime):

* ``torch_export``       ``edge export``: a checkpoint or model -> pre-NMS ONNX (``export_types``, ``preprocess``,
                         ``simplify``, ``verify``; torchvision detectors: ``torchvision_adapter``, ``torchvision_loading``)
* ``prenms``             a pre-NMS graph as a predictor (``EvalSettings``, the accuracy gate's and ``edge eval``'s)
* ``quantize``           ``edge quantize``: INT8 Q/DQ and FP16 graphs, calibrated and accuracy-gated (a package)
* ``opset``              the graph's default-domain opset
* ``surgery``            ``edge surgery``: append NMS to a pre-NMS detector ONNX (``apply_surgery``,
                         ``surgery_file``, ``SurgeryConfig``)
* ``presets``            bring-your-own heads: named boxes/scores tensors, YOLOv5/YOLOv8 layouts
* ``nms_graph``          standard ONNX NonMaxSuppression + top-K subgraph
* ``efficient_nms_node`` the EfficientNMS_TRT plugin node
* ``ort_custom_ops``     run graphs with EfficientNMS_TRT on ONNX Runtime through ``edge.efficient_nms``
* ``graph_ops``          opset-aware node builders shared by the above
"""

from __future__ import annotations
