"""``edge.runtime.sources.uri``: ``--source`` strings parsed into specs, bad ones refused."""

from __future__ import annotations

import pytest

from edge.errors import EdgeError
from edge.runtime.sources.factory import open_source
from edge.runtime.sources.uri import camera_spec, parse_source


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
