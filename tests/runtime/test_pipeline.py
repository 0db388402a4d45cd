"""The threaded loop end to end on real files and a real ONNX model, and the ``edge-run`` command.

The model is the synthetic red-box detector: a red rectangle drawn at a known place in each frame must
come back, through letterbox (with padding), ONNX Runtime and the inverse mapping, at that place in
frame pixels, in the JSON lines, with the video written and the statistics counted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.model_input import LAYOUT_FLOAT_NCHW_RGB
from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
from edge.runtime.pipeline import Pipeline, PipelineConfig, naive_loop
from edge.runtime.sinks import JsonLinesSink, Sink, VideoFileSink, partial_path
from edge.runtime.sources import TestPatternSource, open_source, parse_source
from edge.runtime.synthetic import draw_red_box, red_box_model
from tests.paths import REPO as ROOT

W, H = 320, 240  # frames; the model input is 128x128, so letterbox scales by 0.4 and pads 16 rows each side


def _truth(i: int):
    x1 = 20 + 6 * i
    return (x1, 60, x1 + 100 + 2 * i, 140)  # wide boxes, moving right


def _frame(i: int) -> np.ndarray:
    f = np.full((H, W, 3), 30, np.uint8)
    f[:, :, 0] = 90  # bluish background
    return draw_red_box(f, _truth(i))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return red_box_model(tmp_path_factory.mktemp("pipeline") / "red.onnx", size=(128, 128))


def _video(path: Path, n: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (W, H))
    for i in range(n):
        writer.write(_frame(i))
    writer.release()
    return path


def _images(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), _frame(i))
    return folder


def _check_detections(jsonl: Path, n: int, tol: float) -> None:
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(n))
    for r in records:
        assert len(r["detections"]) == 1, r
        det = r["detections"][0]
        assert det["label"] == "wide" and det["score"] == pytest.approx(0.9, abs=1e-4)
        np.testing.assert_allclose(det["box"], _truth(r["frame"]), atol=tol)


def test_pipeline_end_to_end_exact_boxes_video_and_stats(model, tmp_path):
    n = 24
    source = open_source(parse_source(str(_images(tmp_path / "frames", n))))
    backend = OnnxRuntimeBackend(model, OrtOptions(threads=1, spin=False))
    jsonl, video = tmp_path / "dets.jsonl", tmp_path / "out.mp4"
    sinks = [JsonLinesSink(jsonl, backend.info.class_names), VideoFileSink(video, fps=30)]
    stats = Pipeline(source, backend, sinks, PipelineConfig(log_every_s=0)).run()
    backend.close()
    # 1 input pixel = 2.5 frame pixels; a resized edge pixel may fall under the red threshold
    _check_detections(jsonl, n, tol=2.6)
    c = stats.counters
    assert (c.captured, c.inferred, c.written, c.dropped, c.detections) == (n, n, n, 0, n)
    cap = cv2.VideoCapture(str(video))
    frames = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if frames == 5:  # the box was drawn on the frame: its top edge is not background any more
            x1, y1, x2, _ = _truth(5)
            assert np.abs(img[y1, x1 + 30].astype(int) - [90, 30, 30]).sum() > 60
        frames += 1
    cap.release()
    assert frames == n
    d = stats.to_dict()
    assert set(d["stages_ms"]) == {"capture", "preprocess", "infer", "postprocess", "draw", "sink"}
    assert d["glass_to_glass_ms"]["count"] == n and d["glass_to_glass_ms"]["p50_ms"] > 0
    assert d["e2e_fps"] > 0 and stats.meta["end_reason"] == "end of stream"


def test_pipeline_from_a_video_file_float_layout(tmp_path):
    """Float NCHW RGB input: channel order and normalization in preprocessing must be right."""
    n = 10
    model = red_box_model(tmp_path / "red_f32.onnx", size=(128, 128), layout=LAYOUT_FLOAT_NCHW_RGB)
    source = open_source(parse_source(str(_video(tmp_path / "clip.avi", n))))
    backend = OnnxRuntimeBackend(model, OrtOptions(threads=1))
    jsonl = tmp_path / "dets.jsonl"
    stats = Pipeline(source, backend, [JsonLinesSink(jsonl, ["tall", "wide"])], PipelineConfig(log_every_s=0)).run()
    backend.close()
    _check_detections(jsonl, n, tol=6.0)  # MJPG compression blurs the edges a little
    assert stats.counters.written == n and stats.counters.dropped == 0


def test_naive_loop_gives_the_same_detections(model, tmp_path):
    folder = _images(tmp_path / "frames", 6)
    backend = OnnxRuntimeBackend(model, OrtOptions(threads=1))
    out_a, out_b = tmp_path / "threaded.jsonl", tmp_path / "naive.jsonl"
    Pipeline(open_source(parse_source(str(folder))), backend, [JsonLinesSink(out_a)],
             PipelineConfig(log_every_s=0)).run()
    src = open_source(parse_source(str(folder)))
    src.open()
    sink = JsonLinesSink(out_b)
    stats = naive_loop(src, backend, [sink])
    sink.close()
    backend.close()
    strip = [{k: v for k, v in json.loads(x).items() if k != "time"} for x in out_a.read_text().splitlines()]
    strip_b = [{k: v for k, v in json.loads(x).items() if k != "time"} for x in out_b.read_text().splitlines()]
    assert strip == strip_b and stats.counters.written == 6


def test_max_frames_and_stop_from_another_thread(model, tmp_path):
    backend = OnnxRuntimeBackend(model, OrtOptions(threads=1))
    stats = Pipeline(TestPatternSource(parse_source("test://160x120")), backend, [],
                     PipelineConfig(max_frames=15, log_every_s=0)).run()
    assert stats.counters.written == 15 and "max-frames" in stats.meta["end_reason"]

    video = tmp_path / "live.mp4"
    pipe = Pipeline(TestPatternSource(parse_source("test://160x120?live=1&fps=60")), backend,
                    [VideoFileSink(video, fps=60)], PipelineConfig(log_every_s=0))
    stopped_at = []

    def stop_after_frames() -> None:  # another thread: stop once a few frames went through
        deadline = time.perf_counter() + 60
        while pipe.stats.counters.written < 6 and time.perf_counter() < deadline:
            time.sleep(0.01)
        stopped_at.append(time.perf_counter())
        pipe.stop()

    threading.Thread(target=stop_after_frames, daemon=True).start()
    stats = pipe.run()
    assert stopped_at and time.perf_counter() - stopped_at[0] < 5  # stop() ends a live run promptly
    assert stats.counters.written >= 6 and video.exists() and not partial_path(video).exists()
    backend.close()


class ExplodingSink(Sink):
    name = "exploding"

    def __init__(self) -> None:
        self.closed = False

    def write(self, packet) -> None:
        if packet.index == 3:
            raise RuntimeError("disk full")

    def close(self) -> None:
        self.closed = True


def test_a_failing_stage_stops_the_run_raises_and_still_finalizes_outputs(model, tmp_path):
    backend = OnnxRuntimeBackend(model, OrtOptions(threads=1))
    video, bad = tmp_path / "out.mp4", ExplodingSink()
    pipe = Pipeline(TestPatternSource(parse_source("test://160x120")), backend, [VideoFileSink(video), bad],
                    PipelineConfig(log_every_s=0))
    with pytest.raises(RuntimeError, match="disk full"):
        pipe.run()
    assert bad.closed and video.exists() and not partial_path(video).exists()
    backend.close()


def test_a_backend_that_cannot_start_releases_source_and_sinks(model, tmp_path):
    class NoGpu(OnnxRuntimeBackend):
        def bind_thread(self) -> None:
            raise EdgeError("CUDA is not usable here")

    backend = NoGpu(model, OrtOptions(threads=1))
    source = TestPatternSource(parse_source("test://64x48"))
    bad = ExplodingSink()
    with pytest.raises(EdgeError, match="CUDA"):
        Pipeline(source, backend, [bad], PipelineConfig(log_every_s=0)).run()
    assert bad.closed and source._background is None  # closed
    backend.close()


def test_static_batch_above_one_is_refused(tmp_path):
    import onnx

    path = red_box_model(tmp_path / "red.onnx")
    m = onnx.load(str(path))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(m, str(path))
    try:
        backend = OnnxRuntimeBackend(path)
    except EdgeError:
        return  # refusing at load time is fine too
    with pytest.raises(EdgeError, match="batch"):
        Pipeline(TestPatternSource(parse_source("test://")), backend, [])
    backend.close()


# -- the command -------------------------------------------------------------------------------------


def test_edge_run_headless_machine_writes_video_detections_and_stats(model, tmp_path, monkeypatch, capsys, caplog):
    from edge.cli.run import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    folder = _images(tmp_path / "frames", 8)
    out, dets, stats = tmp_path / "out.mp4", tmp_path / "d.jsonl", tmp_path / "stats.json"
    rc = main([str(model), "--source", str(folder), "--output", str(out), "--detections-out", str(dets),
               "--stats-json", str(stats), "--threads", "1"])
    assert rc == 0
    assert "no display" in caplog.text  # a message, not an abort
    assert "end-to-end" in capsys.readouterr().out
    _check_detections(dets, 8, tol=2.6)
    s = json.loads(stats.read_text())
    assert s["frames"]["written"] == 8 and s["frames"]["dropped"] == 0 and "infer" in s["stages_ms"]
    assert out.exists()


def test_edge_run_errors_are_one_clear_line(tmp_path, monkeypatch, caplog):
    import edge.bundled
    import edge.cli.run as run_cli

    monkeypatch.setattr(edge.bundled, "ASSETS", tmp_path / "no-assets")
    assert run_cli.main(["--source", "test://", "--headless"]) == 2
    assert "bundled deploy model" in caplog.text and "is missing" in caplog.text
    caplog.clear()
    model = red_box_model(tmp_path / "red.onnx")
    assert run_cli.main([str(model), "--camera", "97", "--headless"]) == 2
    assert "/dev/video97" in caplog.text and "v4l2-ctl" in caplog.text
    caplog.clear()
    assert run_cli.main([str(model), "--backend", "tensorrt", "--source", "test://"]) == 2
    assert "tensorrt is required" in caplog.text and "onnxruntime backend" in caplog.text


def _start(model: Path, out: Path, tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DISPLAY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli.run", str(model), "--source", "test://160x120?live=1&fps=30",
         "--output", str(out), "--headless", "--threads", "1", "--log-every", "0"],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("sig, expected_rc", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_edge_run_finalizes_the_video_on_signals(model, tmp_path, sig, expected_rc):
    out = tmp_path / "live.mp4"
    proc = _start(model, out, tmp_path)
    try:
        deadline = time.time() + 30
        while not partial_path(out).exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert partial_path(out).exists(), proc.communicate()[0].decode()
        time.sleep(0.3)
        proc.send_signal(sig)
        output = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == expected_rc, output
    assert out.exists() and not partial_path(out).exists(), output
    cap = cv2.VideoCapture(str(out))
    assert cap.read()[0], "the finalized video must be readable"
    cap.release()


def test_runtime_path_imports_neither_torch_nor_onnx(model, tmp_path):
    """edge-run on an ONNX-NMS graph must work on a Jetson without torch (and without the onnx package)."""
    code = (
        "import sys\n"
        "from edge.cli.run import main\n"
        f"rc = main([{str(model)!r}, '--source', 'test://64x48', '--max-frames', '3', '--headless',"
        f" '--output', {str(tmp_path / 'o.avi')!r}, '--threads', '1', '-q'])\n"
        "import edge.runtime.tensorrt_backend, edge.cuda, edge.runtime.sinks  # importable without GPU libs\n"
        "bad = sorted(m for m in ('torch', 'onnx', 'tensorrt', 'pycuda', 'onnx_graphsurgeon') if m in sys.modules)\n"
        "print('RC', rc, 'IMPORTED', bad)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=120)
    assert "RC 0 IMPORTED []" in out.stdout, out.stdout + out.stderr


def test_edge_run_appends_nms_to_a_pre_nms_onnx_and_reuses_it(tmp_path, monkeypatch, caplog):
    pytest.importorskip("onnx_graphsurgeon")
    from edge.cli.run import main

    monkeypatch.delenv("DISPLAY", raising=False)
    caplog.set_level(logging.INFO)
    pre = red_box_model(tmp_path / "pre.onnx", size=(128, 128), outputs="prenms")
    folder = _images(tmp_path / "frames", 4)
    dets = tmp_path / "d.jsonl"
    args = [str(pre), "--source", str(folder), "--headless", "--threads", "1", "--detections-out", str(dets)]
    assert main(args) == 0
    assert (tmp_path / "pre.nms.onnx").exists() and "appending ONNX NMS" in caplog.text
    _check_detections(dets, 4, tol=2.6)
    caplog.clear()
    assert main(args) == 0
    assert "made from it by edge surgery" in caplog.text  # same bytes: reused, not redone


def test_edge_run_exports_a_training_checkpoint(tmp_path, monkeypatch, caplog):
    """A checkpoint runs after export + surgery (where torch is installed; a Jetson gets the commands)."""
    torch = pytest.importorskip("torch")
    from edge.cli.run import main
    from edge.models import build_model
    from edge.train.checkpoint import build_card, save_checkpoint

    torch.manual_seed(0)
    model = build_model("yolov3-tiny", num_classes=2, input_size=(64, 64), width=0.25)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, {"card": build_card(model, class_names=["a", "b"]), "model": model.state_dict()})
    monkeypatch.delenv("DISPLAY", raising=False)
    stats = tmp_path / "s.json"
    rc = main([str(ckpt), "--source", "test://96x64", "--max-frames", "3", "--headless", "--threads", "1",
               "--stats-json", str(stats)])
    assert rc == 0, caplog.text
    assert (tmp_path / "tiny_deploy" / "tiny.nms.onnx").exists()
    assert json.loads(stats.read_text())["frames"]["written"] == 3
