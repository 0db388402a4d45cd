"""``edge bench``: the machinery, not the speed.

Real ONNX Runtime sessions on the synthetic red-box detector (a real ONNX file), real video files written
and decoded by OpenCV, the real report files. Ratios between the modes are never asserted (the machine is
shared; benchmarks print figures): the tests check that every mode ran on every frame, that the numbers
are consistent with each other and with physics (a pipeline cannot be faster than its slowest serial
stage), and that the reports say what the document says.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bench.backends import default_backend_factory
from edge.bench.clip import make_clip
from edge.bench.config import BenchCase, BenchConfig
from edge.bench.machine import machine_info, rss_summary
from edge.bench.report import case_label, load_doc, markdown_report, write_reports
from edge.bench.runner import run_bench
from edge.cli.main import main
from edge.errors import EdgeError, ModelError
from edge.runtime.backend import LAYOUT_FLOAT_NCHW_RGB
from edge.runtime.synthetic import draw_red_box, red_box_model

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ("raw_fps", "e2e_fps", "naive_fps", "rss_growth_mb")
FRAMES = 30


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return red_box_model(tmp_path_factory.mktemp("bench") / "red.onnx", size=(96, 128))


@pytest.fixture(scope="module")
def doc(model, tmp_path_factory):
    """One bench on the bench's own generated clip (small, 30 frames, 2 interleaved rounds)."""
    config = BenchConfig(frames=FRAMES, repeats=2, threads=1, clip_size=(160, 120), clip_unique=8, warmup=2)
    return run_bench([BenchCase(model)], config, workdir=tmp_path_factory.mktemp("work"))


def _source_video(path: Path, n: int, size=(200, 150)) -> Path:
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((h, w, 3), 40, np.uint8)
        writer.write(draw_red_box(frame, (10 + 2 * i, 30, 90 + 2 * i, 80)))
    writer.release()
    return path


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


def test_raw_parallel_runs_every_call_from_several_threads(model):
    from edge.bench.measure import measure_raw_parallel

    backend = default_backend_factory(model, None, 1)
    frame = np.full((120, 160, 3), 40, np.uint8)
    calls = []
    real = backend._infer

    def counting(batch):
        calls.append(threading.get_ident())
        return real(batch)

    backend._infer = counting
    out = measure_raw_parallel(backend, frame, 21, workers=3, warmup=1)
    assert out["fps"] > 0 and out["iterations"] == 21 and out["workers"] == 3
    assert len(calls) == 21 + 3 and len(set(calls)) == 3  # warm-up + measured, from three threads
    backend.concurrent_infer = False
    with pytest.raises(EdgeError, match="concurrent_infer"):
        measure_raw_parallel(backend, frame, 4, workers=2)
    backend.close()


def test_reports_markdown_and_png(doc, tmp_path):
    paths = write_reports(doc, tmp_path / "rep")
    md = paths["markdown"].read_text()
    case = doc["cases"][0]
    assert case_label(case) == "fp32 96x128"
    assert "| fp32 96x128 |" in md
    assert f"{case['raw_fps']:.1f}" in md and f"{case['e2e_fps']:.1f}" in md and f"{case['naive_fps']:.1f}" in md
    assert "e2e / raw" in md and "glass-to-glass" in md and doc["machine"]["cpu"] in md
    # the table is well formed: every row has as many cells as its header
    for table in md.split("\n\n"):
        rows = [r for r in table.splitlines() if r.startswith("|")]
        if rows:
            assert len({r.count("|") for r in rows}) == 1, table
    img = cv2.imread(str(paths["chart"]))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 10  # drawn, not blank


def test_report_of_several_models_labels_each(doc, tmp_path):
    other = json.loads(json.dumps(doc["cases"][0]))
    other.update(model_name="red.int8.onnx", precision="int8", input=[320, 320], e2e_fps=12.5)
    two = dict(doc, cases=[doc["cases"][0], other])
    md = markdown_report(two)
    assert "| fp32 96x128 red.onnx |" in md and "| int8 320x320 red.int8.onnx | " in md and "12.5" in md
    path = tmp_path / "b.json"
    path.write_text(json.dumps(two))
    assert load_doc(path)["cases"][1]["precision"] == "int8"
    path.write_text("{}")
    with pytest.raises(EdgeError, match="not an `edge bench` document"):
        load_doc(path)


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


def test_make_clip_writes_the_frames_asked_for(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 25, size=(96, 64), unique=5)
    cap = cv2.VideoCapture(str(clip))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 25 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 96
    cap.release()


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


def test_cli_end_to_end(model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", str(model), "--source", "test://160x120?frames=40", "--frames", "20", "--repeats", "1",
               "--threads", "1", "--json", str(out), "--report-dir", str(tmp_path / "rep"), "--no-raw-reference"])
    assert rc == 0
    doc = json.loads(out.read_text())
    for key in REQUIRED:
        assert doc[key] >= 0
    _check_case(doc["cases"][0], 20)
    assert doc["command"].startswith(f"edge bench {model} --source test://160x120?frames=40 --frames 20")
    assert doc["command"].endswith("--no-raw-reference --json " + str(out) + " --report-dir " + str(tmp_path / "rep"))
    assert (tmp_path / "rep" / "bench.md").read_text().count("| fp32 96x128 |") == 2
    assert (tmp_path / "rep" / "bench.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "e2e" in printed and f"wrote {out}" in printed


def test_cli_errors_are_one_clear_line(model, tmp_path, caplog):
    out = str(tmp_path / "b.json")
    assert main(["bench", str(tmp_path / "missing.onnx"), "--json", out]) == 2
    assert "not found" in caplog.text
    assert main(["bench", str(model), "--imgsz", "320", "--frames", "5", "--json", out,
                 "--source", "test://64x48?frames=5"]) == 2
    assert "fixed 96x128 input" in caplog.text
    assert main(["bench", str(model), "--json", str(tmp_path / "nowhere" / "b.json")]) == 2
    assert "does not exist" in caplog.text
    with pytest.raises(SystemExit):
        main(["bench", str(model), "--imgsz", "big", "--json", out])


def test_bench_path_imports_no_torch(model, tmp_path):
    """The bench runs where the runtime runs (a Jetson without torch)."""
    code = (
        "import sys, edge.bench, edge.bench.report\n"
        "from edge.cli.main import main\n"
        f"rc = main(['-q', 'bench', {str(model)!r}, '--source', 'test://64x48?frames=8', '--frames', '6', "
        f"'--repeats', '1', '--threads', '1', '--no-raw-reference', '--json', {str(tmp_path / 'b.json')!r}])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_bench_without_a_model_runs_the_bundled_one(tmp_path):
    from edge.bundled import ASSETS, DEPLOY_MODEL

    if not (ASSETS / DEPLOY_MODEL).is_file():
        pytest.skip(f"no bundled model in {ASSETS}")
    out = tmp_path / "b.json"
    assert main(["bench", "--source", "test://160x120?frames=6", "--frames", "6", "--repeats", "1", "--threads", "1",
                 "--no-raw-reference", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert Path(doc["model"]).name == DEPLOY_MODEL and doc["input"] == [320, 320]
    _check_case(doc["cases"][0], 6)


# -- runtime change made for the bench's targets: host stages at a lower priority than inference ---------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature")
@pytest.mark.parametrize("host_nice", [0, 7])
def test_pipeline_host_threads_run_below_the_inference_thread(model, tmp_path, host_nice):
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
    from edge.runtime.pipeline import Pipeline, PipelineConfig
    from edge.runtime.priority import thread_nice
    from edge.runtime.sinks import Sink
    from edge.runtime.sources import open_source, parse_source

    seen = {}

    class Probe(OnnxRuntimeBackend):
        def bind_thread(self) -> None:
            seen["infer"] = thread_nice()

    class NiceSink(Sink):
        def write(self, packet) -> None:
            seen["sink"] = thread_nice()

    class NiceSource(type(open_source(parse_source("test://64x48?frames=4")))):
        def read(self, out=None):
            seen["capture"] = thread_nice()
            return super().read(out)

    base = thread_nice()
    source = NiceSource(parse_source("test://64x48?frames=4"))
    with Probe(model, OrtOptions(threads=1)) as backend:
        stats = Pipeline(source, backend, [NiceSink()], PipelineConfig(host_nice=host_nice, log_every_s=0)).run()
    assert stats.counters.written == 4
    expected = min(19, base + host_nice)
    assert seen == {"infer": base, "sink": expected, "capture": expected}
    assert thread_nice() == base  # the caller's own priority is untouched


def test_priority_helper_never_touches_the_main_thread_and_checks_its_config():
    import threading

    from edge.runtime.pipeline import PipelineConfig
    from edge.runtime.priority import lower_thread_priority, thread_nice

    before = thread_nice()
    assert lower_thread_priority(5) is False and thread_nice() == before  # main thread: the process id
    got = {}

    def worker():
        got["zero"] = lower_thread_priority(0)
        got["applied"] = lower_thread_priority(3)
        got["nice"] = thread_nice()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert got["zero"] is False
    if sys.platform.startswith("linux"):
        assert got["applied"] is True and got["nice"] == min(19, before + 3)
    assert thread_nice() == before
    with pytest.raises(EdgeError, match="host_nice"):
        PipelineConfig(host_nice=25).validate()


# -- runtime change made for the bench's targets: MJPEG .avi written by libjpeg-turbo + FFmpeg's muxer -----


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_sink_writes_every_frame_faithfully(tmp_path, suffix):
    from types import SimpleNamespace

    from edge.runtime.sinks import VideoFileSink, raw_mjpeg_supported

    frames = []
    for i in range(12):
        f = np.full((120, 160, 3), 60, np.uint8)
        frames.append(draw_red_box(f, (10 + 5 * i, 20, 70 + 5 * i, 90)))
    sink = VideoFileSink(tmp_path / f"out{suffix}", fps=24)
    for f in frames:
        sink.write(SimpleNamespace(frame=f))
    sink.close()
    if suffix == ".avi" and raw_mjpeg_supported():
        assert sink.encoder == "imencode+mux"
    else:
        assert sink.encoder == "opencv"
    cap = cv2.VideoCapture(str(tmp_path / f"out{suffix}"))
    got = []
    while True:
        ok, g = cap.read()
        if not ok:
            break
        got.append(g)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(24.0)
    cap.release()
    assert len(got) == len(frames)
    for a, b in zip(got, frames):  # same frames, in order (the box moves 5 px a frame)
        assert cv2.PSNR(a, b) > 30
    with pytest.raises(EdgeError, match="jpeg_quality"):
        VideoFileSink(tmp_path / "q.avi", jpeg_quality=101)


def test_sizes_apply_to_free_size_graphs_and_fixed_ones_are_skipped(model, tmp_path):
    config = BenchConfig(frames=6, repeats=1, threads=1, warmup=1, raw_reference=False)
    cases = [BenchCase(model, (96, 128)), BenchCase(model, (320, 320))]
    doc = run_bench(cases, config, "test://160x120?frames=6", workdir=tmp_path)
    assert [c["input"] for c in doc["cases"]] == [[96, 128]]
    assert doc["skipped"][0]["case"] == "red.onnx@320x320" and "fixed 96x128" in doc["skipped"][0]["reason"]


def test_precision_is_read_from_the_graph_when_no_sidecar_says(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge.bench.backends import onnx_precision

    def save(name, nodes, inits, dtype=TensorProto.FLOAT):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, [1, 4])],
                                  [helper.make_tensor_value_info("y", dtype, [1, 4])], inits)
        path = tmp_path / name
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    w32 = numpy_helper.from_array(np.ones(4, np.float32), "w")
    w16 = numpy_helper.from_array(np.ones(4, np.float16), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    assert onnx_precision(save("a.onnx", [helper.make_node("Add", ["x", "w"], ["y"])], [w32])) == "fp32"
    assert onnx_precision(save("b.onnx", [helper.make_node("Add", ["x", "w"], ["y"])], [w16],
                               TensorProto.FLOAT16)) == "fp16"
    qdq = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    assert onnx_precision(save("c.onnx", qdq, [scale, zero])) == "int8"
