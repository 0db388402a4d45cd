"""The live view: ``MjpegServer``, annotated frames as MJPEG over HTTP with a small page and JSON stats,
and ``parse_serve`` for ``--serve [HOST]:PORT``.

``MjpegServer`` serves ``/`` (a small live page), ``/stream.mjpg``, ``/frame.jpg`` and ``/stats.json``
on loopback unless another host is asked for. JPEG encoding happens in its own thread, only while
someone is watching, at most ``max_fps`` times a second: never on the pipeline's hot path.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.runtime.sinks import Sink

log = logging.getLogger(__name__)


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
