"""Where the tests find the repository and the shared material (``../shared`` beside the clone, as CI lays it).

Tests that need the BCCD dataset skip with the reason where it is absent (``bccd`` fixture in conftest.py).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BCCD = SHARED / "datasets" / "bccd"
BCCD_YAML = REPO / "data" / "bccd.yaml"
