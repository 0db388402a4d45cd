"""Statistics (percentiles, FPS, the --stats-json document) and drawing (pixels where the boxes are)."""

from __future__ import annotations

import json

import cv2
import numpy as np

from edge.runtime.draw import Drawer, palette
from edge.runtime.stats import FpsMeter, LatencyTracker, RunStats


def test_latency_percentiles_match_numpy_and_the_ring_keeps_the_latest():
    rng = np.random.default_rng(1)
    samples = rng.exponential(0.01, 500)
    t = LatencyTracker(capacity=1000)
    for s in samples:
        t.add(float(s))
    assert t.percentile(50) == np.percentile(samples, 50) * 1000
    assert abs(t.percentile(99) - np.percentile(samples, 99) * 1000) < 1e-9
    s = t.summary()
    assert s["count"] == 500 and abs(s["mean_ms"] - samples.mean() * 1000) < 1e-3
    small = LatencyTracker(capacity=4)
    for v in (1.0, 1.0, 1.0, 1.0, 0.002, 0.002, 0.002, 0.002):
        small.add(v)
    assert small.percentile(50) == 2.0 and small.summary()["max_ms"] == 1000.0
    assert LatencyTracker().percentile(50) == 0.0


def test_fps_meter_over_a_window():
    m = FpsMeter(window=10)
    assert m.fps == 0.0
    for i in range(25):
        m.tick(100.0 + i * 0.04)  # 25 FPS
    assert abs(m.fps - 25.0) < 1e-6


def test_run_stats_document(tmp_path):
    st = RunStats()
    st.start()
    for i in range(5):
        st.counters.captured += 1
        st.counters.inferred += 1
        st.stages["infer"].add(0.01)
        st.frame_out(capture_ts=st.started + i * 0.01, now=st.started + i * 0.01 + 0.02)
    st.counters.dropped = 2
    st.stop()
    path = st.write_json(tmp_path / "stats.json")
    d = json.loads(path.read_text())
    assert d["frames"] == {"captured": 5, "inferred": 5, "dropped": 2, "discarded": 0, "written": 5,
                           "capture_timeouts": 0, "capture_errors": 0, "reopens": 0}
    assert d["output_errors"] == []
    assert d["stages_ms"]["infer"]["p50_ms"] == 10.0 and "draw" not in d["stages_ms"]
    assert abs(d["glass_to_glass_ms"]["p50_ms"] - 20.0) < 1e-6
    assert d["steady_fps"] == 100.0 and d["e2e_fps"] > 0
    text = st.format_summary()
    assert "glass2glass" in text and "dropped 2" in text


def test_drawer_draws_boxes_labels_and_fps_in_place():
    frame = np.zeros((120, 160, 3), np.uint8)
    drawer = Drawer(["tall", "wide"])
    boxes = np.array([[40.2, 50.0, 100.0, 110.0], [-10.0, -5.0, 500.0, 30.0]], np.float32)
    out = drawer.draw(frame, boxes, np.array([0.9, 0.4], np.float32), np.array([1, 0], np.int32), fps=29.97)
    assert out is frame
    color = np.array(drawer.colors[1])
    assert (frame[80, 40] == color).all() and (frame[80, 100] == color).all()  # left and right edges
    assert not frame[80, 70].any()  # inside the box stays untouched
    assert frame[0:12, 0:60].any()  # the FPS line (top-left)
    assert drawer.label(1, 0.9) == "wide 0.90" and drawer.label(7, 0.5) == "7 0.50"
    p = palette(3)
    assert p.shape == (3, 3) and p.dtype == np.uint8 and len({tuple(c) for c in p.tolist()}) == 3


def _draw_labels_directly(d: Drawer, frame, boxes, scores, classes) -> None:
    """The drawing the sprite cache replaced: a filled rectangle and anti-aliased text on the frame itself."""
    h, w = frame.shape[:2]
    ib = np.empty((len(boxes), 4), np.int32)
    ib[:] = np.rint(boxes)
    ib[:, 0::2] = np.clip(ib[:, 0::2], 0, w - 1)
    ib[:, 1::2] = np.clip(ib[:, 1::2], 0, h - 1)
    for (x1, y1, x2, y2), score, cls in zip(ib.tolist(), scores.tolist(), classes.tolist()):
        color = d.colors[int(cls) % len(d.colors)]
        cv2.rectangle(frame, (x1, y1), (x2, y2), color, d.thickness, cv2.LINE_8)
        text = d.label(int(cls), float(score))
        (tw, th), base = cv2.getTextSize(text, d.font, d.font_scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y1 + th + base + 2)
        cv2.rectangle(frame, (x1, ty - th - base), (x1 + tw + 2, ty + 1), color, -1)
        cv2.putText(frame, text, (x1 + 1, ty - base + 1), d.font, d.font_scale, (0, 0, 0), 1, cv2.LINE_AA)


def test_label_sprites_give_the_same_pixels_as_drawing_on_the_frame():
    """Random frames and boxes, labels clipped at every edge, descenders (gjpqy): pixel for pixel equal."""
    rng = np.random.default_rng(1)
    d = Drawer(["RBC", "WBC", "Platelets", "gjpqy"])
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(30, 260, 2))
        n = int(rng.integers(1, 15))
        xy = rng.uniform(-20, [w + 20, h + 20], (n, 2))
        boxes = np.c_[xy, xy + rng.uniform(2, 120, (n, 2))].astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        classes = rng.integers(0, 4, n).astype(np.int32)
        frame = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        expected = frame.copy()
        _draw_labels_directly(d, expected, boxes, scores, classes)
        d.draw(frame, boxes, scores, classes)
        np.testing.assert_array_equal(frame, expected)
    assert 0 < len(d._sprites) <= 4 * 101  # one sprite per (label, colour), reused


def test_measure_throughput_counts_calls(tmp_path):
    from edge.runtime.backend import measure_throughput
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
    from edge.runtime.synthetic import red_box_model

    backend = OnnxRuntimeBackend(red_box_model(tmp_path / "m.onnx"), OrtOptions(threads=1))
    batch = np.zeros(backend.input_format.tensor_shape(1), np.uint8)
    fps = measure_throughput(backend, batch, iterations=20, warmup=1)
    assert 0 < fps < 1e6
    backend.close()
