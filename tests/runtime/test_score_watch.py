"""Why a run sees nothing: ``edge-run`` says once, at WARNING, how high the scores got against the threshold
that held them back, and puts ``max_score`` in the stats JSON (per stream too).

The model is the synthetic red-box detector. Its pre-NMS flavour has a fixed candidate scored 0.1 on every
frame, so on frames with no red it reaches 0.1 at most: below the 0.25 that ``edge surgery`` (run by
``edge-run`` itself on a pre-NMS graph) puts in the deploy graph. Its NMS flavour is an older deploy graph
without the ``max_score`` output.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.runtime.app import RunOptions, run_live
from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
from edge.runtime.pipeline import Pipeline, PipelineConfig
from edge.runtime.score_watch import ScoreWatch, no_detections_message, suggested_threshold
from edge.runtime.sources import open_source, parse_source
from edge.runtime.synthetic import draw_red_box, red_box_model
from tests.runtime.edge_run import edge_run_command, edge_run_env

pytest.importorskip("onnx")

#: the stats JSON keys edge-run wrote before max_score existed: they all stay
STATS_KEYS = {"frames", "detections", "detections_invalid_dropped", "elapsed_s", "e2e_fps", "steady_fps",
              "stages_ms", "glass_to_glass_ms", "output_errors", "meta"}
WARNING = "no detections in"


def _frames(folder: Path, n: int, red: bool = False) -> Path:
    folder.mkdir()
    for i in range(n):
        f = np.full((120, 160, 3), 128, np.uint8)
        if red:
            draw_red_box(f, (20 + 4 * i, 30, 110, 90))
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    return folder


def _warnings(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and WARNING in r.getMessage()]


def _run(model: Path, frames: Path, conf: float = 0.0):
    backend = OnnxRuntimeBackend(model, OrtOptions(threads=1, spin=False))
    try:
        source = open_source(parse_source(str(frames)))
        return Pipeline(source, backend, [], PipelineConfig(conf_threshold=conf, log_every_s=0)).run()
    finally:
        backend.close()


def test_edge_run_says_why_it_sees_nothing_with_the_max_score(tmp_path):
    """The real edge-run on a pre-NMS graph (deploy graph made by edge surgery, with max_score): one WARNING
    naming the max score, the graph's threshold and the fix; the stats JSON keeps today's keys and gains
    max_score."""
    red_box_model(tmp_path / "red.onnx", size=(96, 128), outputs="prenms")
    frames = _frames(tmp_path / "grey", 4)
    stats = tmp_path / "stats.json"
    proc = subprocess.run(edge_run_command(tmp_path, ["--source", str(frames), "--stats-json", str(stats)]),
                          cwd=str(tmp_path), env=edge_run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if WARNING in line]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "WARNING" in lines[0]
    assert "no detections in 4 frames: max score 0.1 < score threshold 0.25 (the graph's)" in lines[0]
    assert "--score-threshold 0.09" in lines[0] and "docs/troubleshooting.md#" in lines[0]
    data = json.loads(stats.read_text())
    assert STATS_KEYS <= set(data), sorted(STATS_KEYS - set(data))
    assert data["detections"] == 0
    assert data["max_score"] == pytest.approx(0.1, abs=1e-6)
    assert data["score_threshold"] == {"graph": 0.25, "conf": 0.0}


def test_each_stream_says_so_once_and_the_stats_carry_max_score_per_stream(tmp_path, caplog):
    """Two streams: one warning per stream that saw nothing (none for the stream with detections); max_score
    per stream and in total."""
    model = red_box_model(tmp_path / "red.onnx", size=(96, 128), outputs="prenms")
    grey = _frames(tmp_path / "grey", 3)
    red = _frames(tmp_path / "red", 3, red=True)
    stats = tmp_path / "stats.json"
    caplog.set_level(logging.WARNING)
    code = run_live(RunOptions(model=str(model), source=[str(grey), str(red)], headless=True, threads=1,
                               stats_json=str(stats), log_every=0))
    assert code == 0
    lines = _warnings(caplog)
    assert lines == ["stream 0: no detections in 3 frames: max score 0.1 < score threshold 0.25 (the graph's); "
                     "re-run edge surgery on the pre-NMS model with --score-threshold 0.09 (--conf can only raise "
                     "it), or check the model (see docs/troubleshooting.md#no-detections-the-highest-score-stays-"
                     "below-the-threshold)"]
    data = json.loads(stats.read_text())
    assert STATS_KEYS <= set(data)
    by_id = {s["id"]: s for s in data["streams"]}
    assert by_id["0"]["max_score"] == pytest.approx(0.1, abs=1e-6)
    assert by_id["1"]["max_score"] == pytest.approx(0.9, abs=1e-6) and by_id["1"]["detections"] == 3
    assert data["max_score"] == pytest.approx(0.9, abs=1e-6)


def test_an_older_graph_without_max_score_names_the_threshold_only(tmp_path, caplog):
    """A deploy graph without the max_score output that returns nothing: the warning says so, without a
    score it cannot know; the stats record max_score null."""
    model = red_box_model(tmp_path / "red.onnx", size=(96, 128))  # NMS inside, no max_score output
    caplog.set_level(logging.WARNING)
    stats = _run(model, _frames(tmp_path / "grey", 3))
    (line,) = _warnings(caplog)
    assert line.startswith("no detections in 3 frames at the graph's score threshold")
    assert "does not report its highest score" in line and "max score" not in line
    assert stats.to_dict()["max_score"] is None


def test_conf_that_filters_everything_is_named_with_the_score_it_stopped(tmp_path, caplog):
    """--conf above every score: the warning names --conf and the highest score it dropped."""
    model = red_box_model(tmp_path / "red.onnx", size=(96, 128))
    caplog.set_level(logging.WARNING)
    stats = _run(model, _frames(tmp_path / "red", 3, red=True), conf=0.95)
    (line,) = _warnings(caplog)
    assert "no detections in 3 frames: max score 0.9 < --conf 0.95; lower it with --conf 0.89" in line
    assert stats.to_dict()["max_score"] == pytest.approx(0.9, abs=1e-6)
    caplog.clear()
    _run(model, _frames(tmp_path / "red2", 3, red=True), conf=0.5)  # detections: nothing to say
    assert _warnings(caplog) == []


def test_a_long_run_warns_once_after_the_first_frames(caplog):
    """Mid-run (a camera that never ends), once after ``warn_after`` frames with nothing, not again at the end."""
    caplog.set_level(logging.WARNING)
    watch = ScoreWatch(0.25, warn_after=5)
    for i in range(12):
        watch.observe(0.01 * i, 0)
        assert len(_warnings(caplog)) == (1 if i >= 4 else 0)
    watch.finish()
    (line,) = _warnings(caplog)
    assert line.startswith("no detections in 5 frames: max score 0.04 < score threshold 0.25")


def test_a_failed_run_records_the_figures_without_the_warning(caplog):
    """A run that failed (its error says more) is not told it saw nothing; the stats still get the figures."""
    from edge.runtime.stats import RunStats

    caplog.set_level(logging.WARNING)
    watch, stats = ScoreWatch(0.25), RunStats()
    watch.observe(0.02, 0)
    watch.finish(stats, warn=False)
    assert _warnings(caplog) == []
    assert stats.to_dict()["max_score"] == pytest.approx(0.02)


def test_suggested_threshold_is_round_and_below_the_score():
    assert [suggested_threshold(s) for s in (0.048, 0.23, 0.0012, 0.1, 0.9)] == [0.04, 0.2, 0.001, 0.09, 0.89]


@pytest.mark.parametrize("nms", ["efficient", "onnx"])
def test_api_contract_a_tensorrt_engine_carries_max_score_as_its_fifth_binding(tmp_path, nms):
    """API-contract test with the TensorRT stand-in (tests/trt_standin.py, not TensorRT): an engine built
    from a deploy graph with max_score has five output bindings; the backend keeps the four in their order
    and hands max_score on, as ONNX Runtime computes it."""
    from edge.export.surgery import SurgeryConfig, surgery_file
    from edge.runtime.tensorrt_backend import TensorRTBackend
    from tests.doctor.device_standin import _engine_io
    from tests.runtime.test_standins import make_pycuda, make_tensorrt, onnx_engine_bytes

    pytest.importorskip("onnxruntime_extensions")
    pre = red_box_model(tmp_path / "red.onnx", size=(96, 128), outputs="prenms")
    deploy = tmp_path / f"red.{nms}.onnx"
    surgery_file(pre, deploy, SurgeryConfig(nms=nms))
    io = _engine_io(str(deploy), None)
    assert [n for n, is_input, _, _ in io if not is_input][-1] == "max_score"
    engine = tmp_path / "red.engine"
    engine.write_bytes(onnx_engine_bytes(str(deploy), io))
    drv, st = make_pycuda()
    frames = np.full((1, 96, 128, 3), 128, np.uint8)
    with TensorRTBackend(engine, trt_module=make_tensorrt("10.3.0", st), cuda_driver=drv, check_key=False,
                         sidecar=json.loads(deploy.with_suffix(".json").read_text())) as backend:
        assert [s.name for s in backend.output_specs] == ["num_detections", "detection_boxes", "detection_scores",
                                                          "detection_classes"]
        det = backend.infer(frames)
    assert det.num.tolist() == [0]
    assert det.max_score is not None and det.max_score.tolist() == pytest.approx([0.1], abs=1e-6)
    assert det.peak(0) == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("peak,graph,conf,expected", [
    (0.048, 0.25, 0.0, "max score 0.048 < score threshold 0.25 (the graph's); re-run edge surgery on the pre-NMS "
                       "model with --score-threshold 0.04"),
    (0.1, 0.25, 0.5, "max score 0.1 < score threshold 0.25 (the graph's) (and --conf 0.5 above it)"),
    (0.3, 0.25, 0.5, "max score 0.3 < --conf 0.5; lower it with --conf 0.29"),
    (0.99998, 0.3, 0.99999, "max score 0.99998 < --conf 0.99999; lower it with --conf 0.9"),
    (0.05, None, 0.0, "max score 0.05 did not pass the graph's score threshold (not recorded in its sidecar)"),
    (0.3, 0.25, 0.0, "although the max score 0.3 reached score threshold 0.25 (the graph's): were they dropped "
                     "as invalid"),
    (None, 0.25, 0.0, "at score threshold 0.25 (the graph's); this graph does not report its highest score"),
])
def test_the_message_names_the_threshold_that_held_the_scores_back(peak, graph, conf, expected):
    line = no_detections_message(40, peak, graph, conf)
    assert line.startswith("no detections in 40 frames") and expected in line, line
    assert line.endswith("(see docs/troubleshooting.md#no-detections-the-highest-score-stays-below-the-threshold)")
