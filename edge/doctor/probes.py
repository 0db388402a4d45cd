"""The environment probes of ``edge doctor``, each returning one ``Check``: platform, L4T / JetPack,
Python environment, CUDA toolkit and driver, TensorRT and its plugin library (EfficientNMS_TRT
registered?), PyCUDA, OpenCV build (GStreamer?), V4L2 and CSI cameras, display, power mode and clocks,
memory, disk, ONNX Runtime providers; and ``collect_report``, which runs them all.

TensorRT, PyCUDA, OpenCV and ONNX Runtime are imported inside the probes that need them.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edge.doctor.facts import (
    PlatformFacts,
    SystemPaths,
    cpu_clocks,
    detect_platform,
    find_libs,
    gpu_clocks,
    jetpack_stack,
    opencv_build_facts,
    parse_cuda_version,
    parse_nvpmodel,
    process_running,
    read_meminfo,
    read_text,
    system_paths,
    v4l2_devices,
)
from edge.doctor.report import FAIL, OK, SKIP, WARN, Check, DoctorReport
from edge.errors import EdgeError, MissingDependencyError
from edge.runtime.sources.camera_modes import camera_modes

log = logging.getLogger(__name__)

GIB = 1 << 30
MIN_FREE_MEMORY = 1 * GIB  # below this, engine builds on small Jetsons run out of memory
MIN_FREE_DISK = 2 * GIB


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
    details: Dict[str, Any] = {"l4t": facts.l4t, "jetpack": facts.jetpack}
    if not facts.l4t:
        return Check(name, FAIL, f"{paths.tegra_release} is missing or unreadable on this Jetson",
                     "the L4T release file comes with JetPack; reflash or reinstall nvidia-l4t-core", details)
    major = facts.l4t.split(".")[0]
    summary = f"L4T {facts.l4t} = JetPack {facts.jetpack or 'unknown'}"
    stack = jetpack_stack(facts.l4t)
    if stack is not None:
        details.update({"tensorrt": stack.tensorrt, "cuda": stack.cuda, "python": "{}.{}".format(*stack.python)})
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
    stack = jetpack_stack(facts.l4t) if facts.is_jetson and facts.l4t else None
    if stack is not None:
        expected = stack.python
        if tuple(version[:2]) != expected:
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
    install = _jetpack_cuda_install(facts) if facts.is_jetson else (
        "install the CUDA toolkit matching your driver (nvidia-smi shows it)")
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


def _jetpack_cuda_install(facts: PlatformFacts) -> str:
    """How to install JetPack's CUDA toolkit on this Jetson, by JetPack's own package names."""
    stack = jetpack_stack(facts.l4t) if facts.l4t else None
    if stack is None:
        return ("sudo apt-get install JetPack's cuda-nvcc-X-Y cuda-cudart-dev-X-Y for your CUDA X.Y "
                "(deploy/setup-jetson.sh does it)")
    return (f"sudo apt-get install {' '.join(stack.cuda_packages)} (JetPack's CUDA {stack.cuda}; not "
            "nvidia-cuda-dev by bare name, which Ubuntu's own CUDA package can shadow; deploy/setup-jetson.sh "
            "does it)")


def _tensorrt_missing(facts: PlatformFacts, exc: BaseException) -> Check:
    details = {"error": str(exc)}
    if facts.is_jetson:
        stack = jetpack_stack(facts.l4t) if facts.l4t else None
        if stack is not None:
            packages = (f"{' '.join(stack.tensorrt_packages)} (JetPack {facts.jetpack or '?'}: "
                        f"TensorRT {stack.tensorrt})")
        else:
            packages = ("python3-libnvinfer libnvinfer-plugin8 (JetPack 5, 6.0) or libnvinfer-plugin10 "
                        "(JetPack 6.1+)")
        return Check("TensorRT", FAIL, "the tensorrt Python module is not importable",
                     f"sudo apt-get install {packages}, in a venv made with --system-site-packages "
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
    lines, unlisted = [], []
    for d in devices:  # each camera's modes, as `v4l2-ctl --list-formats-ext` shows them
        modes = camera_modes(d["path"], run=paths.run)
        if modes is None:
            unlisted.append(Path(d["path"]).name)
            continue
        d["modes"] = [m.describe() for m in modes]
        if modes:
            lines.append(f"{Path(d['path']).name}: {', '.join(d['modes'])}")
    summary = f"{len(devices)} device node(s): {listed}" + "".join(f"; {line}" for line in lines)
    if unlisted:
        summary += (f"; modes of {', '.join(unlisted)} unknown (v4l2-ctl missing or failing: sudo apt-get "
                    "install v4l-utils)")
    return Check("V4L2 cameras", OK, summary, details=details)


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
