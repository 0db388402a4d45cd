"""Suite-wide settings.

Tiny models run fastest on one thread, and on a shared 2-core machine torch's default thread pool
oversubscribes the cores badly (measured: a 20-step overfit takes 20 s instead of 0.6 s under load).
Tests that measure throughput set their own thread counts.

``real_trt``: the real TensorRT Python bindings (tests/trt/bindings.py), one test per version, each marked
``trt_bindings`` and named ``[trt-<version>]``; a ``trt_bindings`` test whose id does not name the version it
ran against is a collection error.
"""

from __future__ import annotations

import os

import pytest

from tests.trt.bindings import VERSIONS as TRT_BINDINGS_VERSIONS

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):  # noqa: ARG001 - pytest hook signature
    try:
        import torch
    except ImportError:  # the runtime-only install has no torch
        return
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):  # noqa: ARG001 - pytest hook signature
    unnamed = [item.nodeid for item in items if item.get_closest_marker("trt_bindings")
               and not any(f"trt-{v}" in item.nodeid for v in TRT_BINDINGS_VERSIONS)]
    if unnamed:
        raise pytest.UsageError("trt_bindings tests must name the bindings version in their id ([trt-<version>], "
                                "e.g. through the real_trt fixture): " + ", ".join(unnamed))


@pytest.fixture(params=[pytest.param(v, id=f"trt-{v}", marks=pytest.mark.trt_bindings) for v in TRT_BINDINGS_VERSIONS])
def real_trt(request):
    """The real ``tensorrt`` module (bindings) of one version; skips with the reason where it cannot be had."""
    from tests.trt import bindings

    return bindings.load_or_skip(request.param)
