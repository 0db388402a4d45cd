"""Suite-wide settings.

Tiny models run fastest on one thread, and on a shared 2-core machine torch's default thread pool
oversubscribes the cores badly (measured: a 20-step overfit takes 20 s instead of 0.6 s under load).
Tests that measure throughput set their own thread counts.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):  # noqa: ARG001 - pytest hook signature
    try:
        import torch
    except ImportError:  # the runtime-only install has no torch
        return
    torch.set_num_threads(1)
