"""Where annotated frames and detections go: a window, a video file, JSON lines, an MJPEG web page.

Every sink gets ``write(packet)`` from the pipeline's sink thread (one thread: a window and a video
writer must stay on the thread that opened them) and ``close()`` exactly once, also on Ctrl-C/SIGTERM.
A packet (``edge.runtime.pipeline.FramePacket``) carries the annotated frame (uint8 [H, W, 3] BGR), its
index and capture time, and the detections in frame pixels (boxes [n, 4] xyxy, scores [n], classes [n]).

* ``DisplaySink`` opens a window only when a display exists: OpenCV's ``imshow`` without one aborts the
  whole process (SIGABRT, uncatchable), so ``display_available`` checks DISPLAY/WAYLAND_DISPLAY first.
* ``VideoFileSink`` writes to a hidden temporary name beside the target and renames it on close, so an
  interrupted run never leaves a half-written file under the real name.
* ``JsonLinesSink`` writes one JSON object per frame (``--detections-out``), under a hidden temporary
  name too.
* A sink that cannot write (a full disk, a folder under its name, no permission) raises
  ``edge.errors.OutputError`` naming its path and the cause, after removing its partial file: the
  pipeline then stops feeding it, records the failure in the stats and the run exits non-zero, while the
  other sinks go on. OpenCV's ``VideoWriter.write`` reports nothing, so the video sink watches the free
  space of its disk after every frame and checks the finished file before renaming it.
* ``MjpegServer`` serves ``/`` (a small live page), ``/stream.mjpg``, ``/frame.jpg`` and ``/stats.json``
  on loopback unless another host is asked for. JPEG encoding happens in its own thread, only while
  someone is watching, at most ``max_fps`` times a second: never on the pipeline's hot path.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import json
import logging
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge.artifacts import LOW_SPACE_BYTES, check_output_path, free_bytes
from edge.errors import EdgeError, OutputError

log = logging.getLogger(__name__)


class Sink(abc.ABC):
    """One output of the pipeline."""

    name = "sink"

    @abc.abstractmethod
    def write(self, packet: Any) -> None:
        """Consume one annotated frame. Must not keep a reference to ``packet.frame`` after returning."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release. Called once, also on interruption."""

    @property
    def wants_stop(self) -> bool:
        """True when the user asked to quit through this sink (a key in the window)."""
        return False


# -- display -------------------------------------------------------------------------------------


def display_available(environ: Optional[Dict[str, str]] = None) -> Tuple[bool, str]:
    """(True, '') when a window can be opened; else (False, why). Never touches cv2.imshow."""
    env = os.environ if environ is None else environ
    if sys.platform.startswith(("win", "darwin")):
        return True, ""
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return True, ""
    return False, (
        "no display (neither DISPLAY nor WAYLAND_DISPLAY is set), so no window is opened. "
        "Use --output FILE to write an annotated video, --serve :8080 to watch in a browser, or "
        "--headless to silence this message"
    )


def _gui_available() -> bool:
    info = cv2.getBuildInformation()
    m = re.search(r"GUI:\s*(\S+)", info)
    return bool(m) and m.group(1).upper() not in ("NONE", "NO")


class DisplaySink(Sink):
    """An OpenCV window; 'q' or Esc stops the run. Construct only after ``display_available()``."""

    name = "display"

    def __init__(self, title: str = "edge-run") -> None:
        ok, why = display_available()
        if not ok:
            raise EdgeError(why)
        if not _gui_available():
            raise EdgeError(
                "this OpenCV has no GUI backend (opencv-python-headless?); install opencv-python, or use "
                "--output/--serve instead of a window"
            )
        self.title = title
        self._stop = False
        self._opened = False

    def write(self, packet: Any) -> None:
        if not self._opened:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
            self._opened = True
        cv2.imshow(self.title, packet.frame)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self._stop = True

    @property
    def wants_stop(self) -> bool:
        return self._stop

    def close(self) -> None:
        if self._opened:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            self._opened = False


# -- video file ----------------------------------------------------------------------------------

_FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


def partial_path(path: Union[str, Path]) -> Path:
    """The hidden temporary name a video is written under: ``dir/.NAME.partial.EXT`` (same suffix,
    so OpenCV picks the same container)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.partial{p.suffix}")


# containers whose muxer takes an MJPEG stream under its own tag (mp4's does not: it would mislabel it)
_RAW_MJPEG_SUFFIXES = (".avi", ".mkv", ".mov")


def raw_mjpeg_supported() -> bool:
    """True when this OpenCV can mux already-encoded frames (``VIDEOWRITER_PROP_RAW_VIDEO``, OpenCV >= 4.7
    with FFMPEG)."""
    return hasattr(cv2, "VIDEOWRITER_PROP_RAW_VIDEO") and bool(re.search(r"FFMPEG:\s*YES", cv2.getBuildInformation()))


class VideoFileSink(Sink):
    """Annotated frames to a video file, finalized by rename on close.

    fourcc: defaults by suffix (.mp4 -> mp4v, .avi -> MJPG); fps: the source's nominal rate.
    The writer opens at the first frame (its size decides the video size); frames of another size are
    resized to it.

    MJPEG (.avi) is the cheapest to write: each frame is JPEG-encoded by ``cv2.imencode`` (libjpeg-turbo,
    ~0.6 ms for 640x480 on the project's CPU) and FFmpeg only muxes it (``VIDEOWRITER_PROP_RAW_VIDEO``),
    instead of FFmpeg's own MJPEG encoder (~1.6 ms) or MPEG-4 part 2 for .mp4 (~1.4 ms). Same file
    format; ``encoder`` says which path was taken (OpenCV builds without raw muxing fall back to FFmpeg's
    encoder). ``jpeg_quality``: 0-100.
    """

    name = "video"

    def __init__(self, path: Union[str, Path], fps: float = 30.0, fourcc: Optional[str] = None,
                 jpeg_quality: int = 90) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC_BY_SUFFIX and not fourcc:
            raise EdgeError(
                f"--output {self.path}: unknown video type {suffix or '(none)'}; use one of "
                f"{', '.join(sorted(_FOURCC_BY_SUFFIX))}"
            )
        check_output_path(self.path, "--output")
        self.fourcc = fourcc or _FOURCC_BY_SUFFIX[suffix]
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.tmp_path = partial_path(self.path)
        if not 0 <= int(jpeg_quality) <= 100:
            raise EdgeError(f"jpeg_quality must be in [0, 100], found {jpeg_quality}")
        self._jpeg_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        self.encoder = ""
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: Optional[Tuple[int, int]] = None
        self._resized: Optional[np.ndarray] = None
        self.frames = 0
        self.closed = False

    def _open(self, w: int, h: int) -> None:
        code = cv2.VideoWriter_fourcc(*self.fourcc)
        if self.fourcc == "MJPG" and self.path.suffix.lower() in _RAW_MJPEG_SUFFIXES and raw_mjpeg_supported():
            writer = cv2.VideoWriter(str(self.tmp_path), cv2.CAP_FFMPEG, code, self.fps, (w, h),
                                     [int(cv2.VIDEOWRITER_PROP_RAW_VIDEO), 1])
            if writer.isOpened():
                self._writer, self._size, self.encoder = writer, (w, h), "imencode+mux"
                return
            writer.release()
            log.debug("raw MJPEG muxing refused for %s; using FFmpeg's encoder", self.tmp_path)
        writer = cv2.VideoWriter(str(self.tmp_path), code, self.fps, (w, h))
        if not writer.isOpened():
            self._check_folder()  # a full disk or a read-only folder, rather than the codec
            raise EdgeError(
                f"OpenCV cannot write {self.path.suffix} video with codec {self.fourcc} to {self.tmp_path}; "
                "try --output out.avi (MJPG) or check that this OpenCV has FFMPEG"
            )
        self._writer = writer
        self._size = (w, h)
        self.encoder = "opencv"

    def write(self, packet: Any) -> None:
        frame = packet.frame
        h, w = frame.shape[:2]
        if self._writer is None:
            self._open(w, h)
        if (w, h) != self._size:
            sw, sh = self._size  # type: ignore[misc]
            if self._resized is None or self._resized.shape[:2] != (sh, sw):
                self._resized = np.empty((sh, sw, 3), np.uint8)
            cv2.resize(frame, (sw, sh), dst=self._resized)
            frame = self._resized
        if self.encoder == "imencode+mux":
            ok, buf = cv2.imencode(".jpg", frame, self._jpeg_params)
            if not ok:
                raise EdgeError(f"JPEG encoding of frame {self.frames} for {self.path} failed")
            self._writer.write(buf.reshape(1, -1))  # type: ignore[union-attr]
        else:
            self._writer.write(frame)  # type: ignore[union-attr]
        self.frames += 1
        self._check_folder()

    def _check_folder(self) -> None:
        """``VideoWriter.write`` returns nothing and FFmpeg drops what it cannot write: a disk with less
        than ``LOW_SPACE_BYTES`` free means the writer's next flush fails (or just failed)."""
        try:
            free = free_bytes(self.tmp_path.parent)
        except OSError as exc:  # the folder itself went away
            self._fail(exc)
        if free < LOW_SPACE_BYTES:
            self._fail(OSError(errno.ENOSPC, "No space left on device"))

    def _fail(self, exc: OSError, *, keep: bool = False) -> None:
        """Stop writing: release the writer, remove the partial file (a broken video; its space may be
        what the stats need) unless ``keep``, and raise the OutputError that says so."""
        self.closed = True
        if self._writer is not None:
            with contextlib.suppress(cv2.error):
                self._writer.release()
            self._writer = None
        if keep and self.tmp_path.exists():
            note = f"after {self.frames} frames; the finished video is kept as {self.tmp_path}"
        else:
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()
            note = f"after {self.frames} frames; the partial video was removed"
        raise OutputError.from_os_error(self.path, exc, what="--output", note=note)

    def _verify(self) -> Optional[str]:
        """Why the finished temporary file is not a complete video (None when it is): OpenCV must open
        it and count the frames written (a file cut short by a full disk has no index, or a wrong one)."""
        if not self.tmp_path.exists():
            return f"{self.tmp_path} is gone"
        cap = cv2.VideoCapture(str(self.tmp_path))
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) if cap.isOpened() else None
        cap.release()
        if count is None or not abs(count - self.frames) <= 1:
            return "OpenCV cannot read the finished file" if count is None else \
                f"the finished file holds {count:.0f} frames, not {self.frames}"
        return None

    def close(self) -> None:
        """Finish the file and rename it to its final name. A file the disk cut short is removed and a
        rename that fails keeps the finished file under its temporary name: OutputError either way."""
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if not self.frames:
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()
            log.warning("no frames were written; %s not created", self.path)
            return
        broken = self._verify()
        if broken is not None:  # cut short by a full disk (removed), or else unreadable (kept, to look at)
            full = self.tmp_path.parent.is_dir() and free_bytes(self.tmp_path.parent) < LOW_SPACE_BYTES
            self._fail(OSError(errno.ENOSPC, "No space left on device") if full else OSError(errno.EIO, broken),
                       keep=not full)
        try:
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            self._fail(exc, keep=True)
        log.info("wrote %s (%d frames)", self.path, self.frames)


# -- JSON lines ----------------------------------------------------------------------------------


class JsonLinesSink(Sink):
    """One line per frame::

        {"frame": 0, "time": 0.0123, "width": 640, "height": 480,
         "detections": [{"box": [x1, y1, x2, y2], "score": 0.91, "class_id": 2, "label": "Platelets"}]}

    Boxes are xyxy in source-frame pixels (rounded to 0.01 px); ``time`` is seconds since the run's
    first capture.
    """

    name = "jsonl"

    def __init__(self, path: Union[str, Path], class_names: Sequence[str] = ()) -> None:
        self.path = check_output_path(path, "--detections-out")
        self.class_names = list(class_names)
        self.tmp_path = partial_path(self.path)
        try:
            self._fh = open(self.tmp_path, "w", encoding="utf-8", buffering=1 << 16)
        except OSError as exc:
            raise OutputError.from_os_error(self.path, exc, what="--detections-out") from None
        self._t0: Optional[float] = None
        self.lines = 0

    def write(self, packet: Any) -> None:
        if self._t0 is None:
            self._t0 = packet.capture_ts
        names = self.class_names
        dets = [
            {
                "box": [round(v, 2) for v in box],
                "score": round(score, 4),
                "class_id": cls,
                "label": names[cls] if 0 <= cls < len(names) else str(cls),
            }
            for box, score, cls in zip(packet.boxes.tolist(), packet.scores.tolist(), packet.classes.tolist())
        ]
        h, w = packet.frame.shape[:2]
        record = {"frame": packet.index, "time": round(packet.capture_ts - self._t0, 4), "width": w,
                  "height": h, "detections": dets}
        if self._fh.closed:
            return
        try:
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:
            self._fail(exc)
        self.lines += 1

    def _fail(self, exc: OSError) -> None:
        """Stop writing, remove the partial file (its space may be what the stats need), raise OutputError."""
        with contextlib.suppress(OSError):
            self._fh.close()  # flushing again fails too; the file is closed all the same
        with contextlib.suppress(OSError):
            self.tmp_path.unlink()
        raise OutputError.from_os_error(self.path, exc, what="--detections-out",
                                        note=f"after {self.lines} lines; the partial file was removed")

    def close(self) -> None:
        """Flush, fsync and rename the file to its final name (OutputError when that fails)."""
        if self._fh.closed:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError as exc:
            self._fail(exc)
        try:
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            raise OutputError.from_os_error(self.path, exc, what="--detections-out",
                                            note=f"the finished file is kept as {self.tmp_path}") from None


# -- MJPEG over HTTP -----------------------------------------------------------------------------


def parse_serve(text: str) -> Tuple[str, int]:
    """'[HOST]:PORT' -> (host, port); host defaults to 127.0.0.1 (loopback). Port 0: any free port."""
    m = re.fullmatch(r"\s*(?:\[?([^\[\]]*?)\]?)?:(\d+)\s*", str(text))
    if not m:
        if re.fullmatch(r"\s*\d+\s*", str(text)):
            return "127.0.0.1", int(text)
        raise EdgeError(f"--serve {text!r}: expected [HOST]:PORT such as :8080 or 0.0.0.0:8080")
    host, port = (m.group(1) or "127.0.0.1"), int(m.group(2))
    if not 0 <= port <= 65535:
        raise EdgeError(f"--serve port {port} is outside 0..65535")
    return host, port


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge-run</title>
<style>body{background:#111;color:#ddd;font:14px sans-serif;margin:1em}img{max-width:100%;border:1px solid #333}
#s{margin:.5em 0}table{border-collapse:collapse}td{padding:0 .6em}</style></head>
<body><h3>edge-run &mdash; TITLE</h3><img src="stream.mjpg" alt="live stream"><div id="s">waiting...</div>
<table id="d"></table>
<script>
async function poll(){try{const r=await fetch('stats.json',{cache:'no-store'});const s=await r.json();
document.getElementById('s').textContent=`${s.fps.toFixed(1)} FPS | frame ${s.frame} | ${s.detections.length} detections`;
document.getElementById('d').innerHTML=s.detections.slice(0,20).map(d=>`<tr><td>${d.label}</td><td>${d.score.toFixed(2)}</td><td>${d.box.map(v=>v.toFixed(0)).join(', ')}</td></tr>`).join('');}
catch(e){document.getElementById('s').textContent='disconnected';}setTimeout(poll,500);}poll();
</script></body></html>
"""


class MjpegServer(Sink):
    """Live annotated frames as MJPEG over HTTP, plus a page and JSON stats.

    ``host`` defaults to loopback; binding another interface is logged as a warning (no auth here).
    ``port`` 0 picks a free port (see ``address`` after construction).
    """

    name = "mjpeg"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        class_names: Sequence[str] = (),
        quality: int = 80,
        max_fps: float = 15.0,
        title: str = "",
        fps_fn: Optional[Callable[[], float]] = None,
        nice: int = 10,
    ) -> None:
        self.class_names = list(class_names)
        self.nice = int(nice)  # the JPEG encoder thread yields to inference (edge.runtime.priority)
        self.quality = int(quality)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.fps_fn = fps_fn or (lambda: 0.0)
        self._cond = threading.Condition()
        self._latest: Optional[np.ndarray] = None  # preallocated copy of the newest frame
        self._latest_seq = 0
        self._jpeg: bytes = b""
        self._jpeg_seq = 0
        self._frame_index = -1
        self._detections: List[Dict[str, Any]] = []
        self._viewers = 0
        self._last_request = 0.0
        self._closed = False
        self._page = _PAGE.replace("TITLE", title or "live").encode("utf-8")
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("--serve binds %s: the stream is visible to that network, without authentication", host)
        handler = self._make_handler()
        try:
            self._httpd = ThreadingHTTPServer((host, int(port)), handler)
        except OSError as exc:
            raise EdgeError(f"--serve {host}:{port}: cannot listen ({exc}); pick another port") from exc
        self._httpd.daemon_threads = True
        self.address: Tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._http_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="edge-mjpeg-http", daemon=True)
        self._encoder = threading.Thread(target=self._encode_loop, name="edge-mjpeg-encode", daemon=True)
        self._http_thread.start()
        self._encoder.start()
        log.info("serving MJPEG on %s", self.url)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/"

    @property
    def watched(self) -> bool:
        return self._viewers > 0 or (time.monotonic() - self._last_request) < 2.0

    # -- sink side (pipeline thread) -------------------------------------------------------------
    def write(self, packet: Any) -> None:
        if not self.watched:
            return
        frame = packet.frame
        dets = [
            {"box": box, "score": score, "class_id": cls,
             "label": self.class_names[cls] if 0 <= cls < len(self.class_names) else str(cls)}
            for box, score, cls in zip(packet.boxes.tolist(), packet.scores.tolist(), packet.classes.tolist())
        ]
        with self._cond:
            if self._latest is None or self._latest.shape != frame.shape:
                self._latest = np.empty_like(frame)
            np.copyto(self._latest, frame)
            self._latest_seq += 1
            self._frame_index = packet.index
            self._detections = dets
            self._cond.notify_all()

    # -- encoder thread --------------------------------------------------------------------------
    def _encode_loop(self) -> None:
        from edge.runtime.priority import lower_thread_priority

        lower_thread_priority(self.nice)
        seen = 0
        params = [int(cv2.IMWRITE_JPEG_QUALITY), self.quality]
        scratch: Optional[np.ndarray] = None
        while True:
            with self._cond:
                while not self._closed and self._latest_seq == seen:
                    self._cond.wait(0.5)
                if self._closed:
                    return
                seen = self._latest_seq
                if scratch is None or scratch.shape != self._latest.shape:  # type: ignore[union-attr]
                    scratch = np.empty_like(self._latest)
                np.copyto(scratch, self._latest)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            ok, buf = cv2.imencode(".jpg", scratch, params)
            if ok:
                with self._cond:
                    self._jpeg = buf.tobytes()
                    self._jpeg_seq += 1
                    self._cond.notify_all()
            rest = self.min_interval - (time.perf_counter() - t0)
            if rest > 0:
                time.sleep(rest)

    def wait_jpeg(self, after_seq: int, timeout: float) -> Tuple[int, bytes]:
        """The first JPEG newer than ``after_seq`` (or the current one on timeout)."""
        self._last_request = time.monotonic()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jpeg_seq <= after_seq and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
                self._last_request = time.monotonic()
            return self._jpeg_seq, self._jpeg

    def stats(self) -> Dict[str, Any]:
        self._last_request = time.monotonic()
        with self._cond:
            return {"frame": self._frame_index, "fps": float(self.fps_fn()), "detections": list(self._detections)}

    def _make_handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # route to logging, not stderr
                log.debug("http %s: " + fmt, self.client_address[0], *args)

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?")[0]
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", server._page)
                elif path == "/stats.json":
                    self._send(200, "application/json", json.dumps(server.stats()).encode("utf-8"))
                elif path == "/frame.jpg":
                    _, jpeg = server.wait_jpeg(0, timeout=5.0)
                    if jpeg:
                        self._send(200, "image/jpeg", jpeg)
                    else:
                        self._send(503, "text/plain", b"no frame yet\n")
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                with server._cond:
                    server._viewers += 1
                seq = 0
                try:
                    while not server._closed:
                        seq, jpeg = server.wait_jpeg(seq, timeout=2.0)
                        if not jpeg:
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._cond:
                        server._viewers -= 1
                    self.close_connection = True

        return Handler

    def close(self) -> None:
        if self._closed:
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._encoder.join(timeout=2.0)
