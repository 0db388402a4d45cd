"""``edge doctor``'s environment report: every probe against fake sysfs/procfs/dev trees in tmp_path (a
JetPack 6 Orin, a JetPack 5 Xavier, a desktop), the real machine, and the command line.

The TensorRT probe is also run against tests/trt_standin.py: an API-contract test of the plugin-registry
calls on TensorRT 8.5 / 10.x / 11 (strict stand-ins of the documented API), NOT a TensorRT run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import pytest

from edge.doctor.facts import (
    SystemPaths,
    detect_platform,
    jetpack_for_l4t,
    opencv_build_facts,
    parse_cuda_version,
    parse_nvpmodel,
    read_device_model,
    read_meminfo,
    run_command,
    v4l2_devices,
)
from edge.doctor.probes import collect_report, probe_python
from edge.doctor.report import FAIL, OK, SKIP, WARN, Check, DoctorReport
from tests.trt_standin import make_tensorrt

ROOT = Path(__file__).resolve().parents[2]

ORIN_RELEASE = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n"
XAVIER_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
NANO_RELEASE = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n"


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def script_runner(bin_dir: Path):
    """Runs commands from ``bin_dir`` only (real processes through facts.run_command)."""
    def run(cmd: Sequence[str]) -> Tuple[int, str]:
        return run_command([str(bin_dir / cmd[0])] + list(cmd[1:]))
    return run


def fake_jetson(root: Path, release: str = ORIN_RELEASE, model: str = "NVIDIA Jetson Orin Nano Developer Kit",
                csi: bool = True, usb: bool = True, nvargus_running: bool = True, mem_available_kb: int = 5_000_000,
                gpu_min_is_max: bool = False, nvpmodel: Optional[str] = "NV Power Mode: 15W\n0\n",
                environ: Optional[Dict[str, str]] = None) -> SystemPaths:
    """A Jetson's /etc, /proc, /sys, /dev and CUDA, as files under ``root``."""
    write(root / "etc/nv_tegra_release", release)
    write(root / "proc/device-tree/model", model + "\0")
    index = 0
    if csi:
        write(root / f"dev/video{index}")
        write(root / f"sys/class/video4linux/video{index}/name", "vi-output, imx219 9-0010\n")
        index += 1
    if usb:
        write(root / f"dev/video{index}")
        write(root / f"sys/class/video4linux/video{index}/name", "USB 2.0 Camera: HD USB Camera\n")
    write(root / "usr/sbin/nvargus-daemon", "#!/bin/sh\n")
    if nvargus_running:
        write(root / "proc/812/comm", "nvargus-daemon\n")
    write(root / "proc/1/comm", "systemd\n")
    write(root / "proc/meminfo", f"MemTotal:        7620000 kB\nMemFree:          900000 kB\n"
                                 f"MemAvailable:    {mem_available_kb} kB\nSwapTotal:       3810000 kB\n")
    for i in range(6):
        cpu = root / f"sys/devices/system/cpu/cpu{i}"
        write(cpu / "online", "1\n" if i < 4 else "0\n")
        write(cpu / "cpufreq/scaling_cur_freq", "729600\n")
        write(cpu / "cpufreq/cpuinfo_max_freq", "1510400\n")
    gpu = root / "sys/class/devfreq/17000000.gpu"
    write(gpu / "name", "17000000.gpu\n")
    write(gpu / "cur_freq", "306000000\n")
    write(gpu / "max_freq", "624750000\n")
    write(gpu / "min_freq", "624750000\n" if gpu_min_is_max else "306000000\n")
    write(root / "usr/local/cuda/version.json", json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}))
    nvcc = write(root / "usr/local/cuda/bin/nvcc", "#!/bin/sh\necho 'Cuda compilation tools, release 12.6, V12.6.68'\n")
    nvcc.chmod(0o755)
    write(root / "usr/local/cuda/targets/aarch64-linux/lib/libcudart.so.12")
    write(root / "usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1")
    bin_dir = root / "bin"
    if nvpmodel is not None:
        tool = write(bin_dir / "nvpmodel", f"#!/bin/sh\nprintf '{nvpmodel}'\n")
        tool.chmod(0o755)
    bin_dir.mkdir(exist_ok=True)
    return SystemPaths(
        tegra_release=str(root / "etc/nv_tegra_release"), device_tree_model=str(root / "proc/device-tree/model"),
        dev_dir=str(root / "dev"), sysfs=str(root / "sys"), proc=str(root / "proc"),
        cuda_home=str(root / "usr/local/cuda"), lib_dirs=(str(root / "usr/lib/aarch64-linux-gnu/tegra"),),
        nvargus_paths=(str(root / "usr/sbin/nvargus-daemon"),), disk_path=str(root),
        environ=environ if environ is not None else {"PATH": "/nonexistent"}, run=script_runner(bin_dir),
    )


def fake_desktop(root: Path) -> SystemPaths:
    """An x86 machine without an NVIDIA GPU or camera."""
    write(root / "proc/meminfo", "MemTotal:       16000000 kB\nMemAvailable:   12000000 kB\nSwapTotal: 0 kB\n")
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "sys").mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    return SystemPaths(
        tegra_release=str(root / "etc/nv_tegra_release"), device_tree_model=str(root / "proc/device-tree/model"),
        dev_dir=str(root / "dev"), sysfs=str(root / "sys"), proc=str(root / "proc"),
        cuda_home=str(root / "usr/local/cuda"), lib_dirs=(str(root / "lib"),), nvargus_paths=(),
        disk_path=str(root), environ={"DISPLAY": ":0", "PATH": "/nonexistent"}, run=script_runner(root / "bin"),
    )


def checks_of(report: DoctorReport) -> Dict[str, Check]:
    return {c.name: c for c in report.checks}


# --- readers --------------------------------------------------------------------------------------


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


def test_report_text_and_json_agree(tmp_path):
    report = collect_report(fake_jetson(tmp_path), trt_module=make_tensorrt("8.5.2"))
    text = report.format_text()
    data = report.to_dict()
    counts = data["summary"]
    assert f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail, {counts['skip']} skip" in text
    for check in data["checks"]:
        assert f"{check['status']:<4}  {check['name']}" in text
        if check["status"] in (WARN, FAIL):
            assert check["fix"], f"{check['name']} is {check['status']} but says nothing about how to fix it"
    assert data["exit_code"] == (1 if counts["fail"] else 0)
    json.dumps(data)  # serializable as is


def test_check_rejects_unknown_status():
    with pytest.raises(ValueError):
        Check("x", "good", "")


# --- this machine and the command line ----------------------------------------------------------------


def test_real_machine_report_runs(tmp_path):
    report = collect_report()
    c = checks_of(report)
    assert c["ONNX Runtime"].status in (OK, WARN)
    assert "CPUExecutionProvider" in c["ONNX Runtime"].details["providers"]
    assert c["python"].details["version"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert c["disk"].status in (OK, WARN)


def test_cli_json_subprocess_exit_status_matches_failures(tmp_path):
    env = dict(os.environ, DISPLAY="", WAYLAND_DISPLAY="")
    proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "-q", "doctor", "--json"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    data = json.loads(proc.stdout)
    assert proc.returncode == data["exit_code"] == (1 if data["summary"]["fail"] else 0), proc.stderr
    display = next(c for c in data["checks"] if c["name"] == "display")
    assert display["status"] == "warn"
    assert "Traceback" not in proc.stderr
