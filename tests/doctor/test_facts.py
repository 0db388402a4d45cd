"""``edge.doctor.facts``: the small readers, against the files JetPack and the kernel write (fake trees in
tmp_path) and against this machine's OpenCV build information.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.doctor.facts import (
    detect_platform,
    jetpack_for_l4t,
    jetpack_stack,
    opencv_build_facts,
    parse_cuda_version,
    parse_nvpmodel,
    read_device_model,
    read_meminfo,
    v4l2_devices,
)
from tests.doctor.fake_systems import fake_desktop, fake_jetson, write


def test_readers_parse_the_files_jetpack_writes(tmp_path):
    assert jetpack_for_l4t("35.4.1") == "5.1.2"
    assert jetpack_for_l4t("36.4.0") == "6.1"
    assert jetpack_for_l4t("36.4.3") == "6.2"
    assert jetpack_for_l4t("36.9.9") == "6.x"
    assert jetpack_for_l4t("32.7.1") == "4.6.x"
    assert jetpack_for_l4t("99.1") is None
    assert read_device_model(str(write(tmp_path / "model", "NVIDIA Jetson AGX Orin\0"))) == "NVIDIA Jetson AGX Orin"
    assert read_device_model(str(tmp_path / "absent")) is None
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"mode": "MAXN", "id": 0}
    assert parse_nvpmodel("NVPM WARN: no such file\n") == {"mode": None, "id": None}
    assert parse_cuda_version('{"cuda": {"version": "11.4.315"}}') == "11.4.315"
    assert parse_cuda_version("Cuda compilation tools, release 11.4, V11.4.315") == "11.4"
    assert parse_cuda_version("CUDA Version 10.2.300\n") == "10.2.300"
    mem = read_meminfo(str(write(tmp_path / "meminfo", "MemTotal: 2048 kB\nMemAvailable: 1024 kB\n")))
    assert mem == {"MemTotal": 2048 * 1024, "MemAvailable": 1024 * 1024}


def test_v4l2_devices_are_named_from_sysfs_and_csi_sensors_recognized(tmp_path):
    paths = fake_jetson(tmp_path)
    write(tmp_path / "dev/video10")
    write(tmp_path / "dev/video-meta")  # not a capture node name
    devices = v4l2_devices(paths.dev_dir, paths.sysfs)
    assert [Path(d["path"]).name for d in devices] == ["video0", "video1", "video10"]
    assert devices[0]["kind"] == "csi" and devices[0]["name"].startswith("vi-output, imx219")
    assert devices[1]["kind"] == "v4l2" and "USB" in devices[1]["name"]
    assert devices[2]["name"] == "?"


def test_opencv_build_facts_from_the_real_build_information():
    cv2 = pytest.importorskip("cv2")
    facts = opencv_build_facts(cv2.getBuildInformation())
    assert set(facts) == {"gstreamer", "ffmpeg", "gui", "cuda"}
    assert isinstance(facts["gstreamer"], bool)
    jetpack_like = "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   YES (1.16.3)\n" \
                   "  GUI:                           GTK2\n  NVIDIA CUDA:                   YES (ver 11.4)\n"
    assert opencv_build_facts(jetpack_like) == {"gstreamer": True, "ffmpeg": True, "gui": "GTK2", "cuda": True}
    pip_like = "    GStreamer:                   NO\n  GUI:                           NONE\n"
    assert opencv_build_facts(pip_like)["gstreamer"] is False


@pytest.mark.parametrize("release,trt,cuda,python", [
    ("35.1.0", "8.4", "11.4", (3, 8)),
    ("35.4.1", "8.5", "11.4", (3, 8)),
    ("35.6.1", "8.5", "11.4", (3, 8)),
    ("36.2.0", "8.6", "12.2", (3, 10)),  # JetPack 6.0 DP
    ("36.3.0", "8.6", "12.2", (3, 10)),  # JetPack 6.0: TensorRT 8, although L4T 36
    ("36.4.0", "10.3", "12.6", (3, 10)),  # JetPack 6.1
    ("36.4.3", "10.3", "12.6", (3, 10)),  # JetPack 6.2
])
def test_jetpack_stack_follows_the_l4t_release_not_its_major(release, trt, cuda, python):
    stack = jetpack_stack(release)
    assert stack is not None
    assert (stack.tensorrt, stack.cuda, stack.python) == (trt, cuda, python)
    major = trt.split(".")[0]
    assert stack.tensorrt_packages == [f"libnvinfer{major}", f"libnvinfer-plugin{major}", f"libnvonnxparsers{major}",
                                       "python3-libnvinfer"]
    v = cuda.replace(".", "-")
    assert stack.cuda_packages == [f"cuda-nvcc-{v}", f"cuda-cudart-dev-{v}", f"libcurand-dev-{v}"]


def test_jetpack_stack_is_unknown_outside_jetpack_5_and_6():
    assert jetpack_stack("32.7.1") is None and jetpack_stack("38.2.0") is None and jetpack_stack("garbage") is None


def test_in_a_container_the_model_comes_from_the_hosts_copy(tmp_path):
    """Containers mask /proc/device-tree/model; the host's copy is mounted at /tmp/nv_jetson_model."""
    paths = fake_jetson(tmp_path)
    (tmp_path / "proc/device-tree/model").unlink()
    assert detect_platform(paths).model is None
    write(tmp_path / "tmp/nv_jetson_model", "NVIDIA Jetson AGX Orin Developer Kit\0")
    facts = detect_platform(paths)
    assert facts.model == "NVIDIA Jetson AGX Orin Developer Kit" and facts.is_jetson
    # without the mounted release file the copy alone still says it is a Jetson
    (tmp_path / "etc/nv_tegra_release").unlink()
    assert detect_platform(paths).is_jetson
    # on the host the device tree wins over a stale copy
    write(tmp_path / "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\0")
    assert detect_platform(paths).model == "NVIDIA Jetson Orin Nano Developer Kit"
    assert detect_platform(fake_desktop(tmp_path / "desktop")).model is None
