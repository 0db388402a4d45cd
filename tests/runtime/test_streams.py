"""Several streams through one model in one process (``edge.runtime.streams``, ``edge-run --source A
--source B``): real image folders and synthetic sources, real ONNX Runtime sessions (the red-box model at
batch 1, the bundled model with its dynamic batch), real OpenCV video files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from edge.bundled import bundled_model
from edge.errors import EdgeError
from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
from edge.runtime.pipeline import PipelineConfig
from edge.runtime.sinks import JsonLinesSink
from edge.runtime.sources import CaptureStatus, FrameSource, ReopenPolicy, open_source, parse_source
from edge.runtime.streams import MultiStreamLoop, Stream, read_sources_file, stream_path
from edge.runtime.synthetic import draw_red_box, red_box_model

W, H = 320, 240


def _truth(stream: int, i: int) -> Tuple[int, int, int, int]:
    x1 = 20 + 6 * i + 40 * stream  # each stream's box at its own place: a mix-up shows
    return (x1, 40 + 50 * stream, x1 + 100 + 2 * i, 110 + 50 * stream)


def _images(folder: Path, stream: int, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        f = np.full((H, W, 3), 30, np.uint8)
        f[:, :, 0] = 90
        cv2.imwrite(str(folder / f"{i:04d}.png"), draw_red_box(f, _truth(stream, i)))
    return folder


@pytest.fixture(scope="module")
def red(tmp_path_factory):
    return red_box_model(tmp_path_factory.mktemp("streams") / "red.onnx", size=(128, 128))


@pytest.fixture()
def headless(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def _video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_edge_run_two_sources_per_stream_outputs_ids_and_stats(red, tmp_path, headless, capsys):
    from edge.cli.run import main

    counts = (9, 6)
    folders = [_images(tmp_path / f"s{k}", k, n) for k, n in enumerate(counts)]
    stats = tmp_path / "stats.json"
    rc = main([str(red), "--source", str(folders[0]), "--source", str(folders[1]), "--threads", "1",
               "--output", str(tmp_path / "out_{stream}.mp4"), "--detections-out", str(tmp_path / "det_{stream}.jsonl"),
               "--stats-json", str(stats), "--log-every", "0"])
    assert rc == 0
    for k, n in enumerate(counts):
        records = [json.loads(line) for line in (tmp_path / f"det_{k}.jsonl").read_text().splitlines()]
        assert [r["frame"] for r in records] == list(range(n))
        for r in records:
            assert r["stream"] == str(k) and len(r["detections"]) == 1
            np.testing.assert_allclose(r["detections"][0]["box"], _truth(k, r["frame"]), atol=2.6)
        assert _video_frames(tmp_path / f"out_{k}.mp4") == n
    s = json.loads(stats.read_text())
    total = sum(counts)
    assert set(s["frames"]) == {"captured", "inferred", "dropped", "discarded", "written", "capture_timeouts",
                                "capture_errors", "reopens"}
    assert (s["frames"]["captured"], s["frames"]["inferred"], s["frames"]["written"]) == (total, total, total)
    assert set(s["stages_ms"]) == {"capture", "preprocess", "infer", "postprocess", "draw", "sink"}
    assert [(d["id"], d["frames"]["written"], d["frames"]["inferred"]) for d in s["streams"]] == [
        ("0", 9, 9), ("1", 6, 6)]
    assert all(d["e2e_fps"] > 0 and d["glass_to_glass_ms"]["count"] == d["frames"]["written"] for d in s["streams"])
    assert s["meta"]["end_reason"] == "end of stream" and s["meta"]["streams"] == 2
    assert "stream 1: 6 frames" in capsys.readouterr().out


def test_sources_file_names_order_and_mixing(tmp_path):
    from edge.cli.run import build_parser
    from edge.runtime.app import RunOptions, _stream_specs

    listing = tmp_path / "cams.txt"
    listing.write_text("# the lab\n\nfront=test://?frames=3\n  test://?frames=4  \nback=rtsp://u:p@h/s?a=b\n")
    assert read_sources_file(str(listing)) == [("front", "test://?frames=3"), (None, "test://?frames=4"),
                                               ("back", "rtsp://u:p@h/s?a=b")]
    args = build_parser().parse_args(["--camera", "3", "--source", "test://?frames=2", "--camera", "1",
                                      "--sources", str(listing)])
    from dataclasses import fields

    opts = RunOptions(**{f.name: getattr(args, f.name) for f in fields(RunOptions)})
    specs = _stream_specs(opts)
    assert [(n, s.uri) for n, s in specs][:3] == [(None, "v4l2:///dev/video3"), (None, "test://?frames=2"),
                                                  (None, "v4l2:///dev/video1")]
    assert [n for n, _ in specs[3:]] == ["front", None, "back"]
    assert stream_path("det_{stream}.jsonl", "front", "--detections-out", 6) == "det_front.jsonl"
    with pytest.raises(EdgeError, match=r"put \{stream\} in the name"):
        stream_path("out.mp4", "0", "--output", 2)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(EdgeError, match="found no source"):
        read_sources_file(str(empty))


def test_an_output_without_stream_field_is_one_clear_line(red, tmp_path, headless, caplog):
    from edge.cli.run import main

    rc = main([str(red), "--source", "test://?frames=2", "--source", "test://?frames=2",
               "--output", str(tmp_path / "out.mp4")])
    assert rc == 2
    assert "2 streams would write one file" in caplog.text and "Traceback" not in caplog.text
    assert not list(tmp_path.iterdir())


class _Recording(OnnxRuntimeBackend):
    """The real backend, noting the batch size of every call."""

    sizes: List[int]

    def infer(self, batch):  # type: ignore[override]
        self.sizes.append(int(batch.shape[0]))
        return super().infer(batch)


def _run(streams: List[Stream], backend: Any, **cfg: Any):
    for s in streams:
        if not isinstance(s.source, _Flaky):
            s.source.open()
    return MultiStreamLoop(streams, backend, PipelineConfig(log_every_s=0, warmup=0, **cfg)).run()


def _dets_by_stream(folder: Path, ids: List[str]) -> dict:
    out = {}
    for sid in ids:
        out[sid] = [(r["frame"], [(d["class_id"], d["box"], d["score"]) for d in r["detections"]])
                    for r in map(json.loads, (folder / f"{sid}.jsonl").read_text().splitlines())]
    return out


def test_bundled_model_batches_the_streams_with_the_same_detections(tmp_path):
    """The bundled graph has a dynamic batch: three file streams go through in batches of three, and every
    frame's detections equal those of a batch-1 run of that stream alone."""
    model = bundled_model()
    uris = ["test://?frames=6&size=320x240", "test://?frames=6&size=400x300", "test://?frames=6&size=256x256"]
    backend = _Recording(model, OrtOptions(threads=1, spin=False))
    assert backend.input_format.batch == -1
    backend.sizes = []
    ids = ["a", "b", "c"]

    def streams(folder: Path, which: List[int]) -> List[Stream]:
        folder.mkdir(exist_ok=True)
        return [Stream(ids[k], open_source(parse_source(uris[k])),
                       sinks=[JsonLinesSink(folder / f"{ids[k]}.jsonl", backend.info.class_names, stream=ids[k])])
                for k in which]

    stats = _run(streams(tmp_path / "batched", [0, 1, 2]), backend)
    probe, sizes = backend.sizes[0], backend.sizes[1:]  # the first call checks that the batch runs at all
    assert probe == 3 and max(sizes) == 3 and sum(sizes) == 18
    assert stats.counters.inferred == 18 and stats.meta["batch"] == 3
    batched = _dets_by_stream(tmp_path / "batched", ids)
    for k in range(3):
        backend.sizes = []
        _run(streams(tmp_path / f"alone{k}", [k]), backend)
        assert set(backend.sizes) == {1}
        alone = _dets_by_stream(tmp_path / f"alone{k}", [ids[k]])[ids[k]]
        assert len(alone) == 6 and sum(len(d) for _, d in alone) > 0
        assert batched[ids[k]] == alone
    backend.close()


def test_batch_one_model_runs_streams_one_after_another_and_says_so_once(red, tmp_path, caplog):
    backend = _Recording(red, OrtOptions(threads=1, spin=False))
    backend.sizes = []
    folders = [_images(tmp_path / f"s{k}", k, 4) for k in range(3)]
    streams = [Stream(str(k), open_source(parse_source(str(f)))) for k, f in enumerate(folders)]
    stats = _run(streams, backend)
    backend.close()
    assert set(backend.sizes) == {1} and len(backend.sizes) == 12
    assert stats.counters.written == 12
    assert caplog.text.count("has batch 1: its 3 streams are inferred one after another") == 1


def test_a_stream_without_new_frames_does_not_stall_the_others(red, tmp_path):
    """A live stream at 2 FPS beside a 30-frame file: the file is read whole, without drops, long before
    the live stream could have delivered 30 frames; the run ends when the file ends."""
    backend = OnnxRuntimeBackend(red, OrtOptions(threads=1, spin=False))
    slow = Stream("live", open_source(parse_source("test://?size=160x120&fps=2&live=1")))
    files = Stream("file", open_source(parse_source(str(_images(tmp_path / "f", 0, 30)))))
    t0 = time.perf_counter()
    stats = _run([slow, files], backend)
    elapsed = time.perf_counter() - t0
    backend.close()
    by_id = {d["id"]: d for d in stats.streams}
    assert by_id["file"]["frames"]["written"] == 30 and by_id["file"]["frames"]["dropped"] == 0
    assert by_id["live"]["frames"]["written"] <= 1 + 2 * elapsed
    assert elapsed < 10.0 and by_id["file"]["end_reason"] == "end of stream"
    c = stats.counters
    assert c.captured == c.inferred + c.dropped + c.discarded


class _Flaky(FrameSource):
    """A live camera that fails once after ``fail_at`` frames; reopening it works."""

    live = True

    def __init__(self, fail_at: int) -> None:
        super().__init__(parse_source("test://?live=1"))
        self.live = True
        self.fail_at, self.reads, self.opens = fail_at, 0, 0
        self.fps = 50.0

    def open(self) -> None:
        self.opens += 1

    def read(self, out: Optional[np.ndarray] = None):
        self.reads += 1
        if self.reads == self.fail_at:
            return CaptureStatus.ERROR, None
        time.sleep(0.02)
        frame = np.full((120, 160, 3), 30, np.uint8) if out is None else out
        frame[:] = 30
        return CaptureStatus.FRAME, frame

    def describe(self) -> str:
        return "flaky camera"


def test_a_failing_stream_reconnects_without_stopping_the_others(red, tmp_path):
    backend = OnnxRuntimeBackend(red, OrtOptions(threads=1, spin=False))
    flaky = _Flaky(fail_at=3)
    cam = Stream("cam", flaky)
    files = Stream("file", open_source(parse_source("test://?frames=200&size=320x240")))
    stats = _run([cam, files], backend, reopen=ReopenPolicy(initial_s=0.02, max_s=0.1))
    backend.close()
    by_id = {d["id"]: d for d in stats.streams}
    assert by_id["cam"]["reopens"] == 1 and by_id["cam"]["frames"]["capture_errors"] == 1
    assert by_id["cam"]["frames"]["written"] > 2  # frames came again after the reconnect
    assert by_id["file"]["frames"]["written"] == 200
    assert stats.counters.reopens == 1 and stats.meta["end_reason"] == "end of stream"


def _get(url: str):
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - 127.0.0.1 only
        return r.status, r.headers.get("Content-Type"), r.read()


def test_live_page_grid_and_each_stream_at_its_own_url(red, tmp_path, headless):
    """--serve with two named streams: / is the grid, /streams.json has each stream's FPS, /s/ID/ serves
    that stream's page, frame and stats (its own frames: the two streams differ in size)."""
    import threading
    import urllib.error

    from edge.runtime.app import RunOptions, run_live

    listing = tmp_path / "cams.txt"
    listing.write_text("front=test://?size=320x240&fps=25&live=1\nback=test://?size=160x120&fps=25&live=1\n")
    lines: List[str] = []
    opts = RunOptions(model=str(red), sources=str(listing), headless=True, serve="127.0.0.1:0", max_frames=120,
                      threads=1, log_every=0)
    result: List[int] = []
    runner = threading.Thread(target=lambda: result.append(run_live(opts, announce=lines.append)), daemon=True)
    runner.start()
    deadline = time.monotonic() + 20
    while not any(line.startswith("serving on") for line in lines):
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.05)
    url = next(line for line in lines if line.startswith("serving on")).split()[2]
    status, ctype, page = _get(url)
    assert status == 200 and b"grid.js" in page and ctype.startswith("text/html")
    assert b"createElement" in _get(url + "grid.js")[2]
    while True:  # FPS shows once a few frames went through each stream
        listed = json.loads(_get(url + "streams.json")[2])
        if all(s["fps"] > 0 for s in listed) and len(listed) == 2:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [s["id"] for s in listed] == ["front", "back"]
    for sid, shape in (("front", (240, 320, 3)), ("back", (120, 160, 3))):
        status, _, own_page = _get(f"{url}s/{sid}/")
        assert status == 200 and b"stream.mjpg" in own_page
        _, ctype, jpeg = _get(f"{url}s/{sid}/frame.jpg")
        assert ctype == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == shape
        assert "fps" in json.loads(_get(f"{url}s/{sid}/stats.json")[2])
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(url + "s/nope/frame.jpg")
    assert err.value.code == 404
    runner.join(30)
    assert result == [0]


class _BatchOneOnly(OnnxRuntimeBackend):
    """A dynamic-batch graph whose backend runs batch 1 only (as a TensorRT engine built for batch 1)."""

    def infer(self, batch):  # type: ignore[override]
        from edge.errors import ModelError

        if batch.shape[0] != 1:
            raise ModelError(f"input shape {list(batch.shape)} != the engine's run shape [1, 320, 320, 3]")
        return super().infer(batch)


def test_a_backend_that_cannot_run_the_batch_runs_the_streams_one_after_another(caplog):
    backend = _BatchOneOnly(bundled_model(), OrtOptions(threads=1, spin=False))
    streams = [Stream(str(k), open_source(parse_source("test://?frames=3&size=160x120"))) for k in range(2)]
    stats = _run(streams, backend)
    backend.close()
    assert stats.counters.written == 6 and stats.meta["batch"] == 1
    assert caplog.text.count("does not run a batch of 2") == 1


def test_one_stream_fills_the_stream_field_with_its_name(red, tmp_path, headless):
    from edge.cli.run import main

    listing = tmp_path / "one.txt"
    listing.write_text(f"front={_images(tmp_path / 'f', 0, 3)}\n")
    rc = main([str(red), "--sources", str(listing), "--threads", "1", "--log-every", "0",
               "--detections-out", str(tmp_path / "det_{stream}.jsonl"), "--output", str(tmp_path / "out_{stream}.avi")])
    assert rc == 0
    assert len((tmp_path / "det_front.jsonl").read_text().splitlines()) == 3
    assert _video_frames(tmp_path / "out_front.avi") == 3
    assert not list(tmp_path.glob("*{stream}*"))


def test_a_backend_with_a_smaller_max_batch_gets_batches_of_that_size(caplog):
    """A dynamic-batch engine whose profile stops below the stream count (TensorRT's ``max_batch``): the
    streams go through in batches of at most that many, said once."""
    backend = _Recording(bundled_model(), OrtOptions(threads=1, spin=False))
    backend.max_batch = 2
    backend.sizes = []
    streams = [Stream(str(k), open_source(parse_source("test://?frames=4&size=160x120"))) for k in range(3)]
    stats = _run(streams, backend)
    backend.close()
    assert stats.counters.written == 12 and stats.meta["batch"] == 2
    assert max(backend.sizes) == 2 and sum(backend.sizes[1:]) == 12
    assert caplog.text.count("takes batches of at most 2: its 3 streams are inferred in batches of 2") == 1
