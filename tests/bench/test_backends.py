"""``edge.bench.backends``: a model's precision read from the graph when no sidecar says."""

from __future__ import annotations

import numpy as np


def test_precision_is_read_from_the_graph_when_no_sidecar_says(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge.bench.backends import onnx_precision

    def save(name, nodes, inits, dtype=TensorProto.FLOAT):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, [1, 4])],
                                  [helper.make_tensor_value_info("y", dtype, [1, 4])], inits)
        path = tmp_path / name
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    w32 = numpy_helper.from_array(np.ones(4, np.float32), "w")
    w16 = numpy_helper.from_array(np.ones(4, np.float16), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    assert onnx_precision(save("a.onnx", [helper.make_node("Add", ["x", "w"], ["y"])], [w32])) == "fp32"
    assert onnx_precision(save("b.onnx", [helper.make_node("Add", ["x", "w"], ["y"])], [w16],
                               TensorProto.FLOAT16)) == "fp16"
    qdq = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    assert onnx_precision(save("c.onnx", qdq, [scale, zero])) == "int8"
