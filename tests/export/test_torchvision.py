"""``edge.export.torchvision_adapter`` and ``torchvision_loading``: torchvision's SSD300, SSDlite320 and
RetinaNet through ``edge export``.

Parity is checked against torchvision itself, with random weights (``weights=None, weights_backbone=None``):

1. the wrapper's pre-NMS tensors equal torchvision's own internals (its transform, backbone, head, anchor
   generator, ``BoxCoder.decode_single``, ``clip_boxes_to_image``, softmax / sigmoid) on the same input;
2. the final detections equal ``model(images)`` in eval mode (input already at the network size, so
   torchvision's resize is the identity): through ``torchvision_postprocess`` (torchvision's top-k cut
   included) at the model's default settings, and through the edge NMS (``edge.nms``, the exported graph
   plus ``edge surgery``) at a score threshold where the top-k cut does not bind;
3. the exported ONNX matches the wrapper (1e-4 relative), ``edge surgery`` runs on it (ONNX NMS and the
   EfficientNMS_TRT graph through its CPU reference) and gives torchvision's detections. SSDlite and
   RetinaNet are exported (one run each); SSD300 shares SSDlite's SSD class, head layout and decode, and
   its 35 M-parameter export (~15 s here) is left out of the suite to keep it fast.

Needs torchvision (skipped with a reason where it is not installed); the numpy ``torchvision_postprocess``
tests and the missing-dependency test run everywhere. The models are real torchvision detectors: SSD300
(VGG16, 35 M parameters) and RetinaNet (ResNet50-FPN) keep to one small run each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch

from edge.errors import MissingDependencyError, ModelError
from edge.export.preprocess import sample_frames
from edge.export.torchvision_adapter import (
    TorchvisionPostprocess,
    topk_binds,
    torchvision_postprocess,
)

try:
    import torchvision  # noqa: F401
    import torchvision.models.detection as tv_detection

    HAVE_TV = True
except ImportError:  # the project's .venv until the dev install gains torchvision
    tv_detection = None
    HAVE_TV = False

needs_tv = pytest.mark.skipif(not HAVE_TV, reason="torchvision is not installed here (pip install torchvision "
                                                   "matching torch); the parity tests need real torchvision models")

from tests.paths import BCCD  # noqa: E402

CLASSES = ["Platelets", "RBC", "WBC"]
NUM_TV_CLASSES = len(CLASSES) + 1  # torchvision counts the background
BOX_TOL = 1e-3  # px
SCORE_TOL = 1e-5


# ------------------------------------------------------------------------------------------------ models


def _calibrate_batchnorm(model: Any, size: Tuple[int, int]) -> None:
    """Random weights that give input-dependent outputs: BatchNorm running statistics measured on random
    images (variance floored at 0.01), as trained statistics would be; torchvision's init with unit
    statistics shrinks activations to ~1e-20 through SSDlite's many layers."""
    from edge.export.torchvision_adapter import wrap_torchvision

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    wrapper = wrap_torchvision(model, size)
    model.train()
    with torch.no_grad():
        wrapper.forward_raw(torch.randn(2, 3, size[0], size[1]))
    for bn in bns:
        bn.running_var.clamp_(min=1e-2)
    model.eval()


def make_ssdlite(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    model = tv_detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                       num_classes=NUM_TV_CLASSES)
    for m in model.modules():  # fan-in init: torchvision's N(0, 0.03) makes every score 1 / num_classes
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.normal_(m.bias, 0.0, 0.1)
    _calibrate_batchnorm(model, (320, 320))
    return model.eval()


def make_ssd300(seed: int = 1) -> Any:
    torch.manual_seed(seed)  # VGG has no BatchNorm: torchvision's own init gives varied scores
    return tv_detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_TV_CLASSES).eval()


def make_retinanet(seed: int = 2, size: int = 256) -> Any:
    """RetinaNet at ``size`` (torchvision's resize made the identity: min_size = max_size = size). The class
    logits are spread so that many anchors pass torchvision's 0.05 (its prior bias keeps random scores at
    0.01), and column 0, the background of torchvision's label convention, never scores (as in a trained
    model, where no positive has label 0)."""
    torch.manual_seed(seed)
    model = tv_detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_TV_CLASSES,
                                                min_size=size, max_size=size)
    cls = model.head.classification_head.cls_logits
    with torch.no_grad():
        cls.weight.mul_(6.0)
        cls.bias.fill_(-3.0)
        cls.bias[0::NUM_TV_CLASSES] = -20.0
    return model.eval()


@pytest.fixture(scope="module")
def ssdlite() -> Any:
    return make_ssdlite()


@pytest.fixture(scope="module")
def ssd300() -> Any:
    return make_ssd300()


@pytest.fixture(scope="module")
def retinanet() -> Any:
    return make_retinanet()


MODELS = {"ssdlite": ("ssdlite", "ssdlite320_mobilenet_v3_large", (320, 320)),
          "ssd300": ("ssd300", "ssd300_vgg16", (300, 300)),
          "retinanet": ("retinanet", "retinanet_resnet50_fpn", (256, 256))}


def _model(request: Any, key: str) -> Tuple[Any, str, Tuple[int, int]]:
    fixture, arch, size = MODELS[key]
    return request.getfixturevalue(fixture), arch, size


# ------------------------------------------------------------------------------------------------ helpers


def bgr_frames(size: Tuple[int, int], batch: int, seed: int) -> np.ndarray:
    return sample_frames(batch, size, seed=seed)


def tv_images(frames: np.ndarray) -> List[torch.Tensor]:
    """uint8 BGR [B, H, W, 3] -> torchvision's input: float [3, H, W] RGB in [0, 1] per image."""
    rgb = np.ascontiguousarray(frames[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32) / 255.0
    return [torch.from_numpy(x) for x in rgb]


def normalized(model: Any, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """The wrapper's input: torchvision's own normalization, (x - mean) / std per channel, batched."""
    mean = torch.tensor(model.transform.image_mean)[:, None, None]
    std = torch.tensor(model.transform.image_std)[:, None, None]
    return torch.stack([(img - mean) / std for img in images])


def tv_pre_nms(model: Any, images: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """torchvision's internals up to its thresholding: (transformed batch, boxes [B,N,4], scores [B,N,K-1])."""
    from torchvision.ops import boxes as box_ops

    with torch.no_grad():
        image_list, _ = model.transform(list(images))
        features = model.backbone(image_list.tensors)
        features = [features] if isinstance(features, torch.Tensor) else list(features.values())
        head = model.head(features)
        anchors = model.anchor_generator(image_list, features)
        boxes = torch.stack([
            box_ops.clip_boxes_to_image(model.box_coder.decode_single(head["bbox_regression"][i], anchors[i]),
                                        image_list.image_sizes[i])
            for i in range(len(images))])
        logits = head["cls_logits"]
        probs = torch.softmax(logits, dim=-1) if "ssd" in type(model).__name__.lower() else torch.sigmoid(logits)
    return image_list.tensors, boxes.numpy(), probs[..., 1:].numpy()


def tv_detections(model: Any, images: Sequence[torch.Tensor],
                  score_thresh: Optional[float] = None) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``model(images)`` in eval mode -> per image (boxes [K,4], scores [K], labels [K]), optionally at another
    score threshold (restored afterwards)."""
    saved = model.score_thresh
    if score_thresh is not None:
        model.score_thresh = float(score_thresh)
    try:
        with torch.no_grad():
            out = model(list(images))
    finally:
        model.score_thresh = saved
    return [(o["boxes"].numpy(), o["scores"].numpy(), o["labels"].numpy()) for o in out]


def assert_same_detections(ours: Tuple[np.ndarray, np.ndarray, np.ndarray],
                           theirs: Tuple[np.ndarray, np.ndarray, np.ndarray], what: str,
                           box_tol: float = BOX_TOL, score_tol: float = SCORE_TOL) -> None:
    """Same count, boxes within ``box_tol`` px, scores within ``score_tol``, our class c == torchvision label
    c + 1. PyTorch against PyTorch: 1e-3 px and 1e-5. An ONNX graph against PyTorch: the export's own
    tolerance (1e-4 relative: 1e-4 * the largest coordinate), since ONNX Runtime's kernels and the folded
    uint8 preprocessing round differently from PyTorch's (measured here up to 2e-3 px and 1.5e-5 in score
    on a 320 px input, 60 float32 layers deep)."""
    boxes, scores, classes = (np.asarray(a) for a in ours)
    tv_boxes, tv_scores, tv_labels = theirs
    assert len(tv_scores) > 0, f"{what}: torchvision detected nothing: the comparison would be empty"
    assert len(scores) == len(tv_scores), f"{what}: {len(scores)} detections, torchvision {len(tv_scores)}"
    assert np.abs(boxes - tv_boxes).max() <= box_tol, f"{what}: boxes differ by {np.abs(boxes - tv_boxes).max()}"
    assert np.abs(scores - tv_scores).max() <= score_tol, f"{what}: scores differ by {np.abs(scores - tv_scores).max()}"
    assert np.array_equal(classes.astype(np.int64) + 1, tv_labels), f"{what}: classes differ"


def nonbinding_threshold(scores: np.ndarray, settings: TorchvisionPostprocess, level_sizes: Sequence[int],
                         count: int = 300) -> float:
    """A score threshold with about ``count`` candidates per image where torchvision's top-k cut does not
    bind, set in a gap of >= 1e-4 between scores (so float rounding of the ONNX graph cannot flip one)."""
    values = np.unique(scores.ravel())[::-1]
    for i in range(min(count, len(values) - 1), 0, -1):
        if values[i - 1] - values[i] < 1e-4:
            continue
        thr = float(values[i] + values[i - 1]) / 2.0
        if not topk_binds(scores, dataclasses.replace(settings, score_thresh=thr), level_sizes):
            return thr
    raise AssertionError("no score threshold without a binding top-k cut; the random model is degenerate")


def wrapper_outputs(wrapper: Any, x: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        boxes, scores = wrapper(x)
    return boxes.numpy(), scores.numpy()


# ------------------------------------------------------------------------------------------------ numpy only


def test_postprocess_reference_applies_the_topk_cut_per_class_for_ssd():
    # three boxes of class 0 (two overlapping), one of class 1; top-k 2 per class drops box 2 (0.6)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.6, 0.0], [0.0, 0.7]], np.float32)
    settings = TorchvisionPostprocess("ssd", score_thresh=0.5, nms_thresh=0.5, detections_per_img=10,
                                      topk_candidates=2)
    b, s, c = torchvision_postprocess(boxes, scores, settings)
    assert s.tolist() == pytest.approx([0.9, 0.7]) and c.tolist() == [0, 1]  # box 1 suppressed, box 2 cut
    assert b.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10]]
    assert topk_binds(scores, settings)
    assert not topk_binds(scores, dataclasses.replace(settings, topk_candidates=3))
    b3, s3, c3 = torchvision_postprocess(boxes, scores, dataclasses.replace(settings, topk_candidates=3))
    assert s3.tolist() == pytest.approx([0.9, 0.7, 0.6]) and c3.tolist() == [0, 1, 0]
    b1, s1, _ = torchvision_postprocess(boxes, scores, dataclasses.replace(settings, detections_per_img=1))
    assert s1.tolist() == pytest.approx([0.9])


def test_postprocess_reference_applies_the_topk_cut_per_level_for_retinanet():
    # level 0: anchors 0-1, level 1: anchors 2-3; top-k 1 per level over (anchor, class) pairs
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], np.float32)
    scores = np.array([[0.9, 0.3], [0.2, 0.8], [0.1, 0.4], [0.7, 0.1]], np.float32)
    settings = TorchvisionPostprocess("retinanet", score_thresh=0.25, nms_thresh=0.5, detections_per_img=10,
                                      topk_candidates=1)
    b, s, c = torchvision_postprocess(boxes, scores, settings, level_sizes=[2, 2])
    assert s.tolist() == pytest.approx([0.9, 0.7]) and c.tolist() == [0, 0]
    assert b.tolist() == [[0, 0, 10, 10], [60, 60, 70, 70]]
    # one level for all anchors: a different cut, so the level split is what decides
    _, s_one, _ = torchvision_postprocess(boxes, scores, settings, level_sizes=[4])
    assert s_one.tolist() == pytest.approx([0.9])
    with pytest.raises(ModelError, match="add up to 3 anchors"):
        torchvision_postprocess(boxes, scores, settings, level_sizes=[1, 2])
    with pytest.raises(ModelError, match=r"score_thresh is 1.5"):
        TorchvisionPostprocess("retinanet", 1.5, 0.5, 10, 10).validate()


@pytest.mark.skipif(HAVE_TV, reason="torchvision is installed: the missing-dependency path cannot be reached")
def test_without_torchvision_the_error_says_how_to_install(tmp_path):
    from edge.export.torchvision_loading import source_from_torchvision

    weights = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, weights)
    with pytest.raises(MissingDependencyError, match="torchvision is required.*pip install torchvision"):
        source_from_torchvision("ssdlite320_mobilenet_v3_large", weights, CLASSES)


# ------------------------------------------------------------------------------------------------ parity


@needs_tv
@pytest.mark.parametrize("key", ["ssdlite", "ssd300", "retinanet"])
def test_pre_nms_outputs_equal_torchvision_internals(request, key):
    from edge.export.torchvision_adapter import wrap_torchvision

    model, _, size = _model(request, key)
    wrapper = wrap_torchvision(model, size)
    batch = 2 if key == "ssdlite" else 1  # the big ones once: batching is the same code
    images = tv_images(bgr_frames(size, batch, seed=11))
    x = normalized(model, images)
    tv_batch, tv_boxes, tv_scores = tv_pre_nms(model, images)
    assert torch.equal(tv_batch, x), "torchvision's transform is not the identity resize + our normalization"
    boxes, scores = wrapper_outputs(wrapper, x)
    assert boxes.shape == tv_boxes.shape
    assert scores.shape == tv_scores.shape == (batch, boxes.shape[1], len(CLASSES))
    assert boxes.shape[1] == sum(wrapper.level_sizes)
    assert np.abs(boxes - tv_boxes).max() <= 1e-4
    assert np.abs(scores - tv_scores).max() <= 1e-6
    assert boxes.min() >= 0 and boxes[..., 0::2].max() <= size[1] and boxes[..., 1::2].max() <= size[0]
    assert np.ptp(scores) > 0.5, "degenerate random model: scores hardly vary"


@needs_tv
@pytest.mark.parametrize("key", ["ssdlite", "ssd300", "retinanet"])
def test_final_detections_equal_torchvision(request, key):
    """(a) torchvision's defaults, top-k cut binding: ``torchvision_postprocess`` on our tensors == model(x);
    (b) a threshold where the cut does not bind: the edge NMS (``edge.nms.multiclass_nms``) == model(x)."""
    from edge.export.torchvision_adapter import wrap_torchvision
    from edge.nms import multiclass_nms

    model, _, size = _model(request, key)
    wrapper = wrap_torchvision(model, size)
    images = tv_images(bgr_frames(size, 1, seed=23))
    boxes, scores = wrapper_outputs(wrapper, normalized(model, images))
    settings = TorchvisionPostprocess.from_model(model)

    assert topk_binds(scores, settings, wrapper.level_sizes), "the default case should exercise the top-k cut"
    ours = torchvision_postprocess(boxes[0], scores[0], settings, wrapper.level_sizes)
    assert_same_detections(ours, tv_detections(model, images)[0], f"{key} defaults")

    thr = nonbinding_threshold(scores, settings, wrapper.level_sizes)
    surgery = dataclasses.replace(settings, score_thresh=thr).surgery_settings()
    ours = multiclass_nms(boxes[0], scores[0], surgery["score_threshold"], surgery["iou_threshold"],
                          surgery["max_detections"])
    assert_same_detections(ours, tv_detections(model, images, score_thresh=thr)[0], f"{key} at {thr:.4f}")


@needs_tv
def test_retinanet_padding_to_size_divisible_matches_torchvision():
    """A RetinaNet input that is no multiple of 32: torchvision pads the normalized batch with zeros to 32
    and lays anchors on the padded tensor, clipping to the image; the wrapper does the same in the graph.
    (SSDlite's small backbone stands in with the same transform setting: the padding is family-agnostic.)"""
    from edge.export.torchvision_adapter import wrap_torchvision

    model = make_ssdlite(seed=5)
    model.transform.fixed_size = (300, 288)  # (W, H): torchvision resizes to 288x300 (the identity here)
    model.transform.size_divisible = 32
    size = (288, 300)
    wrapper = wrap_torchvision(model, size)
    assert wrapper.padded_size == (288, 320)
    images = tv_images(bgr_frames(size, 1, seed=3))
    boxes, scores = wrapper_outputs(wrapper, normalized(model, images))
    _, tv_boxes, tv_scores = tv_pre_nms(model, images)
    assert np.abs(boxes - tv_boxes).max() <= 1e-4 and np.abs(scores - tv_scores).max() <= 1e-6
    assert boxes[..., 0::2].max() <= 300.0
    settings = TorchvisionPostprocess.from_model(model)
    ours = torchvision_postprocess(boxes[0], scores[0], settings, wrapper.level_sizes)
    assert_same_detections(ours, tv_detections(model, images)[0], "padded 288x300")


# ------------------------------------------------------------------------------------------------ export


def _ort(path: Path, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    from edge.export.verify import ort_session

    return ort_session(path).run(None, feeds)


def _nms_outputs(outputs: Sequence[np.ndarray], image: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    num, boxes, scores, classes = outputs[:4]  # the four NMS outputs; max_score follows them
    n = int(num[image, 0])
    return boxes[image, :n], scores[image, :n], classes[image, :n]


def _export_and_compare(model: Any, arch: str, size: Tuple[int, int], out_dir: Path, *, simplify: bool,
                        efficient: bool) -> Dict[str, Any]:
    """Export through ``export_source`` (uint8 BGR input, preprocessing in the graph), check the ONNX against
    the wrapper, append NMS with ``edge surgery`` at a non-binding threshold and compare with torchvision."""
    from edge.export.ort_custom_ops import make_session
    from edge.export.surgery import SurgeryConfig, surgery_file
    from edge.export.torch_export import ExportConfig, export_source
    from edge.export.torchvision_adapter import wrap_torchvision
    from edge.export.torchvision_loading import source_from_torchvision_model
    from edge.export.verify import relative_error

    source = source_from_torchvision_model(model, CLASSES, arch=arch, input_size=size)
    config = ExportConfig(simplify=simplify, random_samples=1)
    (result,) = export_source(source, out_dir, config)
    sidecar = json.loads(result.sidecar_path.read_text())

    frames = bgr_frames(size, 1, seed=31)
    images = tv_images(frames)
    wrapper = wrap_torchvision(model, size)
    boxes, scores = wrapper_outputs(wrapper, normalized(model, images))
    onnx_boxes, onnx_scores = _ort(result.onnx_path, {"images": frames})
    assert relative_error(onnx_boxes, boxes) <= 1e-4 and relative_error(onnx_scores, scores) <= 1e-4

    settings = TorchvisionPostprocess.from_model(model)
    thr = nonbinding_threshold(scores, settings, wrapper.level_sizes)
    expected = tv_detections(model, images, score_thresh=thr)[0]
    nms = dataclasses.replace(settings, score_thresh=thr).surgery_settings()
    kinds = ["onnx", "efficient"] if efficient else ["onnx"]
    for kind in kinds:
        deploy = out_dir / f"{arch}.{kind}.onnx"
        surgery_file(result.onnx_path, deploy, SurgeryConfig(nms=kind, score_threshold=nms["score_threshold"],
                                                             iou_threshold=nms["iou_threshold"],
                                                             max_detections=nms["max_detections"]))
        if kind == "onnx":
            outputs = _ort(deploy, {"images": frames})
        else:
            outputs = make_session(deploy).run(None, {"images": frames})
        assert_same_detections(_nms_outputs(outputs, 0), expected, f"{arch} ONNX + {kind} NMS",
                               box_tol=1e-4 * max(size), score_tol=1e-4)
        carried = json.loads(deploy.with_suffix(".json").read_text())
        assert carried["classes"] == CLASSES and carried["normalization"] == sidecar["normalization"]
    return sidecar


@needs_tv
def test_ssdlite_exports_and_its_deploy_graphs_match_torchvision(ssdlite, tmp_path):
    sidecar = _export_and_compare(ssdlite, "ssdlite320_mobilenet_v3_large", (320, 320), tmp_path, simplify=True,
                                  efficient=True)
    assert sidecar["classes"] == CLASSES and sidecar["input_size"] == [320, 320]
    assert sidecar["normalization"] == {"scale": 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                        "channel_order": "RGB"}
    assert sidecar["export"]["simplify"]["simplified"] is True
    cfg = sidecar["config"]
    assert cfg["framework"] == "torchvision" and cfg["family"] == "ssd" and cfg["num_classes"] == 4
    assert cfg["label_offset"] == 1
    assert cfg["torchvision_postprocess"] == {"family": "ssd", "score_thresh": 0.001, "nms_thresh": 0.55,
                                              "detections_per_img": 300, "topk_candidates": 300,
                                              "topk_scope": "per class"}
    levels = [lv["num_anchors"] for lv in sidecar["anchors"]]
    assert sum(levels) == sidecar["num_boxes"]["320x320"] == 3234


@needs_tv
@pytest.mark.slow
def test_retinanet_exports_and_matches_torchvision(retinanet, tmp_path):
    sidecar = _export_and_compare(retinanet, "retinanet_resnet50_fpn", (256, 256), tmp_path, simplify=False,
                                  efficient=False)
    assert sidecar["config"]["torchvision_postprocess"]["topk_scope"] == "per pyramid level"
    assert sidecar["config"]["edge_surgery"] == {"score_threshold": 0.05, "iou_threshold": 0.5,
                                                 "max_detections": 300, "class_agnostic": False}
    assert [lv["feature_size"] for lv in sidecar["anchors"]] == [[32, 32], [16, 16], [8, 8], [4, 4], [2, 2]]


# ------------------------------------------------------------------------------------------------ CLI, loading


@needs_tv
def test_cli_exports_user_weights_from_a_reference_script_checkpoint(ssdlite, tmp_path, capsys):
    """torchvision's reference train.py saves {"model", "optimizer", "args" (a Namespace), "epoch"}; the CLI
    reads it, infers num_classes from the head, verifies on a real BCCD image, and `edge surgery` runs."""
    from edge.cli.main import main
    from edge.export.torchvision_adapter import wrap_torchvision

    images = sorted((BCCD / "JPEGImages").glob("*.jpg"))[:1] if BCCD.is_dir() else []
    if not images:
        pytest.skip(f"the BCCD dataset is not at {BCCD}")
    weights = tmp_path / "checkpoint.pth"
    torch.save({"model": {f"module.{k}": v for k, v in ssdlite.state_dict().items()}, "epoch": 3,
                "args": argparse.Namespace(lr=0.15, data_path="/data")}, weights)
    out = tmp_path / "onnx"
    code = main(["export", "--torchvision", "ssdlite320_mobilenet_v3_large", "--weights", str(weights),
                 "--classes", ",".join(CLASSES), "--verify-images", str(images[0]), "--no-simplify",
                 "--out", str(out)])
    assert code == 0
    summary = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(summary) == 1 and summary[0]["input_size"] == [320, 320]
    onnx_path = Path(summary[0]["onnx"])
    assert onnx_path.name == "ssdlite320_mobilenet_v3_large_320x320.onnx"
    sidecar = json.loads(onnx_path.with_suffix(".json").read_text())
    assert sidecar["source"]["checkpoint"] == "checkpoint.pth" and len(sidecar["source"]["checkpoint_sha256"]) == 64
    assert any(smp["name"].startswith("images") for smp in sidecar["verification"]["samples"])

    # the graph computes the in-memory model on the real image, letterboxed as the runtime does it
    import cv2

    from edge.letterbox import letterbox

    frame = letterbox(cv2.imread(str(images[0])), (320, 320), pad_value=114)[0][None]
    onnx_boxes, onnx_scores = _ort(onnx_path, {"images": frame})
    boxes, scores = wrapper_outputs(wrap_torchvision(ssdlite, (320, 320)), normalized(ssdlite, tv_images(frame)))
    assert np.abs(onnx_boxes - boxes).max() <= 1e-4 * max(1.0, np.abs(boxes).max())
    assert np.abs(onnx_scores - scores).max() <= 1e-4

    deploy = tmp_path / "deploy.onnx"
    assert main(["surgery", str(onnx_path), "--nms", "efficient", "--score-threshold", "0.3",
                 "--iou-threshold", "0.55", "--max-detections", "50", "--out", str(deploy)]) == 0
    assert json.loads(deploy.with_suffix(".json").read_text())["classes"] == CLASSES


@needs_tv
def test_cli_refuses_ambiguous_or_incomplete_model_options(tmp_path, caplog):
    from edge.cli.main import main

    weights = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, weights)
    out = str(tmp_path / "out")
    caplog.set_level(logging.ERROR)
    assert main(["export", "--out", out]) == 2
    assert "no model given" in caplog.text
    assert main(["export", str(weights), "--torchvision", "ssd300_vgg16", "--weights", str(weights),
                 "--out", out]) == 2
    assert "both CHECKPOINT" in caplog.text
    assert main(["export", "--torchvision", "ssd300_vgg16", "--out", out]) == 2
    assert "needs --weights" in caplog.text
    assert main(["export", str(weights), "--classes", "a,b", "--out", out]) == 2
    assert "only apply with --torchvision" in caplog.text
    assert main(["export", "--torchvision", "ssd300_vgg16", "--weights", str(weights), "--out", out]) == 2
    assert "have no 'head.classification_head.module_list.0.weight'" in caplog.text
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.onnx"))


@needs_tv
def test_loading_weights_checks_architecture_classes_and_pickles(ssdlite, tmp_path):
    from edge.export.torchvision_adapter import wrap_torchvision
    from edge.export.torchvision_loading import (
        _build_ssdlite,
        build_torchvision_model,
        infer_num_classes,
        load_state_dict,
        source_from_torchvision,
        source_from_torchvision_model,
    )

    state = ssdlite.state_dict()
    assert infer_num_classes("ssdlite320_mobilenet_v3_large", state) == NUM_TV_CLASSES
    with pytest.raises(ModelError, match="not a retinanet_resnet50_fpn state dict"):
        infer_num_classes("retinanet_resnet50_fpn", state)
    with pytest.raises(ModelError, match="do not fit torchvision's ssdlite320_mobilenet_v3_large with num_classes=7"):
        build_torchvision_model("ssdlite320_mobilenet_v3_large", state, num_classes=7)

    # weights trained from an ImageNet backbone have the full MobileNetV3 tail: found by trying both
    torch.manual_seed(0)
    full_tail = _build_ssdlite(NUM_TV_CLASSES, reduced_tail=False).eval()
    rebuilt = build_torchvision_model("ssdlite320_mobilenet_v3_large", full_tail.state_dict())
    assert rebuilt.backbone.features[0][-1][0].out_channels == full_tail.backbone.features[0][-1][0].out_channels
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in full_tail.parameters())

    # the user's weights reproduce the user's model exactly
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    source = source_from_torchvision("ssdlite320_mobilenet_v3_large", path, CLASSES)
    x = torch.randn(1, 3, 320, 320)
    a = wrapper_outputs(source.model_for_size((320, 320)), x)
    b = wrapper_outputs(wrap_torchvision(ssdlite, (320, 320)), x)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert source.class_names == CLASSES and source.checkpoint_sha256 and source.input_size == (320, 320)

    with pytest.raises(ModelError, match=r"4 class names .*expected 3 foreground names"):
        source_from_torchvision_model(ssdlite, CLASSES + ["extra"])
    with pytest.raises(ModelError, match="softmax background"):
        wrap_torchvision(ssdlite, (320, 320), drop_background=False)

    pickled = tmp_path / "whole_model.pth"
    torch.save(ssdlite, pickled)
    with pytest.raises(ModelError, match=r"cannot be loaded as weights .*torch.save\(model.state_dict\(\)"):
        load_state_dict(pickled)
    with pytest.raises(ModelError, match="does not exist"):
        load_state_dict(tmp_path / "missing.pth")


@needs_tv
def test_sources_carry_torchvision_normalization_sizes_and_nms_defaults(ssd300, retinanet):
    from edge.export.torchvision_loading import source_from_torchvision_model

    ssd = source_from_torchvision_model(ssd300, CLASSES, arch="ssd300_vgg16")
    assert ssd.input_size == (300, 300) and ssd.arch == "ssd300_vgg16"
    assert ssd.normalization.mean == pytest.approx((0.48235, 0.45882, 0.40784))
    assert ssd.normalization.std == pytest.approx((1 / 255.0,) * 3) and ssd.normalization.scale == 255.0
    assert ssd.config["edge_surgery"] == {"score_threshold": 0.01, "iou_threshold": 0.45, "max_detections": 200,
                                          "class_agnostic": False}
    assert ssd.config["torchvision_resize"] == {"fixed_size": [300, 300]}
    retina = source_from_torchvision_model(retinanet, CLASSES)
    assert retina.input_size == (256, 256)  # its min_size (800 for torchvision's default model)
    assert retina.normalization.mean == pytest.approx((0.485, 0.456, 0.406))
    assert retina.config["torchvision_postprocess"]["topk_candidates"] == 1000
    assert retina.config["size_divisible"] == 32 and retina.config["label_offset"] == 1
    with pytest.raises(ModelError, match=r"2 class names .*expected 3 foreground names, label 1 first \(or 4 to keep"):
        source_from_torchvision_model(retinanet, CLASSES[:2])


@needs_tv
def test_retinanet_can_keep_column_zero_as_a_class(retinanet):
    """A RetinaNet trained with 0-based labels (sigmoid: column 0 is a real class) keeps all columns when it
    gets one name per column."""
    from edge.export.torchvision_loading import source_from_torchvision_model

    names = ["bg_or_first"] + CLASSES
    source = source_from_torchvision_model(retinanet, names, arch="retinanet_resnet50_fpn", input_size=(128, 128))
    assert source.config["background_dropped"] is False and source.config["label_offset"] == 0
    wrapper = source.model_for_size((128, 128))
    boxes, scores = wrapper_outputs(wrapper, torch.randn(1, 3, 128, 128))
    assert scores.shape == (1, boxes.shape[1], 4) and scores[..., 0].max() < 1e-6  # the -20 bias column
    assert boxes.shape[1] == sum(wrapper.level_sizes) == (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * 9
