"""Exception types shared by every stage.

Every error message says what was found, what was expected and how to fix it.
"""

from __future__ import annotations

import errno
import importlib
import os
from pathlib import Path
from typing import Any


class EdgeError(Exception):
    """Base class for errors the CLI reports as a one-line message (exit code 2), not a traceback."""


class DataError(EdgeError):
    """A dataset, annotation, image or detections file is missing or malformed."""


class ModelError(EdgeError):
    """A model file (checkpoint, ONNX, engine) or its sidecar is missing, malformed or stale."""


class MissingDependencyError(EdgeError):
    """An optional dependency (torch, TensorRT, PyCUDA, onnx-graphsurgeon, ...) is not installed."""

    def __init__(self, package: str, needed_for: str, how_to_install: str):
        self.package = package
        super().__init__(
            f"{package} is required for {needed_for} but is not installed; {how_to_install}"
        )


def import_optional(module: str, package: str, needed_for: str, how_to_install: str) -> Any:
    """Import ``module`` on first use (heavy or optional dependencies), or raise MissingDependencyError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package, needed_for, how_to_install) from exc


#: errno -> (what happened, what the user does); the causes a write reports by name.
_WRITE_CAUSES = {
    errno.ENOSPC: ("no space left on the device", "free space there or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space in your quota or write to another disk"),
    errno.EISDIR: ("it is a folder", "name a file (for example FOLDER/NAME) instead of the folder"),
    errno.EACCES: ("permission denied", "write where you have permission, or fix the folder's permissions"),
    errno.EPERM: ("operation not permitted", "write where you have permission, or fix the folder's permissions"),
    errno.EROFS: ("the file system is read-only", "write to a writable disk"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.ENOENT: ("the folder does not exist", "create the folder first"),
    errno.EFBIG: ("the file is too large for this file system", "write to another file system"),
    errno.ENAMETOOLONG: ("the name is too long", "use a shorter name"),
    errno.EIO: ("input/output error", "check the disk (dmesg) or write to another one"),
}


class OutputError(EdgeError):
    """A file could not be written. Names the path and the cause (``ENOSPC``, ``EISDIR``, ``EACCES``, ...);
    whatever was half-written is not left under ``path``.

    ``what``: how the user named the file (``--output``, ``--stats-json``; default "cannot write");
    ``note``: what happened to the partial data, or how far the write got.
    """

    def __init__(self, path: Any, cause: str, reason: str, hint: str = "", *, what: str = "", note: str = "") -> None:
        self.path = str(path)
        self.cause = cause
        head = f"{what} {self.path}" if what else f"cannot write {self.path}"
        text = f"{head}: {reason} ({cause})"
        if note:
            text += f"; {note}"
        if hint:
            text += f"; {hint}"
        super().__init__(text)

    @classmethod
    def from_os_error(cls, path: Any, exc: OSError, *, what: str = "", note: str = "",
                      hint: str = "") -> "OutputError":
        """The error of a failed write: ``exc``'s errno by name, what it means and what to do (``hint``
        replaces the usual advice)."""
        code = exc.errno if isinstance(exc.errno, int) else 0
        name = errno.errorcode.get(code, type(exc).__name__)
        reason, usual = _WRITE_CAUSES.get(code, ((exc.strerror or str(exc)).lower(), ""))
        if code in _WRITE_CAUSES and exc.strerror and exc.strerror != os.strerror(code):
            reason += f": {exc.strerror}"  # more than the errno says (what was found wrong)
        if code in (errno.ENOSPC, errno.EDQUOT):
            usual = f"free space on the disk of {Path(str(path)).parent} or write to another disk"
        return cls(path, name, reason, hint or usual, what=what, note=note)


#: errnos that can only come from writing: a command that meets one reports it as an OutputError.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
