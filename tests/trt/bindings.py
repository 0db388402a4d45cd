"""The real TensorRT Python bindings of 8.6.1, 10.3.0 and 11.4.0.106, importable on a CPU-only Linux x86_64 box.

PyPI serves TensorRT's pybind11 extension as ordinary wheels (``tensorrt-bindings`` 8.6.1,
``tensorrt-cu12-bindings`` 10.3.0 and 11.4.0.106, about 1.2 MB each). The extension
(``tensorrt_bindings/tensorrt.so``) links ``libnvinfer`` / ``libnvonnxparser`` / ``libnvinfer_plugin``
(+ ``libnvparsers`` on 8.6) but imports only a handful of C entry points from them
(``createInferBuilder_INTERNAL``, ``getPluginRegistry``, ...); everything else is virtual calls. So we
compile stub libraries exporting exactly those symbols (``void *sym(void) { return 0; }``), link them next to
the extension (its RPATH has ``$ORIGIN``) and import it: the real classes, enums, properties and pybind11
signatures of that version, with nothing behind them. ``trt.Logger(trt.Logger.WARNING)``, Python subclasses
of ``ILogger`` / ``IInt8EntropyCalibrator2`` and ``trt.Dims`` work; ``trt.Builder(logger)`` raises TypeError
(its factory returns NULL); ``init_libnvinfer_plugins`` returns False; ``get_plugin_registry()`` is None.

Each version is imported into this process under its own package name (``_edge_trt_bindings_10_3_0``): the
bindings register their types ``module_local``, so the three coexist; ``tensorrt`` itself stays
unimportable (the suite's "TensorRT is not installed" tests keep running).

Cache: ``$EDGE_TRT_BINDINGS_CACHE``, else ``$XDG_CACHE_HOME/edge/trt-bindings`` (``~/.cache/...``): the
wheels, and per (version, Python) the unpacked extension with its stubs. Preparation holds a file lock and
publishes with an atomic rename, so concurrent test processes share it safely.

``load(version)`` raises :class:`Unavailable` only when the package index cannot be reached (and the wheel
is not cached), when there is no C compiler, off Linux x86_64, or when PyPI has the version but no wheel for
this Python (8.6.1 has none for 3.12+); every other failure is an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Tuple

#: The real bindings the checks run against (what PyPI serves; 10.3.0 is JetPack 6.1+'s TensorRT).
VERSIONS: Tuple[str, ...] = ("8.6.1", "10.3.0", "11.4.0.106")

#: Stand-in version -> the real bindings that hold its API (by major). 8.5 (JetPack 5) and 8.2 (JetPack 4.6)
#: have no bindings wheel on PyPI; 8.6.1 is the closest API (a superset of what edge uses from 8.2/8.5).
REAL_FOR_MAJOR: Dict[int, str] = {8: "8.6.1", 10: "10.3.0", 11: "11.4.0.106"}

#: 8.6.1 and 10.3.0 are manylinux_2_17 wheels, 11.x manylinux_2_28.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
DEFAULT_INDEX = "https://pypi.org/simple"
ENV_CACHE = "EDGE_TRT_BINDINGS_CACHE"


class Unavailable(Exception):
    """The real bindings cannot be had here for a reason outside the project (a test skips with it)."""


def real_version_for(standin_version: str) -> Optional[str]:
    """The real bindings version checking a stand-in of ``standin_version`` ('8.5.2' -> '8.6.1'), or None."""
    return REAL_FOR_MAJOR.get(int(str(standin_version).split(".")[0]))


def dist_name(version: str) -> str:
    """PyPI distribution: 8.x has no CUDA suffix, 10.x/11.x are the cu12 builds."""
    return "tensorrt-bindings" if version.startswith("8.") else "tensorrt-cu12-bindings"


def cache_dir() -> Path:
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge" / "trt-bindings"


def _python_tag() -> str:
    return "cp{}{}".format(*sys.version_info[:2])


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- fetching -----------------------------------------------------------------------------------------


def _index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                              capture_output=True, text=True)
        url = proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else DEFAULT_INDEX
    return url.rstrip("/")


def _index_unreachable(dist: str) -> Optional[str]:
    """Why the package index cannot be reached (None when it answers, whatever it answers)."""
    url = f"{_index_url()}/{dist}/"
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:  # noqa: S310 - the configured package index
            resp.read(1)
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} cannot be reached ({getattr(exc, 'reason', exc)})"
    return None


def _find_wheel(wheels: Path, version: str) -> Optional[Path]:
    pattern = f"{dist_name(version).replace('-', '_')}-{version}-{_python_tag()}-*.whl"
    found = sorted(wheels.glob(pattern))
    return found[0] if found else None


def _pip_download(version: str, python: str, dest: Path) -> "subprocess.CompletedProcess[str]":
    plats = [arg for plat in PLATFORMS for arg in ("--platform", plat)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", python,
           *plats, "--timeout", "30", "--retries", "2", "--disable-pip-version-check", "-d", str(dest),
           f"{dist_name(version)}=={version}"]
    return subprocess.run(cmd, capture_output=True, text=True)


def _exists_for_other_python(version: str, scratch: Path) -> bool:
    """Whether the wheel exists for Python 3.10 (all three versions have one): then this Python is the reason."""
    return _pip_download(version, "3.10", scratch / "py310").returncode == 0


def _download(version: str, wheels: Path) -> Path:
    """The wheel of ``version`` for this Python, from the cache or fetched with pip (caller holds the lock)."""
    cached = _find_wheel(wheels, version)
    if cached is not None:
        return cached
    wheels.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=wheels))
    try:
        proc = _pip_download(version, "{}.{}".format(*sys.version_info[:2]), tmp)
        got = _find_wheel(tmp, version)
        if proc.returncode != 0 or got is None:
            reason = _index_unreachable(dist_name(version))
            if reason:
                raise Unavailable(f"the real TensorRT {version} bindings are not cached in {wheels} and the "
                                  f"package index cannot be reached: {reason}")
            if _exists_for_other_python(version, tmp):
                raise Unavailable(f"PyPI has {dist_name(version)} {version} wheels, but none for Python "
                                  "{}.{}: run the suite under a Python it has (3.8-3.11 have all three "
                                  "versions)".format(*sys.version_info[:2]))
            raise RuntimeError(
                f"pip could not fetch {dist_name(version)}=={version} for Python "
                f"{sys.version_info[0]}.{sys.version_info[1]} (exit {proc.returncode}), though the index answers:\n"
                f"{(proc.stderr or proc.stdout)[-2000:]}\nIs there a wheel for this Python on PyPI? Run the suite "
                "under a Python the wheel exists for, or put the wheel into the cache by hand."
            )
        final = wheels / got.name
        os.replace(got, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- stubbing -----------------------------------------------------------------------------------------


def elf_dynamic(path: Path) -> Tuple[List[str], List[str]]:
    """Minimal ELF64 little-endian reader: (DT_NEEDED entries, undefined global dynamic symbols)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path} is not an ELF64 little-endian file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def cstr(strtab: int, off: int) -> str:
        start = secs[strtab][4] + off
        return data[start:data.index(b"\0", start)].decode()

    needed, undef = [], []
    for _name, typ, _fl, _addr, off, size, link, _info, _al, entsize in secs:
        if typ == 6:  # SHT_DYNAMIC: Elf64_Dyn {d_tag, d_val}
            for i in range(0, size, 16):
                tag, val = struct.unpack_from("<qQ", data, off + i)
                if tag == 1:  # DT_NEEDED
                    needed.append(cstr(link, val))
        elif typ == 11:  # SHT_DYNSYM: Elf64_Sym {name, info, other, shndx, value, size}
            for i in range(entsize, size, entsize):
                st_name, st_info, _o, shndx, _v, _s = struct.unpack_from("<IBBHQQ", data, off + i)
                if shndx == 0 and st_info >> 4 == 1 and st_name:  # SHN_UNDEF, STB_GLOBAL (not weak)
                    undef.append(cstr(link, st_name))
    return needed, undef


def _undefined_symbols(ext: Path) -> List[str]:
    """Strong, unversioned undefined symbols (``foo@GLIBC_2.2.5`` belongs to a system library): nm, else ELF."""
    if shutil.which("nm"):
        out = subprocess.run(["nm", "-D", "--undefined-only", str(ext)], check=True, capture_output=True,
                             text=True).stdout
        fields = [line.split() for line in out.splitlines()]
        return [f[1] for f in fields if len(f) == 2 and f[0] == "U" and "@" not in f[1]]
    return [s for s in elf_dynamic(ext)[1] if "@" not in s]


def _system_resolvable(name: str) -> bool:
    """Provided by Python itself or a standard system library (the 11.x extension's unversioned dlopen)."""
    import ctypes

    for lib in (None, "libc.so.6", "libstdc++.so.6", "libm.so.6", "libgcc_s.so.1", "libdl.so.2"):
        try:
            if hasattr(ctypes.CDLL(lib), name):
                return True
        except OSError:
            continue
    return False


#: Which stub library gets a symbol (cosmetic: the loader searches every NEEDED library).
_OWNERS = (("OnnxParser", "nvonnxparser"), ("nvuffparser", "nvparsers"), ("nvcaffeparser", "nvparsers"),
           ("initLibNvInferPlugins", "nvinfer_plugin"))


def stub_symbols(ext: Path) -> Dict[str, List[str]]:
    """{stub soname: [symbols]} for every ``libnv*`` library the extension needs."""
    libs = [n for n in elf_dynamic(ext)[0] if n.startswith("libnv")]
    if not libs:
        raise RuntimeError(f"{ext} needs no libnv* library: not the TensorRT bindings extension?")
    table: Dict[str, List[str]] = {lib: [] for lib in libs}
    for sym in sorted(set(_undefined_symbols(ext))):
        if sym.startswith(("Py", "_Py")) or _system_resolvable(sym):
            continue
        stem = next((stem for key, stem in _OWNERS if key in sym), "nvinfer")
        owner = next((lib for lib in libs if lib.startswith(f"lib{stem}.so")), libs[0])
        table[owner].append(sym)
    return table


def _compiler() -> str:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    raise Unavailable("no C compiler (cc, gcc or clang) to build the stub libraries the real TensorRT bindings "
                      "link against; install one (apt-get install gcc)")


def _build(version: str, wheel: Path, tmp: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp / "site")
    pkg = tmp / "site" / "tensorrt_bindings"
    ext = pkg / "tensorrt.so"
    if not ext.is_file():
        raise RuntimeError(f"{wheel.name} has no tensorrt_bindings/tensorrt.so")
    ext.chmod(0o755)
    (tmp / "lib").mkdir()
    cc = _compiler()
    for soname, symbols in stub_symbols(ext).items():
        src = tmp / "lib" / f"{soname}.c"
        # Every stub returns 0 / NULL. The C calling convention is enough for the few C++ symbols (the 8.6 uff
        # and caffe parsers' factories) because none of them is ever called.
        src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
        subprocess.run([cc, "-shared", "-fPIC", "-O0", f"-Wl,-soname,{soname}", "-o", str(tmp / "lib" / soname),
                        str(src)], check=True, capture_output=True)
        (pkg / soname).symlink_to(Path("..", "..", "lib", soname))  # found through the extension's $ORIGIN
    (tmp / "READY").write_text(f"{version} {wheel.name}\n")


def prepare(version: str, cache: Optional[Path] = None) -> Path:
    """Fetch, unpack and stub the bindings of ``version``; return the directory holding ``tensorrt_bindings``."""
    if version not in VERSIONS:
        raise ValueError(f"no real bindings version {version!r}; known: {', '.join(VERSIONS)}")
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise Unavailable(f"the stubbed bindings are built for Linux x86_64, not {sys.platform} {platform.machine()}")
    cache = Path(cache or cache_dir()).expanduser().resolve()
    root = cache / f"{version}-{_python_tag()}"
    if (root / "READY").exists():
        return root / "site"
    with _locked(cache):
        if (root / "READY").exists():  # another process finished it while we waited
            return root / "site"
        wheel = _download(version, cache / "wheels")
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=cache))
        try:
            tmp.chmod(0o755)
            _build(version, wheel, tmp)
            if root.exists():  # a half-made directory from an older layout: replace it
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / "site"


# -- importing ----------------------------------------------------------------------------------------

_LOADED: Dict[str, ModuleType] = {}
_FAILED: Dict[str, BaseException] = {}


def package_name(version: str) -> str:
    return "_edge_trt_bindings_" + version.replace(".", "_")


def load(version: str) -> ModuleType:
    """The real ``tensorrt`` package of ``version`` (the ``tensorrt_bindings`` package, imported under
    :func:`package_name`). Raises :class:`Unavailable` (skip) or any other exception (a real failure)."""
    if version in _LOADED:
        return _LOADED[version]
    if version in _FAILED:
        raise _FAILED[version]
    try:
        pkg = prepare(version) / "tensorrt_bindings"
        name = package_name(version)
        spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py",
                                                      submodule_search_locations=[str(pkg)])
        assert spec is not None and spec.loader is not None
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        # The package's __init__ tries `import tensorrt_libs` (NVIDIA's library wheel): where one is installed it
        # would load the real libnvinfer in place of the stubs. Hide it while the bindings load.
        hidden = "tensorrt_libs" not in sys.modules
        if hidden:
            sys.modules["tensorrt_libs"] = None  # type: ignore[assignment]
        try:
            spec.loader.exec_module(module)  # its `from .tensorrt import *` loads the extension and the stubs
        except BaseException:
            del sys.modules[name]
            raise
        finally:
            if hidden:
                del sys.modules["tensorrt_libs"]
        if module.__version__ != version:
            raise RuntimeError(f"the cached bindings say version {module.__version__}, expected {version}")
    except BaseException as exc:
        # A pybind11 extension can be initialised once per process: never retry under another name.
        _FAILED[version] = exc
        raise
    _LOADED[version] = module
    return module


def available(version: Optional[str]) -> Optional[ModuleType]:
    """``load(version)``, or None when it cannot be had (the dedicated tests report why)."""
    if version is None:
        return None
    try:
        return load(version)
    except Exception:  # noqa: BLE001 - tests/trt/test_bindings.py fails or skips with the cause
        return None


def load_or_skip(version: str) -> ModuleType:
    """For tests: the real module, or ``pytest.skip`` with the reason when it cannot be had here."""
    import pytest

    try:
        return load(version)
    except Unavailable as exc:
        pytest.skip(f"real TensorRT {version} bindings unavailable: {exc}")
    raise AssertionError("unreachable")
