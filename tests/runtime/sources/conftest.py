"""Fixtures for the GStreamer tests: what this machine's GStreamer can run, and a real RTSP server on
127.0.0.1 (``rtsp_server.py`` under the system Python, which has ``gi``), started and stopped per test.

The packages (Debian's GStreamer 1.22; ``.ci/run`` installs them where it is root):
gstreamer1.0-tools gstreamer1.0-plugins-{base,good,bad,ugly} gstreamer1.0-libav gstreamer1.0-rtsp
gir1.2-gst-rtsp-server-1.0 python3-gi, and python3-opencv (Debian's OpenCV, built with GStreamer, for the
tests that open edge's pipelines through cv2.CAP_GSTREAMER under the system Python). Where they are missing the tests skip with the reason.
"""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
# the elements the pipelines and their software equivalents need, and their packages
ELEMENTS = {"rtspsrc": "gstreamer1.0-plugins-good", "rtph264depay": "gstreamer1.0-plugins-good",
            "h264parse": "gstreamer1.0-plugins-bad", "h265parse": "gstreamer1.0-plugins-bad",
            "avdec_h264": "gstreamer1.0-libav", "avdec_h265": "gstreamer1.0-libav", "jpegdec": "gstreamer1.0-plugins-good",
            "jpegparse": "gstreamer1.0-plugins-bad", "jpegenc": "gstreamer1.0-plugins-good",
            "x264enc": "gstreamer1.0-plugins-ugly", "x265enc": "gstreamer1.0-plugins-bad",
            "qtdemux": "gstreamer1.0-plugins-good", "matroskademux": "gstreamer1.0-plugins-good",
            "mp4mux": "gstreamer1.0-plugins-good", "matroskamux": "gstreamer1.0-plugins-good",
            "videoscale": "gstreamer1.0-plugins-base", "appsink": "gstreamer1.0-plugins-base"}


@functools.lru_cache(maxsize=None)
def gstreamer_missing() -> Optional[str]:
    """Why the GStreamer tests cannot run here (None: they can)."""
    if shutil.which("gst-launch-1.0") is None or shutil.which("gst-inspect-1.0") is None:
        return "gst-launch-1.0 missing (apt-get install gstreamer1.0-tools; see tests/runtime/sources/conftest.py)"
    missing = [f"{e} ({pkg})" for e, pkg in ELEMENTS.items()
               if subprocess.run(["gst-inspect-1.0", "--exists", e], check=False).returncode != 0]
    if missing:
        return "GStreamer elements missing: " + ", ".join(missing)
    return None


@functools.lru_cache(maxsize=None)
def rtsp_server_missing() -> Optional[str]:
    why = gstreamer_missing()
    if why:
        return why
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer")
    if not Path(SYSTEM_PYTHON).exists() or subprocess.run([SYSTEM_PYTHON, "-c", probe], check=False,
                                                          capture_output=True).returncode != 0:
        return f"{SYSTEM_PYTHON} has no gi with GstRtspServer (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0)"
    return None


@pytest.fixture
def gstreamer():
    why = gstreamer_missing()
    if why:
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """GStreamer's RTSP server in a subprocess, serving a generated H.264 stream (``size``) at
    ``url``; ``stop``/``start`` take it down and bring it back on the same port."""

    def __init__(self, user: str, password: str, size: str = "320x240") -> None:
        self.port = free_port()
        self.user, self.password, self.size = user, password, size
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def url(self, password: Optional[str] = None, query: str = "") -> str:
        pw = self.password if password is None else password
        return f"rtsp://{self.user}:{pw}@127.0.0.1:{self.port}/cam" + (f"?{query}" if query else "")

    def start(self) -> "RtspServer":
        cmd: List[str] = [SYSTEM_PYTHON, str(SERVER), str(self.port), self.user, self.password, self.size]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if line != "ready":
            self.stop()
            raise RuntimeError(f"the RTSP server did not start: {line!r}")
        self.starts += 1
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
            time.sleep(0.2)


@pytest.fixture
def rtsp_server():
    why = rtsp_server_missing()
    if why:
        pytest.skip(why)
    server = RtspServer("viewer", "Rt5p-s3cret")
    try:
        yield server.start()
    finally:
        server.stop()
