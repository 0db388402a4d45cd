"""Real cuda-python releases for the CUDA-graph checks: wheels from PyPI, unpacked once into the user cache.

cuda-python's extension modules load ``libcuda`` lazily (on the first driver call), so the real module, its
function objects, enums and handle types import on a machine without a driver. Each release is unpacked
under ``$XDG_CACHE_HOME/edge`` (or ``~/.cache/edge``) as ``<dist>-<version>/`` and imported in a subprocess
with ``python -S`` and only that release, the repository and numpy on its path, so the project's own
environment (which may hold another cuda-bindings) does not leak in.

Releases: cuda-python 11.8.3 (the ``cuda.cuda`` layout and 11.x calls that JetPack 5's Python 3.8 gets with
11.8.2), cuda-bindings 12.9.4 (JetPack 6, CUDA 12) and 13.5.0 (CUDA 13).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import numpy

from tests.cuda.cache import Unavailable, cached
from tests.paths import REPO

RELEASES = [("cuda-python", "11.8.3"), ("cuda-bindings", "12.9.4"), ("cuda-bindings", "13.5.0")]
PROBE = Path(__file__).with_name("probe_cuda_python.py")


def ensure_release(dist: str, version: str) -> Path:
    """The unpacked wheels of ``dist==version`` and its dependencies for this interpreter (downloaded once;
    Unavailable offline)."""

    def fetch(work: Path) -> None:
        proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q",
                               "--only-binary=:all:", f"{dist}=={version}", "-d", str(work / "wheel")],
                              capture_output=True, text=True, timeout=300, check=False)
        wheels = sorted((work / "wheel").glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise Unavailable(f"cannot download {dist}=={version} for this Python from the package index: "
                              f"{(proc.stderr or proc.stdout).strip()[-400:]}")
        for wheel in wheels:  # the release and its own dependencies (cuda-pathfinder for 13.x)
            with zipfile.ZipFile(wheel) as whl:
                whl.extractall(work / "site")
        shutil.rmtree(work / "wheel")

    return cached(f"{dist}-{version}", fetch)


def _numpy_only(tmp: Path) -> Path:
    """A directory holding only numpy (links to this environment's), for a ``-S`` subprocess."""
    shim = tmp / "numpy-only"
    shim.mkdir(exist_ok=True)
    site = Path(numpy.__file__).resolve().parents[1]
    for entry in site.iterdir():
        if entry.name == "numpy" or entry.name.startswith(("numpy.libs", "numpy-")):
            link = shim / entry.name
            if not link.exists():
                link.symlink_to(entry)
    return shim


def probe(dist: str, version: str, names: List[str], tmp: Path) -> Dict[str, Any]:
    """Run probe_cuda_python.py against the release (see its docstring); its JSON result."""
    release = ensure_release(dist, version)
    names_path, out = tmp / "names.json", tmp / "probe.json"
    names_path.write_text(json.dumps(names))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CUDA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(release / "site"), str(REPO), str(_numpy_only(tmp))])
    proc = subprocess.run([sys.executable, "-S", str(PROBE), str(out), dist, version, str(names_path)], env=env,
                          cwd=str(tmp), capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"probing {dist} {version} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())
