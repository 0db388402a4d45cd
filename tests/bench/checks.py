"""What every ``edge bench`` test checks in a document: the figures it must hold and the invariants of one
case (every mode ran on every frame, the numbers agree with each other and with physics)."""

from __future__ import annotations

import math

import pytest

REQUIRED = ("raw_fps", "e2e_fps", "naive_fps", "rss_growth_mb")
FRAMES = 30


def _check_case(case: dict, frames: int) -> None:
    for key in REQUIRED:
        assert isinstance(case[key], float) and math.isfinite(case[key]), (key, case[key])
    assert case["raw_fps"] > 0 and case["e2e_fps"] > 0 and case["naive_fps"] > 0
    assert case["frames"] == frames  # every e2e run went through the whole clip
    for r in case["rounds"]:
        assert sorted(r["order"]) == ["e2e", "naive", "raw"]
        assert r["e2e_over_raw"] == pytest.approx(r["e2e_fps"] / r["raw_fps"], abs=1e-4)
        assert r["e2e_over_naive"] == pytest.approx(r["e2e_fps"] / r["naive_fps"], abs=1e-4)
        assert all(v > 0 for v in r["cpu_ms_per_frame"].values())
    stages = case["stages_ms"]
    assert set(stages) == {"capture", "preprocess", "infer", "postprocess", "draw", "sink"}
    for name, s in stages.items():
        assert 0 <= s["p50_ms"] <= s["p99_ms"], name
    for mode in ("raw", "e2e", "naive"):  # medians of the rounds
        values = [r[f"{mode}_fps"] for r in case["rounds"]]
        assert min(values) <= case[f"{mode}_fps"] <= max(values)
    if len(case["rounds"]) == 1:  # latencies and FPS then come from the same runs
        # a pipeline is no faster than its slowest stage: frames pass the sink one at a time, and inference
        # N at a time with N workers
        workers = case["inference_plan"]["workers"]
        assert case["e2e_fps"] <= 1.05 * 1000.0 / stages["sink"]["mean_ms"]
        assert case["e2e_fps"] <= 1.05 * workers * 1000.0 / stages["infer"]["mean_ms"]
        assert case["raw_fps"] == pytest.approx(1000.0 / case["raw_latency_ms"]["mean_ms"], rel=0.02)
    assert case["e2e_steady_fps"] > 0
    assert set(case["naive_stages_ms"]) >= {"capture", "preprocess", "infer", "draw", "sink"}
    assert case["raw_latency_ms"]["p50_ms"] > 0
    assert abs(case["rss_growth_mb"]) < 200  # a leak of frames would show up as hundreds of MB
    assert case["rss"]["rss_peak_mb"] >= case["rss"]["rss_baseline_mb"] > 0
