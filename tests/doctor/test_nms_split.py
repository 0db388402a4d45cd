"""``edge.doctor.nms_split`` on real deploy graphs (both NMS flavours, made by ``edge surgery`` from the tiny
detector in tests/doctor/tiny_models.py): the probe graph exposes the pre-NMS tensors, and the NMS tail
alone replays the detections from them.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime_extensions")
pytest.importorskip("onnx_graphsurgeon")

from edge.doctor.compare import compare_detections  # noqa: E402
from edge.doctor.nms_split import OrtGraphRunner, nms_tail, probe_graph, split_at_nms  # noqa: E402
from edge.errors import ModelError  # noqa: E402


@pytest.mark.parametrize("flavour,op", [("efficient", "EfficientNMS_TRT"), ("onnx", "NonMaxSuppression")])
def test_split_exposes_pre_nms_tensors_and_the_tail_replays_the_detections(models, flavour, op):
    model = onnx.load(str(models[flavour]))
    split = split_at_nms(model)
    assert split.flavour == op
    assert "boxes" in split.pre_nms
    assert split.outputs == ["num_detections", "detection_boxes", "detection_scores", "detection_classes", "max_score"]
    probe = probe_graph(model, split)
    assert [o.name for o in probe.graph.output][:len(split.outputs)] == split.outputs
    runner = OrtGraphRunner(probe)
    tail = OrtGraphRunner(nms_tail(model, split))
    assert len(tail.session.get_inputs()) == len(split.tail_inputs)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    out = runner.run({"images": image})
    assert out["boxes"].shape == (1, 64, 4)
    assert int(out["num_detections"][0, 0]) > 0, "the tiny model must detect something for this test to mean anything"
    replay = tail.run({**{x: out[x] for x in split.pre_nms}, "images": image})
    assert compare_detections(replay, {k: out[k] for k in split.outputs}, 1e-6) == []
    # and the tail really runs NMS on what it is given: halving the scores drops detections below threshold
    halved = {x: (out[x] * 0.5 if "score" in x else out[x]) for x in split.pre_nms}
    fewer = tail.run({**halved, "images": image})
    assert int(fewer["num_detections"][0, 0]) < int(out["num_detections"][0, 0])


def test_split_refuses_a_graph_without_nms(models):
    with pytest.raises(ModelError, match="edge surgery"):
        split_at_nms(onnx.load(str(models["pre"])))
