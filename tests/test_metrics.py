"""edge.metrics: VOC AP on hand-computed cases, and agreement with pycocotools on BCCD and synthetic data."""

from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Sequence

import numpy as np
import pytest

from edge.data.records import ImageRecord
from edge.metrics import (
    COCO_MAX_DETS,
    ImageDetections,
    evaluate,
    voc_ap,
)
from tests.paths import BCCD, BCCD_YAML


def _record(image_id, boxes, labels, difficult=None, size=(640, 480)) -> ImageRecord:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if difficult is None:
        difficult = np.zeros(len(boxes), bool)
    return ImageRecord(
        image_id=image_id, path=f"/nonexistent/{image_id}.jpg", width=size[0], height=size[1],
        boxes=boxes, labels=labels, difficult=difficult,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# VOC AP by hand
# ------------------------------------------------------------------------------------------------


def test_voc_ap_interpolations_by_hand():
    # detections in score order: TP, FP, TP, FP with 3 ground-truth boxes
    recall = np.array([1, 1, 2, 2]) / 3.0
    precision = np.array([1.0, 0.5, 2.0 / 3.0, 0.5])
    # all points: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], 0 after -> 1/3 + 2/9
    assert voc_ap(recall, precision) == pytest.approx(5.0 / 9.0, abs=1e-12)
    # 11 points: t = 0, .1, .2, .3 -> 1; t = .4, .5, .6 -> 2/3; t >= .7 -> 0
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(6.0 / 11.0, abs=1e-12)
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0
    with pytest.raises(ValueError):
        voc_ap(np.zeros(2), np.zeros(3))


def test_voc_matching_by_hand_through_evaluate():
    """The same TP/FP sequence as above, produced from boxes: two images, 3 GT, 4 detections."""
    gt = [
        _record("a", [[0, 0, 100, 100], [200, 200, 300, 300]], [0, 0]),
        _record("b", [[50, 50, 150, 150]], [0]),
    ]
    dets = {
        # 0.9 hits a/gt0; 0.7 hits b/gt0; 0.8 is a duplicate on a/gt0 (FP); 0.6 hits nothing (FP)
        "a": ImageDetections([[1, 1, 101, 101], [0, 0, 99, 99], [400, 400, 450, 450]], [0.9, 0.8, 0.6], [0, 0, 0]),
        "b": ImageDetections([[50, 50, 150, 150]], [0.7], [0]),
    }  # fmt: skip
    r = evaluate(gt, dets, ["cell"])
    c = r.per_class[0]
    assert c.voc_ap50 == pytest.approx(5.0 / 9.0, abs=1e-12)
    assert c.voc_ap50_11pt == pytest.approx(6.0 / 11.0, abs=1e-12)
    np.testing.assert_allclose(c.voc_curve.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(c.voc_curve.precision, [1, 0.5, 2 / 3, 0.5])
    assert r.map50 == pytest.approx(5.0 / 9.0)
    assert r.num_gt == 3 and r.num_detections == 4 and r.num_images == 2


def test_voc_difficult_is_ignored_and_iou_must_exceed_half():
    gt = [_record("a", [[0, 0, 10, 10], [100, 100, 140, 140]], [0, 0], difficult=[False, True])]
    # IoU exactly 0.5 with gt0 (50 / 100): VOC needs > 0.5 -> FP; COCO needs >= 0.5 -> TP at .50
    half = ImageDetections([[0, 0, 10, 5]], [0.9], [0])
    r = evaluate(gt, {"a": half}, ["x"])
    assert r.per_class[0].voc_ap50 == 0.0
    assert r.per_class[0].coco_ap50 == pytest.approx(1.0)
    assert r.per_class[0].coco_ap75 == 0.0
    assert r.per_class[0].num_gt == 1 and r.per_class[0].num_difficult == 1

    # A detection on the difficult box is neither TP nor FP: precision stays 1.
    dets = ImageDetections([[100, 100, 140, 140], [0, 0, 10, 10]], [0.95, 0.9], [0, 0])
    r = evaluate(gt, {"a": dets}, ["x"])
    assert r.per_class[0].voc_ap50 == pytest.approx(1.0)
    assert r.per_class[0].voc_ap50_11pt == pytest.approx(1.0)
    assert r.per_class[0].coco_ap == pytest.approx(1.0)
    assert len(r.per_class[0].voc_curve.recall) == 1  # the difficult match is not a point of the curve


def test_perfect_detections_score_one_and_none_score_zero():
    gt = [
        _record("a", [[10, 10, 20, 20], [30, 30, 200, 200]], [0, 1]),
        _record("b", [[5, 5, 60, 70]], [1]),
        _record("c", [], []),
    ]
    perfect = {
        r.image_id: ImageDetections(r.boxes, np.linspace(0.9, 0.5, len(r.boxes)), r.labels) for r in gt
    }
    r = evaluate(gt, perfect, ["small", "big"])
    assert r.map50 == pytest.approx(1.0) and r.map50_11pt == pytest.approx(1.0)
    for key in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"):
        assert r.coco[key] == pytest.approx(1.0), key
    js = r.to_json()
    assert js["map50"] == pytest.approx(1.0) and js["map50_95"] == pytest.approx(1.0)

    r = evaluate(gt, {}, ["small", "big"])
    assert r.map50 == 0.0 and r.map50_11pt == 0.0 and r.map50_95 == 0.0
    assert all(v == 0.0 for v in r.coco.values())
    assert r.num_detections == 0


def test_class_without_ground_truth_is_excluded_from_means():
    gt = [_record("a", [[0, 0, 50, 50]], [0])]
    dets = {"a": ImageDetections([[0, 0, 50, 50], [60, 60, 90, 90]], [0.9, 0.8], [0, 1])}
    r = evaluate(gt, dets, ["seen", "unseen"])
    unseen = r.per_class[1]
    assert unseen.num_gt == 0 and unseen.num_detections == 1
    assert unseen.voc_ap50 is None and unseen.coco_ap is None
    assert r.map50 == pytest.approx(1.0) and r.map50_95 == pytest.approx(1.0)
    js = r.to_json()
    assert js["per_class"]["unseen"]["ap50"] is None and js["per_class"]["unseen"]["ap50_95"] is None
    # no small or large ground truth anywhere: undefined, reported as None (pycocotools prints -1)
    assert js["coco"]["ap_small"] is None and js["coco"]["ap_large"] is None
    assert js["coco"]["ap_medium"] == pytest.approx(1.0)


def test_to_json_has_the_contract_keys():
    gt = [_record("a", [[0, 0, 50, 50]], [0])]
    js = evaluate(gt, {"a": ImageDetections([[0, 0, 50, 50]], [0.5], [0])}, ["cell"]).to_json()
    for key in ("map50", "map50_95", "coco", "voc", "per_class", "counts"):
        assert key in js
    assert set(js["coco"]) >= {"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"}
    assert set(js["voc"]) >= {"ap50", "ap50_11pt"}
    assert set(js["per_class"]["cell"]) >= {"ap50", "ap50_95"}
    assert js["counts"] == {"images": 1, "gt_boxes": 1, "difficult_boxes": 0, "detections": 1, "classes": 1}


def test_bad_inputs_raise():
    gt = [_record("a", [[0, 0, 50, 50]], [0])]
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate(gt, {"zz": ImageDetections([[0, 0, 1, 1]], [0.5], [0])}, ["cell"])
    with pytest.raises(ValueError, match="out of range"):
        evaluate(gt, {"a": ImageDetections([[0, 0, 1, 1]], [0.5], [3])}, ["cell"])
    with pytest.raises(ValueError, match="same length"):
        ImageDetections([[0, 0, 1, 1]], [0.5, 0.4], [0])
    with pytest.raises(ValueError, match="max_dets"):
        evaluate(gt, {}, ["cell"], max_dets=0)


# ------------------------------------------------------------------------------------------------
# Agreement with pycocotools
# ------------------------------------------------------------------------------------------------


def _pycocotools_stats(records: Sequence[ImageRecord], dets: Dict, num_classes: int, max_dets: int = 100):
    """Run pycocotools on the same records/detections; returns (stats[:6], per-class AP, AP50) arrays."""
    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval_mod = pytest.importorskip("pycocotools.cocoeval")
    images, anns = [], []
    for i, r in enumerate(records):
        images.append({"id": i + 1, "width": int(r.width), "height": int(r.height), "file_name": f"{i}.jpg"})
        for box, label, difficult in zip(r.boxes.astype(np.float64), r.labels, r.difficult):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append({
                "id": len(anns) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": int(difficult),
            })  # fmt: skip
    results = []
    for i, r in enumerate(records):
        d = dets.get(r.image_id)
        if d is None:
            continue
        for box, score, label in zip(d.boxes, d.scores, d.labels):
            results.append({
                "image_id": i + 1, "category_id": int(label) + 1,
                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                "score": float(score),
            })  # fmt: skip
    gt = coco_mod.COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results) if results else coco_mod.COCO()
        ev = cocoeval_mod.COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M], -1 where undefined

    def summary(t, a):  # what COCOeval.summarize computes, at our maxDets (its stats assume 100)
        p = prec[:, :, :, a, 2] if t is None else prec[t, :, :, a, 2]
        return float(np.mean(p[p > -1])) if (p > -1).any() else -1.0

    stats = np.array([summary(None, 0), summary(0, 0), summary(5, 0)] + [summary(None, a) for a in (1, 2, 3)])
    if max_dets == 100:
        np.testing.assert_allclose(stats, ev.stats[:6], atol=1e-12)
    per_class = []
    for k in range(num_classes):
        p = prec[:, :, k, 0, 2]
        per_class.append(float(np.mean(p)) if (p > -1).any() else None)
    return stats, per_class


def _assert_agrees(ours, stats, per_class, tol=1e-4):
    names = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"]
    for name, ref in zip(names, stats):
        mine = ours.coco[name]
        if ref == -1:
            assert mine is None, f"{name}: pycocotools says undefined (-1), we say {mine}"
        else:
            assert mine is not None, f"{name}: pycocotools {ref}, we say undefined"
            assert abs(mine - ref) <= tol, f"{name}: ours {mine} vs pycocotools {ref}"
    for c, ref in zip(ours.per_class, per_class):
        if ref is None:
            assert c.coco_ap is None
        else:
            assert c.coco_ap is not None and abs(c.coco_ap - ref) <= tol, (c.name, c.coco_ap, ref)


def _perturb(records: Sequence[ImageRecord], num_classes: int, seed: int) -> Dict:
    """Detections from ground truth: jittered and rescaled boxes, some dropped, some class swaps,
    duplicates, and spurious boxes; random scores loosely tied to quality."""
    rng = np.random.default_rng(seed)
    out = {}
    for r in records:
        b = r.boxes.astype(np.float64)
        n = len(b)
        keep = rng.random(n) > 0.15  # dropped boxes
        b = b[keep]
        labels = r.labels[keep].copy()
        wh = b[:, 2:] - b[:, :2]
        noise = rng.normal(0.0, 0.08, size=b.shape) * np.concatenate([wh, wh], axis=1)
        b = b + noise
        swap = rng.random(len(b)) < 0.05
        labels[swap] = rng.integers(0, num_classes, swap.sum())
        quality = np.exp(-np.abs(noise).sum(axis=1) / np.maximum(wh.sum(axis=1), 1.0))
        scores = np.clip(quality * 0.7 + rng.random(len(b)) * 0.3, 0.0, 1.0)
        dup = rng.random(len(b)) < 0.1  # duplicates, slightly shifted, lower score
        b = np.concatenate([b, b[dup] + rng.normal(0.0, 3.0, (dup.sum(), 4))])
        labels = np.concatenate([labels, labels[dup]])
        scores = np.concatenate([scores, scores[dup] * 0.8])
        m = int(rng.integers(0, 6))  # spurious boxes
        xy = rng.uniform(0, [r.width, r.height], (m, 2))
        sb = np.concatenate([xy, xy + rng.uniform(8, 160, (m, 2))], axis=1)
        b = np.concatenate([b, sb])
        labels = np.concatenate([labels, rng.integers(0, num_classes, m)])
        scores = np.concatenate([scores, rng.random(m) * 0.6])
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1.0)
        out[r.image_id] = ImageDetections(b, scores, labels)
    return out


@pytest.fixture(scope="module")
def bccd_test():
    if not BCCD.is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD} (needed for the pycocotools agreement test)")
    from edge.data import load_dataset

    ds = load_dataset(BCCD_YAML, "test")
    assert len(ds) > 50 and ds.class_names == ["RBC", "WBC", "Platelets"]
    return ds


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_pycocotools_on_bccd(bccd_test, seed):
    records = bccd_test.records
    dets = _perturb(records, 3, seed)
    ours = evaluate(records, dets, bccd_test.class_names)
    stats, per_class = _pycocotools_stats(records, dets, 3)
    assert ours.coco["ap"] > 0.05  # a non-trivial score, not all zeros
    _assert_agrees(ours, stats, per_class)


def test_agrees_with_pycocotools_on_bccd_perfect_and_empty(bccd_test):
    records = bccd_test.records
    perfect = {r.image_id: ImageDetections(r.boxes, np.full(len(r.boxes), 0.9), r.labels) for r in records}
    ours = evaluate(records, perfect, bccd_test.class_names)
    stats, per_class = _pycocotools_stats(records, perfect, 3)
    _assert_agrees(ours, stats, per_class)
    assert ours.map50 == pytest.approx(1.0) and ours.map50_95 == pytest.approx(1.0)
    # detections on only a few images: the rest count as misses
    few = {r.image_id: perfect[r.image_id] for r in records[:5]}
    ours = evaluate(records, few, bccd_test.class_names)
    stats, per_class = _pycocotools_stats(records, few, 3)
    _assert_agrees(ours, stats, per_class)


def _synthetic(seed: int, num_images: int = 30, num_classes: int = 3) -> List[ImageRecord]:
    """Boxes from 3 px to 400 px (every COCO area range) with some difficult/crowd boxes."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_images):
        n = int(rng.integers(0, 14))
        xy = rng.uniform(0, 500, (n, 2))
        wh = np.exp(rng.uniform(np.log(3), np.log(400), (n, 2)))
        records.append(
            _record(
                f"img{i:03d}",
                np.concatenate([xy, xy + wh], axis=1),
                rng.integers(0, num_classes, n),
                difficult=rng.random(n) < 0.12,
                size=(1000, 1000),
            )
        )
    return records


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_agrees_with_pycocotools_on_all_area_ranges_and_crowd(seed):
    records = _synthetic(seed)
    dets = _perturb(records, 3, seed)
    ours = evaluate(records, dets, ["a", "b", "c"])
    stats, per_class = _pycocotools_stats(records, dets, 3)
    assert all(s != -1 for s in stats)  # every area range is defined here
    _assert_agrees(ours, stats, per_class)


def test_agrees_with_pycocotools_on_max_dets_cap():
    """More than maxDets detections per image and class: only the top-scoring ones count."""
    rng = np.random.default_rng(5)
    records = _synthetic(7, num_images=6, num_classes=2)
    dets = {}
    for r in records:
        m = 150
        xy = rng.uniform(0, 600, (m, 2))
        boxes = np.concatenate(
            [r.boxes.astype(np.float64), np.concatenate([xy, xy + rng.uniform(5, 300, (m, 2))], 1)]
        )
        labels = np.concatenate([r.labels, rng.integers(0, 2, m)])
        scores = np.concatenate([rng.uniform(0.2, 0.5, len(r.boxes)), rng.random(m)])
        dets[r.image_id] = ImageDetections(boxes, scores, labels)
    for max_dets in (COCO_MAX_DETS, 10):
        ours = evaluate(records, dets, ["a", "b"], max_dets=max_dets)
        stats, per_class = _pycocotools_stats(records, dets, 2, max_dets=max_dets)
        _assert_agrees(ours, stats, per_class)
    assert evaluate(records, dets, ["a", "b"], max_dets=10).coco["ap"] != pytest.approx(
        evaluate(records, dets, ["a", "b"]).coco["ap"]
    )
