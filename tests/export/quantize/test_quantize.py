"""``edge quantize`` on graphs exported by ``edge export``: the Q/DQ form TensorRT expects (symmetric int8,
per-channel weights, per-tensor activations, float bias, decode/sigmoid/softmax left in float), the three
calibration methods, the FP16 graph (float32 I/O kept, decode in fp32 when fp16 would move boxes), the
sidecar and provenance, and ``edge surgery`` / ``edge eval`` / the engine builder's ONNX inspection on
the results.

Real components: random-weight detectors exported with ``edge.export.torch_export`` (128 px), calibration
on real BCCD images through the repository's manifest, ONNX Runtime quantization and sessions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from edge.artifacts import read_sidecar, sha256_file
from edge.cli.main import main
from edge.data.calibration import ImageBatcher, source_from_manifest
from edge.errors import EdgeError, ModelError
from edge.export.quantize import (
    Int8Quantizer,
    QuantizeConfig,
    build_fp16,
    check_trt_qdq,
    fp16_simulation,
    output_errors,
    partition_graph,
    quantize_file,
    run_outputs,
)
from edge.model_input import model_input_format

torch = pytest.importorskip("torch")

from tests.paths import BCCD, REPO  # noqa: E402

MANIFEST = REPO / "calibration" / "bccd-trainval-64.txt"
pytestmark = pytest.mark.skipif(not (BCCD / "JPEGImages").is_dir(), reason=f"BCCD dataset not found at {BCCD}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Dict[str, Path]:
    """yolov3-tiny with the uint8 NHWC BGR input and SSD (softmax scores) with the float NCHW input, 128 px."""
    from edge.export.torch_export import ExportConfig, export_source, source_from_model
    from tests.export.test_torch_export import CLASSES, make_model

    out = {}
    for arch, layout in (("yolov3-tiny", "uint8-nhwc-bgr"), ("ssd", "float-nchw")):
        folder = tmp_path_factory.mktemp(arch)
        source = source_from_model(make_model(arch), CLASSES)
        (result,) = export_source(source, folder, ExportConfig(input_layout=layout, random_samples=1))
        out[arch] = result.onnx_path
    return out


def calib_batches(path: Path, count: int = 8):
    fmt = model_input_format(path)
    return list(ImageBatcher(source_from_manifest(MANIFEST, count), fmt))


def producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_int8_is_the_tensorrt_qdq_form(exported):
    path = exported["yolov3-tiny"]
    fp32 = onnx.load(str(path))
    batches = calib_batches(path)
    with Int8Quantizer(fp32, batches, method="entropy", entropy_bins=512) as quantizer:
        q = quantizer.quantize()
        part = quantizer.partition
    onnx.checker.check_model(q)
    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    assert part.weighted == [n.name for n in convs]
    post_ops = {n.op_type for n in fp32.graph.node if n.name in set(part.post)}
    assert {"Sigmoid", "Exp"} <= post_ops  # the YOLO decode is downstream of the raw head outputs
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    prod = producers(q)
    qconvs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert len(qconvs) == len(convs)
    for conv in qconvs:
        act_dq = prod[conv.input[0]]
        w_dq = prod[conv.input[1]]
        assert act_dq.op_type == "DequantizeLinear" and w_dq.op_type == "DequantizeLinear", conv.name
        act_q = prod[act_dq.input[0]]
        assert act_q.op_type == "QuantizeLinear"
        # activations: int8, symmetric (zero point 0), one scale per tensor
        assert init[act_q.input[1]].size == 1 and init[act_q.input[2]].dtype == np.int8
        assert int(init[act_q.input[2]]) == 0
        # weights: float weights -> Q -> DQ, int8 symmetric, one scale per output channel (axis 0)
        w_q = prod[w_dq.input[0]]
        assert w_q.op_type == "QuantizeLinear" and w_q.input[0] in init
        out_channels = init[w_q.input[0]].shape[0]
        assert init[w_q.input[1]].shape == (out_channels,)
        assert init[w_q.input[2]].dtype == np.int8 and not init[w_q.input[2]].any()
        assert {a.name: a.i for a in w_q.attribute}.get("axis", 1) == 0
        # bias stays float (TensorRT rejects an int32 DequantizeLinear)
        if len(conv.input) > 2:
            assert conv.input[2] in init and init[conv.input[2]].dtype == np.float32
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 2 * len(convs)
    for node in q.graph.node:  # nothing of the decode reads a dequantized tensor
        if node.name in set(part.post):
            assert all(prod.get(t) is None or prod[t].op_type != "DequantizeLinear" for t in node.input), node.name
    assert [(o.name, o.type.tensor_type.elem_type) for o in q.graph.output] == \
        [(o.name, o.type.tensor_type.elem_type) for o in fp32.graph.output]
    err = output_errors(run_outputs(q, batches[:2]), run_outputs(fp32, batches[:2]))
    assert 0 < err["max_score_error"] < 0.15 and np.isfinite(err["max_box_error_px"])
    check_trt_qdq(q)


def test_the_trt_form_check_catches_a_quantized_bias(exported, monkeypatch):
    """ONNX Runtime's default quantizes the bias to int32, which TensorRT rejects; the check must see it."""
    path = exported["yolov3-tiny"]
    options = Int8Quantizer.extra_options
    monkeypatch.setattr(Int8Quantizer, "extra_options", lambda self: dict(options(self), QuantizeBias=True))
    with Int8Quantizer(onnx.load(str(path)), calib_batches(path, 2), method="minmax") as quantizer:
        q = quantizer.quantize()
    with pytest.raises(ModelError, match=r"bias_DequantizeLinear has a non-int8 zero point"):
        check_trt_qdq(q)


def test_calibration_methods_give_their_own_ranges(exported):
    path = exported["yolov3-tiny"]
    fp32 = onnx.load(str(path))
    batches = calib_batches(path)
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        with Int8Quantizer(fp32, batches, method=method, percentile=99.9 if method == "percentile" else None,
                           entropy_bins=512) as q:
            model = q.quantize()
        init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        prod = producers(model)
        scales[method] = np.array([float(init[prod[prod[n.input[0]].input[0]].input[1]])
                                   for n in model.graph.node if n.op_type == "Conv"])
    assert np.all(scales["percentile"] <= scales["minmax"] * (1 + 1e-6))
    assert np.all(scales["entropy"] <= scales["minmax"] * (1 + 1e-6))
    assert not np.allclose(scales["percentile"], scales["minmax"]) and not np.allclose(scales["entropy"], scales["minmax"])


def test_fp16_keeps_io_and_decode_precision(exported):
    path = exported["ssd"]
    fp32 = onnx.load(str(path))
    batches = calib_batches(path, 3)
    assert batches[0].dtype == np.float32 and batches[0].shape == (1, 3, 128, 128)
    auto = build_fp16(fp32, batches)
    part = partition_graph(fp32)
    assert "Softmax" in {n.op_type for n in fp32.graph.node if n.name in set(part.post)}
    model = auto.model
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in model.graph.output)
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    rep = auto.report
    assert rep["decode"] in ("fp16", "fp32") and rep["decode_fp16_loss_px"] >= 0
    assert (rep["decode"] == "fp32") == (rep["decode_fp16_loss_px"] > 1e-2)
    assert rep["vs_fp32_max_score_error"] < 1e-2 and rep["sim_vs_fp32_max_score_error"] < 1e-2
    if rep["decode"] == "fp32":
        typed = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
        softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
        assert types[softmax.output[0]] == TensorProto.FLOAT  # decode nodes computed in fp32
    forced = build_fp16(fp32, batches, decode="fp16")
    assert forced.report["decode"] == "fp16" and forced.float32_nodes == []
    # the simulation rounds every tensor of the body to fp16 and stays runnable on CPU
    sim = fp16_simulation(fp32)
    assert sum(1 for n in sim.graph.node if n.op_type == "Cast") > len(fp32.graph.node) // 2
    assert output_errors(run_outputs(sim, batches), run_outputs(fp32, batches))["max_score_error"] < 1e-2


def test_cli_int8_no_gate_then_surgery_eval_and_build_inspection(exported, tmp_path, capsys):
    from edge.export.ort_custom_ops import trt_nms_nodes  # noqa: F401  (onnxruntime-extensions present)
    from edge.runtime.backend import conformance_report
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from edge.trt.onnx_info import inspect_onnx

    src = exported["yolov3-tiny"]
    out = tmp_path / "q" / "tiny.int8.onnx"
    assert main(["quantize", str(src), "--precision", "int8", "--calib", str(MANIFEST), "--calib-count", "8",
                 "--method", "percentile", "--percentile", "99.99", "--no-gate", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["decision"] == "unverified-int8" and summary["calibration_images"] == 8
    side = read_sidecar(out)
    q = side["quantization"]
    assert side["stage"] == "quantize" and side["precision"] == "int8" and side["sha256"] == sha256_file(out)
    assert side["history"][-1]["stage"] == "quantize" and side["history"][-1]["input_sha256"] == sha256_file(src)
    assert q["gate"]["skipped"] and q["method"] == "percentile" and q["percentile"] == 99.99
    cal = q["calibration"]
    assert cal["images"] == 8 and cal["source"]["selection"] == "first 8 of 64"
    assert cal["source_onnx_sha256"] == sha256_file(src) == q["source_onnx_sha256"]
    assert q["calibration_sha256"] == cal["calibration_sha256"] and len(q["calibration_sha256"]) == 64
    assert cal["preprocessing"]["layout"] == "uint8_nhwc_bgr" and cal["preprocessing"]["input_size"] == [128, 128]
    assert {"onnxruntime", "onnx", "opencv", "numpy", "edge"} <= set(cal["tools"])
    assert side["classes"] == ["Platelets", "RBC", "WBC"]  # carried forward from the export
    assert inspect_onnx(str(out)).precision_form == "qdq"

    for nms in ("onnx", "efficient"):
        deploy = tmp_path / "q" / f"tiny.int8.{nms}.onnx"
        assert main(["surgery", str(out), "--nms", nms, "--score-threshold", "0.001", "--iou-threshold", "0.5",
                     "--out", str(deploy)]) == 0
        dside = read_sidecar(deploy)
        assert dside["quantization"]["calibration_sha256"] == q["calibration_sha256"]
        info = inspect_onnx(str(deploy))
        assert info.precision_form == "qdq"
        with OnnxRuntimeBackend(deploy) as backend:
            batches = calib_batches(out, 2)
            assert conformance_report(backend, batches, num_classes=3) == []
    capsys.readouterr()
    # edge eval scores the quantized graph and its deploy graphs alike (same detections -> same mAP)
    data = tmp_path / "bccd4.yaml"
    ids = (BCCD / "ImageSets" / "Main" / "val.txt").read_text().split()[:4]
    (tmp_path / "val4.txt").write_text("\n".join(ids) + "\n")
    data.write_text(f"name: b4\nroot: {BCCD}\nformat: voc\nsplits:\n  val: {tmp_path / 'val4.txt'}\n"
                    "names: [RBC, WBC, Platelets]\n")
    maps = []
    for model in (out, tmp_path / "q" / "tiny.int8.onnx.onnx", tmp_path / "q" / "tiny.int8.efficient.onnx"):
        js = tmp_path / f"{model.stem}.eval.json"
        # the random-weight model names its classes in another order than the dataset: scored by index on purpose
        assert main(["eval", str(model), "--data", str(data), "--split", "val", "--json", str(js),
                     "--map-classes-by-index"]) == 0
        maps.append(json.loads(js.read_text())["map50"])
    assert maps[1] == pytest.approx(maps[0], abs=1e-3) and maps[2] == pytest.approx(maps[0], abs=1e-3)


def test_cli_fp16_with_the_gate_on_bccd(exported, tmp_path, capsys):
    from edge.trt.onnx_info import inspect_onnx

    src = exported["ssd"]
    out = tmp_path / "ssd.fp16.onnx"
    assert main(["quantize", str(src), "--precision", "fp16", "--val-data", str(REPO / "data" / "bccd.yaml"),
                 "--val-split", "val", "--val-count", "3", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["precision"] == "fp16" and summary["decision"] == "fp16"
    report = json.loads(Path(summary["gate_report"]).read_text())
    assert [s["step"] for s in report["steps"]] == ["fp32", "fp16", "fp16-simulated"]
    assert report["validation"]["images"] == 3 and report["budget_points"] == 1.0
    side = read_sidecar(out)
    assert side["quantization"]["fp16"]["decode"] in ("fp16", "fp32") and side["quantization"]["method"] is None
    assert inspect_onnx(str(out)).precision_form == "fp16"


def test_keep_float_and_bad_requests(exported, tmp_path):
    src = exported["yolov3-tiny"]
    first = partition_graph(onnx.load(str(src))).weighted[0]
    calib = source_from_manifest(MANIFEST, 4)
    out = tmp_path / "kf.onnx"
    result = quantize_file(src, out, QuantizeConfig(method="minmax", keep_float=[first]), calib=calib)
    q = onnx.load(str(out))
    prod = producers(q)
    conv = next(n for n in q.graph.node if n.name == first)
    assert prod[conv.input[0]].op_type != "DequantizeLinear"
    assert result.sidecar["quantization"]["float_layers"] == [first]
    assert first not in result.sidecar["quantization"]["layers"]["quantized_layers"]

    with pytest.raises(EdgeError, match="not weighted layers"):
        quantize_file(src, tmp_path / "bad.onnx", QuantizeConfig(keep_float=["nope"]), calib=calib)
    assert not (tmp_path / "bad.onnx").exists() and not (tmp_path / "bad.json").exists()
    with pytest.raises(EdgeError, match="needs calibration images"):
        quantize_file(src, tmp_path / "x.onnx", QuantizeConfig())
    with pytest.raises(EdgeError, match="is the input model"):
        quantize_file(src, src, QuantizeConfig(precision="fp16"))
    with pytest.raises(EdgeError, match="--percentile applies"):
        QuantizeConfig(method="minmax", percentile=99.0).validate()
    deploy = tmp_path / "deploy.onnx"
    assert main(["surgery", str(src), "--nms", "onnx", "--out", str(deploy)]) == 0
    with pytest.raises(ModelError, match="already ends in NMS"):
        quantize_file(deploy, tmp_path / "y.onnx", QuantizeConfig(precision="fp16"))
    assert main(["quantize", str(deploy), "--precision", "fp16", "--no-gate", "--out", str(tmp_path / "z.onnx")]) == 2


ULTRALIGHT = REPO.parent / "shared" / "models" / "ultralight-rfb-320.onnx"


@pytest.mark.skipif(not ULTRALIGHT.is_file(), reason=f"foreign model not found at {ULTRALIGHT}")
def test_foreign_opset9_model_quantizes_and_takes_surgery(tmp_path):
    """A real detector we did not export: opset 9, initializers listed as inputs, no sidecar."""
    import shutil

    from edge.export.presets import HeadSpec
    from edge.export.surgery import SurgeryConfig, surgery_file

    src = tmp_path / "ultralight.onnx"
    shutil.copy(ULTRALIGHT, src)
    out = tmp_path / "ultralight.int8.onnx"
    result = quantize_file(src, out, QuantizeConfig(method="minmax"), calib=source_from_manifest(MANIFEST, 4))
    q = onnx.load(str(out))
    assert next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) >= 13  # per-channel Q/DQ
    assert [i.name for i in q.graph.input] == ["input"]
    assert len(result.sidecar["quantization"]["layers"]["quantized_layers"]) == \
        sum(1 for n in onnx.load(str(src)).graph.node if n.op_type == "Conv")
    deploy = tmp_path / "ultralight.int8.nms.onnx"
    surgery_file(out, deploy, SurgeryConfig(nms="onnx", head=HeadSpec(normalized=True, background_class=0)))
    assert read_sidecar(deploy)["quantization"]["form"] == "qdq"
    # the gate cannot know what a foreign model's outputs mean: it says so instead of scoring nonsense
    from edge.export.quantize.gate import GateConfig

    with pytest.raises(EdgeError, match="--no-gate"):
        quantize_file(src, tmp_path / "g.onnx", QuantizeConfig(precision="fp16"),
                      gate=GateConfig(val_data=str(REPO / "data" / "bccd.yaml")))
