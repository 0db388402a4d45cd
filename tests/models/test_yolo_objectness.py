"""YOLO objectness must not starve on sparse datasets (issue 11: yolov3-tiny, one object per photo, max score
0.048 after 20 epochs while RetinaNet-small reached 0.81 mAP50).

The box and class terms are means over the positives; the objectness term was a mean over every cell of
the batch. Its weight per positive, relative to the box term's, was then proportional to the number of
objects per image: ~13x smaller on a one-object-per-image dataset than on BCCD (13.5 boxes per image),
so the shared layers learned boxes and hardly any objectness. Objectness is now summed over the cells and
divided by the positives, like the other terms (and darknet's summed loss, and RetinaNet's focal loss).
"""

from __future__ import annotations

import json
from typing import List

import pytest

torch = pytest.importorskip("torch")

from edge.data.targets import Target  # noqa: E402
from edge.models import build_model  # noqa: E402
from edge.models.yolo_loss import YoloLossConfig, assign_targets  # noqa: E402
from tests.paths import REPO  # noqa: E402

SIZE = 320
ANCHORS = [[20, 22], [40, 44], [60, 60], [90, 95], [120, 110], [180, 170]]  # k = 6, fine to coarse


def _targets(batch: int, per_image: int) -> List[Target]:
    """``per_image`` 90 x 90 boxes per image on a 4 x 3 grid of positions (all on the stride-32 level)."""
    centres = [(45 + 75 * (i % 4), 60 + 100 * (i // 4)) for i in range(per_image)]
    boxes = torch.tensor([[x - 45.0, y - 45.0, x + 45.0, y + 45.0] for x, y in centres])
    return [Target(boxes=boxes.clone(), labels=torch.zeros(per_image, dtype=torch.long)) for _ in range(batch)]


def _positive_gradients(per_image: int, config: YoloLossConfig, batch: int = 8):
    """Mean |d loss / d objectness logit| and mean |d loss / d (tx, ty, tw, th)| at the responsible cells."""
    torch.manual_seed(0)
    model = build_model("yolov3-tiny", num_classes=1, input_size=(SIZE, SIZE), anchors=ANCHORS, width=0.25)
    model.loss_config = config.validate()
    raw = model.forward_raw(torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))
    for m in raw.maps:
        m.retain_grad()
    targets = _targets(batch, per_image)
    model.compute_loss(raw, targets).total.backward()
    obj, box = [], []
    for pred, a in zip(raw.maps, assign_targets(raw, targets)):
        g = pred.grad[a.batch, a.anchor, a.row, a.col]
        obj.append(g[:, 4].abs())
        box.append(g[:, :4].abs().mean(dim=1))
    return float(torch.cat(obj).mean()), float(torch.cat(box).mean())


def test_objectness_weight_per_positive_does_not_depend_on_how_many_objects_an_image_has():
    sparse_obj, sparse_box = _positive_gradients(1, YoloLossConfig())
    dense_obj, dense_box = _positive_gradients(12, YoloLossConfig())
    ratio_sparse, ratio_dense = sparse_obj / sparse_box, dense_obj / dense_box
    # the per-cell mean gave the one-object images a 12x weaker objectness signal than the 12-object ones
    assert 0.5 < ratio_sparse / ratio_dense < 2.0, (ratio_sparse, ratio_dense)
    # and a lone positive's objectness gradient is not swamped by the box term (it was ~0.003 of it)
    assert ratio_sparse > 0.03, ratio_sparse


def test_the_per_cell_mean_is_kept_for_loss_configs_written_before():
    # the bundled model's card (trained with obj_weight 4 over the per-cell mean) reads back unchanged
    card = json.loads((REPO / "edge/assets/bccd_yolov3-tiny_320.nms.json").read_text())
    loss = card["config"]["loss"]
    old = YoloLossConfig.from_dict(loss)
    assert old.obj_norm == "cells" and old.obj_weight == 4.0
    assert YoloLossConfig.from_dict({}).obj_norm == "positives"
    assert YoloLossConfig.from_dict({"obj_norm": "positives", "obj_weight": 0.2}).obj_weight == 0.2
    # the old normalization still shows the starvation the new one removes
    sparse_obj, sparse_box = _positive_gradients(1, old)
    dense_obj, dense_box = _positive_gradients(12, old)
    assert (dense_obj / dense_box) / (sparse_obj / sparse_box) > 6.0
