"""``edge doctor --selftest``'s shipped-engine checks (``edge.doctor.shipped``, ``edge.doctor.dynamic_hw``) on
CPU: API-contract runs against the strict TensorRT/PyCUDA stand-ins (tests/doctor/device_standin.py), NOT
TensorRT. ``run_selftest`` takes its real code path (``tensorrt_hooks``: ``edge build``'s
``build_engines`` in the device's CUDA context, the legacy calibrator of ``edge.runtime.engines``, the
``TensorRTBackend`` with and without ``cuda_graph``); the stand-in engines compute the ONNX they were built
from, so the checks pass a faithful build and must catch one that computes something else.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime_extensions")
pytest.importorskip("onnx_graphsurgeon")

from edge.artifacts import read_sidecar, sha256_file  # noqa: E402
from edge.doctor.compare import make_batches, selftest_frames  # noqa: E402
from edge.doctor.engine_hooks import tensorrt_hooks  # noqa: E402
from edge.doctor.report import FAIL, OK, SKIP, DoctorReport  # noqa: E402
from edge.doctor.selftest import SelftestConfig, run_selftest  # noqa: E402
from edge.model_input import model_input_format  # noqa: E402
from tests.doctor.device_standin import drifting_scores, make_device  # noqa: E402
from tests.doctor.tiny_models import write_deploy_model, write_fcn_deploy_model  # noqa: E402

PARTS = ("tensorrt cuda graph", "tensorrt int8 calibrated", "tensorrt dynamic H/W", "tensorrt DLA")


@pytest.fixture(scope="module")
def fcn(tmp_path_factory: Any) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("fcn_models")
    return {"onnx": write_fcn_deploy_model(d, "onnx"), "efficient": write_fcn_deploy_model(d, "efficient"),
            "dynamic": write_fcn_deploy_model(d, "onnx", dynamic_hw=True),
            "grid": write_deploy_model(d / "grid", "onnx")}


def _run(model: Path, work: Path, device: Any, **options: Any) -> Dict[str, Any]:
    cfg = SelftestConfig(model=str(model), frames=2, iterations=1, warmup=0, workspace_mb=64, work_dir=str(work),
                         **options)
    return {c.name: c for c in run_selftest(cfg, trt_module=device.trt, cuda_driver=device.drv,
                                                   cuda_python=device.cuda_python)}


def _selftest_batches(model: Path) -> list:
    return make_batches(model_input_format(str(model)), selftest_frames(2))


@pytest.mark.parametrize("version,nms,dla_cores", [
    ("8.5.2", "efficient", 0),   # JetPack 5 (Xavier: DLA exists, but this device reports none)
    ("10.3.0", "onnx", 2),       # JetPack 6, Orin AGX/NX
    ("11.0.0", "onnx", 0),       # strongly typed: fp32 only from an fp32 graph, no calibrator
])
def test_shipped_engines_run_as_edge_build_writes_them(fcn, tmp_path, version, nms, dla_cores):
    """API-contract run (stand-ins, not TensorRT): every shipped part is a check, each records what a bug
    report needs, and the engine checked is the file ``edge build`` writes from the deploy graph itself."""
    from edge.trt.build import EngineBuildConfig, build_engines
    from edge.trt.engine_key import DeviceInfo

    model = fcn[nms]
    device = make_device(version, num_dla_cores=dla_cores)
    checks = _run(model, tmp_path, device)
    precisions = ["fp32"] if version.startswith("11.") else ["fp32", "fp16"]
    for p in precisions:
        shipped = checks[f"tensorrt {p}: shipped engine"]
        assert shipped.status == OK, shipped.summary
        d = shipped.details
        engine = Path(d["engine"])
        assert d["sha256"] == sha256_file(engine) == read_sidecar(engine)["engine"]["sha256"]
        assert d["sidecar_sha256_matches"] and d["bytes"] == engine.stat().st_size
        assert d["input_shape"] == [1, 64, 64, 3] and d["precision"] == p
        assert d["builder_flags"] == (["FP16"] if p == "fp16" and not version.startswith("11.") else [])
        assert d["comparison"]["problems"] == [] and d["comparison"]["matched"] > 0
        assert d["timing"]["iterations"] == 1
        # byte for byte what `edge build MODEL --precision P` ships: edge build finds this very file up to date
        again = build_engines(EngineBuildConfig(str(model), out_dir=str(engine.parent), precision=p, workspace_mb=64),
                              device.trt, DeviceInfo("Orin (stand-in)", "8.7", None))
        assert [(r.path, r.status) for r in again] == [(engine, "up-to-date")]
    # shipped engines come from the deploy graph itself; the probe engines from the graph with pre-NMS outputs
    sources = [Path(b["onnx"]).name for b in device.builds]
    assert sources.count(model.name) >= len(precisions) and any(s.endswith(".selftest.onnx") for s in sources)
    assert checks["tensorrt cuda graph"].status == OK, checks["tensorrt cuda graph"].summary
    assert "timing_cuda_graph" in checks["tensorrt cuda graph"].details
    if version.startswith("11."):
        assert checks["tensorrt int8 calibrated"].status == SKIP
        assert "no INT8 calibrator" in checks["tensorrt int8 calibrated"].summary
    else:
        calibrated = checks["tensorrt int8 calibrated"]
        assert calibrated.status == OK, calibrated.summary
        assert calibrated.details["calibration_cache_written"] and calibrated.details["calibration_sha256"]
        build = next(b for b in device.builds if b["calibrator"])
        assert build["flags"] == ["INT8"]
        # TensorRT read, from the device buffer, the self-test frames as the runtime preprocesses them
        fed = build["calibration"]["batches"]
        assert len(fed) == 2 and all(np.array_equal(a, b) for a, b in zip(fed, _selftest_batches(model)))
    dla = checks["tensorrt DLA"]
    if dla_cores:
        assert dla.status == OK, dla.summary
        assert dla.details["dla_core"] == 0 and dla.details["gpu_fallback"] is True
        assert "GPU_FALLBACK" in dla.details["builder_flags"]
    else:
        assert dla.status == SKIP and ("no DLA" in dla.summary or "FP16 or INT8 only" in dla.summary)
    # the JSON a user attaches to a bug report carries each part's record
    data = json.loads(DoctorReport(checks=[], selftest=list(checks.values())).format_json())
    recorded = {c["name"]: c["details"] for c in data["selftest"]}
    for name in [f"tensorrt {p}: shipped engine" for p in precisions] + ["tensorrt cuda graph"]:
        assert {"engine", "sha256", "builder_flags", "input_shape"} <= set(recorded[name]), name


@pytest.mark.parametrize("part,when", [
    ("tensorrt fp16: shipped engine", lambda r: r["flags"] == ["FP16"] and not r["profiles"]
     and not r["onnx"].endswith(".selftest.onnx")),
    ("tensorrt int8 calibrated", lambda r: r["calibrator"]),
    ("tensorrt DLA", lambda r: r["dla"] == 0),
])
def test_an_engine_that_drifts_from_onnxruntime_fails_its_check_only(fcn, tmp_path, part, when):
    """API-contract run (stand-ins, not TensorRT): an engine whose scores come out at half fails its check."""
    device = make_device("10.3.0", num_dla_cores=2, miscompile=drifting_scores(0.5, when))
    checks = _run(fcn["onnx"], tmp_path, device)
    assert checks[part].status == FAIL
    assert "has no counterpart" in checks[part].summary and checks[part].details["comparison"]["problems"]
    skipped = ("tensorrt cuda graph",) if part == "tensorrt fp16: shipped engine" else ()
    others = [n for n in ("tensorrt fp32: shipped engine", "tensorrt fp16: shipped engine", *PARTS)
              if n not in (part, "tensorrt dynamic H/W") + skipped]  # dynamic H/W: see its own tests
    assert all(checks[n].status == OK for n in others), {n: checks[n].summary for n in others}
    if skipped:  # the cuda-graph check replays the shipped fp16 engine, which failed
        assert checks["tensorrt cuda graph"].status == SKIP and "fp16 engine failed" in checks["tensorrt cuda graph"].summary
        assert checks["tensorrt fp16: post-NMS identity"].status == OK  # the probe engine was faithful


def test_a_failing_build_is_one_failed_line(fcn, tmp_path):
    def miscompile(onnx_path: str, record: Dict[str, Any]) -> str:
        if record["dla"] == 0:
            raise RuntimeError("DLA: out of memory")
        return onnx_path

    checks = _run(fcn["onnx"], tmp_path, make_device("10.3.0", num_dla_cores=2, miscompile=miscompile))
    assert checks["tensorrt DLA"].status == FAIL and "DLA: out of memory" in checks["tensorrt DLA"].summary
    assert checks["tensorrt fp16: shipped engine"].status == OK


def test_calibration_reads_the_images_given(fcn, tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(selftest_frames(2)):
        cv2.imwrite(str(images / f"img{i}.png"), frame[:, ::-1])
    device = make_device("8.5.2")
    checks = _run(fcn["efficient"], tmp_path / "work", device, images=str(images), precisions=["fp32", "int8"])
    calibrated = checks["tensorrt int8 calibrated"]
    assert calibrated.status == OK, calibrated.summary
    listed = Path(calibrated.details["calibration_manifest"]).read_text().splitlines()
    assert [Path(x).name for x in listed if not x.startswith("#")] == ["img0.png", "img1.png"]
    assert checks["tensorrt DLA"].status == SKIP and "no DLA" in checks["tensorrt DLA"].summary


def test_calibrated_int8_needs_int8_asked_for(fcn, tmp_path):
    checks = _run(fcn["onnx"], tmp_path, make_device("10.3.0"), precisions=["fp32"])
    assert checks["tensorrt int8 calibrated"].status == SKIP and "--precision" in checks["tensorrt int8 calibrated"].summary
    assert checks["tensorrt cuda graph"].status == OK  # on the fp32 engine, the only one built
    assert "(fp32)" in checks["tensorrt cuda graph"].summary


# --- dynamic H/W ---------------------------------------------------------------------------------------


def test_dynamic_hw_engine_runs_at_another_size(fcn, tmp_path):
    """API-contract run (stand-ins, not TensorRT)."""
    device = make_device("10.3.0")
    check = _run(fcn["dynamic"], tmp_path, device)["tensorrt dynamic H/W"]
    assert check.status == OK, check.summary


@pytest.mark.parametrize("which,how", [("onnx", "freed"), ("dynamic", "itself")])
def test_dynamic_hw_engine_is_built_and_run_at_another_size(fcn, tmp_path, which, how):
    """API-contract run (stand-ins, not TensorRT): the engine is built with `edge build --imgsz 128x64` from a
    graph with a free height and width, run by the TensorRT backend at 128x64, and matches ONNX Runtime."""
    device = make_device("10.3.0")
    check = _run(fcn[which], tmp_path, device)["tensorrt dynamic H/W"]
    d = check.details
    assert d["built_size"] == [128, 64] and d["model_size"] == [64, 64]
    assert how in d["dynamic_graph_from"]
    assert (Path(d["dynamic_graph"]) == fcn[which]) == (how == "itself")
    build = next(b for b in device.builds if b["profiles"])
    assert build["profiles"]["images"] == [[1, 128, 64, 3]] * 3 and build["flags"] == ["FP16"]
    assert d["input_shape"] == [1, 128, 64, 3] and d["input_size"] == [1, 128, 64, 3]
    assert d["comparison"]["problems"] == [] and d["comparison"]["matched"] > 0
    if check.status == FAIL:  # until the engine sidecar records the built size (issue 12 item 1)
        assert "letterbox frames to 64x64" in check.summary and "built for 128x64" in check.summary


def test_dynamic_hw_check_fails_when_the_runtime_preprocesses_to_another_size(fcn, tmp_path):
    """The backend letterboxing to the model's size for an engine built at another one fails the check."""
    device = make_device("10.3.0")
    hooks = tensorrt_hooks(device.trt, device.drv)
    opened = hooks.open_engine

    def open_as_if_nominal(path: Path, cuda_graph: bool = False) -> Any:
        backend = opened(path, cuda_graph)  # type: ignore[misc]
        backend.info.input_format = dataclasses.replace(backend.info.input_format, height=64, width=64)
        return backend

    hooks.open_engine = open_as_if_nominal
    cfg = SelftestConfig(model=str(fcn["dynamic"]), frames=2, iterations=1, warmup=0, work_dir=str(tmp_path))
    check = {c.name: c for c in run_selftest(cfg, engine_hooks=hooks)}["tensorrt dynamic H/W"]
    assert check.status == FAIL
    assert "letterbox frames to 64x64" in check.summary and "built for 128x64" in check.summary
    assert "own size" in check.fix


def test_dynamic_hw_size_can_be_chosen(fcn, tmp_path):
    device = make_device("10.3.0")
    check = _run(fcn["dynamic"], tmp_path, device, dynamic_size=(96, 128))["tensorrt dynamic H/W"]
    assert check.details["built_size"] == [96, 128] and check.details["comparison"]["problems"] == []


def test_dynamic_hw_is_skipped_with_the_reasons_when_no_graph_can_be_made(fcn, tmp_path):
    device = make_device("10.3.0")
    check = _run(fcn["grid"], tmp_path, device)["tensorrt dynamic H/W"]
    assert check.status == SKIP
    assert "fixed 64x64 input" in check.summary and "shapes are fixed inside the graph" in check.summary
    assert "names no checkpoint" in check.summary and "--dynamic-hw" in check.summary
    assert not any(b["profiles"] for b in device.builds)


def _ship_context(model: Path, work: Path) -> Any:
    from edge.doctor.compare import NmsParams
    from edge.doctor.shipped import ShipContext
    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

    with OnnxRuntimeBackend(model) as backend:
        fmt, name = backend.input_format, backend.info.input_name
    frames = selftest_frames(2)
    work.mkdir(parents=True, exist_ok=True)
    return ShipContext(None, work, frames, make_batches(fmt, frames), fmt, name, 3,  # type: ignore[arg-type]
                       NmsParams(), 0, 1, 64, [])


def test_bundled_model_is_exported_again_with_a_free_size(tmp_path):
    """The bundled model fixes its shapes inside; its bundled checkpoint exported with --dynamic-hw (needs
    torch) gives the deploy graph's detections at 320x320 and runs at 256x320."""
    pytest.importorskip("torch")
    from edge.bundled import bundled_model
    from edge.doctor.compare import compare_detections
    from edge.doctor.dynamic_hw import dynamic_deploy_graph, other_size
    from edge.doctor.shipped import onnxruntime_outputs

    ctx = _ship_context(bundled_model(), tmp_path)
    assert other_size(320, 320) == (256, 320)
    graph = dynamic_deploy_graph(ctx, bundled_model(), (256, 320))
    assert "exported again with --dynamic-hw" in graph.how and "score > 0.3" in graph.how
    assert read_sidecar(graph.path)["nms"]["max_detections"] == 100
    same = onnxruntime_outputs(str(graph.path), ctx.input_name, ctx.batches)
    for got, want in zip(same, ctx.expected(str(bundled_model()))):
        assert compare_detections(got, want, 1e-3) == []
    other = make_batches(dataclasses.replace(ctx.input_format, height=256, width=320), ctx.frames)
    assert onnxruntime_outputs(str(graph.path), ctx.input_name, other)[0]["detection_boxes"].shape == (1, 100, 4)


def test_bundled_model_without_torch_says_the_export_extra_is_needed(tmp_path, monkeypatch):
    import importlib.util

    from edge.bundled import bundled_model
    from edge.doctor.dynamic_hw import NotDynamic, dynamic_deploy_graph

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(NotDynamic, match=r"fixed 320x320 input.*shapes are fixed inside.*export extra"):
        dynamic_deploy_graph(_ship_context(bundled_model(), tmp_path), bundled_model(), (256, 320))


def test_a_graph_whose_free_size_is_not_free_fails_the_dynamic_check(fcn, tmp_path):
    """A deploy graph that declares a free height and width but fixes its shapes inside fails the check."""
    import onnx

    model = onnx.load(str(fcn["grid"]))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, name in ((dims[1], "height"), (dims[2], "width")):
        dim.Clear()
        dim.dim_param = name
    path = tmp_path / "grid_declared_dynamic.onnx"
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(fcn["grid"].with_suffix(".json").read_text())
    check = _run(path, tmp_path / "work", make_device("10.3.0"))["tensorrt dynamic H/W"]
    assert check.status == FAIL and "cannot run it at 128x64" in check.summary and "--dynamic-hw" in check.fix
