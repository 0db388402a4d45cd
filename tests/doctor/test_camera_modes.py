"""``edge doctor`` lists each V4L2 camera's modes (formats, sizes, frame rates) as
``v4l2-ctl --list-formats-ext`` shows them: a real ``v4l2-ctl`` stand-in script in the fake system's bin
folder prints what a UVC camera's answer looks like."""

from __future__ import annotations

from edge.doctor.facts import detect_platform
from edge.doctor.probes import probe_v4l2
from edge.doctor.report import OK
from tests.doctor.fake_systems import fake_jetson, write
from tests.runtime.sources.test_gst import V4L2_CTL_OUTPUT


def test_doctor_lists_each_cameras_modes(tmp_path):
    paths = fake_jetson(tmp_path)
    tool = write(tmp_path / "bin/v4l2-ctl",
                 "#!/bin/sh\n[ \"$1\" = -d ] && [ \"$3\" = --list-formats-ext ] || exit 2\ncat <<'END'\n"
                 + V4L2_CTL_OUTPUT + "END\n")
    tool.chmod(0o755)
    check = probe_v4l2(detect_platform(paths), paths)
    assert check.status == OK
    assert check.summary.endswith("video1: mjpeg 1280x720@30, mjpeg 1280x720@15, mjpeg 640x480@30, "
                                  "yuyv 640x480@30, yuyv 1280x720@10, h264 1920x1080@30"), check.summary
    device = check.details["devices"][0]
    assert device["path"].endswith("dev/video1") and device["modes"][0] == "mjpeg 1280x720@30"


def test_doctor_says_how_to_get_the_modes_without_v4l2_ctl(tmp_path):
    paths = fake_jetson(tmp_path)  # no v4l2-ctl in its bin folder
    check = probe_v4l2(detect_platform(paths), paths)
    assert check.status == OK and "modes of video1 unknown" in check.summary
    assert "sudo apt-get install v4l-utils" in check.summary
