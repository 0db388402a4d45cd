"""Surgery on a real foreign model: the Ultra-Light face detector (opset 9, initializers listed as graph
inputs, softmax scores with background column 0, normalized xyxy boxes). Graph equivalence, not accuracy:
the ONNX-NMS graph, the EfficientNMS_TRT graph through the reference op, and the original model followed
by the numpy reference must give the same detections."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge.artifacts import MAX_SCORE_OUTPUT, NMS_OUTPUTS
from edge.cli.main import main as edge_main
from edge.efficient_nms import EfficientNMSParams, efficient_nms
from edge.export.ort_custom_ops import make_session
from edge.export.presets import HeadSpec
from edge.export.surgery import SurgeryConfig, check_model, surgery_file
from tests.paths import BCCD, SHARED

MODEL = SHARED / "models" / "ultralight-rfb-320.onnx"
H, W = 240, 320
THRESHOLD, IOU, K = 0.05, 0.3, 50

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"foreign model not found at {MODEL}")


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def synthetic_faces():
    """A 240x320 RGB frame with two cartoon faces (skin ellipse, eyes, mouth) on a grey background."""
    import cv2

    img = np.full((H, W, 3), 90, np.uint8)
    for cx, cy, r in ((95, 120, 55), (235, 110, 40)):
        cv2.ellipse(img, (cx, cy), (int(r * 0.8), r), 0, 0, 360, (225, 185, 160), -1)
        for dx in (-0.35, 0.35):
            cv2.circle(img, (int(cx + dx * r), int(cy - 0.2 * r)), max(2, r // 9), (40, 30, 30), -1)
        cv2.ellipse(img, (cx, int(cy + 0.45 * r)), (int(0.35 * r), int(0.12 * r)), 0, 0, 180, (120, 40, 50), -1)
        cv2.rectangle(img, (cx - 3, int(cy - 0.05 * r)), (cx + 3, int(cy + 0.2 * r)), (200, 150, 130), -1)
    return img


def bccd_frames(count=2):
    import cv2

    files = sorted((BCCD / "JPEGImages").glob("*.jpg"))[:count] if BCCD.is_dir() else []
    return [cv2.resize(cv2.imread(str(f)), (W, H))[:, :, ::-1].copy() for f in files]


def to_input(rgb):
    """The model's preprocessing: RGB, (pixel - 127) / 128, NCHW."""
    return ((rgb.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None].copy()


@pytest.fixture(scope="module")
def deploy(tmp_path_factory):
    out = tmp_path_factory.mktemp("ultralight")
    paths = {}
    for kind in ("efficient", "onnx"):
        spec = HeadSpec(boxes="boxes", scores="scores", normalized=True, background_class=0)
        config = SurgeryConfig(nms=kind, score_threshold=THRESHOLD, iou_threshold=IOU, max_detections=K,
                               head=spec, classes=["face"])
        paths[kind] = out / f"ultralight.{kind}.onnx"
        surgery_file(MODEL, paths[kind], config)
    return paths


def test_graph_shape_and_provenance(deploy):
    eff = onnx.load(str(deploy["efficient"]))
    onx = onnx.load(str(deploy["onnx"]))
    check_model(eff)
    check_model(onx)
    # the initializers listed as inputs are gone: one image input remains
    assert [i.name for i in eff.graph.input] == ["input"] == [i.name for i in onx.graph.input]
    assert [o.name for o in eff.graph.output] == list(NMS_OUTPUTS) + [MAX_SCORE_OUTPUT]
    opsets = {kind: [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")][0]
              for kind, m in (("efficient", eff), ("onnx", onx))}
    assert opsets == {"efficient": 9, "onnx": 11}  # ONNX NMS needs 11; the plugin graph keeps the model's 9
    meta = json.loads(deploy["efficient"].with_suffix(".json").read_text())
    assert meta["classes"] == ["face"] and meta["num_classes"] == 1 and meta["input_size"] == [H, W]
    assert meta["surgery"]["initializer_inputs_removed"] == 244
    assert meta["surgery"]["background_class"] == 0 and meta["surgery"]["normalized"] is True
    assert meta["nms"]["attributes"]["background_class"] == -1  # removed in the graph instead


def test_both_graphs_match_the_original_model_plus_reference(deploy):
    frames = [synthetic_faces()] + bccd_frames()
    orig = _session(MODEL)
    s_onnx = _session(deploy["onnx"])
    s_eff = make_session(str(deploy["efficient"]))
    total = 0
    for rgb in frames:
        x = to_input(rgb)
        scores, boxes = orig.run(["scores", "boxes"], {"input": x})
        ref = efficient_nms(boxes * np.array([W, H, W, H], np.float32), scores[:, :, 1:],
                            EfficientNMSParams(THRESHOLD, IOU, K))
        a = s_onnx.run(list(NMS_OUTPUTS), {"input": x})
        b = s_eff.run(list(NMS_OUTPUTS), {"input": x})
        # the two deploy graphs share every op up to NMS: same detections in the same order
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[3], b[3])
        np.testing.assert_allclose(a[2], b[2], rtol=0, atol=1e-5)
        np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-3)
        # against the original model: the softmax may round differently in the rewritten graph, so equal
        # scores there (ties) may come out in either order; match detections one to one instead
        n = int(ref.num_detections[0, 0])
        np.testing.assert_array_equal(b[0], ref.num_detections)
        assert not b[1][0, n:].any() and not b[2][0, n:].any() and not b[3][0, n:].any()
        used = np.zeros(n, dtype=bool)
        for i in range(n):
            hit = np.flatnonzero(
                ~used
                & (ref.detection_classes[0, :n] == b[3][0, i])
                & (np.abs(ref.detection_scores[0, :n] - b[2][0, i]) <= 1e-5)
                & (np.abs(ref.detection_boxes[0, :n] - b[1][0, i]).max(axis=1) <= 1e-3)
            )
            assert hit.size, f"detection {i} {b[1][0, i]} score {b[2][0, i]} has no match in the reference"
            used[hit[0]] = True
        total += int(ref.num_detections[0, 0])
    assert total > 5, "the frames must produce detections for the comparison to mean anything"


def test_cli_on_the_real_model(tmp_path, capsys):
    out = tmp_path / "faces.onnx"
    rc = edge_main(["surgery", str(MODEL), "--boxes", "boxes", "--scores", "scores", "--normalized",
                    "--background-class", "0", "--nms", "efficient", "--score-threshold", "0.6",
                    "--max-detections", "20", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"out": str(out), "nms": "efficient", "op": "EfficientNMS_TRT", "score_threshold": 0.6,
                       "iou_threshold": 0.45, "max_detections": 20, "num_classes": 1, "opset": 9}
    x = to_input(synthetic_faces())
    num, boxes, scores, classes = make_session(out).run(list(NMS_OUTPUTS), {"input": x})
    assert boxes.shape == (1, 20, 4) and num.dtype == np.int32
    assert (scores[0, : num[0, 0]] >= 0.6).all()
