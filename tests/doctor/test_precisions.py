"""``edge.doctor.precisions``: which engines the self-test builds, from the GPU's SM, the TensorRT version
and the model's precision form.
"""

from __future__ import annotations

import pytest

from edge.doctor.precisions import plan_precisions
from edge.errors import EdgeError


def test_precision_plan_follows_the_gpu_and_the_tensorrt_version():
    orin = plan_precisions("10.3.0", "8.7", "m.onnx", "fp32", None)
    assert [(p.precision, p.model is not None) for p in orin] == [("fp32", True), ("fp16", True), ("int8", False)]
    assert "--int8-model" in orin[2].skip_reason
    with_q = plan_precisions("8.5.2", "7.2", "m.onnx", "fp32", "q.onnx")
    assert [p.model for p in with_q] == ["m.onnx", "m.onnx", "q.onnx"]
    nano = plan_precisions("8.2.1", "5.3", "m.onnx", "fp32", "q.onnx")
    assert nano[1].model == "m.onnx" and nano[2].model is None and "INT8" in nano[2].skip_reason
    pascal = plan_precisions("8.6.1", "6.1", "m.onnx", "fp32", "q.onnx")
    assert pascal[1].model is None and "FP16" in pascal[1].skip_reason and pascal[2].model == "q.onnx"
    trt11 = plan_precisions("11.0.0", "8.9", "m.onnx", "fp32", None)
    assert trt11[0].model == "m.onnx" and trt11[1].model is None and "strongly typed" in trt11[1].skip_reason
    qdq = plan_precisions("10.3.0", "8.7", "q.onnx", "qdq", None)
    assert [p.model for p in qdq] == [None, None, "q.onnx"]
    with pytest.raises(EdgeError):
        plan_precisions("10.3.0", "8.7", "m.onnx", "fp32", None, ["fp8"])
