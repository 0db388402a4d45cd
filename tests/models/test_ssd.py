"""SSD and its parts: backbones, default boxes, box coding, head layout, decode, loss, ONNX export."""

from __future__ import annotations

import io
import json
import math
from typing import List, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.data.targets import Target  # noqa: E402
from edge.errors import ModelError  # noqa: E402
from edge.export.verify import MIN_INPUT_SPREAD, input_spread  # noqa: E402
from edge.models import build_model  # noqa: E402
from edge.models.anchors import AnchorLevel, grid_anchors, ssd_scales  # noqa: E402
from edge.models.backbones import BACKBONES, build_backbone  # noqa: E402
from edge.models.box_coding import BoxCoder  # noqa: E402
from edge.models.heads import flatten_predictions  # noqa: E402
from edge.models.ops import box_iou, cxcywh_to_xyxy  # noqa: E402
from edge.models.ssd import SSD, SSDRaw  # noqa: E402
from tests.models.bccd import load_bccd  # noqa: E402


def normalize(model, images: np.ndarray) -> torch.Tensor:
    nm = model.normalization
    x = (images / nm.scale - np.asarray(nm.mean)) / np.asarray(nm.std)
    return torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def overfit(model, images: torch.Tensor, targets: List[Target], iterations: int, lr: float) -> List[float]:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(iterations):
        loss = model.compute_loss(model.forward_raw(images), targets)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append(float(loss.total.detach()))
    return losses


def input_dependent(model, size: Tuple[int, int], seed: int = 0):
    """``model`` in eval mode with outputs that depend on its input, as ``make_model`` in
    tests/export/test_torch_export.py makes them: with PyTorch's default init and unit running statistics
    the activations shrink layer after layer and a random SSD's boxes and scores hardly move with the input
    (1e-5), so a 1e-4 parity check would pass on a graph that ignores the image. BatchNorm running statistics
    are recalibrated on seeded random images, variances floored at 0.01."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2 if bns else 0):
            model(torch.randn(2, 3, *size, generator=gen))
        for m in bns:
            m.running_var.clamp_(min=1e-2)
    return model.eval()


def export_and_compare(model, size: Tuple[int, int], seed: int = 0) -> None:
    """torch.onnx.export of forward() (dynamic batch), then ONNX Runtime vs torch at 1e-4 relative, on inputs
    the outputs demonstrably depend on."""
    ort = pytest.importorskip("onnxruntime")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.randn(2, 3, *size, generator=gen),), buf, opset_version=13,
                      input_names=["images"], output_names=["boxes", "scores"], dynamo=False,
                      dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, *size, generator=gen)  # another batch size than traced
    boxes, scores = session.run(["boxes", "scores"], {"images": x.numpy()})
    with torch.no_grad():
        tb, ts = model(x)
        tb2, ts2 = model(torch.randn(3, 3, *size, generator=gen))
    # the comparison is meaningful only if the outputs move with the input by far more than the tolerance
    spread = input_spread({"boxes": tb.numpy(), "scores": ts.numpy()}, {"boxes": tb2.numpy(), "scores": ts2.numpy()})
    assert spread["scores"] > MIN_INPUT_SPREAD, "scores hardly depend on the input"
    assert spread["boxes"] > 1e-2, "boxes hardly depend on the input"
    assert boxes.shape == tuple(tb.shape) and scores.shape == tuple(ts.shape)
    assert np.abs(boxes - tb.numpy()).max() <= 1e-4 * max(1.0, float(tb.abs().max()))
    assert np.abs(scores - ts.numpy()).max() <= 1e-4 * max(1e-3, float(ts.abs().max()))


# ------------------------------------------------------------------------------------------ backbones


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_shapes(name: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, width=0.25)
    x = torch.randn(2, 3, 96, 64)
    outs = net(x)
    assert len(outs) == len(net.out_channels) == len(net.strides)
    for out, channels, stride in zip(outs, net.out_channels, net.strides):
        assert tuple(out.shape) == (2, channels, math.ceil(96 / stride), math.ceil(64 / stride))


def test_backbone_width_and_errors() -> None:
    assert build_backbone("resnet50", width=1.0).out_channels == [512, 1024, 2048]
    assert build_backbone("resnet18", width=1.0).out_channels == [128, 256, 512]
    assert build_backbone("vgg16", width=1.0).out_channels == [512, 1024]
    assert build_backbone("mobilenet", width=0.5).out_channels == [128, 256, 512]
    with pytest.raises(ModelError, match="unknown backbone"):
        build_backbone("resnet101")
    with pytest.raises(ModelError, match="width"):
        build_backbone("resnet18", width=0.0)


# -------------------------------------------------------------------------------- anchors and coding


def test_ssd300_default_boxes_are_the_papers() -> None:
    model = SSD(num_classes=20, variant="ssd300", width=0.25)  # width does not change the layout
    assert [lv.feature_size for lv in model.anchor_levels] == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    assert [lv.anchors_per_location for lv in model.anchor_levels] == [4, 6, 6, 6, 4, 4]
    assert model.num_anchors == 8732
    first = model.anchor_levels[0].wh
    assert first[0] == pytest.approx((30.0, 30.0))  # 0.1 * 300
    assert first[1] == pytest.approx((math.sqrt(30 * 60),) * 2)
    assert first[2] == pytest.approx((30 * math.sqrt(2), 30 / math.sqrt(2)))
    last = model.anchors[-1]  # 1x1 map: centered, the 1/2 ratio box of scale 0.88
    assert last.tolist() == pytest.approx([150.0, 150.0, 264 / math.sqrt(2), 264 * math.sqrt(2)], rel=1e-5)


def test_ssd_scales_formula() -> None:
    assert ssd_scales(6) == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04])
    assert ssd_scales(6, 0.2, 0.88, first_scale=0.1) == pytest.approx([0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05])


def test_head_layout_matches_anchor_order() -> None:
    """Prediction row r of flatten_predictions belongs to anchor r of grid_anchors (map, y, x, anchor)."""
    level = AnchorLevel(feature_size=(3, 5), stride=(10.0, 8.0), wh=[(4.0, 4.0), (6.0, 2.0)])
    a, h, w = 2, 3, 5
    conv_out = torch.zeros(1, a * 4, h, w)
    for ai in range(a):
        for p in range(4):
            for y in range(h):
                for x in range(w):
                    conv_out[0, ai * 4 + p, y, x] = 1000 * ai + 100 * p + 10 * y + x
    rows = flatten_predictions(conv_out, 4)[0]
    anchors = grid_anchors([level])
    assert rows.shape == (h * w * a, 4) and anchors.shape == (h * w * a, 4)
    for r in range(h * w * a):
        ai, y, x = int(rows[r, 0] // 1000), int(rows[r, 0] % 100 // 10), int(rows[r, 0] % 10)
        assert rows[r].tolist() == [1000 * ai + 100 * p + 10 * y + x for p in range(4)]
        assert anchors[r].tolist() == [(x + 0.5) * 8.0, (y + 0.5) * 10.0, *level.wh[ai]]


@pytest.mark.parametrize("variances", [(0.1, 0.1, 0.2, 0.2), (1.0, 1.0, 1.0, 1.0)])
def test_box_coding_round_trip(variances: Tuple[float, ...]) -> None:
    torch.manual_seed(0)
    coder = BoxCoder(variances)
    anchors = torch.cat([torch.rand(50, 2) * 300, torch.rand(50, 2) * 80 + 5], dim=1)
    xy = torch.rand(2, 50, 2) * 250
    boxes = torch.cat([xy, xy + torch.rand(2, 50, 2) * 100 + 1], dim=-1)
    deltas = coder.encode(boxes, anchors)
    assert torch.allclose(coder.decode(deltas, anchors), boxes, atol=1e-3)
    # the box equal to its anchor encodes to zero offsets; variances scale the offsets
    assert coder.encode(cxcywh_to_xyxy(anchors), anchors).abs().max() < 1e-4
    shifted = anchors.clone()
    shifted[:, 0] += anchors[:, 2]  # one anchor width to the right: tx = 1 / v0
    assert torch.allclose(coder.encode(cxcywh_to_xyxy(shifted), anchors)[:, 0], torch.full((50,), 1 / variances[0]),
                          rtol=1e-4)
    assert BoxCoder.from_weights((10.0, 10.0, 5.0, 5.0)).variances == pytest.approx((0.1, 0.1, 0.2, 0.2))
    with pytest.raises(ModelError, match="variances"):
        BoxCoder((0.1, 0.1, 0.2))


# ----------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("kwargs,maps", [
    ({"variant": "mobile", "input_size": [160, 160]}, [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]),
    ({"variant": "ssd300", "width": 0.25}, [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]),
    ({"variant": "mobile", "backbone": "resnet18", "width": 0.25, "input_size": [128, 96]},
     [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1), (1, 1)]),
    ({"variant": "mobile", "backbone": "vgg16_bn", "width": 0.25, "input_size": [128, 128],
      "extras": [[32, 64, 2, 1], [32, 64, 2, 1]]}, [(16, 16), (8, 8), (4, 4), (2, 2)]),
])
def test_ssd_forward_shapes_and_anchor_counts(kwargs, maps) -> None:
    torch.manual_seed(0)
    model = build_model("ssd", num_classes=3, **kwargs).eval()
    assert [lv.feature_size for lv in model.anchor_levels] == maps
    x = torch.randn(2, 3, *model.input_size)
    with torch.no_grad():
        feats = model.features(x)
        assert [tuple(f.shape[-2:]) for f in feats] == maps
        # each map's head predicts exactly its default boxes: 4 offsets and C + 1 scores per box
        for f, level, box_conv, cls_conv in zip(feats, model.anchor_levels, model.head.box, model.head.cls):
            assert box_conv(f).shape[1:] == (level.anchors_per_location * 4, *level.feature_size)
            assert cls_conv(f).shape[1:] == (level.anchors_per_location * 4, *level.feature_size)  # C+1 = 4
        raw = model.forward_raw(x)
    n = sum(lv.num_anchors for lv in model.anchor_levels)
    assert model.num_anchors == n
    assert tuple(raw.deltas.shape) == (2, n, 4) and tuple(raw.logits.shape) == (2, n, 4)
    boxes, scores = model(x)
    assert tuple(boxes.shape) == (2, n, 4) and tuple(scores.shape) == (2, n, 3)


def test_ssd_decode_valid_boxes_and_scores() -> None:
    torch.manual_seed(0)
    model = build_model("ssd", num_classes=3, input_size=[128, 160]).eval()
    with torch.no_grad():
        raw = model.forward_raw(torch.randn(2, 3, 128, 160))
        raw = SSDRaw(deltas=raw.deltas * 50, logits=raw.logits)  # wild offsets must still give valid boxes
        det = model.decode(raw)
    b = det.boxes
    assert torch.isfinite(b).all()
    assert (b[..., 0] >= 0).all() and (b[..., 2] <= 160).all() and (b[..., 1] >= 0).all() and (b[..., 3] <= 128).all()
    assert (b[..., 2] >= b[..., 0]).all() and (b[..., 3] >= b[..., 1]).all()
    s = det.scores
    assert (s >= 0).all() and (s <= 1).all() and (s.sum(-1) < 1).all()  # softmax minus the background column
    # zero offsets decode to the default boxes themselves (clipped to the input)
    zero = model.decode(SSDRaw(deltas=torch.zeros(1, model.num_anchors, 4), logits=torch.zeros(1, model.num_anchors, 4)))
    ref = cxcywh_to_xyxy(model.anchors)
    ref = torch.stack([ref[:, 0].clamp(0, 160), ref[:, 1].clamp(0, 128), ref[:, 2].clamp(0, 160),
                       ref[:, 3].clamp(0, 128)], dim=-1)
    assert torch.allclose(zero.boxes[0], ref, atol=1e-4)
    assert torch.allclose(zero.scores, torch.full_like(zero.scores, 0.25))


def test_ssd_matching_forces_best_prior_and_counts_negatives() -> None:
    torch.manual_seed(0)
    model = build_model("ssd", num_classes=3, input_size=[128, 128])
    anchors_xyxy = cxcywh_to_xyxy(model.anchors)
    exact = anchors_xyxy[123].clone()
    tiny = torch.tensor([60.0, 60.0, 63.0, 63.0])  # IoU < 0.5 with every default box
    assert box_iou(tiny[None], anchors_xyxy).max() < 0.5
    targets = [Target(torch.stack([exact, tiny]), torch.tensor([2, 0]))]
    labels, offsets = model.match(targets)
    assert labels[0, 123] == 3  # class 2 + 1 (background is 0)
    assert offsets[0, 123].abs().max() < 1e-4
    assert (labels[0] == 1).sum() == 1  # the tiny box got exactly its best prior
    raw = SSDRaw(deltas=torch.zeros(1, model.num_anchors, 4, requires_grad=True),
                 logits=torch.randn(1, model.num_anchors, 4, requires_grad=True))
    loss = model.compute_loss(raw, targets)
    loss.total.backward()
    pos = int((labels[0] > 0).sum())
    # hard negative mining: gradient reaches exactly the positives and 3 negatives per positive
    touched = int((raw.logits.grad.abs().sum(-1) > 0).sum())
    assert touched == 4 * pos
    assert set(loss.terms) == {"cls", "box"} and loss.terms["box"] > 0
    # an image without objects has no positives, hence no mined negatives: it adds nothing to the loss
    empty = Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    labels, _ = model.match([empty])
    assert (labels == 0).all()
    both = SSDRaw(deltas=torch.zeros(2, model.num_anchors, 4), logits=torch.cat([raw.logits.detach()] * 2))
    assert model.compute_loss(both, [targets[0], empty]).terms == pytest.approx(loss.terms)


def test_ssd_config_round_trip_and_resolution_change() -> None:
    torch.manual_seed(0)
    model = build_model("ssd", num_classes=3, input_size=[128, 128])
    config = json.loads(json.dumps(model.config))
    assert config["normalization"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    same = build_model("ssd", **config)
    assert torch.equal(same.anchors, model.anchors)
    assert same.config == model.config
    # export may rebuild for another resolution: the state dict loads strictly, anchors follow the size
    config["input_size"] = [192, 160]
    bigger = build_model("ssd", **config)
    bigger.load_state_dict(model.state_dict(), strict=True)
    assert bigger.num_anchors > model.num_anchors
    assert "anchors" not in model.state_dict()
    card = json.loads(json.dumps(model.anchors_for_card()))
    assert sum(lv["feature_size"][0] * lv["feature_size"][1] * len(lv["wh"]) for lv in card) == model.num_anchors
    assert card[0]["variances"] == [0.1, 0.1, 0.2, 0.2]


def test_ssd_bad_configs() -> None:
    torch.manual_seed(0)
    with pytest.raises(ModelError, match="unknown SSD variant"):
        build_model("ssd", num_classes=3, variant="ssd512")
    with pytest.raises(ModelError, match="unknown --model-arg anchors for ssd; options: variant, "):
        build_model("ssd", num_classes=3, anchors=[1, 2])
    with pytest.raises(ModelError, match="cannot run|empty map"):
        build_model("ssd", num_classes=3, variant="ssd300", width=0.25, input_size=[96, 96])
    with pytest.raises(ModelError, match="scales"):
        build_model("ssd", num_classes=3, scales=[0.1, 0.2])
    model = build_model("ssd", num_classes=3, input_size=[64, 64])
    raw = model.forward_raw(torch.randn(2, 3, 64, 64))
    with pytest.raises(ModelError, match="class indices"):
        model.compute_loss(raw, [Target(torch.tensor([[1.0, 1.0, 20.0, 20.0]]), torch.tensor([3]))] * 2)


def test_ssd_loss_decreases_on_bccd() -> None:
    torch.manual_seed(0)
    model = build_model("ssd", num_classes=3, variant="mobile", input_size=[128, 128])
    images, targets = load_bccd(2, model.input_size)
    losses = overfit(model, normalize(model, images), targets, iterations=20, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.4 * losses[0], losses


def test_ssd_onnx_export_matches_torch() -> None:
    torch.manual_seed(0)
    model = input_dependent(build_model("ssd", num_classes=3, variant="mobile", input_size=[96, 128]), (96, 128))
    export_and_compare(model, (96, 128))


def test_ssd_refuses_images_of_another_size() -> None:
    torch.manual_seed(0)
    model = build_model("ssd", num_classes=3, input_size=[64, 64])
    with pytest.raises(ModelError, match="built for input 64x64"):
        model.forward_raw(torch.randn(2, 3, 64, 96))
