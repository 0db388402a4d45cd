"""``edge doctor``'s environment report: every probe against fake sysfs/procfs/dev trees in tmp_path (a
JetPack 6 Orin, a JetPack 5 Xavier, a desktop; tests/doctor/fake_systems.py), and the real machine.

The TensorRT probe is also run against tests/trt_standin.py: an API-contract test of the plugin-registry
calls on TensorRT 8.5 / 10.x / 11 (strict stand-ins of the documented API), NOT a TensorRT run.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Sequence, Tuple

from edge.doctor.facts import detect_platform
from edge.doctor.probes import collect_report, probe_python
from edge.doctor.report import FAIL, OK, SKIP, WARN
from edge.errors import MissingDependencyError
from tests.doctor.fake_systems import (
    NANO_RELEASE,
    ORIN_RELEASE,
    XAVIER_RELEASE,
    checks_of,
    fake_desktop,
    fake_jetson,
    write,
)
from tests.trt_standin import make_tensorrt

# --- a JetPack 6 Orin ---------------------------------------------------------------------------------


def test_orin_jetpack6_report(tmp_path):
    paths = fake_jetson(tmp_path, environ={"PATH": "/nonexistent"})
    report = collect_report(paths, trt_module=make_tensorrt("10.3.0"))
    c = checks_of(report)
    assert c["platform"].status == OK and "Orin Nano" in c["platform"].summary
    assert c["L4T / JetPack"].status == OK and c["L4T / JetPack"].summary == "L4T 36.4.0 = JetPack 6.1"
    assert c["CUDA"].status == OK and "CUDA 12.6.68" in c["CUDA"].summary
    assert c["TensorRT"].status == OK and "EfficientNMS_TRT registered" in c["TensorRT"].summary
    assert c["V4L2 cameras"].status == OK and "video1 (USB 2.0 Camera" in c["V4L2 cameras"].summary
    assert c["CSI cameras"].status == OK and "imx219" in c["CSI cameras"].summary
    assert c["display"].status == WARN and "--serve" in c["display"].fix
    power = c["power mode / clocks"]
    assert power.status == OK and "power mode 15W (0)" in power.summary
    assert "CPU 4/6 online at 0.73/1.51 GHz" in power.summary and "GPU 306/625 MHz" in power.summary
    assert "jetson_clocks" in power.summary and power.details["clocks_locked"] is False
    assert c["memory"].status == OK and "swap 3.6 GiB" in c["memory"].summary
    cv = c["OpenCV"].details
    if cv.get("from_pip") and not cv.get("gstreamer"):  # this machine's pip cv2, seen from a "Jetson"
        assert c["OpenCV"].status == FAIL and "pip uninstall opencv-python" in c["OpenCV"].fix
    if importlib.util.find_spec("pycuda") is None:  # no PyCUDA on a Jetson: a failure, with the fix
        assert c["PyCUDA"].status == FAIL and "setup-jetson.sh" in c["PyCUDA"].fix
    assert report.exit_code == (1 if any(x.status == FAIL for x in report.checks) else 0)
    assert set(report.to_dict()["jetson"]) == {"is_jetson", "model", "l4t", "jetpack"}


def test_orin_with_a_wedged_argus_daemon_low_memory_and_locked_clocks(tmp_path):
    paths = fake_jetson(tmp_path, nvargus_running=False, mem_available_kb=600_000, gpu_min_is_max=True, usb=False)
    c = checks_of(collect_report(paths, trt_module=make_tensorrt("10.3.0")))
    assert c["CSI cameras"].status == WARN and "restart nvargus-daemon" in c["CSI cameras"].fix
    assert c["V4L2 cameras"].status == WARN
    assert c["memory"].status == WARN and "--workspace" in c["memory"].fix
    assert c["power mode / clocks"].details["clocks_locked"] is True
    assert "jetson_clocks" not in c["power mode / clocks"].summary


def test_jetson_without_nvpmodel_or_cuda_runtime(tmp_path):
    paths = fake_jetson(tmp_path, nvpmodel=None)
    (tmp_path / "usr/local/cuda/targets/aarch64-linux/lib/libcudart.so.12").unlink()
    c = checks_of(collect_report(paths, trt_module=make_tensorrt("10.3.0")))
    assert c["power mode / clocks"].status == WARN and "nvpmodel" in c["power mode / clocks"].summary
    assert c["CUDA"].status == FAIL and "nvidia-cuda-dev" in c["CUDA"].fix


# --- JetPack 6.0: L4T 36, TensorRT 8.6 ----------------------------------------------------------------

JP60_RELEASE = ORIN_RELEASE.replace("REVISION: 4.0", "REVISION: 3.0")


def _no_tensorrt():
    raise MissingDependencyError("tensorrt", "building and running TensorRT engines", "install JetPack's")


def test_jetpack_6_0_is_tensorrt_8_and_cuda_12_2(tmp_path, monkeypatch):
    """L4T 36.3 (JetPack 6.0) ships TensorRT 8.6 and CUDA 12.2: the hints name its packages, not 10's."""
    paths = fake_jetson(tmp_path, release=JP60_RELEASE)
    (tmp_path / "usr/local/cuda/targets/aarch64-linux/lib/libcudart.so.12").unlink()
    monkeypatch.setattr("edge.trt.api.load_tensorrt", _no_tensorrt)
    c = checks_of(collect_report(paths))
    l4t = c["L4T / JetPack"]
    assert l4t.summary == "L4T 36.3.0 = JetPack 6.0"
    assert (l4t.details["tensorrt"], l4t.details["cuda"], l4t.details["python"]) == ("8.6", "12.2", "3.10")
    trt = c["TensorRT"]
    assert trt.status == FAIL and "libnvinfer-plugin8" in trt.fix and "libnvinfer-plugin10" not in trt.fix
    assert "TensorRT 8.6" in trt.fix
    cuda = c["CUDA"]
    assert cuda.status == FAIL and "cuda-nvcc-12-2 cuda-cudart-dev-12-2 libcurand-dev-12-2" in cuda.fix
    assert "apt-get install nvidia-cuda-dev" not in cuda.fix


def test_jetpack_6_1_hints_name_tensorrt_10_and_cuda_12_6(tmp_path, monkeypatch):
    monkeypatch.setattr("edge.trt.api.load_tensorrt", _no_tensorrt)
    paths = fake_jetson(tmp_path)
    (tmp_path / "usr/local/cuda/targets/aarch64-linux/lib/libcudart.so.12").unlink()
    c = checks_of(collect_report(paths))
    assert c["L4T / JetPack"].details["tensorrt"] == "10.3"
    assert "libnvinfer-plugin10" in c["TensorRT"].fix and "cuda-nvcc-12-6" in c["CUDA"].fix


def test_platform_in_a_container_reads_the_hosts_model_copy(tmp_path):
    paths = fake_jetson(tmp_path)
    (tmp_path / "proc/device-tree/model").unlink()
    write(tmp_path / "tmp/nv_jetson_model", "NVIDIA Jetson AGX Orin Developer Kit\0")
    c = checks_of(collect_report(paths, trt_module=make_tensorrt("10.3.0")))
    assert c["platform"].status == OK and "AGX Orin" in c["platform"].summary


# --- a JetPack 5 Xavier, and older/newer TensorRT ----------------------------------------------------


def test_xavier_jetpack5_with_tensorrt_85(tmp_path):
    paths = fake_jetson(tmp_path, release=XAVIER_RELEASE, model="NVIDIA Jetson AGX Xavier Developer Kit", csi=False)
    c = checks_of(collect_report(paths, trt_module=make_tensorrt("8.5.2")))
    assert c["L4T / JetPack"].summary == "L4T 35.4.1 = JetPack 5.1.2"
    trt = c["TensorRT"]
    assert trt.status == OK and trt.details["version"] == "8.5.2" and trt.details["onnx_nms_import"] is False
    assert c["CSI cameras"].status == WARN and "jetson-io" in c["CSI cameras"].fix


def test_python_probe_on_a_jetson_wants_system_site_packages_and_jetpacks_python(tmp_path):
    paths = fake_jetson(tmp_path, release=XAVIER_RELEASE)
    facts = detect_platform(paths)
    venv = tmp_path / "venv"
    write(venv / "pyvenv.cfg", "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.8.10\n")
    isolated = probe_python(facts, str(venv), "/usr", (3, 8, 10))
    assert isolated.status == FAIL and "--system-site-packages" in isolated.fix
    write(venv / "pyvenv.cfg", "home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.8.10\n")
    assert probe_python(facts, str(venv), "/usr", (3, 8, 10)).status == OK
    wrong = probe_python(facts, str(venv), "/usr", (3, 11, 2))
    assert wrong.status == WARN and "3.8" in wrong.summary
    desktop = detect_platform(fake_desktop(tmp_path / "desktop"))
    assert probe_python(desktop, str(venv), "/usr", (3, 11, 2)).status == OK


def test_tensorrt_without_efficient_nms_plugin_fails_with_the_way_out(tmp_path):
    paths = fake_jetson(tmp_path)
    c = checks_of(collect_report(paths, trt_module=make_tensorrt("10.3.0", plugins=("BatchedNMS_TRT",))))
    assert c["TensorRT"].status == FAIL and "NOT registered" in c["TensorRT"].summary
    assert "--nms onnx" in c["TensorRT"].fix  # 10.3 imports ONNX NonMaxSuppression


def test_tensorrt_11_is_reported_as_strongly_typed(tmp_path):
    c = checks_of(collect_report(fake_jetson(tmp_path), trt_module=make_tensorrt("11.0.0")))
    assert c["TensorRT"].status == OK and "strongly typed only" in c["TensorRT"].summary


def test_jetpack4_nano_is_best_effort(tmp_path):
    paths = fake_jetson(tmp_path, release=NANO_RELEASE, model="NVIDIA Jetson Nano Developer Kit")
    c = checks_of(collect_report(paths, trt_module=make_tensorrt("10.3.0")))
    assert c["L4T / JetPack"].status == WARN and "best effort" in c["L4T / JetPack"].summary


# --- a desktop without GPU -----------------------------------------------------------------------------


def test_desktop_without_gpu_skips_jetson_and_gpu_checks(tmp_path):
    report = collect_report(fake_desktop(tmp_path))
    c = checks_of(report)
    assert c["platform"].status == OK and "not a Jetson" in c["platform"].summary
    for name in ("L4T / JetPack", "CUDA", "CSI cameras", "power mode / clocks"):
        assert c[name].status == SKIP, name
    assert c["display"].status == OK and c["display"].summary == "DISPLAY=:0"
    assert c["V4L2 cameras"].status == WARN
    # no TensorRT/PyCUDA on this machine and no GPU in the fake tree: skipped, not failed
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert c["TensorRT"].status == SKIP
    names = [x.name for x in report.checks]
    assert names == ["platform", "L4T / JetPack", "python", "CUDA", "TensorRT", "PyCUDA", "OpenCV", "V4L2 cameras",
                     "CSI cameras", "display", "power mode / clocks", "memory", "disk", "ONNX Runtime"]


def test_a_crashing_probe_becomes_a_failed_line(tmp_path):
    paths = fake_jetson(tmp_path)

    def broken_run(cmd: Sequence[str]) -> Tuple[int, str]:
        raise OSError("nvpmodel hung the bus")

    paths.run = broken_run
    c = checks_of(collect_report(paths, trt_module=make_tensorrt("10.3.0")))
    assert c["power mode / clocks"].status == FAIL and "nvpmodel hung the bus" in c["power mode / clocks"].summary
    assert c["memory"].status == OK  # the other probes still ran


# --- this machine ----------------------------------------------------------------------------------


def test_real_machine_report_runs(tmp_path):
    report = collect_report()
    c = checks_of(report)
    assert c["ONNX Runtime"].status in (OK, WARN)
    assert "CPUExecutionProvider" in c["ONNX Runtime"].details["providers"]
    assert c["python"].details["version"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert c["disk"].status in (OK, WARN)
