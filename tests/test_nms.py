"""NMS: numpy (edge.nms), torch (edge.models.ops) and ONNX Runtime's NonMaxSuppression keep the same boxes.

The reference is a real ONNX graph with one standard NonMaxSuppression node (center_point_box=0) run
in an onnxruntime InferenceSession, on random clustered boxes (ties, duplicates, several classes) and
on real BCCD ground-truth boxes jittered into duplicates.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import List, Tuple

import numpy as np
import pytest

from edge import nms as N

torch = pytest.importorskip("torch", reason="torch is needed for edge.models.ops (pip install -e .[train])")
onnx = pytest.importorskip(
    "onnx", reason="onnx is needed to build the reference graph (pip install -e .[dev])"
)
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the NMS reference")

from edge.models import ops  # noqa: E402
from tests.paths import BCCD  # noqa: E402

BIG = 1_000_000


# ------------------------------------------------------------------------- the ONNX Runtime reference


@pytest.fixture(scope="module")
def ort_nms():
    """Returns run(boxes [N,4] xyxy, scores [N,C], iou, score_threshold=None, max_out=BIG) -> [K,2]
    (class, box index) rows, exactly as ORT's NonMaxSuppression selects them (class-major)."""
    from onnx import TensorProto, helper

    node = helper.make_node(
        "NonMaxSuppression",
        ["boxes", "scores", "max_out", "iou", "score_thr"],
        ["selected"],
        center_point_box=0,
    )
    graph = helper.make_graph(
        [node],
        "nms_reference",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, "N", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, "C", "N"]),
            helper.make_tensor_value_info("max_out", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("score_thr", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, ["K", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(boxes, scores, iou, score_threshold=None, max_out=BIG):
        boxes = np.asarray(boxes, np.float32)
        scores = np.asarray(scores, np.float32)
        if scores.ndim == 1:
            scores = scores[:, None]
        thr = -np.inf if score_threshold is None else score_threshold
        sel = session.run(
            None,
            {
                # ONNX's center_point_box=0 layout is [y1, x1, y2, x2]
                "boxes": boxes[None][..., [1, 0, 3, 2]],
                "scores": np.ascontiguousarray(scores.T[None]),
                "max_out": np.array([max_out], np.int64),
                "iou": np.array([iou], np.float32),
                "score_thr": np.array([thr], np.float32),
            },
        )[0]
        assert (sel[:, 0] == 0).all()
        return sel[:, 1:]

    return run


def _ort_single(ort_nms, boxes, scores, iou, max_out=BIG) -> np.ndarray:
    return ort_nms(boxes, scores, iou, max_out=max_out)[:, 1]


def _ort_batched(ort_nms, boxes, scores, class_ids, num_classes, iou) -> np.ndarray:
    """Per-class NMS in ORT (each box scored only in its own class), merged by (-score, index)."""
    s = np.full((len(boxes), num_classes), -1.0, np.float32)
    s[np.arange(len(boxes)), class_ids] = scores
    sel = ort_nms(boxes, s, iou, score_threshold=-0.5)
    keep = sel[:, 1]
    return keep[np.lexsort((keep, -scores[keep]))]


def _ort_multiclass(ort_nms, boxes, scores, score_thr, iou, k) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    sel = ort_nms(boxes, scores, iou, score_threshold=score_thr)
    cls, idx = sel[:, 0], sel[:, 1]
    sc = scores[idx, cls]
    order = np.lexsort((idx, cls, -sc))[:k]  # by score, ties: lower class, then lower box index
    return boxes[idx[order]], sc[order], cls[order]


# ------------------------------------------------------------------------------------ test inputs


def _clustered(rng: np.random.Generator, n: int, num_clusters: int = 6) -> np.ndarray:
    """[n, 4] float32 xyxy boxes crowded around a few objects, with exact duplicates mixed in."""
    centers = rng.uniform(40, 300, (num_clusters, 2))
    sizes = rng.uniform(10, 80, (num_clusters, 2))
    which = rng.integers(0, num_clusters, n)
    c = centers[which] + rng.normal(0, 6, (n, 2))
    wh = sizes[which] * rng.uniform(0.7, 1.3, (n, 2))
    b = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    dup = rng.random(n) < 0.1
    b[dup] = b[rng.integers(0, n, dup.sum())]
    return np.round(b, 1).astype(np.float32)


def _scores(rng: np.random.Generator, shape, ties: bool) -> np.ndarray:
    s = rng.random(shape)
    if ties:  # few distinct values: many equal scores
        s = np.round(s * 8) / 8
    return s.astype(np.float32)


def _torch_nms(boxes, scores, iou, **kw) -> np.ndarray:
    return ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou, **kw).numpy()


def _bccd_boxes(max_files: int = 12) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD} (expected ../shared/datasets/bccd beside the repo)")
    classes = {"RBC": 0, "WBC": 1, "Platelets": 2}
    out = []
    for path in sorted((BCCD / "Annotations").glob("*.xml"))[:max_files]:
        rows, labels = [], []
        for obj in ET.parse(path).getroot().iter("object"):
            bb = obj.find("bndbox")
            rows.append([float(bb.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(classes[obj.find("name").text.strip()])
        out.append((path.name, np.array(rows, np.float32), np.array(labels, np.int64)))
    assert out, f"no annotation files in {BCCD / 'Annotations'}"
    return out


def _jitter(rng: np.random.Generator, gt: np.ndarray, labels: np.ndarray, copies: int = 5):
    """Each ground-truth box becomes `copies` detections shifted by a few pixels (like a detector's)."""
    b = np.repeat(gt, copies, axis=0)
    b = b + rng.normal(0, 4, b.shape)
    b[::copies] = gt  # the exact box is among them
    return np.round(b, 2).astype(np.float32), np.repeat(labels, copies)


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("seed", range(30))
def test_nms_matches_ort_on_random_boxes(ort_nms, seed):
    rng = np.random.default_rng(seed)
    boxes = _clustered(rng, int(rng.integers(20, 250)))
    scores = _scores(rng, len(boxes), ties=seed % 2 == 0)
    for iou in (0.0, 0.3, 0.45, 0.5, 0.7, 1.0):
        ref = _ort_single(ort_nms, boxes, scores, iou)
        keep = N.nms(boxes, scores, iou)
        assert keep.dtype == np.int64
        np.testing.assert_array_equal(keep, ref)  # same set, same order
        np.testing.assert_array_equal(_torch_nms(boxes, scores, iou), ref)
    assert 0 < len(_ort_single(ort_nms, boxes, scores, 0.5)) < len(boxes)
    # max_output is ORT's max_output_boxes_per_class
    ref = _ort_single(ort_nms, boxes, scores, 0.5, max_out=3)
    np.testing.assert_array_equal(N.nms(boxes, scores, 0.5, max_output=3), ref)
    np.testing.assert_array_equal(_torch_nms(boxes, scores, 0.5, max_output=3), ref)


@pytest.mark.parametrize("seed", range(15))
def test_batched_nms_matches_ort_per_class(ort_nms, seed):
    rng = np.random.default_rng(100 + seed)
    boxes = _clustered(rng, int(rng.integers(30, 250)))
    num_classes = int(rng.integers(2, 6))
    class_ids = rng.integers(0, num_classes, len(boxes))
    scores = _scores(rng, len(boxes), ties=seed % 2 == 1)
    for iou in (0.3, 0.5, 0.65):
        ref = _ort_batched(ort_nms, boxes, scores, class_ids, num_classes, iou)
        keep = N.batched_nms(boxes, scores, class_ids, iou)
        np.testing.assert_array_equal(keep, ref)
        tkeep = ops.batched_nms(
            torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(class_ids), iou
        )
        np.testing.assert_array_equal(tkeep.numpy(), ref)
        # each class alone is plain NMS
        for c in range(num_classes):
            members = np.flatnonzero(class_ids == c)
            np.testing.assert_array_equal(
                keep[class_ids[keep] == c], members[N.nms(boxes[members], scores[members], iou)]
            )
        # max_output keeps the best of the same list
        np.testing.assert_array_equal(N.batched_nms(boxes, scores, class_ids, iou, max_output=7), ref[:7])


@pytest.mark.parametrize("seed", range(15))
def test_multiclass_nms_matches_ort(ort_nms, seed):
    rng = np.random.default_rng(200 + seed)
    boxes = _clustered(rng, int(rng.integers(30, 200)))
    num_classes = int(rng.integers(1, 5))
    scores = _scores(rng, (len(boxes), num_classes), ties=seed % 3 == 0)
    for score_thr, iou, k in ((0.25, 0.5, 1000), (0.5, 0.45, 20), (0.0, 0.6, 5), (0.125, 0.5, 100)):
        ref_b, ref_s, ref_c = _ort_multiclass(ort_nms, boxes, scores, score_thr, iou, k)
        b, s, c = N.multiclass_nms(boxes, scores, score_thr, iou, k)
        assert b.dtype == np.float32 and s.dtype == np.float32 and c.dtype == np.int64
        np.testing.assert_array_equal(c, ref_c)
        np.testing.assert_array_equal(s, ref_s)
        np.testing.assert_array_equal(b, ref_b)
        tb, ts, tc = ops.multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), score_thr, iou, k)
        np.testing.assert_array_equal(tc.numpy(), ref_c)
        np.testing.assert_array_equal(ts.numpy(), ref_s)
        np.testing.assert_array_equal(tb.numpy(), ref_b)
        assert len(c) <= k and (s > score_thr).all()


@pytest.mark.parametrize("seed", range(8))
def test_class_agnostic_multiclass_nms_matches_ort_on_max_scores(ort_nms, seed):
    rng = np.random.default_rng(300 + seed)
    boxes = _clustered(rng, 150)
    scores = _scores(rng, (len(boxes), 3), ties=True)
    best_cls, best = scores.argmax(1), scores.max(1)
    ref = ort_nms(boxes, best, 0.5, score_threshold=0.3)[:, 1][:40]
    b, s, c = N.multiclass_nms(boxes, scores, 0.3, 0.5, 40, class_agnostic=True)
    np.testing.assert_array_equal(b, boxes[ref])
    np.testing.assert_array_equal(s, best[ref])
    np.testing.assert_array_equal(c, best_cls[ref])
    tb, ts, tc = ops.multiclass_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), 0.3, 0.5, 40, class_agnostic=True
    )
    np.testing.assert_array_equal(tb.numpy(), b)
    np.testing.assert_array_equal(ts.numpy(), s)
    np.testing.assert_array_equal(tc.numpy(), c)


@pytest.mark.parametrize(
    "case, boxes, scores, iou, expected",
    [
        # IoU exactly equal to the threshold (4 / 8 = 0.5): not suppressed (strict >)
        ("iou == threshold keeps both", [[0, 0, 4, 2], [0, 0, 2, 2]], [0.9, 0.8], 0.5, [0, 1]),
        ("iou just above threshold", [[0, 0, 4, 2], [0, 0, 2, 2]], [0.9, 0.8], 0.49, [0]),
        # identical boxes with equal scores: the lower index wins
        ("ties: lower index first", [[5, 5, 9, 9]] * 4, [0.5] * 4, 0.5, [0]),
        ("ties order", [[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], [0.5, 0.7, 0.5], 0.5, [1, 0, 2]),
        # zero-area boxes never suppress nor get suppressed, even when identical
        ("zero-width duplicates", [[3, 0, 3, 10]] * 3, [0.9, 0.8, 0.7], 0.0, [0, 1, 2]),
        ("zero-area inside a box", [[0, 0, 10, 10], [5, 5, 5, 5]], [0.9, 0.8], 0.0, [0, 1]),
        # touching edges have no positive overlap, even at threshold 0
        ("touching edges", [[0, 0, 10, 10], [10, 0, 20, 10]], [0.9, 0.8], 0.0, [0, 1]),
        # flipped corners are put in order first (x1 > x2 here)
        ("flipped corners", [[10, 10, 0, 0], [0, 0, 10, 10]], [0.8, 0.9], 0.5, [1]),
        ("threshold 1 keeps everything", [[0, 0, 10, 10]] * 3, [0.1, 0.2, 0.3], 1.0, [2, 1, 0]),
        ("threshold 0 drops any overlap", [[0, 0, 10, 10], [9, 9, 20, 20]], [0.9, 0.8], 0.0, [0]),
    ],
)
def test_edge_semantics_match_ort(ort_nms, case, boxes, scores, iou, expected):
    boxes = np.array(boxes, np.float32)
    scores = np.array(scores, np.float32)
    ref = _ort_single(ort_nms, boxes, scores, iou)
    assert ref.tolist() == expected, f"{case}: ORT itself gives {ref.tolist()}"
    assert N.nms(boxes, scores, iou).tolist() == expected, case
    assert _torch_nms(boxes, scores, iou).tolist() == expected, case


@pytest.mark.parametrize(
    "pair, float32_keep",
    [
        # float32 IoU rounds to 0.50000006 (> 0.5: suppressed); the exact IoU is 0.5 (kept)
        (
            [
                [81.3270263671875, 91.27555847167969, 130.74838256835938, 116.51399230957031],
                [97.80081176757812, 91.27555847167969, 147.22216796875, 116.51399230957031],
            ],
            [0],
        ),
        # float32 IoU rounds to 0.5 exactly (kept); in float64 it is 0.5000000065 (suppressed)
        (
            [
                [2.8319671154022217, 12.428327560424805, 44.29117965698242, 29.77251625061035],
                [16.651704788208008, 12.428327560424805, 58.11091613769531, 29.77251625061035],
            ],
            [0, 1],
        ),
    ],
)
def test_float32_rounding_is_bit_identical_to_ort(ort_nms, pair, float32_keep):
    boxes = np.array(pair, np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert _ort_single(ort_nms, boxes, scores, 0.5).tolist() == float32_keep
    assert N.nms(boxes, scores, 0.5).tolist() == float32_keep
    assert _torch_nms(boxes, scores, 0.5).tolist() == float32_keep
    # the same boxes in float64 land on the other side of the threshold: the dtype decides
    assert N.nms(boxes.astype(np.float64), scores, 0.5).tolist() != float32_keep


def test_bccd_jittered_duplicates_match_ort(ort_nms):
    rng = np.random.default_rng(2024)
    total_kept = total = 0
    for name, gt, labels in _bccd_boxes():
        boxes, cls = _jitter(rng, gt, labels)
        scores = _scores(rng, len(boxes), ties=False)
        # batched (one class per box)
        for iou in (0.3, 0.5):
            ref = _ort_batched(ort_nms, boxes, scores, cls, 3, iou)
            np.testing.assert_array_equal(N.batched_nms(boxes, scores, cls, iou), ref, err_msg=name)
            tkeep = ops.batched_nms(
                torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cls), iou
            )
            np.testing.assert_array_equal(tkeep.numpy(), ref, err_msg=name)
        # multiclass: own class scores high, other classes low, with exact ties across classes
        s3 = (rng.random((len(boxes), 3)) * 0.4).astype(np.float32)
        s3[np.arange(len(boxes)), cls] = scores * 0.5 + 0.5
        s3[::7] = np.float32(0.75)
        ref_b, ref_s, ref_c = _ort_multiclass(ort_nms, boxes, s3, 0.3, 0.45, 100)
        b, s, c = N.multiclass_nms(boxes, s3, 0.3, 0.45, 100)
        np.testing.assert_array_equal(c, ref_c, err_msg=name)
        np.testing.assert_array_equal(s, ref_s, err_msg=name)
        np.testing.assert_array_equal(b, ref_b, err_msg=name)
        tb, ts, tc = ops.multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(s3), 0.3, 0.45, 100)
        np.testing.assert_array_equal(tb.numpy(), ref_b, err_msg=name)
        np.testing.assert_array_equal(tc.numpy(), ref_c, err_msg=name)
        total_kept += len(_ort_single(ort_nms, boxes, scores, 0.5))
        total += len(boxes)
    # the jittered copies really overlap: NMS removes most of them, but not the distinct cells
    assert total // 5 * 0.5 < total_kept < total * 0.6


def test_float64_numpy_and_torch_agree():
    rng = np.random.default_rng(5)
    boxes = _clustered(rng, 200).astype(np.float64) + rng.random((200, 4)) * 1e-3
    scores = rng.random((200, 4))
    b, s, c = N.multiclass_nms(boxes, scores, 0.2, 0.5, 300)
    assert b.dtype == np.float64 and s.dtype == np.float64
    tb, ts, tc = ops.multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.2, 0.5, 300)
    np.testing.assert_array_equal(tb.numpy(), b)
    np.testing.assert_array_equal(ts.numpy(), s)
    np.testing.assert_array_equal(tc.numpy(), c)


def test_empty_inputs_nan_scores_and_zero_max():
    e4 = np.zeros((0, 4), np.float32)
    assert N.nms(e4, np.zeros(0, np.float32), 0.5).tolist() == []
    assert N.nms([], [], 0.5).dtype == np.int64
    assert N.batched_nms(e4, np.zeros(0), np.zeros(0, np.int64), 0.5).tolist() == []
    b, s, c = N.multiclass_nms(e4, np.zeros((0, 3), np.float32), 0.1, 0.5, 10)
    assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,) and c.dtype == np.int64
    tb, ts, tc = ops.multiclass_nms(torch.zeros(0, 4), torch.zeros(0, 3), 0.1, 0.5, 10)
    assert tb.shape == (0, 4) and ts.shape == (0,) and tc.dtype == torch.int64
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([np.nan, 0.5, 0.4], np.float32)  # NaN scores are never kept
    assert N.nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert _torch_nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert N.nms(boxes, np.ones(3, np.float32), 0.5, max_output=0).tolist() == []
    assert N.multiclass_nms(boxes, np.ones((3, 2), np.float32), 0.1, 0.5, 0)[0].shape == (0, 4)
    # nothing above the (strict) score threshold
    assert N.multiclass_nms(boxes, np.full((3, 2), 0.5, np.float32), 0.5, 0.5, 10)[2].tolist() == []


def test_bad_arguments_raise_clear_errors():
    boxes = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]"):
        N.nms(boxes, np.zeros(3), 1.5)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]"):
        ops.nms(torch.zeros(3, 4), torch.zeros(3), -0.1)
    with pytest.raises(ValueError, match=r"scores: expected shape \[3\]"):
        N.nms(boxes, np.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"class_ids: expected shape \[3\]"):
        N.batched_nms(boxes, np.zeros(3), np.zeros(2, np.int64), 0.5)
    with pytest.raises(ValueError, match=r"scores: expected shape \[3, C\]"):
        N.multiclass_nms(boxes, np.zeros(3), 0.1, 0.5, 10)
    with pytest.raises(ValueError, match="max_detections must be >= 0"):
        N.multiclass_nms(boxes, np.zeros((3, 2)), 0.1, 0.5, -1)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 4\]"):
        N.nms(np.zeros((3, 5)), np.zeros(3), 0.5)
