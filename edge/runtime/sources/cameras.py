"""Live sources: V4L2 cameras (USB), Jetson CSI sensors through GStreamer (``csi_pipeline``, ``fit_size``)
and network streams (RTSP and friends, through FFmpeg); also ``list_video_devices`` and
``gstreamer_available`` (whether this OpenCV can open GStreamer pipelines).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import List, Optional, Tuple

import cv2

from edge.errors import DataError, EdgeError
from edge.runtime.sources.base import VideoCaptureSource
from edge.runtime.sources.gst import fit_size
from edge.runtime.sources.uri import SourceSpec, redact_uri

log = logging.getLogger(__name__)


def gstreamer_available() -> bool:
    """True when this OpenCV build can open GStreamer pipelines (JetPack's does; pip's does not)."""
    return bool(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))


NVIDIA_DECODER_PLUGIN = "libgstnvvideo4linux2.so"  # nvv4l2decoder (JetPack's nvidia-l4t-gstreamer)
GST_PLUGIN_DIRS = ("/usr/lib/aarch64-linux-gnu/gstreamer-1.0", "/usr/lib/x86_64-linux-gnu/gstreamer-1.0")


def nvidia_decoder_available(plugin_dirs: Tuple[str, ...] = GST_PLUGIN_DIRS) -> bool:
    """True when NVIDIA's ``nvv4l2decoder`` GStreamer plugin is installed (a Jetson with JetPack)."""
    return any((Path(d) / NVIDIA_DECODER_PLUGIN).is_file() for d in plugin_dirs)


def list_video_devices() -> List[str]:
    return sorted(str(p) for p in Path("/dev").glob("video*"))


class V4L2Source(VideoCaptureSource):
    """A V4L2 camera (USB webcams) through OpenCV's V4L2 backend. Options: ``size=WxH``, ``fps=F``,
    ``format=mjpeg|h264|yuyv`` (or ``fourcc=MJPG``).

    A CSI sensor opened this way gives raw Bayer frames: use ``csi://N`` for those.
    """

    live = True

    def _open_capture(self) -> cv2.VideoCapture:
        dev = self.spec.path
        if not Path(dev).exists():
            present = list_video_devices()
            raise DataError(
                f"camera {dev} not found (tried V4L2 device {dev}). Devices present: "
                f"{', '.join(present) if present else 'none'}. List cameras with `v4l2-ctl --list-devices` "
                "(package v4l-utils) or `ls /dev/video*`; pick one with --camera N. For a CSI ribbon-cable "
                "sensor on a Jetson use --source csi://0."
            )
        cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
        fourcc = self.spec.params.get("fourcc") or {"mjpeg": "MJPG", "h264": "H264", "yuyv": "YUYV"}.get(
            self.spec.camera_format() or "")
        if fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc[:4].ljust(4)))
        size = self.spec.size()
        if size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        if "fps" in self.spec.params:
            cap.set(cv2.CAP_PROP_FPS, self.spec.number("fps", 30))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _open_failed(self) -> EdgeError:
        return DataError(
            f"camera {self.spec.path} exists but could not be opened: it may be busy (another program), "
            "not a capture node, or not readable by this user (add the user to the 'video' group). "
            "Check with `v4l2-ctl -d DEVICE --all`."
        )


def csi_pipeline(
    sensor_id: int = 0,
    capture_size: Tuple[int, int] = (1920, 1080),
    fps: float = 30.0,
    out_size: Optional[Tuple[int, int]] = None,
    flip: int = 0,
    sensor_mode: Optional[int] = None,
) -> str:
    """The GStreamer pipeline for a Jetson CSI sensor: nvarguscamerasrc -> nvvidconv (ISP scaling) -> BGR.

    ``out_size`` (width, height) is what the CPU receives; scaling and flipping happen in ``nvvidconv``.
    """
    w, h = capture_size
    ow, oh = out_size or capture_size
    mode = f" sensor-mode={int(sensor_mode)}" if sensor_mode is not None else ""
    num, den = (int(round(fps)), 1) if float(fps).is_integer() else (int(round(fps * 1000)), 1000)
    return (
        f"nvarguscamerasrc sensor-id={int(sensor_id)}{mode} ! "
        f"video/x-raw(memory:NVMM), width=(int){w}, height=(int){h}, framerate=(fraction){num}/{den}, "
        f"format=(string)NV12 ! nvvidconv flip-method={int(flip)} ! "
        f"video/x-raw, width=(int){ow}, height=(int){oh}, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


class CsiSource(VideoCaptureSource):
    """A Jetson CSI sensor through GStreamer. Options: ``size=WxH`` (sensor capture size, 1920x1080),
    ``fps=F`` (30), ``mode=M`` (sensor mode), ``flip=K`` (nvvidconv flip-method), ``out=WxH`` (what the
    CPU receives; default: fit to ``target_hw``, the network input, so the CPU never sees full frames)."""

    live = True

    def __init__(self, spec: SourceSpec, target_hw: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(spec)
        self.target_hw = target_hw
        self.pipeline = ""

    def build_pipeline(self) -> str:
        size = self.spec.size() or (1920, 1080)
        out = self.spec.size("out") or (fit_size(size, self.target_hw) if self.target_hw else size)
        mode = self.spec.params.get("mode")
        return csi_pipeline(
            self.spec.index, size, self.spec.number("fps", 30.0), out,
            int(self.spec.number("flip", 0)), int(mode) if mode not in (None, "") else None,
        )

    def _open_capture(self) -> cv2.VideoCapture:
        self.pipeline = self.build_pipeline()
        if not gstreamer_available():
            raise EdgeError(
                "csi:// needs OpenCV built with GStreamer, and this OpenCV has none (pip's opencv-python "
                "never does). On a Jetson use JetPack's OpenCV: `sudo apt install nvidia-opencv` (what deploy/setup-jetson.sh installs; Ubuntu's python3-opencv also has GStreamer), create the "
                "virtual environment with --system-site-packages, and `pip uninstall opencv-python` inside it "
                f"(see deploy/). Pipeline that would run: {self.pipeline}"
            )
        log.info("CSI pipeline: %s", self.pipeline)
        return cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)

    def _open_failed(self) -> EdgeError:
        return DataError(
            f"GStreamer could not open CSI sensor {self.spec.index}. Check the ribbon cable and sensor id, "
            "list sensors with `ls /dev/video*` and test with "
            f"`gst-launch-1.0 nvarguscamerasrc sensor-id={self.spec.index} num-buffers=30 ! fakesink`; "
            "if nvargus-daemon is wedged: `sudo systemctl restart nvargus-daemon`. "
            f"Pipeline: {self.pipeline}"
        )


class RtspSource(VideoCaptureSource):
    """A network stream through FFMPEG. ``transport=tcp`` forces RTSP over TCP (lossy Wi-Fi)."""

    live = True

    def _open_capture(self) -> cv2.VideoCapture:
        transport = self.spec.params.get("transport")
        if transport:  # an edge option, not the camera's: set it for FFMPEG and drop it from the URL
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{transport}"
        return cv2.VideoCapture(self.stream_url(), cv2.CAP_FFMPEG)

    def stream_url(self) -> str:
        """The URL FFmpeg opens, credentials included: never log it (``describe()`` is the shown form);
        edge's own options (transport, latency, codec, size, out) are dropped from it."""
        return self.spec.path_for_stream()

    def _open_failed(self) -> EdgeError:
        return DataError(
            f"cannot open stream {redact_uri(self.spec.path)}: check the URL, credentials and network (try it with "
            "`ffplay URL`); add ?transport=tcp for RTSP over lossy links"
        )
