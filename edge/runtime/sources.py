"""Frame sources chosen by URI, and the capture thread that feeds the pipeline.

URIs (jetson-inference style):

=================================  ===================================================================
``test://`` [``?size=WxH&frames=N&fps=F&live=1``]  synthetic moving shapes; file-like (no drops, unpaced)
                                   unless ``live=1`` (paced at ``fps``, latest frame only)
``test://smear`` [``?seed=N&...``]  a generated blood-smear slide panning under the camera
                                   (``edge.synth``): what the bundled BCCD model detects
``path/to/clip.mp4``, ``file://``  a video file, read without drops
``path/to/folder``, ``'dir/*.jpg'``  images in sorted order (folder or glob)
``v4l2:///dev/videoN``, ``--camera N``  a V4L2 camera (USB); ``?size=WxH&fps=F&fourcc=MJPG``
``csi://N``                        a CSI sensor through GStreamer ``nvarguscamerasrc`` (Jetson; needs
                                   JetPack's OpenCV): ``?size=WxH&fps=F&mode=M&flip=K&out=WxH``;
                                   scaling to ``out`` (by default the network input size, aspect kept)
                                   happens in ``nvvidconv`` on the ISP, not on the CPU
``rtsp://...``                     a network stream (``?transport=tcp``)
=================================  ===================================================================

Frames are uint8 [H, W, 3] BGR. ``read`` fills a caller-provided buffer when the size matches (no
allocation per frame); every read returns an explicit ``CaptureStatus``. ``CaptureThread`` runs a source
in its own thread: live sources keep only the latest frame (stale ones are dropped and counted), files
are read without drops (the thread blocks when the pipeline is full), and a live source that fails is
reopened with exponential backoff while the run goes on.
"""

from __future__ import annotations

import abc
import enum
import glob as globlib
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np

from edge.errors import DataError, EdgeError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SOURCE_KINDS = ("test", "file", "images", "v4l2", "csi", "rtsp")


class CaptureStatus(enum.Enum):
    FRAME = "frame"
    TIMEOUT = "timeout"
    END = "end"
    ERROR = "error"


# -- URI parsing ---------------------------------------------------------------------------------


def _parse_size(text: str, what: str) -> Tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise EdgeError(f"{what} {text!r} is not a size; expected WIDTHxHEIGHT such as 1280x720")
    return int(m.group(1)), int(m.group(2))


@dataclass
class SourceSpec:
    """A parsed source URI. ``params`` holds the query options; sizes are (width, height)."""

    kind: str
    uri: str
    path: str = ""
    index: int = 0
    params: Dict[str, str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        if self.kind == "test":
            return self.params.get("live", "0") in ("1", "true", "yes")
        return self.kind in ("v4l2", "csi", "rtsp")

    def size(self, key: str = "size") -> Optional[Tuple[int, int]]:
        return _parse_size(self.params[key], key) if key in self.params else None

    def number(self, key: str, default: float) -> float:
        try:
            return float(self.params.get(key, default))
        except ValueError as exc:
            raise EdgeError(f"source option {key}={self.params[key]!r} is not a number ({self.uri})") from exc

    def validate(self) -> "SourceSpec":
        if self.kind not in SOURCE_KINDS:
            raise EdgeError(f"unknown source kind {self.kind!r}; expected one of {SOURCE_KINDS}")
        for key in ("size", "out"):
            if key in self.params:
                w, h = self.size(key)  # type: ignore[misc]
                if w <= 0 or h <= 0:
                    raise EdgeError(f"source option {key}={self.params[key]} must be positive ({self.uri})")
        if self.number("fps", 30) <= 0:
            raise EdgeError(f"source option fps must be > 0 ({self.uri})")
        return self


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def parse_source(uri: str) -> SourceSpec:
    """Turn a ``--source`` string into a ``SourceSpec`` (no device is opened)."""
    text = str(uri).strip()
    if not text:
        raise EdgeError("empty --source; pass a file, a folder, test://, v4l2:///dev/video0, csi://0 or rtsp://")
    if re.fullmatch(r"\d+", text):
        return camera_spec(int(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "test":
        rest = (parts.netloc + parts.path).strip("/")
        if rest == "smear":
            params["pattern"] = "smear"
        elif rest:
            params.setdefault("size", rest)
        return SourceSpec("test", text, params=params).validate()
    if scheme == "v4l2":
        dev = parts.path or parts.netloc
        if re.fullmatch(r"\d+", dev.strip("/")):
            dev = f"/dev/video{dev.strip('/')}"
        m = re.search(r"(\d+)$", dev)
        return SourceSpec("v4l2", text, path=dev, index=int(m.group(1)) if m else 0, params=params).validate()
    if scheme == "csi":
        sensor = (parts.netloc + parts.path).strip("/") or "0"
        if not sensor.isdigit():
            raise EdgeError(f"csi://{sensor}: the sensor id must be a number such as csi://0")
        return SourceSpec("csi", text, index=int(sensor), params=params).validate()
    if scheme in ("rtsp", "rtsps", "rtmp", "http", "https"):
        return SourceSpec("rtsp", text, path=text, params=params).validate()
    if scheme == "file":
        text = parts.path if not parts.netloc else parts.netloc + parts.path
    elif scheme and len(scheme) > 1:
        raise EdgeError(
            f"unknown source scheme {scheme}:// in {uri!r}; expected test://, file://, v4l2://, csi:// or rtsp://"
        )
    path = text
    if _has_glob(path) or Path(path).is_dir() or Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return SourceSpec("images", uri, path=path, params=params).validate()
    return SourceSpec("file", uri, path=path, params=params).validate()


def camera_spec(index: int) -> SourceSpec:
    """``--camera N`` -> V4L2 ``/dev/videoN``."""
    if index < 0:
        raise EdgeError(f"--camera {index}: the camera index must be >= 0")
    return SourceSpec("v4l2", f"v4l2:///dev/video{index}", path=f"/dev/video{index}", index=index)


# -- sources -------------------------------------------------------------------------------------


class FrameSource(abc.ABC):
    """One stream of BGR frames. ``open`` raises with a how-to-fix message; ``read`` never raises for
    ordinary end/failure: it returns (status, frame)."""

    live = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.fps = 0.0  # nominal frame rate; 0 when unknown
        self.frame_size: Optional[Tuple[int, int]] = None  # (width, height) once known

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device/file. Raises DataError/EdgeError saying what was tried and how to fix it."""

    @abc.abstractmethod
    def read(self, out: Optional[np.ndarray] = None) -> Tuple[CaptureStatus, Optional[np.ndarray]]:
        """Next frame, written into ``out`` when its size matches (else a new array)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device/file. Idempotent."""

    def describe(self) -> str:
        return self.spec.uri

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TestPatternSource(FrameSource):
    """Synthetic frames: a gradient background with moving coloured shapes and the frame number.

    Options: ``size=WxH`` (640x480), ``frames=N`` (0: endless), ``fps=F`` (30), ``live=1`` (paced at
    ``fps``, treated like a camera). Deterministic: frame i is the same on every run.
    """

    __test__ = False  # not a pytest class

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.width, self.height = spec.size() or (640, 480)
        self.frames = int(spec.number("frames", 0))
        self.fps = spec.number("fps", 30.0)
        self.live = spec.live
        self.frame_size = (self.width, self.height)
        self._i = 0
        self._background: Optional[np.ndarray] = None
        self._next_t = 0.0

    def open(self) -> None:
        h, w = self.height, self.width
        y = np.linspace(40, 140, h, dtype=np.float32)[:, None]
        x = np.linspace(30, 90, w, dtype=np.float32)[None, :]
        bg = np.empty((h, w, 3), np.uint8)
        bg[..., 0] = (y + x).astype(np.uint8)
        bg[..., 1] = (y * 0.8 + 20).astype(np.uint8)
        bg[..., 2] = (x * 1.2 + 10).astype(np.uint8)
        self._background = bg
        self._i = 0
        self._next_t = time.perf_counter()

    def read(self, out: Optional[np.ndarray] = None) -> Tuple[CaptureStatus, Optional[np.ndarray]]:
        if self._background is None:
            return CaptureStatus.ERROR, None
        if self.frames and self._i >= self.frames:
            return CaptureStatus.END, None
        if self.live:
            now = time.perf_counter()
            if self._next_t > now:
                time.sleep(self._next_t - now)
            self._next_t = max(self._next_t + 1.0 / self.fps, time.perf_counter() - 1.0 / self.fps)
        frame = out if out is not None and out.shape == self._background.shape else np.empty_like(self._background)
        self._render(frame, self._i)
        self._i += 1
        return CaptureStatus.FRAME, frame

    def _render(self, frame: np.ndarray, i: int) -> None:
        """Fill ``frame`` with frame ``i``: the background, then the moving shapes."""
        np.copyto(frame, self._background)
        self._draw(frame, i)

    def _draw(self, frame: np.ndarray, i: int) -> None:
        h, w = frame.shape[:2]
        s = max(8, min(w, h) // 6)
        t = i / max(self.fps, 1.0)
        cx = int((w - s) * (0.5 + 0.45 * np.sin(t * 1.3))) + s // 2
        cy = int((h - s) * (0.5 + 0.45 * np.cos(t * 0.9))) + s // 2
        cv2.rectangle(frame, (cx - s // 2, cy - s // 3), (cx + s // 2, cy + s // 3), (40, 200, 240), -1)
        cx2 = int((w - s) * (0.5 + 0.45 * np.cos(t * 0.7))) + s // 2
        cv2.circle(frame, (cx2, h // 2), s // 2, (220, 60, 60), -1)
        cv2.putText(frame, f"test {i}", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, h / 800), (255, 255, 255), 1)

    def close(self) -> None:
        self._background = None


class SmearSource(TestPatternSource):
    """``test://smear``: generated blood-smear footage (``edge.synth.SmearScene``), frame i rendered into
    the caller's buffer. Options as ``test://`` plus ``seed=N`` (0). Building the slide takes ~1 s."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.seed = int(spec.number("seed", 0))
        self._scene: Any = None

    def open(self) -> None:
        from edge.synth import SmearScene

        self._scene = SmearScene(self.seed, self.width, self.height)
        # marks the source open and gives read() the frame shape; never copied for this source
        self._background = np.zeros((self.height, self.width, 3), np.uint8)
        self._i = 0
        self._next_t = time.perf_counter()

    def _render(self, frame: np.ndarray, i: int) -> None:
        self._scene.image(i, out=frame)  # the scene writes every pixel: no background copy first

    def close(self) -> None:
        self._scene = None
        super().close()


class VideoCaptureSource(FrameSource):
    """Anything ``cv2.VideoCapture`` opens: files, V4L2 devices, GStreamer pipelines, RTSP."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._cap: Optional[cv2.VideoCapture] = None

    def _open_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _open_failed(self) -> EdgeError:
        return DataError(f"cannot open {self.spec.uri}")

    def open(self) -> None:
        self.close()
        cap = self._open_capture()
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise self._open_failed()
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else self.fps
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_size = (w, h) if w > 0 and h > 0 else None

    def read(self, out: Optional[np.ndarray] = None) -> Tuple[CaptureStatus, Optional[np.ndarray]]:
        if self._cap is None:
            return CaptureStatus.ERROR, None
        try:
            ok, frame = self._cap.read(out) if out is not None else self._cap.read()
        except cv2.error:
            # a preallocated buffer of the wrong size (the stream changed size): read fresh
            ok, frame = self._cap.read()
        if not ok or frame is None:
            return (CaptureStatus.ERROR if self.live else CaptureStatus.END), None
        if frame.ndim == 2 or frame.shape[2] != 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_BGRA2BGR)
        return CaptureStatus.FRAME, frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _ffmpeg_available() -> bool:
    return bool(re.search(r"FFMPEG:\s*YES", cv2.getBuildInformation()))


def gstreamer_available() -> bool:
    """True when this OpenCV build can open GStreamer pipelines (JetPack's does; pip's does not)."""
    return bool(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))


class VideoFileSource(VideoCaptureSource):
    """A video file, read frame by frame without drops.

    decode_threads: FFmpeg decoder threads (0: FFmpeg's choice, a frame thread per core). One thread costs
    the least CPU per frame (no hand-off between decoder threads: 0.40 against 0.56 ms for a 640x480 MPEG-4
    frame on the project's CPU), which is what a CPU that is busy with inference needs; the capture thread
    already overlaps decoding with the rest of the loop. Where OpenCV cannot set it (< 4.6), FFmpeg chooses.
    """

    live = False

    def __init__(self, spec: SourceSpec, decode_threads: int = 0) -> None:
        super().__init__(spec)
        if decode_threads < 0:
            raise EdgeError(f"decode_threads must be >= 0 (0: FFmpeg's choice), found {decode_threads}")
        self.decode_threads = int(decode_threads)

    def _open_capture(self) -> cv2.VideoCapture:
        if not Path(self.spec.path).is_file():
            raise DataError(
                f"video file {self.spec.path} not found; pass an existing file, a folder of images, or "
                "test:// for a synthetic source"
            )
        api = cv2.CAP_FFMPEG if _ffmpeg_available() else cv2.CAP_ANY
        prop = getattr(cv2, "CAP_PROP_N_THREADS", None)
        if self.decode_threads and prop is not None:
            try:
                return cv2.VideoCapture(self.spec.path, api, [int(prop), self.decode_threads])
            except (TypeError, cv2.error) as exc:  # an OpenCV without open parameters
                log.debug("cannot set %d decoder thread(s) for %s: %s", self.decode_threads, self.spec.path, exc)
        return cv2.VideoCapture(self.spec.path, api)

    def _open_failed(self) -> EdgeError:
        return DataError(
            f"OpenCV cannot decode {self.spec.path} (unsupported container or codec; FFMPEG in this "
            f"OpenCV: {'yes' if _ffmpeg_available() else 'no'}); convert it, e.g. "
            "`ffmpeg -i IN -c:v libx264 out.mp4`"
        )


class ImageFolderSource(FrameSource):
    """Images from a folder (sorted by name) or a glob, one frame each, no drops."""

    live = False

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.files: List[str] = []
        self._i = 0

    def open(self) -> None:
        path = self.spec.path
        if _has_glob(path):
            files = sorted(globlib.glob(path))
        elif Path(path).is_dir():
            files = sorted(str(p) for p in Path(path).iterdir())
        else:
            files = [path] if Path(path).is_file() else []
        self.files = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        if not self.files:
            raise DataError(
                f"no images found at {path} (looked for {', '.join(IMAGE_EXTENSIONS)}); pass a folder of "
                "images, a quoted glob such as 'frames/*.jpg', or a video file"
            )
        self._i = 0
        first = cv2.imread(self.files[0], cv2.IMREAD_COLOR)
        if first is not None:
            self.frame_size = (first.shape[1], first.shape[0])
        self.fps = self.spec.number("fps", 30.0)

    def read(self, out: Optional[np.ndarray] = None) -> Tuple[CaptureStatus, Optional[np.ndarray]]:
        while self._i < len(self.files):
            name = self.files[self._i]
            self._i += 1
            img = cv2.imread(name, cv2.IMREAD_COLOR)
            if img is None:
                log.warning("skipping unreadable image %s", name)
                continue
            if out is not None and out.shape == img.shape:
                np.copyto(out, img)
                return CaptureStatus.FRAME, out
            return CaptureStatus.FRAME, img
        return CaptureStatus.END, None


def list_video_devices() -> List[str]:
    return sorted(str(p) for p in Path("/dev").glob("video*"))


class V4L2Source(VideoCaptureSource):
    """A V4L2 camera (USB webcams). Options: ``size=WxH``, ``fps=F``, ``fourcc=MJPG``.

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
        fourcc = self.spec.params.get("fourcc")
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


def fit_size(src_wh: Tuple[int, int], dst_hw: Tuple[int, int]) -> Tuple[int, int]:
    """The largest (width, height) with the aspect of ``src_wh`` that fits in ``dst_hw`` (even numbers)."""
    sw, sh = src_wh
    dh, dw = dst_hw
    r = min(dw / sw, dh / sh)
    return max(2, int(round(sw * r / 2)) * 2), max(2, int(round(sh * r / 2)) * 2)


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
        parts = urlsplit(self.spec.path)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "transport"]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _open_failed(self) -> EdgeError:
        return DataError(
            f"cannot open stream {self.spec.path}: check the URL, credentials and network (try it with "
            "`ffplay URL`); add ?transport=tcp for RTSP over lossy links"
        )


def open_source(spec: SourceSpec, target_hw: Optional[Tuple[int, int]] = None, *,
                decode_threads: int = 0) -> FrameSource:
    """The ``FrameSource`` for ``spec``, not opened yet. ``target_hw``: network input (H, W), for csi://.
    ``decode_threads``: FFmpeg decoder threads of a video file (0: FFmpeg's choice)."""
    spec.validate()
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


# -- capture thread ------------------------------------------------------------------------------


@dataclass
class CapturedFrame:
    """One capture result. ``frame`` is a pool buffer (give it back with ``FramePool.release``)."""

    status: CaptureStatus
    frame: Optional[np.ndarray] = None
    index: int = -1
    timestamp: float = 0.0
    error: str = ""


class FramePool:
    """A fixed number of frame buffers shared by the capture thread and the pipeline.

    ``acquire`` blocks while every buffer is in flight (that is how a file source waits for a full
    pipeline); buffers are allocated on first use at the source's frame size and reused afterwards.
    """

    def __init__(self, count: int) -> None:
        if count < 2:
            raise ValueError("a frame pool needs at least 2 buffers")
        self.count = count
        self._free: "queue.Queue[Optional[np.ndarray]]" = queue.Queue()
        for _ in range(count):
            self._free.put(None)

    def acquire(self, timeout: Optional[float] = None) -> Tuple[bool, Optional[np.ndarray]]:
        """(True, buffer-or-None-if-not-yet-allocated), or (False, None) on timeout."""
        try:
            return True, self._free.get(timeout=timeout)
        except queue.Empty:
            return False, None

    def release(self, buf: Optional[np.ndarray]) -> None:
        self._free.put(buf)

    @property
    def available(self) -> int:
        return self._free.qsize()


@dataclass
class ReopenPolicy:
    """Backoff for live sources that fail: first wait ``initial_s``, doubling up to ``max_s``.
    ``max_attempts`` 0 retries forever (a camera unplugged for a minute comes back)."""

    initial_s: float = 0.5
    max_s: float = 8.0
    max_attempts: int = 0

    def validate(self) -> "ReopenPolicy":
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.max_attempts < 0:
            raise ValueError(f"bad reopen policy {self}")
        return self


class CaptureThread:
    """Reads a source in its own thread and hands frames to one consumer through ``get``.

    Live sources: a one-frame slot; a new frame replaces an untaken one (counted in ``dropped``).
    File-like sources: a bounded queue; the thread blocks when the consumer is behind (no drops).
    ``stats`` (a ``RunStats``) gets captured/dropped/error/reopen counts and capture latency.
    ``nice``: added to the capture thread's nice value (``edge.runtime.priority``; the pipeline passes
    its ``host_nice``).
    """

    def __init__(
        self,
        source: FrameSource,
        pool: FramePool,
        stats: Optional[object] = None,
        *,
        queue_size: int = 2,
        reopen: Optional[ReopenPolicy] = None,
        max_frames: int = 0,
        nice: int = 0,
    ) -> None:
        self.source = source
        self.pool = pool
        self.stats = stats
        self.live = bool(source.live)
        self.reopen = (reopen or ReopenPolicy()).validate()
        self.max_frames = int(max_frames)
        self.nice = int(nice)
        self._stop = threading.Event()
        self._queue: "queue.Queue[CapturedFrame]" = queue.Queue(maxsize=max(1, queue_size))
        self._cond = threading.Condition()
        self._slot: Optional[CapturedFrame] = None
        self._final: Optional[CapturedFrame] = None
        self._thread = threading.Thread(target=self._run, name="edge-capture", daemon=True)
        self.captured = 0
        self.dropped = 0
        self.errors = 0
        self.reopens = 0

    def start(self) -> "CaptureThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- consumer side ---------------------------------------------------------------------------
    def get(self, timeout: float = 1.0) -> CapturedFrame:
        """The next frame (FRAME), or TIMEOUT, END (source finished or stopped) or ERROR (gave up)."""
        if self.live:
            deadline = time.perf_counter() + timeout
            with self._cond:
                while self._slot is None:
                    if self._final is not None:
                        return self._final
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        return CapturedFrame(CaptureStatus.TIMEOUT)
                    self._cond.wait(left)
                item, self._slot = self._slot, None
                return item
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if self._final is not None:
                return self._final
            return CapturedFrame(CaptureStatus.TIMEOUT)

    # -- producer side ---------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        counters = getattr(self.stats, "counters", None)
        if counters is not None:
            setattr(counters, name, getattr(counters, name) + n)

    def _finish(self, item: CapturedFrame) -> None:
        if self.live:
            with self._cond:
                stale = self._slot if self._stop.is_set() else None
                if stale is not None:  # stopped: a frame nobody took is not delivered after END
                    self._slot = None
                    self.pool.release(stale.frame)
                self._final = item
                self._cond.notify_all()
        else:
            self._final = item
            while not self._put(item):
                if self._stop.is_set():
                    break

    def _put(self, item: CapturedFrame) -> bool:
        try:
            self._queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            return False

    def _publish(self, item: CapturedFrame) -> None:
        if self.live:
            with self._cond:
                old, self._slot = self._slot, item
                self._cond.notify()
            if old is not None:
                self.pool.release(old.frame)
                self.dropped += 1
                self._count("dropped")
            return
        while not self._put(item):
            if self._stop.is_set():
                self.pool.release(item.frame)
                return

    def _reopen(self) -> bool:
        """Reopen a failed live source with backoff; False when stopped or out of attempts."""
        delay = self.reopen.initial_s
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            if self.reopen.max_attempts and attempt > self.reopen.max_attempts:
                return False
            log.warning("%s failed; reopening in %.1f s (attempt %d)", self.source.describe(), delay, attempt)
            if self._stop.wait(delay):
                return False
            try:
                self.source.close()
                self.source.open()
                self.reopens += 1
                self._count("reopens")
                log.info("%s reopened", self.source.describe())
                return True
            except EdgeError as exc:
                log.warning("reopen failed: %s", exc)
            delay = min(delay * 2, self.reopen.max_s)
        return False

    def _run(self) -> None:
        from edge.runtime.priority import lower_thread_priority

        lower_thread_priority(self.nice)
        tracker = None
        stages = getattr(self.stats, "stages", None)
        if stages is not None:
            tracker = stages.get("capture")
        try:
            while not self._stop.is_set():
                if self.max_frames and self.captured >= self.max_frames:
                    self._finish(CapturedFrame(CaptureStatus.END, index=self.captured))
                    return
                ok, buf = self.pool.acquire(timeout=0.1)
                if not ok:
                    continue
                t0 = time.perf_counter()
                try:
                    status, frame = self.source.read(buf)
                except Exception as exc:  # noqa: BLE001 - a driver error must not kill the run silently
                    status, frame = CaptureStatus.ERROR, None
                    log.warning("capture error from %s: %s", self.source.describe(), exc)
                t1 = time.perf_counter()
                if status is CaptureStatus.FRAME and frame is not None:
                    if tracker is not None:
                        tracker.add(t1 - t0)
                    self._count("captured")
                    item = CapturedFrame(CaptureStatus.FRAME, frame, self.captured, t1)
                    self.captured += 1
                    self._publish(item)
                    continue
                self.pool.release(buf)
                if status is CaptureStatus.END:
                    self._finish(CapturedFrame(CaptureStatus.END, index=self.captured))
                    return
                # ERROR (or a TIMEOUT reported by the source)
                self.errors += 1
                self._count("capture_errors")
                if not self.live:
                    self._finish(CapturedFrame(CaptureStatus.ERROR, index=self.captured,
                                               error=f"read failed on {self.source.describe()}"))
                    return
                if not self._reopen():
                    if not self._stop.is_set():
                        self._finish(CapturedFrame(
                            CaptureStatus.ERROR, index=self.captured,
                            error=f"{self.source.describe()} failed and could not be reopened"))
                        return
            self._finish(CapturedFrame(CaptureStatus.END, index=self.captured))
        finally:
            self.source.close()
