"""V4L2 camera modes: the formats, sizes and frame rates a camera offers, as ``v4l2-ctl --list-formats-ext``
shows them (``parse_formats_ext``), read from a device (``camera_modes``), and the mode a
``--camera N?size=WxH&fps=F&format=mjpeg`` asks for (``pick_mode``: an error listing the modes the camera
has when it lacks that one).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from edge.errors import DataError

log = logging.getLogger(__name__)

# V4L2 fourcc -> the name used in ?format= (and in the GStreamer pipeline choice)
FOURCC_FORMATS = {"MJPG": "mjpeg", "JPEG": "mjpeg", "H264": "h264", "YUYV": "yuyv", "YUY2": "yuyv"}

CommandRunner = Callable[[Sequence[str]], Tuple[int, str]]


@dataclass(frozen=True)
class CameraMode:
    """One mode: V4L2 fourcc ("MJPG"), size (width, height) and frame rate (frames per second)."""

    fourcc: str
    width: int
    height: int
    fps: float

    @property
    def format(self) -> str:
        return FOURCC_FORMATS.get(self.fourcc, self.fourcc.lower())

    def describe(self) -> str:
        return f"{self.format} {self.width}x{self.height}@{self.fps:g}"


def parse_formats_ext(text: str) -> List[CameraMode]:
    """The modes in the output of ``v4l2-ctl -d DEV --list-formats-ext`` (discrete sizes and intervals)."""
    modes: List[CameraMode] = []
    fourcc, size = "", None
    for line in text.splitlines():
        m = re.match(r"\s*\[\d+\]:\s*'([^']+)'", line)
        if m:
            fourcc, size = m.group(1).strip(), None
            continue
        m = re.match(r"\s*Size:\s*\w+\s+(\d+)x(\d+)", line)
        if m:
            size = (int(m.group(1)), int(m.group(2)))
            continue
        m = re.match(r"\s*Interval:.*\(([\d.]+)\s*fps\)", line)
        if m and fourcc and size:
            modes.append(CameraMode(fourcc, size[0], size[1], round(float(m.group(1)), 3)))
    return modes


def _run(cmd: Sequence[str]) -> Tuple[int, str]:
    try:
        proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10,
                              text=True, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, str(exc)
    return proc.returncode, proc.stdout


def camera_modes(device: str, run: Optional[CommandRunner] = None) -> Optional[List[CameraMode]]:
    """The modes of ``device`` through ``v4l2-ctl`` (package v4l-utils); None where it cannot be asked."""
    if run is None:
        if shutil.which("v4l2-ctl") is None:
            return None
        run = _run
    rc, out = run(["v4l2-ctl", "-d", device, "--list-formats-ext"])
    if rc != 0:
        log.debug("v4l2-ctl -d %s --list-formats-ext: status %d: %s", device, rc, out.strip()[:200])
        return None
    return parse_formats_ext(out)


def pick_mode(device: str, modes: Sequence[CameraMode], fmt: Optional[str], size: Optional[Tuple[int, int]],
              fps: Optional[float]) -> Optional[CameraMode]:
    """The mode of ``modes`` matching what was asked (format, size, fps; None: any), the highest frame
    rate then the largest size first; DataError listing the camera's modes when none matches."""
    fmt = fmt.lower() if fmt else None
    match = [m for m in modes
             if (fmt is None or m.format == fmt or m.fourcc.lower() == fmt)
             and (size is None or (m.width, m.height) == tuple(size))
             and (fps is None or abs(m.fps - fps) < 0.5)]
    if match:
        return max(match, key=lambda m: (m.fps, m.width * m.height))
    if not modes:
        return None
    dims = (f"{size[0]}x{size[1]}" if size else "") + (f"@{fps:g}" if fps else "")
    asked = " ".join(x for x in (fmt or "", dims) if x)
    raise DataError(
        f"camera {device} has no mode {asked}; it has: {', '.join(m.describe() for m in modes)}. "
        "Pick one with ?format=F&size=WxH&fps=N (e.g. --camera 0?format=mjpeg&size=1280x720&fps=30); "
        f"`v4l2-ctl -d {device} --list-formats-ext` lists them too"
    )


__all__ = ["CameraMode", "FOURCC_FORMATS", "camera_modes", "parse_formats_ext", "pick_mode"]
