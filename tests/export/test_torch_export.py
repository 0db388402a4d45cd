"""``edge.export.torch_export``: parity of the exported graphs with PyTorch for every detector family, the
folded uint8 preprocessing, dynamic batch and H/W, per-resolution anchors, the sidecar, and the
self-verification failing (and writing nothing) on graphs that do not compute the model.

Everything runs for real: random-weight models from ``build_model`` with small configs (128 px), real
``torch.onnx.export``, real ONNX files, real ONNX Runtime sessions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edge.artifacts import sha256_file
from edge.errors import ModelError
from edge.export.export_types import ExportSource, parse_size
from edge.export.preprocess import (
    LAYOUT_FLOAT_NCHW,
    LAYOUT_UINT8_NHWC_BGR,
    NormalizationSpec,
    preprocess_numpy,
    sample_frames,
    wrap_with_preprocessing,
)
from edge.export.simplify import simplify_and_verify
from edge.export.torch_export import (
    ExportConfig,
    export_source,
    reference_samples,
    source_from_model,
    verify_against_torch,
)
from edge.export.verify import MIN_INPUT_SPREAD, check_graph, input_spread, ort_session, relative_error
from edge.models import build_model
from tests.paths import BCCD

CLASSES = ["Platelets", "RBC", "WBC"]

# small configs: a few MB each, exported and verified in seconds on a 2-core CPU
FAMILIES: Dict[str, Dict[str, Any]] = {
    "ssd": {"num_classes": 3, "input_size": [128, 128], "width": 0.25},
    "yolov2": {"num_classes": 3, "input_size": [128, 128], "width": 0.25},
    "yolov3": {"num_classes": 3, "input_size": [128, 128], "width": 0.25, "depth": 0.34},
    "yolov3-tiny": {"num_classes": 3, "input_size": [128, 128], "width": 0.25},
    "retinanet": {"num_classes": 3, "input_size": [128, 128], "width": 0.25, "fpn_channels": 16, "head_depth": 1},
}


def make_model(arch: str, seed: int = 0, **overrides: Any) -> Any:
    """A random-weight detector whose outputs depend on its input: BatchNorm running statistics are
    recalibrated on random images (with PyTorch's default init and unit running statistics, activations
    shrink layer after layer and a deep random model's scores hardly move with the input), with variances
    floored at 0.01."""
    torch.manual_seed(seed)
    cfg = dict(FAMILIES[arch])
    cfg.update(overrides)
    model = build_model(arch, **cfg)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    size = tuple(cfg["input_size"])
    model.train()
    with torch.no_grad():
        for _ in range(2 if bns else 0):
            model(torch.randn(2, 3, size[0], size[1]))
        # channels that random weights left dead (variance ~0) would amplify float rounding ~100x: a trained
        # model's statistics do not look like that, and parity at 1e-4 is meant for those
        for m in bns:
            m.running_var.clamp_(min=1e-2)
    return model.eval()


def ort_run(path: Path, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    sess = ort_session(path)
    boxes, scores = sess.run(["boxes", "scores"], {"images": x})
    return boxes, scores


def torch_run(module: Any, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        boxes, scores = module(torch.from_numpy(x))
    return boxes.numpy(), scores.numpy()


def num_boxes(model: Any, size: Tuple[int, int] = (128, 128)) -> int:
    """N of the model's [B, N, 4] output at ``size``: anchors (SSD, RetinaNet) or predictions (YOLO)."""
    if hasattr(model, "num_predictions"):
        return int(model.num_predictions(size))
    return int(model.num_anchors)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """arch -> (model, source, result): each family exported once at 128x128 with a dynamic batch and the
    default uint8 NHWC BGR input, on first use."""
    cache: Dict[str, Any] = {}

    def get(arch: str):
        if arch not in cache:
            model = make_model(arch)
            source = source_from_model(model, CLASSES)
            results = export_source(source, tmp_path_factory.mktemp(f"export_{arch}"),
                                    ExportConfig(dynamic_batch=True))
            assert len(results) == 1
            cache[arch] = (model, source, results[0])
        return cache[arch]

    return get


ALL = pytest.mark.parametrize("arch", sorted(FAMILIES))


# ------------------------------------------------------------------------------------------ parity


@ALL
def test_parity_with_pytorch_on_fresh_inputs(exports, arch):
    """The written file, in a new ONNX Runtime session, on inputs the export never saw (batch 3, another
    seed), matches the PyTorch model within the stated tolerance: max|a-b| / max(1, max|b|) <= 1e-4."""
    model, source, result = exports(arch)
    frames = sample_frames(3, (128, 128), seed=12345)
    ref = wrap_with_preprocessing(model, LAYOUT_UINT8_NHWC_BGR, source.normalization).eval()
    tb, ts = torch_run(ref, frames)
    ob, os_ = ort_run(result.onnx_path, frames)
    assert ob.shape == tb.shape and os_.shape == ts.shape
    assert ts.shape[-1] == len(CLASSES), "scores must have C columns (no background)"
    assert relative_error(ob, tb) <= 1e-4, arch
    assert relative_error(os_, ts) <= 1e-4, arch
    # the comparison is meaningful: outputs depend on the input and scores are probabilities
    tb2, ts2 = torch_run(ref, sample_frames(3, (128, 128), seed=999))
    assert input_spread({"scores": ts}, {"scores": ts2})["scores"] > MIN_INPUT_SPREAD, \
        f"{arch}: scores hardly depend on the input"
    assert ts.min() >= 0.0 and ts.max() <= 1.0
    # each image of a batch is independent of the others
    ob1, os1 = ort_run(result.onnx_path, frames[1:2])
    assert relative_error(os1, os_[1:2]) <= 1e-5 and relative_error(ob1, ob[1:2]) <= 1e-5


@ALL
def test_graph_passes_checker_and_shape_inference_with_named_outputs(exports, arch):
    model, source, result = exports(arch)
    proto = onnx.load(str(result.onnx_path))
    inferred = check_graph(proto, arch)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["boxes", "scores"]
    inp = proto.graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.shape.dim]
    assert dims == ["batch", 128, 128, 3]
    out_dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
                for o in inferred.graph.output}
    n = num_boxes(model)
    assert out_dims == {"boxes": ["batch", n, 4], "scores": ["batch", n, 3]}
    assert [(op.domain, op.version) for op in proto.opset_import] == [("", 17)]
    assert {n.domain for n in proto.graph.node} <= {""}, "only standard ONNX ops"


@ALL
def test_sidecar_content(exports, arch):
    model, source, result = exports(arch)
    side = json.loads(result.sidecar_path.read_text())
    assert result.sidecar_path == result.onnx_path.with_suffix(".json")
    assert side["file"] == result.onnx_path.name
    assert side["sha256"] == sha256_file(result.onnx_path)
    assert side["arch"] == arch and side["opset"] == 17
    assert side["classes"] == CLASSES and side["class_names"] == CLASSES and side["num_classes"] == 3
    assert side["input"] == {
        "name": "images", "size": [128, 128], "layout": "NHWC", "dtype": "uint8", "channel_order": "BGR",
        "resize": "letterbox", "pad_value": 114, "normalization_in_graph": True, "format": "uint8_nhwc_bgr",
        "shape": ["batch", 128, 128, 3], "dynamic_batch": True, "dynamic_hw": False,
    }
    assert side["input_layout"] == "uint8_nhwc_bgr" and side["input_size"] == [128, 128]
    assert side["normalization"] == model.normalization.to_dict()
    assert side["anchors"] == json.loads(json.dumps(model.anchors_for_card()))
    assert side["anchors"], "every family describes its anchors / default boxes"
    n = side["num_boxes"]["128x128"]
    assert n == num_boxes(model)
    assert side["outputs"]["boxes"]["shape"] == ["batch", n, 4] and side["outputs"]["boxes"]["format"] == "xyxy"
    assert side["outputs"]["boxes"]["units"] == "input pixels"
    assert side["outputs"]["scores"]["shape"] == ["batch", n, 3]
    assert side["outputs"]["scores"]["background_column"] is False
    assert side["export"]["dynamic_batch"] is True and side["export"]["batch"] is None
    for tool in ("torch", "onnx", "onnxruntime", "edge"):
        assert side["export"]["tools"][tool]
    assert side["verification"]["passed"] is True and side["verification"]["tolerance"] == 1e-4
    assert side["verification"]["formula"] == "max|onnx - torch| / max(1, max|torch|)"
    assert {s["input_shape"][0] for s in side["verification"]["samples"]} == {1, 2}, "dynamic batch: B=1 and B=2"
    assert side["config"]["input_size"] == [128, 128]
    # the runtime reads the same file: its input format comes out right
    from edge.model_input import TensorSpec, input_format_from_graph

    fmt = input_format_from_graph(TensorSpec("images", (-1, 128, 128, 3), np.dtype(np.uint8)), side)
    assert (fmt.layout, fmt.height, fmt.width, fmt.pad_value) == ("uint8_nhwc_bgr", 128, 128, 114)
    # and the graph carries the essentials too, for when it is separated from its sidecar
    meta = {p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}
    assert json.loads(meta["edge_classes"]) == CLASSES and meta["edge_input_layout"] == "uint8_nhwc_bgr"


# ------------------------------------------------------------------------------------------ inputs


def test_preprocess_numpy_is_the_documented_formula():
    norm = NormalizationSpec(scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    frames = sample_frames(2, (24, 32), seed=3)
    got = preprocess_numpy(frames, norm)
    rgb = frames[..., ::-1].astype(np.float64).transpose(0, 3, 1, 2)
    want = (rgb / 255.0 - np.array(norm.mean).reshape(1, 3, 1, 1)) / np.array(norm.std).reshape(1, 3, 1, 1)
    assert got.shape == (2, 3, 24, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    with pytest.raises(ModelError, match="uint8"):
        preprocess_numpy(frames.astype(np.float32), norm)


def test_uint8_and_float_inputs_are_equivalent(tmp_path):
    """SSD (ImageNet mean/std, so the folded normalization matters): the uint8 BGR graph on frames equals the
    float NCHW graph on the same frames normalized in numpy, and the float graph equals PyTorch."""
    model = make_model("ssd", seed=1)
    source = source_from_model(model, CLASSES)
    (u8,) = export_source(source, tmp_path / "u8", ExportConfig(batch=2))
    (f32,) = export_source(source, tmp_path / "f32", ExportConfig(batch=2, input_layout=LAYOUT_FLOAT_NCHW,
                                                                     simplify=False))
    side = json.loads(f32.sidecar_path.read_text())
    assert side["input"]["layout"] == "NCHW" and side["input"]["dtype"] == "float32"
    assert side["input"]["channel_order"] == "RGB" and side["input_layout"] == "float_nchw_rgb"
    assert side["export"]["simplify"]["simplified"] is False
    frames = sample_frames(2, (128, 128), seed=77)
    normalized = preprocess_numpy(frames, source.normalization)
    ub, us = ort_run(u8.onnx_path, frames)
    fb, fs = ort_run(f32.onnx_path, normalized)
    assert relative_error(ub, fb) <= 1e-4 and relative_error(us, fs) <= 1e-4
    tb, ts = torch_run(model, normalized)
    assert relative_error(fb, tb) <= 1e-4 and relative_error(fs, ts) <= 1e-4
    # the graph really takes BGR: feeding RGB frames changes the result
    _, us_rgb = ort_run(u8.onnx_path, np.ascontiguousarray(frames[..., ::-1]))
    assert relative_error(us_rgb, us) > 1e-4
    # a static batch of 2 is enforced by the graph
    proto = onnx.load(str(u8.onnx_path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 128, 128, 3]


def test_real_images_from_bccd_verify(tmp_path):
    if not (BCCD / "JPEGImages").is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD}")
    images = sorted((BCCD / "JPEGImages").glob("*.jpg"))[:3]
    model = make_model("yolov3-tiny", seed=2)
    (res,) = export_source(source_from_model(model, CLASSES), tmp_path,
                           ExportConfig(imgsz=["96x128"], verify_images=images, random_samples=1))
    names = [s["name"] for s in res.sidecar["verification"]["samples"]]
    assert names == ["random0 96x128 b1", "images0 96x128 b1", "images1 96x128 b1", "images2 96x128 b1"]
    assert res.sidecar["verification"]["passed"]


# ------------------------------------------------------------------------------------------ sizes


def test_several_resolutions_give_their_own_anchor_counts(tmp_path):
    model = make_model("retinanet", seed=4)
    source = source_from_model(model, CLASSES)
    results = export_source(source, tmp_path, ExportConfig(imgsz=["128x128", "96x160"], random_samples=1))
    assert [r.onnx_path.name for r in results] == ["retinanet_128x128.onnx", "retinanet_96x160.onnx"]
    counts = []
    for res, size in zip(results, [(128, 128), (96, 160)]):
        rebuilt = build_model("retinanet", **dict(FAMILIES["retinanet"], input_size=list(size)))
        side = json.loads(res.sidecar_path.read_text())
        assert side["input_size"] == list(size) and side["config"]["input_size"] == list(size)
        assert side["num_boxes"][f"{size[0]}x{size[1]}"] == num_boxes(rebuilt, size)
        assert side["anchors"] == json.loads(json.dumps(rebuilt.anchors_for_card()))
        counts.append(rebuilt.num_anchors)
        # same weights at the new size: the graph equals the checkpoint's model rebuilt for that size
        rebuilt.load_state_dict(model.state_dict())
        rebuilt.eval()
        frames = sample_frames(1, size, seed=5)
        ref = wrap_with_preprocessing(rebuilt, LAYOUT_UINT8_NHWC_BGR, source.normalization).eval()
        tb, ts = torch_run(ref, frames)
        ob, os_ = ort_run(res.onnx_path, frames)
        assert relative_error(ob, tb) <= 1e-4 and relative_error(os_, ts) <= 1e-4
    assert counts[0] != counts[1]


def test_dynamic_hw_for_yolo(tmp_path):
    model = make_model("yolov3-tiny", seed=6)
    source = source_from_model(model, CLASSES)
    (res,) = export_source(source, tmp_path, ExportConfig(dynamic_hw=True, dynamic_batch=True, random_samples=2))
    assert res.onnx_path.name == "yolov3-tiny_dynamic.onnx"
    side = json.loads(res.sidecar_path.read_text())
    assert side["input"]["shape"] == ["batch", "height", "width", 3] and side["input"]["dynamic_hw"] is True
    assert side["outputs"]["boxes"]["shape"] == ["batch", "num_boxes", 4]
    assert set(side["num_boxes"]) == {"128x128", "160x192"}
    ref = wrap_with_preprocessing(model, LAYOUT_UINT8_NHWC_BGR, source.normalization).eval()
    for size in [(96, 160), (224, 128)]:  # sizes the export never verified
        frames = sample_frames(2, size, seed=size[0])
        tb, ts = torch_run(ref, frames)
        ob, os_ = ort_run(res.onnx_path, frames)
        assert ob.shape == (2, num_boxes(model, size), 4)
        assert relative_error(ob, tb) <= 1e-4 and relative_error(os_, ts) <= 1e-4


def test_dynamic_hw_refused_for_fixed_default_boxes(tmp_path):
    source = source_from_model(make_model("ssd"), CLASSES)
    with pytest.raises(ModelError, match="--imgsz"):
        export_source(source, tmp_path, ExportConfig(dynamic_hw=True))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ failures


def test_verification_catches_a_corrupted_initializer(exports, tmp_path):
    model, source, result = exports("yolov3-tiny")
    ref = wrap_with_preprocessing(model, LAYOUT_UINT8_NHWC_BGR, source.normalization).eval()
    cases = [("fresh", sample_frames(2, (128, 128), seed=21))]
    # the untouched file passes ...
    report = verify_against_torch(result.onnx_path, ref, cases)
    assert report.passed and set(report.max_errors) == {"boxes", "scores"}
    # ... the same file with one weight tensor nudged does not
    proto = onnx.load(str(result.onnx_path))
    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr.flat[: arr.size // 10] += 0.05
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "corrupted.onnx"
    onnx.save(proto, str(bad))
    check_graph(proto, "corrupted")  # still a valid graph: only the numbers are wrong
    with pytest.raises(ModelError, match="does not match PyTorch"):
        verify_against_torch(bad, ref, cases)


class FrozenScalarDetector(torch.nn.Module):
    """A model that does not trace: it turns a tensor into a Python float, which the trace freezes.

    boxes [B, N, 4] and scores [B, N, 2] from a conv, shifted by the input's mean read as a Python number.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=4, padding=1)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(images).flatten(2).transpose(1, 2)  # [B, N, 6]
        shift = float(images.mean()) * 50.0  # frozen by the tracer
        boxes = torch.cat([y[..., :2] * 10 + 64, y[..., :2] * 10 + 80], dim=-1) + shift
        return boxes, torch.sigmoid(y[..., 4:6])


def frozen_source() -> ExportSource:
    module = FrozenScalarDetector().eval()
    return ExportSource(arch="frozen", class_names=["a", "b"], input_size=(64, 64),
                        normalization=NormalizationSpec(), model_for_size=lambda size: module)


def test_failed_verification_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    previous = out / "frozen_64x64.onnx"
    previous.write_bytes(b"an earlier export")
    with pytest.raises(ModelError, match="does not match PyTorch") as info:
        export_source(frozen_source(), out, ExportConfig(random_samples=3))
    assert "boxes" in str(info.value)
    # no partial or temporary file, no sidecar; an earlier file of the same name is untouched
    assert sorted(p.name for p in out.iterdir()) == ["frozen_64x64.onnx"]
    assert previous.read_bytes() == b"an earlier export"


def test_simplification_is_dropped_when_it_does_not_verify(exports, caplog):
    model, source, result = exports("ssd")
    proto = onnx.load(str(result.onnx_path))
    ref = wrap_with_preprocessing(model, LAYOUT_UINT8_NHWC_BGR, source.normalization).eval()
    good = reference_samples(ref, [("a", sample_frames(1, (128, 128), seed=1))])
    slim, outcome = simplify_and_verify(proto, good, tool="onnx-graphsurgeon", what="ssd")
    assert outcome.simplified and outcome.tool == "onnx-graphsurgeon"
    # references that the graph does not reproduce (outputs of other frames): the simplified graph is
    # rejected and the original returned, with a warning
    wrong = reference_samples(ref, [("b", sample_frames(1, (128, 128), seed=2))])
    wrong[0].inputs = good[0].inputs
    with caplog.at_level(logging.WARNING, logger="edge.export.simplify"):
        kept, outcome = simplify_and_verify(proto, wrong, what="ssd")
    assert kept is proto and not outcome.simplified and "does not match" in outcome.reason
    assert any("keeping the unsimplified graph" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ config


def test_parse_size_and_config_validation():
    assert parse_size("320x256") == (320, 256)
    assert parse_size("320") == (320, 320)
    assert parse_size(416) == (416, 416)
    for bad in ("0x320", "axb", "320x", [1, 2, 3]):
        with pytest.raises(ModelError, match="HxW"):
            parse_size(bad)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="exclude each other"):
        ExportConfig(batch=2, dynamic_batch=True).validate()
    with pytest.raises(ModelError, match="opset 9"):
        ExportConfig(opset=9).validate()
    with pytest.raises(ModelError, match="input layout"):
        ExportConfig(input_layout="nchw").validate()
    with pytest.raises(ModelError, match="twice"):
        ExportConfig(imgsz=["128x128", "128"]).validate()
    with pytest.raises(ModelError, match="tolerance"):
        ExportConfig(tolerance=0).validate()


def test_export_warns_when_the_outputs_barely_depend_on_the_input(tmp_path, caplog, exports):
    """Random weights as PyTorch initializes them (no BatchNorm recalibration, as with a random torchvision
    model): the outputs hardly move with the image, so the graph matching PyTorch proves little. The export
    says so (once) and the sidecar records the spread; a model whose outputs move says nothing of the kind."""
    torch.manual_seed(0)
    flat = build_model("ssd", **FAMILIES["ssd"]).eval()
    caplog.set_level(logging.WARNING)
    (result,) = export_source(source_from_model(flat, CLASSES), tmp_path, ExportConfig())
    lines = [r.getMessage() for r in caplog.records if "proves little" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "the comparison proves little: outputs barely depend on the input (random or untrained weights?)" in \
        lines[0]
    verification = json.loads(result.sidecar_path.read_text())["verification"]
    assert verification["input_dependent"] is False
    assert min(verification["input_spread"].values()) < MIN_INPUT_SPREAD
    _, _, moving = exports("ssd")
    verification = json.loads(moving.sidecar_path.read_text())["verification"]
    assert verification["input_dependent"] is True
    assert set(verification["input_spread"]) == {"boxes", "scores"}
