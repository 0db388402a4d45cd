"""Sinks: the video file (readable, right frame count, finalized by rename), JSON lines, the MJPEG server
over real HTTP on loopback, and the display check that must never reach cv2.imshow without a display."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.runtime.pipeline import FramePacket
from edge.runtime.serve import MjpegServer, parse_serve
from edge.runtime.sinks import DisplaySink, JsonLinesSink, VideoFileSink, display_available, partial_path


def _packet(i: int, w: int = 160, h: int = 120) -> FramePacket:
    frame = np.full((h, w, 3), (i * 10) % 255, np.uint8)
    cv2.rectangle(frame, (10 + i, 10), (60 + i, 50), (0, 0, 255), -1)
    p = FramePacket(i, frame, 100.0 + i * 0.04)
    p.boxes = np.array([[10.0 + i, 10.0, 61.0 + i, 51.0]], np.float32)
    p.scores = np.array([0.875], np.float32)
    p.classes = np.array([1], np.int32)
    return p


def _count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_file_is_written_under_a_temporary_name_then_renamed(tmp_path, suffix):
    out = tmp_path / f"annotated{suffix}"
    sink = VideoFileSink(out, fps=25)
    for i in range(12):
        sink.write(_packet(i))
        if i == 0:
            assert partial_path(out).exists() and not out.exists()  # never a half file under the real name
    sink.write(_packet(12, w=200, h=150))  # another size is resized to the video's
    sink.close()
    sink.close()  # idempotent
    assert out.exists() and not partial_path(out).exists()
    assert _count_frames(out) == 13
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 160 and int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 120
    cap.release()


def test_video_file_without_frames_leaves_nothing_and_bad_paths_are_refused(tmp_path):
    out = tmp_path / "empty.mp4"
    VideoFileSink(out).close()
    assert not out.exists() and not partial_path(out).exists()
    with pytest.raises(EdgeError, match="unknown video type"):
        VideoFileSink(tmp_path / "out.xyz")
    with pytest.raises(EdgeError, match="does not exist"):
        VideoFileSink(tmp_path / "no" / "such" / "dir.mp4")


def test_json_lines_one_object_per_frame_in_frame_pixels(tmp_path):
    out = tmp_path / "dets.jsonl"
    sink = JsonLinesSink(out, ["tall", "wide"])
    for i in range(3):
        sink.write(_packet(i))
    empty = _packet(3)
    empty.boxes, empty.scores, empty.classes = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    sink.write(empty)
    sink.close()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 1, 2, 3]
    assert lines[1]["detections"] == [{"box": [11.0, 10.0, 62.0, 51.0], "score": 0.875, "class_id": 1,
                                       "label": "wide"}]
    assert lines[2]["time"] == pytest.approx(0.08) and lines[0]["width"] == 160
    assert lines[3]["detections"] == []


def test_parse_serve_defaults_to_loopback():
    assert parse_serve(":8080") == ("127.0.0.1", 8080)
    assert parse_serve("8080") == ("127.0.0.1", 8080)
    assert parse_serve("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_serve("[::1]:0") == ("::1", 0)
    for bad in ("", "host", ":99999"):
        with pytest.raises(EdgeError):
            parse_serve(bad)


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.headers.get("Content-Type"), resp.read()


def test_mjpeg_server_serves_page_frame_stream_and_stats():
    server = MjpegServer("127.0.0.1", 0, class_names=["tall", "wide"], max_fps=50, fps_fn=lambda: 12.5)
    try:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        base = f"http://127.0.0.1:{port}"
        status, ctype, body = _get(base + "/")
        assert status == 200 and "text/html" in ctype and b"stream.mjpg" in body
        # nobody asked for frames yet: the sink skips copying/encoding entirely
        server._last_request = 0.0
        server.write(_packet(0))
        assert server._latest is None
        # a request makes the server "watched": frames written now get encoded (in its own thread)
        result = {}
        t = threading.Thread(target=lambda: result.update(frame=_get(base + "/frame.jpg")))
        t.start()
        deadline = time.time() + 5
        i = 1
        while t.is_alive() and time.time() < deadline:
            server.write(_packet(i))
            i += 1
            time.sleep(0.02)
        t.join(5)
        status, ctype, jpeg = result["frame"]
        assert status == 200 and ctype == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (120, 160, 3)
        assert img[30, 30, 2] > 200 and img[30, 30, 1] < 60  # the red rectangle survived encoding
        stats = json.loads(_get(base + "/stats.json")[2])
        assert stats["fps"] == 12.5 and stats["frame"] >= 1
        assert stats["detections"][0]["label"] == "wide"
        # the MJPEG stream: multipart parts, each a JPEG
        with urllib.request.urlopen(base + "/stream.mjpg", timeout=5) as resp:
            assert resp.headers.get("Content-Type").startswith("multipart/x-mixed-replace")
            server.write(_packet(99))
            chunk = resp.read(300)
            assert b"--frame" in chunk and b"Content-Type: image/jpeg" in chunk
        assert _get_status(base + "/nope") == 404
    finally:
        server.close()
    with pytest.raises(OSError):  # the server is gone: connection refused
        _get(f"http://127.0.0.1:{port}/", timeout=1)


def _get_status(url: str) -> int:
    try:
        return _get(url)[0]
    except urllib.error.HTTPError as exc:
        return exc.code


def test_mjpeg_server_port_in_use_is_a_clear_error():
    first = MjpegServer("127.0.0.1", 0)
    try:
        with pytest.raises(EdgeError, match="cannot listen"):
            MjpegServer("127.0.0.1", first.address[1])
    finally:
        first.close()


def test_no_display_is_detected_without_touching_imshow(monkeypatch):
    ok, why = display_available({})
    if not ok:
        assert "DISPLAY" in why and "--output" in why and "--serve" in why
    assert display_available({"DISPLAY": ":0"})[0]
    assert display_available({"WAYLAND_DISPLAY": "wayland-0"})[0]
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    def boom(*a, **k):  # would SIGABRT the whole test run in the real library
        raise AssertionError("cv2.imshow called without a display")

    monkeypatch.setattr(cv2, "imshow", boom)
    monkeypatch.setattr(cv2, "namedWindow", boom)
    if display_available()[0]:
        pytest.skip("this platform always has a display (Windows/macOS)")
    with pytest.raises(EdgeError, match="no display"):
        DisplaySink()
