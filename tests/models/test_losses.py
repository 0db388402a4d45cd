"""Loss functions and anchor matching of edge.models (focal loss, hard negative mining, smooth L1, GIoU)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from edge.errors import ModelError  # noqa: E402
from edge.models.anchors import IGNORE, POSITIVE_NONE, match_anchors  # noqa: E402
from edge.models.losses import giou_loss, hard_negative_mask, sigmoid_focal_loss, smooth_l1  # noqa: E402


def _focal_by_hand(logit: float, target: int, alpha: float, gamma: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    p_t = p if target == 1 else 1.0 - p
    alpha_t = alpha if target == 1 else 1.0 - alpha
    return -alpha_t * (1.0 - p_t) ** gamma * math.log(p_t)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)])
def test_focal_loss_matches_formula(alpha: float, gamma: float) -> None:
    logits = [2.0, -1.0, 0.5, -3.0, 0.0, 4.0]
    targets = [1, 0, 1, 1, 0, 0]
    got = sigmoid_focal_loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64),
                             alpha=alpha, gamma=gamma)
    want = [_focal_by_hand(z, t, alpha, gamma) for z, t in zip(logits, targets)]
    assert got.tolist() == pytest.approx(want, rel=1e-12)


def test_focal_loss_defaults_and_focusing() -> None:
    logits = torch.tensor([3.0, 3.0], dtype=torch.float64)
    targets = torch.tensor([1.0, 0.0], dtype=torch.float64)
    got = sigmoid_focal_loss(logits, targets)  # defaults alpha 0.25, gamma 2
    assert got.tolist() == pytest.approx([_focal_by_hand(3.0, 1, 0.25, 2.0), _focal_by_hand(3.0, 0, 0.25, 2.0)])
    # an easy example (p_t = 0.95) is down-weighted by (1 - p_t)^2 = 0.0025 against plain cross-entropy
    z = math.log(0.95 / 0.05)
    ce = -math.log(0.95)
    fl = sigmoid_focal_loss(torch.tensor([z], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                            alpha=-1, gamma=2.0)
    assert fl.item() == pytest.approx(ce * 0.05**2, rel=1e-9)
    # gamma 0 without alpha is binary cross-entropy; extreme logits stay finite
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert torch.allclose(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0), bce)
    extreme = sigmoid_focal_loss(torch.tensor([100.0, -100.0]), torch.tensor([0.0, 1.0]))
    assert torch.isfinite(extreme).all() and (extreme > 10).all()


def test_hard_negative_mining_ratio_exact() -> None:
    torch.manual_seed(0)
    n = 20
    conf = torch.zeros(3, n)
    positive = torch.zeros(3, n, dtype=torch.bool)
    # image 0: 2 positives, 18 negatives with distinct losses: the 6 hardest negatives are chosen
    conf[0] = torch.arange(n, dtype=torch.float32).flip(0)  # loss 19 at index 0 ... 0 at index 19
    positive[0, [0, 3]] = True  # the two highest-loss anchors are positives, not negatives
    # image 1: 5 positives but only 4 negatives eligible -> all 4 chosen (fewer than 15)
    conf[1] = torch.rand(n)
    positive[1, :5] = True
    eligible = torch.ones(3, n, dtype=torch.bool)
    eligible[1, 9:] = False
    # image 2: no positives -> no negatives at all
    conf[2] = torch.rand(n)
    neg = hard_negative_mask(conf, positive, neg_pos_ratio=3.0, eligible=eligible)
    assert neg[0].nonzero().flatten().tolist() == [1, 2, 4, 5, 6, 7]
    assert neg[1].nonzero().flatten().tolist() == [5, 6, 7, 8]
    assert int(neg[2].sum()) == 0
    assert not (neg & positive).any()
    for b in range(3):
        assert int(neg[b].sum()) <= 3 * int(positive[b].sum())


def test_hard_negative_mining_other_ratio_and_shape_check() -> None:
    conf = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.6]])
    positive = torch.tensor([[True, False, False, False, False, False, False]])
    assert hard_negative_mask(conf, positive, neg_pos_ratio=2).nonzero()[:, 1].tolist() == [1, 3]
    assert hard_negative_mask(conf, positive, neg_pos_ratio=0).sum() == 0
    with pytest.raises(ModelError, match="same shape"):
        hard_negative_mask(conf[0], positive[0])


def test_smooth_l1_values() -> None:
    pred = torch.tensor([0.0, 0.5, 2.0, -3.0])
    target = torch.zeros(4)
    assert smooth_l1(pred, target, beta=1.0).tolist() == pytest.approx([0.0, 0.125, 1.5, 2.5])
    assert smooth_l1(pred, target, beta=0.0).tolist() == pytest.approx([0.0, 0.5, 2.0, 3.0])
    assert smooth_l1(pred, target, beta=0.11).tolist() == pytest.approx([0.0, 0.445, 1.945, 2.945])


def test_giou_loss_values() -> None:
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
    got = giou_loss(a, b)
    # identical: 0; overlap 1 / union 7, hull 9: 1 - (1/7 - 2/9); disjoint: iou 0, hull 3, union 2: 1 + 1/3
    assert got.tolist() == pytest.approx([0.0, 1 - (1 / 7 - 2 / 9), 4 / 3], rel=1e-5, abs=1e-6)
    pred = b.clone().requires_grad_(True)
    giou_loss(a, pred).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[2].abs().sum() > 0  # disjoint boxes still get a gradient


def test_match_anchors_thresholds_ignore_band_and_forced_best() -> None:
    # 2 ground-truth boxes x 6 anchors
    iou = torch.tensor([
        [0.70, 0.45, 0.30, 0.10, 0.00, 0.00],
        [0.20, 0.50, 0.39, 0.40, 0.00, 0.35],
    ])
    retina = match_anchors(iou, pos_threshold=0.5, neg_threshold=0.4, force_best=False)
    assert retina.tolist() == [0, 1, POSITIVE_NONE, IGNORE, POSITIVE_NONE, POSITIVE_NONE]
    ssd = match_anchors(iou, pos_threshold=0.5, force_best=False)
    assert ssd.tolist() == [0, 1, -1, -1, -1, -1]
    # a box whose best anchor is below threshold still gets that anchor when forced
    low = torch.tensor([[0.30, 0.20, 0.00], [0.00, 0.10, 0.25]])
    assert match_anchors(low, pos_threshold=0.5, force_best=False).tolist() == [-1, -1, -1]
    assert match_anchors(low, pos_threshold=0.5, force_best=True).tolist() == [0, -1, 1]
    assert match_anchors(low, pos_threshold=0.5, neg_threshold=0.15, force_best=True).tolist() == [0, IGNORE, 1]
    # no ground truth: everything is background
    assert match_anchors(torch.zeros(0, 4), pos_threshold=0.5).tolist() == [-1] * 4
    with pytest.raises(ModelError, match="must not exceed"):
        match_anchors(iou, pos_threshold=0.4, neg_threshold=0.5)
