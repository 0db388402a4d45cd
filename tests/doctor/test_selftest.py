"""``edge doctor --selftest`` on CPU: the ONNX Runtime part on real deploy graphs (both NMS flavours, made by
``edge surgery`` from a tiny detector written here), the graph split at the NMS, the precision plan, and the
engine part's orchestration.

The engine part needs TensorRT and a GPU, which this machine lacks. ``test_engine_orchestration_*`` drive it
through ``EngineHooks`` whose "engines" are ONNX graphs run by ONNX Runtime: orchestration tests of the
self-test's build/run/compare logic, NOT TensorRT runs. What they show is that the comparisons catch a
drifting engine (pre-NMS parity) and a different NMS (post-NMS identity) and pass a faithful one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime_extensions")
pytest.importorskip("onnx_graphsurgeon")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge.doctor.compare import compare_detections, pre_nms_errors, selftest_frames  # noqa: E402
from edge.doctor.engine_hooks import EngineHooks  # noqa: E402
from edge.doctor.nms_split import OrtGraphRunner, nms_tail, probe_graph, split_at_nms  # noqa: E402
from edge.doctor.precisions import plan_precisions  # noqa: E402
from edge.doctor.report import FAIL, OK, SKIP, WARN, DoctorReport  # noqa: E402
from edge.doctor.selftest import SelftestConfig, run_selftest  # noqa: E402
from edge.errors import EdgeError, ModelError  # noqa: E402

BCCD = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "bccd"


def write_pre_nms_model(path: Path, size: int = 64, classes: int = 3, seed: int = 0) -> Path:
    """A tiny pre-NMS detector: uint8 [1,S,S,3] BGR -> boxes [1,N,4] xyxy input pixels, scores [1,N,C].

    One strided conv predicts per-cell offsets, log sizes and class logits around a grid of anchor
    centres, so boxes are well formed and scores vary with the image. Sidecar with class names beside it.
    """
    rng = np.random.default_rng(seed)
    stride = 8
    c_out = 4 + classes
    weights = (rng.standard_normal((c_out, 3, stride, stride)) * 0.05).astype(np.float32)
    bias = (rng.standard_normal(c_out) * 0.5).astype(np.float32)
    g = size // stride
    n = g * g
    ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    centres = np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], -1).astype(np.float32)[None]
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["nchw", "c255"], ["x"]),
        helper.make_node("Conv", ["x", "W", "B"], ["y"], kernel_shape=[stride, stride], strides=[stride, stride]),
        helper.make_node("Reshape", ["y", "shape3"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Slice", ["t", "s0", "s2", "ax2"], ["dxy"]),
        helper.make_node("Slice", ["t", "s2", "s4", "ax2"], ["dwh"]),
        helper.make_node("Slice", ["t", "s4", "s99", "ax2"], ["logits"]),
        helper.make_node("Mul", ["dxy", "cstride"], ["oxy"]),
        helper.make_node("Add", ["oxy", "centres"], ["cxy"]),
        helper.make_node("Exp", ["dwh"], ["ewh"]),
        helper.make_node("Mul", ["ewh", "cbase"], ["wh"]),
        helper.make_node("Mul", ["wh", "chalf"], ["hwh"]),
        helper.make_node("Sub", ["cxy", "hwh"], ["tl"]),
        helper.make_node("Add", ["cxy", "hwh"], ["br"]),
        helper.make_node("Concat", ["tl", "br"], ["boxes"], axis=2),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(255, np.float32), "c255"),
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "B"),
        numpy_helper.from_array(np.array([1, c_out, n], np.int64), "shape3"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([2], np.int64), "s2"),
        numpy_helper.from_array(np.array([4], np.int64), "s4"),
        numpy_helper.from_array(np.array([99], np.int64), "s99"),
        numpy_helper.from_array(np.array([2], np.int64), "ax2"),
        numpy_helper.from_array(np.array(float(stride), np.float32), "cstride"),
        numpy_helper.from_array(centres, "centres"),
        numpy_helper.from_array(np.array(2.0 * stride, np.float32), "cbase"),
        numpy_helper.from_array(np.array(0.5, np.float32), "chalf"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, size, size, 3])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps({
        "classes": [f"cell{i}" for i in range(classes)], "input_size": [size, size],
        "input_layout": "uint8_nhwc_bgr",
    }))
    return path


def write_deploy_model(directory: Path, nms: str = "efficient", score_threshold: float = 0.3,
                       max_detections: int = 20) -> Path:
    """The tiny detector with NMS appended by the real ``edge surgery`` (``nms``: efficient | onnx)."""
    from edge.export.surgery import SurgeryConfig, surgery_file

    directory.mkdir(parents=True, exist_ok=True)
    pre = directory / "tiny.onnx"
    if not pre.exists():
        write_pre_nms_model(pre)
    out = directory / f"tiny.{nms}.onnx"
    surgery_file(pre, out, SurgeryConfig(nms=nms, score_threshold=score_threshold, max_detections=max_detections))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: Any) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("selftest_models")
    return {"efficient": write_deploy_model(d, "efficient"), "onnx": write_deploy_model(d, "onnx"),
            "pre": d / "tiny.onnx"}


def by_name(checks: Any) -> Dict[str, Any]:
    return {c.name: c for c in checks}


# --- the graph split ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour,op", [("efficient", "EfficientNMS_TRT"), ("onnx", "NonMaxSuppression")])
def test_split_exposes_pre_nms_tensors_and_the_tail_replays_the_detections(models, flavour, op):
    model = onnx.load(str(models[flavour]))
    split = split_at_nms(model)
    assert split.flavour == op
    assert "boxes" in split.pre_nms
    assert split.outputs == ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    probe = probe_graph(model, split)
    assert [o.name for o in probe.graph.output][:4] == split.outputs
    runner = OrtGraphRunner(probe)
    tail = OrtGraphRunner(nms_tail(model, split))
    assert len(tail.session.get_inputs()) == len(split.tail_inputs)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    out = runner.run({"images": image})
    assert out["boxes"].shape == (1, 64, 4)
    assert int(out["num_detections"][0, 0]) > 0, "the tiny model must detect something for this test to mean anything"
    replay = tail.run({**{x: out[x] for x in split.pre_nms}, "images": image})
    assert compare_detections(replay, {k: out[k] for k in split.outputs}, 1e-6) == []
    # and the tail really runs NMS on what it is given: halving the scores drops detections below threshold
    halved = {x: (out[x] * 0.5 if "score" in x else out[x]) for x in split.pre_nms}
    fewer = tail.run({**halved, "images": image})
    assert int(fewer["num_detections"][0, 0]) < int(out["num_detections"][0, 0])


def test_split_refuses_a_graph_without_nms(models):
    with pytest.raises(ModelError, match="edge surgery"):
        split_at_nms(onnx.load(str(models["pre"])))


# --- comparisons ------------------------------------------------------------------------------------


def _dets(boxes, scores, classes):
    k = 4
    b = np.zeros((1, k, 4), np.float32)
    s = np.zeros((1, k), np.float32)
    c = np.zeros((1, k), np.int32)
    n = len(scores)
    b[0, :n], s[0, :n], c[0, :n] = boxes, scores, classes
    return {"num_detections": np.array([[n]], np.int32), "detection_boxes": b, "detection_scores": s,
            "detection_classes": c}


def test_compare_detections_matches_ties_in_any_order_and_reports_differences():
    a = _dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.9], [0, 1])
    swapped = _dets([[20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.9], [1, 0])
    assert compare_detections(a, swapped, 1e-4) == []
    other_class = _dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.9], [0, 2])
    assert "no counterpart" in compare_detections(other_class, a, 1e-4)[0]
    fewer = _dets([[0, 0, 10, 10]], [0.9], [0])
    assert "1 detections vs 2" in compare_detections(fewer, a, 1e-4)[0]
    moved = _dets([[0, 0, 10, 10.5], [20, 20, 30, 30]], [0.9, 0.9], [0, 1])
    assert compare_detections(moved, a, 1e-4)  # 0.5 px > 1e-4 * 30 px
    assert compare_detections(moved, a, 2e-2) == []  # 0.5 px <= 2e-2 * 30 px


def test_pre_nms_errors_are_relative_to_the_reference_scale():
    ref = {"boxes": np.array([[100.0, 200.0]]), "scores": np.array([[0.5, 0.25]])}
    got = {"boxes": np.array([[101.0, 200.0]]), "scores": np.array([[0.5, 0.3]])}
    errors = pre_nms_errors(got, ref, ["boxes", "scores"])
    assert errors["boxes"] == pytest.approx(1.0 / 200.0)
    assert errors["scores"] == pytest.approx(0.05)  # scale max(1, 0.5) = 1: absolute
    assert pre_nms_errors({"boxes": np.zeros((1, 3))}, ref, ["boxes"])["boxes"] == float("inf")


# --- which precisions a device gets ------------------------------------------------------------------


def test_precision_plan_follows_the_gpu_and_the_tensorrt_version():
    orin = plan_precisions("10.3.0", "8.7", "m.onnx", "fp32", None)
    assert [(p.precision, p.model is not None) for p in orin] == [("fp32", True), ("fp16", True), ("int8", False)]
    assert "--int8-model" in orin[2].skip_reason
    with_q = plan_precisions("8.5.2", "7.2", "m.onnx", "fp32", "q.onnx")
    assert [p.model for p in with_q] == ["m.onnx", "m.onnx", "q.onnx"]
    nano = plan_precisions("8.2.1", "5.3", "m.onnx", "fp32", "q.onnx")
    assert nano[1].model == "m.onnx" and nano[2].model is None and "INT8" in nano[2].skip_reason
    pascal = plan_precisions("8.6.1", "6.1", "m.onnx", "fp32", "q.onnx")
    assert pascal[1].model is None and "FP16" in pascal[1].skip_reason and pascal[2].model == "q.onnx"
    trt11 = plan_precisions("11.0.0", "8.9", "m.onnx", "fp32", None)
    assert trt11[0].model == "m.onnx" and trt11[1].model is None and "strongly typed" in trt11[1].skip_reason
    qdq = plan_precisions("10.3.0", "8.7", "q.onnx", "qdq", None)
    assert [p.model for p in qdq] == [None, None, "q.onnx"]
    with pytest.raises(EdgeError):
        plan_precisions("10.3.0", "8.7", "m.onnx", "fp32", None, ["fp8"])


# --- the ONNX Runtime part, as run on every machine --------------------------------------------------


@pytest.mark.parametrize("flavour", ["efficient", "onnx"])
def test_selftest_without_tensorrt_runs_the_onnxruntime_part_and_says_what_it_skipped(models, flavour, tmp_path):
    cfg = SelftestConfig(model=str(models[flavour]), iterations=3, warmup=1, work_dir=str(tmp_path / "w"))
    checks = by_name(run_selftest(cfg))
    for name in ("onnxruntime: load", "onnxruntime: contract", "onnxruntime: timing", "onnxruntime: NMS split"):
        assert checks[name].status == OK, (name, checks[name].summary)
    assert checks["onnxruntime: timing"].details["median_ms"] > 0
    for p in ("fp32", "fp16", "int8"):
        skipped = checks[f"tensorrt {p}"]
        assert skipped.status == SKIP
        assert "TensorRT is not installed" in skipped.summary and "parity" in skipped.summary
    assert not any(c.status == FAIL for c in checks.values())
    # the probe graph kept for the engine build carries the sidecar along
    assert (tmp_path / "w" / f"{models[flavour].stem}.selftest.onnx").is_file()
    assert json.loads((tmp_path / "w" / f"{models[flavour].stem}.selftest.json").read_text())["classes"]


def test_selftest_fails_on_a_model_without_nms(models):
    checks = by_name(run_selftest(SelftestConfig(model=str(models["pre"]), iterations=1)))
    assert checks["onnxruntime: load"].status == FAIL
    assert "edge surgery" in checks["onnxruntime: load"].summary
    assert all(checks[f"tensorrt {p}"].status == SKIP for p in ("fp32", "fp16", "int8"))


def test_selftest_config_validation(models, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        SelftestConfig(model=str(tmp_path / "missing.onnx")).validate()
    with pytest.raises(EdgeError, match="at least 2"):
        SelftestConfig(model=str(models["efficient"]), frames=1).validate()
    with pytest.raises(EdgeError, match="precision"):
        SelftestConfig(model=str(models["efficient"]), precisions=["fp64"]).validate()


def test_selftest_on_real_bccd_images(models):
    images = BCCD / "JPEGImages"
    if not images.is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD}")
    cfg = SelftestConfig(model=str(models["efficient"]), images=str(images), iterations=2, warmup=0)
    checks = by_name(run_selftest(cfg))
    assert checks["onnxruntime: contract"].status == OK
    assert checks["onnxruntime: NMS split"].status == OK
    frames = selftest_frames(2, str(images))
    assert frames[0].ndim == 3 and frames[0].shape[2] == 3 and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])


# --- the engine part's orchestration (ONNX Runtime stand-in engines: NOT TensorRT) -------------------


def _engine_variant(probe_path: Path, out: Path, variant: str) -> None:
    """Write the "engine" for a variant: the probe graph as is, with drifting scores, or with another NMS."""
    model = onnx.load(str(probe_path))
    if variant == "drift":  # the pre-NMS scores come out 15 % low, as a badly calibrated engine's might
        for node in model.graph.node:
            if "scores" in node.output:
                node.output[list(node.output).index("scores")] = "scores_raw"
        model.graph.initializer.append(numpy_helper.from_array(np.array(0.85, np.float32), "drift"))
        model.graph.node.append(helper.make_node("Mul", ["scores_raw", "drift"], ["scores"]))
        nodes = list(model.graph.node)
        mul = nodes.pop()
        at = next(i for i, n in enumerate(nodes) if "scores_raw" in n.output) + 1
        nodes.insert(at, mul)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    elif variant == "other-nms":  # same pre-NMS tensors, a stricter score threshold inside the NMS
        nms = next(n for n in model.graph.node if n.op_type == "EfficientNMS_TRT")
        for attr in nms.attribute:
            if attr.name == "score_threshold":
                attr.f = 0.6
    out.write_bytes(model.SerializeToString())
    sidecar = probe_path.with_suffix(".json")
    if sidecar.exists():
        shutil.copyfile(sidecar, out.with_suffix(".json"))


def _standin_hooks(variant: str, built: list) -> EngineHooks:
    """EngineHooks whose engines are ONNX graphs run by ONNX Runtime (an orchestration stand-in)."""
    from edge.runtime.backend import OUTPUT_NAMES
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

    class OrtEngineStandIn(OnnxRuntimeBackend):
        capture_extra = False

        def _infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
            names = [o.name for o in self._session.get_outputs()]
            values = dict(zip(names, self._session.run(names, {self._input_spec.name: batch})))
            if self.capture_extra:
                self.last_extra = {k: v for k, v in values.items() if k not in self._run_names}
            return {c: values[n] for c, n in zip(OUTPUT_NAMES, self._run_names)}

    def build(onnx_path: str, precision: str, workspace_mb: int, out_dir: str) -> Tuple[Path, float]:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        out = Path(out_dir) / f"standin_{precision}.onnx"
        _engine_variant(Path(onnx_path), out, variant)
        built.append((precision, workspace_mb))
        return out, 0.0

    return EngineHooks("ONNX Runtime stand-in (not TensorRT)", "10.3.0", "8.7", build, OrtEngineStandIn)


@pytest.mark.parametrize("variant,parity,identity", [
    ("faithful", OK, OK),
    ("drift", FAIL, OK),
    ("other-nms", OK, FAIL),
])
def test_engine_orchestration_with_onnxruntime_standin_engines(models, tmp_path, variant, parity, identity):
    """Orchestration test, not a TensorRT run: see the module docstring."""
    built: list = []
    cfg = SelftestConfig(model=str(models["efficient"]), iterations=2, warmup=0, workspace_mb=64,
                                work_dir=str(tmp_path))
    checks = by_name(run_selftest(cfg, engine_hooks=_standin_hooks(variant, built)))
    assert built == [("fp32", 64), ("fp16", 64)]  # SM 8.7: fp32 + fp16 built; int8 needs a Q/DQ model
    assert checks["tensorrt int8"].status == SKIP and "--int8-model" in checks["tensorrt int8"].summary
    for p in ("fp32", "fp16"):
        assert checks[f"tensorrt {p}: build"].status == OK
        assert checks[f"tensorrt {p}: contract"].status == OK
        assert checks[f"tensorrt {p}: pre-NMS parity"].status == parity, checks[f"tensorrt {p}: pre-NMS parity"].summary
        assert checks[f"tensorrt {p}: post-NMS identity"].status == identity
        assert checks[f"tensorrt {p}: timing"].details["iterations"] == 2
    if variant == "drift":
        assert "scores" in checks["tensorrt fp32: pre-NMS parity"].summary
    report = DoctorReport(checks=[], selftest=list(checks.values()))
    assert report.exit_code == (0 if variant == "faithful" else 1)


def test_a_crashing_engine_build_is_one_failed_line_not_a_traceback(models, tmp_path):
    def build(onnx_path: str, precision: str, workspace_mb: int, out_dir: str) -> Tuple[Path, float]:
        raise RuntimeError(f"out of memory building {precision}")

    hooks = EngineHooks("stand-in", "8.5.2", "7.2", build, lambda p: None)
    cfg = SelftestConfig(model=str(models["onnx"]), precisions=["fp32", "fp16"], iterations=1, warmup=0)
    checks = by_name(run_selftest(cfg, engine_hooks=hooks))
    assert checks["tensorrt fp32: build"].status == FAIL
    assert "out of memory building fp16" in checks["tensorrt fp16: build"].summary


# --- the command line ----------------------------------------------------------------------------


def test_cli_selftest_json(models, capsys):
    from edge.cli.main import main

    rc = main(["-q", "doctor", "--json", "--selftest", "--model", str(models["onnx"]), "--iterations", "2"])
    data = json.loads(capsys.readouterr().out)
    assert rc == data["exit_code"]
    names = {c["name"]: c for c in data["selftest"]}
    assert names["onnxruntime: NMS split"]["status"] == "ok"
    assert names["tensorrt fp16"]["status"] == "skip"
    assert data["summary"]["skip"] >= 3


def test_cli_selftest_exit_status_is_1_when_a_check_fails(models, capsys):
    from edge.cli.main import main

    rc = main(["-q", "doctor", "--selftest", "--model", str(models["pre"]), "--iterations", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "fail  onnxruntime: load" in out and "-- self-test" in out


def test_cli_selftest_options_need_selftest(models, caplog):
    from edge.cli.main import main

    assert main(["doctor", "--model", str(models["onnx"])]) == 2
    assert "--model: self-test option(s) given without --selftest" in caplog.text


@pytest.mark.parametrize("version,reason", [
    ("8.2.1", "edge builds engines only with TensorRT >= 8.4"),
    ("10.3.0", "no usable CUDA device"),
])
def test_selftest_with_a_tensorrt_standin_says_why_engines_cannot_run(models, version, reason):
    """API-contract test with tests/trt_standin.py (not TensorRT): a TensorRT too old to build, or TensorRT
    present without PyCUDA/CUDA (this machine), skips the engine checks with that reason."""
    import importlib.util

    from tests.trt_standin import make_tensorrt

    if version == "10.3.0" and importlib.util.find_spec("pycuda") is not None:
        pytest.skip("PyCUDA is installed here: the CUDA device check would run for real")
    cfg = SelftestConfig(model=str(models["efficient"]), iterations=1, warmup=0)
    checks = by_name(run_selftest(cfg, trt_module=make_tensorrt(version)))
    for p in ("fp32", "fp16", "int8"):
        assert checks[f"tensorrt {p}"].status == SKIP
        assert reason in checks[f"tensorrt {p}"].summary, checks[f"tensorrt {p}"].summary


def test_selftest_warns_when_the_inputs_give_no_detections(tmp_path):
    model = write_deploy_model(tmp_path, "onnx", score_threshold=0.999)
    checks = by_name(run_selftest(SelftestConfig(model=str(model), iterations=1, warmup=0)))
    assert checks["onnxruntime: contract"].details["detections"] == [0, 0, 0]
    assert checks["onnxruntime: detections"].status == WARN
    assert "--images" in checks["onnxruntime: detections"].fix
