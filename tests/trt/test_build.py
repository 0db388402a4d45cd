"""Engine building: version dispatch, plans, cache keys, staleness, atomic writes, trtexec, calibrator cache.

Tests named ``test_api_contract_*`` run the builder against strict stand-ins of the ``tensorrt`` module
(tests/trt_standin.py), faithful to the documented Python API of TensorRT 8.5, 10.x and 11. They are
API-contract tests, not TensorRT runs: no engine is built and nothing runs on a GPU. A real build is
checked by ``edge doctor --selftest`` on a device, and by the test at the end, skipped without TensorRT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.artifacts import read_sidecar, write_sidecar
from edge.cli.main import main as edge_main
from edge.errors import EdgeError, ModelError
from edge.trt import api
from edge.trt.build import EngineBuildConfig, build_engines, engine_status, plan_engines
from edge.trt.calibrator import CalibrationCache, CalibrationFeeder, make_entropy_calibrator
from edge.trt.engine_key import DeviceInfo, read_l4t_release
from edge.trt.onnx_info import inspect_onnx
from edge.trt.trtexec import trtexec_command
from edge.trt.version import capabilities, parse_version, require_supported
from tests.trt_standin import make_tensorrt

ORIN = DeviceInfo("Orin", "8.7", "36.3.0")


def _conv_model(path: Path, *, dynamic: bool = False, nhwc_uint8: bool = False, qdq: bool = False,
                fp16: bool = False, plugin: bool = False, hw=(32, 32), seed: int = 0,
                plugin_attrs=None) -> Path:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    h, w = hw
    if nhwc_uint8:
        inp = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N" if dynamic else 1, h, w, 3])
        nodes += [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
                  helper.make_node("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2])]
    else:
        dims = ["N", 3, "H", "W"] if dynamic else [1, 3, h, w]
        inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)
        nodes.append(helper.make_node("Identity", ["images"], ["x"]))
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits.append(numpy_helper.from_array(weight, "w"))
    conv_in = "x"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"])]
        conv_in = "xdq"
    if fp16:
        nodes.append(helper.make_node("Cast", [conv_in], ["x16"], to=TensorProto.FLOAT16))
        nodes.append(helper.make_node("Cast", ["x16"], ["x32"], to=TensorProto.FLOAT))
        conv_in = "x32"
    nodes.append(helper.make_node("Conv", [conv_in, "w"], ["y"], pads=[1, 1, 1, 1]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if plugin:
        nodes.append(helper.make_node("EfficientNMS_TRT", ["y", "y"], ["num_detections"], plugin_version="1",
                                      **(plugin_attrs or {})))
        outputs = [helper.make_tensor_value_info("num_detections", TensorProto.INT32, None)]
    graph = helper.make_graph(nodes, "g", [inp], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


# --- version dispatch -----------------------------------------------------------------------------


def test_versions_parse_and_gate():
    assert parse_version("10.3.0.30") == (10, 3, 0)
    assert parse_version("8.5") == (8, 5, 0)
    with pytest.raises(EdgeError, match="cannot parse"):
        parse_version("ten")
    with pytest.raises(EdgeError, match=">= 8.2"):
        require_supported(capabilities("8.0.1"), for_build=False)
    with pytest.raises(EdgeError, match="builds engines only with TensorRT >= 8.4"):
        require_supported(capabilities("8.2.1"), for_build=True)
    require_supported(capabilities("8.2.1"), for_build=False)
    c11 = capabilities("11.0.0")
    assert not c11.implicit_precision and not c11.int8_calibrator and c11.strongly_typed_only
    c85 = capabilities("8.5.2")
    assert c85.implicit_precision and c85.explicit_batch_flag_needed and c85.tensor_api and not c85.onnx_nms_import


# --- API-contract tests against strict stand-ins ----------------------------------------------------


def _request(path: Path, precision: str, **kw):
    info = inspect_onnx(str(path))
    from edge.trt.engine_key import Profile

    shape = tuple(d if isinstance(d, int) else 1 for d in info.inputs[0].shape)
    return api.BuildRequest(onnx_path=str(path), precision=precision,
                            profiles=[Profile("images", shape, shape, shape)],
                            onnx_precision_form=info.precision_form, plugin_ops=info.plugin_ops, **kw)


def _record(engine: bytes) -> dict:
    assert engine.startswith(b"ENGINE")
    return json.loads(engine[len(b"ENGINE"):])


def test_api_contract_trt85_fp16_uses_explicit_batch_and_fp16_flag(tmp_path):
    trt = make_tensorrt("8.5.2")
    res = api.build_engine(trt, _request(_conv_model(tmp_path / "m.onnx"), "fp16"))
    rec = _record(res.engine)
    assert rec["flags"] == ["FP16"]
    assert rec["network_flags"] == 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert rec["workspace"] == 1024 << 20
    assert ("init_libnvinfer_plugins", "") in trt.calls
    assert res.timing_cache is not None


def test_api_contract_trt10_int8_qdq_sets_int8_flag_without_calibrator(tmp_path):
    trt = make_tensorrt("10.3.0")
    rec = _record(api.build_engine(trt, _request(_conv_model(tmp_path / "q.onnx", qdq=True), "int8")).engine)
    assert rec["flags"] == ["INT8"] and rec["calibrator"] is False and rec["network_flags"] == 0


def test_api_contract_trt10_int8_fp32_graph_needs_calibrator(tmp_path):
    trt = make_tensorrt("10.3.0")
    path = _conv_model(tmp_path / "m.onnx")
    with pytest.raises(EdgeError, match="needs calibration data"):
        api.build_engine(trt, _request(path, "int8"))
    calibrator = make_entropy_calibrator(trt, CalibrationFeeder([], 1, HostBackedBuffer),
                                         CalibrationCache(str(tmp_path / "c.cache"), {"a": 1}))
    rec = _record(api.build_engine(trt, _request(path, "int8", calibrator=calibrator)).engine)
    assert rec["calibrator"] is True and rec["flags"] == ["INT8"]


def test_api_contract_trt10_strongly_typed_sets_flag_and_no_precision_flags(tmp_path):
    trt = make_tensorrt("10.3.0")
    path = _conv_model(tmp_path / "f.onnx", fp16=True)
    rec = _record(api.build_engine(trt, _request(path, "fp16", strongly_typed=True)).engine)
    assert rec["flags"] == []
    assert rec["network_flags"] == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def test_api_contract_trt11_refuses_implicit_precision(tmp_path):
    trt = make_tensorrt("11.0.0")
    fp32 = _conv_model(tmp_path / "m.onnx")
    with pytest.raises(EdgeError, match="edge quantize MODEL.onnx --precision fp16"):
        api.build_engine(trt, _request(fp32, "fp16"))
    with pytest.raises(EdgeError, match="removed implicit INT8"):
        api.build_engine(trt, _request(fp32, "int8"))
    # the stand-in really lacks the removed API: touching it would fail as on a device
    with pytest.raises(AttributeError):
        trt.BuilderFlag.INT8  # noqa: B018
    with pytest.raises(AttributeError):
        trt.IInt8EntropyCalibrator2  # noqa: B018


def test_api_contract_trt11_builds_typed_graphs_without_flags(tmp_path):
    trt = make_tensorrt("11.0.0")
    for path, precision in [(_conv_model(tmp_path / "f.onnx", fp16=True), "fp16"),
                            (_conv_model(tmp_path / "q.onnx", qdq=True), "int8"),
                            (_conv_model(tmp_path / "b.onnx", qdq=True), "best")]:
        rec = _record(api.build_engine(trt, _request(path, precision)).engine)
        assert rec["flags"] == [] and rec["network_flags"] == 0 and rec["calibrator"] is False


def test_api_contract_missing_plugin_is_named(tmp_path):
    trt = make_tensorrt("10.3.0", plugins=("BatchedNMS_TRT",))
    path = _conv_model(tmp_path / "p.onnx", plugin=True)
    with pytest.raises(ModelError, match=r"EfficientNMS_TRT.*--nms onnx"):
        api.build_engine(trt, _request(path, "fp16"))
    # 8.5 lists creators through plugin_creator_list (all_creators does not exist there)
    trt85 = make_tensorrt("8.5.2")
    assert "EfficientNMS_TRT" in api.init_plugins(trt85, api.make_logger(trt85))


def test_api_contract_dla_core_checked_and_set(tmp_path):
    path = _conv_model(tmp_path / "m.onnx")
    with pytest.raises(EdgeError, match="has 0 DLA core"):
        api.build_engine(make_tensorrt("10.3.0"), _request(path, "fp16", dla_core=0))
    rec = _record(api.build_engine(make_tensorrt("10.3.0", num_dla_cores=2),
                                   _request(path, "fp16", dla_core=1, gpu_fallback=True)).engine)
    assert rec["dla"] == 1 and "GPU_FALLBACK" in rec["flags"]


def test_api_contract_build_failure_reports_cause(tmp_path):
    with pytest.raises(EdgeError, match="out of memory.*lower --workspace"):
        api.build_engine(make_tensorrt("10.3.0", fail_build=True), _request(_conv_model(tmp_path / "m.onnx"), "fp16"))


# --- plans, keys, staleness, atomic writes ------------------------------------------------------------


def test_plan_one_engine_per_resolution_with_dynamic_onnx(tmp_path):
    path = _conv_model(tmp_path / "dyn.onnx", dynamic=True)
    cfg = EngineBuildConfig(str(path), out_dir=str(tmp_path / "engines"), precision="fp16",
                            imgsz=[(256, 320), (320, 320)], batch=(1, 2, 4))
    plans = plan_engines(cfg, inspect_onnx(str(path)), {}, ORIN, capabilities("10.3.0"), "abc")
    assert [p.engine_path.name for p in plans] == [
        "dyn_256x320_b4_fp16_orin-sm87.engine", "dyn_320x320_b4_fp16_orin-sm87.engine"]
    prof = plans[0].profiles[0]
    assert prof.min_shape == (1, 3, 256, 320) and prof.opt_shape == (2, 3, 256, 320) and prof.max_shape == (4, 3, 256, 320)
    assert plans[0].key.l4t_release == "36.3.0" and plans[0].key.device_sm == "8.7"
    span = plan_engines(EngineBuildConfig(str(path), out_dir=str(tmp_path), imgsz=[(256, 256), (320, 320)],
                                          span_profile=True), inspect_onnx(str(path)), {}, ORIN,
                        capabilities("10.3.0"), "abc")
    assert len(span) == 1 and span[0].profiles[0].min_shape[2:] == (256, 256)
    assert span[0].profiles[0].max_shape[2:] == (320, 320) and "256x256-320x320" in span[0].engine_path.name


def test_plan_refuses_other_size_for_static_onnx(tmp_path):
    path = _conv_model(tmp_path / "s.onnx", hw=(32, 32))
    cfg = EngineBuildConfig(str(path), imgsz=[(64, 64)])
    with pytest.raises(EdgeError, match="fixed input size 32x32.*re-export"):
        plan_engines(cfg, inspect_onnx(str(path)), {}, ORIN, capabilities("10.3.0"), "abc")


def test_plan_nhwc_uint8_input_shapes(tmp_path):
    path = _conv_model(tmp_path / "u8.onnx", nhwc_uint8=True, dynamic=True, hw=(48, 64))
    plans = plan_engines(EngineBuildConfig(str(path), imgsz=[(48, 64)], batch=(1, 1, 2)),
                         inspect_onnx(str(path)), {}, ORIN, capabilities("8.5.2"), "abc")
    assert plans[0].profiles[0].max_shape == (2, 48, 64, 3)
    assert "_48x64_" in plans[0].engine_path.name


def test_build_skips_up_to_date_and_rebuilds_stale(tmp_path):
    trt = make_tensorrt("10.3.0")
    path = _conv_model(tmp_path / "m.onnx")
    write_sidecar(path, {"classes": ["a"], "nms": {"type": "onnx", "iou_threshold": 0.5}})
    cfg = EngineBuildConfig(str(path), out_dir=str(tmp_path / "engines"), precision="fp16",
                            timing_cache=str(tmp_path / "timing.cache"))
    first = build_engines(cfg, trt, ORIN)
    assert [r.status for r in first] == ["built"]
    engine = first[0].path
    meta = read_sidecar(engine)
    assert meta["classes"] == ["a"] and meta["engine"]["key"]["nms"]["iou_threshold"] == 0.5
    assert meta["engine"]["trtexec"].startswith("trtexec --onnx=") and "--fp16" in meta["engine"]["trtexec"]
    assert (tmp_path / "timing.cache").exists()
    assert [r.status for r in build_engines(cfg, trt, ORIN)] == ["up-to-date"]
    # a re-export (new ONNX bytes) makes the engine stale
    _conv_model(path, seed=1)
    again = build_engines(cfg, trt, ORIN)
    assert again[0].status == "built" and any("onnx_sha256" in r for r in again[0].reasons)
    # another device or TensorRT version: stale too
    from edge.trt.build import plan_engines as plan

    other = plan(cfg, inspect_onnx(str(path)), {}, DeviceInfo("Xavier", "7.2"), capabilities("10.3.0"), "x")[0]
    assert engine_status(other)[0] in ("missing", "stale")
    # truncated engine bytes are detected
    engine.write_bytes(engine.read_bytes()[:5])
    status, reasons = engine_status(plan(cfg, inspect_onnx(str(path)), read_sidecar(path), ORIN,
                                         capabilities("10.3.0"), __import__("edge.artifacts").artifacts.sha256_file(path))[0])
    assert status == "stale" and any("sha256" in r for r in reasons)


def test_interrupted_build_leaves_no_engine(tmp_path):
    path = _conv_model(tmp_path / "m.onnx")
    out = tmp_path / "engines"

    def exploding_build(trt, req):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_engines(EngineBuildConfig(str(path), out_dir=str(out)), make_tensorrt("10.3.0"), ORIN,
                      build_fn=exploding_build)
    assert not out.exists() or os.listdir(out) == []


def test_trtexec_command_per_version():
    from edge.trt.engine_key import Profile

    prof = [Profile("images", (1, 3, 320, 320), (1, 3, 320, 320), (4, 3, 320, 320))]
    cmd85 = trtexec_command(capabilities("8.5.2"), "m.onnx", "m.engine", "best", prof, 2048, dla_core=0,
                            gpu_fallback=True)
    assert "--fp16" in cmd85 and "--int8" in cmd85 and "--maxShapes=images:4x3x320x320" in cmd85
    assert "--memPoolSize=workspace:2048M" in cmd85 and "--useDLACore=0" in cmd85 and "--allowGPUFallback" in cmd85
    cmd11 = trtexec_command(capabilities("11.0.0"), "m.onnx", "m.engine", "fp16", prof, 1024)
    assert "--fp16" not in cmd11 and "--int8" not in cmd11


def test_build_cli_dry_run_prints_plan(tmp_path, capsys):
    path = _conv_model(tmp_path / "dyn.onnx", dynamic=True)
    rc = edge_main(["build", str(path), "--dry-run", "--trt-version", "10.3", "--device-name", "Orin",
                    "--device-sm", "8.7", "--imgsz", "320", "--imgsz", "256x320", "--out", str(tmp_path / "e")])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan) == 2 and all(p["status"] == "missing" for p in plan)
    assert edge_main(["build", str(path), "--dry-run", "--trt-version", "10.3", "--device-name", "Orin",
                      "--device-sm", "8.7", "--batch", "4,2,1"]) == 2


def test_build_cli_without_tensorrt_says_how_to_get_it(tmp_path, caplog):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    path = _conv_model(tmp_path / "m.onnx")
    assert edge_main(["build", str(path)]) == 2
    assert "tensorrt is required" in caplog.text and "JetPack" in caplog.text


# --- legacy calibrator data path --------------------------------------------------------------------


class HostBackedBuffer:
    """A host-memory stand-in for edge.cuda's device buffer (no CUDA here): keeps the last upload."""

    def __init__(self, nbytes: int):
        self.data = np.zeros(nbytes, np.uint8)
        self.ptr = self.data.ctypes.data
        self.freed = False

    def upload(self, array: np.ndarray) -> None:
        self.data[:] = array.view(np.uint8).reshape(-1)

    def free(self) -> None:
        self.freed = True


def test_calibration_feeder_reuses_one_buffer_and_ends():
    batches = [np.full((2, 3, 4, 4), i, np.float32) for i in range(3)]
    made = []

    def alloc(n):
        made.append(HostBackedBuffer(n))
        return made[-1]

    feeder = CalibrationFeeder(batches, 2, alloc)
    ptrs = [feeder.next_pointers(["images"]) for _ in range(3)]
    assert len(made) == 1 and all(p == [made[0].ptr] for p in ptrs)
    assert made[0].data.view(np.float32)[0] == 2.0
    assert feeder.next_pointers(["images"]) is None
    feeder.close()
    assert made[0].freed
    with pytest.raises(ValueError, match="expected 2"):
        CalibrationFeeder([np.zeros((1, 3, 4, 4), np.float32)], 2, alloc).next_pointers(["images"])


def test_calibration_cache_is_ignored_when_provenance_changes(tmp_path):
    prov = {"images_sha256": "aa", "count": 10, "preprocessing": "letterbox 320"}
    cache = CalibrationCache(str(tmp_path / "c.cache"), prov)
    assert cache.read() is None
    cache.write(b"TRT-8501-EntropyCalibration2\nimages: 3c010a14\n")
    assert cache.read().startswith(b"TRT-8501")
    assert CalibrationCache(str(tmp_path / "c.cache"), dict(prov, count=11)).read() is None
    (tmp_path / "c.cache").write_bytes(b"tampered")
    assert cache.read() is None


def test_api_contract_entropy_calibrator_subclass(tmp_path):
    from edge.trt.calibrator import make_entropy_calibrator

    trt = make_tensorrt("8.5.2")
    feeder = CalibrationFeeder([np.zeros((1, 3, 4, 4), np.float32)], 1, HostBackedBuffer)
    cal = make_entropy_calibrator(trt, feeder, CalibrationCache(str(tmp_path / "c.cache"), {"a": 1}))
    assert isinstance(cal, trt.IInt8EntropyCalibrator2)
    assert cal.get_batch_size() == 1 and len(cal.get_batch(["images"])) == 1 and cal.get_batch(["images"]) is None
    assert cal.read_calibration_cache() is None
    cal.write_calibration_cache(b"cache")
    assert cal.read_calibration_cache() == b"cache"


def test_read_l4t_release(tmp_path):
    f = tmp_path / "nv_tegra_release"
    f.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n")
    assert read_l4t_release(str(f)) == "35.4.1"
    assert read_l4t_release(str(tmp_path / "absent")) is None


@pytest.mark.tensorrt
def test_real_tensorrt_build(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (only on a Jetson or NVIDIA GPU host)")
    from edge.trt.engine_key import device_info

    path = _conv_model(tmp_path / "m.onnx")
    res = build_engines(EngineBuildConfig(str(path), out_dir=str(tmp_path / "e"), precision="fp32"), trt, device_info())
    assert res[0].status == "built" and res[0].path.stat().st_size > 0


# --- issue 12: trtexec shape flags only for dynamic inputs ------------------------------------------


def test_trtexec_line_of_a_static_onnx_has_no_shape_flags(tmp_path, capsys):
    """trtexec refuses explicit shapes for a static model ("Static model does not take explicit shapes")."""
    static = _conv_model(tmp_path / "s.onnx", hw=(32, 32))
    plan = plan_engines(EngineBuildConfig(str(static), out_dir=str(tmp_path / "e")), inspect_onnx(str(static)), {},
                        ORIN, capabilities("10.3.0"), "abc")[0]
    assert not any(flag in plan.trtexec for flag in ("--minShapes", "--optShapes", "--maxShapes")), plan.trtexec
    assert plan.key.profiles  # the cache key still records the shape the engine is built for
    # the sidecar written by a build carries the same line
    built = build_engines(EngineBuildConfig(str(static), out_dir=str(tmp_path / "e")), make_tensorrt("10.3.0"), ORIN)
    assert "Shapes=" not in read_sidecar(built[0].path)["engine"]["trtexec"]
    # and so does --dry-run
    assert edge_main(["build", str(static), "--dry-run", "--trt-version", "8.5.2", "--device-name", "Orin",
                      "--device-sm", "8.7", "--out", str(tmp_path / "d")]) == 0
    assert "Shapes=" not in json.loads(capsys.readouterr().out)[0]["trtexec"]
    # a dynamic input keeps all three, with every dimension given
    dyn = _conv_model(tmp_path / "d.onnx", dynamic=True)
    cmd = plan_engines(EngineBuildConfig(str(dyn), imgsz=[(64, 96)], batch=(1, 2, 4)), inspect_onnx(str(dyn)), {},
                       ORIN, capabilities("10.3.0"), "abc")[0].trtexec
    assert "--minShapes=images:1x3x64x96" in cmd and "--optShapes=images:2x3x64x96" in cmd
    assert "--maxShapes=images:4x3x64x96" in cmd
    # a fixed batch with dynamic H/W is still dynamic; a dynamic batch with fixed H/W too
    assert inspect_onnx(str(dyn)).inputs[0].is_dynamic and not inspect_onnx(str(static)).inputs[0].is_dynamic
    bdyn = _conv_model(tmp_path / "b.onnx", nhwc_uint8=True, dynamic=True)
    assert inspect_onnx(str(bdyn)).dynamic_input_names == ["images"]


# --- issue 12: class-agnostic EfficientNMS_TRT needs TensorRT 8.6 ------------------------------------


@pytest.mark.parametrize("version, refused", [("8.5.2", True), ("8.6.1", False), ("10.3.0", False)])
def test_plan_refuses_class_agnostic_efficient_nms_before_8_6(tmp_path, version, refused):
    """The 8.5.x EfficientNMS_TRT creator parses six fields, not class_agnostic: per-class NMS, silently."""
    path = _conv_model(tmp_path / "ca.onnx", plugin=True, plugin_attrs={"class_agnostic": 1, "iou_threshold": 0.5})
    info = inspect_onnx(str(path))
    assert info.plugin_attributes["EfficientNMS_TRT"] == [{"class_agnostic": 1, "iou_threshold": 0.5,
                                                           "plugin_version": "1"}]
    assert info.class_agnostic_nms
    assert capabilities(version).efficient_nms_class_agnostic is not refused
    plan = lambda: plan_engines(EngineBuildConfig(str(path)), info, {}, ORIN, capabilities(version), "abc")  # noqa: E731
    if refused:
        with pytest.raises(EdgeError, match=r"class_agnostic.*8\.6.*without --class-agnostic"):
            plan()
    else:
        assert plan()
    # per-class NMS (class_agnostic 0 or absent) is fine everywhere
    per_class = _conv_model(tmp_path / "pc.onnx", plugin=True, plugin_attrs={"class_agnostic": 0})
    assert not inspect_onnx(str(per_class)).class_agnostic_nms
    assert plan_engines(EngineBuildConfig(str(per_class)), inspect_onnx(str(per_class)), {}, ORIN,
                        capabilities(version), "abc")


def test_build_refuses_class_agnostic_on_trt85_dry_run_and_build(tmp_path, caplog):
    path = _conv_model(tmp_path / "ca.onnx", plugin=True, plugin_attrs={"class_agnostic": 1})
    rc = edge_main(["build", str(path), "--dry-run", "--trt-version", "8.5.2", "--device-name", "Xavier",
                    "--device-sm", "7.2", "--out", str(tmp_path / "e")])
    assert rc == 2 and "class-agnostic" in caplog.text and "TensorRT 8.5.2" in caplog.text
    with pytest.raises(EdgeError, match="class_agnostic"):
        build_engines(EngineBuildConfig(str(path), out_dir=str(tmp_path / "e")), make_tensorrt("8.5.2"), ORIN)
    assert not (tmp_path / "e").exists()


def test_build_refuses_the_onnxruntime_int8_form(tmp_path, caplog):
    """``edge quantize --target onnxruntime`` writes ONNX Runtime's CPU form (uint8 QLinear-style Q/DQ, folded
    preprocessing): the sidecar says so, and edge build refuses it before TensorRT does, with the fix."""
    path = _conv_model(tmp_path / "ort.onnx")
    path.with_suffix(".json").write_text(json.dumps({"quantization": {"precision": "int8", "target": "onnxruntime"}}))
    rc = edge_main(["build", str(path), "--dry-run", "--trt-version", "10.3", "--device-name", "Orin",
                    "--device-sm", "8.7", "--out", str(tmp_path / "e")])
    assert rc == 2 and "--target onnxruntime" in caplog.text and "--target tensorrt (the default)" in caplog.text
    with pytest.raises(EdgeError, match="ONNX Runtime CPU form"):
        build_engines(EngineBuildConfig(str(path), out_dir=str(tmp_path / "e")), make_tensorrt("10.3.0"), ORIN)
    assert not (tmp_path / "e").exists()


# --- issue 12: --precision best on a graph without INT8 scales ---------------------------------------


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_best_without_scales_is_refused_like_int8(tmp_path, version):
    """best = FP16 + INT8 flags; on an fp32 (or fp16) graph with no calibrator INT8 has no scales, and
    TensorRT fails the build ("Calibration failure occurred with no scaling factors detected")."""
    from edge.trt.calibrator import make_entropy_calibrator

    trt = make_tensorrt(version)
    for name, kw in (("m.onnx", {}), ("h.onnx", {"fp16": True})):
        path = _conv_model(tmp_path / name, **kw)
        with pytest.raises(EdgeError, match=r"--precision best.*no calibration data.*--calib.*edge quantize"):
            build_engines(EngineBuildConfig(str(path), out_dir=str(tmp_path / "e"), precision="best"), trt, ORIN)
        assert not [c for c in trt.calls if c[0] == "build"], "nothing may be built"
    path = tmp_path / "m.onnx"
    # with a calibrator, or on a Q/DQ graph, best keeps both flags
    cal = make_entropy_calibrator(trt, CalibrationFeeder([], 1, HostBackedBuffer),
                                  CalibrationCache(str(tmp_path / "c.cache"), {"a": 1}))
    built = build_engines(EngineBuildConfig(str(path), out_dir=str(tmp_path / "e"), precision="best"), trt, ORIN,
                          calibrator=cal)
    assert read_sidecar(built[0].path)["engine"]["builder_flags"] == ["FP16", "INT8"]
    qdq = _conv_model(tmp_path / "q.onnx", qdq=True)
    built = build_engines(EngineBuildConfig(str(qdq), out_dir=str(tmp_path / "e"), precision="best"), trt, ORIN)
    assert read_sidecar(built[0].path)["engine"]["builder_flags"] == ["FP16", "INT8"]


def test_best_on_trt11_or_strongly_typed_sets_no_int8_and_is_not_refused(tmp_path):
    path = _conv_model(tmp_path / "m.onnx")
    rec11 = build_engines(EngineBuildConfig(str(path), out_dir=str(tmp_path / "e11"), precision="best"),
                          make_tensorrt("11.0.0"), ORIN)
    assert read_sidecar(rec11[0].path)["engine"]["builder_flags"] == []
    typed = build_engines(EngineBuildConfig(str(path), out_dir=str(tmp_path / "e10"), precision="best",
                                            strongly_typed=True), make_tensorrt("10.3.0"), ORIN)
    assert read_sidecar(typed[0].path)["engine"]["builder_flags"] == []


# --- issue 12: legacy INT8 calibration with dynamic shapes ------------------------------------------------


def _entropy_calibrator(trt, tmp_path, shape=(1, 3, 32, 32)):
    from edge.trt.calibrator import make_entropy_calibrator

    feeder = CalibrationFeeder([np.zeros(shape, np.float32)], shape[0], HostBackedBuffer, shape=shape,
                               dtype=np.float32)
    return make_entropy_calibrator(trt, feeder, CalibrationCache(str(tmp_path / "c.cache"), {"a": 1}))


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_api_contract_calibration_profile_is_set_for_dynamic_shapes(tmp_path, version):
    """TensorRT calibrates a network with runtime dimensions at the calibration profile's opt shape;
    without one set, calibration of a dynamic-shape network fails."""
    from edge.trt.engine_key import Profile

    trt = make_tensorrt(version)
    dyn = _conv_model(tmp_path / "d.onnx", dynamic=True)
    prof = Profile("images", (1, 3, 32, 48), (2, 3, 64, 96), (4, 3, 64, 96))
    req = api.BuildRequest(onnx_path=str(dyn), precision="int8", profiles=[prof],
                           calibrator=_entropy_calibrator(trt, tmp_path, (2, 3, 64, 96)))
    rec = _record(api.build_engine(trt, req).engine)
    opt = [2, 3, 64, 96]
    assert rec["calibration_profile"] == {"images": [opt, opt, opt]}
    assert rec["profiles"]["images"] == [[1, 3, 32, 48], opt, [4, 3, 64, 96]]
    # a static network needs none (and gets none); nor does a build without a calibrator
    static = _conv_model(tmp_path / "s.onnx")
    req = _request(static, "int8", calibrator=_entropy_calibrator(trt, tmp_path))
    assert _record(api.build_engine(trt, req).engine)["calibration_profile"] is None
    qdq = _conv_model(tmp_path / "q.onnx", qdq=True, dynamic=True)
    req = api.BuildRequest(onnx_path=str(qdq), precision="int8", profiles=[prof], onnx_precision_form="qdq")
    assert _record(api.build_engine(trt, req).engine)["calibration_profile"] is None


def test_calibration_feeder_checks_batches_against_the_profile_shape():
    made = []

    def alloc(n):
        made.append(HostBackedBuffer(n))
        return made[-1]

    shape = (2, 3, 8, 12)
    good = np.ones(shape, np.float32)
    feeder = CalibrationFeeder([good, np.ones((2, 3, 8, 8), np.float32)], 2, alloc, shape=shape, dtype=np.float32)
    assert feeder.nbytes == good.nbytes
    assert feeder.next_pointers(["images"]) == [made[0].ptr] and made[0].data.nbytes == good.nbytes
    with pytest.raises(ValueError, match=r"\[2, 3, 8, 8\].*\[2, 3, 8, 12\].*opt shape"):
        feeder.next_pointers(["images"])
    wrong_dtype = CalibrationFeeder([np.ones(shape, np.float16)], 2, alloc, shape=shape, dtype=np.float32)
    with pytest.raises(ValueError, match="float16.*float32"):
        wrong_dtype.next_pointers(["images"])
    with pytest.raises(ValueError, match="batch size 1.*opt shape"):
        CalibrationFeeder([], 1, alloc, shape=shape, dtype=np.float32)
    # without a profile shape, later batches must still fit the buffer the first one sized
    loose = CalibrationFeeder([np.ones((1, 3, 4, 4), np.float32), np.ones((1, 3, 8, 8), np.float32)], 1, alloc)
    loose.next_pointers(["images"])
    with pytest.raises(ValueError, match="bytes"):
        loose.next_pointers(["images"])


def _calibration_images(tmp_path, n=4):
    import cv2

    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        p = tmp_path / "calib" / f"im{i}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
        paths.append(p.name)
    manifest = tmp_path / "calib" / "manifest.txt"
    manifest.write_text("\n".join(paths) + "\n")
    return manifest


def test_legacy_calibrator_feeds_batches_at_the_profile_opt_shape(tmp_path, monkeypatch):
    """`edge export --dynamic-hw` (sidecar 64x64) then `edge build --imgsz 32x48 --batch 1,2,4 --calib`: the
    batcher letterboxes to the engine's opt shape [2,3,32,48] and the device buffer holds exactly that."""
    from edge.runtime import engines
    from edge.runtime.engines import CalibrationRequest, legacy_calibrator

    buffers = []

    def device_buffer(nbytes):
        buffers.append(HostBackedBuffer(nbytes))
        return buffers[-1]

    monkeypatch.setattr(engines, "DeviceBuffer", device_buffer)
    path = _conv_model(tmp_path / "d.onnx", dynamic=True)
    write_sidecar(path, {"input_layout": "float_nchw_rgb", "input_size": [64, 64],
                         "normalization": {"scale": 255.0, "mean": [0, 0, 0], "std": [1, 1, 1]}})
    calib = CalibrationRequest(str(_calibration_images(tmp_path)), cache=str(tmp_path / "c.cache"))
    cfg = EngineBuildConfig(str(path), out_dir=str(tmp_path / "e"), precision="int8", imgsz=[(32, 48)],
                            batch=(1, 2, 4))
    cal = legacy_calibrator(calib, cfg, make_tensorrt("10.3.0"))
    assert cal.get_batch_size() == 2 and cfg.calibration_sha256
    assert cal.get_batch(["images"]) == [buffers[0].ptr]
    assert buffers[0].data.nbytes == 2 * 3 * 32 * 48 * 4
    assert cal.get_batch(["images"]) is not None and cal.get_batch(["images"]) is None
    # several engines, one per size, cannot share one calibration shape
    multi = EngineBuildConfig(str(path), precision="int8", imgsz=[(32, 48), (64, 64)])
    with pytest.raises(EdgeError, match="one --imgsz at a time.*--span-profile"):
        legacy_calibrator(calib, multi, make_tensorrt("10.3.0"))
    span = EngineBuildConfig(str(path), precision="int8", imgsz=[(32, 48), (64, 64)], span_profile=True)
    assert legacy_calibrator(calib, span, make_tensorrt("10.3.0")).get_batch_size() == 1
