"""``edge.runtime.sources.synthetic``: the ``test://`` pattern is deterministic and fills the given buffer."""

from __future__ import annotations

import numpy as np

from edge.runtime.sources.base import CaptureStatus
from edge.runtime.sources.synthetic import TestPatternSource
from edge.runtime.sources.uri import parse_source


def test_test_pattern_is_deterministic_and_fills_the_given_buffer():
    src = TestPatternSource(parse_source("test://64x48?frames=3"))
    src.open()
    buf = np.zeros((48, 64, 3), np.uint8)
    status, frame = src.read(buf)
    assert status is CaptureStatus.FRAME and frame is buf and frame.any()
    first = frame.copy()
    assert src.read(buf)[0] is CaptureStatus.FRAME and not np.array_equal(buf, first)  # it moves
    assert src.read()[0] is CaptureStatus.FRAME
    assert src.read()[0] is CaptureStatus.END
    again = TestPatternSource(parse_source("test://64x48"))
    again.open()
    np.testing.assert_array_equal(again.read()[1], first)
