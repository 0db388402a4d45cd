"""YOLO detectors (yolov2, yolov3, yolov3-tiny): layouts, shapes, reorg, decode, loss, ONNX export.

Real components only: real BCCD images and annotations for the overfitting check, real ONNX Runtime
sessions for the export check. Small widths and inputs keep the file at a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.data.targets import Target  # noqa: E402
from edge.errors import ModelError  # noqa: E402
from edge.models import build_model  # noqa: E402
from edge.models.darknet import Darknet19, Darknet53, DarknetTiny, MaxPoolStride1, Residual  # noqa: E402
from edge.models.yolo_loss import YoloLossConfig, YoloRaw, assign_targets, decode_level_boxes  # noqa: E402
from edge.models.yolov2 import Reorg  # noqa: E402
from tests.paths import BCCD  # noqa: E402

BCCD_CLASSES = ["RBC", "WBC", "Platelets"]

# small variants: what a 2-core CPU trains in minutes
SMALL = {
    "yolov2": {"width": 0.25},
    "yolov3": {"width": 0.25, "depth": 0.34},
    "yolov3-tiny": {"width": 0.25},
}
LEVELS = {"yolov2": [32], "yolov3": [8, 16, 32], "yolov3-tiny": [16, 32]}


def small_model(arch: str, size=(128, 160), num_classes: int = 3, **kw):
    torch.manual_seed(0)
    config = dict(SMALL[arch], num_classes=num_classes, input_size=list(size))
    config.update(kw)
    return build_model(arch, **config)


def conv_count(module, kernel=None) -> int:
    return sum(1 for m in module.modules()
               if isinstance(m, torch.nn.Conv2d) and (kernel is None or m.kernel_size == (kernel, kernel)))


# ------------------------------------------------------------------------------------------- layouts
def test_darknet53_follows_the_paper_table():
    net = Darknet53()
    # 52 convolutions (the 53rd layer of the classifier is the FC): 1 stem + 5 downsampling + 2 per block
    assert conv_count(net) == 52
    assert [sum(isinstance(m, Residual) for m in s) for s in
            (net.stage2, net.stage4, net.stage8, net.stage16, net.stage32)] == [1, 2, 8, 8, 4]
    assert net.out_channels == [256, 512, 1024] and net.strides == [8, 16, 32]
    # batch norm after every convolution, no conv bias
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 52
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(1, 3, 64, 96)
    c3, c4, c5 = net.eval()(x)
    assert c3.shape == (1, 256, 8, 12) and c4.shape == (1, 512, 4, 6) and c5.shape == (1, 1024, 2, 3)


def test_darknet19_and_tiny_layouts():
    d19 = Darknet19()
    # Darknet-19 minus its classifier 1x1 conv: 18 convolutions, 13 up to the passthrough source
    assert conv_count(d19) == 18 and conv_count(d19.stage16) == 13
    assert conv_count(d19, 3) == 12 and conv_count(d19, 1) == 6
    assert d19.out_channels == [512, 1024]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d19.modules()) == 18
    c4, c5 = d19.eval()(torch.randn(1, 3, 64, 64))
    assert c4.shape == (1, 512, 4, 4) and c5.shape == (1, 1024, 2, 2)

    tiny = DarknetTiny()
    assert conv_count(tiny) == 7 and tiny.out_channels == [256, 1024]
    c4, c5 = tiny.eval()(torch.randn(1, 3, 64, 96))
    assert c4.shape == (1, 256, 4, 6) and c5.shape == (1, 1024, 2, 3)


def test_full_size_parameter_counts_match_the_reference_cfgs():
    # darknet's yolov3.cfg / yolov3-tiny.cfg with 80 classes (as counted by the well-known PyTorch ports)
    assert sum(p.numel() for p in build_model("yolov3", num_classes=80).parameters()) == 61_949_149
    assert sum(p.numel() for p in build_model("yolov3-tiny", num_classes=80).parameters()) == 8_852_366


def test_width_multiplier_shrinks_the_model():
    full = sum(p.numel() for p in build_model("yolov3-tiny", num_classes=3).parameters())
    small = sum(p.numel() for p in small_model("yolov3-tiny").parameters())
    assert small < full / 10


# --------------------------------------------------------------------------------------- reorg, pool
def test_reorg_on_a_hand_made_tensor():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    # 0  1  2  3
    # 4  5  6  7
    # 8  9 10 11
    # 12 13 14 15
    y = Reorg(2)(x)
    expected = torch.tensor([[[0, 2], [8, 10]],      # dy=0, dx=0
                             [[1, 3], [9, 11]],      # dy=0, dx=1
                             [[4, 6], [12, 14]],     # dy=1, dx=0
                             [[5, 7], [13, 15]]],    # dy=1, dx=1
                            dtype=torch.float32).view(1, 4, 2, 2)
    assert torch.equal(y, expected)

    # two channels: out channel (dy*2 + dx) * D + c, batch kept apart
    x2 = torch.stack([x[0], x[0] + 100], dim=1).repeat(2, 1, 1, 1)  # [2, 2, 4, 4]
    x2[1] += 1000
    y2 = Reorg(2)(x2)
    assert y2.shape == (2, 8, 2, 2)
    assert torch.equal(y2[0, 0], expected[0, 0]) and torch.equal(y2[0, 1], expected[0, 0] + 100)
    assert torch.equal(y2[0, 6], expected[0, 3]) and torch.equal(y2[0, 7], expected[0, 3] + 100)
    assert torch.equal(y2[1, 3], expected[0, 1] + 1100)


def test_reorg_matches_onnx_space_to_depth_in_onnxruntime():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2)
    graph = helper.make_graph([node], "s2d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12, 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 8)
    (ref,) = sess.run(None, {"x": x.numpy()})
    assert np.array_equal(Reorg(2)(x).numpy(), ref)


def test_maxpool_stride1_is_darknets_2x2_window():
    x = torch.tensor([[1.0, -5.0, 3.0], [-2.0, -7.0, 0.0], [4.0, -1.0, -9.0]]).view(1, 1, 3, 3)
    expected = torch.tensor([[1.0, 3.0, 3.0], [4.0, 0.0, 0.0], [4.0, -1.0, -9.0]]).view(1, 1, 3, 3)
    assert torch.equal(MaxPoolStride1()(x), expected)


# ----------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("arch", ["yolov2", "yolov3", "yolov3-tiny"])
@pytest.mark.parametrize("size", [(128, 128), (128, 160)])
def test_forward_shapes_and_prediction_counts(arch, size):
    model = small_model(arch, size=size).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        raw = model.forward_raw(x)
        boxes, scores = model(x)
    h, w = size
    assert [m.shape for m in raw.maps] == [
        (2, len(a), h // s, w // s, 5 + 3) for a, s in zip(model.level_anchors(), LEVELS[arch])]
    n = sum(len(a) * (h // s) * (w // s) for a, s in zip(model.level_anchors(), LEVELS[arch]))
    assert n == model.num_predictions()
    assert boxes.shape == (2, n, 4) and scores.shape == (2, n, 3)
    # anchors: 5 for v2 at one level, 3 per level for v3
    assert [len(a) for a in model.level_anchors()] == ([5] if arch == "yolov2" else [3] * len(LEVELS[arch]))
    card = model.anchors_for_card()
    assert [c["stride"] for c in card] == LEVELS[arch]
    json.dumps(card)


def test_multi_scale_inputs_and_bad_sizes():
    model = small_model("yolov2", size=(160, 160)).eval()
    with torch.no_grad():
        for size in [(96, 96), (192, 224), (320, 320)]:
            boxes, _ = model(torch.randn(1, 3, *size))
            assert boxes.shape[1] == 5 * (size[0] // 32) * (size[1] // 32) == model.num_predictions(size)
        with pytest.raises(ModelError, match="multiple of 32"):
            model(torch.randn(1, 3, 100, 128))
    with pytest.raises(ModelError, match="multiple of 32"):
        build_model("yolov3-tiny", num_classes=3, input_size=[300, 320])


def test_config_round_trips_through_json():
    for arch in SMALL:
        model = small_model(arch, anchors=None).eval()
        config = json.loads(json.dumps(model.config))
        rebuilt = build_model(arch, **config).eval()
        rebuilt.load_state_dict(model.state_dict())
        assert rebuilt.config == model.config
        x = torch.randn(1, 3, 128, 160)
        with torch.no_grad():
            for a, b in zip(model(x), rebuilt(x)):
                assert torch.equal(a, b)


def test_anchor_configs(tmp_path):
    flat = [[100, 90], [10, 12], [30, 60], [16, 30], [33, 23], [60, 45]]
    tiny = build_model("yolov3-tiny", num_classes=2, input_size=[128, 128], width=0.25, anchors=flat)
    # flat list: sorted by area, smallest three on the finest level (stride 16)
    assert tiny.config["anchors"] == [[[10.0, 12.0], [16.0, 30.0], [33.0, 23.0]],
                                      [[30.0, 60.0], [60.0, 45.0], [100.0, 90.0]]]
    v2 = build_model("yolov2", num_classes=2, input_size=[128, 128], width=0.25, anchors=flat[:3])
    assert [len(a) for a in v2.level_anchors()] == [3]
    # the --out JSON of `edge anchors`: the numbers (not the path) go into the config
    path = tmp_path / "anchors.json"
    path.write_text(json.dumps({"anchors": flat, "k": 6, "mean_iou": 0.7}))
    from_file = build_model("yolov3-tiny", num_classes=2, input_size=[128, 128], width=0.25, anchors=str(path))
    assert from_file.config["anchors"] == tiny.config["anchors"]
    with pytest.raises(ModelError, match="cannot read it as JSON"):
        build_model("yolov2", num_classes=2, input_size=[128, 128], width=0.25, anchors=str(tmp_path / "none.json"))
    with pytest.raises(ModelError, match="split evenly"):
        build_model("yolov3", num_classes=2, input_size=[128, 128], width=0.25, anchors=flat[:4])
    with pytest.raises(ModelError, match="positive"):
        build_model("yolov2", num_classes=2, input_size=[128, 128], width=0.25, anchors=[[10, -1]])
    with pytest.raises(ModelError, match=r"unknown --model-arg loss\.bogus for yolov2; options: "):
        build_model("yolov2", num_classes=2, input_size=[128, 128], width=0.25, loss={"bogus": 1})
    with pytest.raises(ValueError, match="ignore_thresh"):
        YoloLossConfig(ignore_thresh=1.5).validate()


# ----------------------------------------------------------------------------------------- decode
def test_decode_formula_on_known_raw_outputs():
    anchors = torch.tensor([[10.0, 20.0], [40.0, 30.0]])
    pred = torch.zeros(1, 2, 2, 3, 8)  # B, A, H, W, 5 + 3
    pred[0, 1, 1, 2, 0] = math.log(3.0)  # sigmoid = 0.75
    pred[0, 1, 1, 2, 1] = -math.log(3.0)  # sigmoid = 0.25
    pred[0, 1, 1, 2, 2] = math.log(2.0)  # w = 2 * 40
    pred[0, 1, 1, 2, 3] = math.log(0.5)  # h = 0.5 * 30
    boxes = decode_level_boxes(pred, anchors, (16.0, 8.0))
    # cell (row 0, col 0), anchor 0: centre (0.5 * 8, 0.5 * 16), size 10 x 20
    assert torch.allclose(boxes[0, 0, 0, 0], torch.tensor([4 - 5.0, 8 - 10.0, 4 + 5.0, 8 + 10.0]))
    # cell (row 1, col 2), anchor 1: centre ((0.75 + 2) * 8, (0.25 + 1) * 16) = (22, 20), size 80 x 15
    assert torch.allclose(boxes[0, 1, 1, 2], torch.tensor([22 - 40.0, 20 - 7.5, 22 + 40.0, 20 + 7.5]))

    for arch, expected in (("yolov3-tiny", 0.5 * 0.5), ("yolov2", 0.5 / 3)):
        model = small_model(arch, size=(64, 64))
        raw = YoloRaw(maps=[torch.zeros(1, len(a), 64 // s, 64 // s, 8)
                            for a, s in zip(model.level_anchors(), LEVELS[arch])],
                      anchors=model.level_anchors(), strides=[(float(s), float(s)) for s in LEVELS[arch]],
                      image_size=(64, 64))
        det = model.decode(raw)
        # sigmoid(0) objectness times sigmoid(0) (v3) or softmax over 3 equal logits (v2)
        assert torch.allclose(det.scores, torch.full_like(det.scores, expected))


@pytest.mark.parametrize("arch", ["yolov2", "yolov3", "yolov3-tiny"])
def test_decoded_boxes_are_valid(arch):
    model = small_model(arch).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        boxes, scores = model(torch.rand(2, 3, 128, 160) * 3)
    assert torch.isfinite(boxes).all() and torch.isfinite(scores).all()
    assert (boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all()
    assert (scores >= 0).all() and (scores <= 1).all()
    if arch == "yolov2":  # softmax classes: per box, the class scores sum to the objectness
        assert (scores.sum(-1) <= 1 + 1e-6).all()
    centres = 0.5 * (boxes[..., :2] + boxes[..., 2:])
    # centres are sigmoid-bounded inside their grid cell, hence inside the image
    assert (centres[..., 0] >= 0).all() and (centres[..., 0] <= 160).all()
    assert (centres[..., 1] >= 0).all() and (centres[..., 1] <= 128).all()


# ------------------------------------------------------------------------------------------- loss
def test_assignment_picks_the_best_anchor_level_and_cell():
    model = small_model("yolov3", size=(128, 128), anchors=[[8, 8], [12, 24], [24, 12], [30, 30], [40, 60],
                                                           [60, 40], [70, 70], [90, 110], [120, 90]])
    raw = model.forward_raw(torch.zeros(1, 3, 128, 128))
    # a 41x59 box centred at (50, 70) best matches anchor [40, 60] (level 1, stride 16, anchor 1)
    target = Target(boxes=torch.tensor([[50 - 20.5, 70 - 29.5, 50 + 20.5, 70 + 29.5],
                                        [2.0, 3.0, 10.0, 11.0]]), labels=torch.tensor([2, 0]))
    assigned = assign_targets(raw, [target])
    assert [int(a.batch.numel()) for a in assigned] == [1, 1, 0]
    lvl1 = assigned[1]
    assert (int(lvl1.anchor), int(lvl1.row), int(lvl1.col), int(lvl1.labels)) == (1, 70 // 16, 50 // 16, 2)
    lvl0 = assigned[0]
    assert (int(lvl0.anchor), int(lvl0.row), int(lvl0.col)) == (0, 7 // 8, 6 // 8)


def _perfect_raw(model, size, box, label, anchor_level, anchor_index):
    """Raw outputs that decode exactly to ``box`` at the responsible slot, confident elsewhere in nothing."""
    h, w = size
    maps = []
    for anchors, s in zip(model.level_anchors(), LEVELS[model.arch]):
        m = torch.zeros(1, len(anchors), h // s, w // s, 5 + model.num_classes)
        m[..., 4] = -12.0
        m[..., 5:] = -12.0
        maps.append(m)
    s = LEVELS[model.arch][anchor_level]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col, row = int(cx // s), int(cy // s)
    fx, fy = cx / s - col, cy / s - row
    aw, ah = model.level_anchors()[anchor_level][anchor_index].tolist()
    slot = maps[anchor_level][0, anchor_index, row, col]
    slot[0] = math.log(fx / (1 - fx))
    slot[1] = math.log(fy / (1 - fy))
    slot[2] = math.log((box[2] - box[0]) / aw)
    slot[3] = math.log((box[3] - box[1]) / ah)
    slot[4] = 12.0
    slot[5 + label] = 12.0
    return YoloRaw(maps=maps, anchors=model.level_anchors(), strides=[(float(s), float(s)) for s in LEVELS[model.arch]],
                   image_size=size)


def test_loss_is_near_zero_for_a_perfect_prediction_and_positive_otherwise():
    model = small_model("yolov3-tiny", size=(64, 64), anchors=[[8, 8], [12, 12], [16, 16], [24, 24], [32, 32],
                                                              [48, 48]])
    box = [20.3, 10.6, 44.3, 34.6]  # 24 x 24: anchor 0 of level 1 (stride 32)
    target = [Target(boxes=torch.tensor([box]), labels=torch.tensor([1]))]
    good = model.compute_loss(_perfect_raw(model, (64, 64), box, 1, 1, 0), target)
    assert good.terms["num_pos"] == 1
    assert good.terms["box"] < 1e-4 and good.terms["obj"] < 1e-3 and good.terms["cls"] < 1e-3
    wrong_class = model.compute_loss(_perfect_raw(model, (64, 64), box, 2, 1, 0), target)
    assert wrong_class.terms["cls"] > 1.0 and wrong_class.terms["box"] < 1e-4
    shifted = [b + 6.0 for b in box]
    off = model.compute_loss(_perfect_raw(model, (64, 64), shifted, 1, 1, 0), target)
    assert off.terms["box"] > 0.1
    # no ground truth at all: only the objectness term remains
    empty = model.compute_loss(_perfect_raw(model, (64, 64), box, 1, 1, 0),
                               [Target(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))])
    assert empty.terms["num_pos"] == 0 and empty.terms["box"] == 0 and empty.terms["cls"] == 0
    assert empty.terms["obj"] > good.terms["obj"] * 100


def test_ignore_threshold_spares_good_non_responsible_predictions():
    model = small_model("yolov3-tiny", size=(64, 64), anchors=[[8, 8], [12, 12], [16, 16], [24, 24], [32, 32],
                                                              [48, 48]])
    box = [20.3, 10.6, 44.3, 34.6]
    target = [Target(boxes=torch.tensor([box]), labels=torch.tensor([1]))]
    raw = _perfect_raw(model, (64, 64), box, 1, 1, 0)
    # a second, confident prediction of the same box from the stride-16 level (not responsible for it)
    second = _perfect_raw(model, (64, 64), box, 1, 0, 2).maps[0]
    raw.maps[0] = second
    with_ignore = model.compute_loss(raw, target)
    model.loss_config = YoloLossConfig(ignore_thresh=1.0).validate()
    without_ignore = model.compute_loss(raw, target)
    assert with_ignore.terms["obj"] < 1e-3
    assert without_ignore.terms["obj"] > 0.1  # pushed towards 0 objectness: a confident false positive


def test_softmax_loss_for_yolov2_matches_cross_entropy():
    model = small_model("yolov2", size=(64, 64), anchors=[[20, 20]])
    box = [10.0, 12.0, 30.0, 32.0]
    raw = _perfect_raw(model, (64, 64), box, 0, 0, 0)
    slot = raw.maps[0][0, 0, 0, 0]
    slot[5:] = torch.tensor([1.0, 2.0, 0.5])
    loss = model.compute_loss(raw, [Target(boxes=torch.tensor([box]), labels=torch.tensor([2]))])
    expected = model.loss_config.cls_weight * float(
        torch.nn.functional.cross_entropy(slot[5:][None], torch.tensor([2])))
    assert loss.terms["cls"] == pytest.approx(expected, rel=1e-5)


def load_bccd_batch(ids, size):
    """Real BCCD images resized to ``size`` (H, W) as [B, 3, H, W] in [0, 1] and their targets."""
    cv2 = pytest.importorskip("cv2")
    h_in, w_in = size
    images, targets = [], []
    for image_id in ids:
        image = cv2.imread(str(BCCD / "JPEGImages" / f"{image_id}.jpg"))
        assert image is not None, image_id
        h, w = image.shape[:2]
        image = cv2.resize(image, (w_in, h_in), interpolation=cv2.INTER_AREA)[:, :, ::-1]
        images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0)
        boxes, labels = [], []
        for obj in ET.parse(BCCD / "Annotations" / f"{image_id}.xml").findall("object"):
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x2 <= x1 or y2 <= y1:
                continue
            boxes.append([x1 * w_in / w, y1 * h_in / h, x2 * w_in / w, y2 * h_in / h])
            labels.append(BCCD_CLASSES.index(obj.find("name").text.strip()))
        targets.append(Target(boxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.tensor(labels)))
    return torch.stack(images), targets


@pytest.mark.skipif(not (BCCD / "Annotations").is_dir(), reason=f"BCCD dataset not found at {BCCD}")
@pytest.mark.parametrize("arch", ["yolov2", "yolov3", "yolov3-tiny"])
def test_loss_decreases_when_overfitting_real_bccd_images(arch):
    torch.manual_seed(0)
    images, targets = load_bccd_batch(["BloodImage_00000", "BloodImage_00001", "BloodImage_00003"], (160, 160))
    model = small_model(arch, size=(160, 160)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(25):
        loss = model.compute_loss(model.forward_raw(images), targets)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        history.append(loss.terms)
    first, last = history[0], history[-1]
    assert set(first) >= {"box", "obj", "cls"}
    assert first["num_pos"] == sum(len(t.boxes) for t in targets)
    total = [t["box"] + t["obj"] + t["cls"] for t in history]
    assert all(math.isfinite(v) for v in total)
    assert total[-1] < 0.6 * total[0], total
    assert last["box"] < first["box"] and last["obj"] < first["obj"] and last["cls"] < first["cls"]


def test_multi_scale_training_step():
    model = small_model("yolov2", size=(128, 128)).train()
    target = Target(boxes=torch.tensor([[10.0, 20.0, 60.0, 70.0]]), labels=torch.tensor([1]))
    for size in (96, 160, 192):
        loss = model.compute_loss(model.forward_raw(torch.rand(1, 3, size, size)), [target])
        loss.total.backward()
        assert math.isfinite(float(loss.total.detach())) and loss.terms["num_pos"] == 1


# ------------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("arch", ["yolov2", "yolov3", "yolov3-tiny"])
def test_onnx_export_matches_torch_in_onnxruntime(arch):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = small_model(arch, size=(128, 160)).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.randn(1, 3, 128, 160),), buffer, opset_version=13, dynamo=False,
                          input_names=["images"], output_names=["boxes", "scores"],
                          dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    torch.manual_seed(3)
    x = torch.rand(2, 3, 128, 160)  # batch 2 through a graph traced at batch 1
    with torch.no_grad():
        ref_boxes, ref_scores = model(x)
    boxes, scores = sess.run(["boxes", "scores"], {"images": x.numpy()})
    assert boxes.shape == tuple(ref_boxes.shape) and scores.shape == tuple(ref_scores.shape)
    assert np.abs(boxes - ref_boxes.numpy()).max() <= 1e-4 * np.abs(ref_boxes.numpy()).max()
    assert np.abs(scores - ref_scores.numpy()).max() <= 1e-4 * max(np.abs(ref_scores.numpy()).max(), 1e-3)
