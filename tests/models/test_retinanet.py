"""RetinaNet and its parts: ResNet + FPN, anchors (3 scales x 3 ratios on P3-P7), shared subnets with the
prior-probability bias, focal loss normalized by positives, decode, ONNX export, overfitting real BCCD images."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.data.targets import Target  # noqa: E402
from edge.errors import ModelError  # noqa: E402
from edge.models import build_model  # noqa: E402
from edge.models.anchors import retinanet_anchor_levels  # noqa: E402
from edge.models.backbones import build_backbone  # noqa: E402
from edge.models.fpn import FPN  # noqa: E402
from edge.models.heads import RetinaNetHead, prior_bias  # noqa: E402
from edge.models.losses import sigmoid_focal_loss  # noqa: E402
from edge.models.retinanet import RetinaNet, RetinaNetRaw  # noqa: E402
from tests.models.bccd import load_bccd  # noqa: E402


def normalize(model, images: np.ndarray) -> torch.Tensor:
    nm = model.normalization
    x = (images / nm.scale - np.asarray(nm.mean)) / np.asarray(nm.std)
    return torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------ FPN


@pytest.mark.parametrize("num_levels,p6_from", [(5, "c5"), (5, "p5"), (3, "c5")])
def test_fpn_levels_on_odd_sizes(num_levels: int, p6_from: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", width=0.25)
    fpn = FPN(backbone.out_channels, 32, num_levels=num_levels, p6_from=p6_from)
    x = torch.randn(1, 3, 100, 76)  # odd map sizes: the top-down path upsamples to the lateral's exact size
    outs = fpn(backbone(x))
    assert len(outs) == num_levels == len(fpn.strides)
    sizes = [(13, 10), (7, 5), (4, 3), (2, 2), (1, 1)][:num_levels]
    assert [tuple(o.shape) for o in outs] == [(1, 32, h, w) for h, w in sizes]
    with pytest.raises(ModelError, match="num_levels"):
        FPN(backbone.out_channels, 32, num_levels=6)


# -------------------------------------------------------------------------------------------- anchors


def test_retinanet_anchor_sizes_scales_ratios() -> None:
    levels = retinanet_anchor_levels((512, 512), [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)])
    assert [lv.anchors_per_location for lv in levels] == [9] * 5
    assert [lv.stride for lv in levels] == [(8.0, 8.0), (16.0, 16.0), (32.0, 32.0), (64.0, 64.0), (128.0, 128.0)]
    for base, lv in zip((32, 64, 128, 256, 512), levels):
        areas = sorted(round(w * h, 3) for w, h in lv.wh)
        want = sorted(round((base * 2 ** (k / 3)) ** 2, 3) for k in range(3) for _ in range(3))
        assert areas == pytest.approx(want, rel=1e-6)
        assert sorted(round(h / w, 6) for w, h in lv.wh) == pytest.approx([0.5] * 3 + [1.0] * 3 + [2.0] * 3)
    with pytest.raises(ModelError, match="one anchor size per pyramid level"):
        retinanet_anchor_levels((512, 512), [(64, 64)], sizes=(32, 64))


# ------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("kwargs", [
    {"variant": "small", "input_size": [128, 160]},
    {"variant": "r50-fpn", "input_size": [128, 128]},
    {"variant": "small", "backbone": "resnet34", "width": 0.25, "input_size": [96, 96]},
    {"variant": "small", "backbone": "mobilenet", "width": 0.25, "num_levels": 3, "anchor_sizes": [16, 32, 64],
     "input_size": [64, 96]},
])
def test_retinanet_forward_shapes_and_anchor_counts(kwargs) -> None:
    torch.manual_seed(0)
    model = build_model("retinanet", num_classes=3, **kwargs).eval()
    h, w = model.input_size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        feats = model.features(x)
        assert len(feats) == len(model.anchor_levels) == model.cfg.num_levels
        for k, (f, level) in enumerate(zip(feats, model.anchor_levels)):
            stride = 8 * 2**k
            assert tuple(f.shape) == (2, model.cfg.fpn_channels, *level.feature_size)
            assert level.feature_size == (math.ceil(h / stride), math.ceil(w / stride))
            # the shared subnets predict 9 anchors x (4 offsets, C scores) at every location of every level
            assert model.head.box_pred(model.head.box_subnet(f)).shape[1] == 9 * 4
            assert model.head.cls_pred(model.head.cls_subnet(f)).shape[1] == 9 * 3
        raw = model.forward_raw(x)
    n = sum(lv.num_anchors for lv in model.anchor_levels)
    assert model.num_anchors == n
    assert tuple(raw.deltas.shape) == (2, n, 4) and tuple(raw.logits.shape) == (2, n, 3)
    boxes, scores = model(x)
    assert tuple(boxes.shape) == (2, n, 4) and tuple(scores.shape) == (2, n, 3)


def test_r50_fpn_is_the_papers_layout() -> None:
    model = RetinaNet(num_classes=80, variant="r50-fpn")
    assert model.features.backbone.out_channels == [512, 1024, 2048]
    assert model.cfg.fpn_channels == 256 and model.cfg.head_depth == 4 and model.cfg.head_norm is None
    assert len([m for m in model.head.cls_subnet if isinstance(m, torch.nn.Conv2d)]) == 4
    assert [lv.feature_size for lv in model.anchor_levels] == [(80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    assert model.num_anchors == 9 * (80 * 80 + 40 * 40 + 20 * 20 + 10 * 10 + 5 * 5)
    n_params = sum(p.numel() for p in model.parameters())
    assert 35e6 < n_params < 40e6  # ResNet50 23.5M + FPN (P6 from C5) + 4-conv subnets with 80 classes


@pytest.mark.parametrize("variant", ["small", "r50-fpn"])
def test_prior_bias_gives_initial_scores_near_pi(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model("retinanet", num_classes=3, variant=variant, input_size=[96, 96]).eval()
    assert model.head.cls_pred.bias.detach().tolist() == pytest.approx([-math.log(99.0)] * 27)
    assert prior_bias(0.01) == pytest.approx(-math.log((1 - 0.01) / 0.01))
    images, _ = load_bccd(1, model.input_size)
    with torch.no_grad():
        _, scores = model(normalize(model, images))
    assert float(scores.mean()) == pytest.approx(0.01, abs=1e-3)
    assert float(scores.min()) > 0.005 and float(scores.max()) < 0.02
    head = RetinaNetHead(16, 9, 2, depth=1, prior=0.2)
    assert torch.sigmoid(head.cls_pred.bias).tolist() == pytest.approx([0.2] * 18)


def test_retinanet_decode_inverts_matching_targets() -> None:
    """Offsets encoded from matched ground truth decode back to the ground-truth boxes (anchors, coder and
    decode agree), and decode always gives valid boxes inside the input."""
    model = build_model("retinanet", num_classes=3, input_size=[128, 160])
    gt = torch.tensor([[10.0, 12.0, 40.0, 50.0], [60.0, 30.0, 130.0, 100.0], [100.0, 90.0, 118.0, 110.0]])
    targets = [Target(gt, torch.tensor([0, 1, 2]))]
    labels, matched = model.match(targets)
    pos = labels[0] >= 0
    assert set(labels[0][pos].tolist()) == {0, 1, 2}  # every object has anchors
    deltas = model.box_coder.encode(matched, model.anchors)
    det = model.decode(RetinaNetRaw(deltas=deltas, logits=torch.zeros(1, model.num_anchors, 3)))
    assert torch.allclose(det.boxes[0][pos], matched[0][pos], atol=1e-3)
    assert torch.allclose(det.scores, torch.full_like(det.scores, 0.5))
    torch.manual_seed(0)
    wild = model.decode(RetinaNetRaw(deltas=torch.randn(2, model.num_anchors, 4) * 20,
                                     logits=torch.randn(2, model.num_anchors, 3) * 20))
    b = wild.boxes
    assert torch.isfinite(b).all() and (b >= 0).all()
    assert (b[..., 0::2] <= 160).all() and (b[..., 1::2] <= 128).all()
    assert (b[..., 2] >= b[..., 0]).all() and (b[..., 3] >= b[..., 1]).all()
    assert ((wild.scores >= 0) & (wild.scores <= 1)).all()


def test_retinanet_loss_is_focal_over_non_ignored_divided_by_positives() -> None:
    torch.manual_seed(0)
    model = build_model("retinanet", num_classes=3, input_size=[128, 128])
    targets = [Target(torch.tensor([[20.0, 20.0, 60.0, 70.0], [70.0, 64.0, 90.0, 84.0]]), torch.tensor([1, 2])),
               Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))]
    raw = RetinaNetRaw(deltas=torch.randn(2, model.num_anchors, 4), logits=torch.randn(2, model.num_anchors, 3))
    labels, _ = model.match(targets)
    n_pos = int((labels >= 0).sum())
    n_ignored = int((labels == -2).sum())
    assert n_pos > 0 and n_ignored > 0 and (labels[1] == -1).all()
    # by hand: one-hot targets on positives, zeros on negatives, ignored anchors left out,
    # FL = -alpha_t (1 - p_t)^2 log(p_t) summed and divided by the number of positive anchors
    onehot = torch.zeros(2, model.num_anchors, 3, dtype=torch.float64)
    for b, i in torch.nonzero(labels >= 0).tolist():
        onehot[b, i, labels[b, i]] = 1.0
    p = torch.sigmoid(raw.logits.double())
    p_t = torch.where(onehot > 0, p, 1 - p)
    alpha_t = torch.where(onehot > 0, torch.tensor(0.25, dtype=torch.float64), torch.tensor(0.75, dtype=torch.float64))
    fl = -alpha_t * (1 - p_t) ** 2 * torch.log(p_t)
    total = float(fl[labels >= -1].sum())
    assert float(fl[labels == -2].sum()) > 0  # leaving the ignored anchors out matters
    loss = model.compute_loss(raw, targets)
    assert loss.terms["cls"] == pytest.approx(total / n_pos, rel=1e-5)
    assert float(sigmoid_focal_loss(raw.logits, onehot.float()).sum()) == pytest.approx(float(fl.sum()), rel=1e-5)
    assert set(loss.terms) == {"cls", "box"} and loss.terms["box"] > 0
    assert float(loss.total) == pytest.approx(loss.terms["cls"] + loss.terms["box"], rel=1e-5)
    for box_loss in ("l1", "giou"):
        other = build_model("retinanet", num_classes=3, input_size=[128, 128], box_loss=box_loss)
        assert math.isfinite(other.compute_loss(raw, targets).terms["box"])
    # an empty batch has no positives: the loss is the (finite) focal loss of the negatives alone
    empty = model.compute_loss(raw, [targets[1], targets[1]])
    assert empty.terms["box"] == 0.0 and math.isfinite(empty.terms["cls"])


def test_retinanet_config_round_trip_and_errors() -> None:
    torch.manual_seed(0)
    model = build_model("retinanet", num_classes=3, input_size=[96, 96])
    config = json.loads(json.dumps(model.config))
    same = build_model("retinanet", **config)
    assert same.config == model.config and torch.equal(same.anchors, model.anchors)
    config["input_size"] = [128, 160]
    other = build_model("retinanet", **config)
    other.load_state_dict(model.state_dict(), strict=True)
    assert other.num_anchors > model.num_anchors
    card = json.loads(json.dumps(model.anchors_for_card()))
    assert [lv["level"] for lv in card] == [3, 4, 5, 6, 7]
    assert sum(lv["feature_size"][0] * lv["feature_size"][1] * len(lv["wh"]) for lv in card) == model.num_anchors
    with pytest.raises(ModelError, match="not supported"):
        build_model("retinanet", num_classes=3, backbone="vgg16")
    with pytest.raises(ModelError, match="anchor_sizes"):
        build_model("retinanet", num_classes=3, num_levels=4)
    with pytest.raises(ModelError, match="IoU thresholds"):
        build_model("retinanet", num_classes=3, pos_iou=0.4, neg_iou=0.5)
    with pytest.raises(ModelError, match="box_loss"):
        build_model("retinanet", num_classes=3, box_loss="iou")


def test_retinanet_loss_decreases_on_bccd() -> None:
    torch.manual_seed(0)
    model = build_model("retinanet", num_classes=3, variant="small", input_size=[128, 128]).train()
    images, targets = load_bccd(2, model.input_size)
    x = normalize(model, images)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = model.compute_loss(model.forward_raw(x), targets)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append(float(loss.total.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses


def test_retinanet_onnx_export_matches_torch() -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model("retinanet", num_classes=3, variant="small", input_size=[96, 128]).eval()
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.randn(2, 3, 96, 128),), buf, opset_version=13, input_names=["images"],
                      output_names=["boxes", "scores"], dynamo=False,
                      dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 96, 128)
    boxes, scores = session.run(["boxes", "scores"], {"images": x.numpy()})
    with torch.no_grad():
        tb, ts = model(x)
    assert boxes.shape == (3, model.num_anchors, 4) and scores.shape == (3, model.num_anchors, 3)
    assert np.abs(boxes - tb.numpy()).max() <= 1e-4 * float(tb.abs().max())
    assert np.abs(scores - ts.numpy()).max() <= 1e-4 * float(ts.abs().max())
