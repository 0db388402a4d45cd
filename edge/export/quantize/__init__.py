"""``edge quantize``: INT8 as explicit Q/DQ (TensorRT's form, or ONNX Runtime's CPU form with
``--target onnxruntime``) and FP16 as an fp16 graph, on CPU, accuracy-gated.

Input: the pre-NMS graph of ``edge export`` (one image input; outputs ``boxes`` [B, N, 4] xyxy input
pixels and ``scores`` [B, N, C]) and its sidecar. Output: ``OUT.onnx`` with the same input and outputs
(names, dtypes, shapes) plus ``OUT.json``, the sidecar carried forward with a ``quantization`` block.
``edge surgery`` then appends NMS to it as to any other pre-NMS graph.

Modules (each imports only those above it in this list, never the reverse):

* ``partition``  which nodes are quantized (the weighted layers of the body; decode and preprocessing
                 stay float), node naming, ``prepare_model``, ``check_pre_nms``
* ``compare``    run a graph on ONNX Runtime's CPU and measure output errors against FP32
                 (``run_outputs``, ``output_errors``)
* ``int8``       calibration and explicit Q/DQ insertion (``Int8Quantizer``), TensorRT's Q/DQ form
                 (``check_trt_qdq``)
* ``ort_cpu``    INT8 in the form ONNX Runtime's CPU provider fuses (``--target onnxruntime``:
                 ``OrtCpuQuantizer``, ``fold_input_preprocessing``, ``check_ort_cpu_graph``)
* ``fp16``       the fp16 graph, its simulation and the decode precision check (``build_fp16``)
* ``gate``       the accuracy gate (``run_gate``, ``GateConfig``); not imported here, as it loads
                 ``edge.runtime.predictors``: import ``edge.export.quantize.gate`` where the gate runs
* ``run``        the verb: ``quantize_file`` and ``QuantizeConfig``

This package re-exports the public API of all but ``gate``. Nothing here imports torch.
"""

from __future__ import annotations

from edge.export.quantize.compare import output_errors, run_outputs
from edge.export.quantize.fp16 import Fp16Result, build_fp16, convert_fp16, fp16_simulation
from edge.export.quantize.int8 import Int8Quantizer, check_trt_qdq, qdq_summary
from edge.export.quantize.ort_cpu import OrtCpuQuantizer, check_ort_cpu_graph, fold_input_preprocessing
from edge.export.quantize.partition import GraphPartition, name_nodes, partition_graph
from edge.export.quantize.run import QuantizeConfig, QuantizeResult, quantize_file

__all__ = [
    "Fp16Result",
    "GraphPartition",
    "Int8Quantizer",
    "OrtCpuQuantizer",
    "QuantizeConfig",
    "QuantizeResult",
    "build_fp16",
    "check_ort_cpu_graph",
    "check_trt_qdq",
    "convert_fp16",
    "fold_input_preprocessing",
    "fp16_simulation",
    "name_nodes",
    "output_errors",
    "partition_graph",
    "qdq_summary",
    "quantize_file",
    "run_outputs",
]
