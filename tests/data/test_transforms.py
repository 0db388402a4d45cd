"""Training transforms (edge.data.transforms): boxes stay consistent with the pixels they describe."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from edge.data.transforms import (
    SSD_CROP_MIN_IOUS,
    AugmentConfig,
    TrainTransform,
    clip_and_filter,
    crop_boxes,
    eval_transform,
    hflip,
    iou_with_window,
    multiscale_sizes,
    photometric_distort,
    render_window,
    sample_crop_window,
    sample_expand_window,
    seeded_rng,
    vflip,
)
from tests.paths import BCCD


def _bccd_sample(stem: str = "BloodImage_00001"):
    if not (BCCD / "JPEGImages" / f"{stem}.jpg").exists():
        pytest.skip(f"BCCD dataset not found at {BCCD}")
    image = cv2.imread(str(BCCD / "JPEGImages" / f"{stem}.jpg"))
    root = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
    boxes, labels = [], []
    names = ["RBC", "WBC", "Platelets"]
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        b = [float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        if b[2] > b[0] and b[3] > b[1]:
            boxes.append(b)
            labels.append(names.index(obj.find("name").text.strip()))
    return image, np.array(boxes, np.float32), np.array(labels, np.int64)


def _painted(width=200, height=150, seed=0, n=6):
    """An image whose boxes are filled rectangles of distinct colours on a black background.

    Boxes are integer, non-overlapping (one per column band), at least 14 px wide and high.
    """
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    boxes, colours = [], []
    band = width // n
    for i in range(n):
        w = int(rng.integers(14, band - 2))
        h = int(rng.integers(14, height // 2))
        x1 = i * band + int(rng.integers(0, band - w))
        y1 = int(rng.integers(0, height - h))
        colour = (40 + 30 * i, 255 - 30 * i, 100 + 20 * i)
        image[y1 : y1 + h, x1 : x1 + w] = colour
        boxes.append([x1, y1, x1 + w, y1 + h])
        colours.append(colour)
    return image, np.array(boxes, np.float32), np.arange(n, dtype=np.int64), colours


def test_hflip_maps_coordinates_exactly():
    image = np.zeros((10, 20, 3), np.uint8)
    image[2:5, 3:7] = 255  # box x 3..7, y 2..5
    boxes = np.array([[3, 2, 7, 5], [0, 0, 20, 10]], np.float32)
    out, fb = hflip(image, boxes)
    np.testing.assert_array_equal(fb, [[13, 2, 17, 5], [0, 0, 20, 10]])
    ys, xs = np.nonzero(out[:, :, 0])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (13, 17, 2, 5)
    back, bb = hflip(out, fb)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(bb, boxes)


def test_vflip_maps_coordinates_exactly():
    image = np.zeros((10, 20, 3), np.uint8)
    image[2:5, 3:7] = 255
    out, fb = vflip(image, np.array([[3, 2, 7, 5]], np.float32))
    np.testing.assert_array_equal(fb, [[3, 5, 7, 8]])
    ys, xs = np.nonzero(out[:, :, 0])
    assert (ys.min(), ys.max() + 1) == (5, 8)


def test_crop_window_keeps_iou_constraint_and_centres():
    image, boxes, labels = _bccd_sample()
    h, w = image.shape[:2]
    seen_modes = set()
    for seed in range(300):
        rng = seeded_rng(seed)
        window, min_iou = sample_crop_window(boxes, w, h, rng)
        if window is None:
            continue
        seen_modes.add(min_iou)
        x1, y1, x2, y2 = window
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        # SSD's constraint: some ground-truth box overlaps the window with IoU >= the drawn minimum
        assert iou_with_window(boxes, window).max() >= min_iou - 1e-9
        # aspect and scale limits
        assert 0.5 - 1e-6 <= (y2 - y1) / (x2 - x1) <= 2.0 + 1e-6
        assert x2 - x1 >= int(0.3 * w) - 1 and y2 - y1 >= int(0.3 * h) - 1
        cb, cl = crop_boxes(boxes, labels, window)
        assert len(cb) >= 1 and len(cb) == len(cl)
        assert cb.min() >= 0 and np.all(cb[:, 2] <= x2 - x1) and np.all(cb[:, 3] <= y2 - y1)
    assert {0.0, 0.1}.issubset(seen_modes)  # several modes were exercised


def test_crop_min_iou_unreachable_keeps_whole_image():
    # one tiny box: no 30%-of-the-image window can reach IoU 0.9 with it, so the crop gives up
    boxes = np.array([[100, 100, 110, 110]], np.float32)
    for seed in range(20):
        window, min_iou = sample_crop_window(boxes, 640, 480, seeded_rng(seed), min_ious=(0.9,))
        assert window is None and min_iou is None


def test_crop_boxes_drops_boxes_whose_centre_is_outside():
    boxes = np.array([[0, 0, 10, 10], [40, 40, 60, 60], [95, 95, 130, 130]], np.float32)
    labels = np.array([0, 1, 2])
    cb, cl = crop_boxes(boxes, labels, (20, 20, 100, 100))
    np.testing.assert_array_equal(cl, [1])
    np.testing.assert_array_equal(cb, [[20, 20, 40, 40]])


def test_clip_and_filter_drops_degenerate_results():
    boxes = np.array([[-5, -5, 10, 10], [50, 50, 50.5, 80], [90, 10, 130, 40], [120, 5, 140, 9]], np.float32)
    labels = np.array([0, 1, 2, 3])
    out, lab = clip_and_filter(boxes, labels, 100, 100, min_size=2.0)
    np.testing.assert_array_equal(lab, [0, 2])  # 0.5 px wide dropped; the last is outside entirely
    np.testing.assert_array_equal(out, [[0, 0, 10, 10], [90, 10, 100, 40]])


def test_expand_window_contains_the_image():
    for seed in range(50):
        x1, y1, x2, y2 = sample_expand_window(64, 48, seeded_rng(seed), 4.0)
        assert x1 <= 0 and y1 <= 0 and x2 >= 64 and y2 >= 48
        assert 1.0 <= (x2 - x1) / 64 <= 4.0 + 1e-6


def test_render_window_boxes_match_pixels():
    image, boxes, labels, colours = _painted()
    # a zoom-out window around the image, rendered at half scale
    window = (-37, -21, 263, 204)
    canvas, out = render_window(image, boxes, window, 0.5, pad_value=114)
    assert canvas.shape[:2] == (round(225 * 0.5), round(300 * 0.5))
    assert tuple(canvas[0, 0]) == (114, 114, 114)
    for b, colour in zip(out, colours):
        cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
        assert tuple(canvas[cy, cx]) == pytest.approx(colour, abs=2)
        # just outside the box (by 2 px) is background, not the box colour
        assert tuple(canvas[cy, int(b[2]) + 2]) != tuple(colour)


@pytest.mark.parametrize("preset", ["ssd", "light", "flip", "none"])
def test_train_transform_keeps_boxes_on_their_pixels(preset):
    image, boxes, labels, colours = _painted(seed=3)
    cfg = AugmentConfig.preset(preset, photometric=False, min_box_size=4.0)
    transform = TrainTransform(cfg)
    checked = 0
    for seed in range(40):
        out, ob, ol = transform(image, boxes, labels, seeded_rng(7, seed), (96, 128))
        assert out.shape == (96, 128, 3) and out.dtype == np.uint8
        assert ob.dtype == np.float32 and ol.dtype == np.int64 and len(ob) == len(ol)
        # in bounds, non-degenerate
        assert np.all(ob[:, 0] >= 0) and np.all(ob[:, 1] >= 0)
        assert np.all(ob[:, 2] <= 128) and np.all(ob[:, 3] <= 96)
        assert np.all(ob[:, 2] - ob[:, 0] >= 4.0) and np.all(ob[:, 3] - ob[:, 1] >= 4.0)
        # each kept box still sits on its own colour (centre pixel), labels follow their boxes
        for b, lab in zip(ob, ol):
            cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
            assert np.abs(out[cy, cx].astype(int) - np.array(colours[lab])).max() <= 12, (seed, lab)
            checked += 1
    assert checked > 40


def test_train_transform_is_a_function_of_the_seed():
    image, boxes, labels = _bccd_sample()
    t = TrainTransform(AugmentConfig.preset("ssd"))
    a = t(image, boxes, labels, seeded_rng(0, 1, 2), (128, 128))
    b = t(image, boxes, labels, seeded_rng(0, 1, 2), (128, 128))
    c = t(image, boxes, labels, seeded_rng(0, 2, 2), (128, 128))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_real_bccd_sample_ssd_augment_in_bounds():
    image, boxes, labels = _bccd_sample()
    t = TrainTransform(AugmentConfig.preset("ssd"))
    kept = []
    for seed in range(30):
        out, ob, ol = t(image, boxes, labels, seeded_rng(seed), (128, 128))
        assert out.shape == (128, 128, 3)
        assert len(ob) <= len(boxes) and set(ol.tolist()) <= set(labels.tolist())
        if len(ob):
            assert ob.min() >= 0 and ob[:, [0, 2]].max() <= 128 and ob[:, [1, 3]].max() <= 128
        kept.append(len(ob))
    assert max(kept) > 0


def test_eval_transform_is_plain_letterbox():
    image, boxes, labels = _bccd_sample()
    out, ob, ol = eval_transform(image, boxes, labels, (128, 128))
    # 640x480 -> 128x96 centred: pad 16 rows top and bottom, scale 0.2
    np.testing.assert_allclose(ob, boxes * 0.2 + np.array([0, 16, 0, 16], np.float32), atol=1e-4)
    np.testing.assert_array_equal(ol, labels)
    assert (out[:16] == 114).all() and (out[-16:] == 114).all()


def test_photometric_distort_shape_dtype_and_change():
    image, _, _ = _bccd_sample()
    small = cv2.resize(image, (64, 48))
    outs = [photometric_distort(small, seeded_rng(s)) for s in range(8)]
    assert all(o.shape == small.shape and o.dtype == np.uint8 for o in outs)
    assert any(np.abs(o.astype(int) - small.astype(int)).mean() > 2 for o in outs)


def test_multiscale_sizes():
    assert multiscale_sizes(320) == (256, 288, 320, 352, 384)
    assert multiscale_sizes(96, steps=2) == (64, 96, 128, 160)
    with pytest.raises(ValueError):
        multiscale_sizes(300)


def test_augment_config_validation():
    with pytest.raises(ValueError, match="hflip_prob"):
        AugmentConfig(hflip_prob=1.5).validate()
    with pytest.raises(ValueError, match="preset"):
        AugmentConfig.preset("mosaic")
    assert None in SSD_CROP_MIN_IOUS
