"""What travels through the pipeline's stages: ``FramePacket``, and ``postprocess`` (detections of the
network input -> frame pixels), shared by the threaded ``edge.runtime.pipeline.Pipeline`` and its
sequential baseline ``naive_loop``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from edge.letterbox import LetterboxParams
from edge.runtime.backend import DetectionBatch

_EMPTY_BOXES = np.zeros((0, 4), np.float32)
_EMPTY_F = np.zeros((0,), np.float32)
_EMPTY_I = np.zeros((0,), np.int32)


@dataclass
class FramePacket:
    """One frame on its way through the stages.

    frame: uint8 [H, W, 3] BGR (a pool buffer; annotated in place by the draw stage).
    seq: 0, 1, 2... in the order preprocess took the frames (``index`` is the source's own frame number,
    which skips the frames a live source dropped); the postprocess stage restores this order.
    params: how the frame maps into the network input. input: the network input tensor (a pool buffer,
    given back right after inference). boxes [n, 4] xyxy frame pixels, scores [n], classes [n]: after
    postprocess. peak: the highest score the frame reached (``DetectionBatch.peak``: before NMS where the
    graph reports it), set by postprocess before ``--conf`` filters; None when unknown.
    """

    index: int
    frame: np.ndarray
    capture_ts: float
    seq: int = 0
    params: Optional[LetterboxParams] = None
    input: Optional[np.ndarray] = None
    detections: Optional[DetectionBatch] = None
    boxes: np.ndarray = field(default_factory=lambda: _EMPTY_BOXES)
    scores: np.ndarray = field(default_factory=lambda: _EMPTY_F)
    classes: np.ndarray = field(default_factory=lambda: _EMPTY_I)
    peak: Optional[float] = None


def postprocess(packet: FramePacket, conf_threshold: float = 0.0) -> int:
    """Detections of image 0 -> packet.boxes/scores/classes in frame pixels. Returns the count."""
    det = packet.detections
    assert det is not None and packet.params is not None
    boxes, scores, classes = det.image(0)
    packet.peak = det.peak(0)
    if conf_threshold > 0 and scores.size:
        keep = scores >= conf_threshold
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    packet.boxes = packet.params.to_source(boxes) if boxes.size else _EMPTY_BOXES
    packet.scores = scores
    packet.classes = classes
    packet.detections = None
    return int(scores.shape[0])
