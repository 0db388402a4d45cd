"""GStreamer pipeline descriptions per source kind and target, and the decode path a source takes.

On a Jetson (``target="jetson"``) a source is decoded on the hardware and scaled before the CPU sees it:

* ``rtsp://``: ``rtspsrc`` -> ``rtph264depay``/``rtph265depay`` -> ``h264parse``/``h265parse`` ->
  ``nvv4l2decoder`` (NVDEC) -> ``nvvidconv`` (VIC scaling) -> BGRx -> ``videoconvert`` -> BGR ->
  ``appsink drop=true max-buffers=1`` (live: the latest frame only);
* a V4L2 camera in an MJPEG mode: ``v4l2src`` -> ``image/jpeg`` caps -> ``jpegparse`` ->
  ``nvv4l2decoder mjpeg=1`` (NVJPG, JetPack 5/6) -> ``nvvidconv`` -> ... -> ``appsink drop=true``;
  in an H.264 mode: ``video/x-h264`` caps -> ``h264parse`` -> ``nvv4l2decoder`` -> ...;
* an H.264/H.265 file (.mp4/.mov/.m4v, .mkv/.webm, .ts, raw .h264/.h265): ``filesrc`` -> demuxer ->
  parser -> ``nvv4l2decoder`` -> ``nvvidconv`` -> ... -> ``appsink`` without drops (``sync=false``, so
  the file is read as fast as the loop takes it).

Element names and properties follow NVIDIA's "Accelerated GStreamer" page of the Jetson Linux
Developer Guide (``nvv4l2decoder``, its ``mjpeg=1`` property, ``nvvidconv``, ``video/x-raw(memory:NVMM)``).

``software_equivalent`` is the one mapping that turns a Jetson pipeline into one that runs on any
GStreamer (the tests run every pipeline this module builds through ``gst-launch-1.0`` that way):

====================================  ==============================================================
``nvv4l2decoder mjpeg=1``             ``jpegdec``
``nvv4l2decoder`` after ``h264parse``  ``avdec_h264``   (after ``h265parse``: ``avdec_h265``)
``nvvidconv [props]``                 ``videoconvert ! videoscale``
``video/x-raw(memory:NVMM)``          ``video/x-raw``
====================================  ==============================================================

A pipeline is a list of tokens: ``description`` joins them for OpenCV's ``cv2.CAP_GSTREAMER``, and
``shell_line`` quotes each one so that ``gst-launch-1.0 <line>`` pasted into a shell runs it. Neither is
ever logged with credentials: ``redacted`` masks them (``redact_uri``).
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from edge.errors import DataError, EdgeError
from edge.runtime.sources.base import VideoCaptureSource
from edge.runtime.sources.uri import SourceSpec, redact_uri

log = logging.getLogger(__name__)

TARGETS = ("jetson", "software")
DECODE_CHOICES = ("auto", "gstreamer", "opencv")
DEFAULT_RTSP_LATENCY_MS = 200  # rtspsrc's own default (2000 ms) is a 2 s delay on a live camera
RTSP_TRANSPORTS = ("tcp", "udp")
CODECS = ("h264", "h265")
CAMERA_FORMATS = ("mjpeg", "h264", "yuyv")

_DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".m4v": "qtdemux", ".mkv": "matroskademux",
             ".webm": "matroskademux", ".ts": "tsdemux", ".m2ts": "tsdemux"}
_RAW_STREAMS = {".h264": "h264", ".264": "h264", ".h265": "h265", ".265": "h265", ".hevc": "h265"}


@dataclass
class Pipeline:
    """A GStreamer pipeline as tokens (elements with their properties, ``!``, caps)."""

    tokens: List[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        """What ``cv2.VideoCapture(description, cv2.CAP_GSTREAMER)`` opens (may hold credentials)."""
        return " ".join(self.tokens)

    def shell_line(self) -> str:
        """The description shell-quoted for ``gst-launch-1.0 <line>`` (may hold credentials)."""
        return " ".join(shlex.quote(t) for t in self.tokens)

    def redacted(self) -> str:
        """The shell line with the credentials of every URL masked: what is printed and logged."""
        return redact_uri(self.shell_line())

    def __str__(self) -> str:
        return self.redacted()

    @classmethod
    def parse(cls, description: str) -> "Pipeline":
        """Tokens of a description written as ``element prop=v ! caps, field=(type)v ! ...`` (caps are
        the segments that start with a media type such as ``video/x-raw``), e.g. ``csi_pipeline``'s."""
        tokens: List[str] = []
        for i, seg in enumerate(part.strip() for part in description.split(" ! ")):
            if i:
                tokens.append("!")
            tokens += [seg] if re.match(r"^[a-z]+/[\w.+-]+", seg) else seg.split()
        return cls(tokens)


def _gst_value(text: str) -> str:
    """A property value as gst_parse_launch reads it: double-quoted where it holds blanks or quotes."""
    if re.fullmatch(r"[A-Za-z0-9_./:@%+=,?&~*-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scale_tail(out_size: Optional[Tuple[int, int]], live: bool) -> List[str]:
    """nvvidconv (scaling on the VIC) -> BGRx in system memory -> videoconvert -> BGR -> appsink."""
    caps = "video/x-raw, format=(string)BGRx"
    if out_size:
        caps = f"video/x-raw, width=(int){int(out_size[0])}, height=(int){int(out_size[1])}, format=(string)BGRx"
    sink = ["appsink", "drop=true", "max-buffers=1", "sync=false"] if live else ["appsink", "sync=false"]
    return ["nvvidconv", "!", caps, "!", "videoconvert", "!", "video/x-raw, format=(string)BGR", "!", *sink]


def _decoder(codec: str) -> List[str]:
    if codec not in CODECS:
        raise EdgeError(f"codec {codec!r} has no hardware decode pipeline here; expected one of {CODECS}")
    return [f"{codec}parse", "!", "nvv4l2decoder", "!"]


def rtsp_pipeline(url: str, *, codec: str = "h264", out_size: Optional[Tuple[int, int]] = None,
                  latency_ms: int = DEFAULT_RTSP_LATENCY_MS, transport: Optional[str] = None) -> Pipeline:
    """An RTSP stream decoded by ``nvv4l2decoder`` and scaled by ``nvvidconv``. ``url`` is the stream's
    URL with its credentials (only the description holds them; show ``redacted()``)."""
    src = ["rtspsrc", f"location={_gst_value(url)}", f"latency={int(latency_ms)}"]
    if transport:
        if transport not in RTSP_TRANSPORTS:
            raise EdgeError(f"transport={transport!r}: expected one of {RTSP_TRANSPORTS}")
        src.append(f"protocols={transport}")
    depay = [f"rtp{codec}depay", "!"] if codec in CODECS else []
    return Pipeline([*src, "!", *depay, *_decoder(codec), *_scale_tail(out_size, live=True)])


def camera_pipeline(device: str, fmt: str, size: Tuple[int, int], fps: float,
                    out_size: Optional[Tuple[int, int]] = None) -> Pipeline:
    """A V4L2 camera in an MJPEG or H.264 mode, decoded on the hardware and scaled by ``nvvidconv``."""
    w, h = int(size[0]), int(size[1])
    num, den = (int(round(fps)), 1) if float(fps).is_integer() else (int(round(fps * 1000)), 1000)
    dims = f"width=(int){w}, height=(int){h}, framerate=(fraction){num}/{den}"
    src = ["v4l2src", f"device={_gst_value(device)}", "!"]
    if fmt == "mjpeg":
        dec = [f"image/jpeg, {dims}", "!", "jpegparse", "!", "nvv4l2decoder", "mjpeg=1", "!"]
    elif fmt == "h264":
        dec = [f"video/x-h264, {dims}", "!", *_decoder("h264")]
    else:
        raise EdgeError(f"camera format {fmt!r} has no hardware decode pipeline; expected mjpeg or h264")
    return Pipeline([*src, *dec, *_scale_tail(out_size, live=True)])


def file_pipeline(path: str, codec: str, out_size: Optional[Tuple[int, int]] = None) -> Pipeline:
    """An H.264/H.265 file read without drops: demuxer by suffix, ``nvv4l2decoder``, ``nvvidconv``."""
    suffix = Path(path).suffix.lower()
    src = ["filesrc", f"location={_gst_value(path)}", "!"]
    if suffix in _DEMUXERS:
        demux = [_DEMUXERS[suffix], "!"]
    elif suffix in _RAW_STREAMS:
        demux = []
    else:
        raise EdgeError(f"no GStreamer demuxer for {suffix or 'a file without a suffix'}; expected one of "
                        f"{', '.join(sorted(set(_DEMUXERS) | set(_RAW_STREAMS)))}")
    return Pipeline([*src, *demux, *_decoder(codec), *_scale_tail(out_size, live=False)])


def software_equivalent(pipeline: Pipeline) -> Pipeline:
    """The pipeline with the NVIDIA elements swapped for software ones (the table in the module doc)."""
    out: List[str] = []
    last_parser = ""
    tokens = pipeline.tokens
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.endswith("parse"):
            last_parser = t
        if t == "nvv4l2decoder":
            mjpeg = i + 1 < len(tokens) and tokens[i + 1] == "mjpeg=1"
            out.append("jpegdec" if mjpeg else {"h265parse": "avdec_h265"}.get(last_parser, "avdec_h264"))
            i += 2 if mjpeg else 1
            continue
        if t == "nvvidconv":
            out += ["videoconvert", "!", "videoscale"]
            i += 1
            while i < len(tokens) and tokens[i] != "!":  # nvvidconv's own properties (flip-method...)
                i += 1
            continue
        out.append(t.replace("video/x-raw(memory:NVMM)", "video/x-raw"))
        i += 1
    return Pipeline(out)


def fit_size(src_wh: Tuple[int, int], dst_hw: Tuple[int, int]) -> Tuple[int, int]:
    """The largest (width, height) with the aspect of ``src_wh`` that fits in ``dst_hw`` (even numbers)."""
    sw, sh = src_wh
    dh, dw = dst_hw
    r = min(dw / sw, dh / sh)
    return max(2, int(round(sw * r / 2)) * 2), max(2, int(round(sh * r / 2)) * 2)


def out_size_for(spec: SourceSpec, src_wh: Optional[Tuple[int, int]],
                 target_hw: Optional[Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    """What ``nvvidconv`` scales to: ``?out=WxH``, else the source size fitted into the network input
    (aspect kept), else None (no scaling: the source size is not known before the stream opens)."""
    out = spec.size("out")
    if out:
        return out
    if src_wh and target_hw:
        return fit_size(src_wh, target_hw)
    return None


def rtsp_options(spec: SourceSpec) -> Tuple[Optional[str], int, str]:
    """(transport, latency in ms, codec) of an rtsp:// spec, checked."""
    transport = spec.params.get("transport") or None
    if transport is not None and transport not in RTSP_TRANSPORTS:
        raise EdgeError(f"source option transport={transport!r} ({spec}): expected tcp or udp "
                        "(tcp for lossy links such as Wi-Fi)")
    latency = spec.number("latency", DEFAULT_RTSP_LATENCY_MS)
    if latency < 0:
        raise EdgeError(f"source option latency={latency:g} ({spec}) must be >= 0 (milliseconds of jitter buffer)")
    codec = spec.params.get("codec", "h264").lower()
    if codec not in CODECS:
        raise EdgeError(f"source option codec={codec!r} ({spec}): expected h264 or h265")
    return transport, int(latency), codec


def file_codec(path: str) -> Optional[str]:
    """"h264"/"h265" for a file OpenCV can probe (or a raw stream by suffix), else None."""
    suffix = Path(path).suffix.lower()
    if suffix in _RAW_STREAMS:
        return _RAW_STREAMS[suffix]
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        code = int(cap.get(cv2.CAP_PROP_FOURCC)) if cap.isOpened() else 0
    finally:
        cap.release()
    fourcc = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4)).lower().strip("\x00 ")
    if fourcc in ("avc1", "h264", "x264", "avc3"):
        return "h264"
    if fourcc in ("hvc1", "hev1", "h265", "hevc", "x265"):
        return "h265"
    return None


class PipelineSource(VideoCaptureSource):
    """A source opened as a GStreamer pipeline (``cv2.CAP_GSTREAMER``): an rtsp:// stream, a V4L2 camera
    in an MJPEG/H.264 mode or an H.264/H.265 file, decoded and scaled before the frame reaches the CPU.
    Live sources keep the latest frame (``appsink drop=true max-buffers=1``); files are read without drops."""

    def __init__(self, spec: SourceSpec, pipeline: Pipeline) -> None:
        super().__init__(spec)
        self.pipeline = pipeline
        self.live = spec.live

    def _open_capture(self) -> "object":
        import cv2

        log.info("GStreamer pipeline: %s", self.pipeline.redacted())
        return cv2.VideoCapture(self.pipeline.description, cv2.CAP_GSTREAMER)

    def _open_failed(self) -> EdgeError:
        return DataError(
            f"GStreamer could not open {self.describe()}. Test the pipeline with `gst-launch-1.0 "
            f"{self.pipeline.redacted()}` (with the real credentials), or read the source through OpenCV's "
            "FFmpeg/V4L2 with --decode opencv"
        )


__all__ = [
    "CAMERA_FORMATS", "CODECS", "DECODE_CHOICES", "DEFAULT_RTSP_LATENCY_MS", "Pipeline", "PipelineSource", "RTSP_TRANSPORTS",
    "TARGETS", "camera_pipeline", "file_codec", "file_pipeline", "fit_size", "out_size_for", "rtsp_options",
    "rtsp_pipeline", "software_equivalent",
]
