"""The backend conformance suite, run on every backend present, and the ONNX Runtime backend's own checks.

Backends/flavours: ONNX Runtime on the four-output graph (uint8 NHWC and float NCHW inputs), on a graph
with standard ONNX NonMaxSuppression, and on a TensorRT-flavoured graph (EfficientNMS_TRT through the
reference op); the TensorRT backend on the API-contract stand-in (not TensorRT); real TensorRT where it,
PyCUDA and a GPU are present (an engine built from the red-box graph as ``edge build`` builds it; skipped
with the reason elsewhere). Models are the synthetic red-box detector (``edge.runtime.synthetic``), whose
right answer is known to the pixel, plus the real foreign ultralight-rfb-320 model.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelError
from edge.model_input import (
    LAYOUT_FLOAT_NCHW_RGB,
    LAYOUT_UINT8_NHWC_BGR,
    Preprocessor,
    TensorSpec,
    input_format_from_graph,
)
from edge.ort import choose_providers
from edge.runtime.backend import conformance_report, find_output_names
from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions, graph_uses_trt_nms
from edge.runtime.synthetic import draw_red_box, red_box_model
from tests.paths import BCCD, SHARED

ULTRALIGHT = SHARED / "models" / "ultralight-rfb-320.onnx"
RED_A = (10, 20, 50, 40)  # x1, y1, x2, y2 in a 128x96 frame (= the input size: letterbox is identity)
RED_B = (60, 5, 70, 80)


def _with_nms(tmp: Path, flavour: str) -> Path:
    """The pre-NMS red-box graph plus NMS appended by the surgery building blocks."""
    gs = pytest.importorskip("onnx_graphsurgeon")
    import onnx

    from edge.efficient_nms import EfficientNMSParams
    from edge.export.efficient_nms_node import add_efficient_nms
    from edge.export.graph_ops import GraphOps
    from edge.export.nms_graph import add_onnx_nms

    src = red_box_model(tmp / f"pre_{flavour}.onnx", outputs="prenms")
    graph = gs.import_onnx(onnx.load(str(src)))
    ops = GraphOps(graph, 13)
    boxes, scores = graph.outputs
    if flavour == "onnx":
        outs = add_onnx_nms(ops, boxes, scores, score_threshold=0.25, iou_threshold=0.5, max_detections=8, batch=1)
    else:
        params = EfficientNMSParams(score_threshold=0.25, iou_threshold=0.5, max_output_boxes=8)
        outs = add_efficient_nms(ops, boxes, scores, params, batch=1)
    graph.outputs = outs
    graph.cleanup().toposort()
    out = tmp / f"red_{flavour}nms.onnx"
    onnx.save(gs.export_onnx(graph), str(out))
    shutil.copy(src.with_suffix(".json"), out.with_suffix(".json"))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runtime_models")
    return {
        "nms-uint8": red_box_model(tmp / "red_u8.onnx"),
        "nms-float": red_box_model(tmp / "red_f32.onnx", layout=LAYOUT_FLOAT_NCHW_RGB),
        "tmp": tmp,
    }


def _standin_backend(tmp: Path):
    from edge.runtime.tensorrt_backend import TensorRTBackend
    from tests.runtime.test_standins import engine_bytes, make_pycuda, make_tensorrt

    path = tmp / "red.engine"
    path.write_bytes(engine_bytes())
    path.with_suffix(".json").write_text(json.dumps({"class_names": ["tall", "wide"]}))
    drv, st = make_pycuda()
    return TensorRTBackend(path, trt_module=make_tensorrt("10.3.0", st), cuda_driver=drv)


def _real_tensorrt_backend(models):
    """Real TensorRT where ``tensorrt`` and PyCUDA import and a CUDA device answers: an fp32 engine of the
    red-box graph, built (or reused) the way ``edge build`` builds it, sidecar and cache key included, opened
    by the TensorRT backend. Skips naming what is missing anywhere else."""
    from edge.errors import EdgeError, MissingDependencyError
    from edge.runtime.open_model import build_engine_for
    from edge.runtime.tensorrt_backend import TensorRTBackend
    from edge.trt.api import load_tensorrt
    from edge.trt.engine_key import device_info

    try:
        load_tensorrt()
        device_info()  # imports PyCUDA, initializes the driver and asks device 0 for its name and SM
    except MissingDependencyError as exc:
        pytest.skip(f"real TensorRT case: {exc.package} is not installed here (Jetson or a desktop GPU only); "
                    "the API stand-in runs the suite")
    except EdgeError as exc:
        pytest.skip(f"real TensorRT case: no usable CUDA device ({exc})")
    engine = build_engine_for(models["nms-uint8"], out_dir=str(models["tmp"] / "engines"), precision="fp32")
    return TensorRTBackend(engine)


BACKENDS = {
    "onnxruntime-nms-uint8": lambda m: OnnxRuntimeBackend(m["nms-uint8"]),
    "onnxruntime-nms-float": lambda m: OnnxRuntimeBackend(m["nms-float"]),
    "onnxruntime-onnx-nms": lambda m: OnnxRuntimeBackend(_with_nms(m["tmp"], "onnx")),
    "onnxruntime-efficientnms-trt": lambda m: OnnxRuntimeBackend(_with_nms(m["tmp"], "trt")),
    "tensorrt-api-standin": lambda m: _standin_backend(m["tmp"]),
    "tensorrt": _real_tensorrt_backend,
}
#: the real-TensorRT case carries the markers of what it needs (``-m "not gpu"`` leaves it out)
BACKEND_PARAMS = [
    pytest.param(name, marks=[pytest.mark.tensorrt, pytest.mark.pycuda, pytest.mark.gpu]) if name == "tensorrt"
    else name
    for name in BACKENDS
]


def _frames():
    a = np.full((96, 128, 3), 40, np.uint8)
    draw_red_box(a, RED_A)
    b = np.zeros((96, 128, 3), np.uint8)
    draw_red_box(b, RED_B)
    b[70:90, 100:120] = (255, 0, 0)  # a blue patch: not red, must not be detected
    return a, b


def _batches(backend):
    pre = Preprocessor(backend.input_format)
    out = []
    for frame in _frames():
        buf = pre.new_buffer()
        pre(frame, buf)
        out.append(buf)
    return out


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_backend_conformance(models, name):
    backend = BACKENDS[name](models)
    with backend:
        a, b = _batches(backend)
        assert conformance_report(backend, [a, b], num_classes=2) == []
        da, db = backend.infer(a), backend.infer(b)
        assert da.image(0)[0].tolist() == [list(map(float, RED_A))]
        assert db.image(0)[0].tolist() == [list(map(float, RED_B))]
        assert da.image(0)[2].tolist() == [1] and db.image(0)[2].tolist() == [0]  # wide, tall
        np.testing.assert_allclose(da.image(0)[1], [0.9], atol=1e-5)
        empty = np.zeros_like(a)
        assert int(backend.infer(empty).num[0]) == 0
        assert backend.info.class_names == ["tall", "wide"]
    assert backend.closed


def test_trt_flavoured_graph_is_detected_and_runs_through_the_reference_op(models):
    path = _with_nms(models["tmp"], "trt")
    assert graph_uses_trt_nms(path) and not graph_uses_trt_nms(models["nms-uint8"])
    backend = OnnxRuntimeBackend(path)
    assert backend.trt_flavoured and "EfficientNMS_TRT" in backend.describe()
    backend.close()


def test_pre_nms_foreign_model_is_refused_with_the_surgery_command():
    if not ULTRALIGHT.exists():
        pytest.skip(f"{ULTRALIGHT} not present (the shared foreign-model folder is absent)")
    with pytest.raises(ModelError) as err:
        OnnxRuntimeBackend(ULTRALIGHT)
    msg = str(err.value)
    assert "edge surgery" in msg and "scores" in msg and "boxes" in msg


def test_ort_options_providers_and_errors(models, tmp_path):
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(ModelError, match="not available"):
        choose_providers(["NoSuchExecutionProvider"])
    with pytest.raises(ValueError):
        OrtOptions(threads=-1).validate()
    with pytest.raises(ModelError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxRuntimeBackend(garbage)
    be = OnnxRuntimeBackend(models["nms-uint8"], OrtOptions(threads=1, spin=False))
    assert "1 threads" in be.describe()
    be.close()
    be.close()  # idempotent


def test_output_names_by_suffix_and_by_shape():
    names = ["nms/num_detections", "nms/detection_boxes", "nms/detection_scores", "nms/detection_classes"]
    mapping = find_output_names(names, [(1, 1), (1, 8, 4), (1, 8), (1, 8)])
    assert mapping["detection_boxes"] == "nms/detection_boxes"
    by_shape = find_output_names(["a", "b", "c", "d"], [(1, 1), (1, 8, 4), (1, 8), (1, 8)])
    assert list(by_shape.values()) == ["a", "b", "c", "d"]
    with pytest.raises(ModelError, match="edge surgery"):
        find_output_names(["boxes", "scores"], [(1, 100, 4), (1, 100, 3)])


def test_input_format_from_graph_without_a_sidecar(caplog):
    fmt = input_format_from_graph(TensorSpec("x", (1, 240, 320, 3), np.dtype(np.uint8)))
    assert (fmt.layout, fmt.height, fmt.width) == (LAYOUT_UINT8_NHWC_BGR, 240, 320)
    with caplog.at_level(logging.WARNING):
        fmt = input_format_from_graph(TensorSpec("x", (1, 3, 240, 320), np.dtype(np.float32)))
    assert fmt.layout == LAYOUT_FLOAT_NCHW_RGB and "normalization" in caplog.text
    with pytest.raises(ModelError, match="layout"):
        input_format_from_graph(TensorSpec("x", (1, 5, 240, 320), np.dtype(np.float32)))
    with pytest.raises(ModelError, match="not static"):
        input_format_from_graph(TensorSpec("x", (1, 3, -1, -1), np.dtype(np.float32)))
    sized = input_format_from_graph(TensorSpec("x", (1, 3, -1, -1), np.dtype(np.float32)),
                                    {"input_size": [64, 96], "normalization": {"scale": 1.0, "mean": [0.5] * 3,
                                                                               "std": [0.25] * 3}})
    assert (sized.height, sized.width, sized.scale, sized.mean) == (64, 96, 1.0, (0.5, 0.5, 0.5))


def test_foreign_model_float_preprocessing_matches_its_readme():
    """ultralight-rfb-320 wants RGB (pixel - 127) / 128: the preprocessor must produce exactly that."""
    from edge.model_input import InputFormat

    fmt = InputFormat(layout=LAYOUT_FLOAT_NCHW_RGB, height=240, width=320, dtype="float32", scale=1.0,
                      mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
    pre = Preprocessor(fmt)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # same size: letterbox is a copy
    buf = pre.new_buffer()
    pre(frame, buf)
    expected = (frame[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) - 127.0) / 128.0
    np.testing.assert_allclose(buf[0], expected, atol=1e-6)
    if ULTRALIGHT.exists():  # and the real model accepts the tensor
        import onnxruntime as ort

        sess = ort.InferenceSession(str(ULTRALIGHT), providers=["CPUExecutionProvider"])
        scores, boxes = sess.run(None, {"input": buf})
        assert scores.shape == (1, 4420, 2) and boxes.shape == (1, 4420, 4)




@pytest.mark.parametrize("nms", ["onnx", "efficient"])
def test_real_foreign_model_after_surgery_runs_through_edge_run(tmp_path, nms, monkeypatch):
    """ultralight-rfb-320 (a real SSD from another project) + edge surgery -> conformance and the loop."""
    if not ULTRALIGHT.exists():
        pytest.skip(f"{ULTRALIGHT} not present (the shared foreign-model folder is absent)")
    pytest.importorskip("onnx_graphsurgeon")
    from edge.export.presets import HeadSpec
    from edge.export.surgery import SurgeryConfig, surgery_file

    deploy = tmp_path / f"ultralight_{nms}.onnx"
    surgery_file(ULTRALIGHT, deploy, SurgeryConfig(
        nms=nms, max_detections=20, classes=["face"], head=HeadSpec(normalized=True, background_class=0)))
    # the model's own preprocessing (its README), which a foreign model's sidecar cannot know
    sidecar = json.loads(deploy.with_suffix(".json").read_text())
    sidecar["normalization"] = {"scale": 1.0, "mean": [127.0] * 3, "std": [128.0] * 3}
    deploy.with_suffix(".json").write_text(json.dumps(sidecar))
    backend = OnnxRuntimeBackend(deploy, OrtOptions(threads=1))
    assert backend.input_format.layout == LAYOUT_FLOAT_NCHW_RGB and backend.info.max_detections == 20
    pre = Preprocessor(backend.input_format)
    frames = [np.full((480, 640, 3), 90, np.uint8), np.zeros((240, 320, 3), np.uint8)]
    if BCCD.exists():
        import cv2

        frames = [cv2.imread(str(p)) for p in sorted((BCCD / "JPEGImages").glob("*.jpg"))[:2]]
    batches = []
    for f in frames:
        buf = pre.new_buffer()
        pre(f, buf)
        batches.append(buf)
    assert conformance_report(backend, batches, num_classes=1) == []
    backend.close()

    from edge.cli.run import main

    monkeypatch.delenv("DISPLAY", raising=False)
    source = str(BCCD / "JPEGImages") if BCCD.exists() else "test://320x240?frames=4"
    stats_path = tmp_path / "stats.json"
    rc = main([str(deploy), "--source", source, "--max-frames", "4", "--headless", "--threads", "1",
               "--output", str(tmp_path / "out.avi"), "--stats-json", str(stats_path)])
    assert rc == 0
    stats = json.loads(stats_path.read_text())
    assert stats["frames"]["written"] == 4 and stats["frames"]["inferred"] == 4


def test_float16_input_preprocessing_equals_float32_rounded():
    from edge.model_input import InputFormat

    common = dict(layout=LAYOUT_FLOAT_NCHW_RGB, height=48, width=64, scale=255.0, mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225))
    frame = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    p32, p16 = Preprocessor(InputFormat(dtype="float32", **common)), Preprocessor(InputFormat(dtype="float16", **common))
    b32, b16 = p32.new_buffer(), p16.new_buffer()
    assert b16.dtype == np.float16 and b16.shape == (1, 3, 48, 64)
    params = p32(frame, b32)
    p16(frame, b16)
    np.testing.assert_array_equal(b16, b32.astype(np.float16))
    assert (params.scale, params.pad_x, params.pad_y) == (0.5, 0, 0)
