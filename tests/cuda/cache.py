"""The user cache the real-binding checks build into: one directory per artifact, built once, concurrency-safe.

``$XDG_CACHE_HOME/edge`` (or ``~/.cache/edge``). ``cached(name, build)`` returns ``<cache>/<name>``, running
``build(work_dir)`` first when it is not there yet: concurrent test runs serialize on ``<name>.lock``, and the
build goes into a temporary directory renamed into place only when complete (a ``DONE`` file marks it), so a
half-built artifact is never seen and a failed build leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


class Unavailable(Exception):
    """Something the check needs from outside (the package index, a CUDA toolkit, a compiler) is missing here:
    the tests skip with this reason."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge"


def cached(name: str, build: Callable[[Path], None]) -> Path:
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / name
    if (final / "DONE").is_file():
        return final
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building the same artifact
        if (final / "DONE").is_file():
            return final
        work = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}-"))
        try:
            build(work)
            (work / "DONE").write_text(name + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final
