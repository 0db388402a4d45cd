"""``open_source``: the ``FrameSource`` class for a parsed ``SourceSpec`` (test, file, images, V4L2, CSI,
RTSP), constructed but not opened.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from edge.runtime.sources.base import FrameSource
from edge.runtime.sources.cameras import CsiSource, RtspSource, V4L2Source
from edge.runtime.sources.files import ImageFolderSource, VideoFileSource
from edge.runtime.sources.gst import PipelineSource
from edge.runtime.sources.synthetic import SmearSource, TestPatternSource
from edge.runtime.sources.uri import SourceSpec


def open_source(spec: SourceSpec, target_hw: Optional[Tuple[int, int]] = None, *,
                decode_threads: int = 0, decode: Optional[Any] = None) -> FrameSource:
    """The ``FrameSource`` for ``spec``, not opened yet. ``target_hw``: network input (H, W), for csi://.
    ``decode_threads``: FFmpeg decoder threads of a video file (0: FFmpeg's choice). ``decode``: a
    ``edge.runtime.plan.DecodePlan``; on its "gstreamer" path the source opens its pipeline."""
    spec.validate()
    if decode is not None and decode.path == "gstreamer" and decode.pipeline is not None:
        return PipelineSource(spec, decode.pipeline)
    if spec.kind == "test":
        return SmearSource(spec) if spec.params.get("pattern") == "smear" else TestPatternSource(spec)
    if spec.kind == "file":
        return VideoFileSource(spec, decode_threads=decode_threads)
    if spec.kind == "images":
        return ImageFolderSource(spec)
    if spec.kind == "v4l2":
        return V4L2Source(spec)
    if spec.kind == "csi":
        return CsiSource(spec, target_hw)
    return RtspSource(spec)
