"""Frame sources chosen by URI, and the capture thread that feeds the pipeline.

URIs (jetson-inference style):

=================================  ===================================================================
``test://`` [``?size=WxH&frames=N&fps=F&live=1``]  synthetic moving shapes; file-like (no drops, unpaced)
                                   unless ``live=1`` (paced at ``fps``, latest frame only)
``test://smear`` [``?seed=N&...``]  a generated blood-smear slide panning under the camera
                                   (``edge.synth``): what the bundled BCCD model detects
``path/to/clip.mp4``, ``file://``  a video file, read without drops
``path/to/folder``, ``'dir/*.jpg'``  images in sorted order (folder or glob)
``v4l2:///dev/videoN``, ``--camera N``  a V4L2 camera (USB); ``?size=WxH&fps=F&format=mjpeg|h264|yuyv``
                                   (or ``fourcc=MJPG``): a mode the camera lacks is refused with the list
                                   of its modes (``camera_modes``, from ``v4l2-ctl --list-formats-ext``)
``csi://N``                        a CSI sensor through GStreamer ``nvarguscamerasrc`` (Jetson; needs
                                   JetPack's OpenCV): ``?size=WxH&fps=F&mode=M&flip=K&out=WxH``;
                                   scaling to ``out`` (by default the network input size, aspect kept)
                                   happens in ``nvvidconv`` on the ISP, not on the CPU
``rtsp://...``                     a network stream: ``?transport=tcp|udp&latency=MS&codec=h264|h265``,
                                   ``size=WxH`` (the camera's own resolution), ``out=WxH``; edge's
                                   options, dropped from the URL the camera gets
=================================  ===================================================================

Decode path (``edge.runtime.plan.plan_decode``, ``--decode {auto,gstreamer,opencv}``): where this OpenCV
has GStreamer and NVIDIA's decoder is installed (a Jetson), ``rtsp://``, a V4L2 camera in an MJPEG or
H.264 mode and H.264/H.265 files open as GStreamer pipelines (``gst``: ``nvv4l2decoder`` on the hardware,
``nvvidconv`` scaling to the network input before the CPU); elsewhere through OpenCV's FFmpeg or V4L2.

Frames are uint8 [H, W, 3] BGR. ``read`` fills a caller-provided buffer when the size matches (no
allocation per frame); every read returns an explicit ``CaptureStatus``. ``CaptureThread`` runs a source
in its own thread: live sources keep only the latest frame (stale ones are dropped and counted), files
are read without drops (the thread blocks when the pipeline is full), and a live source that fails is
reopened with exponential backoff while the run goes on.

Modules (everything below is importable from ``edge.runtime.sources`` too):

    uri         ``parse_source``, ``camera_spec``, ``SourceSpec`` (no device is opened)
    base        ``FrameSource``, ``CaptureStatus``, ``VideoCaptureSource`` (the ``cv2.VideoCapture`` base)
    synthetic   ``test://`` and ``test://smear``
    files       video files and image folders
    cameras     V4L2, CSI (``csi_pipeline``, ``fit_size``), RTSP; device listing, GStreamer availability
    gst         GStreamer pipelines per source kind and target, their software equivalents, ``PipelineSource``
    camera_modes  a V4L2 camera's modes (``v4l2-ctl --list-formats-ext``) and the one asked for
    factory     ``open_source``: the source for a spec, not opened yet
    capture     ``CaptureThread``, ``FramePool``, ``CapturedFrame``, ``ReopenPolicy``
"""

from __future__ import annotations

from edge.runtime.sources.base import CaptureStatus, FrameSource, VideoCaptureSource
from edge.runtime.sources.cameras import (
    CsiSource,
    RtspSource,
    V4L2Source,
    csi_pipeline,
    fit_size,
    gstreamer_available,
    list_video_devices,
)
from edge.runtime.sources.capture import CapturedFrame, CaptureThread, FramePool, ReopenPolicy
from edge.runtime.sources.factory import open_source
from edge.runtime.sources.files import ImageFolderSource, VideoFileSource
from edge.runtime.sources.synthetic import SmearSource, TestPatternSource
from edge.runtime.sources.uri import IMAGE_EXTENSIONS, SOURCE_KINDS, SourceSpec, camera_spec, parse_source

__all__ = [
    "IMAGE_EXTENSIONS",
    "SOURCE_KINDS",
    "CaptureStatus",
    "CaptureThread",
    "CapturedFrame",
    "CsiSource",
    "FramePool",
    "FrameSource",
    "ImageFolderSource",
    "ReopenPolicy",
    "RtspSource",
    "SmearSource",
    "SourceSpec",
    "TestPatternSource",
    "V4L2Source",
    "VideoCaptureSource",
    "VideoFileSource",
    "camera_spec",
    "csi_pipeline",
    "fit_size",
    "gstreamer_available",
    "list_video_devices",
    "open_source",
    "parse_source",
]
