"""Fixtures of the ``edge bench`` tests, built once for the package: the synthetic red-box detector (a real
ONNX file) and one bench document on the bench's own generated clip."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.bench.config import BenchCase, BenchConfig
from edge.bench.runner import run_bench
from edge.runtime.synthetic import red_box_model
from tests.bench.checks import FRAMES


@pytest.fixture(scope="package")
def model(tmp_path_factory) -> Path:
    return red_box_model(tmp_path_factory.mktemp("bench") / "red.onnx", size=(96, 128))


@pytest.fixture(scope="package")
def doc(model, tmp_path_factory):
    """One bench on the bench's own generated clip (small, 30 frames, 2 interleaved rounds)."""
    config = BenchConfig(frames=FRAMES, repeats=2, threads=1, clip_size=(160, 120), clip_unique=8, warmup=2)
    return run_bench([BenchCase(model)], config, workdir=tmp_path_factory.mktemp("work"))
