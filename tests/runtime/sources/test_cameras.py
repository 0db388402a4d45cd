"""``edge.runtime.sources.cameras``: missing V4L2 devices, the CSI GStreamer pipeline and its ISP scaling."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import DataError, EdgeError
from edge.runtime.sources.cameras import CsiSource, csi_pipeline, fit_size, gstreamer_available
from edge.runtime.sources.factory import open_source
from edge.runtime.sources.uri import camera_spec, parse_source


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
