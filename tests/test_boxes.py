"""Box formats, areas, IoU and clipping: numpy (edge.boxes) and torch (edge.models.ops) alike."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge import boxes as B


def _random_xyxy(rng: np.random.Generator, n: int, dtype=np.float32) -> np.ndarray:
    xy = rng.uniform(0, 500, (n, 2))
    wh = rng.uniform(0.5, 120, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def test_runtime_modules_do_not_import_torch():
    code = "import sys, edge.boxes, edge.nms; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_conversions_hand_computed():
    xyxy = np.array([[10.0, 20.0, 40.0, 80.0]])
    np.testing.assert_array_equal(B.xyxy_to_xywh(xyxy), [[10, 20, 30, 60]])
    np.testing.assert_array_equal(B.xyxy_to_cxcywh(xyxy), [[25, 50, 30, 60]])
    np.testing.assert_array_equal(B.xywh_to_xyxy([[10, 20, 30, 60]]), xyxy)
    np.testing.assert_array_equal(B.cxcywh_to_xyxy([[25, 50, 30, 60]]), xyxy)
    np.testing.assert_array_equal(B.pixel_to_normalized(xyxy, 100, 200), [[0.1, 0.1, 0.4, 0.4]])
    np.testing.assert_array_equal(B.normalized_to_pixel([[0.1, 0.1, 0.4, 0.4]], 100, 200), xyxy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trips_and_dtypes(dtype):
    rng = np.random.default_rng(1)
    b = _random_xyxy(rng, 200, dtype).reshape(2, 100, 4)  # leading axes are allowed
    pairs = [
        (B.xyxy_to_xywh, B.xywh_to_xyxy),
        (B.xyxy_to_cxcywh, B.cxcywh_to_xyxy),
        (lambda x: B.pixel_to_normalized(x, 640, 480), lambda x: B.normalized_to_pixel(x, 640, 480)),
    ]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for fwd, inv in pairs:
        out = fwd(b)
        assert out.dtype == dtype and out.shape == b.shape
        back = inv(out)
        assert back.dtype == dtype
        np.testing.assert_allclose(back, b, rtol=0, atol=tol * 500)
    # the input is never modified in place
    assert np.array_equal(b, _random_xyxy(np.random.default_rng(1), 200, dtype).reshape(2, 100, 4))


def test_ints_and_lists_become_float64_and_empty_inputs_work():
    assert B.xyxy_to_xywh([[0, 0, 3, 4]]).dtype == np.float64
    assert B.box_area(np.array([[0, 0, 3, 4]], dtype=np.int32)).tolist() == [12.0]
    for fn in (B.xyxy_to_xywh, B.xywh_to_xyxy, B.xyxy_to_cxcywh, B.cxcywh_to_xyxy):
        out = fn(np.zeros((0, 4), np.float32))
        assert out.shape == (0, 4) and out.dtype == np.float32
    assert B.xyxy_to_xywh([]).shape == (0, 4)
    assert B.box_area(np.zeros((0, 4))).shape == (0,)
    assert B.box_iou(np.zeros((0, 4)), _random_xyxy(np.random.default_rng(0), 3)).shape == (0, 3)
    assert B.box_iou(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)
    assert B.clip_boxes(np.zeros((0, 4)), 10, 10).shape == (0, 4)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 4\]"):
        B.xyxy_to_xywh(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="boxes2: expected 2 dimensions"):
        B.box_iou(np.zeros((3, 4)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="image size must be positive"):
        B.normalized_to_pixel(np.zeros((1, 4)), 0, 10)


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array(
        [
            [0, 0, 10, 10],  # identical: 1
            [5, 5, 15, 15],  # inter 25, union 175
            [0, 0, 5, 10],  # inside, half: 50 / 100
            [10, 0, 20, 10],  # touching edge: 0
            [20, 20, 30, 30],  # disjoint: 0
            [2, 2, 2, 8],  # zero width: 0 (not NaN)
            [0, 0, 20, 20],  # contains: 100 / 400
        ],
        dtype=np.float32,
    )
    iou = B.box_iou(a, b)
    assert iou.shape == (1, 7) and iou.dtype == np.float32
    np.testing.assert_allclose(iou[0], [1, 25 / 175, 0.5, 0, 0, 0, 0.25], rtol=1e-7)
    np.testing.assert_array_equal(B.box_iou(b, a)[:, 0], iou[0])  # symmetric, bit for bit
    # two identical zero-area boxes: 0, not NaN
    z = np.array([[3, 3, 3, 3]], dtype=np.float64)
    assert B.box_iou(z, z).tolist() == [[0.0]]
    assert B.box_iou(a, b.astype(np.float64)).dtype == np.float64


def test_box_iou_matches_loop_on_random_boxes():
    rng = np.random.default_rng(7)
    a, b = _random_xyxy(rng, 40, np.float64), _random_xyxy(rng, 30, np.float64)
    iou = B.box_iou(a, b)
    for i in range(len(a)):
        for j in range(len(b)):
            iw = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            ih = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            inter = iw * ih
            area_a = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
            area_b = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            assert iou[i, j] == pytest.approx(inter / (area_a + area_b - inter), abs=1e-12)
    assert (iou > 0).any() and (iou == 0).any()


def test_box_area_and_clip():
    b = np.array([[-5, -5, 10, 10], [600, 400, 700, 500], [10, 20, 30, 60]], dtype=np.float32)
    np.testing.assert_array_equal(B.box_area(b), [225, 10000, 800])
    c = B.clip_boxes(b, 640, 480)
    assert c.dtype == np.float32
    np.testing.assert_array_equal(c, [[0, 0, 10, 10], [600, 400, 640, 480], [10, 20, 30, 60]])
    outside = B.clip_boxes(np.array([[700.0, 10, 800, 20]]), 640, 480)
    assert B.box_area(outside).tolist() == [0.0]


# ------------------------------------------------------------------ torch twins (edge.models.ops)


def test_torch_ops_equal_numpy():
    torch = pytest.importorskip(
        "torch", reason="torch is needed for edge.models.ops (pip install -e .[train])"
    )
    from edge.models import ops

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        a, b = _random_xyxy(rng, 60, dtype), _random_xyxy(rng, 45, dtype)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        for name in ("xyxy_to_xywh", "xywh_to_xyxy", "xyxy_to_cxcywh", "cxcywh_to_xyxy", "box_area"):
            out = getattr(ops, name)(ta)
            assert out.dtype == ta.dtype
            np.testing.assert_array_equal(out.numpy(), getattr(B, name)(a))
        np.testing.assert_array_equal(ops.box_iou(ta, tb).numpy(), B.box_iou(a, b))
        np.testing.assert_array_equal(
            ops.clip_boxes(ta * 2 - 100, 640, 480).numpy(), B.clip_boxes(a * 2 - 100, 640, 480)
        )
    assert ops.box_iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 4\]"):
        ops.xyxy_to_cxcywh(torch.zeros(2, 3))


def test_torch_box_iou_gradients_are_finite():
    torch = pytest.importorskip(
        "torch", reason="torch is needed for edge.models.ops (pip install -e .[train])"
    )
    from edge.models import ops

    a = torch.tensor([[0.0, 0, 10, 10], [3, 3, 3, 3]], requires_grad=True)  # second box: zero area
    b = torch.tensor([[5.0, 5, 15, 15], [3, 3, 3, 3], [50, 50, 60, 60]], requires_grad=True)
    iou = ops.box_iou(a, b)
    assert iou[0, 0].item() == pytest.approx(25 / 175)
    assert iou[1].tolist() == [0.0, 0.0, 0.0]
    iou.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert a.grad[0].abs().sum() > 0
