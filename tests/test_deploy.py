"""deploy/: the Jetson setup script (its logic, in --dry-run against fake system files), the systemd unit
with its install/uninstall scripts and launcher, the container recipes and their runner; and the other
install routes' Jetson bounds (pyproject.toml's markers, scripts/bootstrap.sh in --dry-run).

Nothing here needs a Jetson: the setup script's decisions (JetPack 5 vs 6 packages, venv reuse, power
mode) are checked from the commands it prints; the service is installed into tmp_path and verified with
``systemd-analyze verify``; its launcher really runs edge-run; the Dockerfiles are checked statically
(no Docker engine here).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from tests.paths import REPO as ROOT

DEPLOY = ROOT / "deploy"
SETUP = DEPLOY / "setup-jetson.sh"
CONTAINER = DEPLOY / "container.sh"
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"
INSTALL = DEPLOY / "install-service.sh"
UNINSTALL = DEPLOY / "uninstall-service.sh"
LAUNCHER = DEPLOY / "lib" / "edge-run-service.sh"
UNIT = DEPLOY / "edge-run.service"
ENV_EXAMPLE = DEPLOY / "edge-run.env.example"
SCRIPTS = sorted(DEPLOY.glob("*.sh")) + sorted((DEPLOY / "lib").glob("*.sh"))

JP5_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
JP6_RELEASE = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n"
JP60_RELEASE = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024\n"
JP60DP_RELEASE = "# R36 (release), REVISION: 2.0, GCID: 35084178, BOARD: generic, EABI: aarch64, DATE: Tue Dec 19 05:55:03 UTC 2023\n"
JP62_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
JP4_RELEASE = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n"


def bash(script: Path, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=full, timeout=timeout)


def fake_jetson_files(tmp_path: Path, release: str, model: str = "NVIDIA Jetson Orin Nano Developer Kit") -> Dict[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(release)
    dt = tmp_path / "model"
    dt.write_bytes(model.encode() + b"\0")
    return {"EDGE_TEGRA_RELEASE_FILE": str(rel), "EDGE_DEVICE_MODEL_FILE": str(dt)}


def commands(stdout: str) -> List[List[str]]:
    """The commands a --dry-run printed ('+ cmd args'), split as the shell would."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ") and not line.startswith("+ write ")]


def find(cmds: Sequence[List[str]], *words: str) -> List[List[str]]:
    return [c for c in cmds if all(w in c for w in words)]


def dry_setup(tmp_path: Path, release: str, *args: str, venv: Optional[Path] = None) -> subprocess.CompletedProcess:
    env = fake_jetson_files(tmp_path, release)
    return bash(SETUP, "--dry-run", "--venv", str(venv or tmp_path / "venv"), *args, env=env)


def efficient_nms_model(tmp_path: Path) -> Path:
    """Stands for the EfficientNMS_TRT deploy graph a JetPack 5 user copies over (the script only passes it on)."""
    path = tmp_path / "bccd.trt.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"onnx")
    return path


# --- shellcheck -----------------------------------------------------------------------------------------


def test_every_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    assert len(SCRIPTS) >= 5, SCRIPTS
    proc = subprocess.run(["shellcheck", "-x", "--severity=style", *map(str, SCRIPTS)], capture_output=True, text=True,
                          cwd=DEPLOY)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_strict_and_executable():
    for script in SCRIPTS:
        text = script.read_text()
        if script.name == "common.sh":
            continue  # sourced, never run
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert text.startswith("#!/usr/bin/env bash"), script
        assert re.search(r"^set -E?euo pipefail$", text, re.MULTILINE), f"{script} lacks set -euo pipefail"


# --- setup-jetson.sh ----------------------------------------------------------------------------------


def test_setup_dry_run_jetpack5(tmp_path):
    model = efficient_nms_model(tmp_path)
    proc = dry_setup(tmp_path, JP5_RELEASE, "--selftest-model", str(model))
    assert proc.returncode == 0, proc.stderr
    assert "L4T 35.4.1 = JetPack 5.1.2 (TensorRT 8.x, Python 3.8)" in proc.stderr
    cmds = commands(proc.stdout)
    apt = find(cmds, "apt-get", "install")
    assert len(apt) == 1
    for pkg in ("python3-venv", "python3-dev", "build-essential", "cuda-nvcc-11-4", "cuda-cudart-dev-11-4",
                "libcurand-dev-11-4", "python3-libnvinfer",
                "libnvinfer8", "libnvinfer-plugin8", "libnvonnxparsers8", "nvidia-opencv", "gstreamer1.0-tools"):
        assert pkg in apt[0], pkg
    assert "nvidia-cuda-dev" not in apt[0]  # Ubuntu's package of that name can win over JetPack's
    assert "libnvinfer-plugin10" not in apt[0]
    venv = tmp_path / "venv"
    assert find(cmds, "-m", "venv", "--system-site-packages", str(venv))
    pycuda = find(cmds, "pycuda>=2021.1")
    assert len(pycuda) == 1
    for var in ("CUDA_ROOT=/usr/local/cuda", "CUDA_HOME=/usr/local/cuda", "CPATH=/usr/local/cuda/include",
                "LIBRARY_PATH=/usr/local/cuda/lib64"):
        assert var in pycuda[0], var
    assert any(a.startswith("PATH=/usr/local/cuda/bin:") for a in pycuda[0])
    edge = find(cmds, f"{ROOT}[jetson,quantize]")
    assert len(edge) == 1
    at = edge[0].index(f"{venv}/bin/python")  # the venv's own pip, not the system's
    assert edge[0][at:at + 3] == [f"{venv}/bin/python", "-m", "pip"]
    assert f'+ write {venv}/edge-constraints.txt <<EOF\nnumpy<2\npycuda<2026; python_version < "3.10"\nEOF' in proc.stdout
    # the last check builds an engine from the given graph, opens it and runs it through the TensorRT backend
    assert cmds[-1] == [f"{venv}/bin/edge", "doctor", "--selftest", "--precision", "fp32", "--iterations", "5",
                        "--model", str(model)]
    flat = " ".join(" ".join(c) for c in cmds)
    assert "torch" not in flat and "opencv-python" not in flat
    assert "jetson_clocks" not in flat and "nvpmodel" not in flat
    # the order: system packages, venv, PyCUDA, edge, doctor
    order = [next(i for i, c in enumerate(cmds) if c in find(cmds, *w)) for w in
             (("apt-get", "install"), ("--system-site-packages",), ("pycuda>=2021.1",), (f"{ROOT}[jetson,quantize]",),
              ("doctor",))]
    assert order == sorted(order)


def test_setup_dry_run_jetpack6_differs_where_it_must(tmp_path):
    jp5 = commands(dry_setup(tmp_path / "a", JP5_RELEASE).stdout)
    proc = dry_setup(tmp_path / "b", JP6_RELEASE)
    assert proc.returncode == 0, proc.stderr
    assert "L4T 36.4.0 = JetPack 6.1 (TensorRT 10.x, Python 3.10)" in proc.stderr
    jp6 = commands(proc.stdout)
    apt6 = find(jp6, "apt-get", "install")[0]
    apt5 = find(jp5, "apt-get", "install")[0]
    assert sorted(set(apt6) - set(apt5)) == ["cuda-cudart-dev-12-6", "cuda-nvcc-12-6", "libcurand-dev-12-6",
                                             "libnvinfer-plugin10", "libnvinfer10", "libnvonnxparsers10"]
    assert sorted(set(apt5) - set(apt6)) == ["cuda-cudart-dev-11-4", "cuda-nvcc-11-4", "libcurand-dev-11-4",
                                             "libnvinfer-plugin8", "libnvinfer8", "libnvonnxparsers8"]


@pytest.mark.parametrize("release,l4t,trt,cuda", [
    (JP60DP_RELEASE, "36.2.0", "8.6", "12.2"),
    (JP60_RELEASE, "36.3.0", "8.6", "12.2"),
    (JP6_RELEASE, "36.4.0", "10.3", "12.6"),
    (JP62_RELEASE, "36.4.3", "10.3", "12.6"),
    (JP5_RELEASE, "35.4.1", "8.5", "11.4"),
])
def test_setup_takes_tensorrt_and_cuda_from_the_l4t_release_not_its_major(tmp_path, release, l4t, trt, cuda):
    """JetPack 6.0 (L4T 36.2/36.3) ships TensorRT 8.6 with CUDA 12.2; only 36.4+ (JetPack 6.1+) has 10.3."""
    proc = dry_setup(tmp_path, release, "--selftest-model", str(efficient_nms_model(tmp_path)))
    assert f"L4T {l4t} = JetPack" in proc.stderr
    assert f"ships TensorRT {trt} and CUDA {cuda}" in proc.stderr
    apt = find(commands(proc.stdout), "apt-get", "install")[0]
    major = trt.split(".")[0]
    other = "10" if major == "8" else "8"
    v = cuda.replace(".", "-")
    for pkg in (f"libnvinfer{major}", f"libnvinfer-plugin{major}", f"libnvonnxparsers{major}",
                f"cuda-nvcc-{v}", f"cuda-cudart-dev-{v}", f"libcurand-dev-{v}"):
        assert pkg in apt, pkg
    assert not [p for p in apt if p.endswith(other) and p.startswith("libnv")], apt
    assert "nvidia-cuda-dev" not in apt  # by bare name, Ubuntu 22.04's own package can win over JetPack's
    assert proc.returncode == 0, proc.stderr


def test_setup_ends_by_opening_an_engine(tmp_path):
    """`edge doctor` alone never opens an engine; the last check is the self-test, which builds one,
    deserializes it and runs it through the TensorRT backend (--dry-run shows that command)."""
    proc = dry_setup(tmp_path / "jp6", JP6_RELEASE)
    assert proc.returncode == 0, proc.stderr
    venv = tmp_path / "jp6" / "venv"
    cmds = commands(proc.stdout)
    assert cmds[-1] == [f"{venv}/bin/edge", "doctor", "--selftest", "--precision", "fp32", "--iterations", "5"]
    # JetPack 6.0's TensorRT 8.6 imports the bundled model's ONNX NonMaxSuppression too
    assert commands(dry_setup(tmp_path / "jp60", JP60_RELEASE).stdout)[-1][1:4] == ["doctor", "--selftest",
                                                                                    "--precision"]
    # JetPack 5 (TensorRT 8.5) cannot build the bundled model: without an EfficientNMS_TRT graph the
    # setup does not claim success; it says what is missing and how to finish.
    jp5 = dry_setup(tmp_path / "jp5", JP5_RELEASE)
    assert jp5.returncode == 1
    assert "no engine was opened" in jp5.stderr and "--selftest-model" in jp5.stderr
    assert "what to do:" in jp5.stderr
    last = commands(jp5.stdout)[-1]
    assert last == [f"{tmp_path}/jp5/venv/bin/edge", "doctor"]  # the environment report still ran
    missing = dry_setup(tmp_path / "m", JP5_RELEASE, "--selftest-model", str(tmp_path / "absent.onnx"))
    assert missing.returncode == 1 and "absent.onnx: no such file" in missing.stderr
    assert missing.stdout == ""  # refused before anything ran


def test_setup_keeps_runtime_and_build_constraints_apart(tmp_path):
    proc = dry_setup(tmp_path, JP6_RELEASE)
    assert proc.returncode == 0, proc.stderr
    venv = tmp_path / "venv"
    runtime, build = f"{venv}/edge-constraints.txt", f"{venv}/edge-build-constraints.txt"
    assert f"+ write {build} <<EOF\nnumpy>=1.24,<2\nEOF" in proc.stdout  # PyCUDA >= 2024.1.2 builds with NumPy >= 1.24
    assert 'pycuda<2026; python_version < "3.10"' in proc.stdout  # 2026.1 uses zip(strict=) (Python 3.10)
    cmds = commands(proc.stdout)
    for cmd in find(cmds, "pycuda>=2021.1") + find(cmds, f"{ROOT}[jetson,quantize]"):
        assert f"PIP_CONSTRAINT={runtime}" in cmd and f"PIP_BUILD_CONSTRAINT={build}" in cmd, cmd


def test_setup_options_change_only_what_they_say(tmp_path):
    proc = dry_setup(tmp_path, JP6_RELEASE, "--max-power", "--selftest", "--opencv", "ubuntu", "--editable",
                     "--extras", "jetson")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    apt = find(cmds, "apt-get", "install")[0]
    assert "python3-opencv" in apt and "nvidia-opencv" not in apt
    assert find(cmds, "nvpmodel", "-m", "0") and find(cmds, "jetson_clocks")
    assert find(cmds, "-e", f"{ROOT}[jetson]")
    assert cmds[-1][-2:] == ["doctor", "--selftest"]
    skip = commands(dry_setup(tmp_path / "s", JP6_RELEASE, "--skip-apt", "--no-doctor").stdout)
    assert not find(skip, "apt-get") and not find(skip, "doctor")


def test_setup_refuses_extras_that_bring_torch(tmp_path):
    proc = dry_setup(tmp_path, JP6_RELEASE, "--extras", "jetson,train")
    assert proc.returncode == 1
    assert "torch" in proc.stderr and "what to do:" in proc.stderr


def test_setup_reuses_a_venv_with_system_site_packages_and_refuses_one_without(tmp_path):
    good = tmp_path / "good"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(good)], check=True)
    proc = dry_setup(tmp_path, JP6_RELEASE, venv=good)
    assert proc.returncode == 0, proc.stderr
    assert f"reusing {good}" in proc.stderr
    assert not find(commands(proc.stdout), "-m", "venv")
    bad = tmp_path / "bad"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bad)], check=True)
    proc = dry_setup(tmp_path, JP6_RELEASE, venv=bad)
    assert proc.returncode == 1
    assert "without --system-site-packages" in proc.stderr and f"rm -rf '{bad}'" in proc.stderr
    assert proc.stdout.count("apt-get install") == 1  # stopped after the packages, before pip


def test_setup_on_a_machine_that_is_not_a_jetson(tmp_path):
    env = {"EDGE_TEGRA_RELEASE_FILE": str(tmp_path / "absent"), "EDGE_DEVICE_MODEL_FILE": str(tmp_path / "absent")}
    for args in ((), ("--dry-run",)):
        proc = bash(SETUP, *args, env=env)
        assert proc.returncode == 1
        assert "this is not a Jetson" in proc.stderr and "scripts/bootstrap.sh" in proc.stderr
        assert proc.stdout == ""  # nothing was run or printed as run


def test_setup_without_dry_run_stops_on_a_non_aarch64_machine_before_changing_anything(tmp_path):
    if platform.machine() == "aarch64":
        pytest.skip("this machine is aarch64: the architecture guard does not trigger here")
    proc = bash(SETUP, "--venv", str(tmp_path / "venv"), env=fake_jetson_files(tmp_path, JP6_RELEASE))
    assert proc.returncode == 1
    assert f"this machine is {platform.machine()}, not a Jetson (aarch64)" in proc.stderr
    assert "+ " not in proc.stderr and not (tmp_path / "venv").exists()


@pytest.mark.parametrize("release,message", [
    (JP4_RELEASE, "L4T 32.7.1 is JetPack 4.6.x"),
    ("# R99 (release), REVISION: 1.0\n", "L4T 99.1.0 (JetPack unknown) is not one this script knows"),
    ("garbage\n", "cannot read the L4T release"),
])
def test_setup_refuses_unsupported_releases_with_a_way_out(tmp_path, release, message):
    proc = dry_setup(tmp_path, release)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "what to do:" in proc.stderr


def test_a_failing_step_stops_with_its_name_and_hint(tmp_path):
    """The ERR trap every script installs: the first failing command ends the run with the step's advice."""
    snippet = (f'set -Eeuo pipefail; EDGE_PROG=demo; . "{DEPLOY}/lib/common.sh"; trap edge_on_error ERR; '
               'edge_step "copy the model" "check the disk"; false; echo unreachable')
    proc = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True)
    assert proc.returncode == 1
    assert 'demo: error: step "copy the model" failed (exit 1' in proc.stderr
    assert "demo: what to do: check the disk" in proc.stderr
    assert "unreachable" not in proc.stdout


def test_common_sh_helpers():
    snippet = (f'. "{DEPLOY}/lib/common.sh"; edge_jetpack_for_l4t 35.6.1; edge_jetpack_for_l4t 36.4.3; '
               'edge_jetpack_for_l4t 36.7.0; edge_quote a "b c" "it\'s" "x[y]" ""')
    proc = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["5.1.5", "6.2", "6.x"]
    assert shlex.split(lines[3]) == ["a", "b c", "it's", "x[y]", ""]


def common_sh(snippet: str) -> List[str]:
    proc = subprocess.run(["bash", "-c", f'. "{DEPLOY}/lib/common.sh"; {snippet}'], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


RELEASES = ["35.1.0", "35.2.1", "35.4.1", "35.6.1", "36.0.0", "36.2.0", "36.3.0", "36.4.0", "36.4.3", "36.4.4",
            "36.5.0", "32.7.1", "38.2.0"]


def test_the_scripts_and_the_doctor_share_one_l4t_table():
    """deploy/lib/common.sh and edge/doctor/facts.py answer the same for every release."""
    from edge.doctor.facts import jetpack_stack

    lines = common_sh("; ".join(f'echo "$(edge_trt_for_l4t {r}) $(edge_cuda_for_l4t {r})"' for r in RELEASES))
    for release, line in zip(RELEASES, lines):
        stack = jetpack_stack(release)
        expected = f"{stack.tensorrt} {stack.cuda}" if stack else " "
        assert line == expected, release
        if stack:
            assert common_sh(f"edge_cuda_packages {stack.cuda}") == [" ".join(stack.cuda_packages)]
    assert dict(zip(RELEASES, lines))["36.3.0"] == "8.6 12.2"


@pytest.mark.parametrize("image,host,ok", [
    ("36.4.0", "36.4.0", True), ("36.4.0", "36.4.3", True), ("36.4.0", "36.3.0", False), ("36.4.0", "36.2.0", False),
    ("36.3.0", "36.2.0", True), ("36.3.0", "36.4.3", False), ("35.4.1", "35.2.1", True), ("35.4.1", "36.4.0", False),
    ("36.4.0", "35.4.1", False),
])
def test_l4t_image_compatibility_is_jetson_containers_rule(image, host, ok):
    assert common_sh(f"edge_l4t_image_compatible {image} {host} && echo yes || echo no") == ["yes" if ok else "no"]


def test_apt_candidate_reads_apt_cache_policy(tmp_path):
    fake = tmp_path / "bin" / "apt-cache"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncase "$2" in\n libnvinfer8) printf "libnvinfer8:\\n  Installed: (none)\\n'
                    '  Candidate: 8.6.2.3-1+cuda12.2\\n";;\n *) printf "%s:\\n  Installed: (none)\\n'
                    '  Candidate: (none)\\n" "$2";;\nesac\n')
    fake.chmod(0o755)
    lines = common_sh(f'PATH="{fake.parent}:$PATH"; echo "[$(edge_apt_candidate libnvinfer8)]"; '
                      'echo "[$(edge_apt_candidate libnvinfer10)]"')
    assert lines == ["[8.6.2.3-1+cuda12.2]", "[]"]


# --- the other install routes: pyproject.toml and scripts/bootstrap.sh -----------------------------------


def pyproject() -> Dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def allowed(requirements: Sequence[str], name: str, version: str, env: Dict[str, str]) -> bool:
    """Whether every requirement on ``name`` whose marker holds in ``env`` allows ``version``."""
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in requirements]
    reqs = [r for r in reqs if r.name == name and (r.marker is None or r.marker.evaluate(env))]
    assert reqs, f"no requirement on {name} applies in {env}"
    return all(r.specifier.contains(version, prereleases=True) for r in reqs)


JETSON_PY38 = {"platform_machine": "aarch64", "python_version": "3.8", "platform_system": "Linux", "extra": ""}
JETSON_PY310 = {**JETSON_PY38, "python_version": "3.10"}
DESKTOP = {"platform_machine": "x86_64", "python_version": "3.11", "platform_system": "Linux", "extra": ""}


def test_pyproject_keeps_numpy_1_on_aarch64_for_every_install_route():
    """JetPack's cv2 is built against NumPy 1.x; onnxruntime's floor (1.21.6) is above the system NumPy of
    both JetPacks, so pip always installs one: it must stay below 2 there. The desktop floor is as before."""
    deps = pyproject()["project"]["dependencies"]
    for env in (JETSON_PY38, JETSON_PY310):
        assert not allowed(deps, "numpy", "2.0.0", env) and not allowed(deps, "numpy", "2.2.6", env)
        assert allowed(deps, "numpy", "1.24.4", env) and allowed(deps, "numpy", "1.26.4", env)
        assert allowed(deps, "numpy", "1.21.6", env)  # onnxruntime's own floor
    assert allowed(deps, "numpy", "2.4.6", DESKTOP) and allowed(deps, "numpy", "1.19.0", DESKTOP)
    assert not allowed(deps, "numpy", "1.18.5", DESKTOP)


def test_pyproject_keeps_pycuda_below_2026_under_python_3_10():
    """PyCUDA 2026.1 declares Python ~=3.8 but uses zip(strict=) (3.10+); JetPack 5 runs Python 3.8."""
    jetson = pyproject()["project"]["optional-dependencies"]["jetson"]
    assert not allowed(jetson, "pycuda", "2026.1", JETSON_PY38)
    assert allowed(jetson, "pycuda", "2025.1.3", JETSON_PY38)
    assert allowed(jetson, "pycuda", "2026.1", JETSON_PY310)
    assert not allowed(jetson, "pycuda", "2020.1", JETSON_PY310)


def test_pytest_has_a_per_test_timeout_above_the_tests_own_limits():
    """A hung test fails alone (pytest-timeout, signal method); the limits tests set on their own subprocesses
    fire first."""
    config = pyproject()
    options = config["tool"]["pytest"]["ini_options"]
    assert options["timeout_method"] == "signal"
    assert any(r.startswith("pytest-timeout") for r in config["project"]["optional-dependencies"]["dev"])
    assert any(m.startswith("timeout(") for m in options["markers"])  # --strict-markers without the plugin
    own = [int(n) for path in (ROOT / "tests").rglob("*.py")
           for n in re.findall(r"(?:\btimeout=|DEFAULT_TIMEOUT_S = )(\d+)", path.read_text())]
    assert own and options["timeout"] > max(own), (options["timeout"], max(own))


def test_a_hung_thread_fails_one_test_and_the_run_goes_on(tmp_path):
    """With the project's timeout method, a test stuck joining a thread that never ends fails by itself."""
    pytest.importorskip("pytest_timeout")
    (tmp_path / "test_hang.py").write_text(
        "import threading\n"
        "def test_hangs():\n"
        "    threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        "    threading.Event().wait()\n"
        "def test_after():\n"
        "    assert True\n")
    method = pyproject()["tool"]["pytest"]["ini_options"]["timeout_method"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=2",
                           "-o", f"timeout_method={method}", str(tmp_path / "test_hang.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-2000:]


def bare_python(tmp_path: Path) -> Path:
    """A python3 that sees no site-packages (so no torch) unless PYTHONPATH adds some."""
    path = tmp_path / "bin" / "python3"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    path.chmod(0o755)
    return path


def dry_bootstrap(tmp_path: Path, *args: str, jetson: bool, env: Optional[Dict[str, str]] = None
                  ) -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    release = tmp_path / "nv_tegra_release"
    if jetson:
        release.write_text(JP6_RELEASE)
    full = {"EDGE_VENV": str(tmp_path / "venv"), "EDGE_TEGRA_RELEASE_FILE": str(release),
            "PYTHON": str(bare_python(tmp_path)), **(env or {})}
    return bash(BOOTSTRAP, "--dry-run", *args, env=full)


def fake_nvidia_torch(tmp_path: Path) -> Dict[str, str]:
    site = tmp_path / "site"
    for name, version in (("torch", "2.3.0a0+40ec155e58.nv24.03"), ("torchvision", "0.18.0a0+6043bc2")):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(f"__version__ = {version!r}\n")
    return {"PYTHONPATH": str(site)}


def test_bootstrap_on_a_jetson_never_takes_torch_from_pypi(tmp_path):
    """PyPI's aarch64 torch cannot use the Jetson GPU: without NVIDIA's torch the torch extras stop."""
    proc = dry_bootstrap(tmp_path, "dev", jetson=True)
    assert proc.returncode == 1
    assert "NVIDIA's build for this JetPack" in proc.stderr and "what to do:" in proc.stderr
    assert not find(commands(proc.stdout), "install")  # nothing installed: no PyPI torch pair, no edge[dev]
    assert find(commands(proc.stdout), "-m", "venv", "--system-site-packages")
    runtime = dry_bootstrap(tmp_path / "r", "runtime", jetson=True)
    assert runtime.returncode == 0, runtime.stderr
    cmds = commands(runtime.stdout)
    assert find(cmds, "install", "-e", str(ROOT)) and "torch" not in runtime.stdout


def test_bootstrap_on_a_jetson_keeps_nvidias_torch(tmp_path):
    proc = dry_bootstrap(tmp_path, "dev", jetson=True, env=fake_nvidia_torch(tmp_path))
    assert proc.returncode == 0, proc.stderr
    pins = tmp_path / "venv" / "edge-torch-constraints.txt"
    assert (f"+ write {pins} <<EOF\ntorch==2.3.0a0+40ec155e58.nv24.03\ntorchvision==0.18.0a0+6043bc2\nEOF"
            in proc.stdout)
    cmds = commands(proc.stdout)
    edge = find(cmds, "install", "-e", f"{ROOT}[dev]")
    assert len(edge) == 1 and edge[0][:2] == ["env", f"PIP_CONSTRAINT={pins}"]
    assert not [c for c in cmds if any(a.startswith(("torch==", "torchvision==")) for a in c)]


def test_bootstrap_off_a_jetson_installs_as_before(tmp_path):
    proc = dry_bootstrap(tmp_path, "dev", jetson=False)
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    assert find(cmds, "-m", "venv", str(tmp_path / "venv")) and not find(cmds, "--system-site-packages")
    pair = (["torch==2.9.1", "torchvision==0.24.1"] if platform.machine() == "aarch64"
            else ["torch==2.14.1", "torchvision==0.29.1"])
    assert find(cmds, "install", *pair)
    assert find(cmds, "install", "-e", f"{ROOT}[dev]")


# --- the service -------------------------------------------------------------------------------------


def parse_env_file(path: Path) -> Dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile= reads them (comments and blank lines ignored)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def test_unit_restarts_on_failure_logs_to_the_journal_and_reads_an_environment_file():
    text = UNIT.read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE))
    assert settings["Restart"] == "on-failure"
    assert settings["StandardOutput"] == settings["StandardError"] == "journal"
    assert settings["EnvironmentFile"] == "/etc/edge/edge-run.env"
    assert settings["ExecStart"] == "/usr/local/lib/edge/edge-run-service"
    assert settings["KillSignal"] == "SIGTERM" and "SupplementaryGroups" in settings
    assert "PrivateTmp" not in settings  # nvargus-daemon's socket lives in /tmp
    assert "[Install]" in text and "WantedBy=multi-user.target" in text


def test_env_example_and_launcher_agree():
    keys = set(parse_env_file(ENV_EXAMPLE))
    launcher = LAUNCHER.read_text()
    assert {"EDGE_MODEL", "EDGE_SOURCE", "EDGE_OUTPUT"} <= keys
    for key in keys:
        assert f"${{{key}" in launcher, f"{key} is in the example but the launcher ignores it"


def run_launcher(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(["bash", str(LAUNCHER), *args], capture_output=True, text=True, env={**base, **env},
                          timeout=120)


def test_launcher_turns_the_environment_into_edge_run_options():
    env = {"EDGE_VENV": "/opt/v", "EDGE_MODEL": "/m/a b.onnx", "EDGE_SOURCE": "csi://0", "EDGE_OUTPUT": "",
           "EDGE_SERVE": "0.0.0.0:8080", "EDGE_HEADLESS": "1", "EDGE_EXTRA_ARGS": "--backend tensorrt  --conf 0.4"}
    proc = run_launcher(env, "--print")
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout) == ["/opt/v/bin/edge-run", "/m/a b.onnx", "--source", "csi://0", "--serve",
                                        "0.0.0.0:8080", "--headless", "--backend", "tensorrt", "--conf", "0.4"]
    defaults = shlex.split(run_launcher({}, "--print").stdout)
    assert defaults == ["/opt/edge/venv/bin/edge-run", "--headless"]
    bad = run_launcher({"EDGE_HEADLESS": "maybe"})
    assert bad.returncode == 2 and "EDGE_HEADLESS" in bad.stderr
    missing = run_launcher({"EDGE_VENV": "/nonexistent/venv"})
    assert missing.returncode == 1 and "setup-jetson.sh" in missing.stderr


def stage_install(tmp_path: Path, venv: Path, *extra: str) -> subprocess.CompletedProcess:
    return bash(INSTALL, "--no-systemctl", "--venv", str(venv), "--user", "root", "--unit-dir", str(tmp_path / "units"),
                "--lib-dir", str(tmp_path / "lib"), "--env-file", str(tmp_path / "etc" / "edge-run.env"), *extra)


def test_install_service_staged_unit_passes_systemd_analyze_verify(tmp_path):
    venv = ROOT / ".venv"
    if not (venv / "bin" / "edge-run").exists():
        pytest.skip(f"{venv} has no edge-run (run scripts/bootstrap.sh)")
    proc = stage_install(tmp_path, venv)
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "units" / "edge-run.service"
    text = unit.read_text()
    assert f"ExecStart={tmp_path}/lib/edge-run-service" in text
    assert f"Environment=EDGE_VENV={venv}" in text and "User=root" in text
    assert f"EnvironmentFile={tmp_path}/etc/edge-run.env" in text
    assert os.access(tmp_path / "lib" / "edge-run-service", os.X_OK)
    assert parse_env_file(tmp_path / "etc" / "edge-run.env") == parse_env_file(ENV_EXAMPLE)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not available here; the unit was checked statically only")
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "edge-run.service" not in verify.stderr, verify.stderr  # no warning about our unit at all


def test_install_service_keeps_the_users_settings_and_uninstall_removes_what_it_installed(tmp_path):
    venv = ROOT / ".venv"
    if not (venv / "bin" / "edge-run").exists():
        pytest.skip(f"{venv} has no edge-run (run scripts/bootstrap.sh)")
    assert stage_install(tmp_path, venv).returncode == 0
    env_file = tmp_path / "etc" / "edge-run.env"
    env_file.write_text("EDGE_SOURCE=v4l2:///dev/video2\n")
    again = stage_install(tmp_path, venv)
    assert again.returncode == 0 and "keeping the existing" in again.stderr
    assert env_file.read_text() == "EDGE_SOURCE=v4l2:///dev/video2\n"
    proc = bash(UNINSTALL, "--no-systemctl", "--unit-dir", str(tmp_path / "units"), "--lib-dir", str(tmp_path / "lib"),
                "--env-file", str(env_file), "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "units" / "edge-run.service").exists() and not (tmp_path / "lib").exists()
    assert env_file.exists()  # kept without --purge
    (tmp_path / "state").mkdir()
    proc = bash(UNINSTALL, "--no-systemctl", "--purge", "--unit-dir", str(tmp_path / "units"), "--lib-dir",
                str(tmp_path / "lib"), "--env-file", str(env_file), "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stderr
    assert not env_file.exists() and not (tmp_path / "state").exists()


def test_install_and_uninstall_dry_run_commands(tmp_path):
    proc = bash(INSTALL, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    assert find(cmds, "install", "-m", "0755", str(LAUNCHER), "/usr/local/lib/edge/edge-run-service")
    assert "+ write /etc/systemd/system/edge-run.service <<EOF" in proc.stdout
    assert find(cmds, "systemctl", "daemon-reload")
    assert find(cmds, "systemctl", "enable", "edge-run.service") and find(cmds, "systemctl", "restart", "edge-run.service")
    assert find(cmds, "useradd", "edge") or find(cmds, "usermod", "-a", "-G", "video", "edge")
    no_start = commands(bash(INSTALL, "--dry-run", "--no-start").stdout)
    assert find(no_start, "systemctl", "enable") and not find(no_start, "systemctl", "restart")
    bad = bash(INSTALL, "--dry-run", "--venv", "relative/venv")
    assert bad.returncode == 1 and "absolute" in bad.stderr
    un = commands(bash(UNINSTALL, "--dry-run", "--purge").stdout)
    assert find(un, "systemctl", "disable", "--now", "edge-run.service")
    assert find(un, "rm", "-f", "/etc/systemd/system/edge-run.service", "/usr/local/lib/edge/edge-run-service")
    assert find(un, "rm", "-rf", "/var/lib/edge") and find(un, "rm", "-f", "/etc/edge/edge-run.env")
    refused = bash(UNINSTALL, "--dry-run", "--purge", "--state-dir", "/var/lib")
    assert refused.returncode == 1 and "far more" in refused.stderr


@pytest.mark.parametrize("option, path, named", [
    ("--venv", "/opt/a&b", "'&'"),              # sed's "the whole match": a corrupted Environment= line
    ("--venv", "/opt/my venv", "a space"),      # splits Environment= in two
    ("--venv", "/opt/a|b", "'|'"),              # sed's delimiter
    ("--env-file", "/etc/edge/50%.env", "'%'"),  # a systemd specifier
    ("--lib-dir", "/usr/lib/a\\b", "'\\'"),     # an escape for sed and systemd
    ("--venv", '/opt/a"b', "'\"'"),             # a systemd quote
])
def test_install_service_refuses_paths_the_unit_cannot_hold(option, path, named):
    """Issue 13, item 11: a path substituted into the unit that sed or systemd would read differently is
    refused with one clear line naming the option, the path and the character; nothing is written."""
    proc = bash(INSTALL, "--dry-run", option, path)
    assert proc.returncode == 1, proc.stdout
    assert f"error: {option} " in proc.stderr and "cannot hold" in proc.stderr and named in proc.stderr, proc.stderr
    assert "what to do:" in proc.stderr and "+ write" not in proc.stdout


def test_install_service_writes_unusual_but_safe_paths_verbatim(tmp_path):
    """Characters the unit takes as they are (+ @ , : = -) reach it unchanged, and systemd reads it."""
    venv = tmp_path / "venv+py3.8@edge,v=1:x-y"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "edge-run").write_text("#!/bin/sh\n")
    (venv / "bin" / "edge-run").chmod(0o755)
    env_file = tmp_path / "etc" / "run=1.env"
    proc = stage_install(tmp_path, venv, "--env-file", str(env_file))
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "units" / "edge-run.service"
    lines = unit.read_text().splitlines()
    assert f"Environment=EDGE_VENV={venv}" in lines and f"EnvironmentFile={env_file}" in lines
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not available here; the unit was checked statically only")
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and "edge-run.service" not in verify.stderr, verify.stdout + verify.stderr


def test_service_launcher_runs_edge_run_and_stops_cleanly_on_sigterm(tmp_path):
    """What systemd does: start the installed launcher with the environment file, then `systemctl stop`
    (SIGTERM). edge-run must get the signal itself (exec) and finalize its video and statistics."""
    venv = ROOT / ".venv"
    if not (venv / "bin" / "edge-run").exists():
        pytest.skip(f"{venv} has no edge-run (run scripts/bootstrap.sh)")
    pytest.importorskip("onnxruntime_extensions")
    pytest.importorskip("onnx_graphsurgeon")
    from tests.doctor.tiny_models import write_deploy_model

    model = write_deploy_model(tmp_path / "model", "efficient")
    assert stage_install(tmp_path, venv).returncode == 0
    env_file = tmp_path / "etc" / "edge-run.env"
    settings = parse_env_file(env_file)
    settings.update({
        "EDGE_MODEL": str(model), "EDGE_SOURCE": "test://?size=320x240&live=1&fps=30", "EDGE_SERVE": "",
        "EDGE_OUTPUT": str(tmp_path / "out.avi"), "EDGE_STATS_JSON": str(tmp_path / "stats.json"),
    })
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "EDGE_VENV": str(venv),
           **parse_env_file(env_file)}
    log = tmp_path / "journal.txt"
    with open(log, "w") as journal:
        proc = subprocess.Popen([str(tmp_path / "lib" / "edge-run-service")], env=env, stdout=journal,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.time() + 90
            while time.time() < deadline and "source:" not in log.read_text() and proc.poll() is None:
                time.sleep(0.2)
            assert proc.poll() is None, log.read_text()
            time.sleep(1.0)  # let some frames through
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 0, text
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["frames"]["inferred"] > 0
    assert (tmp_path / "out.avi").stat().st_size > 0


# --- containers -------------------------------------------------------------------------------------

DOCKER_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                       "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def dockerfile_instructions(path: Path) -> List[List[str]]:
    """[[INSTRUCTION, arguments]] with continuation lines joined and comments/parser directives dropped."""
    out: List[List[str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append([word, rest.strip()])
        current = ""
    assert not current, f"{path}: the last instruction ends with a line continuation"
    return out


@pytest.mark.parametrize("name,l4t_major,trt_major", [("Dockerfile.jp5", "35", "8"), ("Dockerfile.jp6", "36", "10")])
def test_dockerfile_parses_and_installs_edge_right(name, l4t_major, trt_major):
    path = DEPLOY / name
    instructions = dockerfile_instructions(path)
    for word, _ in instructions:
        assert word in DOCKER_INSTRUCTIONS, f"{name}: unknown instruction {word!r}"
        assert word == word.upper()
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in instructions if word == "ARG" and "=" in rest}
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) == 1
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], froms[0])
    assert re.fullmatch(rf"nvcr\.io/nvidia/l4t-jetpack:r{l4t_major}\.\d+\.\d+", base), base
    runs = [rest for word, rest in instructions if word == "RUN"]
    for script in runs:  # every RUN is valid shell
        check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert check.returncode == 0, f"{name}: RUN {script[:60]}...: {check.stderr}"
    everything = " ".join(runs)
    for pkg in (f"libnvinfer{trt_major}", f"libnvinfer-plugin{trt_major}", "python3-libnvinfer", "nvidia-opencv"):
        assert re.search(rf"\b{re.escape(pkg)}\b", everything), pkg
    assert "--system-site-packages" in everything and 'numpy<2' in everything
    pip_installs = re.findall(r"pip install ([^&;]*)", everything)
    assert pip_installs
    for args_ in pip_installs:
        assert "opencv" not in args_ and "torch" not in args_, args_
    assert any('".[jetson,quantize]"' in a for a in pip_installs)
    assert "! /opt/edge/venv/bin/python -m pip show torch" in everything  # the image proves it has no torch
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    copied = []
    for word, rest in instructions:
        if word == "COPY":
            for src in rest.split()[:-1]:
                copied.append(src)
                if readme and src == readme.group(1):
                    continue  # pyproject.toml's readme: the build needs it, the repository's top page
                assert (ROOT / src).exists(), f"{name}: COPY source {src} is not in the repository"
    assert "pyproject.toml" in copied and "edge" in copied and (not readme or readme.group(1) in copied)
    entry = json.loads(next(rest for word, rest in instructions if word == "ENTRYPOINT"))
    assert entry == ["/opt/edge/venv/bin/edge-run"]
    json.loads(next(rest for word, rest in instructions if word == "CMD"))


def test_dockerfile_jp6_takes_tensorrt_from_the_base_images_l4t_release():
    """One recipe for JetPack 6: an r36.0-36.3 base (JetPack 6.0) ships TensorRT 8.6, r36.4+ TensorRT 10.3."""
    runs = [rest for word, rest in dockerfile_instructions(DEPLOY / "Dockerfile.jp6") if word == "RUN"]
    script = next(r for r in runs if "trt_packages" in r)
    case = script[script.index("case "):script.index("esac") + len("esac")]

    def packages(base: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", f'BASE_IMAGE="$1"; {case}; echo "$trt_packages"', "-", base],
                              capture_output=True, text=True)

    assert packages("nvcr.io/nvidia/l4t-jetpack:r36.3.0").stdout.split() == [
        "libnvinfer8", "libnvinfer-plugin8", "libnvonnxparsers8"]
    assert packages("nvcr.io/nvidia/l4t-jetpack:r36.2.0").stdout.split()[0] == "libnvinfer8"
    assert packages("nvcr.io/nvidia/l4t-jetpack:r36.4.0").stdout.split() == [
        "libnvinfer10", "libnvinfer-plugin10", "libnvonnxparsers10"]
    wrong = packages("nvcr.io/nvidia/l4t-jetpack:r35.4.1")
    assert wrong.returncode == 1 and "expected an L4T r36 base" in wrong.stderr
    assert "$trt_packages python3-libnvinfer" in script


def docker_run_lines(text: str) -> List[str]:
    """Every `docker run ...` command in a README or Dockerfile comment, continuation lines joined."""
    lines = [line.strip().lstrip("#").strip() for line in text.splitlines()]
    out, current = [], None
    for line in lines:
        if current is not None:
            current += " " + line.rstrip("\\")
            if not line.endswith("\\"):
                out.append(current)
                current = None
        elif line.startswith("docker run"):
            if line.endswith("\\"):
                current = line.rstrip("\\")
            else:
                out.append(line)
    return out


@pytest.mark.parametrize("path", [DEPLOY / "README.md", DEPLOY / "Dockerfile.jp5", DEPLOY / "Dockerfile.jp6"])
def test_docker_run_lines_give_the_container_the_hosts_l4t_release_and_model(path):
    """Containers mask /proc/device-tree/model and may carry another L4T release file: without the host's,
    engines built on the host are refused as built for another L4T, and doctor cannot name the board."""
    text = path.read_text()
    runs = docker_run_lines(text)
    assert runs, path
    for line in runs:
        assert "-v /etc/nv_tegra_release:/etc/nv_tegra_release:ro" in line, line
        assert "-v /tmp/nv_jetson_model:/tmp/nv_jetson_model:ro" in line, line
    assert "/proc/device-tree/model > /tmp/nv_jetson_model" in text  # made on the host before docker run


def dry_container(tmp_path: Path, release: str, *args: str) -> subprocess.CompletedProcess:
    env = fake_jetson_files(tmp_path, release)
    return bash(CONTAINER, *args, "--dry-run", env=env)


@pytest.mark.parametrize("release,dockerfile,base,tag", [
    (JP5_RELEASE, "Dockerfile.jp5", "nvcr.io/nvidia/l4t-jetpack:r35.4.1", "edge:jp5"),
    (JP60_RELEASE, "Dockerfile.jp6", "nvcr.io/nvidia/l4t-jetpack:r36.3.0", "edge:jp6.0"),
    (JP60DP_RELEASE, "Dockerfile.jp6", "nvcr.io/nvidia/l4t-jetpack:r36.3.0", "edge:jp6.0"),
    (JP6_RELEASE, "Dockerfile.jp6", "nvcr.io/nvidia/l4t-jetpack:r36.4.0", "edge:jp6"),
    (JP62_RELEASE, "Dockerfile.jp6", "nvcr.io/nvidia/l4t-jetpack:r36.4.0", "edge:jp6"),
])
def test_container_build_picks_a_base_the_host_can_run(tmp_path, release, dockerfile, base, tag):
    proc = dry_container(tmp_path, release, "build")
    assert proc.returncode == 0, proc.stderr
    assert commands(proc.stdout) == [["docker", "build", "-f", str(DEPLOY / dockerfile), "--build-arg",
                                      f"BASE_IMAGE={base}", "-t", tag, str(ROOT)]]


def test_container_refuses_an_r36_4_image_on_a_jetpack_6_0_host(tmp_path):
    proc = dry_container(tmp_path, JP60_RELEASE, "build", "--base", "nvcr.io/nvidia/l4t-jetpack:r36.4.0")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "cannot run on this host's L4T 36.3.0" in proc.stderr and "what to do:" in proc.stderr
    older = dry_container(tmp_path / "b", JP62_RELEASE, "build", "--base", "nvcr.io/nvidia/l4t-jetpack:r36.2.0")
    assert older.returncode == 1
    assert dry_container(tmp_path / "c", JP62_RELEASE, "build", "--base",
                         "nvcr.io/nvidia/l4t-jetpack:r36.4.0").returncode == 0


def test_container_run_and_doctor_mount_the_hosts_release_and_model(tmp_path):
    proc = dry_container(tmp_path, JP6_RELEASE, "run", "--source", "csi://0", "--headless")
    assert proc.returncode == 0, proc.stderr
    assert "+ write /tmp/nv_jetson_model <<EOF\nNVIDIA Jetson Orin Nano Developer Kit\nEOF" in proc.stdout
    run = find(commands(proc.stdout), "docker", "run")[0]
    release = str(tmp_path / "nv_tegra_release")
    assert run[run.index(f"{release}:/etc/nv_tegra_release:ro") - 1] == "-v"
    assert run[run.index("/tmp/nv_jetson_model:/tmp/nv_jetson_model:ro") - 1] == "-v"
    assert run[-4:] == ["edge:jp6", "--source", "csi://0", "--headless"]
    doctor = find(commands(dry_container(tmp_path, JP6_RELEASE, "doctor").stdout), "docker", "run")[0]
    assert f"{release}:/etc/nv_tegra_release:ro" in doctor and "/tmp/nv_jetson_model:/tmp/nv_jetson_model:ro" in doctor
    assert doctor[-3:] == ["edge:jp6", "doctor", "--selftest"]
    assert bash(CONTAINER, "build", "--dry-run", env={"EDGE_TEGRA_RELEASE_FILE": str(tmp_path / "x")}).returncode == 1


def test_readme_names_every_deploy_file():
    readme = (DEPLOY / "README.md").read_text()
    for path in [*SCRIPTS, UNIT, ENV_EXAMPLE, DEPLOY / "Dockerfile.jp5", DEPLOY / "Dockerfile.jp6", CONTAINER]:
        if path.name == "common.sh":
            continue
        assert path.name in readme, f"deploy/README.md does not mention {path.name}"
