"""``edge.bench.machine``: resident-memory growth and slope after warm-up."""

from __future__ import annotations

import pytest

from edge.bench.machine import rss_summary


def test_rss_summary_measures_growth_after_warmup():
    # 40 MB of set-up during the first 100 frames, then 1 MB per 1,000 frames
    samples = [(0, 100.0), (50, 130.0), (100, 140.0)] + [(f, 140.0 + (f - 100) / 1000.0) for f in range(200, 10100, 100)]
    s = rss_summary(samples, warm_frames=100)
    assert s["rss_baseline_mb"] == 140.0 and s["rss_start_mb"] == 100.0
    assert s["rss_growth_mb"] == pytest.approx(9.9, abs=0.01)
    assert s["rss_slope_mb_per_1k"] == pytest.approx(1.0, abs=1e-3)
    assert rss_summary([], 10)["rss_growth_mb"] == 0.0
    flat = rss_summary([(i, 50.0) for i in range(0, 1000, 10)], warm_frames=100)
    assert flat["rss_growth_mb"] == 0.0 and flat["rss_slope_mb_per_1k"] == 0.0
