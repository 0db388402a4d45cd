"""No silent loss at run time (issue 13): every sink's write checked, outputs refused before the run when
they cannot be written, counters that add up at shutdown, and a double Ctrl-C that keeps the stats.

Real components throughout: OpenCV video writers, files on real small tmpfs disks (``tests.disks``), the
``edge-run`` command in-process and as a subprocess receiving real signals, the synthetic red-box ONNX
model in ONNX Runtime. Random frames are seeded.
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
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest

from edge.errors import OutputError
from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
from edge.runtime.pipeline import FramePacket, Pipeline, PipelineConfig
from edge.runtime.sinks import JsonLinesSink, Sink, VideoFileSink, partial_path
from edge.runtime.sources import TestPatternSource, parse_source
from edge.runtime.synthetic import red_box_model
from tests.disks import fill, small_disk
from tests.paths import REPO


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return red_box_model(tmp_path_factory.mktemp("writes") / "red.onnx", size=(128, 128))


@pytest.fixture(autouse=True)
def _no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def _noise_packet(i: int, w: int = 320, h: int = 240, seed: int = 0) -> FramePacket:
    """A frame of seeded noise: it compresses badly, so a small disk fills in a few frames."""
    frame = np.random.default_rng(seed + i).integers(0, 256, (h, w, 3), dtype=np.uint8)
    p = FramePacket(i, frame, 100.0 + i * 0.04)
    p.boxes = np.array([[10.0, 10.0, 60.0, 50.0]], np.float32)
    p.scores = np.array([0.9], np.float32)
    p.classes = np.array([0], np.int32)
    return p


def _errors(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _edge_run(*args: str) -> int:
    from edge.cli.run import main

    return main([*args, "--headless", "--threads", "1", "--log-every", "0"])


def _frames_add_up(frames: Dict[str, int]) -> bool:
    return frames["captured"] == frames["inferred"] + frames["dropped"] + frames.get("discarded", 0)


# -- 1. a full disk while writing --output ------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_full_disk_under_the_video_fails_the_run_and_keeps_the_other_outputs(model, tmp_path, caplog, suffix):
    dets, stats = tmp_path / "d.jsonl", tmp_path / "s.json"
    with small_disk(tmp_path / "disk", "256k") as disk:  # 240 test frames take ~440 KB as .mp4
        out = disk / f"o{suffix}"
        rc = _edge_run(str(model), "--source", "test://640x480?frames=240", "--output", str(out),
                       "--detections-out", str(dets), "--stats-json", str(stats))
        left = sorted(os.listdir(disk))
    assert rc == 2  # not 0 with "wrote ..."
    assert left == []  # nothing under the final name, no partial file
    assert any(str(out) in m and "ENOSPC" in m for m in _errors(caplog)), caplog.text
    assert not any(r.getMessage().startswith(f"wrote {out}") for r in caplog.records)
    assert len(dets.read_text().splitlines()) == 240  # the other sink went on to the end
    s = json.loads(stats.read_text())
    assert [(e["output"], e["path"], e["cause"]) for e in s["output_errors"]] == [("video", str(out), "ENOSPC")]
    assert s["frames"]["written"] == 240 and _frames_add_up(s["frames"])


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_sink_stops_at_a_full_disk_and_removes_its_partial_file(tmp_path, suffix):
    with small_disk(tmp_path / "disk", "512k") as disk:
        out = disk / f"o{suffix}"
        sink = VideoFileSink(out, fps=25)
        with pytest.raises(OutputError) as caught:
            for i in range(500):
                sink.write(_noise_packet(i))
        assert caught.value.path == str(out) and caught.value.cause == "ENOSPC"
        assert f"--output {out}" in str(caught.value) and "removed" in str(caught.value)
        assert sink.frames < 500 and os.listdir(disk) == []
        sink.close()  # nothing more to do, nothing appears
        assert os.listdir(disk) == []


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_a_disk_that_fills_before_the_video_is_finalized_leaves_no_broken_file(tmp_path, suffix):
    """The writer's last flush and the index (mp4's moov atom, avi's idx1 and frame count) fail at close;
    OpenCV says nothing: the finished file is checked before the rename."""
    with small_disk(tmp_path / "disk", "2m") as disk:
        out = disk / f"o{suffix}"
        sink = VideoFileSink(out, fps=25)
        for i in range(6):
            sink.write(_noise_packet(i))
        filler = fill(disk)
        with pytest.raises(OutputError, match="ENOSPC") as caught:
            sink.close()
        assert str(out) in str(caught.value)
        assert sorted(os.listdir(disk)) == [filler.name]


def test_a_failed_rename_keeps_the_finished_video_under_its_temporary_name(tmp_path):
    out = tmp_path / "o.mp4"
    sink = VideoFileSink(out, fps=25)
    for i in range(5):
        sink.write(_noise_packet(i, 160, 120))
    out.mkdir()  # something took the final name while the run went on
    with pytest.raises(OutputError, match="EISDIR") as caught:
        sink.close()
    kept = partial_path(out)
    assert str(kept) in str(caught.value) and kept.is_file()
    cap = cv2.VideoCapture(str(kept))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_json_lines_sink_stops_at_a_full_disk_and_removes_its_partial_file(tmp_path):
    with small_disk(tmp_path / "disk", "256k") as disk:
        out = disk / "d.jsonl"
        sink = JsonLinesSink(out, ["a"])
        packet = _noise_packet(0, 16, 16)
        n = 400  # ~20 KB per line: the 64 KiB buffer spills on the disk every few frames
        packet.boxes = np.random.default_rng(1).uniform(0, 500, (n, 4)).astype(np.float32)
        packet.scores, packet.classes = np.full(n, 0.5, np.float32), np.zeros(n, np.int32)
        with pytest.raises(OutputError) as caught:
            for i in range(200):
                packet.index = i
                sink.write(packet)
        assert caught.value.cause == "ENOSPC" and f"--detections-out {out}" in str(caught.value)
        sink.close()
        assert os.listdir(disk) == []


def test_json_lines_are_written_under_a_temporary_name_then_renamed(tmp_path):
    out = tmp_path / "d.jsonl"
    sink = JsonLinesSink(out, ["a"])
    sink.write(_noise_packet(0, 16, 16))
    assert not out.exists()  # a crash mid-run leaves no half file under the real name
    sink.close()
    assert json.loads(out.read_text())["frame"] == 0 and not partial_path(out).exists()


# -- 5. write failures are one line, not a traceback --------------------------------------------------


def test_detections_out_on_a_full_disk_is_one_line_and_the_stats_record_it(model, tmp_path, caplog):
    stats = tmp_path / "s.json"
    with small_disk(tmp_path / "disk", "256k") as disk:
        fill(disk, leave=96 * 1024)
        out = disk / "d.jsonl"
        rc = _edge_run(str(model), "--source", "test://64x48?frames=5000", "--detections-out", str(out),
                       "--stats-json", str(stats))
        left = sorted(os.listdir(disk))
    assert rc == 2 and left == ["filler.bin"]
    assert any(str(out) in m and "ENOSPC" in m for m in _errors(caplog)), caplog.text
    s = json.loads(stats.read_text())
    assert s["output_errors"][0]["cause"] == "ENOSPC" and s["meta"]["end_reason"] == "output failed (ENOSPC)"
    assert s["frames"]["written"] < 5000 and _frames_add_up(s["frames"])


def _popen_run(model: Path, cwd: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli.run", str(model), "--headless", "--threads", "1", "--log-every", "0", *args],
        cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if not path.exists():
        proc.kill()
        raise AssertionError(proc.communicate()[0].decode())


def test_stats_json_on_a_disk_that_filled_during_the_run_is_one_line(model, tmp_path):
    video = tmp_path / "live.mp4"
    with small_disk(tmp_path / "disk", "1m") as disk:
        stats = disk / "s.json"
        proc = _popen_run(model, tmp_path, "--source", "test://160x120?live=1&fps=30", "--output", str(video),
                          "--stats-json", str(stats))
        try:
            _wait_for(partial_path(video), proc)
            fill(disk)  # another program filled the disk
            proc.send_signal(signal.SIGTERM)
            output = proc.communicate(timeout=60)[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
        left = sorted(os.listdir(disk))
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert f"--stats-json {stats}: no space left on the device (ENOSPC)" in output
    assert left == ["filler.bin"]  # no temporary stats file left behind
    assert video.is_file()  # the video was finalized all the same


_AS_NOBODY = """
import os, sys
# everything the run imports, loaded before giving up root (this interpreter may live in root's home)
import edge.cli.run, edge.cli.common, edge.runtime.app, edge.runtime.onnxruntime_backend, onnxruntime
os.setgid(65534)
os.setuid(65534)
sys.exit(edge.cli.run.main(sys.argv[1:]))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_stats_json_in_a_folder_without_write_permission_is_refused_before_the_run(model, tmp_path_factory):
    """A real EACCES: root ignores permissions, so the command gives up root first (user nobody)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="edge-eacces-"))  # pytest's own tmp folders are private to root
    try:
        base.chmod(0o755)
        shutil.copy(model, base / "red.onnx")
        shutil.copy(model.with_suffix(".json"), base / "red.json")
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        code = _AS_NOBODY if os.geteuid() == 0 else _AS_NOBODY.replace("os.setgid(65534)\nos.setuid(65534)", "")
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
        done = subprocess.run([sys.executable, "-c", code, str(base / "red.onnx"), "--source", "test://64x48?frames=3",
                               "--headless", "--threads", "1", "--stats-json", str(locked / "s.json")],
                              cwd=str(base), env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"--stats-json {locked / 's.json'}: permission denied (EACCES)" in output
    assert "Traceback" not in output and "end-to-end" not in output  # refused before running


# -- 6. outputs that cannot be written are refused before the run starts ------------------------------


@pytest.mark.parametrize("flag", ["--output", "--detections-out", "--stats-json"])
def test_an_output_naming_a_folder_is_refused_before_the_model_is_opened(tmp_path, caplog, flag):
    folder = tmp_path / ("video.mp4" if flag == "--output" else "out")
    folder.mkdir()
    rc = _edge_run(str(tmp_path / "missing-model.onnx"), "--source", "test://64x48?frames=3", flag, str(folder))
    assert rc == 2
    (message,) = _errors(caplog)
    assert message.startswith(f"{flag} {folder}: it is a folder (EISDIR)"), message
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == [folder.name]


def test_output_naming_a_folder_leaves_no_partial_file(model, tmp_path, caplog):
    folder = tmp_path / "video.mp4"
    folder.mkdir()
    assert _edge_run(str(model), "--source", "test://64x48?frames=3", "--output", str(folder)) == 2
    assert "EISDIR" in caplog.text and not partial_path(folder).exists() and os.listdir(folder) == []


def test_output_on_a_read_only_disk_is_refused_before_the_run(model, tmp_path, caplog):
    with small_disk(tmp_path / "ro", "64k", read_only=True) as disk:
        rc = _edge_run(str(model), "--source", "test://64x48?frames=3", "--output", str(disk / "o.avi"))
    assert rc == 2
    assert any(f"--output {disk / 'o.avi'}" in m and "EROFS" in m for m in _errors(caplog)), caplog.text
    assert "end-to-end" not in caplog.text


# -- 8. counters add up at shutdown -------------------------------------------------------------------


class SlowSink(Sink):
    """A sink slower than the source, so frames queue up before inference (in flight at the stop)."""

    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def write(self, packet: Any) -> None:
        time.sleep(self.seconds)


@pytest.mark.parametrize("uri", ["test://160x120", "test://160x120?live=1&fps=400"])
def test_counters_add_up_after_a_stop_from_another_thread(model, uri):
    backend = OnnxRuntimeBackend(model, OrtOptions(threads=1))
    pipe = Pipeline(TestPatternSource(parse_source(uri)), backend, [SlowSink(0.01)],
                    PipelineConfig(log_every_s=0, infer_workers=1))

    def stop_after_frames() -> None:
        deadline = time.perf_counter() + 60
        while pipe.stats.counters.written < 12 and time.perf_counter() < deadline:
            time.sleep(0.005)
        pipe.stop()

    threading.Thread(target=stop_after_frames, daemon=True).start()
    frames = pipe.run().to_dict()["frames"]
    backend.close()
    assert frames["written"] >= 12 and frames.get("discarded", 0) > 0, frames  # frames were in flight
    assert _frames_add_up(frames), frames
    assert pipe.frame_pool.available == pipe.frame_pool.count  # every buffer came back


class FailingSink(Sink):
    name = "failing"

    def write(self, packet: Any) -> None:
        if packet.index == 8:
            raise RuntimeError("sink broke")


class SlowInference(OnnxRuntimeBackend):
    """The real backend, 10 ms slower: frames wait before inference when the run aborts."""

    def infer(self, images: Any) -> Any:
        time.sleep(0.01)
        return super().infer(images)


def test_counters_add_up_after_a_failed_run(model):
    backend = SlowInference(model, OrtOptions(threads=1))
    pipe = Pipeline(TestPatternSource(parse_source("test://160x120")), backend, [FailingSink()],
                    PipelineConfig(log_every_s=0))
    with pytest.raises(RuntimeError, match="sink broke"):
        pipe.run()
    backend.close()
    frames = pipe.stats.to_dict()["frames"]
    assert frames.get("discarded", 0) > 0 and _frames_add_up(frames), frames


@pytest.mark.parametrize("sig, rc", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_counters_add_up_in_the_stats_file_after_a_signal(model, tmp_path, sig, rc):
    stats, video = tmp_path / "s.json", tmp_path / "o.avi"
    proc = _popen_run(model, tmp_path, "--source", "test://320x240?live=1&fps=1000", "--output", str(video),
                      "--stats-json", str(stats))
    try:
        _wait_for(partial_path(video), proc)
        time.sleep(0.5)
        proc.send_signal(sig)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == rc, output
    frames = json.loads(stats.read_text())["frames"]
    assert frames["dropped"] > 0 and _frames_add_up(frames), frames


# -- 12. a double Ctrl-C keeps the stats and the outputs ----------------------------------------------


def test_ctrl_c_pressed_again_and_again_still_finalizes_outputs_and_writes_the_stats(model, tmp_path):
    stats, video = tmp_path / "s.json", tmp_path / "o.mp4"
    proc = _popen_run(model, tmp_path, "--source", "test://320x240?live=1&fps=60", "--output", str(video),
                      "--stats-json", str(stats))
    try:
        _wait_for(partial_path(video), proc)
        time.sleep(0.3)
        deadline = time.time() + 60
        while proc.poll() is None and not stats.exists() and time.time() < deadline:
            proc.send_signal(signal.SIGINT)  # the user keeps pressing Ctrl-C
            time.sleep(0.02)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "Traceback" not in output, output
    s = json.loads(stats.read_text())
    assert s["meta"]["end_reason"] == "interrupted (Ctrl-C)"
    assert video.is_file() and not partial_path(video).exists(), output
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == s["frames"]["written"]
    cap.release()
