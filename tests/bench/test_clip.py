"""``edge.bench.clip``: the generated clip has the frames and the size asked for."""

from __future__ import annotations

import cv2

from edge.bench.clip import make_clip


def test_make_clip_writes_the_frames_asked_for(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 25, size=(96, 64), unique=5)
    cap = cv2.VideoCapture(str(clip))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 25 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 96
    cap.release()
