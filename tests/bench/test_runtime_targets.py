"""Runtime changes made for the bench's targets: host stages at a lower priority than inference, and MJPEG
.avi written by libjpeg-turbo + FFmpeg's muxer."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.runtime.synthetic import draw_red_box

# -- runtime change made for the bench's targets: host stages at a lower priority than inference ---------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature")
@pytest.mark.parametrize("host_nice", [0, 7])
def test_pipeline_host_threads_run_below_the_inference_thread(model, tmp_path, host_nice):
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions
    from edge.runtime.pipeline import Pipeline, PipelineConfig
    from edge.runtime.priority import thread_nice
    from edge.runtime.sinks import Sink
    from edge.runtime.sources import open_source, parse_source

    seen = {}

    class Probe(OnnxRuntimeBackend):
        def bind_thread(self) -> None:
            seen["infer"] = thread_nice()

    class NiceSink(Sink):
        def write(self, packet) -> None:
            seen["sink"] = thread_nice()

    class NiceSource(type(open_source(parse_source("test://64x48?frames=4")))):
        def read(self, out=None):
            seen["capture"] = thread_nice()
            return super().read(out)

    base = thread_nice()
    source = NiceSource(parse_source("test://64x48?frames=4"))
    with Probe(model, OrtOptions(threads=1)) as backend:
        stats = Pipeline(source, backend, [NiceSink()], PipelineConfig(host_nice=host_nice, log_every_s=0)).run()
    assert stats.counters.written == 4
    expected = min(19, base + host_nice)
    assert seen == {"infer": base, "sink": expected, "capture": expected}
    assert thread_nice() == base  # the caller's own priority is untouched


def test_priority_helper_never_touches_the_main_thread_and_checks_its_config():
    import threading

    from edge.runtime.pipeline import PipelineConfig
    from edge.runtime.priority import lower_thread_priority, thread_nice

    before = thread_nice()
    assert lower_thread_priority(5) is False and thread_nice() == before  # main thread: the process id
    got = {}

    def worker():
        got["zero"] = lower_thread_priority(0)
        got["applied"] = lower_thread_priority(3)
        got["nice"] = thread_nice()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert got["zero"] is False
    if sys.platform.startswith("linux"):
        assert got["applied"] is True and got["nice"] == min(19, before + 3)
    assert thread_nice() == before
    with pytest.raises(EdgeError, match="host_nice"):
        PipelineConfig(host_nice=25).validate()


# -- runtime change made for the bench's targets: MJPEG .avi written by libjpeg-turbo + FFmpeg's muxer -----


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_sink_writes_every_frame_faithfully(tmp_path, suffix):
    from types import SimpleNamespace

    from edge.runtime.sinks import VideoFileSink, raw_mjpeg_supported

    frames = []
    for i in range(12):
        f = np.full((120, 160, 3), 60, np.uint8)
        frames.append(draw_red_box(f, (10 + 5 * i, 20, 70 + 5 * i, 90)))
    sink = VideoFileSink(tmp_path / f"out{suffix}", fps=24)
    for f in frames:
        sink.write(SimpleNamespace(frame=f))
    sink.close()
    if suffix == ".avi" and raw_mjpeg_supported():
        assert sink.encoder == "imencode+mux"
    else:
        assert sink.encoder == "opencv"
    cap = cv2.VideoCapture(str(tmp_path / f"out{suffix}"))
    got = []
    while True:
        ok, g = cap.read()
        if not ok:
            break
        got.append(g)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(24.0)
    cap.release()
    assert len(got) == len(frames)
    for a, b in zip(got, frames):  # same frames, in order (the box moves 5 px a frame)
        assert cv2.PSNR(a, b) > 30
    with pytest.raises(EdgeError, match="jpeg_quality"):
        VideoFileSink(tmp_path / "q.avi", jpeg_quality=101)
