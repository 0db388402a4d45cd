"""The numpy EfficientNMS_TRT reference (edge.efficient_nms) against edge.nms and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from edge.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from edge.efficient_nms import (
    MAX_CANDIDATES,
    EfficientNMSParams,
    decode_boxes,
    efficient_nms,
    reorder_corners,
)
from edge.errors import EdgeError, ModelError
from edge.nms import multiclass_nms


def random_head(rng, b=2, n=300, c=4, clusters=12, size=640.0):
    """Boxes [B,N,4] xyxy pixels in overlapping clusters, scores [B,N,C] uniform (no exact ties)."""
    centres = rng.uniform(0.1 * size, 0.9 * size, (b, clusters, 2))
    pick = rng.integers(0, clusters, (b, n))
    ctr = np.take_along_axis(centres, pick[..., None], axis=1) + rng.normal(0, 8, (b, n, 2))
    wh = rng.uniform(20, 80, (b, n, 2))
    boxes = np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=2).astype(np.float32)
    scores = rng.random((b, n, c), dtype=np.float32)
    return boxes, scores


def assert_matches_multiclass(out, img, boxes, scores, thr, iou, k, agnostic=False, class_map=None):
    exp_boxes, exp_scores, exp_classes = multiclass_nms(boxes, scores, thr, iou, k, class_agnostic=agnostic)
    if class_map is not None:
        exp_classes = class_map[exp_classes]
    n = int(out.num_detections[img, 0])
    assert n == len(exp_scores)
    np.testing.assert_array_equal(out.detection_classes[img, :n], exp_classes)
    np.testing.assert_allclose(out.detection_scores[img, :n], exp_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.detection_boxes[img, :n], exp_boxes, rtol=0, atol=1e-4)
    # zero padding past num_detections
    assert not out.detection_boxes[img, n:].any()
    assert not out.detection_scores[img, n:].any()
    assert not out.detection_classes[img, n:].any()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("agnostic", [False, True])
def test_matches_per_class_nms_and_top_k(seed, agnostic):
    rng = np.random.default_rng(seed)
    boxes, scores = random_head(rng)
    thr, iou, k = 0.3, 0.5, 25
    out = efficient_nms(boxes, scores, EfficientNMSParams(thr, iou, k, class_agnostic=agnostic))
    assert out.num_detections.dtype == np.int32 and out.detection_classes.dtype == np.int32
    assert out.detection_boxes.shape == (2, k, 4) and out.detection_scores.shape == (2, k)
    for img in range(2):
        assert_matches_multiclass(out, img, boxes[img], scores[img], thr, iou, k, agnostic)
    # top-K: K is the total over classes, the best scores first
    assert (out.num_detections == k).all()
    assert (np.diff(out.detection_scores, axis=1) <= 0).all()


def test_no_top_k_cut_when_few_survive():
    rng = np.random.default_rng(7)
    boxes, scores = random_head(rng, b=1, n=60, c=3)
    out = efficient_nms(boxes, scores, EfficientNMSParams(0.9, 0.5, 100))
    assert 0 < out.num_detections[0, 0] < 100
    assert_matches_multiclass(out, 0, boxes[0], scores[0], 0.9, 0.5, 100)


@pytest.mark.parametrize("agnostic", [False, True])
def test_ties_follow_onnx_runtime_order(agnostic):
    """Scores on a coarse grid tie often (as random-weight models' do): same order as edge.nms / ORT."""
    rng = np.random.default_rng(17)
    boxes, scores = random_head(rng, b=1, n=200, c=3)
    scores = (np.round(scores * 8) / 8).astype(np.float32)
    out = efficient_nms(boxes, scores, EfficientNMSParams(0.3, 0.5, 60, class_agnostic=agnostic))
    assert len(np.unique(out.detection_scores[0, : out.num_detections[0, 0]])) < out.num_detections[0, 0] / 4
    assert_matches_multiclass(out, 0, boxes[0], scores[0], 0.3, 0.5, 60, agnostic)


def test_per_class_vs_agnostic_on_overlapping_boxes():
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.0, 0.8]]], np.float32)
    per_class = efficient_nms(boxes, scores, EfficientNMSParams(0.5, 0.5, 10))
    assert per_class.num_detections[0, 0] == 2
    assert per_class.detection_classes[0, :2].tolist() == [0, 1]
    agnostic = efficient_nms(boxes, scores, EfficientNMSParams(0.5, 0.5, 10, class_agnostic=True))
    assert agnostic.num_detections[0, 0] == 1
    assert agnostic.detection_classes[0, 0] == 0
    np.testing.assert_array_equal(agnostic.detection_boxes[0, 0], [0, 0, 10, 10])


def test_greater_or_equal_comparisons_unlike_onnx():
    # IoU of these two is exactly 0.5; the plugin suppresses at IoU >= threshold, ONNX only at >
    boxes = np.array([[[0, 0, 3, 1], [1, 0, 4, 1]]], np.float32)
    scores = np.array([[[0.9], [0.5]]], np.float32)
    out = efficient_nms(boxes, scores, EfficientNMSParams(0.5, 0.5, 10))
    assert out.num_detections[0, 0] == 1
    _, onnx_scores, _ = multiclass_nms(boxes[0], scores[0], 0.4, 0.5, 10)
    assert len(onnx_scores) == 2
    # a score equal to the threshold is a candidate (>=); ONNX drops it (>)
    assert out.detection_scores[0, 0] == pytest.approx(0.9)
    edge_case = efficient_nms(boxes[:, :1], np.array([[[0.5]]], np.float32), EfficientNMSParams(0.5, 0.5, 10))
    assert edge_case.num_detections[0, 0] == 1
    assert len(multiclass_nms(boxes[0, :1], np.array([[0.5]], np.float32), 0.5, 0.5, 10)[1]) == 0


def _grid_boxes(count, cell=10.0):
    """``count`` disjoint 8x8 boxes on a grid (no two overlap)."""
    side = int(np.ceil(np.sqrt(count)))
    ij = np.stack(np.divmod(np.arange(count), side), axis=1).astype(np.float32) * cell
    return np.concatenate([ij, ij + 8.0], axis=1)


def test_only_top_4096_candidates_enter_nms():
    rng = np.random.default_rng(3)
    n = 5000
    boxes = _grid_boxes(n)[None]
    scores = rng.uniform(0.2, 1.0, (1, n, 1)).astype(np.float32)
    out = efficient_nms(boxes, scores, EfficientNMSParams(0.1, 0.5, n))
    assert out.num_detections[0, 0] == MAX_CANDIDATES
    # edge.nms has no cap: 5000; on the best 4096 candidates alone it gives exactly the reference's answer
    assert len(multiclass_nms(boxes[0], scores[0], 0.1, 0.5, n)[1]) == n
    top = np.argsort(-scores[0, :, 0], kind="stable")[:MAX_CANDIDATES]
    assert_matches_multiclass(out, 0, boxes[0, top], scores[0, top], 0.1, 0.5, n)


def test_cap_changes_the_result_when_the_best_4096_all_overlap():
    rng = np.random.default_rng(4)
    same = np.tile(np.array([[100, 100, 200, 200]], np.float32), (MAX_CANDIDATES, 1))
    disjoint = _grid_boxes(10, cell=20.0) + 400.0
    boxes = np.concatenate([same, disjoint])[None]
    scores = np.concatenate([rng.uniform(0.6, 1.0, MAX_CANDIDATES), rng.uniform(0.3, 0.5, 10)])
    scores = scores.astype(np.float32)[None, :, None]
    out = efficient_nms(boxes, scores, EfficientNMSParams(0.25, 0.5, 100))
    assert out.num_detections[0, 0] == 1  # the 10 disjoint boxes never made it into the top 4096
    assert len(multiclass_nms(boxes[0], scores[0], 0.25, 0.5, 100)[1]) == 11
    # a smaller cap is honoured the same way
    small = efficient_nms(boxes, scores, EfficientNMSParams(0.25, 0.5, 100, max_candidates=MAX_CANDIDATES + 10))
    assert small.num_detections[0, 0] == 11


def test_threshold_applies_before_the_cap():
    rng = np.random.default_rng(5)
    n = 6000
    boxes = _grid_boxes(n)[None]
    scores = rng.uniform(0.0, 0.29, (1, n, 1)).astype(np.float32)
    hot = rng.choice(n, 5, replace=False)
    scores[0, hot, 0] = rng.uniform(0.31, 0.9, 5)
    out = efficient_nms(boxes, scores, EfficientNMSParams(0.3, 0.5, 50))
    assert out.num_detections[0, 0] == 5
    assert sorted(out.detection_scores[0, :5].tolist()) == sorted(scores[0, hot, 0].tolist())
    assert not out.detection_scores[0, 5:].any()


def test_empty_output_is_all_zero_padding():
    boxes = np.ones((3, 10, 4), np.float32)
    scores = np.full((3, 10, 2), 0.1, np.float32)
    out = efficient_nms(boxes, scores, EfficientNMSParams(0.5, 0.5, 7))
    assert out.num_detections.tolist() == [[0], [0], [0]]
    assert out.detection_boxes.shape == (3, 7, 4) and not out.detection_boxes.any()
    assert not out.detection_scores.any() and not out.detection_classes.any()


@pytest.mark.parametrize("background", [0, 2])
def test_background_class_is_never_a_candidate(background):
    rng = np.random.default_rng(11)
    boxes, scores = random_head(rng, b=1, n=200, c=3)
    out = efficient_nms(boxes, scores, EfficientNMSParams(0.3, 0.5, 40, background_class=background))
    n = out.num_detections[0, 0]
    assert n > 0 and background not in out.detection_classes[0, :n].tolist()
    fg = [c for c in range(3) if c != background]
    assert_matches_multiclass(out, 0, boxes[0], scores[0][:, fg], 0.3, 0.5, 40, class_map=np.array(fg))


def test_sigmoid_activation_thresholds_logits_and_outputs_probabilities():
    rng = np.random.default_rng(12)
    boxes, _ = random_head(rng, b=2, n=250, c=3)
    logits = rng.normal(0, 2.5, (2, 250, 3)).astype(np.float32)
    probs = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    out = efficient_nms(boxes, logits, EfficientNMSParams(0.4, 0.5, 30, score_activation=True))
    for img in range(2):
        assert_matches_multiclass(out, img, boxes[img], probs[img], 0.4, 0.5, 30)
    assert (out.detection_scores[out.detection_scores > 0] >= 0.4).all()


def test_box_coding_center_size_outputs_corners():
    rng = np.random.default_rng(13)
    boxes, scores = random_head(rng, b=1, n=150, c=2)
    out = efficient_nms(xyxy_to_cxcywh(boxes), scores, EfficientNMSParams(0.3, 0.5, 20, box_coding=1))
    assert_matches_multiclass(out, 0, boxes[0], scores[0], 0.3, 0.5, 20)


# Hand-worked from the plugin's source (NVIDIA/TensorRT plugin/efficientNMSPlugin): ``DecodeBoxes`` calls
# ``reorder()`` on the box delta and on the anchor, then ``BoxCorner::decode`` adds them corner by corner;
# ``BoxCenterSize::reorder()`` does nothing. Corners here are given in the wrong order on purpose.
FUSED_CASES = {
    0: dict(
        deltas=[[2, -1, -3, 4],     # x pair swapped -> (-3, -1, 2, 4)
                [1, 5, 2, -2],      # y pair swapped -> (1, -2, 2, 5)
                [5, 0, -5, 0]],     # x pair swapped -> (-5, 0, 5, 0)
        anchors=[[60, 10, 20, 50],  # x pair swapped -> (20, 10, 60, 50)
                 [100, 140, 160, 100],  # y pair swapped -> (100, 100, 160, 140)
                 [22, 9, 57, 54]],  # in order
        # box 2 decodes onto box 0 exactly (IoU 1: suppressed); summed as given it would be (27, 9, 52, 54),
        # IoU 0.56 < 0.6 with box 0, and survive
        expected=[[17, 9, 62, 54], [101, 98, 162, 145]],
    ),
    1: dict(
        deltas=[[0.5, -0.25, 0.6931471805599453, 0.0],
                [0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0]],
        anchors=[[100, 80, 40, 20],  # (120, 75, 80, 20) -> corners (80, 65, 160, 85)
                 [50, 50, -20, 10],  # a negative width is not reordered: corners (60, 45, 40, 55)
                 [300, 300, 10, 10]],  # (295, 295, 305, 305)
        expected=[[80, 65, 160, 85], [60, 45, 40, 55], [295, 295, 305, 305]],
    ),
}


@pytest.mark.parametrize("coding", [0, 1])
def test_fused_decoder_with_anchors(coding):
    """The fused decoder against values worked by hand from the plugin's semantics (see FUSED_CASES)."""
    case = FUSED_CASES[coding]
    deltas = np.asarray(case["deltas"], np.float32)[None]
    anchors = np.asarray(case["anchors"], np.float32)[None]
    scores = np.array([[[0.9], [0.8], [0.7]]], np.float32)
    out = efficient_nms(deltas, scores, EfficientNMSParams(0.3, 0.6, 10, box_coding=coding), anchors=anchors)
    expected = np.asarray(case["expected"], np.float32)
    n = len(expected)
    assert out.num_detections.tolist() == [[n]]
    np.testing.assert_allclose(out.detection_boxes[0, :n], expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out.detection_scores[0, :n], [0.9, 0.8, 0.7][:n])
    assert out.detection_classes[0, :n].tolist() == [0] * n
    assert not out.detection_boxes[0, n:].any()


def test_corner_reordering_is_the_plugins_arithmetic_swap():
    """``BoxCorner::reorder`` swaps with a - b, + b, - (no temporary): 3 and 1e-8 come out 0 and 3 in fp32."""
    pairs = np.array([[3.0, 1e-8, 1e-8, 3.0], [5.0, 7.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    np.testing.assert_array_equal(reorder_corners(pairs), np.array(
        [[0.0, 1e-8, 3.0, 3.0], [1.0, 2.0, 5.0, 7.0], [1.0, 2.0, 3.0, 4.0]], np.float32))
    # deltas and anchors are both reordered before the sum; centre-size codes are left as they are
    delta = np.array([[4.0, 0.0, -4.0, 0.0]], np.float32)
    anchor = np.array([[10.0, 10.0, 30.0, 20.0]], np.float32)
    assert decode_boxes(delta, anchor, 0).tolist() == [[6.0, 10.0, 34.0, 20.0]]
    assert decode_boxes(delta[:, [0, 1, 1, 1]], anchor, 1)[0, :2].tolist() == [10.0 + 4.0 * 30.0, 10.0]


def _ordered(boxes):
    """Each corner pair in order, with an exact min/max (the plugin swaps by arithmetic: same values here)."""
    return np.concatenate([np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])],
                          axis=-1)


@pytest.mark.parametrize("coding", [0, 1])
def test_fused_decoder_on_random_heads(coding):
    """Random boxes encoded against jittered anchors. Centre-size deltas decode back to the boxes; corner
    offsets (box - anchor) decode to ordered(delta) + ordered(anchor), which is not the box wherever the x1
    (or y1) offset exceeds the x2 (y2) one. NMS on the deltas equals edge.nms on those decoded boxes."""
    rng = np.random.default_rng(14)
    boxes, scores = random_head(rng, b=2, n=120, c=2)
    anchors_xyxy = boxes[:1] + rng.normal(0, 3, boxes[:1].shape).astype(np.float32)
    if coding == 0:
        anchors = anchors_xyxy
        deltas = boxes - anchors
        crossed = (deltas[..., 0] > deltas[..., 2]) | (deltas[..., 1] > deltas[..., 3])
        assert 0.2 < crossed.mean() < 0.9, "the case must have offsets in both orders"
        expected = _ordered(deltas) + _ordered(anchors)
        assert np.abs(expected[crossed] - boxes[crossed]).max() > 1.0
        np.testing.assert_allclose(expected[~crossed], boxes[~crossed], atol=1e-3)
    else:
        anchors = xyxy_to_cxcywh(anchors_xyxy)
        target = xyxy_to_cxcywh(boxes)
        deltas = np.concatenate(
            [(target[..., :2] - anchors[..., :2]) / anchors[..., 2:], np.log(target[..., 2:] / anchors[..., 2:])],
            axis=-1,
        ).astype(np.float32)
        expected = boxes
    decoded = decode_boxes(deltas, anchors, coding)
    if coding == 1:
        decoded = cxcywh_to_xyxy(decoded)
    np.testing.assert_allclose(decoded, expected, atol=1e-3)
    out = efficient_nms(deltas, scores, EfficientNMSParams(0.3, 0.5, 20, box_coding=coding), anchors=anchors)
    for img in range(2):
        assert_matches_multiclass(out, img, expected[img], scores[img], 0.3, 0.5, 20)


def test_per_class_boxes():
    rng = np.random.default_rng(15)
    n, c = 80, 3
    per_class = np.stack([random_head(rng, b=1, n=n, c=1)[0][0] for _ in range(c)], axis=1)  # [N, C, 4]
    _, scores = random_head(rng, b=1, n=n, c=c)
    out = efficient_nms(per_class[None], scores, EfficientNMSParams(0.3, 0.5, 30))
    # the same problem as one list of N*C boxes whose only score is in their own class column
    flat_boxes = per_class.reshape(n * c, 4)
    flat_scores = np.zeros((n * c, c), np.float32)
    flat_scores[np.arange(n * c), np.tile(np.arange(c), n)] = scores[0].reshape(-1)
    assert_matches_multiclass(out, 0, flat_boxes, flat_scores, 0.3, 0.5, 30)
    shared = efficient_nms(per_class[None, :, :1], scores, EfficientNMSParams(0.3, 0.5, 30))
    assert_matches_multiclass(shared, 0, per_class[:, 0], scores[0], 0.3, 0.5, 30)


def test_fp16_inputs_give_fp16_outputs():
    rng = np.random.default_rng(16)
    boxes, scores = random_head(rng, b=1, n=50, c=2)
    out = efficient_nms(boxes.astype(np.float16), scores.astype(np.float16), EfficientNMSParams(0.3, 0.5, 10))
    assert out.detection_boxes.dtype == np.float16 and out.detection_scores.dtype == np.float16
    assert out.num_detections.dtype == np.int32 and out.num_detections[0, 0] > 0


def test_attributes_round_trip_and_defaults():
    p = EfficientNMSParams(0.2, 0.6, 50, background_class=0, score_activation=True, class_agnostic=True,
                           box_coding=1)
    attrs = p.to_attributes()
    assert attrs["plugin_version"] == "1" and attrs["score_activation"] == 1 and attrs["class_agnostic"] == 1
    assert EfficientNMSParams.from_attributes(attrs) == p
    d = EfficientNMSParams.from_attributes({})
    assert (d.score_threshold, d.iou_threshold, d.max_output_boxes, d.background_class) == (0.5, 0.5, 100, -1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"score_threshold": 1.5}, "score_threshold must be in"),
        ({"iou_threshold": -0.1}, "iou_threshold must be in"),
        ({"max_output_boxes": 0}, "max_output_boxes"),
        ({"box_coding": 2}, "box_coding"),
        ({"background_class": -2}, "background_class"),
    ],
)
def test_bad_params(kwargs, message):
    with pytest.raises(EdgeError, match=message):
        efficient_nms(np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 1), np.float32), EfficientNMSParams(**kwargs))


@pytest.mark.parametrize(
    "boxes_shape, scores_shape, message",
    [
        ((1, 5, 3), (1, 5, 2), "last dim 4"),
        ((1, 5, 4), (1, 5), r"expected \[B, N, C\]"),
        ((1, 6, 4), (1, 5, 2), "does not match"),
        ((1, 5, 3, 4), (1, 5, 2), "does not match"),
    ],
)
def test_bad_shapes(boxes_shape, scores_shape, message):
    with pytest.raises(ModelError, match=message):
        efficient_nms(np.zeros(boxes_shape, np.float32), np.zeros(scores_shape, np.float32))
