"""Training parts on their own: LR schedule, EMA, history CSV/PNG, progress, config, sampler, predictor."""

from __future__ import annotations

import io
import logging
import math
from typing import Any, List

import numpy as np
import pytest
import torch
from torch import nn

from edge.data.torch_dataset import EpochBatchSampler
from edge.errors import EdgeError
from edge.models.base import Detections, Detector, Normalization
from edge.train.config import TrainConfig
from edge.train.ema import ModelEMA
from edge.train.history import History
from edge.train.predict import TorchPredictor, normalize_batch
from edge.train.progress import Progress, format_duration
from edge.train.schedule import LRSchedule

# ---------------------------------------------------------------------------------------------------
# schedule


def test_warmup_values_are_linear_from_start_factor():
    s = LRSchedule(base_lr=0.1, total_iters=100, warmup_iters=10, warmup_start_factor=0.01)
    expected = [0.1 * (0.01 + 0.99 * i / 10) for i in range(10)]
    assert [s.lr(i) for i in range(10)] == pytest.approx(expected, rel=1e-12)
    assert s.lr(0) == pytest.approx(0.001)
    assert s.lr(5) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))
    assert s.lr(10) == pytest.approx(0.1)  # warm-up ends at the peak


def test_cosine_reaches_final_factor_and_is_monotonic():
    s = LRSchedule(base_lr=1.0, total_iters=50, warmup_iters=5, kind="cosine", final_factor=0.05)
    lrs = [s.lr(i) for i in range(5, 51)]
    assert lrs[0] == pytest.approx(1.0)
    assert s.lr(50) == pytest.approx(0.05)
    mid = 5 + (50 - 5) / 2
    assert s.lr(int(mid)) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 5) / 45)))
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_step_schedule_milestones():
    s = LRSchedule(base_lr=1.0, total_iters=100, warmup_iters=0, kind="step", milestones=[0.5, 0.8], gamma=0.1)
    assert s.lr(49) == 1.0
    assert s.lr(50) == pytest.approx(0.1)
    assert s.lr(80) == pytest.approx(0.01)


def test_schedule_apply_sets_param_groups_and_state_round_trips():
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}], lr=1.0)
    s = LRSchedule(base_lr=0.2, total_iters=10, warmup_iters=4, warmup_start_factor=0.25)
    for _ in range(3):
        s.step()
    lr = s.apply(opt)
    assert lr == pytest.approx(0.2 * (0.25 + 0.75 * 3 / 4))
    assert opt.param_groups[0]["lr"] == pytest.approx(lr)
    assert opt.param_groups[1]["lr"] == pytest.approx(lr * 0.5)
    t = LRSchedule(base_lr=0.2, total_iters=10, warmup_iters=4, warmup_start_factor=0.25)
    t.load_state_dict(s.state_dict())
    assert t.iteration == 3 and t.lr(t.iteration) == s.lr(s.iteration)


# ---------------------------------------------------------------------------------------------------
# EMA


def test_ema_update_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    e0 = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(3.0)
        model[1].num_batches_tracked.add_(7)
    d = ema.update(model)
    assert d == pytest.approx(0.9 * (1 - math.exp(-1 / 2.0)))
    src = model.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, d * e0[k] + (1 - d) * src[k])
        else:
            assert torch.equal(v, src[k])  # integer buffers are copied
    d2 = ema.update(model)
    assert d2 == pytest.approx(0.9 * (1 - math.exp(-2 / 2.0)))
    assert ema.updates == 2
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_state_dict_round_trip():
    model = nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.99, tau=10)
    ema.update(model)
    other = ModelEMA(nn.Linear(2, 2), decay=0.99, tau=10)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    for a, b in zip(other.module.parameters(), ema.module.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------
# history, progress


def test_history_csv_and_png(tmp_path):
    h = History()
    h.add({"epoch": 1, "lr": 0.001, "loss": 3.5, "loss_cls": 2.0, "loss_box": 1.5})
    h.add({"epoch": 2, "lr": 0.0005, "loss": 2.5, "loss_cls": 1.5, "loss_box": 1.0, "map50": 0.25, "map50_95": 0.1})
    h.add({"epoch": 2, "lr": 0.0005, "loss": 2.4, "loss_cls": 1.4, "loss_box": 1.0, "map50": 0.3, "map50_95": 0.12})
    csv_path = h.write_csv(tmp_path / "history.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "epoch,lr,loss,loss_cls,loss_box,map50,map50_95"
    assert lines[1] == "1,0.001,3.5,2,1.5,,"
    assert lines[2] == "2,0.0005,2.4,1.4,1,0.3,0.12"  # the re-added epoch replaced the first
    back = History.read_csv(csv_path)
    assert back.rows[1]["map50"] == pytest.approx(0.3) and "map50" not in back.rows[0]
    png = h.plot(tmp_path / "history.png", title="t")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] == 1100 and img.shape[0] == 400


def test_progress_logs_when_not_a_tty(caplog):
    stream = io.StringIO()
    bar = Progress(3, "epoch 1/1", stream=stream, tty=False, log_interval=0.0)
    with caplog.at_level(logging.INFO, logger="edge.train.progress"):
        bar.update({"loss": 2.0, "cls": 1.0})
        bar.update({"loss": 1.0, "cls": 0.5})
        bar.update({"loss": 0.0, "cls": 0.0})
        means = bar.close()
    assert stream.getvalue() == ""  # nothing written to the stream: logging only
    assert means == {"loss": 1.0, "cls": 0.5}
    last = caplog.records[-1].getMessage()
    assert "3/3" in last and "loss 1.0000" in last and "ETA" in last


def test_progress_redraws_one_line_on_a_tty():
    stream = io.StringIO()
    bar = Progress(2, "ep", stream=stream, tty=True)
    bar.update({"loss": 1.0})
    bar.update({"loss": 3.0})
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "2/2" in text and "loss 2.0000" in text


def test_format_duration():
    assert format_duration(59) == "0:59"
    assert format_duration(3723) == "1:02:03"


# ---------------------------------------------------------------------------------------------------
# config


def test_train_config_validation_messages():
    TrainConfig(model="ssd", data="d.yaml").validate()
    with pytest.raises(EdgeError, match="model"):
        TrainConfig(model="yolov9", data="d.yaml").validate()
    with pytest.raises(EdgeError, match="multiple of 32"):
        TrainConfig(model="yolov3", data="d.yaml", imgsz=300).validate()
    with pytest.raises(EdgeError, match="device"):
        TrainConfig(model="ssd", data="d.yaml", device="tpu").validate()
    cfg = TrainConfig(model="yolov2", data="d.yaml", imgsz=256, model_args={"width": 0.5})
    assert cfg.use_multiscale and cfg.augment_preset == "light" and cfg.peak_lr == 0.001
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------------------------------
# sampler


def test_epoch_batch_sampler_splits_ranks_and_sizes():
    def batches(rank: int, epoch: int) -> List[Any]:
        s = EpochBatchSampler(10, 2, sizes=[64, 96, 128], size_interval=2, seed=3, rank=rank, world_size=2)
        s.set_epoch(epoch)
        return list(s)

    r0, r1 = batches(0, 0), batches(1, 0)
    assert len(r0) == len(r1) == 2  # 5 samples per rank, batch 2, last incomplete dropped
    idx0 = {k[0] for b in r0 for k in b}
    idx1 = {k[0] for b in r1 for k in b}
    assert not idx0 & idx1
    # same input size for the same step on every rank, constant within a batch
    assert [b[0][2] for b in r0] == [b[0][2] for b in r1]
    assert all(len({k[2] for k in b}) == 1 for b in r0)
    assert all(k[1] == 0 for b in r0 for k in b)
    assert batches(0, 0) == r0  # deterministic
    assert batches(0, 1) != r0  # reshuffled per epoch


# ---------------------------------------------------------------------------------------------------
# predictor: a detector whose output is known maps back through the letterbox exactly


class _FixedDetector(Detector):
    """Returns two known boxes (input pixels) with known scores for every image; one conv so it is a
    real module with parameters."""

    arch = "fixed"

    def __init__(self, boxes, scores):
        super().__init__(num_classes=len(scores[0]), input_size=(128, 128), normalization=Normalization())
        self.conv = nn.Conv2d(3, 1, 1)
        self.register_buffer("boxes", torch.tensor(boxes, dtype=torch.float32))
        self.register_buffer("scores", torch.tensor(scores, dtype=torch.float32))
        self.seen: List[torch.Tensor] = []

    def forward_raw(self, images):
        self.seen.append(images.detach().clone())
        return images.shape[0]

    def decode(self, raw):
        b = raw
        return Detections(self.boxes.expand(b, -1, -1), self.scores.expand(b, -1, -1))


def test_torch_predictor_maps_to_source_pixels_and_runs_nms():
    # input 128x128; a 640x480 source letterboxes at scale 0.2 with 16 px of padding top and bottom
    boxes = [[20.0, 36.0, 60.0, 76.0], [21.0, 37.0, 61.0, 77.0], [100.0, 20.0, 120.0, 30.0]]
    scores = [[0.9, 0.1], [0.8, 0.05], [0.02, 0.7]]
    det = _FixedDetector(boxes, scores)
    predictor = TorchPredictor(det, score_threshold=0.3, iou_threshold=0.5, max_detections=10)
    image = np.full((480, 640, 3), 7, np.uint8)
    image[:, :, 2] = 200  # red in BGR
    out_boxes, out_scores, out_classes = predictor(image)
    # box 1 suppressed by box 0 (same class, IoU ~0.9); box 2 kept as class 1; class-1 score 0.1 below thr
    np.testing.assert_allclose(out_scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(out_classes, [0, 1])
    np.testing.assert_allclose(out_boxes[0], [100, 100, 300, 300], atol=1e-3)  # (b - pad) / 0.2
    np.testing.assert_allclose(out_boxes[1], [500, 20, 600, 70], atol=1e-3)  # y1 20 -> (20-16)/0.2
    # the network saw RGB in [0, 1] (Normalization() = pixels / 255): channel 0 is red
    x = det.seen[-1]
    assert x.shape == (1, 3, 128, 128)
    assert float(x[0, 0, 64, 64]) == pytest.approx(200 / 255, abs=1e-6)
    assert float(x[0, 2, 64, 64]) == pytest.approx(7 / 255, abs=1e-6)
    assert float(x[0, 0, 2, 64]) == pytest.approx(114 / 255, abs=1e-6)  # letterbox padding row


def test_normalize_batch():
    imgs = torch.tensor([[[[0, 255]], [[51, 102]], [[255, 0]]]], dtype=torch.uint8)
    norm = Normalization(scale=255.0, mean=(0.5, 0.2, 0.0), std=(0.5, 0.2, 1.0))
    out = normalize_batch(imgs, norm)
    torch.testing.assert_close(out, torch.tensor([[[[-1.0, 1.0]], [[0.0, 1.0]], [[1.0, 0.0]]]]))


# ---------------------------------------------------------------------------------------------------
# precise BatchNorm


def test_recompute_batchnorm_gives_the_plain_mean_of_the_batches():
    from edge.train.validate import recompute_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=0.03), nn.Conv2d(3, 2, 1))
    model.eval()
    batches = [torch.randn(4, 3, 5, 5) * 3 + 2, torch.randn(4, 3, 5, 5) - 1]
    seen = recompute_batchnorm(model, batches, forward=model)
    bn = model[0]
    expected_mean = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    expected_var = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    assert seen == 8
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert bn.momentum == 0.03 and not model.training  # settings restored
    assert recompute_batchnorm(nn.Conv2d(1, 1, 1), batches, forward=lambda x: x) == 0


def test_history_plot_names_its_split_and_counts_whole_epochs():
    """The mAP panel says which split its figures come from (the run's validation split, whatever its
    name), and both epoch axes tick at whole epochs only (a 3-epoch run has no epoch 1.5)."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    h = History()
    for e in (1, 2, 3):
        h.add({"epoch": e, "loss": 3.0 - e / 2, "map50": 0.1 * e, "map50_95": 0.05 * e})
    fig = h.figure("t", split="test")
    try:
        ax_loss, ax_map = fig.axes
        assert [t.get_text() for t in ax_map.get_legend().get_texts()] == ["val mAP50 (split: test)",
                                                                          "val mAP50-95 (split: test)"]
        assert ax_map.get_ylabel() == "validation mAP (split: test)"
        for ax in (ax_loss, ax_map):
            fig.canvas.draw()
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            assert ax.get_xlabel() == "epoch"
    finally:
        plt.close(fig)
    fig = h.figure()
    try:
        assert fig.axes[1].get_legend().get_texts()[0].get_text() == "val mAP50 (split: val)"
    finally:
        plt.close(fig)
