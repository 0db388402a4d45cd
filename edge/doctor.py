"""``edge doctor``: is this machine ready to run edge? An environment report and an on-device self-test.

Environment report (``collect_report``): one ``Check`` per line, each ``ok``, ``warn``, ``fail`` or
``skip`` (not applicable here), with how to fix what is wrong:

    platform (Jetson model), L4T / JetPack, Python environment, CUDA toolkit and driver, TensorRT and its
    plugin library (EfficientNMS_TRT registered?), PyCUDA, OpenCV build (GStreamer?), V4L2 cameras, CSI
    cameras (nvargus-daemon), display, power mode and clocks, memory, disk, ONNX Runtime providers.

Every probe reads the system through ``SystemPaths`` (file locations, a command runner, the environment),
so tests run the same probes against fake sysfs/procfs trees.

Self-test (``run_selftest``), the GPU test suite a user runs on their own device:

1. ONNX Runtime on the deploy model: the backend contract (``edge.runtime.backend.conformance_report``),
   the graph split at its NMS (the NMS "tail" alone reproduces the detections from the pre-NMS
   tensors), and timings.
2. For each precision the device supports (fp32; fp16 on SM 5.3/6.0/6.2 and >= 7.0; int8 with a Q/DQ
   model on SM 6.1 and >= 7.0; on TensorRT 11 the precisions the ONNX itself carries): build an engine
   with ``edge.trt.build``, run it through the TensorRT backend, check the backend contract, compare the
   pre-NMS tensors with ONNX Runtime's on the same inputs (within ``PRE_NMS_TOLERANCE``; errors are
   ``max|trt - ort| / max(1, max|ort|)``), check that TensorRT's NMS output is identical to the reference
   NMS tail run on TensorRT's own pre-NMS tensors, and time it.

Where TensorRT, PyCUDA or a GPU is missing, the TensorRT checks are reported as ``skip`` with the exact
reason; only ``fail`` makes the exit status nonzero.

Runtime path: no torch. numpy and the standard library at import; onnx, onnxruntime, OpenCV, TensorRT and
PyCUDA are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import EdgeError, MissingDependencyError, ModelError, import_optional

log = logging.getLogger(__name__)

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)

GIB = 1 << 30
MIN_FREE_MEMORY = 1 * GIB  # below this, engine builds on small Jetsons run out of memory
MIN_FREE_DISK = 2 * GIB

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
class Check:
    """One report line. ``status``: ok | warn | fail | skip; ``fix``: what to do when not ok."""

    name: str
    status: str
    summary: str
    fix: str = ""
    details: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status {self.status!r} is not one of {STATUSES}")

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "fix": self.fix,
                "details": self.details}


@dataclass
class SystemPaths:
    """Where the probes look. Defaults are the real system; tests point them into ``tmp_path``.

    tegra_release: L4T release file. device_tree_model: the board name (NUL-terminated).
    dev_dir / sysfs / proc: roots of /dev, /sys and /proc. cuda_home: the CUDA toolkit.
    lib_dirs: where shared libraries (libcuda, libcudart, libnvinfer_plugin) are looked for.
    nvargus_paths: where nvargus-daemon (the CSI camera service) may be installed.
    disk_path: the file system whose free space matters (engines, outputs).
    environ: the environment (None: ``os.environ``). run: runs a command -> (status, output).
    find_library: ``ctypes.util.find_library``-like fallback (None: files in lib_dirs only).
    """

    tegra_release: str = "/etc/nv_tegra_release"
    device_tree_model: str = "/proc/device-tree/model"
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

    model = read_device_model(paths.device_tree_model)
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


# -------------------------------------------------------------------------------------------------
# Probes: each returns one Check
# -------------------------------------------------------------------------------------------------


def probe_platform(facts: PlatformFacts) -> Check:
    details = {"machine": facts.machine, "system": facts.system, "model": facts.model}
    if facts.is_jetson:
        return Check("platform", OK, f"{facts.model or 'NVIDIA Jetson (model unknown)'} ({facts.machine})", details=details)
    if facts.nvidia_driver:
        return Check("platform", OK, f"not a Jetson: {facts.system} {facts.machine} with an NVIDIA GPU "
                     f"(driver {facts.nvidia_driver})", details=details)
    return Check("platform", OK, f"not a Jetson: {facts.system} {facts.machine}, no NVIDIA GPU (edge-run uses "
                 "ONNX Runtime on the CPU)", details=details)


def probe_l4t(facts: PlatformFacts, paths: SystemPaths) -> Check:
    name = "L4T / JetPack"
    if not facts.is_jetson:
        return Check(name, SKIP, "not a Jetson")
    details = {"l4t": facts.l4t, "jetpack": facts.jetpack}
    if not facts.l4t:
        return Check(name, FAIL, f"{paths.tegra_release} is missing or unreadable on this Jetson",
                     "the L4T release file comes with JetPack; reflash or reinstall nvidia-l4t-core", details)
    major = facts.l4t.split(".")[0]
    summary = f"L4T {facts.l4t} = JetPack {facts.jetpack or 'unknown'}"
    if major == "32":
        return Check(name, WARN, summary + ": TensorRT 8.2, Python 3.6; edge-run only, best effort",
                     "upgrade to JetPack 5 (Xavier) or 6 (Orin); on a Nano build engines with trtexec", details)
    if major not in ("35", "36", "38"):
        return Check(name, WARN, summary + ": a release edge was not written for",
                     "use JetPack 5.1 (L4T R35) or 6.x (L4T R36)", details)
    return Check(name, OK, summary, details=details)


def probe_python(facts: PlatformFacts, prefix: Optional[str] = None, base_prefix: Optional[str] = None,
                 version: Optional[Tuple[int, int, int]] = None) -> Check:
    """The interpreter (``sys.version_info``, ``sys.prefix`` by default) and, in a venv, whether it sees
    the system site-packages (JetPack's tensorrt and cv2 live there)."""
    prefix = sys.prefix if prefix is None else prefix
    base_prefix = getattr(sys, "base_prefix", sys.prefix) if base_prefix is None else base_prefix
    version = tuple(sys.version_info[:3]) if version is None else tuple(version)  # type: ignore[assignment]
    text = ".".join(str(v) for v in version)
    in_venv = prefix != base_prefix
    system_site = True
    if in_venv:
        cfg = read_text(str(Path(prefix) / "pyvenv.cfg")) or ""
        m = re.search(r"^include-system-site-packages\s*=\s*(\w+)", cfg, re.MULTILINE)
        system_site = bool(m) and m.group(1).lower() == "true"
    details = {"version": text, "prefix": prefix, "venv": in_venv, "system_site_packages": system_site}
    summary = f"Python {text} ({'venv ' + prefix if in_venv else 'system'})"
    if facts.is_jetson and in_venv and not system_site:
        return Check("python", FAIL, summary + " without --system-site-packages: JetPack's TensorRT and "
                     "GStreamer OpenCV are invisible here",
                     f"recreate it: python3 -m venv --system-site-packages {prefix} (deploy/setup-jetson.sh does this)",
                     details)
    if facts.is_jetson and facts.l4t:
        expected = {"35": (3, 8), "36": (3, 10)}.get(facts.l4t.split(".")[0])
        if expected and tuple(version[:2]) != expected:
            return Check("python", WARN, summary + f": JetPack's TensorRT bindings are built for Python "
                         f"{expected[0]}.{expected[1]}",
                         f"make the venv with the system python3 ({expected[0]}.{expected[1]})", details)
    return Check("python", OK, summary, details=details)


def probe_cuda(facts: PlatformFacts, paths: SystemPaths) -> Check:
    name = "CUDA"
    home = Path(paths.cuda_home)
    nvcc = home / "bin" / "nvcc"
    nvcc_path = str(nvcc) if nvcc.exists() else shutil.which("nvcc", path=paths.env().get("PATH", ""))
    version = None
    for vf in ("version.json", "version.txt"):
        text = read_text(str(home / vf))
        if text:
            version = parse_cuda_version(text)
            if version:
                break
    if version is None and nvcc_path:
        rc, out = paths.run([nvcc_path, "--version"])
        version = parse_cuda_version(out) if rc == 0 else None
    cuda_dirs = [str(home / "lib64")] + [str(p) for p in sorted(home.glob("targets/*/lib"))]
    cudart = find_libs(paths, "libcudart.so*", cuda_dirs)
    driver = find_libs(paths, "libcuda.so*")
    if not cudart and paths.find_library:
        found = paths.find_library("cudart")
        cudart = [found] if found else []
    if not driver and paths.find_library:
        found = paths.find_library("cuda")
        driver = [found] if found else []
    details = {"cuda_home": str(home), "version": version, "nvcc": nvcc_path, "libcudart": cudart[:1],
               "libcuda": driver[:1]}
    if not facts.has_gpu:
        present = f"CUDA {version or '?'} toolkit present" if (cudart or nvcc_path) else "no CUDA toolkit"
        return Check(name, SKIP, f"no NVIDIA GPU ({present}; not needed for ONNX Runtime on the CPU)",
                     details=details)
    parts = [f"CUDA {version}" if version else "CUDA version unknown",
             f"nvcc {'yes' if nvcc_path else 'no'}", f"libcudart {'yes' if cudart else 'no'}",
             f"driver libcuda {'yes' if driver else 'no'}"]
    summary = ", ".join(parts)
    install = ("sudo apt-get install nvidia-cuda-dev (JetPack's CUDA; deploy/setup-jetson.sh does it)"
               if facts.is_jetson else "install the CUDA toolkit matching your driver (nvidia-smi shows it)")
    if not cudart:
        return Check(name, FAIL, summary + ": the CUDA runtime library is missing (TensorRT needs it)", install,
                     details)
    if not driver:
        return Check(name, FAIL, summary + ": the CUDA driver library (libcuda) is missing",
                     "reinstall the L4T/NVIDIA driver packages" if facts.is_jetson else
                     "install the NVIDIA driver (nvidia-smi must work)", details)
    if not nvcc_path:
        return Check(name, WARN, summary + ": without nvcc and the CUDA headers PyCUDA cannot be (re)built",
                     install, details)
    return Check(name, OK, summary, details=details)


def _tensorrt_missing(facts: PlatformFacts, exc: BaseException) -> Check:
    details = {"error": str(exc)}
    if facts.is_jetson:
        return Check("TensorRT", FAIL, "the tensorrt Python module is not importable",
                     "sudo apt-get install python3-libnvinfer libnvinfer-plugin8 (JetPack 5) or "
                     "libnvinfer-plugin10 (JetPack 6), in a venv made with --system-site-packages "
                     "(deploy/setup-jetson.sh)", details)
    if facts.has_gpu:
        return Check("TensorRT", WARN, "not installed: edge-run falls back to ONNX Runtime",
                     "pip install tensorrt (NVIDIA's index) to build and run engines", details)
    return Check("TensorRT", SKIP, "not installed (no NVIDIA GPU here: ONNX Runtime runs the models)",
                 details=details)


def probe_tensorrt(facts: PlatformFacts, trt_module: Any = None) -> Check:
    """TensorRT version, what it can do, and whether its plugin library registers EfficientNMS_TRT."""
    from edge.trt import api
    from edge.trt.version import capabilities

    try:
        trt = trt_module if trt_module is not None else api.load_tensorrt()
    except MissingDependencyError as exc:
        return _tensorrt_missing(facts, exc)
    version = str(trt.__version__)
    caps = capabilities(version)
    details: Dict[str, Any] = {
        "version": version, "can_build": caps.can_build, "strongly_typed_only": caps.strongly_typed_only,
        "onnx_nms_import": caps.onnx_nms_import, "efficient_nms_deprecated": caps.efficient_nms_deprecated,
    }
    if not caps.supported:
        return Check("TensorRT", FAIL, f"TensorRT {version} is older than 8.2", "upgrade JetPack (>= 4.6) or TensorRT",
                     details)
    try:
        logger = api.make_logger(trt)
        plugins = api.init_plugins(trt, logger)
    except Exception as exc:  # noqa: BLE001 - a broken plugin library is exactly what this check reports
        details["error"] = str(exc)
        return Check("TensorRT", FAIL, f"TensorRT {version}: the plugin library failed to load ({exc})",
                     "reinstall libnvinfer-plugin (JetPack: sudo apt-get install --reinstall libnvinfer-plugin*)",
                     details)
    details["plugins"] = plugins
    has_nms = "EfficientNMS_TRT" in plugins
    details["efficient_nms"] = has_nms
    summary = f"TensorRT {version}, plugin library loaded ({len(plugins)} plugins), EfficientNMS_TRT " + (
        "registered" if has_nms else "NOT registered")
    notes = []
    if caps.strongly_typed_only:
        notes.append("strongly typed only: FP16/INT8 must be in the ONNX (edge quantize)")
    if caps.efficient_nms_deprecated:
        notes.append("EfficientNMS_TRT is deprecated here: prefer edge surgery --nms onnx")
    if notes:
        summary += "; " + "; ".join(notes)
    if not has_nms:
        fix = ("install JetPack's libnvinfer-plugin" + (
            ", or re-run edge surgery with --nms onnx (this TensorRT imports ONNX NonMaxSuppression)"
            if caps.onnx_nms_import else ""))
        return Check("TensorRT", FAIL, summary, fix, details)
    if not caps.can_build:
        return Check("TensorRT", WARN, summary + f"; TensorRT {version} can run engines but edge cannot build them",
                     "build the engine with trtexec on this device and pass the .engine to edge-run", details)
    return Check("TensorRT", OK, summary, details=details)


def probe_pycuda(facts: PlatformFacts, cuda_driver: Any = None) -> Check:
    from edge import cuda

    try:
        drv = cuda.load_driver(cuda_driver)
    except MissingDependencyError as exc:
        if not facts.has_gpu:
            return Check("PyCUDA", SKIP, "not installed (no NVIDIA GPU here)", details={"error": str(exc)})
        return Check("PyCUDA", FAIL if facts.is_jetson else WARN, "not importable: the TensorRT backend needs it",
                     "build it against this device's CUDA: deploy/setup-jetson.sh, or CUDA_ROOT=/usr/local/cuda "
                     "PATH=/usr/local/cuda/bin:$PATH pip install pycuda", {"error": str(exc)})
    except EdgeError as exc:
        return Check("PyCUDA", FAIL if facts.has_gpu else SKIP, f"importable, but CUDA is not usable: {exc}",
                     "check the GPU driver; on a Jetson the user must be in group 'video' (sudo usermod -aG video $USER)",
                     {"error": str(exc)})
    count = int(drv.Device.count())
    if count < 1:
        return Check("PyCUDA", FAIL, "PyCUDA works but sees no CUDA device", "check the driver and permissions")
    dev = drv.Device(0)
    major, minor = dev.compute_capability()
    version = getattr(sys.modules.get("pycuda"), "VERSION_TEXT", None)
    details = {"devices": count, "name": str(dev.name()), "sm": f"{major}.{minor}", "pycuda": version}
    return Check("PyCUDA", OK, f"device 0: {dev.name()} (SM {major}.{minor}), {count} device(s)", details=details)


def probe_opencv(facts: PlatformFacts) -> Check:
    try:
        import cv2
    except ImportError as exc:
        fix = ("sudo apt-get install nvidia-opencv (JetPack's OpenCV with GStreamer) and use a venv made with "
               "--system-site-packages" if facts.is_jetson else "pip install opencv-python")
        return Check("OpenCV", FAIL, "cv2 is not importable", fix, {"error": str(exc)})
    facts_cv = opencv_build_facts(cv2.getBuildInformation())
    location = str(Path(getattr(cv2, "__file__", "") or "?").resolve())
    from_pip = "site-packages" in location and "dist-packages" not in location
    details = dict(facts_cv, version=cv2.__version__, location=location, from_pip=from_pip)
    summary = (f"OpenCV {cv2.__version__}, GStreamer {'yes' if facts_cv['gstreamer'] else 'no'}, "
               f"GUI {facts_cv['gui']}, {'pip' if from_pip else 'system'} build ({location})")
    if facts.is_jetson and not facts_cv["gstreamer"]:
        fix = "pip uninstall opencv-python opencv-python-headless (pip's cv2 shadows JetPack's), then " \
              "sudo apt-get install nvidia-opencv" if from_pip else "sudo apt-get install nvidia-opencv"
        return Check("OpenCV", FAIL, summary + ": csi:// cameras need GStreamer", fix, details)
    if not facts_cv["gstreamer"]:
        return Check("OpenCV", OK, summary + " (csi:// and GStreamer pipelines unavailable; fine off-Jetson)",
                     details=details)
    return Check("OpenCV", OK, summary, details=details)


def probe_v4l2(facts: PlatformFacts, paths: SystemPaths) -> Check:
    devices = [d for d in v4l2_devices(paths.dev_dir, paths.sysfs) if d["kind"] == "v4l2"]
    details = {"devices": devices}
    if not devices:
        return Check("V4L2 cameras", WARN, f"no USB/V4L2 camera in {paths.dev_dir} (test://, files and rtsp:// "
                     "still work)", "plug in a camera and check `v4l2-ctl --list-devices` (sudo apt-get install "
                     "v4l-utils); the user needs group 'video'", details)
    listed = ", ".join(f"{Path(d['path']).name} ({d['name']})" for d in devices)
    return Check("V4L2 cameras", OK, f"{len(devices)} device node(s): {listed}", details=details)


def probe_csi(facts: PlatformFacts, paths: SystemPaths) -> Check:
    name = "CSI cameras"
    if not facts.is_jetson:
        return Check(name, SKIP, "not a Jetson (CSI cameras go through nvargus-daemon)")
    sensors = [d for d in v4l2_devices(paths.dev_dir, paths.sysfs) if d["kind"] == "csi"]
    daemon = next((p for p in paths.nvargus_paths if Path(p).exists()), None)
    running = process_running(paths.proc, "nvargus-daemon")
    details = {"sensors": sensors, "nvargus_daemon": daemon, "running": running}
    if daemon is None:
        return Check(name, WARN, "nvargus-daemon is not installed: csi:// sources cannot work",
                     "sudo apt-get install nvidia-l4t-camera nvidia-l4t-gstreamer", details)
    if not sensors:
        return Check(name, WARN, "no CSI sensor found (no 'vi-output' video node)" + (
            "; nvargus-daemon running" if running else ""),
            "check the ribbon cable and the camera overlay (sudo /opt/nvidia/jetson-io/jetson-io.py), then reboot",
            details)
    listed = ", ".join(f"{d['name']} ({Path(d['path']).name})" for d in sensors)
    if not running:
        return Check(name, WARN, f"sensor(s) {listed}, but nvargus-daemon is not running",
                     "sudo systemctl restart nvargus-daemon (a wedged daemon is the usual cause of csi:// timeouts)",
                     details)
    return Check(name, OK, f"sensor(s) {listed}; nvargus-daemon running", details=details)


def probe_display(paths: SystemPaths) -> Check:
    env = paths.env()
    shown = {k: env[k] for k in ("DISPLAY", "WAYLAND_DISPLAY") if env.get(k)}
    if shown:
        return Check("display", OK, ", ".join(f"{k}={v}" for k, v in shown.items()), details=shown)
    return Check("display", WARN, "none (DISPLAY and WAYLAND_DISPLAY unset): edge-run opens no window",
                 "headless is fine: use --output FILE, --serve :8080 or --headless; for a window run from the "
                 "desktop session or export DISPLAY=:0", details={})


def probe_power(facts: PlatformFacts, paths: SystemPaths) -> Check:
    name = "power mode / clocks"
    if not facts.is_jetson:
        cpu = cpu_clocks(paths.sysfs)
        return Check(name, SKIP, "not a Jetson (nvpmodel and jetson_clocks are Jetson tools)", details={"cpu": cpu})
    rc, out = paths.run(["nvpmodel", "-q"])
    mode = parse_nvpmodel(out) if rc == 0 else {"mode": None, "id": None}
    cpu = cpu_clocks(paths.sysfs)
    gpu = gpu_clocks(paths.sysfs)
    details = {"nvpmodel": mode, "nvpmodel_output": out.strip()[:200], "cpu": cpu, "gpu": gpu}
    parts = []
    parts.append(f"power mode {mode['mode']} ({mode['id']})" if mode["mode"] else "power mode unknown")
    if cpu["cur_khz"] and cpu["max_khz"]:
        parts.append(f"CPU {cpu['online']}/{cpu['cpus']} online at {cpu['cur_khz'] / 1e6:.2f}/"
                     f"{cpu['max_khz'] / 1e6:.2f} GHz")
    locked = None
    if gpu and gpu["cur_hz"] and gpu["max_hz"]:
        parts.append(f"GPU {gpu['cur_hz'] / 1e6:.0f}/{gpu['max_hz'] / 1e6:.0f} MHz")
        locked = gpu.get("min_hz") == gpu["max_hz"]
        details["clocks_locked"] = locked
    summary = ", ".join(parts)
    if rc != 0:
        return Check(name, WARN, summary + f"; `nvpmodel -q` failed ({out.strip()[:80]})",
                     "nvpmodel comes with nvidia-l4t-tools; some modes need sudo to query", details)
    if locked is False:
        summary += " (clocks scale with load: run `sudo jetson_clocks` for steady benchmark numbers)"
    return Check(name, OK, summary, details=details)


def probe_memory(paths: SystemPaths) -> Check:
    info = read_meminfo(str(Path(paths.proc) / "meminfo"))
    total, avail, swap = info.get("MemTotal"), info.get("MemAvailable"), info.get("SwapTotal", 0)
    details = {"total": total, "available": avail, "swap": swap}
    if not total or avail is None:
        return Check("memory", WARN, f"cannot read {paths.proc}/meminfo", details=details)
    summary = f"{avail / GIB:.1f} GiB available of {total / GIB:.1f} GiB, swap {swap / GIB:.1f} GiB"
    if avail < MIN_FREE_MEMORY:
        return Check("memory", WARN, summary + ": engine builds may run out of memory",
                     "close other programs (a desktop session costs ~1 GiB), add swap, or lower "
                     "edge build --workspace", details)
    return Check("memory", OK, summary, details=details)


def probe_disk(paths: SystemPaths) -> Check:
    try:
        usage = shutil.disk_usage(paths.disk_path)
    except OSError as exc:
        return Check("disk", WARN, f"cannot stat {paths.disk_path}: {exc}")
    details = {"path": str(Path(paths.disk_path).resolve()), "free": usage.free, "total": usage.total}
    summary = f"{usage.free / GIB:.1f} GiB free of {usage.total / GIB:.1f} GiB at {details['path']}"
    if usage.free < MIN_FREE_DISK:
        return Check("disk", WARN, summary + ": engines, timing caches and videos need room",
                     "free space (sudo apt-get clean; remove old engines/ and videos)", details)
    return Check("disk", OK, summary, details=details)


def probe_onnxruntime(facts: PlatformFacts) -> Check:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("ONNX Runtime", FAIL, "onnxruntime is not importable", "pip install onnxruntime",
                     {"error": str(exc)})
    providers = list(ort.get_available_providers())
    import importlib.util

    # find_spec, not import: onnxruntime-extensions imports torch when it is installed (slow, and irrelevant)
    extensions = importlib.util.find_spec("onnxruntime_extensions") is not None
    details = {"version": ort.__version__, "providers": providers, "extensions": extensions}
    summary = f"onnxruntime {ort.__version__}, providers {', '.join(providers)}"
    if not extensions:
        return Check("ONNX Runtime", WARN, summary + "; onnxruntime-extensions missing: TensorRT-flavoured "
                     "graphs (EfficientNMS_TRT) cannot run on ONNX Runtime",
                     "pip install 'edge-detect[quantize]'", details)
    return Check("ONNX Runtime", OK, summary + "; EfficientNMS_TRT reference op available", details=details)


# -------------------------------------------------------------------------------------------------
# The report
# -------------------------------------------------------------------------------------------------


@dataclass
class DoctorReport:
    """The environment checks and, with --selftest, the self-test checks."""

    checks: List[Check]
    selftest: Optional[List[Check]] = None
    facts: Optional[PlatformFacts] = None

    def all_checks(self) -> List[Check]:
        return list(self.checks) + list(self.selftest or [])

    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for c in self.all_checks():
            out[c.status] += 1
        return out

    @property
    def exit_code(self) -> int:
        """1 when any check failed; skipped and warned checks do not fail the run."""
        return 1 if any(c.status == FAIL for c in self.all_checks()) else 0

    def to_dict(self) -> Dict[str, Any]:
        from edge import __version__

        data: Dict[str, Any] = {
            "edge_version": __version__,
            "python": sys.version.split()[0],
            "platform": f"{platform.system()} {platform.machine()}",
            "checks": [c.to_dict() for c in self.checks],
            "summary": self.counts(),
            "exit_code": self.exit_code,
        }
        if self.facts is not None:
            data["jetson"] = {"is_jetson": self.facts.is_jetson, "model": self.facts.model, "l4t": self.facts.l4t,
                              "jetpack": self.facts.jetpack}
        if self.selftest is not None:
            data["selftest"] = [c.to_dict() for c in self.selftest]
        return data

    def format_text(self) -> str:
        from edge import __version__

        lines = [f"edge doctor: edge {__version__}, Python {sys.version.split()[0]}, "
                 f"{platform.system()} {platform.machine()}"]
        sections = [("environment", self.checks)]
        if self.selftest is not None:
            sections.append(("self-test", self.selftest))
        for title, checks in sections:
            lines.append(f"-- {title}")
            width = max([len(c.name) for c in checks] + [8])
            for c in checks:
                lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.summary}")
                if c.fix and c.status != OK:
                    lines.append(f"        {'':<{width}}  fix: {c.fix}")
        counts = self.counts()
        lines.append("summary: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES))
        return "\n".join(lines)


def collect_report(paths: Optional[SystemPaths] = None, *, trt_module: Any = None, cuda_driver: Any = None) -> DoctorReport:
    """Run every environment probe. A probe that crashes becomes a ``fail`` line, never a traceback."""
    paths = (paths or system_paths()).validate()
    facts = detect_platform(paths)
    probes: List[Tuple[str, Callable[[], Check]]] = [
        ("platform", lambda: probe_platform(facts)),
        ("L4T / JetPack", lambda: probe_l4t(facts, paths)),
        ("python", lambda: probe_python(facts)),
        ("CUDA", lambda: probe_cuda(facts, paths)),
        ("TensorRT", lambda: probe_tensorrt(facts, trt_module)),
        ("PyCUDA", lambda: probe_pycuda(facts, cuda_driver)),
        ("OpenCV", lambda: probe_opencv(facts)),
        ("V4L2 cameras", lambda: probe_v4l2(facts, paths)),
        ("CSI cameras", lambda: probe_csi(facts, paths)),
        ("display", lambda: probe_display(paths)),
        ("power mode / clocks", lambda: probe_power(facts, paths)),
        ("memory", lambda: probe_memory(paths)),
        ("disk", lambda: probe_disk(paths)),
        ("ONNX Runtime", lambda: probe_onnxruntime(facts)),
    ]
    checks = []
    for name, probe in probes:
        try:
            checks.append(probe())
        except Exception as exc:  # noqa: BLE001 - the report must finish; the crash is the finding
            log.debug("probe %s crashed", name, exc_info=True)
            checks.append(Check(name, FAIL, f"the probe itself failed: {type(exc).__name__}: {exc}",
                                "run `edge -v doctor` for the traceback and report it"))
    return DoctorReport(checks=checks, facts=facts)


# -------------------------------------------------------------------------------------------------
# Self-test: the deploy graph split at its NMS
# -------------------------------------------------------------------------------------------------

NMS_OPS = ("EfficientNMS_TRT", "NonMaxSuppression")
_FLOAT_TYPES = (1, 10, 11)  # onnx FLOAT, FLOAT16, DOUBLE

# Pre-NMS parity, error = max|trt - ort| / max(1, max|ort|). TensorRT's "fp32" uses TF32 on Ampere/Orin.
PRE_NMS_TOLERANCE = {"fp32": 5e-3, "fp16": 2e-2, "int8": 1e-1}
# Post-NMS identity against the reference NMS run on TensorRT's own pre-NMS tensors: same count, same
# classes, boxes and scores equal up to the NMS plugin's arithmetic (fp16 inside fp16 engines).
POST_NMS_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-3, "int8": 2e-3}


@dataclass
class NmsSplit:
    """A deploy graph cut just before its NMS.

    flavour: the NMS op ('EfficientNMS_TRT' or 'NonMaxSuppression'). pre_nms: the float tensors that
    enter the NMS part (boxes [B,N,4] xyxy input pixels, scores [B,N,C] or [B,C,N]), exposed as extra
    outputs in the probe graph. tail_inputs: the NMS part's inputs (pre_nms, plus the image input when
    the tail reads it). outputs: the graph's own outputs (the four NMS outputs).
    """

    flavour: str
    pre_nms: List[str]
    tail_inputs: List[str]
    outputs: List[str]
    elem_types: Dict[str, int]


def _onnx() -> Any:
    return import_optional("onnx", "onnx", "the self-test's graph split", "pip install onnx")


def split_at_nms(model: Any) -> NmsSplit:
    """Find the NMS part of a deploy graph (an onnx.ModelProto) and the tensors that feed it.

    The tail is every node that leads to an output without leading to an NMS node's data inputs (plus
    the constant nodes it reads); its non-constant inputs are the pre-NMS tensors.
    """
    graph = model.graph
    nodes = list(graph.node)
    nms = [i for i, n in enumerate(nodes) if n.op_type in NMS_OPS]
    if not nms:
        raise ModelError(
            "the model has no NMS node (EfficientNMS_TRT or NonMaxSuppression): the self-test needs a deploy "
            "graph. Run `edge surgery MODEL.onnx --out MODEL.nms.onnx` and pass that file"
        )
    producer: Dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producer[o] = i
    const = {init.name for init in graph.initializer}
    const_nodes = set()
    for i, n in enumerate(nodes):  # ONNX graphs are topologically sorted
        if all((not x) or x in const for x in n.input):
            const_nodes.add(i)
            const.update(o for o in n.output if o)
    graph_inputs = [v.name for v in graph.input if v.name not in {init.name for init in graph.initializer}]

    def ancestors(tensors: Sequence[str]) -> set:
        seen: set = set()
        stack = [producer[t] for t in tensors if t in producer]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(producer[x] for x in nodes[i].input if x in producer)
        return seen

    nms_data_inputs = [x for i in nms for x in nodes[i].input if x and x not in const]
    upstream = ancestors(nms_data_inputs)
    outputs = [o.name for o in graph.output]
    tail = (ancestors(outputs) - upstream) - const_nodes
    consumed = {x for i in tail for x in nodes[i].input if x}
    tail |= {i for i in ancestors(sorted(consumed & const)) if i in const_nodes}
    produced = {o for i in tail for o in nodes[i].output}
    initializers = {init.name for init in graph.initializer}
    external = []
    for i in sorted(tail):
        for x in nodes[i].input:
            if x and x not in produced and x not in initializers and x not in external:
                external.append(x)
    from edge.export.ort_custom_ops import elem_types

    types = elem_types(model)
    pre_nms = [x for x in external if x not in graph_inputs]
    not_float = [x for x in pre_nms if types.get(x, 1) not in _FLOAT_TYPES]
    if not_float:
        raise ModelError(
            f"the NMS part of the graph reads non-float tensors {not_float} from before it; the self-test can "
            "only compare float pre-NMS tensors (boxes, scores). Re-run edge surgery on the pre-NMS model"
        )
    flavour = nodes[nms[0]].op_type
    return NmsSplit(flavour=flavour, pre_nms=pre_nms, tail_inputs=external, outputs=outputs,
                    elem_types={x: types.get(x, 1) for x in external})


def probe_graph(model: Any, split: NmsSplit) -> Any:
    """A copy of ``model`` with the pre-NMS tensors as extra outputs (after the four NMS outputs)."""
    onnx = _onnx()
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name in split.pre_nms:
        if name not in existing:
            out.graph.output.append(helper.make_tensor_value_info(name, split.elem_types[name], None))
    return out


def nms_tail(model: Any, split: NmsSplit) -> Any:
    """The NMS part alone: ``split.tail_inputs`` in, the graph's outputs out (same ops, same attributes)."""
    _onnx()
    from onnx import helper

    graph = model.graph
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    inits = {init.name: init for init in graph.initializer}
    keep: set = set()
    stack = [producer[o] for o in split.outputs if o in producer]
    stop = set(split.tail_inputs)
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        stack.extend(producer[x] for x in nodes[i].input if x in producer and x not in stop)
    used = {x for i in keep for x in nodes[i].input if x}
    inputs = []
    for name in split.tail_inputs:
        vi = next((v for v in graph.input if v.name == name), None)
        inputs.append(vi if vi is not None else helper.make_tensor_value_info(name, split.elem_types[name], None))
    tail_graph = helper.make_graph(
        [nodes[i] for i in sorted(keep)], "nms_tail", inputs, list(graph.output),
        [inits[x] for x in sorted(used) if x in inits],
    )
    tail = helper.make_model(tail_graph, opset_imports=list(model.opset_import))
    tail.ir_version = model.ir_version
    return tail


class OrtGraphRunner:
    """Runs an ONNX graph (a ModelProto, EfficientNMS_TRT graphs included) and returns every output by name."""

    def __init__(self, model: Any, threads: int = 0) -> None:
        import onnxruntime as ort

        from edge.export import ort_custom_ops

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        try:
            if ort_custom_ops.trt_nms_nodes(model):
                self.session = ort_custom_ops.make_session(model, sess_options=so)
            else:
                self.session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except (MissingDependencyError, ModelError):
            raise
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load the self-test graph: {str(exc).splitlines()[0]}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        feed = {}
        for name in self.input_names:
            value = np.asarray(feeds[name])
            if self.input_types[name] == "tensor(float)" and value.dtype != np.float32:
                value = value.astype(np.float32)
            elif self.input_types[name] == "tensor(float16)" and value.dtype != np.float16:
                value = value.astype(np.float16)
            feed[name] = np.ascontiguousarray(value)
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


# -------------------------------------------------------------------------------------------------
# Self-test: comparisons and timing
# -------------------------------------------------------------------------------------------------


def pre_nms_errors(actual: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], names: Sequence[str]) -> Dict[str, float]:
    """Per tensor ``max|actual - expected| / max(1, max|expected|)`` (edge.export.verify.relative_error)."""
    from edge.export.verify import relative_error

    out = {}
    for name in names:
        a = np.asarray(actual[name], np.float64)
        b = np.asarray(expected[name], np.float64)
        if a.shape != b.shape:
            out[name] = float("inf")
            continue
        out[name] = relative_error(a, b)
    return out


def compare_detections(actual: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], tolerance: float) -> List[str]:
    """Differences between two sets of NMS outputs (empty: identical up to ``tolerance``).

    Identical means: the same number of detections per image, and a one-to-one match of detections with
    the same class, boxes within ``tolerance * max(1, max|box|)`` and scores within ``tolerance``
    (matching, not position, so that exact score ties may come in either order).
    """
    from edge.runtime.backend import detections_from_outputs

    a = detections_from_outputs(actual, copy=True)
    b = detections_from_outputs(expected, copy=True)
    problems: List[str] = []
    if len(a) != len(b):
        return [f"batch size {len(a)} vs {len(b)}"]
    for i in range(len(b)):
        ab, as_, ac = a.image(i)
        bb, bs, bc = b.image(i)
        if len(ab) != len(bb):
            problems.append(f"image {i}: {len(ab)} detections vs {len(bb)} expected")
            continue
        box_tol = tolerance * max(1.0, float(np.max(np.abs(bb))) if len(bb) else 1.0)
        used = np.zeros(len(bb), bool)
        for j in range(len(ab)):
            ok = (~used) & (bc == ac[j]) & (np.abs(bs - as_[j]) <= tolerance) & \
                 (np.max(np.abs(bb - ab[j]), axis=1) <= box_tol if len(bb) else np.zeros(0, bool))
            hit = np.flatnonzero(ok)
            if hit.size == 0:
                problems.append(f"image {i}: detection {j} (class {int(ac[j])}, score {float(as_[j]):.4f}, box "
                                f"{np.round(ab[j], 2).tolist()}) has no counterpart")
                break
            used[hit[0]] = True
    return problems


def timing(fn: Callable[[], Any], warmup: int, iterations: int) -> Dict[str, float]:
    """Wall-clock latency of ``fn``: median and p90 in ms, and the FPS of the median."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(max(1, iterations)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    median = float(np.median(times))
    return {"median_ms": round(median, 3), "p90_ms": round(float(np.percentile(times, 90)), 3),
            "fps": round(1000.0 / median, 1) if median > 0 else float("inf"), "iterations": len(times)}


def selftest_frames(count: int, images: Optional[str] = None, size: Tuple[int, int] = (640, 480)) -> List[np.ndarray]:
    """``count`` BGR uint8 frames: the first images of folder ``images``, else the test:// pattern."""
    if images:
        import cv2

        files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        if not files:
            raise EdgeError(f"--images {images}: no .jpg/.jpeg/.png/.bmp files there")
        frames = []
        for p in files[:count]:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise EdgeError(f"cannot read image {p}")
            frames.append(img)
        while len(frames) < count:
            frames.append(frames[len(frames) % len(files)].copy())
        return frames
    from edge.runtime.sources import CaptureStatus, TestPatternSource, parse_source

    src = TestPatternSource(parse_source(f"test://?size={size[0]}x{size[1]}&frames={count * 15}"))
    src.open()
    frames = []
    try:
        for i in range(count * 15):
            status, frame = src.read()
            if status != CaptureStatus.FRAME or frame is None:
                break
            if i % 15 == 0:
                frames.append(frame.copy())
    finally:
        src.close()
    return frames


def make_batches(fmt: Any, frames: Sequence[np.ndarray]) -> List[np.ndarray]:
    """One network-input batch per frame (batch size from ``fmt``, 1 when dynamic), via the runtime's
    own ``Preprocessor`` (letterbox, layout, normalization)."""
    from edge.model_input import Preprocessor

    pre = Preprocessor(fmt)
    batch = max(1, int(fmt.batch))
    out = []
    for i in range(len(frames)):
        buf = np.empty(fmt.tensor_shape(batch), np.dtype(fmt.dtype))
        for b in range(batch):
            one = pre.new_buffer()
            pre(frames[(i + b) % len(frames)], one)
            buf[b] = one[0]
        out.append(buf)
    return out


# -------------------------------------------------------------------------------------------------
# Self-test: which precisions to build
# -------------------------------------------------------------------------------------------------


def _sm_tuple(sm: str) -> Tuple[int, int]:
    major, _, minor = sm.partition(".")
    return int(major), int(minor or 0)


def fast_fp16(sm: str) -> bool:
    """TensorRT's platform_has_fast_fp16: SM 5.3 (Nano), 6.0, 6.2 (TX2) and >= 7.0 (Xavier, Orin)."""
    v = _sm_tuple(sm)
    return v in ((5, 3), (6, 0), (6, 2)) or v >= (7, 0)


def fast_int8(sm: str) -> bool:
    """TensorRT's platform_has_fast_int8: SM 6.1 and >= 7.0 (not Nano 5.3, not TX2 6.2)."""
    v = _sm_tuple(sm)
    return v == (6, 1) or v >= (7, 0)


@dataclass
class PrecisionPlan:
    precision: str
    model: Optional[str]  # the ONNX to build; None when skipped
    skip_reason: str = ""


def plan_precisions(trt_version: str, sm: str, model: str, model_form: str, int8_model: Optional[str],
                    requested: Optional[Sequence[str]] = None) -> List[PrecisionPlan]:
    """Which engines the self-test builds on this device, and why the others are skipped."""
    from edge.trt.version import capabilities

    caps = capabilities(trt_version)
    wanted = list(requested) if requested else ["fp32", "fp16", "int8"]
    plans = []
    for p in wanted:
        if p not in PRE_NMS_TOLERANCE:
            raise EdgeError(f"precision {p!r} is not one of {sorted(PRE_NMS_TOLERANCE)}")
        reason = ""
        source: Optional[str] = model
        if p == "fp16" and not fast_fp16(sm):
            reason = f"SM {sm} has no fast FP16 (TensorRT would not use it)"
        elif p == "int8" and not fast_int8(sm):
            reason = f"SM {sm} has no fast INT8 (Jetson Nano/TX2 class GPU)"
        elif p == "int8":
            if model_form != "qdq":
                source = int8_model
                if not source:
                    reason = ("needs a Q/DQ model: run `edge quantize MODEL.onnx --precision int8 --calib ...`, "
                              "`edge surgery` on it, and pass it with --int8-model")
        elif model_form == "qdq":
            reason = ("the model is Q/DQ (INT8 only); pass the float deploy model with --model and the Q/DQ one "
                      "with --int8-model")
        elif caps.strongly_typed_only and p == "fp16" and model_form != "fp16":
            reason = f"TensorRT {trt_version} is strongly typed: FP16 needs an fp16 ONNX (edge quantize --precision fp16)"
        elif caps.strongly_typed_only and p == "fp32" and model_form != "fp32":
            reason = f"the model is {model_form}; TensorRT {trt_version} builds it only in its own precision"
        plans.append(PrecisionPlan(p, None if reason else source, reason))
    return plans


# -------------------------------------------------------------------------------------------------
# Self-test: orchestration
# -------------------------------------------------------------------------------------------------


@dataclass
class SelftestConfig:
    """What ``edge doctor --selftest`` runs.

    model: deploy ONNX (NMS inside; the bundled model by default, resolved by the CLI).
    int8_model: a Q/DQ version of it for the INT8 engine (optional).
    images: folder of images to feed (default: test:// pattern frames). frames: how many inputs.
    precisions: subset of fp32/fp16/int8 (default: every one the device supports).
    iterations / warmup: timing runs. workspace_mb: builder workspace (small devices: keep it small).
    work_dir: where engines are written (default: a temporary folder, removed afterwards unless keep).
    """

    model: str
    int8_model: Optional[str] = None
    images: Optional[str] = None
    frames: int = 3
    precisions: Optional[List[str]] = None
    iterations: int = 20
    warmup: int = 3
    workspace_mb: int = 256
    work_dir: Optional[str] = None
    keep: bool = False

    def validate(self) -> "SelftestConfig":
        if not Path(self.model).is_file():
            raise ModelError(f"self-test model {self.model} not found; pass --model path/to/deploy.onnx")
        if self.int8_model and not Path(self.int8_model).is_file():
            raise ModelError(f"--int8-model {self.int8_model} not found")
        if self.images and not Path(self.images).is_dir():
            raise EdgeError(f"--images {self.images} is not a folder")
        if self.frames < 2:
            raise EdgeError(f"the self-test needs at least 2 input frames, got {self.frames}")
        if self.iterations < 1 or self.warmup < 0:
            raise EdgeError("--iterations must be >= 1 and warmup >= 0")
        if self.workspace_mb < 16:
            raise EdgeError(f"--workspace {self.workspace_mb} MB is too small; use at least 16")
        for p in self.precisions or []:
            if p not in PRE_NMS_TOLERANCE:
                raise EdgeError(f"--precision {p!r} is not one of {sorted(PRE_NMS_TOLERANCE)}")
        return self


@dataclass
class _Reference:
    """ONNX Runtime's results on the self-test inputs: every output of the probe graph, per batch."""

    split: NmsSplit
    tail: OrtGraphRunner
    batches: List[np.ndarray]
    outputs: List[Dict[str, np.ndarray]]
    input_name: str
    num_classes: Optional[int]
    probe_path: Path


def _reference(model_path: Path, batches: List[np.ndarray], input_name: str, num_classes: Optional[int],
               work: Path) -> _Reference:
    """Split ``model_path`` at its NMS, run the probe graph on ``batches`` with ONNX Runtime, check that the
    NMS part alone replays the detections, and write the probe graph (+ sidecar) into ``work``."""
    onnx = _onnx()
    model = onnx.load(str(model_path))
    split = split_at_nms(model)
    probe = probe_graph(model, split)
    runner = OrtGraphRunner(probe)
    tail = OrtGraphRunner(nms_tail(model, split))
    outputs = [runner.run({input_name: b}) for b in batches]
    problems: List[str] = []
    for i, out in enumerate(outputs):
        replay = tail.run({**{x: out[x] for x in split.pre_nms}, input_name: batches[i]})
        problems += [f"input {i}: {p}" for p in compare_detections(replay, {k: out[k] for k in split.outputs}, 1e-6)]
    if problems:
        raise ModelError(
            f"{model_path.name}: the NMS part of the graph, run alone on its pre-NMS tensors {split.pre_nms}, "
            f"does not reproduce the graph's detections ({'; '.join(problems[:3])})"
        )
    probe_path = work / (model_path.stem + ".selftest.onnx")
    probe_path.write_bytes(probe.SerializeToString())
    sidecar = model_path.with_suffix(".json")
    if sidecar.is_file():
        shutil.copyfile(sidecar, probe_path.with_suffix(".json"))
    return _Reference(split, tail, batches, outputs, input_name, num_classes, probe_path)


def _check_onnxruntime(cfg: SelftestConfig, work: Path, checks: List[Check]) -> Optional[_Reference]:
    """The CPU part: load, contract, timings, NMS split. Returns the reference for the TensorRT part."""
    from edge.runtime.backend import conformance_report
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions

    model_path = Path(cfg.model)
    try:
        backend = OnnxRuntimeBackend(model_path, OrtOptions(spin=False))
    except (EdgeError, ValueError) as exc:
        checks.append(Check("onnxruntime: load", FAIL, f"{model_path.name}: {exc}",
                            "pass a deploy ONNX from edge surgery (NMS inside) with --model"))
        return None
    with backend:
        info = backend.info
        assert info is not None
        num_classes = len(info.class_names) or None
        batches = make_batches(info.input_format, selftest_frames(cfg.frames, cfg.images))
        checks.append(Check("onnxruntime: load", OK, f"{backend.describe()}; input {backend.input_spec.describe()}",
                            details={"model": str(model_path), "providers": backend.providers}))
        problems = conformance_report(backend, batches, num_classes)
        if problems:
            checks.append(Check("onnxruntime: contract", FAIL, "; ".join(problems[:4]),
                                "the deploy graph's outputs are malformed: re-run edge surgery", {"problems": problems}))
        else:
            counts = [int(backend.infer(b).num.sum()) for b in batches]
            checks.append(Check("onnxruntime: contract", OK, f"outputs well formed on {len(batches)} inputs "
                                f"(detections per input: {counts})", details={"detections": counts}))
            if not any(counts):
                checks.append(Check("onnxruntime: detections", WARN, "no detections on the self-test inputs, so "
                                    "post-NMS comparisons compare empty outputs",
                                    "pass --images DIR with a few images of the model's classes"))
        t = timing(lambda: backend.infer(batches[0]), cfg.warmup, cfg.iterations)
        checks.append(Check("onnxruntime: timing", OK, f"{t['median_ms']:.2f} ms median, p90 {t['p90_ms']:.2f} ms "
                            f"({t['fps']:.1f} FPS) on {backend.providers[0]}", details=t))
        input_name = info.input_name
    try:
        ref = _reference(model_path, batches, input_name, num_classes, work)
    except EdgeError as exc:
        checks.append(Check("onnxruntime: NMS split", FAIL, str(exc), "pass a deploy ONNX from edge surgery"))
        return None
    checks.append(Check("onnxruntime: NMS split", OK, f"{ref.split.flavour} fed by {ref.split.pre_nms}; the NMS part "
                        "alone reproduces the detections from them",
                        details={"pre_nms": ref.split.pre_nms, "flavour": ref.split.flavour}))
    return ref


def _tensorrt_backend_class() -> Any:
    """A TensorRTBackend that also copies the pre-NMS outputs back when asked (``capture_extra``)."""
    from edge.runtime.tensorrt_backend import TensorRTBackend

    class SelftestTensorRTBackend(TensorRTBackend):
        capture_extra = False

        def _run(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
            out = super()._run(batch)
            if self.capture_extra:
                buffers = self._buffers
                assert buffers is not None
                wanted = set(self._out_names) | {self._in_buf.name}
                extra = [b for b in buffers.buffers if b.name not in wanted]
                for buf in extra:
                    buffers.dtoh(buf)
                buffers.synchronize()
                self.last_extra = {b.name: b.host.copy() for b in extra}
            return out

    return SelftestTensorRTBackend


class EngineUnavailable(EdgeError):
    """The engine checks cannot run here (no TensorRT, no CUDA device, a TensorRT too old to build)."""


@dataclass
class EngineHooks:
    """How the self-test builds and opens engines: TensorRT (``tensorrt_hooks``) on a device.

    build(onnx_path, precision, workspace_mb, out_dir) -> (engine path, build seconds).
    open(engine_path) -> a ``Backend`` (context manager) with ``capture_extra`` (bool attribute) and
    ``last_extra`` (the graph's other outputs, by name, from the last ``infer`` with capture_extra on).
    """

    label: str
    version: str
    device_sm: str
    build: Callable[[str, str, int, str], Tuple[Path, float]]
    open: Callable[[Path], Any]


def tensorrt_hooks(trt_module: Any = None, cuda_driver: Any = None) -> EngineHooks:
    """Engine hooks on TensorRT + PyCUDA (``edge.trt.build`` and the TensorRT backend).

    Raises EngineUnavailable saying why when TensorRT, PyCUDA or a CUDA device is missing here.
    """
    from edge import cuda
    from edge.trt import api
    from edge.trt.build import EngineBuildConfig, build_engines
    from edge.trt.engine_key import DeviceInfo, read_l4t_release
    from edge.trt.version import capabilities, require_supported

    try:
        trt = trt_module if trt_module is not None else api.load_tensorrt()
    except MissingDependencyError as exc:
        raise EngineUnavailable(
            "TensorRT is not installed here (the tensorrt Python module: JetPack's python3-libnvinfer, or "
            "pip's tensorrt on a desktop GPU)"
        ) from exc
    caps = capabilities(str(trt.__version__))
    try:
        require_supported(caps, for_build=True)
    except EdgeError as exc:
        raise EngineUnavailable(str(exc)) from exc
    try:
        ctx = cuda.CudaContext(0, driver=cuda_driver)
    except EdgeError as exc:
        raise EngineUnavailable(f"no usable CUDA device ({exc})") from exc
    try:
        device = DeviceInfo(ctx.name, ctx.sm, read_l4t_release())
    finally:
        ctx.close()
    backend_cls = _tensorrt_backend_class()

    def build(onnx_path: str, precision: str, workspace_mb: int, out_dir: str) -> Tuple[Path, float]:
        cfg = EngineBuildConfig(onnx_path=onnx_path, out_dir=out_dir, precision=precision, workspace_mb=workspace_mb)
        built = build_engines(cfg, trt, device)[0]
        return built.path, built.seconds

    def open_engine(path: Path) -> Any:
        return backend_cls(path, trt_module=trt, cuda_driver=cuda_driver)

    return EngineHooks(f"TensorRT {caps.version_string} on {device.name}", caps.version_string, device.sm,
                       build, open_engine)


def _skip_engines(checks: List[Check], reason: str, precisions: Sequence[str]) -> None:
    for p in precisions:
        checks.append(Check(f"tensorrt {p}", SKIP, f"not run (build, run, parity with ONNX Runtime, timing): {reason}"))


def _check_engines(cfg: SelftestConfig, ref: _Reference, work: Path, checks: List[Check], hooks: EngineHooks) -> None:
    from edge.trt.onnx_info import inspect_onnx

    form = inspect_onnx(cfg.model).precision_form
    plans = plan_precisions(hooks.version, hooks.device_sm, str(ref.probe_path), form, cfg.int8_model,
                            cfg.precisions)
    for plan in plans:
        name = f"tensorrt {plan.precision}"
        if plan.model is None:
            checks.append(Check(name, SKIP, f"not run: {plan.skip_reason}"))
            continue
        this_ref = ref
        if plan.precision == "int8" and cfg.int8_model and form != "qdq":
            try:
                this_ref = _reference(Path(cfg.int8_model), ref.batches, ref.input_name, ref.num_classes, work)
            except EdgeError as exc:
                checks.append(Check(name, FAIL, f"--int8-model: {exc}",
                                    "pass the Q/DQ deploy graph (edge quantize, then edge surgery) with the same input"))
                continue
        try:
            engine_path, seconds = hooks.build(str(this_ref.probe_path), plan.precision, cfg.workspace_mb,
                                               str(work / "engines"))
        except Exception as exc:  # noqa: BLE001 - one precision's failure must not hide the others
            log.debug("engine build failed", exc_info=True)
            checks.append(Check(f"{name}: build", FAIL, f"{type(exc).__name__}: {exc}",
                                "see the TensorRT log above; on small devices lower --workspace or close other "
                                "programs"))
            continue
        checks.append(Check(f"{name}: build", OK, f"{engine_path.name} in {seconds:.1f} s ({hooks.label})",
                            details={"engine": str(engine_path), "seconds": seconds}))
        try:
            _run_engine_checks(cfg, this_ref, plan.precision, engine_path, hooks, checks)
        except Exception as exc:  # noqa: BLE001 - report, and go on with the next precision
            log.debug("engine checks failed", exc_info=True)
            checks.append(Check(f"{name}: run", FAIL, f"{type(exc).__name__}: {exc}",
                                "run `edge -v doctor --selftest` for details and report it"))


def _run_engine_checks(cfg: SelftestConfig, ref: _Reference, precision: str, engine_path: Path,
                       hooks: EngineHooks, checks: List[Check]) -> None:
    from edge.runtime.backend import conformance_report

    name = f"tensorrt {precision}"
    with hooks.open(engine_path) as backend:
        problems = conformance_report(backend, ref.batches, ref.num_classes)
        if problems:
            checks.append(Check(f"{name}: contract", FAIL, "; ".join(problems[:4]), details={"problems": problems}))
        else:
            checks.append(Check(f"{name}: contract", OK, f"outputs well formed on {len(ref.batches)} inputs"))
        worst: Dict[str, float] = {}
        post_problems: List[str] = []
        same_as_ort = 0
        backend.capture_extra = True
        try:
            for i, batch in enumerate(ref.batches):
                det = backend.infer(batch)
                got = {"num_detections": det.num.reshape(-1, 1), "detection_boxes": det.boxes,
                       "detection_scores": det.scores, "detection_classes": det.classes}
                extra = dict(backend.last_extra)
                missing = [x for x in ref.split.pre_nms if x not in extra]
                if missing:
                    post_problems.append(f"the engine does not output the pre-NMS tensors {missing}")
                    break
                for k, v in pre_nms_errors(extra, ref.outputs[i], ref.split.pre_nms).items():
                    worst[k] = max(worst.get(k, 0.0), v)
                replay = ref.tail.run({**{x: extra[x] for x in ref.split.pre_nms}, ref.input_name: batch})
                post_problems += [f"input {i}: {p}" for p in
                                  compare_detections(got, replay, POST_NMS_TOLERANCE[precision])]
                expected = {k: ref.outputs[i][k] for k in ref.split.outputs}
                if not compare_detections(got, expected, PRE_NMS_TOLERANCE[precision]):
                    same_as_ort += 1
        finally:
            backend.capture_extra = False
        tol = PRE_NMS_TOLERANCE[precision]
        bad = {k: v for k, v in worst.items() if not v <= tol}
        details = {"errors": worst, "tolerance": tol, "formula": "max|engine - onnxruntime| / max(1, max|onnxruntime|)"}
        if not worst:
            checks.append(Check(f"{name}: pre-NMS parity", FAIL, "no pre-NMS tensors could be compared",
                                "report this with the model", details))
        elif bad:
            checks.append(Check(f"{name}: pre-NMS parity", FAIL, "errors " + ", ".join(
                f"{k} {v:.3g}" for k, v in bad.items()) + f" exceed the tolerance {tol:g}",
                "for INT8, calibrate on more representative images (edge quantize); otherwise report it", details))
        else:
            checks.append(Check(f"{name}: pre-NMS parity", OK, "max error " + ", ".join(
                f"{k} {v:.2g}" for k, v in worst.items()) + f" (tolerance {tol:g})", details=details))
        if post_problems:
            checks.append(Check(f"{name}: post-NMS identity", FAIL, "; ".join(post_problems[:3]),
                                "the engine's NMS differs from the reference on the same pre-NMS tensors: check the "
                                "plugin library (the TensorRT line above)", {"problems": post_problems}))
        else:
            checks.append(Check(f"{name}: post-NMS identity", OK, "detections identical to the reference NMS run on "
                                f"the engine's own pre-NMS tensors; {same_as_ort}/{len(ref.batches)} inputs also give "
                                "ONNX Runtime's detections", details={"same_as_onnxruntime": same_as_ort}))
        t = timing(lambda: backend.infer(ref.batches[0]), cfg.warmup, cfg.iterations)
        checks.append(Check(f"{name}: timing", OK, f"{t['median_ms']:.2f} ms median, p90 {t['p90_ms']:.2f} ms "
                            f"({t['fps']:.1f} FPS), host copies included", details=t))


def run_selftest(cfg: SelftestConfig, *, engine_hooks: Optional[EngineHooks] = None, trt_module: Any = None,
                 cuda_driver: Any = None) -> List[Check]:
    """Run the self-test; returns its checks (``fail`` only for checks that ran and failed).

    ``engine_hooks``: how engines are built and run (default: ``tensorrt_hooks(trt_module, cuda_driver)``).
    """
    cfg.validate()
    checks: List[Check] = []
    precisions = cfg.precisions or ["fp32", "fp16", "int8"]
    own_dir = cfg.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="edge-selftest-")) if own_dir else Path(cfg.work_dir or ".")
    work.mkdir(parents=True, exist_ok=True)
    try:
        ref = _check_onnxruntime(cfg, work, checks)
        if ref is None:
            _skip_engines(checks, "the ONNX Runtime reference failed above", precisions)
            return checks
        try:
            hooks = engine_hooks or tensorrt_hooks(trt_module, cuda_driver)
        except EngineUnavailable as exc:
            _skip_engines(checks, str(exc), precisions)
            return checks
        _check_engines(cfg, ref, work, checks, hooks)
    finally:
        if own_dir and not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif cfg.keep:
            log.info("self-test files kept in %s", work)
    return checks
