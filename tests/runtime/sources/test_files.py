"""``edge.runtime.sources.files``: video files and image folders, real files on disk, errors that say how
to fix them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import DataError
from edge.runtime.sources.base import CaptureStatus
from edge.runtime.sources.factory import open_source
from edge.runtime.sources.files import ImageFolderSource, VideoFileSource
from edge.runtime.sources.uri import parse_source


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
