"""The INT8 accuracy gate (``edge.export.quantize.gate`` through ``edge quantize``) on crafted detectors.

Random weights make mAP meaningless, so these tests build small detectors by hand whose FP32 mAP50 is 1.0
on a synthetic dataset written to tmp_path (coloured squares on a 4x4 grid, YOLO labels), and whose INT8
really breaks where intended: a channel with a huge constant activation (1000) shares a per-tensor int8
scale with signals in [0, 1], so quantizing the input of the layer that reads it zeroes the signal. The
gate must find that layer, keep it in float (mixed precision), fall back to FP16 when too many layers are
broken, and refuse when FP16 breaks too (an fp16 overflow, visible only through the fp16 simulation since
ONNX Runtime's CPU runs fp16 graphs in fp32 islands). Everything is real: ONNX Runtime quantization and
sessions, images and label files on disk, ``edge.evaluate`` scoring, files written by ``edge quantize``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.artifacts import read_sidecar, sha256_file, write_sidecar
from edge.cli.main import main
from edge.data.calibration import source_from_manifest, write_manifest
from edge.errors import EdgeError, ModelError
from edge.evaluate import evaluate_model
from edge.export.quantize import QuantizeConfig, qdq_summary, quantize_file
from edge.export.quantize.gate import GateConfig, layer_groups
from edge.runtime.predictors import load_predictor
from tests.paths import REPO

CLASSES = ["blue", "green", "red"]
SIZE, CELLS, SRC = 64, 4, 96  # network input, grid, source image size (letterbox scales 96 -> 64)
SIDECAR = {"input_layout": "uint8_nhwc_bgr", "input_size": [SIZE, SIZE], "classes": CLASSES,
           "class_names": CLASSES, "pad_value": 114,
           "outputs": {"boxes": {"name": "boxes", "format": "xyxy", "units": "input pixels", "normalized": False},
                       "scores": {"name": "scores", "background_column": False}}}


def crafted_detector(huge: Sequence[str] = (), overflow: bool = False) -> Any:
    """A pre-NMS detector of coloured grid cells: 3 weighted layers (1x1 convs conv1..conv3), then decode
    (average pool per cell, sigmoid, reshape) and constant cell boxes.

    Object cell of class c (pure colour c, 255) -> score ~0.98 for c; other cells ~0.03-0.05: mAP50 = 1.
    ``huge``: "conv2" adds a channel of constant 1000 to conv2's input, "conv3" passes it on to conv3's input.
    ``overflow``: conv1 also writes 1000 x pixel (up to 255000, above fp16's 65504), passed on by conv2 and
    weighted 0 by conv3: exact in fp32; where fp16 rounds it to inf, 0 * inf = NaN. Its range also breaks
    INT8 at conv2 and conv3.
    """
    nsig = 3
    big = 3 if overflow else 0
    ch = nsig + 1 + big                # conv1/conv2 outputs: signal, huge, big copies
    hug, p0 = nsig, nsig + 1
    w1 = np.zeros((ch, 3, 1, 1), np.float32)
    b1 = np.zeros(ch, np.float32)
    for c in range(nsig):
        w1[c, c] = 1.0 / 255.0
        if overflow:
            w1[p0 + c, c] = 1000.0
    if "conv2" in huge:
        b1[hug] = 1000.0
    w2 = np.zeros((ch, ch, 1, 1), np.float32)
    b2 = np.zeros(ch, np.float32)
    for c in range(ch):
        w2[c, c] = 0.0 if (c == hug and "conv3" not in huge) else 1.0
    w3 = np.zeros((nsig, ch, 1, 1), np.float32)
    b3 = np.full(nsig, -4.0, np.float32)
    for c in range(nsig):
        w3[c, c] = 8.0
    cell = SIZE // CELLS
    boxes = np.array([[[j * cell, i * cell, (j + 1) * cell, (i + 1) * cell]
                       for i in range(CELLS) for j in range(CELLS)]], np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"), (boxes, "cell_boxes"),
        (np.array([1, nsig, CELLS * CELLS], np.int64), "shape"))]
    nodes = [
        helper.make_node("Cast", ["images"], ["x0"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Transpose", ["x0"], ["x1"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["x1", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("AveragePool", ["c3"], ["p"], kernel_shape=[cell, cell], strides=[cell, cell], name="pool"),
        helper.make_node("Sigmoid", ["p"], ["sg"], name="sigmoid"),
        helper.make_node("Reshape", ["sg", "shape"], ["rs"], name="reshape"),
        helper.make_node("Transpose", ["rs"], ["scores"], perm=[0, 2, 1], name="to_nc"),
        helper.make_node("Identity", ["cell_boxes"], ["boxes"], name="boxes"),
    ]
    graph = helper.make_graph(
        nodes, "crafted", [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, CELLS * CELLS, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, CELLS * CELLS, nsig])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Dict[str, Path]:
    """A YOLO-format dataset of 12 val + 8 calibration images (96x96 PNG, 2-4 coloured cells each), its
    YAML and a calibration manifest."""
    import cv2

    root = tmp_path_factory.mktemp("cells")
    rng = np.random.default_rng(0)
    cell = SRC // CELLS
    for split, count in (("val", 12), ("calib", 8)):
        lines = []
        for k in range(count):
            img = rng.integers(10, 40, (SRC, SRC, 3)).astype(np.uint8)
            labels = []
            for idx in rng.choice(CELLS * CELLS, size=int(rng.integers(2, 5)), replace=False):
                i, j = divmod(int(idx), CELLS)
                c = int(rng.integers(0, 3))
                img[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] = 0
                img[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell, c] = 255
                labels.append(f"{c} {(j + 0.5) / CELLS} {(i + 0.5) / CELLS} {1 / CELLS} {1 / CELLS}")
            (root / "images").mkdir(exist_ok=True)
            (root / "labels").mkdir(exist_ok=True)
            assert cv2.imwrite(str(root / "images" / f"{split}_{k}.png"), img)
            (root / "labels" / f"{split}_{k}.txt").write_text("\n".join(labels) + "\n")
            lines.append(f"images/{split}_{k}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("name: cells\nroot: .\nformat: yolo\nsplits:\n  val: val.txt\n  calib: calib.txt\n"
                                    f"names: {CLASSES}\n")
    write_manifest(root / "calib.manifest.txt", sorted((root / "images").glob("calib_*.png")), header=["test"])
    return {"root": root, "data": root / "data.yaml", "manifest": root / "calib.manifest.txt"}


def write_model(folder: Path, name: str, model: Any) -> Path:
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    write_sidecar(path, dict(SIDECAR))
    return path


def run(cells, tmp_path, name: str, *, precision: str = "int8", **gate: Any):
    model = {"benign": crafted_detector(), "huge2": crafted_detector(huge=("conv2",)),
             "huge23": crafted_detector(huge=("conv2", "conv3")),
             "overflow": crafted_detector(overflow=True)}[name]
    src = write_model(tmp_path, name, model)
    out = tmp_path / f"{name}.{precision}.onnx"
    result = quantize_file(src, out, QuantizeConfig(precision=precision, method="minmax"),
                           calib=source_from_manifest(cells["manifest"]),
                           gate=GateConfig(val_data=str(cells["data"]), val_split="val", **gate))
    report = json.loads(out.with_name(out.stem + ".gate.json").read_text())
    return result, report


def dequantized_inputs(model: Any) -> Dict[str, bool]:
    """conv name -> whether its activation input comes from a DequantizeLinear."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return {n.name: producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "DequantizeLinear"
            for n in model.graph.node if n.op_type == "Conv"}


def test_crafted_fp32_detector_is_perfect_and_evaluates_like_edge_eval(cells, tmp_path):
    from edge.data import load_dataset

    path = write_model(tmp_path, "benign", crafted_detector())
    result = evaluate_model(load_predictor(path), load_dataset(cells["data"], "val"))
    assert result.map50 == pytest.approx(1.0)


def test_gate_accepts_int8_that_keeps_the_accuracy(cells, tmp_path):
    result, report = run(cells, tmp_path, "benign")
    assert result.decision == "int8" and result.precision == "int8"
    assert [s["step"] for s in report["steps"]] == ["fp32", "fp16", "fp16-simulated", "int8"]
    assert report["steps"][0]["map50"] == pytest.approx(1.0)
    assert report["final"]["drop_points"] <= 1.0
    written = onnx.load(str(result.path))
    assert dequantized_inputs(written) == {"conv1": True, "conv2": True, "conv3": True}
    side = read_sidecar(result.path)
    assert side["quantization"]["decision"] == "int8" and side["quantization"]["float_layers"] == []
    assert side["quantization"]["gate"]["decision"] == "int8"
    assert side["sha256"] == sha256_file(result.path)


@pytest.mark.parametrize("mode", ["quantize-one", "exclude-one"])
def test_gate_finds_the_huge_range_layer_and_keeps_it_float(cells, tmp_path, mode):
    result, report = run(cells, tmp_path, "huge2", sensitivity=mode)
    int8 = next(s for s in report["steps"] if s["step"] == "int8")
    assert int8["drop_points"] > 50.0, "the crafted layer must really break INT8"
    sens = [s for s in report["steps"] if s["step"] == "sensitivity"]
    assert [s["layers"] for s in sens] == [["conv1"], ["conv2"], ["conv3"]]
    assert report["ranking"][0]["layers"] == ["conv2"]
    assert report["ranking"][0]["sensitivity_points"] > 50.0
    assert result.decision == "int8-mixed" and report["decision"] == "int8-mixed"
    assert report["float_layers"] == ["conv2"] and report["final"]["drop_points"] <= 1.0
    written = onnx.load(str(result.path))
    assert dequantized_inputs(written) == {"conv1": True, "conv2": False, "conv3": True}
    side = read_sidecar(result.path)
    assert side["precision"] == "int8" and side["quantization"]["float_layers"] == ["conv2"]
    assert qdq_summary(written)["quantized_layers"] == ["conv1", "conv3"]
    # what edge eval reports for the written file is what the gate measured
    from edge.data import load_dataset

    ev = evaluate_model(load_predictor(result.path), load_dataset(cells["data"], "val"))
    assert ev.map50 == pytest.approx(report["final"]["map50"], abs=1e-6)


def test_gate_falls_back_to_fp16_when_mixed_precision_is_not_enough(cells, tmp_path):
    result, report = run(cells, tmp_path, "huge23", max_float_fraction=0.34)  # 1 of 3 layers may stay float
    assert result.decision == "fp16-fallback" and result.precision == "fp16"
    assert "falling back to FP16" in report["message"]
    assert "mixed_stopped" in report
    mixed = [s for s in report["steps"] if s["step"] == "mixed"]
    assert len(mixed) == 1 and mixed[0]["drop_points"] > 50.0
    written = onnx.load(str(result.path))
    ops = {n.op_type for n in written.graph.node}
    assert "QuantizeLinear" not in ops
    assert any(i.data_type == TensorProto.FLOAT16 for i in written.graph.initializer)
    assert written.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in written.graph.output)
    side = read_sidecar(result.path)
    assert side["precision"] == "fp16" and side["quantization"]["fallback_from"] == "int8"
    assert side["quantization"]["decision"] == "fp16-fallback"


def test_gate_keeps_two_layers_float_when_allowed(cells, tmp_path):
    result, report = run(cells, tmp_path, "huge23", max_float_fraction=1.0)
    assert result.decision == "int8-mixed"
    assert sorted(report["float_layers"]) == ["conv2", "conv3"]
    assert [s["step"] for s in report["steps"]].count("mixed") == 2


def test_gate_refuses_when_fp16_breaks_too_and_writes_nothing_but_the_report(cells, tmp_path):
    with pytest.raises(ModelError, match="refused"):
        run(cells, tmp_path, "overflow", max_float_fraction=0.34)
    out = tmp_path / "overflow.int8.onnx"
    assert not out.exists() and not out.with_suffix(".json").exists()
    report = json.loads((tmp_path / "overflow.int8.gate.json").read_text())
    assert report["decision"] == "refused"
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["fp32"]["map50"] == pytest.approx(1.0)
    # ONNX Runtime's CPU runs the fp16 graph in fp32 islands and hides the overflow; the simulation shows it
    assert steps["fp16"]["map50"] == pytest.approx(1.0)
    assert steps["fp16-simulated"]["drop_points"] > 50.0
    assert "FP16 also drops" in report["message"]


def test_fp16_precision_is_gated_too(cells, tmp_path):
    result, report = run(cells, tmp_path, "benign", precision="fp16")
    assert result.decision == "fp16" and [s["step"] for s in report["steps"]] == ["fp32", "fp16", "fp16-simulated"]
    with pytest.raises(ModelError, match="refused"):
        run(cells, tmp_path, "overflow", precision="fp16")


def test_cli_quantize_with_the_gate(cells, tmp_path, capsys):
    src = write_model(tmp_path, "huge2", crafted_detector(huge=("conv2",)))
    out = tmp_path / "cli.onnx"
    code = main(["quantize", str(src), "--precision", "int8", "--calib", str(cells["manifest"]), "--method",
                 "minmax", "--val-data", str(cells["data"]), "--val-split", "val", "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["decision"] == "int8-mixed" and summary["float_layers"] == 1
    assert summary["fp32_map50"] == pytest.approx(1.0) and summary["drop_points"] <= 1.0
    assert Path(summary["gate_report"]).is_file()
    # the gate is on by default: no validation data and no --no-gate is an error, not a silent skip
    assert main(["quantize", str(src), "--precision", "int8", "--calib", str(cells["manifest"]),
                 "--out", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_layer_groups_and_config_validation():
    names = [f"c{i}" for i in range(10)]
    assert layer_groups(names[:3], 16) == [["c0"], ["c1"], ["c2"]]
    groups = layer_groups(names, 4)
    assert len(groups) == 4 and sum(groups, []) == names and all(2 <= len(g) <= 3 for g in groups)
    with pytest.raises(EdgeError, match="max-drop"):
        GateConfig(val_data="x.yaml", max_drop=-1).validate()
    with pytest.raises(EdgeError, match="sensitivity"):
        GateConfig(val_data="x.yaml", sensitivity="random").validate()
    with pytest.raises(EdgeError, match="validation dataset"):
        GateConfig(val_data="").validate()


def test_benchmark_table_script(cells, tmp_path, capsys):
    """benchmarks/quantize_table.py end to end on the crafted model (a few timed runs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quantize_table", REPO / "benchmarks" / "quantize_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    src = write_model(tmp_path, "huge2", crafted_detector(huge=("conv2",)))
    out_json = tmp_path / "table.json"
    assert table.main([str(src), "--data", str(cells["data"]), "--split", "val", "--calib", str(cells["manifest"]),
                       "--methods", "minmax", "--gate-split", "val", "--threads", "1", "--warmup", "1",
                       "--runs", "3", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "| precision | mAP50 | mAP50-95 | ΔmAP50 (points) | ORT CPU latency, ms | gate decision |" in text
    assert "1 intra-op threads" in text and "median (p90) of 3 runs after 1 warm-up runs" in text
    rows = {r["precision"]: r for r in json.loads(out_json.read_text())["rows"]}
    assert rows["FP32"]["map50"] == pytest.approx(1.0) and rows["FP32"]["median_ms"] > 0
    assert rows["INT8 minmax"]["map50"] < 0.5 and rows["INT8 minmax"]["gate"].startswith("int8-mixed")
    mixed = rows["INT8 minmax, mixed (1 layers float)"]
    assert mixed["map50"] == pytest.approx(1.0) and mixed["median_ms"] > 0
    assert rows["FP16 (decode fp16)"]["gate"].startswith("pass")
