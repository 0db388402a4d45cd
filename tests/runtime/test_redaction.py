"""Stream credentials never leave the process: ``rtsp://user:secret@...`` is redacted in every error, log
line, reconnect warning and stats file, while the stream itself still gets the real URL.

The end-to-end tests run the real ``edge-run`` in a subprocess (so OpenCV's and FFmpeg's own stderr is
captured too) against a closed port and against a real HTTP server on 127.0.0.1 that demands the
credentials and serves a short video, so the run reconnects when the video ends.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import socket
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import DataError
from edge.runtime.sources.base import FrameSource
from edge.runtime.sources.capture import CaptureThread, FramePool, ReopenPolicy
from edge.runtime.sources.factory import open_source
from edge.runtime.sources.uri import parse_source, redact_uri
from tests.runtime.edge_run import edge_run_command, edge_run_env

SECRET = "s3cr3t-Pa55"


def test_redact_uri_masks_the_password_and_keeps_the_rest():
    assert redact_uri(f"rtsp://admin:{SECRET}@10.0.0.7:554/live?channel=1") == \
        "rtsp://admin:***@10.0.0.7:554/live?channel=1"
    assert redact_uri(f"http://user:{SECRET}@[fe80::1]:8080/v.mjpg") == "http://user:***@[fe80::1]:8080/v.mjpg"
    # an '@' inside the password (not percent-encoded, as people type it): the last '@' ends the userinfo
    assert redact_uri(f"rtsp://admin:p@{SECRET}@cam/s") == "rtsp://admin:***@cam/s"
    # a bare token as user name is a secret too
    assert redact_uri(f"https://{SECRET}@cam.example/s") == "https://***@cam.example/s"
    # inside a longer message, every URL is redacted
    text = f"cannot open stream rtsp://a:{SECRET}@h/x, then rtsps://b:{SECRET}@k/y failed"
    assert SECRET not in redact_uri(text) and "rtsp://a:***@h/x" in redact_uri(text)
    # nothing to redact: unchanged
    for plain in ("rtsp://cam.local:554/stream", "test://", "/data/clip.mp4", "v4l2:///dev/video0",
                  "mail me at a@b.c", ""):
        assert redact_uri(plain) == plain


def test_redact_uri_masks_secret_query_parameters():
    url = (f"https://cam.example/live.m3u8?channel=2&token={SECRET}&X-Amz-Signature={SECRET}"
           f";api_key={SECRET}#t=1")
    assert redact_uri(url) == "https://cam.example/live.m3u8?channel=2&token=***&X-Amz-Signature=***;api_key=***#t=1"
    assert redact_uri(f"rtsp://u:{SECRET}@cam/s?Password={SECRET}") == "rtsp://u:***@cam/s?Password=***"
    text = f"cannot open 'http://h/v.mjpg?access_token={SECRET}': timed out"
    assert redact_uri(text) == "cannot open 'http://h/v.mjpg?access_token=***': timed out"
    # parameters that are not secrets, and names that only contain a secret key's name, stay
    for plain in ("http://h/v?keyframe=1&monkey=2", "rtsp://cam/s?transport=tcp&latency=200"):
        assert redact_uri(plain) == plain


def test_source_spec_and_sources_describe_without_the_secret():
    spec = parse_source(f"rtsp://admin:{SECRET}@127.0.0.1:9/live?transport=tcp")
    for text in (str(spec), repr(spec), spec.describe(), open_source(spec).describe()):
        assert SECRET not in text and "admin:***@127.0.0.1:9" in text
    source = open_source(spec)
    assert SECRET in source.stream_url()  # what FFmpeg gets keeps the credentials
    with pytest.raises(DataError) as err:
        source.open()
    assert SECRET not in str(err.value) and "admin:***@" in str(err.value)


class _GoneCamera(FrameSource):
    """Opened once, then its reads raise and every reopen fails; both errors quote the raw URL, as
    drivers do."""

    live = True

    def __init__(self, spec):
        super().__init__(spec)
        self.opens = 0

    def open(self):
        self.opens += 1
        if self.opens > 1:
            raise DataError(f"cannot open {self.spec.uri}")

    def read(self, out=None):
        raise cv2.error(f"read failed on {self.spec.uri}")  # a driver error quoting the URL


def test_reconnect_warnings_carry_no_secret(caplog):
    spec = parse_source(f"rtsp://admin:{SECRET}@127.0.0.1:9/live")
    cap = CaptureThread(_GoneCamera(spec), FramePool(2), reopen=ReopenPolicy(initial_s=0.01, max_s=0.02,
                                                                                max_attempts=3)).start()
    cap.join(5.0)
    assert not cap.alive
    item = cap.get(timeout=1.0)
    assert "could not be reopened" in item.error and SECRET not in item.error
    assert "reopening in" in caplog.text and "capture error" in caplog.text and "reopen failed" in caplog.text
    assert SECRET not in caplog.text


# -- the real edge-run -------------------------------------------------------------------------------


def _edge_run(args, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real edge-run on the tiny red-box detector (fast on any CPU), with debug logging."""
    return subprocess.run(edge_run_command(tmp_path, args), cwd=str(tmp_path), env=edge_run_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_edge_run_open_failure_does_not_print_the_secret(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = _edge_run(["--source", f"rtsp://admin:{SECRET}@127.0.0.1:{port}/live"], tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert "cannot open stream" in output and f"admin:***@127.0.0.1:{port}" in output, output
    assert SECRET not in output


class _AuthFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a folder to clients that send ``admin:SECRET`` (HTTP Basic), as an IP camera would."""

    expected = "Basic " + base64.b64encode(f"admin:{SECRET}".encode()).decode()
    authorized = 0

    def do_GET(self):  # noqa: N802 - http.server API
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="cam"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        type(self).authorized += 1
        super().do_GET()

    def log_message(self, *args):
        pass


def test_edge_run_with_a_credentialed_stream_keeps_the_secret_out_of_logs_and_stats(tmp_path):
    rng = np.random.default_rng(13)
    clip = tmp_path / "www" / "clip.avi"
    clip.parent.mkdir()
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (96, 64))
    for _ in range(32):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    handler = type("Handler", (_AuthFiles,), {"authorized": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(clip.parent)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        port = httpd.server_address[1]
        stats = tmp_path / "stats.json"
        # 66 frames from a 32-frame video: it plays whole at least twice (>= 30 frames: the backoff resets),
        # and each end is a reconnect
        run = _edge_run(["--source", f"http://admin:{SECRET}@127.0.0.1:{port}/clip.avi", "--max-frames", "66",
                         "--stats-json", str(stats)], tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert handler.authorized >= 2  # the stream got the real credentials, and was reopened
    assert f"source: http://admin:***@127.0.0.1:{port}/clip.avi" in output, output
    assert "reopening in" in output and "reopened" in output and "backoff reset" in output, output
    meta = json.loads(stats.read_text())["meta"]
    assert meta["source"] == f"http://admin:***@127.0.0.1:{port}/clip.avi"
    assert SECRET not in output and SECRET not in stats.read_text()


def test_edge_run_on_a_file_records_the_path_unchanged(tmp_path):
    clip = tmp_path / "user@host clip.avi"  # an '@' in a plain path is not a credential
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (96, 64))
    for i in range(3):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    stats = tmp_path / "stats.json"
    run = _edge_run(["--source", str(clip), "--stats-json", str(stats)], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(stats.read_text())["meta"]["source"] == str(clip)
