"""Graph surgery: the ONNX-NMS graph (ONNX Runtime) and the EfficientNMS_TRT graph (through the reference
op) give the same four outputs as the numpy reference, on synthetic detector heads built with onnx.helper
at opsets 9 and 17, for our own layout, bring-your-own encodings and the YOLO presets; bad input is refused
with a message that names the tensor."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.artifacts import MAX_SCORE_OUTPUT, NMS_OUTPUTS
from edge.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from edge.cli.main import main as edge_main
from edge.efficient_nms import EfficientNMSParams, efficient_nms
from edge.errors import EdgeError, ModelError
from edge.export.ort_custom_ops import CONTRIB_DOMAIN, FUSED_OP, make_cpu_runnable, make_session
from edge.export.presets import HeadSpec
from edge.export.surgery import SurgeryConfig, apply_surgery, check_model, output_description, surgery_file

# ------------------------------------------------------------------------------------------------ helpers


def _ort(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_graph(model, feed):
    """Run a deploy graph: ONNX-NMS graphs as they are, EfficientNMS_TRT ones through the reference op."""
    has_plugin = any(n.op_type == "EfficientNMS_TRT" for n in model.graph.node)
    sess = make_session(model) if has_plugin else _ort(model)
    return sess.run(list(NMS_OUTPUTS), feed)


def assert_same_detections(a, b, box_atol=1e-3, score_atol=1e-5):
    """Same count; boxes within 1e-3 px; scores within 1e-5; same classes; zero padding."""
    num_a, boxes_a, scores_a, classes_a = a
    num_b, boxes_b, scores_b, classes_b = b
    assert num_a.dtype == np.int32 and classes_a.dtype == np.int32 and boxes_a.dtype == np.float32
    np.testing.assert_array_equal(num_a, num_b)
    assert boxes_a.shape == boxes_b.shape and scores_a.shape == scores_b.shape
    for img in range(num_a.shape[0]):
        n = int(num_a[img, 0])
        np.testing.assert_array_equal(classes_a[img, :n], classes_b[img, :n])
        np.testing.assert_allclose(scores_a[img, :n], scores_b[img, :n], rtol=0, atol=score_atol)
        np.testing.assert_allclose(boxes_a[img, :n], boxes_b[img, :n], rtol=0, atol=box_atol)
        for arr in (boxes_a, scores_a, classes_a, boxes_b, scores_b, classes_b):
            assert not arr[img, n:].any(), "padding past num_detections must be zeros"


def head_model(opset, n, c, *, batch="B", box_dim=4, boxes_rank=3, scores_rank=3, init_as_input=False,
               anchors=None, image_input=None):
    """A stand-in detector: inputs raw_boxes, raw_scores -> Mul(one) -> outputs ``boxes`` and ``scores``.

    ``init_as_input`` lists the initializer as a graph input too (old exporters did). ``anchors`` adds
    an initializer called ``anchors``. ``image_input`` (H, W) adds an unused [B,3,H,W] image input.
    """
    box_shape = [batch, n, box_dim] if boxes_rank == 3 else [batch, n * box_dim]
    score_shape = [batch, n, c] if scores_rank == 3 else [batch, n * c]
    inputs = [helper.make_tensor_value_info("raw_boxes", TensorProto.FLOAT, box_shape),
              helper.make_tensor_value_info("raw_scores", TensorProto.FLOAT, score_shape)]
    nodes = [helper.make_node("Mul", ["raw_boxes", "one"], ["boxes"]),
             helper.make_node("Mul", ["raw_scores", "one"], ["scores"])]
    inits = [numpy_helper.from_array(np.ones([1], np.float32), "one")]
    if anchors is not None:
        inits.append(numpy_helper.from_array(np.asarray(anchors, np.float32), "anchors"))
    if image_input is not None:
        inputs.insert(0, helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, *image_input]))
    if init_as_input:
        inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    graph = helper.make_graph(
        nodes, "head", inputs,
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, box_shape),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, score_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def single_output_model(opset, shape):
    """A YOLO-style single-tensor head: input raw -> Mul(one) -> output0 (``shape``)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["raw", "one"], ["output0"])], "yolo",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(np.ones([1], np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return model


def random_boxes(rng, b, n, size=(320.0, 416.0), clusters=10):
    """[B, N, 4] xyxy in overlapping clusters inside an H x W = ``size`` image."""
    h, w = size
    centres = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], (b, clusters, 2))
    pick = rng.integers(0, clusters, (b, n))
    ctr = np.take_along_axis(centres, pick[..., None], axis=1) + rng.normal(0, 6, (b, n, 2))
    wh = rng.uniform(15, 60, (b, n, 2))
    return np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=2).astype(np.float32)


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def both_flavours(model, config, feed):
    """Surgery both ways; each result checked; returns (onnx outputs, efficient outputs, results)."""
    results = {}
    outs = {}
    for kind in ("onnx", "efficient"):
        res = apply_surgery(model, replace(config, nms=kind))
        check_model(res.model)
        assert [o.name for o in res.model.graph.output] == list(NMS_OUTPUTS) + [MAX_SCORE_OUTPUT]
        results[kind] = res
        outs[kind] = run_graph(res.model, feed)
    return outs["onnx"], outs["efficient"], results


# ------------------------------------------------------------------------------------------------ equivalence

CASES = {
    # name: HeadSpec kwargs, class_agnostic
    "own_export": (dict(), False),
    "agnostic": (dict(), True),
    "cxcywh": (dict(box_format="cxcywh"), False),
    "normalized_bg0_softmax": (dict(normalized=True, background_class=0, score_activation="softmax"), False),
    "cxcywh_normalized_bg_mid_sigmoid": (
        dict(box_format="cxcywh", normalized=True, background_class=1, score_activation="sigmoid"), False),
    "bg_last_agnostic_sigmoid": (dict(background_class=3, score_activation="sigmoid"), True),
}
IMAGE_HW = (320, 416)


@pytest.mark.parametrize("opset", [9, 17])
@pytest.mark.parametrize("case", list(CASES))
def test_onnx_and_efficient_graphs_match_the_reference(opset, case):
    spec_kwargs, agnostic = CASES[case]
    rng = np.random.default_rng(100 * list(CASES).index(case) + opset)  # explicit: hash(str) is salted
    b, n, c = 2, 200, 4
    boxes_px = random_boxes(rng, b, n, IMAGE_HW)
    h, w = IMAGE_HW
    scale = np.array([w, h, w, h], np.float32)
    spec = HeadSpec(**spec_kwargs)
    raw_boxes = xyxy_to_cxcywh(boxes_px) if spec.box_format == "cxcywh" else boxes_px
    if spec.normalized:
        raw_boxes = (raw_boxes / scale).astype(np.float32)
    if spec.score_activation == "none":
        raw_scores = rng.random((b, n, c), dtype=np.float32)
    else:
        raw_scores = rng.normal(0, 2.0, (b, n, c)).astype(np.float32)
    model = head_model(opset, n, c, image_input=IMAGE_HW if spec.normalized else None,
                       init_as_input=(opset == 9))
    config = SurgeryConfig(score_threshold=0.35, iou_threshold=0.5, max_detections=30, class_agnostic=agnostic,
                           head=spec)
    feed = {"raw_boxes": raw_boxes, "raw_scores": raw_scores}
    if spec.normalized:
        feed["images"] = np.zeros((b, 3, h, w), np.float32)
    out_onnx, out_eff, results = both_flavours(model, config, feed)

    # the reference: the same canonical head computed in numpy, then edge.efficient_nms
    exp_boxes = cxcywh_to_xyxy(raw_boxes) if spec.box_format == "cxcywh" else raw_boxes
    if spec.normalized:
        exp_boxes = cxcywh_to_xyxy(xyxy_to_cxcywh(boxes_px)) if spec.box_format == "cxcywh" else boxes_px
    scores = softmax(raw_scores, 2) if spec.score_activation == "softmax" else raw_scores
    if spec.background_class >= 0:
        scores = np.delete(scores, spec.background_class, axis=2)
    ref = efficient_nms(exp_boxes, scores, EfficientNMSParams(
        0.35, 0.5, 30, score_activation=spec.score_activation == "sigmoid", class_agnostic=agnostic))
    assert ref.num_detections.min() > 3, "the case must produce detections to compare"
    assert_same_detections(out_eff, tuple(ref))
    assert_same_detections(out_onnx, out_eff)

    eff, onx = results["efficient"], results["onnx"]
    assert eff.opset == opset and onx.opset == max(opset, 11)
    assert eff.num_classes == (c - 1 if spec.background_class >= 0 else c)
    if opset == 9:
        assert eff.source["initializer_inputs_removed"] == 1
        assert [i.name for i in eff.model.graph.input] == [i.name for i in model.graph.input][:len(feed)]


def ordered(boxes):
    """Corner pairs put in order (x1 <= x2, y1 <= y2), exactly: what EfficientNMS_TRT's decoder does to each
    delta and anchor before adding them (``DecodeBoxes``, plugin/efficientNMSPlugin in NVIDIA/TensorRT)."""
    return np.concatenate([np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])],
                          axis=-1)


@pytest.mark.parametrize("coding", ["xyxy", "cxcywh"])
def test_fused_decoder_form_matches(coding):
    rng = np.random.default_rng(21)
    b, n, c = 1, 150, 3
    h, w = IMAGE_HW
    scale = np.array([w, h, w, h], np.float32)
    target = random_boxes(rng, b, n, IMAGE_HW)
    anchors_px = target[:1] + rng.normal(0, 4, target[:1].shape).astype(np.float32)
    anchors = (anchors_px / scale).astype(np.float32)  # normalized anchors, as SSD priors are
    if coding == "xyxy":
        deltas = ((target - anchors_px) / scale).astype(np.float32)
        # plain offsets: the x1 offset often exceeds the x2 one, and the plugin orders each pair before adding
        assert (deltas[..., 0] > deltas[..., 2]).any() and (deltas[..., 1] > deltas[..., 3]).any()
        expected = ordered(deltas * scale) + ordered(anchors * scale)
    else:
        a, t = xyxy_to_cxcywh(anchors_px), xyxy_to_cxcywh(target)
        deltas = np.concatenate([(t[..., :2] - a[..., :2]) / a[..., 2:], np.log(t[..., 2:] / a[..., 2:])],
                                axis=-1).astype(np.float32)
        anchors = xyxy_to_cxcywh(anchors).astype(np.float32)
        expected = target
    scores = rng.random((b, n, c), dtype=np.float32)
    model = head_model(13, n, c, batch=1, anchors=anchors, image_input=IMAGE_HW)
    spec = HeadSpec(box_format=coding, normalized=True, anchors="anchors")
    config = SurgeryConfig(score_threshold=0.3, iou_threshold=0.5, max_detections=20, head=spec)
    feed = {"raw_boxes": deltas, "raw_scores": scores, "images": np.zeros((1, 3, h, w), np.float32)}
    out_onnx, out_eff, results = both_flavours(model, config, feed)
    plugin = [nd for nd in results["efficient"].model.graph.node if nd.op_type == "EfficientNMS_TRT"][0]
    assert len(plugin.input) == 3 and results["efficient"].nms["fused_decoder"] is True
    box_coding = [a.i for a in plugin.attribute if a.name == "box_coding"][0]
    assert box_coding == (1 if coding == "cxcywh" else 0)
    ref = efficient_nms(expected.astype(np.float32), scores, EfficientNMSParams(0.3, 0.5, 20))
    assert ref.num_detections.min() > 3
    assert_same_detections(out_eff, tuple(ref))
    assert_same_detections(out_onnx, out_eff)


def test_fused_corner_decoder_orders_deltas_and_anchors_in_both_graphs(caplog):
    """Hand-worked from the plugin's source: corners given in the wrong order decode as ordered delta +
    ordered anchor, in the EfficientNMS_TRT graph (reference op) and in the ONNX NonMaxSuppression one."""
    deltas = np.array([[[2, -1, -3, 4],       # -> (-3, -1, 2, 4)
                        [1, 5, 2, -2],        # -> (1, -2, 2, 5)
                        [5, 0, -5, 0]]], np.float32)  # -> (-5, 0, 5, 0)
    anchors = np.array([[[60, 10, 20, 50],    # -> (20, 10, 60, 50)
                         [100, 140, 160, 100],  # -> (100, 100, 160, 140)
                         [22, 9, 57, 54]]], np.float32)
    scores = np.array([[[0.9], [0.8], [0.7]]], np.float32)
    # box 2 decodes onto box 0 (IoU 1, suppressed); summed as given it would be (27, 9, 52, 54), IoU 0.56
    expected = np.array([[17, 9, 62, 54], [101, 98, 162, 145]], np.float32)
    model = head_model(13, 3, 1, batch=1, anchors=anchors)
    config = SurgeryConfig(score_threshold=0.3, iou_threshold=0.6, max_detections=5,
                           head=HeadSpec(anchors="anchors"))
    with caplog.at_level(logging.WARNING, logger="edge.export.surgery"):
        out_onnx, out_eff, _ = both_flavours(model, config, {"raw_boxes": deltas, "raw_scores": scores})
    assert "puts the corners of each delta and anchor in order" in caplog.text
    for num, boxes, det_scores, classes in (out_onnx, out_eff):
        assert num.tolist() == [[2]]
        np.testing.assert_allclose(boxes[0, :2], expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(det_scores[0, :2], [0.9, 0.8], rtol=0, atol=1e-6)
        assert classes[0].tolist() == [0] * 5 and not boxes[0, 2:].any()


@pytest.mark.parametrize("opset", [9, 17])
@pytest.mark.parametrize("preset", ["yolov5", "yolov8"])
def test_presets(opset, preset):
    rng = np.random.default_rng(opset * 7 + len(preset))
    b, n, c = 1, 240, 5
    boxes_px = random_boxes(rng, b, n, (640, 640))
    cxcywh = xyxy_to_cxcywh(boxes_px)
    cls = rng.random((b, n, c), dtype=np.float32)
    if preset == "yolov5":
        obj = rng.uniform(0.3, 1.0, (b, n, 1)).astype(np.float32)
        raw = np.concatenate([cxcywh, obj, cls], axis=2)
        scores = cls * obj
    else:
        raw = np.concatenate([cxcywh, cls], axis=2).transpose(0, 2, 1).copy()
        scores = cls
    model = single_output_model(opset, list(raw.shape))
    config = SurgeryConfig(score_threshold=0.3, iou_threshold=0.45, max_detections=25, head=HeadSpec(preset=preset))
    out_onnx, out_eff, results = both_flavours(model, config, {"raw": raw})
    ref = efficient_nms(cxcywh_to_xyxy(cxcywh), scores, EfficientNMSParams(0.3, 0.45, 25))
    assert ref.num_detections.min() > 3
    assert_same_detections(out_eff, tuple(ref))
    assert_same_detections(out_onnx, out_eff)
    assert results["efficient"].num_classes == c
    assert results["efficient"].source["preset"] == preset


def test_real_bccd_boxes_through_both_graphs(bccd_boxes):
    """Real ground-truth boxes (BCCD) jittered into near-duplicates, three classes, dynamic batch."""
    rng = np.random.default_rng(5)
    base = bccd_boxes
    reps = 6
    boxes = np.repeat(base, reps, axis=0) + rng.normal(0, 3, (len(base) * reps, 4)).astype(np.float32)
    n = len(boxes)
    scores = rng.random((2, n, 3), dtype=np.float32)
    batch = np.stack([boxes, boxes[::-1].copy()])
    model = head_model(17, n, 3)
    config = SurgeryConfig(score_threshold=0.2, iou_threshold=0.5, max_detections=100)
    out_onnx, out_eff, _ = both_flavours(model, config, {"raw_boxes": batch, "raw_scores": scores})
    ref = efficient_nms(batch, scores, EfficientNMSParams(0.2, 0.5, 100))
    assert ref.num_detections.min() > 10
    assert_same_detections(out_eff, tuple(ref))
    assert_same_detections(out_onnx, out_eff)


@pytest.fixture(scope="module")
def bccd_boxes():
    import xml.etree.ElementTree as ET

    root = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "bccd"
    files = sorted((root / "Annotations").glob("*.xml"))[:4] if root.is_dir() else []
    if not files:
        pytest.skip(f"BCCD dataset not found at {root}")
    boxes = []
    for f in files:
        for obj in ET.parse(f).getroot().iter("object"):
            bb = obj.find("bndbox")
            boxes.append([float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
    return np.asarray(boxes, np.float32)


# ------------------------------------------------------------------------------------------------ the graphs


def test_efficient_node_sets_every_attribute_and_needs_its_cpu_copy_for_the_checker():
    model = head_model(17, 50, 2)
    res = apply_surgery(model, SurgeryConfig(nms="efficient", score_threshold=0.4, iou_threshold=0.6,
                                             max_detections=10, class_agnostic=True))
    nodes = [nd for nd in res.model.graph.node if nd.op_type == "EfficientNMS_TRT"]
    assert len(nodes) == 1 and nodes[0].domain == ""
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == {"score_threshold": pytest.approx(0.4), "iou_threshold": pytest.approx(0.6),
                     "max_output_boxes": 10, "background_class": -1, "score_activation": 0,
                     "class_agnostic": 1, "box_coding": 0, "plugin_version": b"1"}
    with pytest.raises(onnx.checker.ValidationError, match="EfficientNMS_TRT"):
        onnx.checker.check_model(res.model)  # default domain: what TensorRT wants, what the checker refuses
    cpu = make_cpu_runnable(res.model)
    onnx.checker.check_model(cpu, full_check=True)
    assert [nd.domain for nd in cpu.graph.node if nd.op_type == "EfficientNMS_TRT"] == [CONTRIB_DOMAIN]
    # the deploy graph declares the four outputs with their types and static K
    outs = {o.name: o.type.tensor_type for o in res.model.graph.output}
    assert outs["num_detections"].elem_type == TensorProto.INT32
    assert outs["detection_classes"].elem_type == TensorProto.INT32
    assert [d.dim_value for d in outs["detection_boxes"].shape.dim][1:] == [10, 4]
    assert outs["detection_boxes"].shape.dim[0].dim_param == "B"


def test_onnx_graph_passes_full_checker_and_keeps_dynamic_batch():
    model = head_model(13, 40, 3)
    res = apply_surgery(model, SurgeryConfig(nms="onnx", max_detections=7))
    onnx.checker.check_model(res.model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(res.model, check_type=True, strict_mode=True)
    assert {nd.op_type for nd in inferred.graph.node} >= {"NonMaxSuppression", "TopK", "ScatterND"}
    rng = np.random.default_rng(0)
    for b in (1, 3):
        out = _ort(res.model).run(None, {"raw_boxes": random_boxes(rng, b, 40),
                                         "raw_scores": rng.random((b, 40, 3), dtype=np.float32)})
        assert out[0].shape == (b, 1) and out[1].shape == (b, 7, 4)


@pytest.mark.parametrize("agnostic", [False, True])
def test_tied_scores_come_out_in_the_same_order(agnostic):
    """Random-weight models give many equal scores; both graphs must still agree entry by entry."""
    rng = np.random.default_rng(9)
    n, c = 300, 3
    model = head_model(17, n, c)
    scores = (np.round(rng.random((2, n, c)) * 6) / 6).astype(np.float32)
    feed = {"raw_boxes": random_boxes(rng, 2, n), "raw_scores": scores}
    config = SurgeryConfig(score_threshold=0.3, iou_threshold=0.5, max_detections=80, class_agnostic=agnostic)
    out_onnx, out_eff, _ = both_flavours(model, config, feed)
    ref = efficient_nms(feed["raw_boxes"], scores, EfficientNMSParams(0.3, 0.5, 80, class_agnostic=agnostic))
    assert ref.num_detections.min() > 20
    assert_same_detections(out_eff, tuple(ref))
    assert_same_detections(out_onnx, out_eff, box_atol=0, score_atol=0)


def test_fp16_heads_run_nms_in_fp32():
    """A half-precision export: boxes and scores are cast to float32 before NMS in both graphs."""
    n, c = 120, 2
    model = head_model(17, n, c)
    for node, out in zip(model.graph.node, ("boxes", "scores")):
        node.output[0] = out + "_f32"
        model.graph.node.append(helper.make_node("Cast", [out + "_f32"], [out], to=TensorProto.FLOAT16))
    for o in model.graph.output:
        o.type.tensor_type.elem_type = TensorProto.FLOAT16
    rng = np.random.default_rng(8)
    feed = {"raw_boxes": random_boxes(rng, 1, n), "raw_scores": rng.random((1, n, c), dtype=np.float32)}
    out_onnx, out_eff, results = both_flavours(model, SurgeryConfig(max_detections=20), feed)
    assert results["efficient"].source["boxes_dtype"] == "float16"
    ref = efficient_nms(feed["raw_boxes"].astype(np.float16).astype(np.float32),
                        feed["raw_scores"].astype(np.float16).astype(np.float32), EfficientNMSParams(0.25, 0.45, 20))
    assert ref.num_detections.min() > 3
    assert_same_detections(out_eff, tuple(ref))
    assert_same_detections(out_onnx, out_eff)


def test_more_detections_asked_than_candidates_exist():
    """K larger than N*C: the ONNX graph pads, like the plugin."""
    rng = np.random.default_rng(2)
    model = head_model(17, 6, 1)
    feed = {"raw_boxes": random_boxes(rng, 1, 6), "raw_scores": rng.uniform(0.5, 1, (1, 6, 1)).astype(np.float32)}
    out_onnx, out_eff, _ = both_flavours(model, SurgeryConfig(score_threshold=0.1, max_detections=50), feed)
    assert out_onnx[1].shape == (1, 50, 4)
    assert_same_detections(out_onnx, out_eff)


def test_cpu_copy_fills_defaults_casts_fp16_and_renames_the_fused_form():
    """A hand-written TRT graph (as other tools write them): fp16 tensors, few attributes, anchors."""
    n = 30
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 1, n)
    scores = rng.random((1, n, 2), dtype=np.float32)
    anchors = np.zeros((1, n, 4), np.float32)
    nodes = [
        helper.make_node("Cast", ["b"], ["b16"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["s"], ["s16"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["a"], ["a16"], to=TensorProto.FLOAT16),
        helper.make_node("EfficientNMS_TRT", ["b16", "s16", "a16"], list(NMS_OUTPUTS), name="nms",
                         max_output_boxes=15, score_threshold=0.3),  # iou_threshold: plugin default 0.5
    ]
    graph = helper.make_graph(
        nodes, "trt",
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, n, 4]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, n, 2]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, n, 4])],
        [helper.make_tensor_value_info("num_detections", TensorProto.INT32, [1, 1]),
         helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT16, [1, 15, 4]),
         helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT16, [1, 15]),
         helper.make_tensor_value_info("detection_classes", TensorProto.INT32, [1, 15])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    cpu = make_cpu_runnable(model)
    plugin = [nd for nd in cpu.graph.node if nd.domain == CONTRIB_DOMAIN]
    assert [nd.op_type for nd in plugin] == [FUSED_OP]
    onnx.checker.check_model(cpu, full_check=True)
    num, det_boxes, det_scores, det_classes = make_session(model).run(
        list(NMS_OUTPUTS), {"b": boxes, "s": scores, "a": anchors})
    assert det_boxes.dtype == np.float16 and det_scores.dtype == np.float16
    ref = efficient_nms(boxes.astype(np.float16), scores.astype(np.float16),
                        EfficientNMSParams(0.3, 0.5, 15), anchors=anchors.astype(np.float16))
    np.testing.assert_array_equal(num, ref.num_detections)
    assert num[0, 0] > 3
    np.testing.assert_array_equal(det_classes, ref.detection_classes)
    np.testing.assert_allclose(det_boxes.astype(np.float32), ref.detection_boxes.astype(np.float32), atol=0.5)


def test_cpu_copy_of_a_graph_without_the_plugin_is_refused():
    with pytest.raises(ModelError, match="no EfficientNMS_TRT node"):
        make_cpu_runnable(head_model(13, 5, 1))


# ------------------------------------------------------------------------------------------------ bad input


def _bad(model, message, exc=ModelError, **config):
    head = config.pop("head", HeadSpec())
    with pytest.raises(exc, match=message):
        apply_surgery(model, SurgeryConfig(head=head, **config))


def test_missing_outputs_are_named():
    model = head_model(13, 10, 2)
    _bad(model, r"boxes tensor 'bbox' not found.*outputs are: boxes \[B, 10, 4\], scores \[B, 10, 2\]",
         head=HeadSpec(boxes="bbox"))
    _bad(model, r"scores tensor 'conf' not found", head=HeadSpec(scores="conf"))
    _bad(model, r"anchors tensor 'priors' not found", head=HeadSpec(anchors="priors"))


def test_wrong_ranks_and_last_dim():
    _bad(head_model(13, 10, 2, boxes_rank=2), r"boxes tensor 'boxes' is \[B, 40\] \(rank 2\); expected rank 3")
    _bad(head_model(13, 10, 2, scores_rank=2), r"scores tensor 'scores' is \[B, 20\] \(rank 2\); expected rank 3")
    _bad(head_model(13, 10, 2, box_dim=5), r"boxes tensor 'boxes' is \[B, 10, 5\]; its last dim must be 4")
    # swapped names: scores [B,N,2] given as boxes
    _bad(head_model(13, 10, 2), r"its last dim must be 4.*swap", head=HeadSpec(boxes="scores", scores="boxes"))


def test_box_and_score_counts_must_agree():
    model = head_model(13, 10, 2)
    model.graph.output[1].type.tensor_type.shape.dim[1].dim_value = 11
    model.graph.node[1].input[0] = "raw_scores"
    # make the declared shape the real one: feed input of 11 rows
    model.graph.input[1].type.tensor_type.shape.dim[1].dim_value = 11
    _bad(model, r"disagree on N \(10 boxes vs 11 score rows\)")


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(score_threshold=1.5), r"--score-threshold must be in \[0, 1\], got 1.5"),
        (dict(score_threshold=-0.01), r"--score-threshold must be in \[0, 1\]"),
        (dict(iou_threshold=1.01), r"--iou-threshold must be in \[0, 1\], got 1.01"),
        (dict(max_detections=0), r"--max-detections \(K\) must be >= 1, got 0"),
        (dict(nms="fast"), r"--nms 'fast' is not one of"),
        (dict(head=HeadSpec(box_format="xywh")), r"box format 'xywh' is not one of"),
        (dict(head=HeadSpec(score_activation="relu")), r"score activation 'relu'"),
    ],
)
def test_bad_settings(config, message):
    _bad(head_model(13, 10, 2), message, exc=EdgeError, **config)


def test_background_class_out_of_range():
    _bad(head_model(13, 10, 3), r"background class 5 is out of range for scores with C = 3",
         head=HeadSpec(background_class=5))
    _bad(head_model(13, 10, 1), r"single column and it is the background", head=HeadSpec(background_class=0))


def test_normalized_needs_an_input_size():
    _bad(head_model(13, 10, 2), r"--normalized.*pass --input-size HxW", head=HeadSpec(normalized=True))
    res = apply_surgery(head_model(13, 10, 2), SurgeryConfig(head=HeadSpec(normalized=True, input_size=(100, 200))))
    assert res.source["input_size"] == [100, 200]


def test_bad_preset_tensors():
    _bad(single_output_model(13, [1, 60]), r"preset yolov5: output 'output0' has \[1, 60\]; expected rank 3",
         head=HeadSpec(preset="yolov5"))
    _bad(single_output_model(13, [1, 100, 5]), r"expected last dim 5 \+ C >= 6", head=HeadSpec(preset="yolov5"))
    _bad(single_output_model(13, [1, 100, 9]), r"expected \[B, 4\+C, N\] with N anchors on the last axis",
         head=HeadSpec(preset="yolov8"))
    _bad(single_output_model(13, [1, 4, 100]), r"expected dim 1 = 4 \+ C >= 5", head=HeadSpec(preset="yolov8"))
    _bad(single_output_model(13, [1, 9, 100]), r"preset-output tensor 'nope' not found",
         head=HeadSpec(preset="yolov8", preset_output="nope"))


def test_surgery_twice_is_refused():
    once = apply_surgery(head_model(13, 10, 2), SurgeryConfig(nms="onnx")).model
    _bad(once, r"already ends in NMS \(NonMaxSuppression\)")
    once = apply_surgery(head_model(13, 10, 2), SurgeryConfig(nms="efficient")).model
    _bad(once, r"already ends in NMS \(EfficientNMS_TRT\)")


def test_opset_below_9_is_refused():
    _bad(head_model(8, 10, 2, init_as_input=True), r"opset 8; edge surgery supports opset >= 9")


# ------------------------------------------------------------------------------------------------ files + CLI


def _save(model, path):
    onnx.save(model, str(path))
    return path


def test_surgery_file_carries_the_sidecar_forward(tmp_path):
    src = _save(head_model(13, 60, 3), tmp_path / "det.onnx")
    sidecar = {"classes": ["rbc", "wbc", "platelets"], "input_size": [320, 416], "normalization":
               {"scale": 255.0, "mean": [0, 0, 0], "std": [1, 1, 1]}, "input_layout": "float_nchw_rgb",
               "history": [{"stage": "export", "input": "ckpt.pt", "input_sha256": "abc"}],
               "outputs": {"boxes": {"name": "boxes"}, "scores": {"name": "scores"}}}
    (tmp_path / "det.json").write_text(json.dumps(sidecar))
    out = tmp_path / "deploy" / "det_trt.onnx"
    meta = surgery_file(src, out, SurgeryConfig(nms="efficient", score_threshold=0.3, iou_threshold=0.5,
                                                max_detections=20))
    written = json.loads((tmp_path / "deploy" / "det_trt.json").read_text())
    assert written == json.loads(json.dumps(meta))
    assert written["classes"] == ["rbc", "wbc", "platelets"]
    assert written["normalization"] == sidecar["normalization"] and written["input_layout"] == "float_nchw_rgb"
    assert written["nms"]["type"] == "efficient" and written["nms"]["op"] == "EfficientNMS_TRT"
    assert (written["nms"]["score_threshold"], written["nms"]["iou_threshold"],
            written["nms"]["max_detections"]) == (0.3, 0.5, 20)
    assert written["nms"]["box_units"] == "input_pixels" and written["num_classes"] == 3
    # the export's boxes/scores description is replaced by the four NMS outputs
    assert sorted(written["outputs"]) == sorted(NMS_OUTPUTS + (MAX_SCORE_OUTPUT,))
    assert written["outputs"]["detection_boxes"]["shape"] == ["B", 20, 4]
    assert [h["stage"] for h in written["history"]] == ["export", "surgery"]
    import hashlib

    assert written["history"][-1]["input_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert written["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert written["file"] == "det_trt.onnx"
    check_model(onnx.load(str(out)))


def test_surgery_file_refuses_wrong_class_names_and_overwriting_its_input(tmp_path):
    src = _save(head_model(13, 20, 3), tmp_path / "det.onnx")
    with pytest.raises(ModelError, match=r"--classes names 2 classes but the scores have 3"):
        surgery_file(src, tmp_path / "out.onnx", SurgeryConfig(classes=["a", "b"]))
    with pytest.raises(EdgeError, match="is the input model"):
        surgery_file(src, src, SurgeryConfig())
    with pytest.raises(EdgeError, match=r"must end in \.onnx"):
        surgery_file(src, tmp_path / "out.engine", SurgeryConfig())
    assert not (tmp_path / "out.onnx").exists()


def test_cli_surgery(tmp_path, capsys):
    src = _save(single_output_model(17, [1, 8, 300]), tmp_path / "yolo.onnx")
    out = tmp_path / "yolo.nms.onnx"
    rc = edge_main(["surgery", str(src), "--preset", "yolov8", "--nms", "onnx", "--max-detections", "40",
                    "--iou-threshold", "0.6", "--classes", "a,b,c,d", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["nms"] == "onnx" and summary["max_detections"] == 40 and summary["num_classes"] == 4
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["classes"] == meta["class_names"] == ["a", "b", "c", "d"]
    assert meta["nms"]["iou_threshold"] == 0.6
    check_model(onnx.load(str(out)))


def test_preset_graphs_record_ultralytics_input_normalization(tmp_path, caplog):
    """A YOLOv8-style export: images float [1,3,16,16] -> output0 [1, 4+4, 96]. Its deploy sidecar says
    what ultralytics feeds it (RGB NCHW, pixel / 255), so the runtime needs no guess."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["output0"])], "yolov8ish",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 8, 96])],
        initializer=[numpy_helper.from_array(np.array([1, 8, 96], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", 17)])
    src = _save(model, tmp_path / "y8.onnx")
    out = tmp_path / "y8.nms.onnx"
    meta = surgery_file(src, out, SurgeryConfig(nms="onnx", head=HeadSpec(preset="yolov8")))
    assert meta["input_layout"] == "float_nchw_rgb" and meta["pad_value"] == 114
    assert meta["normalization"] == {"scale": 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

    with caplog.at_level("WARNING"):
        backend = OnnxRuntimeBackend(out)
    assert "no normalization" not in caplog.text
    fmt = backend.input_format
    assert (fmt.layout, fmt.scale, fmt.height, fmt.width) == ("float_nchw_rgb", 255.0, 16, 16)
    backend.close()
    # a non-image input (the single-tensor test head) gets no such guess
    plain = _save(single_output_model(17, [1, 8, 300]), tmp_path / "plain.onnx")
    meta = surgery_file(plain, tmp_path / "plain.nms.onnx", SurgeryConfig(nms="onnx", head=HeadSpec(preset="yolov8")))
    assert "normalization" not in meta


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--score-threshold", "2"], r"--score-threshold must be in \[0, 1\], got 2.0"),
        (["--max-detections", "0"], r"--max-detections \(K\) must be >= 1"),
        (["--boxes", "nope"], r"boxes tensor 'nope' not found"),
        (["--preset", "yolov5", "--boxes", "x"], r"--preset fixes the layout"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, caplog, extra, message):
    src = _save(head_model(13, 10, 2), tmp_path / "det.onnx")
    rc = edge_main(["surgery", str(src), "--out", str(tmp_path / "o.onnx")] + extra)
    assert rc == 2
    assert any(__import__("re").search(message, r.getMessage()) for r in caplog.records), caplog.text
    assert not (tmp_path / "o.onnx").exists()


# ------------------------------------------------------------------------------------ max_score output


@pytest.mark.parametrize("activation", ["none", "sigmoid"])
@pytest.mark.parametrize("opset", [11, 18])
def test_max_score_output_is_the_highest_score_before_nms_in_both_flavours(activation, opset):
    """The fifth output, after the four in their order: each image's highest score over every box and class
    (activation applied), also when NMS keeps nothing (every score under the threshold) and in the
    EfficientNMS_TRT flavour; recorded in the sidecar blocks."""
    rng = np.random.default_rng(11)
    model = head_model(opset, 60, 3)
    raw = rng.uniform(-6.0, -2.5, (2, 60, 3)) if activation == "sigmoid" else rng.uniform(0.0, 0.07, (2, 60, 3))
    feed = {"raw_boxes": random_boxes(rng, 2, 60), "raw_scores": raw.astype(np.float32)}
    activated = 1.0 / (1.0 + np.exp(-raw)) if activation == "sigmoid" else raw
    expected = activated.reshape(2, -1).max(axis=1)
    config = SurgeryConfig(score_threshold=0.25, max_detections=10, head=HeadSpec(score_activation=activation))
    for kind in ("onnx", "efficient"):
        res = apply_surgery(model, replace(config, nms=kind))
        check_model(res.model)
        assert [o.name for o in res.model.graph.output] == list(NMS_OUTPUTS) + [MAX_SCORE_OUTPUT]
        assert res.nms["max_score_output"] == MAX_SCORE_OUTPUT
        num, peak = make_session(res.model).run(["num_detections", MAX_SCORE_OUTPUT], feed)
        assert num.tolist() == [[0], [0]], kind
        assert peak.dtype == np.float32 and peak.shape == (2,)
        np.testing.assert_allclose(peak, expected, rtol=1e-6, atol=1e-7)
        described = output_description(res.model, 10)
        assert described["max_score"] == {"name": MAX_SCORE_OUTPUT, "shape": ["B"], "dtype": "float32",
                                          "meaning": "each image's highest score before NMS (every box and class)"}


# ---------------------------------------------------------------------- NMS settings from the sidecar


def _torchvision_like(tmp_path):
    """A pre-NMS graph whose sidecar records NMS settings where a torchvision export puts them
    (``config.edge_surgery``, written by ``TorchvisionPostprocess.surgery_settings``): SSD300's 0.001 / 0.55 /
    300."""
    from edge.export.torchvision_adapter import TorchvisionPostprocess

    settings = TorchvisionPostprocess(family="ssd", score_thresh=0.001, nms_thresh=0.55, detections_per_img=300,
                                      topk_candidates=300).validate()
    src = _save(head_model(13, 400, 2), tmp_path / "tv.onnx")
    src.with_suffix(".json").write_text(json.dumps({"classes": ["a", "b"], "config": {
        "framework": "torchvision", "torchvision_postprocess": settings.to_dict(),
        "edge_surgery": settings.surgery_settings()}}))
    return src


def test_cli_surgery_takes_nms_defaults_from_the_sidecar_and_says_where_each_came_from(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    src = _torchvision_like(tmp_path)
    out = tmp_path / "tv.nms.onnx"
    assert edge_main(["surgery", str(src), "--nms", "onnx", "--out", str(out)]) == 0
    nms = json.loads(out.with_suffix(".json").read_text())["nms"]
    assert (nms["score_threshold"], nms["iou_threshold"], nms["max_detections"]) == (0.001, 0.55, 300)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("NMS settings")]
    assert lines == ["NMS settings: score threshold 0.001 (tv.json config.edge_surgery), IoU threshold 0.55 "
                     "(tv.json config.edge_surgery), max detections 300 (tv.json config.edge_surgery)"]
    # an explicit flag still wins, the others still come from the sidecar; no sidecar entry: the defaults
    caplog.clear()
    out2 = tmp_path / "tv2.nms.onnx"
    assert edge_main(["surgery", str(src), "--score-threshold", "0.3", "--out", str(out2)]) == 0
    nms = json.loads(out2.with_suffix(".json").read_text())["nms"]
    assert (nms["score_threshold"], nms["iou_threshold"], nms["max_detections"]) == (0.3, 0.55, 300)
    assert "score threshold 0.3 (--score-threshold), IoU threshold 0.55 (tv.json config.edge_surgery)" in caplog.text
    plain = _save(head_model(13, 10, 2), tmp_path / "plain.onnx")
    caplog.clear()
    meta = surgery_file(plain, tmp_path / "plain.nms.onnx", SurgeryConfig(nms="onnx", max_detections=7))
    assert (meta["nms"]["score_threshold"], meta["nms"]["iou_threshold"], meta["nms"]["max_detections"]) == \
        (0.25, 0.45, 7)
    assert "score threshold 0.25 (default), IoU threshold 0.45 (default), max detections 7 (--max-detections)" \
        in caplog.text
