"""Frame sources and the capture thread: URIs, real files on disk, statuses, drops, reopen with backoff."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import DataError, EdgeError
from edge.runtime.sources import (
    CaptureStatus,
    CaptureThread,
    CsiSource,
    FramePool,
    FrameSource,
    ImageFolderSource,
    ReopenPolicy,
    TestPatternSource,
    VideoFileSource,
    camera_spec,
    csi_pipeline,
    fit_size,
    gstreamer_available,
    open_source,
    parse_source,
)
from edge.runtime.stats import RunStats


def _write_video(path: Path, n: int, size=(160, 120), fps=25.0) -> Path:
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((h, w, 3), 20, np.uint8)
        cv2.putText(frame, str(i), (10, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        writer.write(frame)
    writer.release()
    return path


def test_parse_source_uris(tmp_path):
    assert parse_source("test://").kind == "test" and not parse_source("test://").live
    t = parse_source("test://320x240?frames=5&live=1")
    assert t.size() == (320, 240) and t.live and t.number("frames", 0) == 5
    assert parse_source("v4l2:///dev/video2").path == "/dev/video2"
    assert parse_source("2").path == "/dev/video2"
    assert camera_spec(1).path == "/dev/video1" and camera_spec(1).live
    csi = parse_source("csi://1?size=1280x720&fps=60&flip=2")
    assert (csi.kind, csi.index, csi.size()) == ("csi", 1, (1280, 720))
    assert parse_source("rtsp://cam.local:554/stream").kind == "rtsp"
    rtsp = open_source(parse_source("rtsp://u:p@cam.local:554/live?channel=1&transport=tcp"))
    assert rtsp.live and rtsp.stream_url() == "rtsp://u:p@cam.local:554/live?channel=1"
    (tmp_path / "imgs").mkdir()
    assert parse_source(str(tmp_path / "imgs")).kind == "images"
    assert parse_source(str(tmp_path / "*.jpg")).kind == "images"
    assert parse_source(str(tmp_path / "clip.mp4")).kind == "file"
    assert parse_source(f"file://{tmp_path}/clip.mp4").path == f"{tmp_path}/clip.mp4"
    for bad in ("", "ftp://x", "test://?size=abc", "test://?fps=0", "csi://front"):
        with pytest.raises(EdgeError):
            parse_source(bad)


def test_test_pattern_is_deterministic_and_fills_the_given_buffer():
    src = TestPatternSource(parse_source("test://64x48?frames=3"))
    src.open()
    buf = np.zeros((48, 64, 3), np.uint8)
    status, frame = src.read(buf)
    assert status is CaptureStatus.FRAME and frame is buf and frame.any()
    first = frame.copy()
    assert src.read(buf)[0] is CaptureStatus.FRAME and not np.array_equal(buf, first)  # it moves
    assert src.read()[0] is CaptureStatus.FRAME
    assert src.read()[0] is CaptureStatus.END
    again = TestPatternSource(parse_source("test://64x48"))
    again.open()
    np.testing.assert_array_equal(again.read()[1], first)


def test_video_file_reads_every_frame_into_one_buffer(tmp_path):
    path = _write_video(tmp_path / "clip.mp4", 17)
    src = open_source(parse_source(str(path)))
    assert isinstance(src, VideoFileSource) and not src.live
    src.open()
    assert src.frame_size == (160, 120) and src.fps == pytest.approx(25.0)
    buf = None
    n = 0
    while True:
        status, frame = src.read(buf)
        if status is CaptureStatus.END:
            break
        assert status is CaptureStatus.FRAME
        if buf is not None:
            assert frame is buf  # decoded in place: no allocation per frame
        buf = frame
        n += 1
    src.close()
    assert n == 17


def test_video_file_errors_say_what_and_how(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_source(parse_source(str(tmp_path / "missing.mp4"))).open()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="cannot decode"):
        open_source(parse_source(str(bad))).open()


def test_image_folder_sorted_skips_unreadable_and_glob(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, shade in ((2, 200), (0, 0), (1, 100)):
        cv2.imwrite(str(folder / f"img_{i}.png"), np.full((30, 40, 3), shade, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored")
    src = open_source(parse_source(str(folder)))
    assert isinstance(src, ImageFolderSource)
    src.open()
    shades = []
    while True:
        status, frame = src.read()
        if status is CaptureStatus.END:
            break
        shades.append(int(frame[0, 0, 0]))
    assert shades == [0, 100, 200]
    globbed = open_source(parse_source(str(folder / "img_[01].png")))
    globbed.open()
    assert len(globbed.files) == 2
    with pytest.raises(DataError, match="no images"):
        open_source(parse_source(str(tmp_path / "empty_*.png"))).open()


def test_missing_camera_names_the_device_and_how_to_list_them():
    index = 97
    assert not Path(f"/dev/video{index}").exists()
    src = open_source(camera_spec(index))
    assert src.live
    with pytest.raises(DataError) as err:
        src.open()
    msg = str(err.value)
    assert f"/dev/video{index}" in msg and "v4l2-ctl --list-devices" in msg and "--camera" in msg


def test_csi_pipeline_scales_on_the_isp_and_needs_gstreamer():
    pipe = csi_pipeline(0, (1920, 1080), 30, out_size=fit_size((1920, 1080), (320, 320)), flip=2, sensor_mode=4)
    assert "nvarguscamerasrc sensor-id=0 sensor-mode=4" in pipe
    assert "nvvidconv flip-method=2" in pipe and "width=(int)320, height=(int)180" in pipe
    assert "appsink drop=true max-buffers=1" in pipe
    src = open_source(parse_source("csi://0"), target_hw=(320, 320))
    assert isinstance(src, CsiSource) and "width=(int)320, height=(int)180" in src.build_pipeline()
    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer; the no-GStreamer message cannot be exercised")
    with pytest.raises(EdgeError) as err:
        src.open()
    msg = str(err.value)
    assert "GStreamer" in msg and "python3-opencv" in msg and "nvvidconv" in msg


def test_capture_thread_file_source_has_no_drops(tmp_path):
    path = _write_video(tmp_path / "clip.mp4", 20)
    src = open_source(parse_source(str(path)))
    src.open()
    pool = FramePool(4)
    stats = RunStats()
    cap = CaptureThread(src, pool, stats, queue_size=2).start()
    got = []
    while True:
        item = cap.get(timeout=5.0)
        if item.status is not CaptureStatus.FRAME:
            assert item.status is CaptureStatus.END
            break
        got.append(item.index)
        time.sleep(0.002)  # a slower consumer: the reader must wait, not drop
        pool.release(item.frame)
    cap.join(2.0)
    assert got == list(range(20))
    assert stats.counters.captured == 20 and stats.counters.dropped == 0 and not cap.alive


def test_capture_thread_live_source_keeps_latest_and_counts_drops():
    src = TestPatternSource(parse_source("test://32x24?live=1&fps=200&frames=60"))
    src.open()
    pool = FramePool(4)
    stats = RunStats()
    cap = CaptureThread(src, pool, stats).start()
    taken = []
    while True:
        item = cap.get(timeout=2.0)
        if item.status is CaptureStatus.END:
            break
        assert item.status is CaptureStatus.FRAME
        taken.append(item.index)
        time.sleep(0.02)  # 50 FPS consumer of a 200 FPS camera
        pool.release(item.frame)
    cap.join(2.0)
    assert taken == sorted(taken) and len(taken) < 60
    assert stats.counters.dropped > 0
    assert stats.counters.captured == 60 == len(taken) + stats.counters.dropped + (60 - cap.captured)


def test_capture_timeout_is_an_explicit_status():
    src = TestPatternSource(parse_source("test://32x24?live=1&fps=2"))
    src.open()
    pool = FramePool(2)
    cap = CaptureThread(src, pool).start()
    first = cap.get(timeout=2.0)
    assert first.status is CaptureStatus.FRAME
    pool.release(first.frame)
    assert cap.get(timeout=0.05).status is CaptureStatus.TIMEOUT
    cap.stop()
    cap.join(2.0)
    assert cap.get(timeout=0.5).status is CaptureStatus.END


class FlakyCamera(FrameSource):
    """A live source that fails after 5 frames, refuses the first reopen, then works again
    (a USB camera unplugged and plugged back in)."""

    live = True

    def __init__(self) -> None:
        super().__init__(parse_source("v4l2:///dev/video0"))
        self.opens = 0
        self.reads = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens == 2:
            raise DataError("camera /dev/video0 not found")

    def read(self, out=None):
        self.reads += 1
        if self.reads == 6:
            return CaptureStatus.ERROR, None
        if self.reads > 12:
            time.sleep(0.01)
        frame = out if out is not None else np.zeros((8, 8, 3), np.uint8)
        frame[:] = self.reads % 255
        return CaptureStatus.FRAME, frame


def test_live_source_that_disappears_is_reopened_with_backoff():
    src = FlakyCamera()
    src.open()
    pool = FramePool(3)
    stats = RunStats()
    cap = CaptureThread(src, pool, stats, reopen=ReopenPolicy(initial_s=0.02, max_s=0.05)).start()
    frames = 0
    deadline = time.time() + 5
    while frames < 10 and time.time() < deadline:
        item = cap.get(timeout=1.0)
        if item.status is CaptureStatus.FRAME:
            frames += 1
            pool.release(item.frame)
    cap.stop()
    cap.join(2.0)
    assert frames >= 10
    assert src.opens == 3  # initial, failed reopen, successful reopen
    assert stats.counters.reopens == 1 and stats.counters.capture_errors == 1


def test_live_source_gives_up_after_max_attempts():
    class DeadCamera(FlakyCamera):
        def open(self) -> None:
            self.opens += 1
            if self.opens > 1:
                raise DataError("camera /dev/video0 not found")

    src = DeadCamera()
    src.open()
    pool = FramePool(3)
    cap = CaptureThread(src, pool, reopen=ReopenPolicy(initial_s=0.01, max_s=0.02, max_attempts=2)).start()
    statuses = []
    for _ in range(20):
        item = cap.get(timeout=1.0)
        statuses.append(item.status)
        if item.frame is not None:
            pool.release(item.frame)
        if item.status is CaptureStatus.ERROR:
            assert "could not be reopened" in item.error
            break
    assert statuses[-1] is CaptureStatus.ERROR
