"""``edge bench``: the machinery, not the speed.

Real ONNX Runtime sessions on the synthetic red-box detector (a real ONNX file), real video files written
and decoded by OpenCV, the real report files. Ratios between the modes are never asserted (the machine is
shared; benchmarks print figures): the tests check that every mode ran on every frame, that the numbers
are consistent with each other and with physics (a pipeline cannot be faster than its slowest serial
stage), and that the reports say what the document says.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bench.backends import default_backend_factory
from edge.bench.config import BenchCase, BenchConfig
from edge.bench.machine import machine_info
from edge.bench.runner import run_bench
from edge.errors import EdgeError, ModelError
from edge.model_input import LAYOUT_FLOAT_NCHW_RGB
from edge.runtime.synthetic import draw_red_box, red_box_model
from tests.bench.checks import FRAMES, REQUIRED, _check_case


def _source_video(path: Path, n: int, size=(200, 150)) -> Path:
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((h, w, 3), 40, np.uint8)
        writer.write(draw_red_box(frame, (10 + 2 * i, 30, 90 + 2 * i, 80)))
    writer.release()
    return path


def test_bench_document_has_the_figures_and_they_are_consistent(doc, model):
    for key in REQUIRED:
        assert key in doc
    assert len(doc["cases"]) == 1
    case = doc["cases"][0]
    _check_case(case, FRAMES)
    assert doc["raw_fps"] == case["raw_fps"] and doc["e2e_fps"] == case["e2e_fps"]
    assert case["model"] == str(model) and case["precision"] == "fp32" and case["input"] == [96, 128]
    assert len(case["rounds"]) == 2 and case["rounds"][0]["order"] != case["rounds"][1]["order"]
    # ONNX Runtime alone with its own defaults, timed in every round as a second ceiling
    assert case["raw_ort_defaults_fps"] > 0 and doc["raw_ort_defaults_fps"] == case["raw_ort_defaults_fps"]
    for r in case["rounds"]:
        assert r["e2e_over_raw_ort_defaults"] == pytest.approx(r["e2e_fps"] / r["raw_ort_defaults_fps"], abs=1e-4)
    # e2e ran as edge-run runs a file (edge.runtime.plan), with its own ceiling; the best raw is the highest
    plan = case["inference_plan"]
    assert plan["threads"] == 1 and doc["inference_plan"] == plan
    if plan["workers"] > 1:
        assert case["raw_parallel_fps"] > 0
        assert "1 threads" in case["e2e_backend"] or "1 thread" in case["e2e_backend"]
    for r in case["rounds"]:
        ceilings = [v for v in (r["raw_fps"], r["raw_ort_defaults_fps"], r["raw_parallel_fps"]) if v]
        assert r["raw_best_fps"] == max(ceilings)
        assert r["e2e_over_raw_best"] == pytest.approx(r["e2e_fps"] / r["raw_best_fps"], abs=1e-4)
        assert (r["raw_parallel_fps"] is None) == (plan["workers"] == 1)
    assert doc["source"]["uri"] == "generated" and doc["source"]["frame_size"] == [160, 120]
    m = doc["machine"]
    assert m["cores"] >= 1 and m["cpu"] and m["onnxruntime"] and m["ort_threads"] == 1 and m["date"]
    json.dumps(doc)  # JSON-ready as is


def test_bench_on_a_given_video_with_two_models(model, tmp_path):
    """A user's clip (MJPG .avi) and two cases: the uint8 graph and a float NCHW graph of the same detector."""
    video = _source_video(tmp_path / "clip.avi", 24)
    f32 = red_box_model(tmp_path / "red_f32.onnx", size=(96, 128), layout=LAYOUT_FLOAT_NCHW_RGB)
    config = BenchConfig(frames=20, repeats=1, threads=1, warmup=1, video_suffix=".avi", raw_reference=False)
    doc = run_bench([BenchCase(model), BenchCase(f32)], config, str(video), workdir=tmp_path / "w")
    assert [c["model_name"] for c in doc["cases"]] == ["red.onnx", "red_f32.onnx"]
    assert doc["cases"][1]["input_layout"] == "float_nchw_rgb"
    for case in doc["cases"]:
        _check_case(case, 20)
        # the red box is in every frame: the loops really ran the detector on the clip's frames
        assert case["detections_per_frame"] == pytest.approx(1.0)
    assert doc["source"] == {"uri": str(video), "kind": "file", "frame_size": [200, 150]}
    assert doc["raw_ort_defaults_fps"] is None  # not asked for
    assert not list((tmp_path / "w").glob("*.avi"))  # the annotated videos are removed after each run


def test_config_and_inputs_are_checked(model, tmp_path):
    for bad in (BenchConfig(frames=1), BenchConfig(repeats=0), BenchConfig(threads=-1),
                BenchConfig(video_suffix=".gif"), BenchConfig(clip_size=(8, 8))):
        with pytest.raises(EdgeError):
            bad.validate()
    with pytest.raises(ModelError, match="fixed 96x128 input.*--dynamic-hw"):
        default_backend_factory(model, (320, 320), 1)
    with pytest.raises(EdgeError, match="live source"):
        run_bench([BenchCase(model)], BenchConfig(frames=5), "test://64x48?live=1")
    with pytest.raises(EdgeError, match="must be finite"):
        run_bench([BenchCase(model)], BenchConfig(frames=5), "test://64x48")
    with pytest.raises(EdgeError, match="nothing to bench"):
        run_bench([], BenchConfig(frames=5))
    info = machine_info(2)
    assert info["ort_threads"] == 2 and isinstance(info["load_average"], list)


def test_sizes_apply_to_free_size_graphs_and_fixed_ones_are_skipped(model, tmp_path):
    config = BenchConfig(frames=6, repeats=1, threads=1, warmup=1, raw_reference=False)
    cases = [BenchCase(model, (96, 128)), BenchCase(model, (320, 320))]
    doc = run_bench(cases, config, "test://160x120?frames=6", workdir=tmp_path)
    assert [c["input"] for c in doc["cases"]] == [[96, 128]]
    assert doc["skipped"][0]["case"] == "red.onnx@320x320" and "fixed 96x128" in doc["skipped"][0]["reason"]
