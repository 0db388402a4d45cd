"""Real small and full disks for the write-failure tests: a tmpfs of a given size, mounted for one test.

``mount -t tmpfs`` needs root (CI runs the suite as root in its container); elsewhere the tests that need
one skip with the reason. The mount is undone in a ``finally`` whatever the test does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m", *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (created), unmounted afterwards; skip where mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs for a full-disk test: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a full-disk test (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill ``folder``'s disk with a file until it is full, then free ``leave`` bytes again (tmpfs counts in
    4 KiB pages); returns the filler file."""
    filler = folder / "filler.bin"
    block = b"\0" * (64 * 1024)
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        for small in (4096, 512, 1):  # the last partial block
            with contextlib.suppress(OSError):
                while fh.write(b"\0" * small):
                    pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler
