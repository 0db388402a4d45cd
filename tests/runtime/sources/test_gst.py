"""GStreamer decode paths: the pipelines ``edge`` builds per source and target, the plan that picks a
path and says why, ``--print-pipeline``, RTSP options and camera modes.

The tests marked ``gstreamer`` run every kind of pipeline ``edge`` builds through the real
``gst-launch-1.0`` (Debian's GStreamer), with NVIDIA's elements swapped for software ones by the one
mapping ``edge.runtime.sources.gst.software_equivalent`` documents. The NVIDIA element names, properties
and caps were checked against NVIDIA's documentation:

* Jetson Linux Developer Guide, "Accelerated GStreamer" (r35.6.1:
  https://docs.nvidia.com/jetson/archives/r35.6.1/DeveloperGuide/SD/Multimedia/AcceleratedGstreamer.html):
  ``nvv4l2decoder`` is the gst-v4l2 H.264/H.265 decoder (gst-omx is gone since r34.1), ``nvvidconv``
  converts and scales ``video/x-raw(memory:NVMM)`` into system-memory ``video/x-raw`` (BGRx);
* DeepStream "Gst-nvvideo4linux2"
  (https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvvideo4linux2.html):
  the same decoder takes JPEG/MJPEG, and "you must use the open source jpegparse plugin before the
  decoder" for JPEG, hence ``jpegparse ! nvv4l2decoder mjpeg=1`` (``mjpeg=1``: JetPack 5/6's switch for
  MJPEG streams, as the issue states; not in the excerpts available to this test's author);
  nvv4l2decoder's sink caps are byte-stream H.264/H.265 in access units, which ``h264parse``/``h265parse``
  give it.
Where no NVIDIA element is present, ``gst-launch-1.0`` cannot check those names; the mapping is what runs.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from edge.cli.run import main as edge_run_main
from edge.errors import DataError, EdgeError
from edge.runtime.plan import plan_decode
from edge.runtime.sources.camera_modes import CameraMode, parse_formats_ext, pick_mode
from edge.runtime.sources.gst import Pipeline, software_equivalent
from edge.runtime.sources.uri import camera_spec, parse_source

SECRET = "Rt5p-s3cret"

V4L2_CTL_OUTPUT = """ioctl: VIDIOC_ENUM_FMT
\tType: Video Capture

\t[0]: 'MJPG' (Motion-JPEG, compressed)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\t\tInterval: Discrete 0.067s (15.000 fps)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t[1]: 'YUYV' (YUYV 4:2:2)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.100s (10.000 fps)
\t[2]: 'H264' (H.264, compressed)
\t\tSize: Discrete 1920x1080
\t\t\tInterval: Discrete 0.033s (30.000 fps)
"""
MODES = parse_formats_ext(V4L2_CTL_OUTPUT)


# -- without GStreamer --------------------------------------------------------------------------------


def test_print_pipeline_is_one_shell_quoted_line_ending_in_appsink_with_the_password_masked(capsys):
    uri = f"rtsp://viewer:{SECRET}@10.0.0.7:554/live?transport=udp&latency=50&size=1920x1080&channel=1"
    assert edge_run_main(["--source", uri, "--print-pipeline", "--target", "jetson"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1, out
    line = out.strip()
    assert SECRET not in out and "viewer:***@10.0.0.7:554/live?channel=1" in line
    assert not line.startswith("gst-launch") and line.endswith("appsink drop=true max-buffers=1 sync=false")
    tokens = shlex.split(line)  # what the shell hands gst-launch-1.0
    assert tokens[:4] == ["rtspsrc", "location=rtsp://viewer:***@10.0.0.7:554/live?channel=1", "latency=50",
                          "protocols=udp"]
    assert ["h264parse", "!", "nvv4l2decoder", "!", "nvvidconv"] == tokens[7:12]
    # the bundled model takes 320x320: a 16:9 camera is scaled to 320x180 in nvvidconv, before the CPU
    assert "video/x-raw, width=(int)320, height=(int)180, format=(string)BGRx" in tokens
    assert "'video/x-raw, width=(int)320, height=(int)180, format=(string)BGRx'" in line  # parentheses quoted


def test_rtsp_options_are_checked_and_kept_out_of_the_stream_url():
    spec = parse_source(f"rtsp://viewer:{SECRET}@cam/s?transport=tcp&latency=0&codec=h265&size=640x480&ch=2")
    assert spec.path_for_stream() == f"rtsp://viewer:{SECRET}@cam/s?ch=2"
    with pytest.raises(EdgeError, match="transport='quic'.*expected tcp or udp") as err:
        parse_source(f"rtsp://viewer:{SECRET}@cam/s?transport=quic")
    assert SECRET not in str(err.value)
    with pytest.raises(EdgeError, match="latency=-5"):
        parse_source("rtsp://cam/s?latency=-5")
    plan = plan_decode(spec, gstreamer=True, target="jetson", target_hw=(320, 320))
    assert plan.pipeline.tokens[:4] == ["rtspsrc", f"location=rtsp://viewer:{SECRET}@cam/s?ch=2", "latency=0",
                                        "protocols=tcp"]
    assert "rtph265depay" in plan.pipeline.tokens and "h265parse" in plan.pipeline.tokens
    assert SECRET not in plan.pipeline.redacted() and SECRET not in str(plan.as_dict())


def test_the_plan_says_which_path_each_source_takes_and_why(tmp_path):
    rtsp = parse_source("rtsp://cam/s")
    no_gst = plan_decode(rtsp, gstreamer=False, target="jetson")
    assert (no_gst.path, no_gst.reason) == ("opencv", "this OpenCV has no GStreamer (pip's opencv-python never does)")
    jetson = plan_decode(rtsp, gstreamer=True, target="jetson")
    assert jetson.path == "gstreamer" and "nvv4l2decoder" in jetson.reason and jetson.pipeline is not None
    assert "nvv4l2decoder" in jetson.pipeline.tokens
    assert plan_decode(rtsp, decode="opencv", gstreamer=True, target="jetson").reason == "--decode opencv"
    software = plan_decode(rtsp, gstreamer=True, target="software")
    assert software.path == "opencv" and "nvv4l2decoder not installed" in software.reason
    forced = plan_decode(rtsp, decode="gstreamer", gstreamer=True, target="software")
    assert forced.path == "gstreamer" and "avdec_h264" in forced.pipeline.tokens
    assert "nvv4l2decoder" not in forced.pipeline.tokens
    with pytest.raises(EdgeError, match="this OpenCV has no GStreamer"):
        plan_decode(rtsp, decode="gstreamer", gstreamer=False, target="jetson")
    assert plan_decode(parse_source("test://"), gstreamer=True).path == "none"
    assert plan_decode(parse_source("csi://0"), gstreamer=True).path == "gstreamer"
    http = plan_decode(parse_source("http://cam/v.mjpg"), gstreamer=True, target="jetson")
    assert http.path == "opencv" and "only rtsp://" in http.reason
    import cv2
    import numpy as np

    clip = tmp_path / "mjpeg.avi"  # not H.264/H.265: FFmpeg decodes it
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    plan = plan_decode(parse_source(str(clip)), gstreamer=True, target="jetson")
    assert plan.path == "opencv" and "not an H.264/H.265 file" in plan.reason


def test_camera_modes_are_parsed_as_v4l2_ctl_shows_them_and_picked():
    assert [m.describe() for m in MODES] == [
        "mjpeg 1280x720@30", "mjpeg 1280x720@15", "mjpeg 640x480@30", "yuyv 640x480@30", "yuyv 1280x720@10",
        "h264 1920x1080@30"]
    assert pick_mode("/dev/video0", MODES, "mjpeg", (1280, 720), 15) == CameraMode("MJPG", 1280, 720, 15.0)
    assert pick_mode("/dev/video0", MODES, "mjpeg", None, None) == CameraMode("MJPG", 1280, 720, 30.0)
    with pytest.raises(DataError) as err:
        pick_mode("/dev/video0", MODES, "mjpeg", (1920, 1080), 60)
    message = str(err.value)
    assert message.startswith("camera /dev/video0 has no mode mjpeg 1920x1080@60; it has: mjpeg 1280x720@30, ")
    assert "h264 1920x1080@30" in message and "--camera 0?format=mjpeg&size=1280x720&fps=30" in message


def test_camera_option_picks_a_mode_and_the_plan_builds_its_pipeline():
    spec = camera_spec("2?size=1280x720&fps=30&format=mjpeg")
    assert (spec.path, spec.index, spec.size(), spec.camera_format()) == ("/dev/video2", 2, (1280, 720), "mjpeg")
    assert spec.describe() == "v4l2:///dev/video2?size=1280x720&fps=30&format=mjpeg"
    plan = plan_decode(spec, gstreamer=True, target="jetson", target_hw=(320, 320), modes=MODES)
    assert plan.path == "gstreamer"
    assert plan.pipeline.tokens[:8] == ["v4l2src", "device=/dev/video2", "!",
                                        "image/jpeg, width=(int)1280, height=(int)720, framerate=(fraction)30/1",
                                        "!", "jpegparse", "!", "nvv4l2decoder"]
    assert plan.pipeline.tokens[8] == "mjpeg=1"
    raw = plan_decode(camera_spec("0?format=yuyv&size=640x480"), gstreamer=True, target="jetson", modes=MODES)
    assert raw.path == "opencv" and "raw yuyv camera mode" in raw.reason
    with pytest.raises(DataError, match="has no mode mjpeg 800x600; it has: mjpeg 1280x720@30"):
        plan_decode(camera_spec("0?format=mjpeg&size=800x600"), gstreamer=True, target="jetson", modes=MODES)
    with pytest.raises(EdgeError, match="format='vp9'.*expected mjpeg, h264 or yuyv"):
        camera_spec("0?format=vp9")
    with pytest.raises(EdgeError, match="expected a camera index"):
        camera_spec("zero")


def test_edge_run_camera_flag_takes_a_mode_and_reports_the_modes_the_camera_has(tmp_path, capsys):
    # --print-pipeline for a camera needs no device: the mode given is what is printed
    assert edge_run_main(["--camera", "0?size=1920x1080&fps=30&format=h264", "--print-pipeline"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("v4l2src device=/dev/video0 '!' 'video/x-h264, width=(int)1920, height=(int)1080, "
                           "framerate=(fraction)30/1' '!' h264parse '!' nvv4l2decoder '!' nvvidconv '!'")


# -- with real GStreamer -------------------------------------------------------------------------------


def _launchable(pipeline: Pipeline) -> str:
    """The software equivalent as a shell line for gst-launch-1.0. gst-launch has no consumer pulling from
    appsink, so the test adds ``wait-on-eos=false`` (OpenCV pulls every sample; EOS then ends the run)."""
    return software_equivalent(pipeline).shell_line() + " wait-on-eos=false"


def _launch(line: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"gst-launch-1.0 -v {line}"], capture_output=True, text=True,
                          timeout=timeout)


def _appsink_caps(output: str) -> str:
    lines = [ln for ln in output.splitlines() if "GstAppSink" in ln and "caps = " in ln]
    assert lines, output[-3000:]
    return lines[-1]


def _encode(path: Path, encoder: str, mux: str, size=(640, 360), frames: int = 30) -> Path:
    gst = (f"videotestsrc num-buffers={frames} pattern=ball ! video/x-raw, width={size[0]}, height={size[1]}, "
           f"framerate=30/1 ! {encoder} ! {mux} filesink location={shlex.quote(str(path))}")
    subprocess.run(["bash", "-c", f"gst-launch-1.0 -q {gst}"], check=True, timeout=120)
    return path


@pytest.mark.gstreamer
@pytest.mark.parametrize("name,encoder,mux", [
    ("clip one.mp4", "x264enc", "h264parse ! mp4mux !"),        # a blank in the path: quoted for gst and shell
    ("clip.mkv", "x265enc", "h265parse ! matroskamux !"),
    ("clip.h264", "x264enc", "h264parse ! video/x-h264, stream-format=byte-stream !"),
])
def test_file_pipelines_run_in_gst_launch(gstreamer, tmp_path, name, encoder, mux):
    clip = _encode(tmp_path / name, encoder, mux)
    plan = plan_decode(parse_source(str(clip)), gstreamer=True, target="jetson", target_hw=(320, 320))
    assert plan.path == "gstreamer" and plan.pipeline.tokens[-2:] == ["appsink", "sync=false"]  # no drops
    run = _launch(_launchable(plan.pipeline))
    assert run.returncode == 0 and "Got EOS" in run.stdout, run.stdout[-3000:] + run.stderr
    caps = _appsink_caps(run.stdout)
    assert "width=(int)320, height=(int)180" in caps and "format=(string)BGR," in caps  # 16:9 into 320x320


@pytest.mark.gstreamer
def test_the_printed_file_pipeline_pastes_into_a_shell(gstreamer, tmp_path, capsys):
    clip = _encode(tmp_path / "it's here.mp4", "x264enc", "h264parse ! mp4mux !")
    assert edge_run_main(["--source", str(clip), "--print-pipeline"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("appsink sync=false")
    run = _launch(_launchable(Pipeline(shlex.split(line))))  # the line as a shell splits it
    assert run.returncode == 0 and "Got EOS" in run.stdout, run.stdout[-3000:] + run.stderr


@pytest.mark.gstreamer
@pytest.mark.parametrize("fmt,encoder", [("mjpeg", "jpegenc"), ("h264", "x264enc tune=zerolatency")])
def test_camera_pipelines_run_in_gst_launch(gstreamer, fmt, encoder):
    """No camera here: ``v4l2src device=...`` is stood in by a live test source encoding the camera's
    format (what a UVC camera in that mode sends); the rest of the pipeline runs as built."""
    size = "1280x720" if fmt == "mjpeg" else "1920x1080"  # modes the camera in MODES has
    spec = camera_spec(f"0?size={size}&fps=30&format={fmt}")
    plan = plan_decode(spec, gstreamer=True, target="jetson", target_hw=(256, 256), modes=MODES)
    assert plan.pipeline.tokens[-4:] == ["appsink", "drop=true", "max-buffers=1", "sync=false"]  # latest frame
    line = _launchable(plan.pipeline)
    assert line.startswith("v4l2src device=/dev/video0 '!' ")
    stand_in = f"videotestsrc is-live=true num-buffers=20 pattern=ball '!' {encoder} '!' "
    run = _launch(stand_in + line[len("v4l2src device=/dev/video0 '!' "):])
    assert run.returncode == 0 and "Got EOS" in run.stdout, run.stdout[-3000:] + run.stderr
    caps = _appsink_caps(run.stdout)
    assert "width=(int)256, height=(int)144" in caps and "format=(string)BGR," in caps


@pytest.mark.gstreamer
def test_rtsp_pipeline_reads_the_real_server(rtsp_server):
    spec = parse_source(rtsp_server.url(query="transport=tcp&latency=100&size=320x240"))
    plan = plan_decode(spec, gstreamer=True, target="jetson", target_hw=(128, 128))
    assert SECRET not in plan.pipeline.redacted()
    proc = subprocess.Popen(["bash", "-c", f"exec gst-launch-1.0 -v {software_equivalent(plan.pipeline).shell_line()}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    caps, seen = "", []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ln = proc.stdout.readline()
            if not ln:
                break
            seen.append(ln)
            if "GstAppSink" in ln and "caps = " in ln:
                caps = ln
                break
    finally:
        proc.terminate()
        proc.wait(10)
    assert "width=(int)128, height=(int)96" in caps and "format=(string)BGR," in caps, "".join(seen)[-3000:]


# -- through a real OpenCV built with GStreamer -------------------------------------------------------

_READ_WITH_SYSTEM_OPENCV = r"""
import json, sys, time
from edge.runtime.plan import plan_decode
from edge.runtime.sources.base import CaptureStatus
from edge.runtime.sources.factory import open_source
from edge.runtime.sources.uri import parse_source

spec = parse_source(sys.argv[1])
plan = plan_decode(spec, decode="gstreamer", target="software", target_hw=(320, 320))
source = open_source(spec, target_hw=(320, 320), decode=plan)
source.open()
frames, shapes, end = 0, set(), time.monotonic() + 20
while time.monotonic() < end and frames < int(sys.argv[2]):
    status, frame = source.read()
    if status is not CaptureStatus.FRAME:
        break
    frames += 1
    shapes.add(frame.shape)
source.close()
print(json.dumps({"type": type(source).__name__, "path": plan.path, "frames": frames,
                  "shapes": sorted(shapes), "status": status.value, "live": source.live}))
"""


def _system_opencv_missing():
    probe = "import cv2, re, sys; sys.exit(not re.search(r'GStreamer:\\s*YES', cv2.getBuildInformation()))"
    if subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True).returncode != 0:
        return "the system Python has no OpenCV with GStreamer (apt-get install python3-opencv)"
    return None


def _read_with_system_opencv(uri: str, frames: int) -> dict:
    import json
    import os

    from tests.paths import REPO

    run = subprocess.run(["/usr/bin/python3", "-c", _READ_WITH_SYSTEM_OPENCV, uri, str(frames)], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.gstreamer
def test_a_real_gstreamer_opencv_reads_a_file_pipeline_without_drops(gstreamer, tmp_path):
    """Debian's OpenCV (GStreamer: YES) under the system Python opens the pipeline edge builds through
    ``PipelineSource`` (cv2.CAP_GSTREAMER): every frame of the file, at the size nvvidconv would give."""
    why = _system_opencv_missing()
    if why:
        pytest.skip(why)
    clip = _encode(tmp_path / "a clip.mp4", "x264enc", "h264parse ! mp4mux !", frames=30)
    got = _read_with_system_opencv(str(clip), 1000)
    assert got == {"type": "PipelineSource", "path": "gstreamer", "frames": 30, "shapes": [[180, 320, 3]],
                   "status": "end", "live": False}


@pytest.mark.gstreamer
def test_a_real_gstreamer_opencv_reads_the_rtsp_server_through_the_pipeline(rtsp_server):
    why = _system_opencv_missing()
    if why:
        pytest.skip(why)
    got = _read_with_system_opencv(rtsp_server.url(query="transport=tcp&size=320x240"), 20)
    assert got == {"type": "PipelineSource", "path": "gstreamer", "frames": 20, "shapes": [[240, 320, 3]],
                   "status": "frame", "live": True}


def test_print_pipeline_for_a_csi_sensor_and_one_line_errors_for_sources_without_a_pipeline(capsys, caplog):
    assert edge_run_main(["--source", "csi://1?size=1280x720&fps=60", "--print-pipeline"]) == 0
    tokens = shlex.split(capsys.readouterr().out.strip())
    assert tokens[:4] == ["nvarguscamerasrc", "sensor-id=1", "!",
                          "video/x-raw(memory:NVMM), width=(int)1280, height=(int)720, "
                          "framerate=(fraction)60/1, format=(string)NV12"]
    assert "video/x-raw, width=(int)320, height=(int)180, format=(string)BGRx" in tokens
    assert edge_run_main(["--source", "test://", "--print-pipeline"]) == 2
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "--print-pipeline: test:// has no GStreamer pipeline (generated frames); edge-run opens it through OpenCV"]
    assert "Traceback" not in caplog.text


@pytest.mark.gstreamer
def test_the_printed_csi_pipeline_runs_with_a_stand_in_sensor(gstreamer, capsys):
    """No CSI sensor here: ``nvarguscamerasrc`` is stood in by a live test source producing the NV12
    frames the sensor's caps ask for; the rest runs as printed, through the software mapping."""
    assert edge_run_main(["--source", "csi://0?size=1280x720&fps=30", "--print-pipeline"]) == 0
    tokens = shlex.split(capsys.readouterr().out.strip())
    assert tokens[:2] == ["nvarguscamerasrc", "sensor-id=0"]
    line = _launchable(Pipeline(["videotestsrc", "is-live=true", "num-buffers=10", *tokens[2:]]))
    run = _launch(line)
    assert run.returncode == 0 and "Got EOS" in run.stdout, run.stdout[-3000:] + run.stderr
    assert "width=(int)320, height=(int)180" in _appsink_caps(run.stdout)
