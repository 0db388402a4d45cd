"""``edge quantize --target onnxruntime``: INT8 in the form ONNX Runtime's CPU provider fuses (uint8
activations, int8 per-channel weights stored quantized, int32 bias, int8 from layer to layer, head layers and
decode in float, input preprocessing folded into the first convolution), in a plain CPU session with no
custom ops; the default TensorRT form unchanged; the options that make no sense for the target refused.

Real components: a random-weight YOLOv3-tiny exported by ``edge.export.torch_export`` (128 px, uint8 NHWC BGR
input), calibration on real BCCD images through the repository's manifest, ONNX Runtime's quantizer, its
graph optimizer and plain ``onnxruntime.InferenceSession`` on CPUExecutionProvider.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.artifacts import read_sidecar
from edge.cli.main import main
from edge.data.calibration import ImageBatcher, source_from_manifest
from edge.errors import EdgeError
from edge.export.quantize import QuantizeConfig, output_errors, partition_graph, quantize_file, run_outputs
from edge.export.quantize.ort_cpu import OrtCpuQuantizer, fold_input_preprocessing
from edge.model_input import model_input_format

torch = pytest.importorskip("torch")

from tests.paths import BCCD, REPO  # noqa: E402

MANIFEST = REPO / "calibration" / "bccd-trainval-64.txt"
pytestmark = pytest.mark.skipif(not (BCCD / "JPEGImages").is_dir(), reason=f"BCCD dataset not found at {BCCD}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Dict[str, Path]:
    """A yolov3-tiny (uint8 NHWC BGR input, 128 px) and its onnxruntime-target INT8 graph (min-max, no gate)."""
    from edge.export.torch_export import ExportConfig, export_source, source_from_model
    from tests.export.test_torch_export import CLASSES, make_model

    folder = tmp_path_factory.mktemp("ort-int8")
    source = source_from_model(make_model("yolov3-tiny"), CLASSES)
    (result,) = export_source(source, folder, ExportConfig(input_layout="uint8-nhwc-bgr", random_samples=1))
    out = folder / "tiny.int8-ort.onnx"
    quantize_file(result.onnx_path, out, QuantizeConfig(method="minmax", target="onnxruntime"),
                  calib=source_from_manifest(MANIFEST, 8))
    return {"fp32": result.onnx_path, "int8": out}


def batches_of(path: Path, count: int = 4):
    return list(ImageBatcher(source_from_manifest(MANIFEST, count), model_input_format(path)))


def plain_session(path_or_model, optimized: Path = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    data = str(path_or_model) if isinstance(path_or_model, Path) else path_or_model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def test_onnxruntime_target_runs_in_a_plain_cpu_session_close_to_fp32(tiny, tmp_path):
    fp32, q = onnx.load(str(tiny["fp32"])), onnx.load(str(tiny["int8"]))
    assert {n.domain for n in q.graph.node} <= {"", "ai.onnx"}  # standard ops only: no custom/contrib domain
    assert [(i.name, i.type.tensor_type.elem_type) for i in q.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in fp32.graph.input]
    batches = batches_of(tiny["fp32"])
    sess = plain_session(tiny["int8"], optimized=tmp_path / "opt.onnx")
    assert sess.get_providers() == ["CPUExecutionProvider"]
    outs = [dict(zip(["boxes", "scores"], sess.run(["boxes", "scores"], {sess.get_inputs()[0].name: b})))
            for b in batches]
    err = output_errors(outs, run_outputs(fp32, batches))
    assert 0 < err["mean_score_error"] < 0.01 and err["max_score_error"] < 0.2, err
    assert err["max_box_error_px"] < 16, err  # 128 px input

    # the form ONNX Runtime fuses: every body convolution but the two head layers becomes QLinearConv, the
    # leaky ReLUs integer too, and a single QuantizeLinear is left (the raw uint8 input needs none)
    opt = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    convs = sum(1 for n in fp32.graph.node if n.op_type == "Conv")
    assert opt.count("QLinearConv") == convs - 2 and opt.count("Conv") == 2
    assert opt.count("QLinearLeakyRelu") == sum(1 for n in fp32.graph.node if n.op_type == "LeakyRelu")
    assert opt.count("QuantizeLinear") <= 1 and "LeakyRelu" not in opt

    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    prod = {o: n for n in q.graph.node for o in n.output}
    qconvs = [n for n in q.graph.node if n.op_type == "Conv" and prod.get(n.input[1]) is not None]
    assert len(qconvs) == convs - 2
    for conv in qconvs:
        act, w = prod[conv.input[0]], prod[conv.input[1]]
        assert act.op_type == w.op_type == "DequantizeLinear"
        assert init[act.input[2]].dtype == np.uint8 and init[act.input[1]].size == 1  # u8 per tensor
        assert init[w.input[0]].dtype == np.int8 and not init[w.input[2]].any()  # s8 symmetric, stored int8
        assert init[w.input[1]].shape == (init[w.input[0]].shape[0],)  # per output channel
        assert init[prod[conv.input[2]].input[0]].dtype == np.int32  # bias int32
    # the preprocessing is folded: the first convolution reads the uint8 pixels with scale 1, zero point 0
    first = qconvs[0]
    dq = prod[first.input[0]]
    assert float(init[dq.input[1]]) == 1.0 and int(init[dq.input[2]]) == 0
    assert "Gather" not in {n.op_type for n in q.graph.node[:4]} and "Mul" not in {n.op_type for n in q.graph.node[:4]}


def test_the_sidecar_records_target_scheme_and_what_stayed_float(tiny):
    side = read_sidecar(tiny["int8"])
    q = side["quantization"]
    assert side["precision"] == "int8" and q["target"] == "onnxruntime" and q["form"] == "qdq"
    scheme = q["scheme"]
    assert scheme["target"] == "onnxruntime" and scheme["per_channel"] is True
    assert scheme["activations"].startswith("uint8, asymmetric") and scheme["weights"].startswith("int8, symmetric")
    assert scheme["bias"].startswith("int32")
    assert {"Conv", "LeakyRelu", "MaxPool", "Concat", "Resize"} <= set(scheme["quantized_op_types"])
    heads = [n for n in partition_graph(onnx.load(str(tiny["fp32"]))).weighted if "pred" in n]
    assert len(heads) == 2 and any(str(heads) in k for k in scheme["kept_float"])
    assert scheme["preprocessing_folded"]["folded_ops"] == ["Gather", "Mul"]
    assert scheme["preprocessing_folded"]["raw_uint8_input"] is True
    quantized = q["layers"]["quantized_layers"]
    assert not set(heads) & set(quantized) and len(quantized) == q["graph"]["weighted"] - 2
    assert q["method"] == "minmax" and q["calibration"]["images"] == 8 and len(q["calibration_sha256"]) == 64


def test_keep_float_takes_the_layer_and_its_activation_with_it(tiny):
    fp32 = onnx.load(str(tiny["fp32"]))
    weighted = partition_graph(fp32).weighted
    with OrtCpuQuantizer(fp32, batches_of(tiny["fp32"], 2), method="minmax") as quantizer:
        q = quantizer.quantize(keep_float=[weighted[1]])
        only = quantizer.quantize(only=[weighted[0]])
    prod = {o: n for n in q.graph.node for o in n.output}
    kept = next(n for n in q.graph.node if n.name == weighted[1])
    assert prod.get(kept.input[1]) is None  # float weights
    relu = next(n for n in q.graph.node if n.op_type == "LeakyRelu" and n.input[0] == kept.output[0])
    assert all(c.op_type != "QuantizeLinear" for c in q.graph.node if relu.output[0] in c.input)
    prod = {o: n for n in only.graph.node for o in n.output}
    assert [n.name for n in only.graph.node if n.op_type == "Conv" and prod.get(n.input[1]) is not None] == \
        [weighted[0]]
    plain_session(only)


def _preprocessing_graph(pads, offset):
    """uint8 NHWC BGR -> Cast -> Gather(2,1,0) -> Transpose -> Mul(scale) [-> Add(offset)] -> Conv -> outputs."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([2, 1, 0], np.int64), "idx"),
             numpy_helper.from_array(np.array([1 / 255, 2 / 255, 3 / 255], np.float32).reshape(1, 3, 1, 1), "mul"),
             numpy_helper.from_array(np.array([-0.5, 0.1, 0.2], np.float32).reshape(1, 3, 1, 1), "add"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")]
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Gather", ["f", "idx"], ["g"], axis=3, name="gather"),
             helper.make_node("Transpose", ["g"], ["t"], perm=[0, 3, 1, 2], name="transpose"),
             helper.make_node("Mul", ["t", "mul"], ["m"], name="mul")]
    last = "m"
    if offset:
        nodes.append(helper.make_node("Add", ["m", "add"], ["a"], name="addn"))
        last = "a"
    nodes.append(helper.make_node("Conv", [last, "w", "b"], ["y"], pads=[pads] * 4, name="conv"))
    graph = helper.make_graph(nodes, "pre", [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6 + 2 * pads, 6 + 2 * pads])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("pads,offset", [(1, False), (0, True), (1, True)])
def test_preprocessing_folds_exactly(pads, offset):
    model = _preprocessing_graph(pads, offset)
    x = np.random.default_rng(1).integers(0, 256, size=(1, 8, 8, 3), dtype=np.uint8)
    ref = plain_session(model).run(None, {"images": x})[0]
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    record = fold_input_preprocessing(folded)
    onnx.checker.check_model(folded)
    assert record["folded_ops"] == (["Gather", "Mul", "Add"] if offset else ["Gather", "Mul"])
    assert record["raw_uint8_input"] is (not offset)
    # an offset in front of a padded convolution cannot enter its bias (the zero border would miss it): it
    # stays as one Add (divided by the scale), the channel swap and the scale still fold into the weights
    kept = offset and pads > 0
    assert record["offset_kept_before_conv"] is kept
    assert [n.op_type for n in folded.graph.node] == ["Cast", "Transpose"] + (["Add"] if kept else []) + ["Conv"]
    np.testing.assert_allclose(plain_session(folded).run(None, {"images": x})[0], ref, rtol=1e-4, atol=1e-4)


def test_cli_target_choice_default_and_refusals(tiny, tmp_path, capsys, caplog):
    src = tiny["fp32"]
    common = ["--precision", "int8", "--calib", str(MANIFEST), "--calib-count", "4", "--method", "minmax", "--no-gate"]
    default, trt = tmp_path / "default.onnx", tmp_path / "trt.onnx"
    assert main(["quantize", str(src), *common, "--out", str(default)]) == 0
    assert main(["quantize", str(src), *common, "--target", "tensorrt", "--out", str(trt)]) == 0
    # the TensorRT form stays the default, byte for byte
    assert default.read_bytes() == trt.read_bytes()
    assert read_sidecar(trt)["quantization"]["target"] == "tensorrt"
    from edge.export.quantize import check_trt_qdq

    check_trt_qdq(onnx.load(str(trt)))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["quantize", str(src), *common, "--target", "tflite", "--out", str(tmp_path / "x.onnx")])
    assert exc.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    # FP16 has one form: --target onnxruntime with it is refused in one line, nothing written
    assert main(["quantize", str(src), "--precision", "fp16", "--target", "onnxruntime", "--no-gate",
                 "--out", str(tmp_path / "f.onnx")]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "--target onnxruntime picks the INT8 form" in errors[0].getMessage()
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "f.onnx").exists()
    with pytest.raises(EdgeError, match="--target 'tflite' is not one of"):
        QuantizeConfig(target="tflite").validate()
    assert QuantizeConfig(method=None, target="onnxruntime").validate().method == "percentile"
    assert QuantizeConfig(method=None).validate().method == "entropy"


def test_cli_onnxruntime_target_through_the_gate_then_surgery_and_eval(tiny, tmp_path, capsys):
    from edge.runtime.backend import conformance_report
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

    out = tmp_path / "g.onnx"
    assert main(["quantize", str(tiny["fp32"]), "--precision", "int8", "--target", "onnxruntime", "--calib",
                 str(MANIFEST), "--calib-count", "8", "--val-data", str(REPO / "data" / "bccd.yaml"),
                 "--val-split", "val", "--val-count", "3", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["target"] == "onnxruntime" and summary["method"] == "percentile"
    assert summary["decision"] in ("int8", "int8-mixed")
    report = json.loads(Path(summary["gate_report"]).read_text())
    assert [s["step"] for s in report["steps"]][:4] == ["fp32", "fp16", "fp16-simulated", "int8"]
    deploy = tmp_path / "g.nms.onnx"
    assert main(["surgery", str(out), "--nms", "onnx", "--score-threshold", "0.001", "--iou-threshold", "0.5",
                 "--out", str(deploy)]) == 0
    assert read_sidecar(deploy)["quantization"]["target"] == "onnxruntime"
    with OnnxRuntimeBackend(deploy) as backend:
        assert conformance_report(backend, batches_of(out, 2), num_classes=3) == []
    data = tmp_path / "b4.yaml"
    ids = (BCCD / "ImageSets" / "Main" / "val.txt").read_text().split()[:4]
    (tmp_path / "val4.txt").write_text("\n".join(ids) + "\n")
    data.write_text(f"name: b4\nroot: {BCCD}\nformat: voc\nsplits:\n  val: {tmp_path / 'val4.txt'}\n"
                    "names: [RBC, WBC, Platelets]\n")
    maps = []
    for model in (out, deploy):
        js = tmp_path / f"{model.stem}.eval.json"
        assert main(["eval", str(model), "--data", str(data), "--split", "val", "--json", str(js),
                     "--map-classes-by-index"]) == 0
        maps.append(json.loads(js.read_text())["map50"])
    assert maps[1] == pytest.approx(maps[0], abs=1e-3)


def test_a_normalized_input_in_front_of_a_padded_conv_keeps_only_its_offset(tmp_path):
    """SSD with the uint8 input and ImageNet mean/std: the channel swap and scale fold, the mean stays as one
    Add before the padded first convolution, and the graph still matches FP32 in a plain session."""
    from edge.export.torch_export import ExportConfig, export_source, source_from_model
    from tests.export.test_torch_export import CLASSES, make_model

    (result,) = export_source(source_from_model(make_model("ssd"), CLASSES), tmp_path,
                              ExportConfig(input_layout="uint8-nhwc-bgr", random_samples=1))
    fp32 = onnx.load(str(result.onnx_path))
    batches = batches_of(result.onnx_path, 4)
    with OrtCpuQuantizer(fp32, batches, method="minmax") as quantizer:
        q = quantizer.quantize()
        folded = quantizer.settings()["preprocessing_folded"]
    assert folded["folded_ops"] == ["Gather", "Mul", "Add"] and folded["offset_kept_before_conv"] is True
    assert not folded["raw_uint8_input"] and folded["max_errors"]["max_box_error_px"] < 1e-2
    assert "Gather" not in [n.op_type for n in q.graph.node][:6]
    sess = plain_session(q)
    outs = [dict(zip(["boxes", "scores"], sess.run(["boxes", "scores"], {sess.get_inputs()[0].name: b})))
            for b in batches]
    err = output_errors(outs, run_outputs(fp32, batches))
    assert err["mean_score_error"] < 0.02 and err["max_box_error_px"] < 16, err
