"""CUDA graphs (``edge.cuda.GraphApi`` / ``CudaGraph`` / ``CudaBuffers.capture``): the capture on PyCUDA's stream
with cuda-python, on stand-ins here, and the same code against the real cuda-python releases.

The stand-ins (tests/cuda/standin.py on tests/runtime/test_standins.py's PyCUDA) run the data flow; the
``cuda_python_real`` tests run ``edge.cuda`` against each real release's module (no driver: calls are recorded
and bound to the documented signatures, see probe_cuda_python.py) and check that the stand-in offers only what
that release has, with the same parameter names, return values and enum values.
"""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pytest

from edge import cuda
from edge.errors import EdgeError, MissingDependencyError
from tests.cuda import real_cuda_python
from tests.cuda.cache import Unavailable
from tests.cuda.standin import CudaPythonDriver, make_cuda_python
from tests.runtime.test_standins import make_pycuda


def _setup(version="13.5.0", driver_version=13000):
    drv, st = make_pycuda()
    st.driver_version = driver_version
    module, gs = make_cuda_python(st, version)
    ctx = cuda.CudaContext(0, driver=drv)
    ctx.bind()
    api = cuda.graph_api(drv, cuda.GraphApi(module, version, "stand-in cuda-python"))
    return ctx, cuda.CudaBuffers(ctx), api, st, gs


def test_capture_records_the_enqueue_and_launch_replays_it_on_the_stream():
    ctx, buffers, api, st, gs = _setup()
    buf = buffers.alloc("x", (4,), np.float32)
    runs = []

    def enqueue(handle):
        assert handle == buffers.stream_handle
        st.enqueue(handle, lambda: runs.append(int(buf.host[0])))

    buf.host[:] = 1
    assert buffers.capture(api, enqueue, key="k") and runs == [], "captured, not run"
    assert buffers.launch_graph("k") and runs == [1]
    buf.host[:] = 2
    assert buffers.launch_graph("k") and runs == [1, 2]
    assert buffers.graph is not None and buffers.graph.launches == 2
    buffers.close()
    assert gs.graphs == {} and gs.execs == {} and st.memory == {}
    ctx.close()


def test_close_is_idempotent_and_frees_graph_and_exec_once():
    ctx, buffers, api, st, gs = _setup()
    graph = cuda.CudaGraph.capture(api, buffers.stream_handle, lambda h: None, key=1)
    assert len(gs.graphs) == len(gs.execs) == 1
    graph.close()
    graph.close()
    assert graph.closed and gs.graphs == {} and gs.execs == {}
    assert gs.calls.count("cuGraphExecDestroy") == gs.calls.count("cuGraphDestroy") == 1
    with pytest.raises(EdgeError, match="closed"):
        graph.launch()
    buffers.close()
    buffers.close()
    ctx.close()


def test_a_new_key_drops_the_graph_and_asks_for_a_new_capture():
    ctx, buffers, api, st, gs = _setup()
    assert buffers.capture(api, lambda h: None, key=((1, 96, 128, 3), (0x10000,)))
    assert not buffers.launch_graph(((1, 96, 128, 3), (0x20000,)))
    assert buffers.graph is None and gs.execs == {} and gs.graphs == {} and gs.launches == 0
    buffers.close()
    ctx.close()


def test_a_failing_enqueue_ends_the_capture_and_frees_the_partial_graph():
    ctx, buffers, api, st, gs = _setup()

    def enqueue(handle):
        raise RuntimeError("TensorRT enqueue failed")

    with pytest.raises(RuntimeError, match="enqueue failed"):
        cuda.CudaGraph.capture(api, buffers.stream_handle, enqueue, key=1)
    assert st.capturing == {} and gs.graphs == {} and gs.execs == {}
    buffers.synchronize()  # the stream left capture mode
    buffers.close()
    ctx.close()


def test_an_enqueue_failing_under_capture_falls_back_to_normal_launches(caplog):
    """TensorRT's enqueue returning False while capturing (operations not permitted under capture): a warning,
    no graph, the stream usable (trtexec ignores --useCudaGraph in that case too)."""
    from edge.errors import ModelError

    ctx, buffers, api, st, gs = _setup()

    def enqueue(handle):
        raise ModelError("TensorRT execution failed (see the TensorRT log above)")

    with caplog.at_level(logging.WARNING, logger="edge.cuda"):
        assert not buffers.capture(api, enqueue, key=1)
    assert "CUDA graph capture failed (TensorRT execution failed" in caplog.text
    assert buffers.graph is None and st.capturing == {} and gs.graphs == {}
    buffers.synchronize()
    buffers.close()
    ctx.close()


def test_capture_errors_name_the_call_and_the_cuda_error(caplog):
    ctx, buffers, api, st, gs = _setup("12.9.4", driver_version=12060)
    gs.fail["cuGraphInstantiate"] = 1  # CUDA_ERROR_INVALID_VALUE
    with caplog.at_level(logging.WARNING, logger="edge.cuda"):
        assert not buffers.capture(api, lambda h: None, key=1)
    assert "cuGraphInstantiate returned CUDA_ERROR_INVALID_VALUE (stand-in cuda-python 12.9.4)" in caplog.text
    assert buffers.graph is None and gs.graphs == {} and gs.execs == {}, "the graph is freed when instantiation fails"
    buffers.close()
    ctx.close()


@pytest.mark.parametrize("version,driver,ok", [("11.8.3", 11040, True), ("12.9.4", 11040, False),
                                              ("12.9.4", 12020, True), ("12.9.4", 13000, True),
                                              ("13.5.0", 12060, False)])
def test_the_cuda_python_major_must_not_exceed_the_drivers(version, driver, ok):
    drv, st = make_pycuda()
    st.driver_version = driver
    module, _ = make_cuda_python(st, version)
    api = cuda.GraphApi(module, version, "cuda-bindings")
    if ok:
        assert cuda.graph_api(drv, api) is api
    else:
        with pytest.raises(EdgeError, match=rf"cuda-bindings {version} is built for CUDA {version[:2]} drivers.*"
                                            rf"pip install 'cuda-python=={driver // 1000}\.\*'"):
            cuda.graph_api(drv, api)


def test_load_graph_api_picks_the_module_by_the_installed_distributions(monkeypatch):
    from importlib import metadata

    installed = {}

    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(MissingDependencyError, match=r"cuda-python is required for --cuda-graph.*pip install cuda-python"):
        cuda.load_graph_api()
    installed["cuda-python"] = "11.8.2"  # the legacy layout, here without its extension modules
    monkeypatch.setitem(__import__("sys").modules, "cuda.cuda", None)
    with pytest.raises(EdgeError, match=r"cuda-python 11.8.2 is installed without its driver bindings.*"
                                        r"pip install --force-reinstall 'cuda-python==11.8.2'"):
        cuda.load_graph_api()


# -- the real releases --------------------------------------------------------------------------------------


def _standin_names():
    drv, st = make_pycuda()
    names = set()
    for version in ("11.8.3", "12.9.4", "13.5.0"):
        module, _ = make_cuda_python(st, version)
        names |= set(dir(module))
    return sorted(names)


def _tuple_length(annotation: str) -> int:
    """Elements of a ``Tuple[...]`` annotation string (top-level commas + 1)."""
    inner, depth, count = annotation[annotation.index("[") + 1:-1], 0, 1
    for ch in inner:
        depth += ch == "["
        depth -= ch == "]"
        count += ch == "," and depth == 0
    return count


@pytest.fixture(scope="module", params=real_cuda_python.RELEASES, ids=[f"{d}-{v}" for d, v in real_cuda_python.RELEASES])
def real_release(request, tmp_path_factory):
    dist, version = request.param
    try:
        return real_cuda_python.probe(dist, version, _standin_names(), tmp_path_factory.mktemp(f"{dist}-{version}"))
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.cuda_python_real
@pytest.mark.timeout(1800)  # the first run downloads the cuda-python releases
def test_edge_cuda_graph_calls_bind_to_the_real_release(real_release):
    """load_graph_api picks the release's module; every call edge.cuda makes exists there and binds to its
    documented signature with arguments of the documented types."""
    assert real_release["problems"] == []
    major = int(real_release["version"].split(".")[0])
    assert real_release["module"] == ("cuda.cuda" if real_release["version"] == "11.8.3" else "cuda.bindings.driver")
    instantiate = "cuGraphInstantiate" if major >= 12 else "cuGraphInstantiateWithFlags"
    assert set(real_release["calls"]) == {"cuStreamBeginCapture", "cuStreamEndCapture", instantiate, "cuGraphLaunch",
                                          "cuGraphExecDestroy", "cuGraphDestroy", "cuGetErrorName"}


@pytest.mark.cuda_python_real
@pytest.mark.timeout(1800)  # the first run downloads the cuda-python releases
def test_the_cuda_python_standin_offers_only_what_the_real_release_has(real_release):
    drv, st = make_pycuda()
    module, _ = make_cuda_python(st, real_release["version"])
    real = real_release["names"]
    problems = []
    for name in dir(module):
        value, info = getattr(module, name), real.get(name)
        if info is None:
            problems.append(f"{name}: not in the real module")
        elif isinstance(value, type) and "enum" in info:
            extra = {m.name: int(m.value) for m in value if info["enum"].get(m.name) != int(m.value)}
            if extra:
                problems.append(f"{name}: members or values not in the real enum: {extra}")
        elif isinstance(value, type):
            missing = sorted(n for n in dir(value) if not n.startswith("_") and n not in info["class"])
            if missing:
                problems.append(f"{name}: {missing} not in the real class")
        else:
            sig = inspect.signature(value)
            if list(sig.parameters) != info["params"]:
                problems.append(f"{name}{tuple(sig.parameters)}: the real parameters are {tuple(info['params'])}")
            if _tuple_length(str(sig.return_annotation)) != len(info["returns"]):
                problems.append(f"{name} returns {sig.return_annotation}; the real one returns {info['returns']}")
    assert problems == []
    assert isinstance(module, CudaPythonDriver)
