"""Fake systems for ``edge doctor``'s probes: a Jetson's /etc, /proc, /sys, /dev and CUDA as files under
tmp_path (JetPack 6 Orin by default; JetPack 5 Xavier and JetPack 4 Nano releases), and a desktop without
an NVIDIA GPU or camera, each as the ``SystemPaths`` the probes read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from edge.doctor.facts import SystemPaths, run_command
from edge.doctor.report import Check, DoctorReport

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
        jetson_model_file=str(root / "tmp/nv_jetson_model"),
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
        jetson_model_file=str(root / "tmp/nv_jetson_model"),
        dev_dir=str(root / "dev"), sysfs=str(root / "sys"), proc=str(root / "proc"),
        cuda_home=str(root / "usr/local/cuda"), lib_dirs=(str(root / "lib"),), nvargus_paths=(),
        disk_path=str(root), environ={"DISPLAY": ":0", "PATH": "/nonexistent"}, run=script_runner(root / "bin"),
    )


def checks_of(report: DoctorReport) -> Dict[str, Check]:
    return {c.name: c for c in report.checks}
