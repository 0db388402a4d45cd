"""The live view (``edge.runtime.serve``) as a hostile network sees it, over real sockets on loopback:
class names render as text (headless Chromium where installed), every response is typed and
``nosniff``, connections are capped and idle ones timed out, IPv6 literals bind, and anything beyond
loopback needs a password (HTTP Basic) or an explicit ``--serve-public``."""

from __future__ import annotations

import base64
import http.client
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.runtime.pipeline import FramePacket
from edge.runtime.serve import MjpegServer, load_credentials, parse_serve

EVIL = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"


def _packet(i: int, w: int = 160, h: int = 120) -> FramePacket:
    rng = np.random.default_rng(i)
    frame = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    p = FramePacket(i, frame, 100.0 + i * 0.04)
    p.boxes = np.array([[10.0, 10.0, 61.0, 51.0]], np.float32)
    p.scores = np.array([0.875], np.float32)
    p.classes = np.array([0], np.int32)
    return p


class _Feeder:
    """Writes frames into the server from another thread, as the pipeline's sink thread does."""

    def __init__(self, server: MjpegServer) -> None:
        self.server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.02):
            self.server.write(_packet(i))
            i += 1

    def __enter__(self) -> "_Feeder":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)


def _request(port: int, path: str, *, method: str = "GET", headers=None, host: str = "127.0.0.1",
             read: int = -1, timeout: float = 5.0):
    """(status, headers, body) through http.client; ``read`` bytes of the body (-1: all)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read() if read < 0 else resp.read(read)
        return resp.status, resp.headers, body
    finally:
        conn.close()


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- item 3: the page never turns data into markup ----------------------------------------------------


def test_page_script_builds_the_table_from_text_nodes():
    server = MjpegServer("127.0.0.1", 0, title="<b>cam</b>")
    try:
        port = server.address[1]
        page = _request(port, "/")[2].decode()
        scripts = [_request(port, "/" + src)[2].decode() for src in re.findall(r'<script src="([^"]+)"', page)]
        code = "\n".join(re.findall(r"<script>(.*?)</script>", page, re.S) + scripts)
        assert "textContent" in code and "createElement" in code
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in code, f"the live page uses {sink}"
        assert "<b>cam</b>" not in page and "&lt;b&gt;cam&lt;/b&gt;" in page  # the title is escaped too
    finally:
        server.close()


def test_every_response_is_typed_and_nosniff():
    server = MjpegServer("127.0.0.1", 0, class_names=[EVIL], max_fps=50)
    try:
        port = server.address[1]
        with _Feeder(server):
            responses = {path: _request(port, path, read=200) for path in
                         ("/", "/stats.json", "/frame.jpg", "/stream.mjpg", "/nope", "/../etc/passwd")}
            responses["POST /"] = _request(port, "/", method="POST")
        for what, (status, headers, _) in responses.items():
            assert headers.get("Content-Type"), f"{what} ({status}) has no Content-Type"
            assert headers.get("X-Content-Type-Options") == "nosniff", f"{what} ({status}) lacks nosniff"
        assert responses["/stats.json"][1]["Content-Type"].startswith("application/json")
        assert responses["/nope"][0] == 404 and responses["POST /"][0] in (405, 501)
        status, headers, _ = responses["/"]
        csp = {d.split()[0]: d.split()[1:] for d in headers.get("Content-Security-Policy", "").split(";") if d.strip()}
        assert status == 200 and csp["script-src"] == ["'self'"]  # no inline script, no eval: only /live.js
    finally:
        server.close()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium here (apt-get install -y chromium)")


def test_a_class_name_with_markup_renders_as_text_in_a_browser(tmp_path):
    browser = _chromium()
    server = MjpegServer("127.0.0.1", 0, class_names=[EVIL], max_fps=20)
    try:
        url = f"http://127.0.0.1:{server.address[1]}/"
        with _Feeder(server):
            run = subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000", "--dump-dom", url],
                capture_output=True, text=True, timeout=90)
    finally:
        server.close()
    dom = run.stdout
    assert "<table" in dom, run.stderr[-2000:]
    assert not re.search(r"<body[^>]*data-pwned", dom)  # the onerror handler never ran
    cells = re.findall(r"<td>(.*?)</td>", dom, re.S)
    assert cells, dom
    # the class name is a text node: its markup comes back escaped, no <img> element exists in the table
    assert "&lt;img src=x onerror=" in cells[0]
    table = dom[dom.index("<table"):dom.index("</table>")]
    assert "<img" not in table


# -- item 10: bounded connections, idle timeouts, a real backlog, IPv6 ----------------------------------


def _idle_sockets(port: int, n: int, family=socket.AF_INET, host="127.0.0.1"):
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((host, port))
        socks.append(s)
    return socks


def _recv_all(s: socket.socket) -> bytes:
    chunks = []
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _wait(cond, timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_many_idle_connections_do_not_grow_threads_past_the_default_cap():
    server = MjpegServer("127.0.0.1", 0)
    socks = []
    try:
        base = threading.active_count()
        socks = _idle_sockets(server.address[1], 150)  # half-open clients that never send a request
        time.sleep(0.5)
        assert threading.active_count() - base <= 64  # the default cap, not one thread per connection
        assert server._httpd.request_queue_size >= 64  # a listen backlog that absorbs a burst
    finally:
        for s in socks:
            s.close()
        server.close()


def test_idle_connections_are_capped_refused_with_503_and_closed_after_the_timeout():
    server = MjpegServer("127.0.0.1", 0, max_connections=8, idle_timeout=0.5)
    socks = []
    try:
        port = server.address[1]
        base = threading.active_count()
        socks = _idle_sockets(port, 40)
        assert _wait(lambda: threading.active_count() - base >= 8)
        time.sleep(0.2)
        assert threading.active_count() - base <= 8
        # those over the cap are answered at once with 503 and closed; those inside it after the timeout
        # (8, or a few more where a slot freed by a timeout took a later connection on a slow machine)
        t0 = time.time()
        answers = [_recv_all(s) for s in socks]
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        timed_out = [a for a in answers if a == b""]
        assert len(refused) + len(timed_out) == 40 and len(timed_out) >= 8 and len(refused) >= 24, \
            [a[:20] for a in answers]
        assert b"nosniff" in refused[0] and b"Content-Type: text/plain" in refused[0]
        assert time.time() - t0 < 3.0
        assert _wait(lambda: threading.active_count() <= base)  # every handler thread ended
        assert _request(port, "/stats.json")[0] == 200  # and the server still answers
    finally:
        for s in socks:
            s.close()
        server.close()


def test_streaming_clients_are_capped_with_503():
    server = MjpegServer("127.0.0.1", 0, max_streams=2, max_fps=50)
    conns = []
    try:
        port = server.address[1]
        with _Feeder(server):
            for _ in range(2):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/stream.mjpg")
                resp = conn.getresponse()
                assert resp.status == 200 and b"--frame" in resp.read(200)
                conns.append(conn)
            status, headers, body = _request(port, "/stream.mjpg")
            assert status == 503 and b"viewers" in body and headers.get("Retry-After")
            conns.pop().close()
            assert _wait(lambda: server._viewers < 2)
            assert _request(port, "/stream.mjpg", read=100)[0] == 200  # a freed slot is usable again
    finally:
        for conn in conns:
            conn.close()
        server.close()


def test_parse_serve_takes_ipv6_literals_in_brackets():
    assert parse_serve("[::1]:8080") == ("::1", 8080)
    assert parse_serve("[::]:8080") == ("::", 8080)
    assert parse_serve("[fe80::1%eth0]:80") == ("fe80::1%eth0", 80)
    assert parse_serve("0.0.0.0:9000") == ("0.0.0.0", 9000) and parse_serve(":8080") == ("127.0.0.1", 8080)
    with pytest.raises(EdgeError, match=r"in brackets.*\[::1\]:8080"):
        parse_serve("::1:8080")
    for bad in ("[nonsense]:80", "[]:80", "[::1]", "[::1]:99999"):
        with pytest.raises(EdgeError):
            parse_serve(bad)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="IPv6 is unavailable here (no ::1 to bind)")
def test_serve_binds_an_ipv6_literal():
    host, port = parse_serve("[::1]:0")
    server = MjpegServer(host, port, max_connections=4, idle_timeout=0.5)
    try:
        assert server.address[0] == "::1" and server.url == f"http://[::1]:{server.address[1]}/"
        status, headers, body = _request(server.address[1], "/stats.json", host="::1")
        assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
        base = threading.active_count()
        socks = _idle_sockets(server.address[1], 10, socket.AF_INET6, "::1")
        time.sleep(0.2)
        assert threading.active_count() - base <= 4
        for s in socks:
            s.close()
    finally:
        server.close()


def test_a_port_that_cannot_be_bound_says_why():
    first = MjpegServer("127.0.0.1", 0)
    try:
        with pytest.raises(EdgeError, match="cannot listen.*in use"):
            MjpegServer("127.0.0.1", first.address[1])
    finally:
        first.close()
    with pytest.raises(EdgeError, match="cannot listen.*not an address of this machine"):
        MjpegServer("192.0.2.1", 0, public=True)  # TEST-NET-1: never a local address


# -- item 13: nothing beyond loopback without a password ---------------------------------------------


def test_a_non_loopback_bind_without_credentials_is_refused_before_listening():
    for host in ("0.0.0.0", "::", "192.0.2.1", "camera.local"):
        with pytest.raises(EdgeError, match=r"--serve-auth FILE.*--serve-public"):
            MjpegServer(host, 0)


def _auth_file(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def test_credentials_file_is_checked_and_never_echoed(tmp_path, caplog):
    creds = load_credentials(_auth_file(tmp_path / "ok", "viewer:pa:ss w0rd\n"))
    assert (creds.user, creds.password) == ("viewer", "pa:ss w0rd")
    assert "pa:ss" not in repr(creds) and "pa:ss" not in str(creds)
    for text, why in (("", "one line"), ("nocolon-S3CRET\n", "user:password"), (":S3CRET\n", "user name"),
                      ("viewer:\n", "password"), ("a:S3CRET\nb:S3CRET\n", "one line")):
        with pytest.raises(EdgeError, match=why) as err:
            load_credentials(_auth_file(tmp_path / "bad", text))
        assert "S3CRET" not in str(err.value)
    with pytest.raises(EdgeError, match="not found"):
        load_credentials(tmp_path / "missing")
    loose = tmp_path / "loose"
    loose.write_text("viewer:S3CRET\n")
    os.chmod(loose, 0o644)
    load_credentials(loose)
    assert "chmod 600" in caplog.text and "S3CRET" not in caplog.text


def test_page_stream_and_stats_need_the_password(tmp_path, caplog):
    creds = load_credentials(_auth_file(tmp_path / "auth", "viewer:S3CRET-pw\n"))
    server = MjpegServer("127.0.0.1", 0, credentials=creds, max_fps=50)
    try:
        port = server.address[1]
        with _Feeder(server):
            for path in ("/", "/live.js", "/stats.json", "/frame.jpg", "/stream.mjpg", "/nope"):
                for headers in ({}, _basic("viewer", "Wr0ngPw"), _basic("intruder", "S3CRET-pw"),
                                {"Authorization": "Basic !!notbase64"}, {"Authorization": "Bearer S3CRET-pw"}):
                    status, got, body = _request(port, path, headers=headers)
                    assert status == 401, (path, headers, status)
                    assert got["WWW-Authenticate"].startswith('Basic realm="edge-run"')
                    assert got["X-Content-Type-Options"] == "nosniff" and b"jpeg" not in body.lower()
            ok = _basic("viewer", "S3CRET-pw")
            assert _request(port, "/", headers=ok)[0] == 200
            assert _request(port, "/stats.json", headers=ok)[0] == 200
            assert _request(port, "/frame.jpg", headers=ok)[2][:2] == b"\xff\xd8"
            status, headers, body = _request(port, "/stream.mjpg", headers=ok, read=200)
            assert status == 200 and b"--frame" in body
            assert _request(port, "/nope", headers=ok)[0] == 404
    finally:
        server.close()
    assert "wrong credentials from 127.0.0.1" in caplog.text  # said once, without what was sent
    assert "S3CRET" not in caplog.text and "Wr0ngPw" not in caplog.text
    assert caplog.text.count("wrong credentials") == 1  # rate-limited, not one line per attempt


def test_edge_run_refuses_a_non_loopback_serve_without_credentials(tmp_path, caplog, monkeypatch):
    from edge.cli.run import main

    monkeypatch.delenv("DISPLAY", raising=False)
    rc = main(["--source", "test://64x48?frames=2", "--headless", "--serve", "0.0.0.0:0", "--threads", "1"])
    assert rc == 2
    assert "--serve-auth" in caplog.text and "--serve-public" in caplog.text
    assert "inference:" not in caplog.text  # refused before the model was opened
    caplog.clear()
    rc = main(["--source", "test://64x48?frames=2", "--headless", "--serve-auth", str(tmp_path / "none"),
               "--serve", "127.0.0.1:0"])
    assert rc == 2 and "not found" in caplog.text


def test_run_options_put_the_live_view_behind_the_password(tmp_path):
    from edge.runtime.app import RunOptions, build_sinks
    from edge.runtime.stats import RunStats

    auth = _auth_file(tmp_path / "auth", "viewer:S3CRET-pw\n")
    opts = RunOptions(headless=True, serve="127.0.0.1:0", serve_auth=str(auth)).validate()
    urls = []
    sinks = build_sinks(opts, ["cell"], 30.0, RunStats(), announce=urls.append)
    try:
        (server,) = sinks
        port = server.address[1]
        assert _request(port, "/stats.json")[0] == 401
        assert _request(port, "/stats.json", headers=_basic("viewer", "S3CRET-pw"))[0] == 200
        assert urls and "S3CRET" not in urls[0]
    finally:
        for s in sinks:
            s.close()
    assert RunOptions(serve="0.0.0.0:0", serve_public=True).validate().serve_public
    with pytest.raises(EdgeError, match="--serve-auth"):
        RunOptions(serve="0.0.0.0:0").validate()
    with pytest.raises(EdgeError, match="need --serve"):
        RunOptions(serve_auth=str(auth)).validate()
    with pytest.raises(EdgeError, match="not both"):
        RunOptions(serve="0.0.0.0:0", serve_auth=str(auth), serve_public=True).validate()


def test_jpeg_of_a_frame_still_decodes():
    """The security changes leave the picture alone: /frame.jpg is the frame that was written."""
    server = MjpegServer("127.0.0.1", 0, max_fps=50)
    try:
        port = server.address[1]
        with _Feeder(server):
            jpeg = _request(port, "/frame.jpg")[2]
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (120, 160, 3)
    finally:
        server.close()
