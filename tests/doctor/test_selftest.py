"""``edge doctor --selftest`` on CPU (``edge.doctor.selftest``): the ONNX Runtime part on real deploy graphs
(both NMS flavours, made by ``edge surgery`` from the tiny detector in tests/doctor/tiny_models.py), and the
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

from onnx import helper, numpy_helper  # noqa: E402

from edge.doctor.compare import selftest_frames  # noqa: E402
from edge.doctor.engine_hooks import EngineHooks  # noqa: E402
from edge.doctor.report import FAIL, OK, SKIP, WARN, DoctorReport  # noqa: E402
from edge.doctor.selftest import SelftestConfig, run_selftest  # noqa: E402
from edge.errors import EdgeError, ModelError  # noqa: E402
from tests.doctor.tiny_models import write_deploy_model  # noqa: E402
from tests.paths import BCCD  # noqa: E402


def by_name(checks: Any) -> Dict[str, Any]:
    return {c.name: c for c in checks}


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
        assert "shipped" in skipped.summary
    for part in ("tensorrt cuda graph", "tensorrt int8 calibrated", "tensorrt dynamic H/W", "tensorrt DLA"):
        assert checks[part].status == SKIP and "TensorRT is not installed" in checks[part].summary, part
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
    from edge.artifacts import NMS_OUTPUTS
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

    class OrtEngineStandIn(OnnxRuntimeBackend):
        capture_extra = False

        def _infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
            names = [o.name for o in self._session.get_outputs()]
            values = dict(zip(names, self._session.run(names, {self._input_spec.name: batch})))
            if self.capture_extra:
                self.last_extra = {k: v for k, v in values.items() if k not in self._run_names}
            return {c: values[n] for c, n in zip(NMS_OUTPUTS, self._run_names)}

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
    for part in ("tensorrt fp32: shipped engine", "tensorrt cuda graph", "tensorrt dynamic H/W"):
        assert checks[part].status == SKIP and "a test stand-in" in checks[part].summary, part
    assert checks["tensorrt DLA"].status == SKIP and "no DLA" in checks["tensorrt DLA"].summary
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


@pytest.mark.parametrize("nms", ["onnx", "efficient"])
def test_selftest_says_why_nothing_is_seen_with_the_max_score(tmp_path, nms):
    """No detections because the scores stay under the graph's threshold: the WARN names the highest score
    the inputs reached before NMS (the deploy graph's max_score output), exactly the pre-NMS graph's."""
    import onnxruntime as ort

    from edge.doctor.compare import make_batches
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

    model = write_deploy_model(tmp_path, nms, score_threshold=0.999)
    check = by_name(run_selftest(SelftestConfig(model=str(model), iterations=1, warmup=0)))["onnxruntime: detections"]
    with OnnxRuntimeBackend(model) as backend:
        batches = make_batches(backend.input_format, selftest_frames(3))
    pre = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    peak = max(float(pre.run(["scores"], {pre.get_inputs()[0].name: b})[0].max()) for b in batches)
    assert peak < 0.999
    assert check.status == WARN and check.details["max_score"] == pytest.approx(peak, abs=1e-6)
    assert check.summary.startswith(f"no detections in 3 frames: max score {peak:.3g} < score threshold 0.999 "
                                    "(the graph's); re-run edge surgery"), check.summary
