"""The real ``edge-run`` against a real RTSP server on 127.0.0.1 (GStreamer's RTSP server serving a
generated H.264 stream, conftest.py): it reads the stream (pip's OpenCV reads RTSP through FFmpeg, so the
plan says "opencv" and why), counts the frames, survives the server being stopped and started again
(reconnect with growing backoff, ``edge.runtime.sources.capture``; the run goes on), keeps the camera's own
resolution in the stats and never prints the password of the URL.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.runtime.edge_run import edge_run_command, edge_run_env

SECRET = "Rt5p-s3cret"


def _edge_run(args, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(edge_run_command(tmp_path, args), cwd=str(tmp_path), env=edge_run_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class _Lines:
    """Collects a process's output in a thread; ``wait_for`` blocks until a line holds a text."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while not any(text in ln for ln in self.lines):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    @property
    def text(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


@pytest.mark.gstreamer
@pytest.mark.timeout(180)
def test_edge_run_reads_rtsp_counts_frames_and_survives_a_server_restart(rtsp_server, tmp_path):
    stats = tmp_path / "stats.json"
    proc = _edge_run(["--source", rtsp_server.url(query="transport=tcp"), "--max-frames", "120",
                      "--stats-json", str(stats), "--log-every", "0.5"], tmp_path)
    out = _Lines(proc)
    try:
        assert out.wait_for("source: rtsp://viewer:***@", 60), out.text
        time.sleep(1.0)  # frames flow
        rtsp_server.stop()  # the camera goes away mid-run...
        assert out.wait_for("reopening in", 30), out.text
        time.sleep(1.5)  # ...stays away for a few reconnect attempts...
        rtsp_server.start()  # ...and comes back on the same address
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = out.text
    assert proc.returncode == 0, text
    assert "reopened" in text and "decode: opencv: this OpenCV has no GStreamer" in text, text
    delays = [float(ln.split("reopening in ")[1].split("s")[0]) for ln in text.splitlines() if "reopening in " in ln]
    assert len(delays) >= 2 and delays[1] > delays[0], text  # the backoff grows while the server is down
    data = json.loads(stats.read_text())
    assert data["frames"]["captured"] >= 120 and data["frames"]["reopens"] >= 1
    assert data["meta"]["end_reason"] == "--max-frames 120 reached"
    decode = data["meta"]["decode"]
    assert decode["path"] == "opencv" and decode["source_size"] == [320, 240]  # the camera's own resolution
    assert data["meta"]["source"] == f"rtsp://viewer:***@127.0.0.1:{rtsp_server.port}/cam?transport=tcp"
    assert SECRET not in text and SECRET not in stats.read_text()
    assert rtsp_server.starts == 2


@pytest.mark.gstreamer
@pytest.mark.timeout(120)
def test_edge_run_with_a_wrong_password_fails_in_one_line_without_printing_it(rtsp_server, tmp_path):
    wrong = "Wr0ng-pa55word"
    proc = _edge_run(["--source", rtsp_server.url(password=wrong), "--max-frames", "5"], tmp_path)
    out = _Lines(proc)
    proc.wait(90)
    text = out.text
    assert proc.returncode == 2, text
    assert "cannot open stream rtsp://viewer:***@127.0.0.1" in text, text
    assert wrong not in text and "Traceback" not in text


@pytest.mark.gstreamer
@pytest.mark.timeout(120)
def test_edge_run_decode_gstreamer_refuses_an_opencv_without_gstreamer(rtsp_server, tmp_path):
    import cv2

    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer: --decode gstreamer would open the pipeline")
    proc = _edge_run(["--source", rtsp_server.url(), "--decode", "gstreamer", "--max-frames", "5"], tmp_path)
    out = _Lines(proc)
    proc.wait(90)
    text = out.text
    assert proc.returncode != 0 and "--decode gstreamer: this OpenCV has no GStreamer" in text, text
    assert SECRET not in text and "Traceback" not in text
