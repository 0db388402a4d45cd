"""edge.letterbox: geometry, exact inverse box mapping, out= buffer reuse, pixels land where boxes say."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from edge.letterbox import LetterboxParams, compute_letterbox, letterbox


def test_landscape_into_square():
    p = compute_letterbox((480, 640), (416, 416))
    assert (p.resized_w, p.resized_h) == (416, 312)
    assert (p.pad_x, p.pad_y) == (0, 52)
    assert p.scale == pytest.approx(0.65)
    assert (p.src_w, p.src_h, p.input_w, p.input_h) == (640, 480, 416, 416)


def test_portrait_into_square():
    p = compute_letterbox((640, 480), (416, 416))
    assert (p.resized_w, p.resized_h) == (312, 416)
    assert (p.pad_x, p.pad_y) == (52, 0)


def test_upscale_small_frame_and_non_square_input():
    p = compute_letterbox((30, 50), (320, 512))  # h=30, w=50 -> h=320, w=512
    assert p.scale == pytest.approx(min(512 / 50, 320 / 30))
    assert (p.resized_w, p.resized_h) == (512, 307)
    assert p.pad_x == 0 and p.pad_y == (320 - 307) // 2 == 6


@pytest.mark.parametrize(
    "src_hw,dst_hw",
    [
        ((517, 333), (416, 416)),
        ((333, 517), (301, 415)),
        ((1, 999), (64, 64)),
        ((999, 1), (63, 65)),
        ((7, 7), (7, 7)),
    ],
)
def test_odd_sizes_are_centred_with_integer_pads(src_hw, dst_hw):
    p = compute_letterbox(src_hw, dst_hw).validate()
    for pad, resized, total in ((p.pad_x, p.resized_w, p.input_w), (p.pad_y, p.resized_h, p.input_h)):
        assert isinstance(pad, int) and pad >= 0 and resized >= 1
        other = total - resized - pad
        assert other - pad in (0, 1)  # centred; the odd pixel goes right/bottom
    # one scale for both axes: the aspect ratio is kept up to the rounding of the resized size
    # (an extreme sliver keeps at least one pixel)
    assert abs(p.resized_w - src_hw[1] * p.scale) <= 0.5 + 1e-9 or p.resized_w == 1
    assert abs(p.resized_h - src_hw[0] * p.scale) <= 0.5 + 1e-9 or p.resized_h == 1
    assert p.resized_w == p.input_w or p.resized_h == p.input_h


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="source size"):
        compute_letterbox((0, 10), (416, 416))
    with pytest.raises(ValueError, match="input size"):
        compute_letterbox((10, 10), (416, -1))


@pytest.mark.parametrize(
    "src_hw,dst_hw", [((517, 333), (416, 416)), ((480, 640), (320, 320)), ((333, 517), (301, 415))]
)
def test_box_round_trip_is_exact(src_hw, dst_hw):
    p = compute_letterbox(src_hw, dst_hw)
    rng = np.random.default_rng(0)
    h, w = src_hw
    xy = rng.uniform(0, 1, size=(200, 2, 2)) * [w, h]
    boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)  # float64 [200, 4] xyxy
    back = p.to_source(p.to_input(boxes), clip=False)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-9)
    # float32 in -> float32 out, exact to float32 precision
    b32 = boxes.astype(np.float32)
    back32 = p.to_source(p.to_input(b32))
    assert back32.dtype == np.float32
    np.testing.assert_allclose(back32, b32, rtol=0, atol=1e-3)
    # [B, N, 4] works the same
    batched = p.to_input(boxes.reshape(4, 50, 4))
    np.testing.assert_array_equal(batched.reshape(200, 4), p.to_input(boxes))


def test_round_trip_bit_exact_for_power_of_two_scale():
    p = compute_letterbox((416, 832), (416, 416))  # scale 0.5, pad_y 104
    assert (p.scale, p.pad_x, p.pad_y) == (0.5, 0, 104)
    boxes = np.array([[0, 0, 832, 416], [10.25, 20.5, 30.75, 41.0]], np.float32)
    inp = p.to_input(boxes)
    np.testing.assert_array_equal(inp, [[0, 104, 416, 312], [5.125, 114.25, 15.375, 124.5]])
    np.testing.assert_array_equal(p.to_source(inp), boxes)


def test_to_input_uses_the_exact_per_axis_resize_factors():
    p = compute_letterbox((517, 333), (416, 416))
    full = p.to_input(np.array([0, 0, 333, 517], np.float64))
    # the whole frame maps exactly onto the resized (non-padded) area
    np.testing.assert_allclose(
        full, [p.pad_x, p.pad_y, p.pad_x + p.resized_w, p.pad_y + p.resized_h], atol=1e-9
    )


def test_to_source_clips_to_the_frame():
    p = compute_letterbox((480, 640), (416, 416))  # pad_y 52
    boxes = np.array([[-5, 10, 50, 60], [400, 300, 430, 400], [100, 0, 200, 416]], np.float32)
    src = p.to_source(boxes)
    assert src.min() >= 0
    assert src[:, 0::2].max() <= 640 and src[:, 1::2].max() <= 480
    np.testing.assert_allclose(src[2], [100 / 0.65, 0, 200 / 0.65, 480], rtol=1e-6)
    unclipped = p.to_source(boxes, clip=False)
    assert unclipped[0, 0] < 0 and unclipped[2, 1] < 0 and unclipped[2, 3] > 480


def test_boxes_must_have_four_columns():
    p = compute_letterbox((10, 10), (20, 20))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        p.to_input(np.zeros((3, 5)))


def _random_image(h, w, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def test_letterbox_pixels_pads_and_content():
    image = _random_image(333, 517)
    out, p = letterbox(image, (416, 416))
    assert out.shape == (416, 416, 3) and out.dtype == np.uint8
    y0, x0, y1, x1 = p.pad_y, p.pad_x, p.pad_y + p.resized_h, p.pad_x + p.resized_w
    assert (y0, y1) != (0, 416)  # this case pads top and bottom
    expected = cv2.resize(image, (p.resized_w, p.resized_h), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out[y0:y1, x0:x1], expected)
    assert (out[:y0] == 114).all() and (out[y1:] == 114).all()


def test_letterbox_same_size_is_a_copy():
    image = _random_image(64, 48)
    out, p = letterbox(image, (64, 48))
    assert (p.pad_x, p.pad_y, p.scale) == (0, 0, 1.0)
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)


def test_letterbox_grayscale_single_channel_and_per_channel_pad():
    gray = _random_image(40, 80, channels=0)
    out, p = letterbox(gray, (64, 64), pad_value=7)
    assert out.shape == (64, 64) and (out[: p.pad_y] == 7).all()
    one = gray[:, :, None]
    out1, _ = letterbox(one, (64, 64), pad_value=7)
    assert out1.shape == (64, 64, 1)
    np.testing.assert_array_equal(out1[:, :, 0], out)
    color, pc = letterbox(_random_image(40, 80), (64, 64), pad_value=(1, 2, 3))
    assert (color[: pc.pad_y] == np.array([1, 2, 3], np.uint8)).all()


def test_out_buffer_is_reused_and_fully_rewritten():
    out = np.full((320, 320, 3), 255, np.uint8)
    landscape, portrait = _random_image(240, 400, seed=1), _random_image(400, 240, seed=2)
    r1, p1 = letterbox(landscape, (320, 320), out=out)
    assert r1 is out
    np.testing.assert_array_equal(out, letterbox(landscape, (320, 320))[0])
    # a frame with the other orientation in the same buffer: no stale pixels from the first one
    r2, p2 = letterbox(portrait, (320, 320), out=out)
    assert r2 is out and (p2.pad_x, p2.pad_y) != (p1.pad_x, p1.pad_y)
    np.testing.assert_array_equal(out, letterbox(portrait, (320, 320))[0])


def test_out_buffer_means_no_frame_sized_allocation():
    frame = _random_image(480, 640)
    out = np.empty((416, 416, 3), np.uint8)
    letterbox(frame, (416, 416), out=out)  # warm up (imports, caches)
    tracemalloc.start()
    try:
        for _ in range(3):
            letterbox(frame, (416, 416), out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes // 10, f"peak {peak} bytes allocated while letterboxing into out"
    # the allocation check can fail: without out= a frame-sized array is allocated each call
    tracemalloc.start()
    try:
        letterbox(frame, (416, 416))
        _, peak_alloc = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_alloc >= out.nbytes


def test_out_buffer_of_wrong_shape_dtype_or_layout_is_refused():
    frame = _random_image(48, 64)
    with pytest.raises(ValueError, match="expected"):
        letterbox(frame, (32, 32), out=np.empty((32, 33, 3), np.uint8))
    with pytest.raises(ValueError, match="expected"):
        letterbox(frame, (32, 32), out=np.empty((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        letterbox(frame, (32, 32), out=np.empty((32, 64, 3), np.uint8)[:, ::2])


def _bright_extent(image):
    """xyxy pixel extent (continuous coords) of the pixels brighter than half: [x1, y1, x2, y2]."""
    ys, xs = np.nonzero(image[:, :, 1] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


@pytest.mark.parametrize("src_hw", [(517, 333), (333, 517), (480, 640)])
def test_drawn_rectangle_maps_back_onto_the_same_pixels(src_hw):
    h, w = src_hw
    image = np.zeros((h, w, 3), np.uint8)
    rect = np.array([int(w * 0.2), int(h * 0.3), int(w * 0.7), int(h * 0.8)], np.float64)  # xyxy
    cv2.rectangle(
        image, (int(rect[0]), int(rect[1])), (int(rect[2]) - 1, int(rect[3]) - 1), (255, 255, 255), -1
    )
    out, p = letterbox(image, (416, 416))
    found = _bright_extent(out)
    # where to_input says the rectangle is, the letterboxed pixels are (within a pixel of resampling)
    np.testing.assert_allclose(found, p.to_input(rect), atol=1.0)
    # and the rectangle found in the network input maps back onto the drawn source pixels
    np.testing.assert_allclose(p.to_source(found), rect, atol=1.0 / min(p.scale_x, p.scale_y) + 1e-6)


def test_drawn_rectangle_exact_for_integer_upscale():
    image = np.zeros((50, 100, 3), np.uint8)
    image[10:30, 20:45] = 255  # rect [20, 10, 45, 30]
    out, p = letterbox(image, (200, 200), interpolation=cv2.INTER_NEAREST)
    assert (p.scale, p.pad_x, p.pad_y) == (2.0, 0, 50)
    rect = np.array([20, 10, 45, 30], np.float64)
    found = _bright_extent(out)
    np.testing.assert_array_equal(found, p.to_input(rect))
    np.testing.assert_array_equal(p.to_source(found), rect)


def test_params_as_dict_round_trips():
    p = compute_letterbox((517, 333), (416, 416))
    assert LetterboxParams(**p.as_dict()) == p
