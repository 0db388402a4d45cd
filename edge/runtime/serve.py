"""The live view: ``MjpegServer``, annotated frames as MJPEG over HTTP with a small page and JSON stats.
``parse_serve`` (``--serve [HOST]:PORT``) and the access rules live in ``edge.runtime.serve_access``
and are importable from here too.

``MjpegServer`` serves ``/`` (a small live page and its script ``/live.js``), ``/stream.mjpg``,
``/frame.jpg`` and ``/stats.json`` on loopback unless another host is asked for. With several streams
(``channel(ID)`` gives each its own sink) ``/`` is a grid of the streams with each one's FPS
(``/grid.js``, ``/streams.json``), and each stream has the single-stream page and URLs under ``/s/ID/``. JPEG encoding happens
in its own thread, only while someone is watching, at most ``max_fps`` times a second: never on the
pipeline's hot path.

What a hostile network gets:

* Beyond loopback the live view needs a password: ``--serve-auth FILE`` (one line ``user:password``,
  HTTP Basic, checked in constant time, never logged), or an explicit ``--serve-public``; with neither,
  ``check_access`` refuses to start. Page, script, stream, frame and stats are all behind it.
* Data never becomes markup: the page builds its table with ``textContent``, serves its script from
  ``/live.js`` under a Content-Security-Policy without inline scripts, and every response carries a
  ``Content-Type`` and ``X-Content-Type-Options: nosniff``.
* Bounded: at most ``max_connections`` connections (one thread each; more are answered 503 from the
  accept loop, without a thread), at most ``max_streams`` of them streaming (503 beyond), a socket
  timeout of ``idle_timeout`` seconds on every read and write (idle and half-open clients are closed),
  a listen backlog of ``backlog``. IPv6 literals (``[::1]:8080``, ``[::]:8080``) bind AF_INET6.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import hmac
import html
import json
import logging
import socket
import socketserver
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.runtime.serve_access import (
    Credentials,
    check_access,
    host_port,
    is_loopback,
    load_credentials,
    parse_serve,
    serve_access,
)
from edge.runtime.sinks import Sink

log = logging.getLogger(__name__)

__all__ = ["Credentials", "MjpegServer", "check_access", "is_loopback", "load_credentials", "parse_serve",
           "serve_access"]


# -- the page --------------------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge-run</title>
<style>body{background:#111;color:#ddd;font:14px sans-serif;margin:1em}img{max-width:100%;border:1px solid #333}
#s{margin:.5em 0}table{border-collapse:collapse}td{padding:0 .6em}</style></head>
<body><h3>edge-run &mdash; TITLE</h3><img src="stream.mjpg" alt="live stream"><div id="s">waiting...</div>
<table id="d"></table>
<script src="live.js"></script></body></html>
"""

# Everything from the network is put in as text (textContent), never parsed as markup.
_SCRIPT = """"use strict";
function byId(id) { return document.getElementById(id); }
function row(texts) {
  const tr = document.createElement("tr");
  for (const text of texts) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  return tr;
}
async function poll() {
  try {
    const r = await fetch("stats.json", {cache: "no-store"});
    const s = await r.json();
    byId("s").textContent = `${Number(s.fps).toFixed(1)} FPS | frame ${s.frame} | ${s.detections.length} detections`;
    const table = byId("d");
    while (table.firstChild) table.removeChild(table.firstChild);
    for (const d of s.detections.slice(0, 20)) {
      table.appendChild(row([String(d.label), Number(d.score).toFixed(2),
                             d.box.map(v => Number(v).toFixed(0)).join(", ")]));
    }
  } catch (e) {
    byId("s").textContent = "disconnected";
  }
  setTimeout(poll, 500);
}
poll();
"""

_GRID = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge-run</title>
<style>body{background:#111;color:#ddd;font:14px sans-serif;margin:1em}a{color:#9cf}
#g{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:.6em}
figure{margin:0}img{width:100%;border:1px solid #333}</style></head>
<body><h3>edge-run &mdash; TITLE</h3><div id="g"></div><div id="s">waiting...</div>
<script src="grid.js"></script></body></html>
"""

# The grid: one tile per stream (id, FPS, link to its own page); each image reloads frame.jpg when the
# previous one has arrived (no long-lived MJPEG connection per tile: a browser allows ~6 per host).
_GRID_SCRIPT = """"use strict";
const tiles = new Map();
function tile(id) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  const cap = document.createElement("figcaption");
  const a = document.createElement("a");
  const base = "s/" + encodeURIComponent(id) + "/";
  a.href = base;
  a.textContent = id;
  const fps = document.createElement("span");
  cap.appendChild(a);
  cap.appendChild(fps);
  fig.appendChild(img);
  fig.appendChild(cap);
  document.getElementById("g").appendChild(fig);
  let n = 0;
  const next = () => setTimeout(() => { img.src = base + "frame.jpg?n=" + (n++); }, 60);
  img.addEventListener("load", next);
  img.addEventListener("error", () => setTimeout(next, 1000));
  next();
  return fps;
}
async function poll() {
  try {
    const r = await fetch("streams.json", {cache: "no-store"});
    const list = await r.json();
    for (const s of list) {
      if (!tiles.has(s.id)) tiles.set(s.id, tile(String(s.id)));
      tiles.get(s.id).textContent = ` ${Number(s.fps).toFixed(1)} FPS | frame ${s.frame} | ${s.detections} detections`;
    }
    document.getElementById("s").textContent = `${list.length} streams`;
  } catch (e) {
    document.getElementById("s").textContent = "disconnected";
  }
  setTimeout(poll, 500);
}
poll();
"""

_PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; "
                                "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
)
_TEXT = "text/plain; charset=utf-8"
_REALM = 'Basic realm="edge-run", charset="UTF-8"'


# -- the listening socket --------------------------------------------------------------------------------


class _LiveHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a cap on connections (one thread each): over the cap, a connection
    is answered 503 by the accept loop itself and closed, so no client can make it start more threads.
    AF_INET6 for IPv6 literals (``::`` also takes IPv4 clients, as 0.0.0.0 does)."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], handler: type, *, max_connections: int, backlog: int,
                 on_refused: Callable[[Any], None]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.request_queue_size = int(backlog)  # listen() backlog
        self._slots = threading.BoundedSemaphore(int(max_connections))
        self._on_refused = on_refused
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            with contextlib.suppress(OSError, AttributeError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: no reverse DNS lookup at start
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request, client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        body = b"too many connections to the live view; try again later\n"
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + _TEXT + "\r\n"
                "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nRetry-After: 5\r\n"
                f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode("ascii")
        with contextlib.suppress(OSError):
            request.settimeout(0.2)  # never let a client that does not read stall the accept loop
            request.sendall(head + body)
            request.shutdown(socket.SHUT_WR)
            request.setblocking(False)
            request.recv(65536)  # what it sent already: closing unread data would reset the 503
        self._on_refused(client_address)


def _listen_error(host: str, port: int, exc: OSError) -> EdgeError:
    where = host_port(host, port)
    code = exc.errno
    if isinstance(exc, socket.gaierror):
        why = f"cannot resolve {host}; use an IP address of this machine, or 0.0.0.0 / [::] for all of them"
    elif code == errno.EADDRINUSE:
        why = "the port is in use; pick another port (`ss -ltnp` shows which program holds it)"
    elif code == errno.EADDRNOTAVAIL:
        why = (f"{host} is not an address of this machine; use one it has (`ip addr`), 0.0.0.0 or [::] "
               "for all of them, or :PORT for loopback")
    elif code in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
        why = "IPv6 is not available on this machine; use an IPv4 address such as 0.0.0.0 or 127.0.0.1"
    elif code == errno.EACCES:
        why = "ports below 1024 need root; use a port such as 8080"
    else:
        why = "pick another port or address"
    return EdgeError(f"--serve {where}: cannot listen ({exc.strerror or exc}); {why}")


# -- the server ------------------------------------------------------------------------------------------


class _Channel:
    """One stream's newest frame, its JPEG and detections (the server's ``_cond`` guards them)."""

    def __init__(self, sid: str, fps_fn: Callable[[], float]) -> None:
        self.sid = sid
        self.fps_fn = fps_fn
        self.latest: Optional[np.ndarray] = None  # preallocated copy of the newest frame
        self.latest_seq = 0
        self.encoded_seq = 0
        self.jpeg: bytes = b""
        self.jpeg_seq = 0
        self.frame_index = -1
        self.detections: List[Dict[str, Any]] = []


class _ChannelSink(Sink):
    """The sink of one stream of a multi-stream run: its frames go to its channel of the server."""

    name = "mjpeg"

    def __init__(self, server: "MjpegServer", channel: _Channel) -> None:
        self.server, self.channel = server, channel

    def write(self, packet: Any) -> None:
        self.server._put(self.channel, packet)

    def close(self) -> None:
        """The server is closed once, by its owner, after every stream."""


class MjpegServer(Sink):
    """Live annotated frames as MJPEG over HTTP, plus a page and JSON stats.

    ``host`` defaults to loopback; another interface needs ``credentials`` (HTTP Basic) or ``public``
    (``check_access``). ``port`` 0 picks a free port (see ``address`` after construction).
    ``max_connections``: open connections (threads) at most; ``max_streams``: of them, MJPEG streams;
    ``idle_timeout``: seconds a read or write may block before the connection is closed; ``backlog``:
    the listen queue.
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
        credentials: Optional[Credentials] = None,
        public: bool = False,
        max_connections: int = 64,
        max_streams: int = 32,
        idle_timeout: float = 10.0,
        backlog: int = 64,
    ) -> None:
        check_access(host, int(port), credentials, public)
        if min(max_connections, max_streams, backlog) < 1 or not idle_timeout > 0:
            raise EdgeError(f"max_connections, max_streams and backlog must be >= 1 and idle_timeout > 0, found "
                            f"{max_connections}, {max_streams}, {backlog}, {idle_timeout}")
        self.class_names = list(class_names)
        self.nice = int(nice)  # the JPEG encoder thread yields to inference (edge.runtime.priority)
        self.quality = int(quality)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.fps_fn = fps_fn or (lambda: 0.0)
        self.max_streams = int(max_streams)
        self.idle_timeout = float(idle_timeout)
        self._auth_digest = credentials.digest() if credentials is not None else None
        self._cond = threading.Condition()
        self._main = _Channel("", self.fps_fn)  # the single stream (write)
        self._channels: Dict[str, _Channel] = {}  # the streams of a multi-stream run (channel)
        self._viewers = 0
        self._last_request = 0.0
        self._closed = False
        self._warned_at: Dict[str, float] = {}
        self._page = _PAGE.replace("TITLE", html.escape(title or "live")).encode("utf-8")
        self._grid = _GRID.replace("TITLE", html.escape(title or "live")).encode("utf-8")
        self._script = _SCRIPT.encode("utf-8")
        self._grid_script = _GRID_SCRIPT.encode("utf-8")
        try:
            self._httpd = _LiveHTTPServer((host, int(port)), self._make_handler(), max_connections=max_connections,
                                          backlog=backlog, on_refused=self._refused)
        except OSError as exc:
            raise _listen_error(host, int(port), exc) from None
        self.address: Tuple[str, int] = tuple(self._httpd.server_address[:2])  # type: ignore[assignment]
        self._http_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="edge-mjpeg-http", daemon=True)
        self._encoder = threading.Thread(target=self._encode_loop, name="edge-mjpeg-encode", daemon=True)
        self._http_thread.start()
        self._encoder.start()
        self._announce_access(host, credentials, public)

    def _announce_access(self, host: str, credentials: Optional[Credentials], public: bool) -> None:
        if credentials is not None:
            log.info("serving MJPEG on %s for user %s (HTTP Basic; the password crosses the network unencrypted: "
                     "trusted networks, an SSH tunnel or a TLS proxy)", self.url, credentials.user)
        elif not is_loopback(host):
            log.warning("--serve-public: %s shows the stream to anyone who can reach %s, without a password",
                        self.url, host)
        else:
            log.info("serving MJPEG on %s", self.url)

    def _warn_rarely(self, key: str, msg: str, *args: Any) -> None:
        """One warning per ``key`` every 10 s at most: a flood of bad clients must not flood the log."""
        now = time.monotonic()
        if now - self._warned_at.get(key, -1e9) >= 10.0:
            self._warned_at[key] = now
            log.warning(msg, *args)

    def _refused(self, client_address: Any) -> None:
        self._warn_rarely("connections", "live view: connection cap reached; refusing %s with 503",
                          client_address[0])

    def authorized(self, header: Optional[str]) -> bool:
        """Whether an ``Authorization`` header carries the credentials (always True without any)."""
        if self._auth_digest is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        given = b""
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                given = b""
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._auth_digest)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host_port(host, port)}/"

    @property
    def watched(self) -> bool:
        return self._viewers > 0 or (time.monotonic() - self._last_request) < 2.0

    def channel(self, sid: str, fps_fn: Optional[Callable[[], float]] = None) -> Sink:
        """The sink of stream ``sid`` (a multi-stream run): shown in the grid at ``/`` and on its own at
        ``/s/SID/``."""
        with self._cond:
            ch = self._channels[str(sid)] = _Channel(str(sid), fps_fn or (lambda: 0.0))
        return _ChannelSink(self, ch)

    @property
    def _latest(self) -> Optional[np.ndarray]:
        """The single stream's newest frame copy (None until one was written while watched)."""
        return self._main.latest

    def _lookup(self, sid: Optional[str]) -> Optional[_Channel]:
        return self._main if sid is None else self._channels.get(sid)

    # -- sink side (pipeline thread) -------------------------------------------------------------
    def write(self, packet: Any) -> None:
        self._put(self._main, packet)

    def _put(self, ch: _Channel, packet: Any) -> None:
        if not self.watched:
            return
        frame = packet.frame
        dets = [
            {"box": box, "score": score, "class_id": cls,
             "label": self.class_names[cls] if 0 <= cls < len(self.class_names) else str(cls)}
            for box, score, cls in zip(packet.boxes.tolist(), packet.scores.tolist(), packet.classes.tolist())
        ]
        with self._cond:
            if ch.latest is None or ch.latest.shape != frame.shape:
                ch.latest = np.empty_like(frame)
            np.copyto(ch.latest, frame)
            ch.latest_seq += 1
            ch.frame_index = packet.index
            ch.detections = dets
            self._cond.notify_all()

    # -- encoder thread --------------------------------------------------------------------------
    def _encode_loop(self) -> None:
        from edge.runtime.priority import lower_thread_priority

        lower_thread_priority(self.nice)
        params = [int(cv2.IMWRITE_JPEG_QUALITY), self.quality]
        scratch: Dict[str, np.ndarray] = {}
        while True:
            with self._cond:
                while not self._closed and not self._fresh():
                    self._cond.wait(0.5)
                if self._closed:
                    return
                todo = self._fresh()
                for ch in todo:
                    ch.encoded_seq = ch.latest_seq
                    buf = scratch.get(ch.sid)
                    if buf is None or buf.shape != ch.latest.shape:  # type: ignore[union-attr]
                        buf = scratch[ch.sid] = np.empty_like(ch.latest)
                    np.copyto(buf, ch.latest)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            for ch in todo:
                ok, enc = cv2.imencode(".jpg", scratch[ch.sid], params)
                if ok:
                    with self._cond:
                        ch.jpeg = enc.tobytes()
                        ch.jpeg_seq += 1
                        self._cond.notify_all()
            rest = self.min_interval - (time.perf_counter() - t0)
            if rest > 0:
                time.sleep(rest)

    def _fresh(self) -> List[_Channel]:
        """The channels with a frame not encoded yet (under ``_cond``)."""
        return [ch for ch in (self._main, *self._channels.values()) if ch.latest_seq != ch.encoded_seq]

    def wait_jpeg(self, after_seq: int, timeout: float, sid: Optional[str] = None) -> Tuple[int, bytes]:
        """The first JPEG of stream ``sid`` (None: the single stream) newer than ``after_seq`` (or the
        current one on timeout)."""
        self._last_request = time.monotonic()
        deadline = time.monotonic() + timeout
        ch = self._lookup(sid)
        if ch is None:
            return 0, b""
        with self._cond:
            while ch.jpeg_seq <= after_seq and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
                self._last_request = time.monotonic()
            return ch.jpeg_seq, ch.jpeg

    def stats(self, sid: Optional[str] = None) -> Dict[str, Any]:
        self._last_request = time.monotonic()
        ch = self._lookup(sid) or self._main
        with self._cond:
            return {"frame": ch.frame_index, "fps": float(ch.fps_fn()), "detections": list(ch.detections)}

    def streams(self) -> List[Dict[str, Any]]:
        """``/streams.json``: every stream's id, FPS, frame number and detection count."""
        self._last_request = time.monotonic()
        with self._cond:
            return [{"id": ch.sid, "fps": round(float(ch.fps_fn()), 2), "frame": ch.frame_index,
                     "detections": len(ch.detections)} for ch in self._channels.values()]

    def _make_handler(self) -> type:
        return type("Handler", (_Handler,), {"live": self, "timeout": self.idle_timeout})

    def close(self) -> None:
        if self._closed:
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._encoder.join(timeout=2.0)


class _Handler(BaseHTTPRequestHandler):
    """One connection of the live view; ``live`` (the ``MjpegServer``) and ``timeout`` are set per server."""

    live: "MjpegServer"
    protocol_version = "HTTP/1.1"
    timeout: Optional[float] = None  # idle_timeout: every read and write of the connection
    server_version = "edge-run"
    sys_version = ""

    def log_message(self, fmt: str, *args: Any) -> None:  # route to logging, not stderr
        log.debug("http %s: " + fmt, self.client_address[0], *args)

    def end_headers(self) -> None:  # every response, errors from http.server included
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def _send(self, code: int, ctype: str, body: bytes, headers: Sequence[Tuple[str, str]] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        header = self.headers.get("Authorization")
        if not self.live.authorized(header):
            if header:
                self.live._warn_rarely("auth", "live view: wrong credentials from %s", self.client_address[0])
            self._send(401, _TEXT, b"authentication required\n", [("WWW-Authenticate", _REALM)])
            return
        path = self.path.split("?")[0]
        sid: Optional[str] = None
        if path.startswith("/s/"):  # one stream of several: /s/ID/ and the single-stream URLs below it
            sid, _, rest = path[3:].partition("/")
            sid = urllib.parse.unquote(sid)
            if sid not in self.live._channels:
                self._send(404, _TEXT, b"no such stream\n")
                return
            path = "/" + rest
        elif path in ("/", "/index.html") and self.live._channels:
            self._send(200, "text/html; charset=utf-8", self.live._grid, _PAGE_HEADERS)
            return
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.live._page, _PAGE_HEADERS)
        elif path == "/live.js":
            self._send(200, "text/javascript; charset=utf-8", self.live._script)
        elif path == "/grid.js" and sid is None:
            self._send(200, "text/javascript; charset=utf-8", self.live._grid_script)
        elif path == "/streams.json" and sid is None:
            self._send(200, "application/json", json.dumps(self.live.streams()).encode("utf-8"))
        elif path == "/stats.json":
            self._send(200, "application/json", json.dumps(self.live.stats(sid)).encode("utf-8"))
        elif path == "/frame.jpg":
            _, jpeg = self.live.wait_jpeg(0, timeout=5.0, sid=sid)
            if jpeg:
                self._send(200, "image/jpeg", jpeg)
            else:
                self._send(503, _TEXT, b"no frame yet\n")
        elif path == "/stream.mjpg":
            self._stream(sid)
        else:
            self._send(404, _TEXT, b"not found\n")

    def _stream(self, sid: Optional[str] = None) -> None:
        with self.live._cond:
            full = self.live._viewers >= self.live.max_streams
            if not full:
                self.live._viewers += 1
        if full:
            self.live._warn_rarely("streams", "live view: %d viewers already; refusing %s with 503",
                                   self.live.max_streams, self.client_address[0])
            self._send(503, _TEXT, f"too many viewers ({self.live.max_streams}); try again later\n".encode(),
                       [("Retry-After", "5")])
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            seq = 0
            while not self.live._closed:
                seq, jpeg = self.live.wait_jpeg(seq, timeout=2.0, sid=sid)
                if not jpeg:
                    continue
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                self.wfile.flush()
        except OSError:  # the viewer left, reset, or stopped reading for idle_timeout
            pass
        finally:
            with self.live._cond:
                self.live._viewers -= 1
            self.close_connection = True
