"""Parallel inference workers: frames inferred side by side come out in capture order, failures stop the
run cleanly, backends that cannot take concurrent calls are refused, and ``edge.runtime.plan`` picks the
workers, threads and host priority that ``edge-run`` and ``edge bench`` use.

Real ONNX Runtime sessions on the synthetic red-box detector, real image folders and video files.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError, ModelError
from edge.runtime.backend import conformance_report
from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
from edge.runtime.pipeline import Pipeline, PipelineConfig
from edge.runtime.plan import InferencePlan, plan_inference
from edge.runtime.sinks import JsonLinesSink, Sink, VideoFileSink, partial_path
from edge.runtime.sources import open_source, parse_source
from edge.runtime.synthetic import draw_red_box, red_box_model

W, H = 320, 240


def _truth(i: int):
    x1 = 10 + 7 * i
    return (x1, 50 + i, x1 + 90, 150 + i)


def _frame(i: int) -> np.ndarray:
    f = np.full((H, W, 3), 30, np.uint8)
    f[:, :, 0] = 90
    return draw_red_box(f, _truth(i))


def _images(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), _frame(i))
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return red_box_model(tmp_path_factory.mktemp("parallel") / "red.onnx", size=(128, 128))


class Staggered(OnnxRuntimeBackend):
    """A real ONNX Runtime backend whose inference takes longer on some frames (input-dependent), so frames
    inferred side by side finish out of order. Records the order in which inferences finished."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.finished = []
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def _infer(self, batch):
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            out = super()._infer(batch)
            # the red box's left edge (input pixels) tells the frame; every third frame is slow
            cols = np.flatnonzero((batch[0, :, :, 2] > 150).any(axis=0))
            frame = int(round((cols[0] / 0.4 - 10) / 7)) if cols.size else -1
            if frame >= 0 and frame % 3 == 0:
                time.sleep(0.03)
            with self._lock:
                self.finished.append(frame)
            return out
        finally:
            with self._lock:
                self.active -= 1


def _records(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_workers_finish_out_of_order_and_frames_still_come_out_in_order(model, tmp_path, workers):
    n = 30
    source = open_source(parse_source(str(_images(tmp_path / "frames", n))))
    backend = Staggered(model, OrtOptions(threads=1, spin=False))
    jsonl, video = tmp_path / "d.jsonl", tmp_path / "out.avi"
    stats = Pipeline(source, backend, [JsonLinesSink(jsonl, backend.info.class_names), VideoFileSink(video, fps=30)],
                     PipelineConfig(log_every_s=0, infer_workers=workers, warmup=0)).run()
    backend.close()
    assert backend.most_active >= 2  # inferences really overlapped
    finished = [f for f in backend.finished if f >= 0]
    assert sorted(finished) == list(range(n)) and finished != sorted(finished)  # and finished out of order
    records = _records(jsonl)
    assert [r["frame"] for r in records] == list(range(n))  # yet every sink saw capture order
    for r in records:
        assert len(r["detections"]) == 1
        np.testing.assert_allclose(r["detections"][0]["box"], _truth(r["frame"]), atol=2.6)
    c = stats.counters
    assert (c.captured, c.inferred, c.written, c.dropped) == (n, n, n, 0)
    assert stats.to_dict()["stages_ms"]["infer"]["count"] == n and stats.meta["infer_workers"] == workers
    # the video holds the frames in order too: the drawn box moves right frame after frame
    cap = cv2.VideoCapture(str(video))
    lefts = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        red = (img[:, :, 2] > 150) & (img[:, :, 0] < 80)
        lefts.append(int(np.flatnonzero(red.any(axis=0))[0]))
    cap.release()
    assert len(lefts) == n and lefts == sorted(lefts)


def test_parallel_and_single_worker_runs_give_identical_detections(model, tmp_path):
    folder = _images(tmp_path / "frames", 12)
    outs = []
    for workers in (1, 2):
        backend = OnnxRuntimeBackend(model, OrtOptions(threads=1, spin=False))
        out = tmp_path / f"w{workers}.jsonl"
        Pipeline(open_source(parse_source(str(folder))), backend, [JsonLinesSink(out)],
                 PipelineConfig(log_every_s=0, infer_workers=workers)).run()
        backend.close()
        outs.append([{k: v for k, v in r.items() if k != "time"} for r in _records(out)])
    assert outs[0] == outs[1] and len(outs[0]) == 12


class FailsOnce(OnnxRuntimeBackend):
    def __init__(self, *args, fail_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.fail_at = fail_at
        self._lock = threading.Lock()

    def _infer(self, batch):
        with self._lock:
            self.calls += 1
            mine = self.calls
        if mine == self.fail_at:
            raise ModelError("inference failed on purpose")
        return super()._infer(batch)


class Recorder(Sink):
    name = "recorder"

    def __init__(self) -> None:
        self.frames = []
        self.closed = False

    def write(self, packet) -> None:
        self.frames.append(packet.index)

    def close(self) -> None:
        self.closed = True


def test_a_failing_worker_stops_the_run_without_hanging_and_closes_outputs(model, tmp_path):
    backend = FailsOnce(model, OrtOptions(threads=1), fail_at=8)
    video, rec = tmp_path / "out.avi", Recorder()
    pipe = Pipeline(open_source(parse_source("test://160x120?frames=200")), backend, [VideoFileSink(video), rec],
                    PipelineConfig(log_every_s=0, infer_workers=3, warmup=0))
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="on purpose"):
        pipe.run()
    assert time.perf_counter() - t0 < 30
    assert rec.closed and rec.frames == sorted(rec.frames) and len(rec.frames) < 200
    assert not partial_path(video).exists()  # finalized (or removed when nothing was written)
    assert not [t for t in threading.enumerate() if t.name.startswith("edge-infer")]
    backend.close()


def test_a_worker_that_cannot_start_stops_the_others(model, tmp_path):
    class SecondBindFails(OnnxRuntimeBackend):
        binds = 0

        def bind_thread(self) -> None:
            type(self).binds += 1
            if type(self).binds == 2:
                raise EdgeError("no context for the second worker")

    backend = SecondBindFails(model, OrtOptions(threads=1))
    rec = Recorder()
    with pytest.raises(EdgeError, match="second worker"):
        Pipeline(open_source(parse_source("test://64x48?frames=50")), backend, [rec],
                 PipelineConfig(log_every_s=0, infer_workers=3)).run()
    assert rec.closed and rec.frames == []
    deadline = time.perf_counter() + 5
    while [t for t in threading.enumerate() if t.name.startswith("edge-infer")] and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("edge-infer")]
    backend.close()


def test_backends_without_concurrent_calls_are_refused_several_workers(model):
    class OneAtATime(OnnxRuntimeBackend):
        concurrent_infer = False

    backend = OneAtATime(model, OrtOptions(threads=1))
    with pytest.raises(ModelError, match="one inference at a time.*--infer-workers 1"):
        Pipeline(open_source(parse_source("test://64x48?frames=5")), backend, [], PipelineConfig(infer_workers=2))
    Pipeline(open_source(parse_source("test://64x48?frames=5")), backend, [], PipelineConfig(infer_workers=1))
    backend.close()
    with pytest.raises(EdgeError, match="infer-workers"):
        PipelineConfig(infer_workers=0).validate()


def test_onnxruntime_backend_passes_the_concurrency_point_of_the_contract(model):
    backend = OnnxRuntimeBackend(model, OrtOptions(threads=1))
    a = np.zeros((1, 128, 128, 3), np.uint8)
    b = a.copy()
    b[0, 30:90, 20:100] = (0, 0, 255)
    assert backend.concurrent_infer
    assert conformance_report(backend, [a, b], num_classes=2) == []
    backend.close()


def test_the_contract_catches_a_backend_that_shares_a_scratch_between_calls(model):
    class SharedScratch(OnnxRuntimeBackend):
        """Claims concurrent calls but stages every result in one shared scratch before copying it out:
        right alone, wrong when two calls overlap (a real bug class)."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._scratch = None

        def _infer(self, batch):
            out = super()._infer(batch)
            if self._scratch is None:
                self._scratch = {k: np.empty_like(v) for k, v in out.items()}
            for k, v in out.items():
                self._scratch[k][...] = v
            time.sleep(0.005)  # another call overwrites the scratch meanwhile
            return {k: v.copy() for k, v in self._scratch.items()}

    backend = SharedScratch(model, OrtOptions(threads=1))
    a = np.zeros((1, 128, 128, 3), np.uint8)
    b = a.copy()
    b[0, 30:90, 20:100] = (0, 0, 255)
    problems = conformance_report(backend, [a, b], num_classes=2)
    assert problems and all("concurrent infer()" in p for p in problems), problems
    backend.concurrent_infer = False  # what it should have said: then it conforms
    assert conformance_report(backend, [a, b], num_classes=2) == []
    backend.close()


# -- the plan ----------------------------------------------------------------------------------------


def test_plan_live_sources_get_one_worker_on_every_core_and_files_two():
    live = plan_inference("onnxruntime", live=True, cores=2)
    assert (live.workers, live.threads, live.host_nice) == (1, 0, 10) and "latency" in live.reason
    files = plan_inference("onnxruntime", live=False, cores=2)
    assert (files.workers, files.threads, files.host_nice) == (2, 1, 0)
    assert plan_inference("onnxruntime", live=False, cores=8).threads == 4
    assert plan_inference("onnxruntime", live=False, cores=1).workers == 1
    assert plan_inference("onnxruntime", live=False, cores=4, gpu=True).workers == 1
    assert "2 frames at once on 1 thread each" in files.describe()


def test_plan_keeps_what_was_asked_and_checks_it():
    p = plan_inference("onnxruntime", live=True, cores=4, workers=3)
    assert (p.workers, p.threads, p.host_nice) == (3, 1, 0)
    p = plan_inference("onnxruntime", live=False, cores=2, workers=1, threads=2, host_nice=4)
    assert (p.workers, p.threads, p.host_nice) == (1, 2, 4)
    assert plan_inference("onnxruntime", live=False, cores=2, threads=2).threads == 2
    with pytest.raises(EdgeError, match="--infer-workers"):
        plan_inference("onnxruntime", live=False, workers=-1)
    with pytest.raises(EdgeError, match="--threads"):
        plan_inference("onnxruntime", live=False, threads=-2)
    with pytest.raises(EdgeError, match="--host-nice"):
        plan_inference("onnxruntime", live=False, host_nice=20)


def test_plan_tensorrt_runs_one_inference_at_a_time():
    p = plan_inference("tensorrt", live=False, cores=6)
    assert isinstance(p, InferencePlan) and p.workers == 1 and "TensorRT" in p.reason
    with pytest.raises(EdgeError, match="TensorRT backend runs one inference at a time"):
        plan_inference("tensorrt", live=False, workers=2)
    assert plan_inference("custom", live=False, concurrent=False, cores=4).workers == 1


def test_plan_decodes_video_files_on_one_thread_when_inference_is_on_the_cpu():
    assert plan_inference("onnxruntime", live=False, cores=2).decode_threads == 1
    assert plan_inference("onnxruntime", live=True, cores=2).decode_threads == 1
    assert plan_inference("onnxruntime", live=False, cores=2, gpu=True).decode_threads == 0
    assert plan_inference("tensorrt", live=False, cores=2).decode_threads == 0


def test_video_file_decoder_threads_are_set_and_frames_are_the_same(tmp_path):
    from edge.runtime.sources import CaptureStatus, VideoFileSource

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H))
    for i in range(12):
        writer.write(_frame(i))
    writer.release()
    frames = {}
    for threads in (0, 1):
        src = open_source(parse_source(str(path)), decode_threads=threads)
        assert isinstance(src, VideoFileSource) and src.decode_threads == threads
        src.open()
        if threads and hasattr(cv2, "CAP_PROP_N_THREADS"):
            assert src._cap.get(cv2.CAP_PROP_N_THREADS) == 1
        got = []
        while True:
            status, frame = src.read()
            if status is not CaptureStatus.FRAME:
                break
            got.append(frame)
        src.close()
        frames[threads] = got
    assert len(frames[0]) == len(frames[1]) == 12
    assert all(np.array_equal(a, b) for a, b in zip(frames[0], frames[1]))
    with pytest.raises(EdgeError, match="decode_threads"):
        VideoFileSource(parse_source(str(path)), decode_threads=-1)


# -- edge-run ----------------------------------------------------------------------------------------


def test_edge_run_infers_files_in_parallel_and_says_so(model, tmp_path, caplog, monkeypatch):
    from edge.cli.run import main

    monkeypatch.setattr("edge.runtime.plan.usable_cores", lambda: 2)
    folder = _images(tmp_path / "frames", 10)
    stats, dets = tmp_path / "s.json", tmp_path / "d.jsonl"
    with caplog.at_level("INFO"):
        rc = main([str(model), "--source", str(folder), "--headless", "--stats-json", str(stats),
                   "--detections-out", str(dets)])
    assert rc == 0
    assert "inference: 2 frames at once on 1 thread each" in caplog.text
    s = json.loads(stats.read_text())
    assert s["meta"]["infer_workers"] == 2 and s["frames"]["written"] == 10
    assert [r["frame"] for r in _records(dets)] == list(range(10))
    caplog.clear()
    with caplog.at_level("INFO"):
        rc = main([str(model), "--source", "test://96x64?live=1&fps=60", "--headless", "--max-frames", "5",
                   "--stats-json", str(stats)])
    assert rc == 0 and "inference: 1 frame at a time on all cores" in caplog.text
    assert json.loads(stats.read_text())["meta"]["infer_workers"] == 1


def test_edge_run_refuses_parallel_workers_for_an_engine(tmp_path, caplog):
    from edge.cli.run import main

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    assert main([str(engine), "--source", "test://", "--infer-workers", "2", "--headless"]) == 2
    assert "TensorRT backend runs one inference at a time" in caplog.text
