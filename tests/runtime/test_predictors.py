"""``edge.runtime.predictors``: model files as ``edge eval`` predictors.

Pre-NMS ONNX (ORT + numpy NMS + letterbox inverse), post-NMS ONNX (ONNX NMS and EfficientNMS_TRT through
the reference op, via the ONNX Runtime backend), checkpoints (torch) and engines (a clear error without
TensorRT), opened by ``edge.runtime.predictors.load_predictor``. The parity test is issue 4's: a checkpoint,
its exported pre-NMS ONNX and both deploy graphs give the same detections and the same mAP on real BCCD
images. Real ONNX files, sessions, checkpoints and images throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.artifacts import write_sidecar
from edge.cli.main import main
from edge.data.images import read_image
from edge.errors import MissingDependencyError, ModelError
from edge.evaluate import evaluate_model
from edge.export.prenms import (
    EvalSettings,
    OnnxPreNmsPredictor,
    postprocess_pre_nms,
    settings_from_sidecar,
    topk_score_threshold,
)
from edge.letterbox import compute_letterbox, letterbox
from edge.nms import multiclass_nms
from edge.ort import graph_kind
from edge.runtime.predictors import (
    PREDICTOR_LOADERS,
    BackendPredictor,
    load_predictor,
    predictor_from_engine,
    predictor_from_onnx,
    register,
)
from tests.paths import BCCD

needs_bccd = pytest.mark.skipif(not (BCCD / "JPEGImages").is_dir(), reason=f"BCCD dataset not found at {BCCD}")


def crafted(tmp_path: Path) -> Path:
    """The hand-built grid-cell detector of test_quantize_gate (pre-NMS, uint8 input 64x64), with sidecar."""
    from tests.export.quantize.test_quantize_gate import SIDECAR, crafted_detector

    path = tmp_path / "crafted.onnx"
    onnx.save(crafted_detector(), str(path))
    write_sidecar(path, dict(SIDECAR))
    return path


# ----------------------------------------------------------------------------------------------- postprocessing


def test_topk_threshold_lets_exactly_k_through():
    rng = np.random.default_rng(0)
    scores = rng.random((300, 4)).astype(np.float32)
    thr = topk_score_threshold(scores, 0.001, 50)
    assert int((scores > np.float32(thr)).sum()) == 50
    assert topk_score_threshold(scores, 0.999, 50) == 0.999  # the score threshold is stricter
    assert topk_score_threshold(scores, 0.001, 0) == 0.001 and topk_score_threshold(scores, 0.001, 5000) == 0.001


def test_postprocess_is_nms_then_the_letterbox_inverse():
    params = compute_letterbox((96, 128), (64, 64))  # source 128 wide, 96 high -> 64x48 inside a 64x64 input
    boxes = np.array([[8, 16, 24, 32], [9, 16, 25, 32], [40, 30, 60, 50], [0, 0, 64, 64]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.1], [0.0005, 0.7], [0.3, 0.2]], np.float32)
    settings = EvalSettings(score_threshold=0.001, iou_threshold=0.5, max_detections=10)
    b, s, c = postprocess_pre_nms(boxes, scores, params, settings)
    kb, ks, kc = multiclass_nms(boxes, scores, 0.001, 0.5, 10)
    np.testing.assert_allclose(b, params.to_source(kb), atol=1e-4)
    np.testing.assert_array_equal(s, ks)
    np.testing.assert_array_equal(c, kc)
    assert b.dtype == np.float32 and c.dtype == np.int64
    assert b[:, 0::2].max() <= 128 and b[:, 1::2].max() <= 96  # clipped to the frame
    assert len(s) == 5 and s[0] == pytest.approx(0.9)  # box 1 suppressed in class 0 by box 0


def test_settings_from_sidecar():
    assert settings_from_sidecar({}).to_dict() == EvalSettings().to_dict()
    s = settings_from_sidecar({"nms": {"iou_threshold": 0.6, "class_agnostic": True, "score_threshold": 0.25}})
    assert s.iou_threshold == 0.6 and s.class_agnostic and s.score_threshold == 0.001
    with pytest.raises(ModelError, match="IoU"):
        EvalSettings(iou_threshold=1.5).validate()


# ----------------------------------------------------------------------------------------------- ONNX


def test_pre_nms_predictor_equals_its_parts(tmp_path):
    import onnxruntime as ort

    path = crafted(tmp_path)
    predictor = load_predictor(path)
    assert isinstance(predictor, OnnxPreNmsPredictor)
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 40, (96, 96, 3)).astype(np.uint8)
    frame[0:24, 24:48] = (255, 0, 0)  # a blue object filling grid cell (0, 1) once letterboxed to 64x64
    boxes, scores, classes = predictor(frame)
    boxed, params = letterbox(frame, (64, 64), pad_value=114)
    raw_boxes, raw_scores = ort.InferenceSession(str(path)).run(["boxes", "scores"], {"images": boxed[None]})
    kb, ks, kc = multiclass_nms(raw_boxes[0], raw_scores[0], 0.001, 0.5, 100)
    np.testing.assert_allclose(boxes, params.to_source(kb), atol=1e-4)
    np.testing.assert_allclose(scores, ks, atol=1e-6)
    np.testing.assert_array_equal(classes, kc)
    assert classes[0] == 0 and scores[0] > 0.9
    np.testing.assert_allclose(boxes[0], [24, 0, 48, 24], atol=1e-4)  # the cell, in source pixels


def test_graph_kind_and_foreign_outputs(tmp_path):
    assert graph_kind(["boxes", "scores"]) == "pre-nms"
    assert graph_kind(["num_detections", "detection_boxes", "detection_scores", "detection_classes"]) == "post-nms"
    g = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g",
                          [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="edge surgery"):
        predictor_from_onnx(path)


def test_loaders_are_registered_and_user_loaders_win(monkeypatch):
    for suffix in (".onnx", ".pt", ".pth", ".engine", ".plan"):
        assert suffix in PREDICTOR_LOADERS
    def mine(path):
        return "mine"

    monkeypatch.setitem(PREDICTOR_LOADERS, ".onnx", mine)
    register()
    assert PREDICTOR_LOADERS[".onnx"] is mine


def test_engine_without_tensorrt_is_a_clear_error(tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; this checks the error where it is not")
    except ImportError:
        pass
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 64)
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        predictor_from_engine(engine)
    with pytest.raises(ModelError, match="not found"):
        predictor_from_engine(tmp_path / "absent.engine")


@needs_bccd
def test_eval_cli_on_an_onnx_model(tmp_path):
    path = crafted(tmp_path)
    data = bccd_subset(tmp_path, 3)
    out = tmp_path / "eval.json"
    # the crafted model's classes (blue, green, red) are not BCCD's: scored by index on purpose
    assert main(["eval", str(path), "--data", str(data), "--split", "val", "--json", str(out),
                 "--map-classes-by-index"]) == 0
    js = json.loads(out.read_text())
    assert js["model"] == str(path) and js["counts"]["images"] == 3
    from edge.data import load_dataset

    ref = evaluate_model(load_predictor(path), load_dataset(data, "val"))
    assert js["map50"] == pytest.approx(ref.map50, abs=1e-12)


# ----------------------------------------------------------------------------------------------- parity


def bccd_subset(tmp_path: Path, count: int) -> Path:
    ids = (BCCD / "ImageSets" / "Main" / "val.txt").read_text().split()[:count]
    split = tmp_path / "val_subset.txt"
    split.write_text("\n".join(ids) + "\n")
    yaml_path = tmp_path / "bccd_subset.yaml"
    yaml_path.write_text(f"name: bccd-subset\nroot: {BCCD}\nformat: voc\nsplits:\n  val: {split}\n"
                         "names: [RBC, WBC, Platelets]\n")
    return yaml_path


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A random-weight yolov3-tiny (128 px) as a checkpoint, its exported pre-NMS ONNX, and both deploy
    graphs made with the eval settings (score 0.001, IoU 0.5, 100 detections)."""
    torch = pytest.importorskip("torch")
    from edge.export.surgery import SurgeryConfig, surgery_file
    from edge.export.torch_export import ExportConfig, export_checkpoint
    from edge.train.checkpoint import build_card, save_checkpoint
    from tests.export.test_torch_export import make_model

    folder = tmp_path_factory.mktemp("deployed")
    model = make_model("yolov3-tiny", seed=3)
    card = build_card(model, class_names=["RBC", "WBC", "Platelets"])
    ckpt = save_checkpoint(folder / "best.pt", {"card": card, "model": model.state_dict()})
    with torch.no_grad():
        (result,) = export_checkpoint(ckpt, folder, ExportConfig())
    pre = result.onnx_path
    files = {"checkpoint": ckpt, "pre-nms": pre}
    for nms in ("onnx", "efficient"):
        out = folder / f"{pre.stem}.{nms}.onnx"
        surgery_file(pre, out, SurgeryConfig(nms=nms, score_threshold=0.001, iou_threshold=0.5, max_detections=100))
        files[nms] = out
    return files


@needs_bccd
def test_checkpoint_onnx_and_deploy_graphs_agree(deployed, tmp_path):
    """Issue 4: the checkpoint, the pre-NMS ONNX and both deploy graphs give the same detections (same count,
    classes; boxes within 1e-2 px torch vs ONNX Runtime, 1e-3 px between ONNX graphs; scores within 1e-5) and
    `edge eval` the same mAP to 1e-3."""
    from edge.data import load_dataset

    data = bccd_subset(tmp_path, 4)
    dataset = load_dataset(data, "val")
    predictors = {k: load_predictor(v) for k, v in deployed.items()}
    assert isinstance(predictors["pre-nms"], OnnxPreNmsPredictor)
    assert isinstance(predictors["onnx"], BackendPredictor) and isinstance(predictors["efficient"], BackendPredictor)
    for record in dataset.records:
        image = read_image(record.path)
        outs = {k: p(image) for k, p in predictors.items()}
        ref_boxes, ref_scores, ref_classes = outs["pre-nms"]
        assert len(ref_scores) == 100  # random weights: plenty of candidates above 0.001
        for name, (boxes, scores, classes) in outs.items():
            atol = 1e-2 if name == "checkpoint" else 1e-3
            assert len(scores) == len(ref_scores), name
            np.testing.assert_array_equal(classes, ref_classes, err_msg=name)
            np.testing.assert_allclose(scores, ref_scores, atol=1e-5, rtol=0, err_msg=name)
            np.testing.assert_allclose(boxes, ref_boxes, atol=atol, rtol=0, err_msg=name)
    maps = {k: evaluate_model(p, dataset) for k, p in predictors.items()}
    ref = maps["pre-nms"]
    for name, result in maps.items():
        assert result.map50 == pytest.approx(ref.map50, abs=1e-3), name
        assert result.map50_95 == pytest.approx(ref.map50_95, abs=1e-3), name
