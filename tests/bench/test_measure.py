"""``edge.bench.measure``: the raw parallel measurement calls the backend from as many threads as asked."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge.bench.backends import default_backend_factory
from edge.errors import EdgeError


def test_raw_parallel_runs_every_call_from_several_threads(model):
    from edge.bench.measure import measure_raw_parallel

    backend = default_backend_factory(model, None, 1)
    frame = np.full((120, 160, 3), 40, np.uint8)
    calls = []
    real = backend._infer

    def counting(batch):
        calls.append(threading.get_ident())
        return real(batch)

    backend._infer = counting
    out = measure_raw_parallel(backend, frame, 21, workers=3, warmup=1)
    assert out["fps"] > 0 and out["iterations"] == 21 and out["workers"] == 3
    assert len(calls) == 21 + 3 and len(set(calls)) == 3  # warm-up + measured, from three threads
    backend.concurrent_infer = False
    with pytest.raises(EdgeError, match="concurrent_infer"):
        measure_raw_parallel(backend, frame, 4, workers=2)
    backend.close()
