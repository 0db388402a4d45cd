"""A strict stand-in for cuda-python's driver bindings (``cuda.bindings.driver`` / legacy ``cuda.cuda``), the graph
calls only, working on the PyCUDA stand-in's streams (tests/runtime/test_standins.py ``make_pycuda``).

NOT CUDA: a "graph" is the list of operations queued on the stand-in stream while it captured, and a launch
runs them again. It offers only names the real module of that release has, with the real parameter names and
return tuples (``(CUresult, *values)``); tests/cuda/test_graphs.py checks both against the real modules
(cuda-bindings 12.x/13.x, cuda-python 11.8) fetched from PyPI. What it enforces as the driver does: capture
and replay need a current context; capture cannot start on a stream already capturing; a graph exec or graph
is destroyed once; a synchronize of a capturing stream fails (the PyCUDA stand-in's ``Stream.synchronize``).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Dict, List, Optional, Tuple

from tests.runtime.test_standins import DriverState


class GraphState:
    """What the stand-in tracks, for assertions."""

    def __init__(self) -> None:
        self.graphs: Dict[int, List[Callable[[], None]]] = {}  # live CUgraph ids -> captured ops
        self.execs: Dict[int, List[Callable[[], None]]] = {}  # live CUgraphExec ids -> ops
        self.launches = 0
        self.calls: List[str] = []
        self.next_id = 1
        self.fail: Dict[str, int] = {}  # call name -> CUresult value it returns instead of success


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_INVALID_CONTEXT = 201
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901
    CUDA_ERROR_ILLEGAL_STATE = 401


class CUstreamCaptureMode(enum.IntEnum):
    CU_STREAM_CAPTURE_MODE_GLOBAL = 0
    CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1
    CU_STREAM_CAPTURE_MODE_RELAXED = 2


class _Handle:
    def __init__(self, init_value: int = 0) -> None:
        self._value = int(init_value)

    def __int__(self) -> int:
        return self._value

    def getPtr(self) -> int:  # noqa: N802 - the real name
        return self._value


class CUstream(_Handle):
    pass


class CUgraph(_Handle):
    pass


class CUgraphExec(_Handle):
    pass


class CudaPythonDriver:
    """The stand-in module: attribute reads outside its members raise AttributeError (as a missing binding)."""

    def __init__(self, members: Dict[str, Any]) -> None:
        object.__setattr__(self, "_members", members)

    def __getattr__(self, name: str) -> Any:
        members = object.__getattribute__(self, "_members")
        if name not in members:
            raise AttributeError(f"module 'cuda.bindings.driver' (stand-in) has no attribute {name!r}")
        return members[name]

    def __dir__(self) -> List[str]:
        return sorted(object.__getattribute__(self, "_members"))


def make_cuda_python(st: DriverState, version: str = "13.5.0") -> Tuple[CudaPythonDriver, GraphState]:
    """The driver module of cuda-python ``version`` ('11.8.3', '12.9.4', '13.5.0': the instantiate call differs)."""
    major = int(version.split(".")[0])
    gs = GraphState()

    def _status(call: str) -> CUresult:
        gs.calls.append(call)
        if call in gs.fail:
            return CUresult(gs.fail[call])
        if not st.ctx_stack():
            return CUresult.CUDA_ERROR_INVALID_CONTEXT
        return CUresult.CUDA_SUCCESS

    def _new_id() -> int:
        gs.next_id += 1
        return gs.next_id

    def cuStreamBeginCapture(hStream: Any, mode: CUstreamCaptureMode) -> Tuple[CUresult]:  # noqa: N802,N803
        err = _status("cuStreamBeginCapture")
        handle = int(hStream)
        if err == CUresult.CUDA_SUCCESS:
            if handle not in st.streams or handle in st.capturing:
                return (CUresult.CUDA_ERROR_ILLEGAL_STATE,)
            st.capturing[handle] = []
        return (err,)

    def cuStreamEndCapture(hStream: Any) -> Tuple[CUresult, Optional[CUgraph]]:  # noqa: N802,N803
        err = _status("cuStreamEndCapture")
        handle = int(hStream)
        if handle not in st.capturing:
            return (CUresult.CUDA_ERROR_ILLEGAL_STATE, None)
        ops = st.capturing.pop(handle)
        if err != CUresult.CUDA_SUCCESS:
            return (err, None)
        gid = _new_id()
        gs.graphs[gid] = ops
        return (err, CUgraph(gid))

    def _instantiate(call: str, hGraph: Any) -> Tuple[CUresult, Optional[CUgraphExec]]:  # noqa: N803
        err = _status(call)
        if err != CUresult.CUDA_SUCCESS or int(hGraph) not in gs.graphs:
            return (err if err != CUresult.CUDA_SUCCESS else CUresult.CUDA_ERROR_INVALID_VALUE, None)
        eid = _new_id()
        gs.execs[eid] = list(gs.graphs[int(hGraph)])
        return (err, CUgraphExec(eid))

    def cuGraphInstantiate(hGraph: Any, flags: int) -> Tuple[CUresult, Optional[CUgraphExec]]:  # noqa: N802,N803
        return _instantiate("cuGraphInstantiate", hGraph)

    def cuGraphInstantiateWithFlags(hGraph: Any, flags: int) -> Tuple[CUresult, Optional[CUgraphExec]]:  # noqa: N802,N803
        return _instantiate("cuGraphInstantiateWithFlags", hGraph)

    def cuGraphLaunch(hGraphExec: Any, hStream: Any) -> Tuple[CUresult]:  # noqa: N802,N803
        err = _status("cuGraphLaunch")
        if err != CUresult.CUDA_SUCCESS:
            return (err,)
        if int(hGraphExec) not in gs.execs or int(hStream) not in st.streams:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        gs.launches += 1
        for op in gs.execs[int(hGraphExec)]:
            st.enqueue(int(hStream), op)
        return (err,)

    def cuGraphExecDestroy(hGraphExec: Any) -> Tuple[CUresult]:  # noqa: N802,N803
        err = _status("cuGraphExecDestroy")
        if err == CUresult.CUDA_SUCCESS and gs.execs.pop(int(hGraphExec), None) is None:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        return (err,)

    def cuGraphDestroy(hGraph: Any) -> Tuple[CUresult]:  # noqa: N802,N803
        err = _status("cuGraphDestroy")
        if err == CUresult.CUDA_SUCCESS and gs.graphs.pop(int(hGraph), None) is None:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        return (err,)

    def cuGetErrorName(error: CUresult) -> Tuple[CUresult, bytes]:  # noqa: N802
        return (CUresult.CUDA_SUCCESS, CUresult(error).name.encode())

    members: Dict[str, Any] = dict(
        CUresult=CUresult, CUstreamCaptureMode=CUstreamCaptureMode, CUstream=CUstream, CUgraph=CUgraph,
        CUgraphExec=CUgraphExec, cuStreamBeginCapture=cuStreamBeginCapture, cuStreamEndCapture=cuStreamEndCapture,
        cuGraphLaunch=cuGraphLaunch, cuGraphExecDestroy=cuGraphExecDestroy, cuGraphDestroy=cuGraphDestroy,
        cuGetErrorName=cuGetErrorName,
    )
    if major >= 12:  # CUDA 12 made cuGraphInstantiate the flags form (no cuGraphInstantiateWithFlags binding)
        members["cuGraphInstantiate"] = cuGraphInstantiate
    else:  # 11.x: cuGraphInstantiate takes a log buffer; the flags form is cuGraphInstantiateWithFlags
        members["cuGraphInstantiateWithFlags"] = cuGraphInstantiateWithFlags
    return CudaPythonDriver(members), gs
