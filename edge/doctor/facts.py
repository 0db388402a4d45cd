"""System facts for ``edge doctor``: where the probes look (``SystemPaths``: file locations, a command
runner, the environment), small readers of the files JetPack and the kernel write (device model, L4T
release -> JetPack, meminfo, V4L2 nodes, CPU/GPU clocks, nvpmodel, CUDA version, OpenCV build), and
``PlatformFacts`` (Jetson or not, model, L4T, JetPack, NVIDIA driver) that decide which checks apply.

Every reader takes the path it reads, so tests run them against fake sysfs/procfs trees.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edge.errors import EdgeError

CommandRunner = Callable[[Sequence[str]], Tuple[int, str]]


def run_command(cmd: Sequence[str], timeout: float = 10.0) -> Tuple[int, str]:
    """Run ``cmd``; (exit status, stdout + stderr). 127 when the program does not exist, 124 on timeout."""
    try:
        proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except PermissionError as exc:
        return 126, str(exc)
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]}: no answer in {timeout:.0f} s"
    return proc.returncode, proc.stdout.decode("utf-8", errors="replace")


@dataclass
class SystemPaths:
    """Where the probes look. Defaults are the real system; tests point them into ``tmp_path``.

    tegra_release: L4T release file. device_tree_model: the board name (NUL-terminated).
    jetson_model_file: the board name where /proc/device-tree is masked (a container): the copy of
    /proc/device-tree/model that jetson-inference's docker/run.sh and deploy/container.sh mount there.
    dev_dir / sysfs / proc: roots of /dev, /sys and /proc. cuda_home: the CUDA toolkit.
    lib_dirs: where shared libraries (libcuda, libcudart, libnvinfer_plugin) are looked for.
    nvargus_paths: where nvargus-daemon (the CSI camera service) may be installed.
    disk_path: the file system whose free space matters (engines, outputs).
    environ: the environment (None: ``os.environ``). run: runs a command -> (status, output).
    find_library: ``ctypes.util.find_library``-like fallback (None: files in lib_dirs only).
    """

    tegra_release: str = "/etc/nv_tegra_release"
    device_tree_model: str = "/proc/device-tree/model"
    jetson_model_file: str = "/tmp/nv_jetson_model"
    dev_dir: str = "/dev"
    sysfs: str = "/sys"
    proc: str = "/proc"
    cuda_home: str = "/usr/local/cuda"
    lib_dirs: Tuple[str, ...] = (
        "/usr/lib/aarch64-linux-gnu/tegra",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    )
    nvargus_paths: Tuple[str, ...] = ("/usr/sbin/nvargus-daemon", "/usr/bin/nvargus-daemon")
    disk_path: str = "."
    environ: Optional[Dict[str, str]] = None
    run: CommandRunner = run_command
    find_library: Optional[Callable[[str], Optional[str]]] = None

    def env(self) -> Dict[str, str]:
        return dict(os.environ) if self.environ is None else dict(self.environ)

    def validate(self) -> "SystemPaths":
        if not callable(self.run):
            raise EdgeError("SystemPaths.run must be callable: (cmd) -> (status, output)")
        if not self.lib_dirs:
            raise EdgeError("SystemPaths.lib_dirs is empty; give at least one library directory")
        return self


def system_paths() -> SystemPaths:
    """The real system, with the dynamic linker's search as the library fallback."""
    import ctypes.util

    return SystemPaths(find_library=ctypes.util.find_library)


# -------------------------------------------------------------------------------------------------
# Small readers (each takes the path it reads)
# -------------------------------------------------------------------------------------------------


def read_text(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_device_model(path: str) -> Optional[str]:
    """'/proc/device-tree/model' -> 'NVIDIA Jetson Orin Nano Developer Kit' (NUL stripped); None if absent."""
    text = read_text(path)
    if text is None:
        return None
    text = text.replace("\x00", "").strip()
    return text or None


# L4T release -> JetPack version (NVIDIA's JetPack archive). Unknown point releases fall back to the line.
_JETPACK = {
    "32.7": "4.6.x", "35.1": "5.0.2", "35.2": "5.1", "35.3": "5.1.1", "35.4": "5.1.2", "35.5": "5.1.3",
    "35.6.0": "5.1.4", "35.6.1": "5.1.5", "36.2": "6.0 DP", "36.3": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}
_JETPACK_LINE = {"32": "4.x", "35": "5.x", "36": "6.x", "38": "7.x"}


def jetpack_for_l4t(release: str) -> Optional[str]:
    """'35.4.1' -> '5.1.2'; '36.9.9' -> '6.x'; None when the major release is unknown."""
    parts = release.split(".")
    for key in (".".join(parts[:3]), ".".join(parts[:2])):
        if key in _JETPACK:
            return _JETPACK[key]
    return _JETPACK_LINE.get(parts[0])


@dataclass(frozen=True)
class JetPackStack:
    """What JetPack ships for an L4T release: TensorRT and CUDA (MAJOR.MINOR) and the Python its TensorRT
    bindings are built for. ``tensorrt_packages`` / ``cuda_packages``: JetPack's own apt names."""

    tensorrt: str
    cuda: str
    python: Tuple[int, int]

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])

    @property
    def tensorrt_packages(self) -> List[str]:
        m = self.tensorrt_major
        return [f"libnvinfer{m}", f"libnvinfer-plugin{m}", f"libnvonnxparsers{m}", "python3-libnvinfer"]

    @property
    def cuda_packages(self) -> List[str]:
        """nvcc, cuda.h + runtime, cuRAND: what PyCUDA builds against. Never ``nvidia-cuda-dev`` by bare
        name: Ubuntu 22.04's own package of that name (CUDA 11.5) can win over JetPack's meta package."""
        v = self.cuda.replace(".", "-")
        return [f"cuda-nvcc-{v}", f"cuda-cudart-dev-{v}", f"libcurand-dev-{v}"]


# L4T (major, minor) from which on a stack applies (NVIDIA's JetPack release notes). The TensorRT major
# does not follow the L4T major: JetPack 6.0 (L4T 36.2/36.3) ships TensorRT 8.6 with CUDA 12.2, JetPack
# 6.1+ (L4T 36.4+) TensorRT 10.3 with CUDA 12.6. deploy/lib/common.sh (edge_trt_for_l4t,
# edge_cuda_for_l4t) holds the same table; tests/test_deploy.py keeps the two equal.
_JETPACK_STACK: Dict[str, List[Tuple[int, JetPackStack]]] = {
    "35": [(0, JetPackStack("8.4", "11.4", (3, 8))), (2, JetPackStack("8.5", "11.4", (3, 8)))],
    "36": [(0, JetPackStack("8.6", "12.2", (3, 10))), (4, JetPackStack("10.3", "12.6", (3, 10)))],
}


def jetpack_stack(release: str) -> Optional[JetPackStack]:
    """'36.3.0' -> TensorRT 8.6, CUDA 12.2, Python 3.10; None for an L4T line edge's setup does not know."""
    parts = release.split(".")
    rows = _JETPACK_STACK.get(parts[0])
    if not rows:
        return None
    try:
        minor = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None
    found = None
    for first_minor, stack in rows:
        if minor >= first_minor:
            found = stack
    return found


def read_meminfo(path: str) -> Dict[str, int]:
    """/proc/meminfo -> {'MemTotal': bytes, 'MemAvailable': bytes, ...}."""
    out: Dict[str, int] = {}
    for line in (read_text(path) or "").splitlines():
        m = re.match(r"^(\w+):\s+(\d+)(?:\s+kB)?", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * (1024 if "kB" in line else 1)
    return out


def v4l2_devices(dev_dir: str, sysfs: str) -> List[Dict[str, str]]:
    """[{'path': '/dev/video0', 'name': 'vi-output, imx219 9-0010', 'kind': 'csi'|'v4l2'}], sorted.

    The name comes from /sys/class/video4linux/videoN/name; Jetson CSI sensors appear as 'vi-output, ...'.
    """
    found = []
    for node in sorted(Path(dev_dir).glob("video*"), key=lambda p: (len(p.name), p.name)):
        if not re.match(r"^video\d+$", node.name):
            continue
        name = (read_text(str(Path(sysfs) / "class" / "video4linux" / node.name / "name")) or "").strip()
        kind = "csi" if name.startswith("vi-output") else "v4l2"
        found.append({"path": str(node), "name": name or "?", "kind": kind})
    return found


def process_running(proc: str, name: str) -> bool:
    """True when a process whose comm is ``name`` runs (scans <proc>/<pid>/comm)."""
    for comm in Path(proc).glob("[0-9]*/comm"):
        if (read_text(str(comm)) or "").strip() == name:
            return True
    return False


def read_freq(path: Path) -> Optional[int]:
    text = read_text(str(path))
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def cpu_clocks(sysfs: str) -> Dict[str, Any]:
    """Online CPUs and their current/max frequency in kHz, from <sysfs>/devices/system/cpu."""
    root = Path(sysfs) / "devices" / "system" / "cpu"
    cpus = sorted((p for p in root.glob("cpu[0-9]*") if re.match(r"^cpu\d+$", p.name)),
                  key=lambda p: int(p.name[3:]))
    online, cur, top = 0, [], []
    for cpu in cpus:
        flag = read_text(str(cpu / "online"))
        if flag is not None and flag.strip() == "0":
            continue
        online += 1
        c = read_freq(cpu / "cpufreq" / "scaling_cur_freq")
        m = read_freq(cpu / "cpufreq" / "cpuinfo_max_freq")
        if c:
            cur.append(c)
        if m:
            top.append(m)
    return {"cpus": len(cpus), "online": online, "cur_khz": max(cur) if cur else None,
            "max_khz": max(top) if top else None}


_GPU_DEVFREQ = re.compile(r"gpu|ga10b|gv11b|gp10b|gk20a|gb10b", re.IGNORECASE)


def gpu_clocks(sysfs: str) -> Optional[Dict[str, Any]]:
    """Jetson GPU devfreq node: {'node', 'cur_hz', 'max_hz', 'min_hz'}; None when there is none."""
    for node in sorted((Path(sysfs) / "class" / "devfreq").glob("*")):
        name = (read_text(str(node / "name")) or "").strip()
        if not (_GPU_DEVFREQ.search(node.name) or _GPU_DEVFREQ.search(name)):
            continue
        return {"node": node.name, "cur_hz": read_freq(node / "cur_freq"), "max_hz": read_freq(node / "max_freq"),
                "min_hz": read_freq(node / "min_freq")}
    return None


def parse_nvpmodel(output: str) -> Dict[str, Any]:
    """`nvpmodel -q` output ('NV Power Mode: MAXN\\n0\\n') -> {'mode': 'MAXN', 'id': 0}."""
    mode = re.search(r"NV Power Mode:\s*(.+)", output)
    ident = re.search(r"^\s*(\d+)\s*$", output, re.MULTILINE)
    return {"mode": mode.group(1).strip() if mode else None, "id": int(ident.group(1)) if ident else None}


def parse_cuda_version(text: str) -> Optional[str]:
    """CUDA version from version.json, version.txt or `nvcc --version` text."""
    try:
        data = json.loads(text)
        return str(data["cuda"]["version"])
    except (ValueError, KeyError, TypeError):
        pass
    m = re.search(r"release\s+(\d+\.\d+)", text) or re.search(r"CUDA Version\s+(\d+(?:\.\d+)+)", text)
    return m.group(1) if m else None


def opencv_build_facts(build_info: str) -> Dict[str, Any]:
    """From cv2.getBuildInformation(): {'gstreamer': bool, 'gui': str, 'cuda': bool, 'ffmpeg': bool}."""
    def flag(name: str) -> bool:
        m = re.search(rf"^\s*{name}:\s*(\S+)", build_info, re.MULTILINE)
        return bool(m) and m.group(1).upper().startswith("YES")

    gui = re.search(r"^\s*GUI:\s*(\S+)", build_info, re.MULTILINE)
    cuda = re.search(r"^\s*NVIDIA CUDA:\s*(\S+)", build_info, re.MULTILINE)
    return {"gstreamer": flag("GStreamer"), "ffmpeg": flag("FFMPEG"), "gui": gui.group(1) if gui else "NONE",
            "cuda": bool(cuda) and cuda.group(1).upper().startswith("YES")}


def find_libs(paths: SystemPaths, pattern: str, extra_dirs: Sequence[str] = ()) -> List[str]:
    """Files matching ``pattern`` (e.g. 'libcudart.so*') in ``extra_dirs`` then ``paths.lib_dirs``."""
    hits: List[str] = []
    for d in list(extra_dirs) + list(paths.lib_dirs):
        for p in sorted(Path(d).glob(pattern)):
            if str(p) not in hits:
                hits.append(str(p))
    return hits


# -------------------------------------------------------------------------------------------------
# Platform facts shared by the probes
# -------------------------------------------------------------------------------------------------


@dataclass
class PlatformFacts:
    """What kind of machine this is; decides which checks apply."""

    machine: str
    system: str
    model: Optional[str]
    l4t: Optional[str]
    jetpack: Optional[str]
    is_jetson: bool
    nvidia_driver: Optional[str]  # desktop driver version from <proc>/driver/nvidia/version

    @property
    def has_gpu(self) -> bool:
        return self.is_jetson or self.nvidia_driver is not None


def detect_platform(paths: SystemPaths) -> PlatformFacts:
    from edge.trt.engine_key import read_l4t_release

    # In a container /proc/device-tree is masked; the host's copy is mounted at jetson_model_file.
    model = read_device_model(paths.device_tree_model) or read_device_model(paths.jetson_model_file)
    l4t = read_l4t_release(paths.tegra_release)
    is_jetson = bool(l4t) or bool(model and re.search(r"jetson|tegra", model, re.IGNORECASE))
    driver_text = read_text(str(Path(paths.proc) / "driver" / "nvidia" / "version"))
    driver = None
    if driver_text:
        m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([\d.]+)", driver_text)
        driver = m.group(1) if m else driver_text.splitlines()[0].strip()
    return PlatformFacts(
        machine=platform.machine(), system=platform.system(), model=model, l4t=l4t,
        jetpack=jetpack_for_l4t(l4t) if l4t else None, is_jetson=is_jetson, nvidia_driver=driver,
    )
