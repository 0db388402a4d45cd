"""Exception types shared by every stage.

Every error message says what was found, what was expected and how to fix it.
"""

from __future__ import annotations

import importlib
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
