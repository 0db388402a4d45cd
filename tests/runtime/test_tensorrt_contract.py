"""API-contract tests of the TensorRT backend and edge.cuda, against strict stand-ins. NOT a TensorRT run.

TensorRT and PyCUDA cannot be installed on this machine. These tests run ``TensorRTBackend`` against
stand-ins of the documented TensorRT 8.2/8.5/10/11 runtime API and of ``pycuda.driver``
(``tests/runtime/test_standins.py``): they check which API each version gets (bindings +
``execute_async_v2`` on 8.2, tensor addresses + ``execute_async_v3`` on 8.5+), the CUDA context
discipline (context current on the inference thread, popped and released at the end), that every buffer
is freed, the sidecar key check, CUDA-graph replay, and that data really flows host -> device -> engine ->
host (the stand-in engine computes the red-box detector). Whether real TensorRT behaves as documented is
what ``test_real_tensorrt_*`` (skipped here) and ``edge doctor --selftest`` on a device check.
"""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest

from edge.errors import EdgeError, MissingDependencyError, ModelError
from edge.runtime.backend import conformance_report
from edge.runtime.synthetic import draw_red_box
from tests.runtime.test_standins import engine_bytes, make_pycuda, make_tensorrt, red_box_outputs

VERSIONS = ["8.2.1", "8.5.2", "10.3.0", "11.0.0"]
SIDECAR = {
    "class_names": ["tall", "wide"],
    "input_layout": "uint8_nhwc_bgr",
    "input_size": [96, 128],
}


def _engine(tmp_path, *, dynamic_batch=False, sidecar=None, name="red.engine"):
    path = tmp_path / name
    path.write_bytes(engine_bytes(dynamic_batch=dynamic_batch))
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def _backend(path, version, **kw):
    from edge.runtime.tensorrt_backend import TensorRTBackend

    drv, st = make_pycuda()
    trt = make_tensorrt(version, st)
    backend = TensorRTBackend(path, trt_module=trt, cuda_driver=drv, **kw)
    return backend, trt, st


def _graph_backend(path, version, cuda_python_version, driver_version=13000):
    """A backend with cuda_graph=True on the PyCUDA stand-in and the cuda-python stand-in of that release."""
    from edge.cuda import GraphApi
    from edge.runtime.tensorrt_backend import TensorRTBackend
    from tests.cuda.standin import make_cuda_python

    drv, st = make_pycuda()
    st.driver_version = driver_version
    trt = make_tensorrt(version, st)
    module, gs = make_cuda_python(st, cuda_python_version)
    api = GraphApi(module, cuda_python_version, "stand-in cuda-python")
    backend = TensorRTBackend(path, trt_module=trt, cuda_driver=drv, cuda_graph=True, cuda_python=api)
    return backend, trt, st, gs


def _frames():
    a = np.zeros((1, 96, 128, 3), np.uint8)
    draw_red_box(a[0], (10, 20, 50, 40))
    b = np.full((1, 96, 128, 3), 30, np.uint8)
    draw_red_box(b[0], (60, 5, 70, 80))
    return a, b


@pytest.mark.parametrize("version", VERSIONS)
def test_api_contract_conformance_and_data_flow(tmp_path, version):
    """API-contract test (stand-in, not TensorRT): conformance suite, outputs equal the reference."""
    path = _engine(tmp_path, sidecar=SIDECAR)
    backend, trt, st = _backend(path, version)
    a, b = _frames()
    assert backend.info.class_names == ["tall", "wide"]
    assert backend.input_format.layout == "uint8_nhwc_bgr"
    assert conformance_report(backend, [a, b], num_classes=2) == []
    det = backend.infer(b)
    ref = red_box_outputs(b, 8)
    np.testing.assert_array_equal(det.boxes, ref["detection_boxes"])
    np.testing.assert_array_equal(det.classes, ref["detection_classes"])
    assert det.image(0)[0].tolist() == [[60.0, 5.0, 70.0, 80.0]]
    executes = [c[0] for c in trt.calls if c[0].startswith("execute")]
    if version.startswith("8.2"):
        assert set(executes) == {"execute_async_v2"}
        assert not [c for c in trt.calls if c[0] == "set_tensor_address"]
    else:
        assert set(executes) == {"execute_async_v3"}
        bound = {c[1] for c in trt.calls if c[0] == "set_tensor_address"}
        assert bound == {"images", "num_detections", "detection_boxes", "detection_scores", "detection_classes"}
    backend.close()
    assert st.memory == {}, "device memory left allocated"
    assert st.host_freed == len(st.host_allocs) == 5
    assert st.retained == st.detached == 1
    assert st.ctx_stack() == []


@pytest.mark.parametrize("version", ["8.2.1", "10.3.0"])
def test_api_contract_dynamic_batch_uses_profile_with_batch_one(tmp_path, version):
    """API-contract test (stand-in): a dynamic-batch engine gets input shape [1,H,W,3] set before running."""
    path = _engine(tmp_path, dynamic_batch=True, sidecar=SIDECAR)
    backend, _, _ = _backend(path, version)
    assert backend.input_spec.shape == (-1, 96, 128, 3)
    a, _ = _frames()
    assert backend.infer(a).image(0)[0].tolist() == [[10.0, 20.0, 50.0, 40.0]]
    backend.close()


def test_api_contract_context_is_bound_to_the_inference_thread(tmp_path):
    """API-contract test (stand-in): bind/release on a worker thread; main-thread calls push and pop."""
    path = _engine(tmp_path, sidecar=SIDECAR)
    backend, _, st = _backend(path, "10.3.0")
    a, _ = _frames()
    seen = {}

    def worker():
        backend.bind_thread()
        seen["stack_after_bind"] = len(st.ctx_stack())
        seen["num"] = int(backend.infer(a).num[0])
        backend.release_thread()
        seen["stack_after_release"] = len(st.ctx_stack())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"stack_after_bind": 1, "num": 1, "stack_after_release": 0}
    assert st.ctx_stack() == []  # main thread: nothing left current
    assert int(backend.infer(a).num[0]) == 1  # from main: pushed and popped around the call
    assert st.ctx_stack() == []
    backend.close()
    assert st.memory == {} and st.detached == 1
    with pytest.raises(EdgeError):
        backend.infer(a)


def test_api_contract_pipeline_runs_inference_on_its_infer_thread(tmp_path):
    """API-contract test (stand-in): the full threaded loop on the TensorRT backend."""
    from edge.runtime.pipeline import Pipeline, PipelineConfig
    from edge.runtime.sources import TestPatternSource, parse_source

    path = _engine(tmp_path, sidecar=SIDECAR)
    backend, trt, st = _backend(path, "8.5.2")
    source = TestPatternSource(parse_source("test://?size=160x120&frames=12"))
    before = len(st.pushes)  # construction pushed once on this thread to deserialize
    stats = Pipeline(source, backend, [], PipelineConfig(log_every_s=0)).run()
    assert stats.counters.written == 12 and stats.counters.inferred == 12
    during = st.pushes[before:]
    assert len(during) == 1 and during[0] != threading.get_ident(), "one push, on the infer thread, for the run"
    assert st.ctx_stack() == []
    backend.close()
    assert st.memory == {} and st.retained == st.detached == 1


def test_api_contract_cuda_graph_replays_with_new_inputs(tmp_path):
    """API-contract test (stand-ins): with cuda_graph the enqueue runs once normally, is captured with
    cuda-python on PyCUDA's stream, then replayed with cuGraphLaunch on that stream for new inputs."""
    path = _engine(tmp_path, sidecar=SIDECAR)
    backend, trt, st, gs = _graph_backend(path, "10.3.0", "13.5.0")
    a, b = _frames()
    first = backend.infer(a)
    n_exec = len([c for c in trt.calls if c[0] == "execute_async_v3"])
    assert n_exec == 2, "one normal enqueue, then one recorded by the capture"
    assert gs.calls[:3] == ["cuStreamBeginCapture", "cuStreamEndCapture", "cuGraphInstantiate"]
    second = backend.infer(b)
    third = backend.infer(a)
    assert len([c for c in trt.calls if c[0] == "execute_async_v3"]) == n_exec  # no new enqueue
    assert gs.launches == 2
    assert second.image(0)[0].tolist() == [[60.0, 5.0, 70.0, 80.0]]
    np.testing.assert_array_equal(first.boxes, third.boxes)
    backend.close()
    assert gs.graphs == {} and gs.execs == {}, "the graph and its exec are destroyed on close"
    assert st.memory == {}


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_api_contract_cuda_graph_uses_the_instantiate_call_of_the_cuda_python_release(tmp_path, version):
    """cuda-python 11.8 (JetPack 5's Python 3.8) instantiates with cuGraphInstantiateWithFlags, 12+ with
    cuGraphInstantiate(hGraph, flags); the stand-in of each offers only its release's binding."""
    path = _engine(tmp_path, sidecar=SIDECAR)
    backend, _, st, gs = _graph_backend(path, version, "11.8.3", driver_version=11040)
    a, b = _frames()
    backend.infer(a)
    assert "cuGraphInstantiateWithFlags" in gs.calls
    assert backend.infer(b).image(0)[0].tolist() == [[60.0, 5.0, 70.0, 80.0]] and gs.launches == 1
    backend.close()
    assert gs.graphs == {} and gs.execs == {}


def test_api_contract_cuda_graph_is_captured_again_when_addresses_change(tmp_path):
    """A capture holds the tensor addresses and shape it saw: new buffers mean a normal enqueue, then a new
    capture, and the old graph is freed."""
    path = _engine(tmp_path, sidecar=SIDECAR)
    backend, trt, st, gs = _graph_backend(path, "10.3.0", "13.5.0")
    a, b = _frames()
    backend.infer(a)
    backend.infer(b)
    assert gs.launches == 1 and len(gs.execs) == 1
    old = backend._in_buf  # a re-allocated input buffer (as a new run shape would give)
    backend._in_buf = backend._buffers.alloc(old.name, old.host.shape, old.host.dtype)
    backend._context.set_tensor_address(old.name, backend._in_buf.ptr)
    n_exec = len([c for c in trt.calls if c[0] == "execute_async_v3"])
    assert backend.infer(b).image(0)[0].tolist() == [[60.0, 5.0, 70.0, 80.0]]
    assert len([c for c in trt.calls if c[0] == "execute_async_v3"]) == n_exec + 2  # normal run + new capture
    assert gs.launches == 1 and len(gs.execs) == 1 and len(gs.graphs) == 1, "the stale graph was destroyed"
    assert backend.infer(a).image(0)[0].tolist() == [[10.0, 20.0, 50.0, 40.0]] and gs.launches == 2
    backend.close()
    assert gs.graphs == {} and gs.execs == {}


def test_api_contract_cuda_graph_falls_back_when_the_capture_fails(tmp_path, caplog):
    """An enqueue TensorRT cannot capture (the driver ends the capture with an error) keeps launching normally,
    with a warning, and is not tried again every frame."""
    path = _engine(tmp_path, sidecar=SIDECAR)
    backend, trt, st, gs = _graph_backend(path, "10.3.0", "13.5.0")
    gs.fail["cuStreamEndCapture"] = 900  # CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    a, b = _frames()
    with caplog.at_level(logging.WARNING, logger="edge.cuda"):
        backend.infer(a)
        det = backend.infer(b)
        backend.infer(a)
    assert "cuStreamEndCapture returned CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED" in caplog.text
    assert gs.calls.count("cuStreamBeginCapture") == 1 and gs.launches == 0 and st.capturing == {}
    assert det.image(0)[0].tolist() == [[60.0, 5.0, 70.0, 80.0]]
    backend.close()


def test_cuda_graph_without_cuda_python_says_how_to_install(tmp_path, monkeypatch):
    """--cuda-graph needs cuda-python: absent, opening the engine fails at once naming `pip install cuda-python`
    (and releases the context)."""
    from importlib import metadata

    from edge.runtime.tensorrt_backend import TensorRTBackend

    def no_dist(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", no_dist)
    drv, st = make_pycuda()
    with pytest.raises(MissingDependencyError, match="pip install cuda-python"):
        TensorRTBackend(_engine(tmp_path, sidecar=SIDECAR), trt_module=make_tensorrt("10.3.0", st),
                        cuda_driver=drv, cuda_graph=True)
    assert st.retained == st.detached == 1 and st.ctx_stack() == []


def test_cuda_graph_refuses_a_cuda_python_newer_than_the_driver(tmp_path):
    """cuda-python 13 needs a CUDA 13 driver: on JetPack 6's CUDA 12.6 the message names the release to install."""
    path = _engine(tmp_path, sidecar=SIDECAR)
    with pytest.raises(EdgeError, match=r"CUDA 12\.6: pip install 'cuda-python==12\.\*'"):
        _graph_backend(path, "10.3.0", "13.5.0", driver_version=12060)


def _key(**over):
    key = {
        "onnx_sha256": "0" * 64, "tensorrt_version": "10.3.0", "device_name": "Orin (stand-in)",
        "device_sm": "8.7", "l4t_release": None, "dla_core": None, "gpu_fallback": False,
        "precision": "fp16", "profiles": [], "plugin_library": None, "calibration_sha256": None,
    }
    key.update(over)
    return key


def test_api_contract_stale_engine_is_refused_with_the_reason(tmp_path, monkeypatch):
    """API-contract test (stand-in): the sidecar key must match the TensorRT version and GPU here."""
    from edge.artifacts import sha256_file

    monkeypatch.setattr("edge.trt.engine_key.read_l4t_release", lambda path="/etc/nv_tegra_release": None)
    path = _engine(tmp_path)
    good = dict(SIDECAR, engine={"key": _key(), "sha256": sha256_file(path)})
    path.with_suffix(".json").write_text(json.dumps(good))
    backend, _, st = _backend(path, "10.3.0")
    backend.close()

    stale = dict(SIDECAR, engine={"key": _key(tensorrt_version="8.5.2", device_sm="7.2"), "sha256": sha256_file(path)})
    path.with_suffix(".json").write_text(json.dumps(stale))
    from edge.runtime.tensorrt_backend import TensorRTBackend

    drv, st = make_pycuda()
    with pytest.raises(ModelError) as err:
        TensorRTBackend(path, trt_module=make_tensorrt("10.3.0", st), cuda_driver=drv)
    msg = str(err.value)
    assert "tensorrt_version" in msg and "device_sm" in msg and "edge build" in msg
    assert st.retained == st.detached == 1 and st.memory == {}  # the refusal released everything
    backend, _, st = _backend(path, "10.3.0", check_key=False)  # the documented override
    backend.close()

    swapped = dict(SIDECAR, engine={"key": _key(), "sha256": "f" * 64})
    path.with_suffix(".json").write_text(json.dumps(swapped))
    with pytest.raises(ModelError, match="sha256"):
        _backend(path, "10.3.0")

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not the bytes the engine was built from")
    reexported = dict(SIDECAR, engine={"key": _key(), "sha256": sha256_file(path), "source_onnx": str(onnx)})
    path.with_suffix(".json").write_text(json.dumps(reexported))
    with pytest.raises(ModelError, match="onnx_sha256"):
        _backend(path, "10.3.0")


def test_api_contract_engine_without_sidecar_runs_with_a_warning(tmp_path, caplog):
    """API-contract test (stand-in): a user's own trtexec engine (no sidecar) runs; layout from the graph."""
    path = _engine(tmp_path)
    with caplog.at_level(logging.WARNING):
        backend, _, st = _backend(path, "10.3.0")
    assert "no edge sidecar" in caplog.text
    assert backend.input_format.layout == "uint8_nhwc_bgr" and backend.info.class_names == []
    backend.close()


def test_api_contract_bad_engine_bytes_and_old_tensorrt(tmp_path):
    """API-contract test (stand-in): undeserializable bytes and TensorRT < 8.2 fail clearly, nothing leaks."""
    path = tmp_path / "bad.engine"
    path.write_bytes(b"garbage")
    drv, st = make_pycuda()
    from edge.runtime.tensorrt_backend import TensorRTBackend

    with pytest.raises(ModelError, match="rebuild"):
        TensorRTBackend(path, trt_module=make_tensorrt("10.3.0", st), cuda_driver=drv)
    assert st.retained == st.detached == 1 and st.ctx_stack() == []
    with pytest.raises(EdgeError, match="too old"):
        TensorRTBackend(_engine(tmp_path), trt_module=make_tensorrt("7.1.3", st), cuda_driver=drv)


def test_missing_tensorrt_and_pycuda_say_how_to_install(tmp_path):
    """On this machine neither exists: the errors must name the package and the fix."""
    pytest.importorskip("numpy")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from edge.runtime.tensorrt_backend import TensorRTBackend

    with pytest.raises(MissingDependencyError) as err:
        TensorRTBackend(_engine(tmp_path))
    assert "JetPack" in str(err.value)
    try:
        import pycuda  # noqa: F401
    except ImportError:
        from edge.cuda import load_driver

        with pytest.raises(MissingDependencyError, match="pycuda"):
            load_driver()


def _real_trt_available():
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.tensorrt
@pytest.mark.pycuda
@pytest.mark.gpu
@pytest.mark.skipif(not _real_trt_available(), reason="needs TensorRT, PyCUDA and a GPU (Jetson or desktop); "
                    "run `edge doctor --selftest` on the device")
def test_real_tensorrt_engine_matches_onnxruntime(tmp_path):
    """A real engine built from the synthetic ONNX gives ONNX Runtime's detections."""
    import tensorrt as trt

    from edge.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from edge.runtime.synthetic import red_box_model
    from edge.runtime.tensorrt_backend import TensorRTBackend
    from edge.trt import api

    onnx_path = red_box_model(tmp_path / "red.onnx")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if api.trt_capabilities(trt).version[0] >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes())
    data = builder.build_serialized_network(network, builder.create_builder_config())
    engine = tmp_path / "red.engine"
    engine.write_bytes(bytes(data))
    engine.with_suffix(".json").write_text(onnx_path.with_suffix(".json").read_text())
    a, b = _frames()
    with OnnxRuntimeBackend(onnx_path) as ort_be, TensorRTBackend(engine) as trt_be:
        assert conformance_report(trt_be, [a, b], num_classes=2) == []
        for x in (a, b):
            r, t = ort_be.infer(x), trt_be.infer(x)
            np.testing.assert_array_equal(r.num, t.num)
            np.testing.assert_allclose(r.boxes, t.boxes, atol=1e-3)


# --- issue 12: an engine with dynamic H/W runs at the size it was built for -----------------------------


@pytest.mark.parametrize("version", ["8.2.1", "8.5.2", "10.3.0", "11.0.0"])
def test_api_contract_dynamic_hw_engine_preprocesses_at_its_built_size(tmp_path, version, caplog):
    """API-contract test (stand-in): `edge export --dynamic-hw` then `edge build --imgsz 96x128`: the
    sidecar (from export) says 160x160, the engine's profile opt is 96x128. Preprocessing must produce
    what the buffers hold, the engine's size, or every infer fails."""
    from edge.model_input import Preprocessor

    path = tmp_path / "dyn.engine"
    path.write_bytes(engine_bytes(profile_hw=((64, 64), (96, 128), (128, 160))))
    stale = dict(SIDECAR, input_size=[160, 160], input={"size": [160, 160], "layout": "NHWC"})
    path.with_suffix(".json").write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING):
        backend, _, st = _backend(path, version)
    assert backend.input_spec.shape == (1, -1, -1, 3)
    fmt = backend.input_format
    assert (fmt.height, fmt.width, fmt.layout) == (96, 128, "uint8_nhwc_bgr")
    assert "160x160" in caplog.text and "96x128" in caplog.text
    frame = np.zeros((96, 128, 3), np.uint8)
    draw_red_box(frame, (10, 20, 50, 40))
    pre = Preprocessor(fmt)
    batch = pre.new_buffer()
    pre(frame, batch)
    assert backend.infer(batch).image(0)[0].tolist() == [[10.0, 20.0, 50.0, 40.0]]
    backend.warmup(1)
    backend.close()
    assert st.memory == {}


def test_api_contract_build_then_run_a_dynamic_hw_engine_at_another_imgsz(tmp_path):
    """API-contract test (stand-ins, build and runtime): the sidecar `edge build` writes for a dynamic-H/W
    ONNX built at --imgsz other than the export size names the engine's size, and the engine runs."""
    import onnx
    from onnx import TensorProto, helper

    from edge.artifacts import read_sidecar, write_sidecar
    from edge.model_input import Preprocessor
    from edge.runtime.tensorrt_backend import TensorRTBackend
    from edge.trt.api import BuildResult
    from edge.trt.build import EngineBuildConfig, build_engines
    from edge.trt.engine_key import DeviceInfo
    from tests.trt_standin import make_tensorrt as make_build_tensorrt

    onnx_path = tmp_path / "dyn.onnx"
    inp = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", "H", "W", 3])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Cast", ["images"], ["y"], to=TensorProto.FLOAT)], "g", [inp], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(onnx_path))
    write_sidecar(onnx_path, dict(SIDECAR, input_size=[160, 160], input={"size": [160, 160], "layout": "NHWC"}))

    def build_fn(trt, req):  # the runtime stand-in's engine, with the profile edge build asked for
        prof = req.profiles[0]
        hw = [tuple(s[1:3]) for s in (prof.min_shape, prof.opt_shape, prof.max_shape)]
        return BuildResult(engine_bytes(profile_hw=hw), None, "10.3.0", [])

    device = DeviceInfo("Orin (stand-in)", "8.7", None)  # what the runtime stand-in reports
    cfg = EngineBuildConfig(str(onnx_path), out_dir=str(tmp_path / "engines"), imgsz=[(96, 128)])
    engine = build_engines(cfg, make_build_tensorrt("10.3.0"), device, build_fn=build_fn)[0].path
    meta = read_sidecar(engine)
    assert meta["input_size"] == [96, 128] and meta["input"]["size"] == [96, 128]
    assert meta["engine"]["input_shape"] == [1, 96, 128, 3]
    drv, st = make_pycuda()
    with TensorRTBackend(engine, trt_module=make_tensorrt("10.3.0", st), cuda_driver=drv) as backend:
        fmt = backend.input_format
        assert (fmt.height, fmt.width) == (96, 128)
        frame = np.zeros((200, 300, 3), np.uint8)
        draw_red_box(frame, (0, 0, 100, 50))
        pre = Preprocessor(fmt)
        batch = pre.new_buffer()
        pre(frame, batch)
        assert int(backend.infer(batch).num[0]) == 1


# --- issue 12: TensorRT dtypes mapped by edge, never by trt.nptype ---------------------------------------


def test_api_contract_engine_opens_where_trt_nptype_is_broken(tmp_path):
    """TensorRT 8.5's trt.nptype() raises under numpy >= 1.24 (np.bool), JetPack 5's venv: opening an
    engine must not depend on it."""
    path = _engine(tmp_path, sidecar=SIDECAR)
    drv, st = make_pycuda()
    trt = make_tensorrt("8.5.2", st)
    with pytest.raises(AttributeError, match="numpy"):
        trt.nptype(trt.DataType.UINT8)  # the stand-in has 8.5's defect, as on a JetPack 5 device
    from edge.runtime.tensorrt_backend import TensorRTBackend

    with TensorRTBackend(path, trt_module=trt, cuda_driver=drv) as backend:
        assert backend.input_spec.dtype == np.uint8
        assert [s.dtype for s in backend.output_specs] == [np.int32, np.float32, np.float32, np.int32]
        a, _ = _frames()
        assert int(backend.infer(a).num[0]) == 1


def test_tensorrt_dtypes_map_to_numpy_by_member_name():
    import enum

    from edge.runtime.tensorrt_backend import numpy_dtype

    _, st = make_pycuda()
    data_type = make_tensorrt("10.3.0", st, real=None).DataType  # the hand-written enum (iterable, 6 members)
    assert {m.name: numpy_dtype(m) for m in data_type} == {
        "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
        "UINT8": np.uint8}
    later = enum.Enum("DataType", {"INT64": 6, "BF16": 7, "FP8": 9})  # members of TensorRT 10's real enum
    assert numpy_dtype(later.INT64) == np.int64
    with pytest.raises(ModelError, match="BF16.*no numpy dtype"):
        numpy_dtype(later.BF16)


@pytest.mark.parametrize("version", ["8.2.1", "10.3.0", "11.0.0"])
def test_api_contract_dynamic_batch_runs_each_call_at_its_own_batch(tmp_path, version):
    """API-contract test (stand-in): buffers sized for the profile's max batch (4), each call sets the input
    shape to its own batch and copies only its rows; outputs per image equal the reference detector's."""
    path = _engine(tmp_path, dynamic_batch=True, sidecar=SIDECAR)
    backend, trt, st = _backend(path, version)
    assert backend.max_batch == 4
    a, b = _frames()
    three = np.ascontiguousarray(np.concatenate([a, b, a]))
    det = backend.infer(three)
    assert det.boxes.shape[0] == 3
    ref = red_box_outputs(three, 8)
    np.testing.assert_array_equal(det.boxes, ref["detection_boxes"])
    np.testing.assert_array_equal(det.num, ref["num_detections"].reshape(-1))
    assert det.image(1)[0].tolist() == [[60.0, 5.0, 70.0, 80.0]]
    one = backend.infer(b)
    assert one.boxes.shape[0] == 1 and one.image(0)[0].tolist() == [[60.0, 5.0, 70.0, 80.0]]
    assert backend.infer(a).image(0)[0].tolist() == [[10.0, 20.0, 50.0, 40.0]]
    assert max(a.__array_interface__["shape"][0] for a in st.host_allocs) == 4, "buffers sized for the profile's max batch"
    with pytest.raises(ModelError, match=r"a batch of 5 is outside .*1\.\.4.*edge build MODEL.onnx --batch 1,5,5"):
        backend.infer(np.zeros((5, 96, 128, 3), np.uint8))
    backend.close()
    assert st.memory == {}


def test_api_contract_static_batch_engine_refuses_another_batch(tmp_path):
    path = _engine(tmp_path, sidecar=SIDECAR)
    backend, _, _ = _backend(path, "10.3.0")
    assert backend.max_batch == 1
    with pytest.raises(ModelError, match="does not match"):
        backend.infer(np.zeros((2, 96, 128, 3), np.uint8))
    backend.close()


def test_api_contract_cuda_graph_is_captured_again_when_the_batch_changes(tmp_path):
    """API-contract test (stand-ins): a graph captured at batch 2 is not replayed for batch 1 (TensorRT's
    rule: capture again when input shapes change); outputs stay right at each batch."""
    path = _engine(tmp_path, dynamic_batch=True, sidecar=SIDECAR)
    backend, trt, st, gs = _graph_backend(path, "10.3.0", "13.5.0")
    a, b = _frames()
    two = np.ascontiguousarray(np.concatenate([a, b]))
    backend.infer(two)
    backend.infer(two)
    assert gs.launches == 1
    det = backend.infer(b)
    assert det.image(0)[0].tolist() == [[60.0, 5.0, 70.0, 80.0]]
    assert gs.launches == 1, "the batch-2 graph is not replayed for batch 1"
    assert [c for c in gs.calls if c == "cuStreamBeginCapture"] == ["cuStreamBeginCapture"] * 2
    backend.close()
    assert st.memory == {}
