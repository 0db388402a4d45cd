"""The real ``edge-run`` as a subprocess on the tiny red-box detector (fast on any CPU), for tests that need
a whole process: its command line and environment (this checkout first on the path, no display)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence

from edge.runtime.synthetic import red_box_model
from tests.paths import REPO


def edge_run_command(tmp_path: Path, args: Sequence[str]) -> List[str]:
    """``python -m edge.cli.run red.onnx ARGS --headless --threads 1 -v`` (the model made in ``tmp_path``)."""
    model = tmp_path / "red.onnx"
    if not model.exists():
        red_box_model(model)
    return [sys.executable, "-m", "edge.cli.run", str(model), *args, "--headless", "--threads", "1", "-v"]


def edge_run_env() -> Dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env
