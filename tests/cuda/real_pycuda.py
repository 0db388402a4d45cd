"""The real PyCUDA, built here from its PyPI sdist against a stub ``libcuda`` (no GPU, no driver needed).

PyCUDA's extension links to the CUDA driver library (``libcuda.so.1``), which only a machine with an NVIDIA
driver has. Everything else it needs is on a CPU machine with a CUDA toolkit: ``cuda.h`` and the compiler.
So the build links against a placeholder ``libcuda.so.1``; then ``nm`` lists the ``cu*`` symbols the
extension imports, and a stub library exporting each of them replaces the placeholder. With
``LD_LIBRARY_PATH`` pointing at the stub, ``import pycuda.driver`` works and shows the real classes, methods
and functions of that release. No driver call succeeds: ``cuDriverGetVersion`` reports the toolkit's CUDA
version, ``cuGetErrorString`` / ``cuGetErrorName`` fill in a string (PyCUDA formats every error with it and
does not check the result), and every other symbol returns ``CUDA_ERROR_NO_DEVICE`` (100).

Build facts (found by building it here):
* ``pip download --no-binary pycuda --no-build-isolation``: ``--no-binary :all:`` would also force numpy's
  build chain from source.
* ``LDFLAGS=-Wl,--no-as-needed``: Debian's linker drops a ``-lcuda`` that defines nothing the extension
  uses (the placeholder), and the import then fails on an undefined ``cuInit``.
* ``configure.py --no-cuda-enable-curand``: a toolkit without cuRAND; ``pycuda.driver`` does not need it.
* Boost comes with the sdist (``bpl-subset``); compiled with ``-O0 -g0`` (``configure.py --cxxflags``).

The build is cached per version under the user cache directory (``$XDG_CACHE_HOME/edge`` or
``~/.cache/edge``, tests/cuda/cache.py): ``pycuda-<version>/`` holds ``site/`` (the installed package and its
pure-Python dependencies), ``stub/libcuda.so.1`` and ``BUILT.json`` (the stubbed symbols); the build log is
``pycuda-<version>.build.log`` beside it.

Missing PyPI, CUDA toolkit or compiler raise ``Unavailable`` (the tests skip with that reason); a failing
build is an error (the tests fail with the log's tail).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from tests.cuda.cache import Unavailable, cache_root, cached

#: The PyCUDA releases checked: 2026.1 is what ``pip install pycuda`` resolves on Python >= 3.10 (JetPack 6);
#: override with EDGE_PYCUDA_VERSIONS="2026.1,2025.1.3" (comma-separated).
PYCUDA_VERSIONS = [v for v in os.environ.get("EDGE_PYCUDA_VERSIONS", "2026.1").split(",") if v]
#: PyCUDA's own runtime dependencies (pure Python), installed beside it.
RUNTIME_DEPS = ["pytools>=2011.2", "platformdirs>=2.2.0", "mako"]
BUILD_TIMEOUT_S = 1200
DUMP_SCRIPT = Path(__file__).with_name("dump_pycuda.py")


def cuda_root() -> Path:
    """The CUDA toolkit: $CUDA_ROOT, $CUDA_HOME or /usr/local/cuda, with include/cuda.h."""
    for cand in (os.environ.get("CUDA_ROOT"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if cand and (Path(cand) / "include" / "cuda.h").is_file():
            return Path(cand).resolve()
    raise Unavailable("no CUDA toolkit (include/cuda.h under $CUDA_ROOT, $CUDA_HOME or /usr/local/cuda): "
                      "PyCUDA's sdist needs cuda.h to build")


def _require_tools() -> None:
    missing = [t for t in ("gcc", "g++", "nm") if shutil.which(t) is None]
    if missing:
        raise Unavailable(f"no {', '.join(missing)} on PATH: building PyCUDA needs a C/C++ compiler and binutils "
                          "(apt-get install g++ binutils)")


def _run(cmd: List[str], log: Path, *, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
         timeout: float = BUILD_TIMEOUT_S) -> subprocess.CompletedProcess:
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout,
                              check=False)


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def _fail(what: str, log: Path) -> RuntimeError:
    return RuntimeError(f"{what} (log {log}):\n{_tail(log)}")


def _pip(*args: str) -> List[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def fetch_sdist(version: str, log: Path) -> Path:
    """The sdist ``pycuda-<version>.tar.gz``, downloaded once into the cache (Unavailable when PyPI is not)."""
    sdists = cache_root() / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    path = sdists / f"pycuda-{version}.tar.gz"
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory(dir=sdists) as tmp:
        proc = _run(_pip("download", "-q", "--no-deps", "--no-binary", "pycuda", "--no-build-isolation",
                         f"pycuda=={version}", "-d", tmp), log, timeout=300)
        got = Path(tmp) / path.name
        if proc.returncode != 0 or not got.is_file():
            raise Unavailable(f"cannot download the pycuda=={version} sdist from the package index:\n{_tail(log, 6)}")
        os.replace(got, path)
    return path


def stub_source(symbols: List[str], cuda_h: Path) -> str:
    """C source of a stub libcuda.so.1 exporting ``symbols`` (see the module docstring for what each does)."""
    hdr = cuda_h.read_text(errors="replace")
    codes: Dict[int, str] = {}
    for name, val in re.findall(r"^\s+(CUDA_(?:SUCCESS|ERROR_[A-Z0-9_]+))\s*=\s*(\d+)", hdr, re.M):
        codes.setdefault(int(val), name)
    version = int(re.search(r"#define CUDA_VERSION (\d+)", hdr).group(1))  # type: ignore[union-attr]
    special = {"cuGetErrorString", "cuGetErrorName", "cuDriverGetVersion"}
    lines = ["/* stub CUDA driver (tests/cuda/real_pycuda.py): every call fails with CUDA_ERROR_NO_DEVICE */",
             '#define EXPORT __attribute__((visibility("default")))',
             "static const char *stub_name(int e) {", "  switch (e) {"]
    lines += [f'    case {v}: return "{n}";' for v, n in sorted(codes.items())]
    lines += ['    default: return "CUDA_ERROR_UNKNOWN";', "  }", "}",
              "static const char *stub_string(int e) {",
              '  if (e == 100) return "no CUDA-capable device is detected (stub libcuda.so.1: no driver)";',
              "  return stub_name(e);", "}",
              "EXPORT int cuGetErrorString(int e, const char **s) { *s = stub_string(e); return 0; }",
              "EXPORT int cuGetErrorName(int e, const char **s) { *s = stub_name(e); return 0; }",
              f"EXPORT int cuDriverGetVersion(int *v) {{ *v = {version}; return 0; }}"]
    # K&R-style empty parameter lists: ABI-safe on x86_64/aarch64 for int-returning functions never really called
    lines += [f"EXPORT int {s}() {{ return 100; }}" for s in sorted(set(symbols) - special)]
    return "\n".join(lines) + "\n"


def _shared_lib(src: Path, out: Path, log: Path) -> None:
    proc = _run(["gcc", "-shared", "-fPIC", "-O1", "-w", "-Wl,-soname,libcuda.so.1", "-o", str(out), str(src)], log)
    if proc.returncode != 0:
        raise _fail(f"compiling {src.name} failed", log)


def _driver_extension(site: Path) -> Path:
    found = sorted((site / "pycuda").glob("_driver*.so"))
    if not found:
        raise RuntimeError(f"the PyCUDA build installed no pycuda/_driver*.so under {site}")
    return found[0]


def _build(version: str, work: Path) -> None:
    root = cuda_root()
    log = cache_root() / f"pycuda-{version}.build.log"
    log.write_text(f"building PyCUDA {version} in {work} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    sdist = fetch_sdist(version, log)
    src_parent = work / "src"
    src_parent.mkdir()
    with tarfile.open(sdist) as tar:
        tar.extractall(src_parent)  # noqa: S202 - PyPI's sdist of a pinned release
    src = src_parent / f"pycuda-{version}"
    stub, site = work / "stub", work / "site"
    stub.mkdir()
    (stub / "placeholder.c").write_text("void edge_stub_placeholder(void) {}\n")
    _shared_lib(stub / "placeholder.c", stub / "libcuda.so.1", log)
    os.symlink("libcuda.so.1", stub / "libcuda.so")
    # -O0 -g0 come after the default -O3 -g (PyCUDA's CXXFLAGS are its extensions' extra_compile_args): only
    # the surface matters, and an unoptimized build compiles faster
    if _run([sys.executable, "configure.py", f"--cuda-root={root}", f"--cudadrv-lib-dir={stub}",
             "--no-cuda-enable-curand", "--cxxflags=-O0,-g0"], log, cwd=src).returncode != 0:
        raise _fail("PyCUDA's configure.py failed", log)
    env = dict(os.environ, LDFLAGS="-Wl,--no-as-needed", MAKEFLAGS="-j1", PATH=f"{root}/bin:{os.environ['PATH']}")
    if _run(_pip("install", "-q", "--no-build-isolation", "--no-deps", "--target", str(site), str(src)),
            log, env=env).returncode != 0:
        raise _fail(f"building PyCUDA {version} from its sdist failed", log)
    proc = _run(_pip("install", "-q", "--target", str(site), *RUNTIME_DEPS), log, timeout=300)
    if proc.returncode != 0:
        raise Unavailable(f"cannot install PyCUDA's runtime dependencies {RUNTIME_DEPS}:\n{_tail(log, 6)}")
    ext = _driver_extension(site)
    needed = subprocess.run(["nm", "-D", "--undefined-only", str(ext)], capture_output=True, text=True, check=True)
    symbols = sorted({ln.split()[-1] for ln in needed.stdout.splitlines() if ln.split() and ln.split()[-1].startswith("cu")})
    if "cuInit" not in symbols:
        raise RuntimeError(f"{ext.name} imports no cuInit: the link dropped libcuda (LDFLAGS=-Wl,--no-as-needed?)")
    (stub / "libcuda_stub.c").write_text(stub_source(symbols, root / "include" / "cuda.h"))
    (stub / "libcuda.so.1").unlink()
    _shared_lib(stub / "libcuda_stub.c", stub / "libcuda.so.1", log)
    shutil.rmtree(src_parent)
    (work / "BUILT.json").write_text(json.dumps({"version": version, "cuda_root": str(root), "symbols": symbols}))


def ensure_pycuda(version: str) -> Path:
    """The cached build of PyCUDA ``version`` (``site/``, ``stub/``), building it first when absent."""
    _require_tools()
    cuda_root()
    return cached(f"pycuda-{version}", lambda work: _build(version, work))


def import_env(build: Path) -> Dict[str, str]:
    """Environment for a subprocess that imports the built PyCUDA (its site/ first, the stub libcuda)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(build / "site")] + [p for p in [env.get("PYTHONPATH")] if p])
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(build / "stub")] + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def dump_surface(build: Path, out: Path) -> Dict[str, object]:
    """Import the built PyCUDA in a subprocess and return its public surface (``dump_pycuda.py``)."""
    proc = subprocess.run([sys.executable, str(DUMP_SCRIPT), str(out)], env=import_env(build), capture_output=True,
                          text=True, timeout=120, cwd=str(out.parent), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"importing the built PyCUDA failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())
