"""Issue 4's equivalence on the trained model: the bundled BCCD checkpoint (PyTorch decode + NMS), its
exported pre-NMS ONNX, the ``onnx``-NMS deploy graph in ONNX Runtime and the ``efficient`` (EfficientNMS_TRT)
deploy graph through the reference op give the same detections on real BCCD test images, and ``edge eval``
gives the same mAP on the whole test split.

All four use the evaluation settings: score threshold 0.001, IoU 0.5, 100 detections per image, no pre-NMS
top-k (the deploy graphs have none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.bundled import bundled_checkpoint
from edge.data import load_dataset
from edge.data.images import read_image
from edge.evaluate import evaluate_model
from tests.paths import BCCD, REPO

pytestmark = pytest.mark.skipif(not (BCCD / "JPEGImages").is_dir(), reason=f"BCCD dataset not found at {BCCD}")

SETTINGS = dict(score_threshold=0.001, iou_threshold=0.5, max_detections=100)


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    pytest.importorskip("torch")
    from edge.export.prenms import EvalSettings
    from edge.export.surgery import SurgeryConfig, surgery_file
    from edge.export.torch_export import ExportConfig, export_checkpoint
    from edge.runtime.predictors import predictor_from_checkpoint, predictor_from_onnx

    folder = tmp_path_factory.mktemp("trained")
    (result,) = export_checkpoint(bundled_checkpoint(), folder, ExportConfig())
    settings = EvalSettings(pre_nms_topk=100000, **SETTINGS)
    preds = {
        "checkpoint": predictor_from_checkpoint(bundled_checkpoint(), settings),
        "pre-nms": predictor_from_onnx(result.onnx_path, settings),
    }
    for nms in ("onnx", "efficient"):
        out = folder / f"deploy.{nms}.onnx"
        surgery_file(result.onnx_path, out, SurgeryConfig(nms=nms, **SETTINGS))
        preds[nms] = predictor_from_onnx(out)
    return preds


def test_same_detections_on_bccd_test_images(predictors):
    dataset = load_dataset(REPO / "data" / "bccd.yaml", "test", log=False)
    compared = 0
    for record in dataset.records[:6]:
        image = read_image(record.path)
        outs = {name: p(image) for name, p in predictors.items()}
        ref_boxes, ref_scores, ref_classes = outs["onnx"]
        assert len(ref_scores) > 10  # a trained model: many real detections on every BCCD image
        for name, got in outs.items():
            _assert_same_detections(got, outs["onnx"], f"{name} on {Path(record.path).name}")
            compared += len(got[1])
    assert compared > 200


def _assert_same_detections(got, ref, what: str, score_tol: float = 1e-5, box_tol: float = 1e-3) -> None:
    """One-to-one: every reference detection has one with the same class, its score within ``score_tol`` and
    its box within ``box_tol`` px, at the same rank, or at another rank only where the two scores tie
    within ``score_tol`` (two detections 1e-7 apart may come out in either order from two backends)."""
    boxes, scores, classes = (np.asarray(a) for a in got)
    ref_boxes, ref_scores, ref_classes = (np.asarray(a) for a in ref)
    assert len(scores) == len(ref_scores), what
    used = np.zeros(len(scores), bool)
    for i in range(len(ref_scores)):
        same = ((classes == ref_classes[i]) & (np.abs(scores - ref_scores[i]) <= score_tol)
                & (np.abs(boxes - ref_boxes[i]).max(axis=1) <= box_tol) & ~used)
        candidates = np.flatnonzero(same)
        assert candidates.size, (f"{what}: reference detection {i} (class {ref_classes[i]}, score "
                                 f"{ref_scores[i]:.6f}, box {ref_boxes[i].tolist()}) has no counterpart")
        j = int(candidates[np.argmin(np.abs(candidates - i))])
        assert j == i or abs(float(ref_scores[i]) - float(ref_scores[j])) <= score_tol, (
            f"{what}: detection {i} is at rank {j}, and the scores there do not tie")
        used[j] = True


def test_same_map_on_the_bccd_test_split(predictors):
    dataset = load_dataset(REPO / "data" / "bccd.yaml", "test", log=False)
    results = {name: evaluate_model(p, dataset) for name, p in predictors.items()}
    ref = results["checkpoint"]
    assert ref.map50 >= 0.80  # the bundled model's target (issue 3)
    for name, res in results.items():
        assert res.map50 == pytest.approx(ref.map50, abs=1e-3), name
        assert res.map50_95 == pytest.approx(ref.map50_95, abs=1e-3), name
