"""Run edge's CUDA-graph code against one real cuda-python release (a subprocess of tests/cuda/test_graphs.py).

usage: python -S probe_cuda_python.py OUT.json DIST VERSION NAMES.json

With only that release, the repository and numpy on sys.path:
1. ``edge.cuda.load_graph_api()`` must pick that release's driver module (``cuda.bindings.driver`` for the
   ``cuda-bindings`` distribution, ``cuda.cuda`` for an older ``cuda-python``) and version;
2. ``CudaGraph`` capture, launch, close (twice), a failing capture and a failing enqueue run against a
   recorder of the real module: attribute reads go to the real module (a missing binding raises), the real
   enums and handle types are used, and each ``cu*`` call is recorded, not made (no driver here), and answered
   with success plus values of the types its docstring returns. Each recorded call is then bound to the
   signature its docstring gives (parameter names, arity, defaults) and each argument checked against the
   types the docstring names for it;
3. for NAMES (the stand-in's members): whether the real module has each, its docstring parameters and
   returns, and for enums their members and values.
Writes {"module", "version", "problems": [...], "calls": [...], "names": {...}}.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import sys
from typing import Any, Dict, List, Tuple


def doc_signature(func: Any) -> Tuple[List[Tuple[str, bool]], Dict[str, List[str]], List[Tuple[str, str]]]:
    """([(param, has_default)], {param: [type names]}, [(return name, type)]) from a cuda-python docstring."""
    doc = inspect.cleandoc(func.__doc__ or "")
    first = doc.splitlines()[0]
    inner = first[first.index("(") + 1:first.rindex(")")]
    params = []
    for piece in [p.strip() for p in inner.split(",") if p.strip()]:
        decl = piece.split(":")[0].split("=")[0].strip()
        name = re.split(r"[\s*]+", decl)[-1]
        params.append((name, "=" in piece))
    types: Dict[str, List[str]] = {}
    returns: List[Tuple[str, str]] = []
    section = None
    lines = doc.splitlines()[1:]
    # entries sit at the indentation of the section headers (some releases indent the whole docstring body)
    base = next((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip() == "Parameters"), 0)
    for raw in lines:
        line = raw.strip()
        if len(raw) - len(raw.lstrip()) != base or not line or line.startswith("-"):
            continue
        if line in ("Parameters", "Returns", "See Also", "Notes"):
            section = line
            continue
        if section == "Parameters" and " : " in line:
            name, kind = line.split(" : ", 1)
            types[name.strip()] = re.findall(r"~\.(\w+)", kind) or [kind.strip()]
        elif section == "Returns":
            name, _, kind = line.partition(" : ")
            kinds = re.findall(r"~\.(\w+)", kind)
            returns.append((name.strip(), kinds[0] if kinds else (kind.strip() or name.strip())))
    return params, types, returns


class Recorder:
    """The real driver module, except that its ``cu*`` functions are recorded and answered, not called."""

    def __init__(self, real: Any, fail: Dict[str, str]) -> None:
        self._real, self._fail, self.calls = real, fail, []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)  # AttributeError: the release has no such binding
        if not (name.startswith("cu") and callable(value)):
            return value
        _, _, returns = doc_signature(value)

        def record(*args: Any, **kwargs: Any) -> Tuple[Any, ...]:
            self.calls.append((name, args, kwargs))
            status = getattr(self._real.CUresult, self._fail.get(name, "CUDA_SUCCESS"))
            values = []
            for _, kind in returns[1:]:
                if status != self._real.CUresult.CUDA_SUCCESS:
                    values.append(None)
                elif kind == "bytes":
                    values.append(b"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED")
                else:
                    values.append(getattr(self._real, kind)())
            return (status, *values)

        return record


def check_call(real: Any, name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> List[str]:
    params, types, _ = doc_signature(getattr(real, name))
    sig = inspect.Signature([inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                               default=0 if d else inspect.Parameter.empty) for p, d in params])
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        return [f"{name}{sig}: the call {args} {kwargs} does not bind ({exc})"]
    problems = []
    for pname, value in bound.arguments.items():
        classes = [getattr(real, t) for t in types.get(pname, []) if isinstance(getattr(real, t, None), type)]
        if classes and not isinstance(value, tuple(classes)):
            problems.append(f"{name}: {pname}={value!r} is not a {' or '.join(c.__name__ for c in classes)}")
        if not classes and "int" in " ".join(types.get(pname, [])) and not isinstance(value, int):
            problems.append(f"{name}: {pname}={value!r} is not an integer ({types[pname]})")
    return problems


def exercise(real: Any, version: str, dist: str) -> Tuple[List[str], List[str]]:
    from edge import cuda

    problems: List[str] = []
    calls: List[str] = []

    def run(fail: Dict[str, str], enqueue_raises: bool = False) -> None:
        recorder = Recorder(real, fail)
        api = cuda.GraphApi(recorder, version, dist)

        def enqueue(handle: int) -> None:
            if enqueue_raises:
                raise RuntimeError("enqueue failed")

        try:
            graph = cuda.CudaGraph.capture(api, 0x5000, enqueue, key=("shape", 1))
            graph.launch()
            graph.close()
            graph.close()
        except (cuda.CudaGraphError, RuntimeError) as exc:
            if not fail and not enqueue_raises:
                problems.append(f"unexpected {exc!r}")
        except Exception as exc:  # noqa: BLE001 - e.g. unpacking another number of values than the call returns
            problems.append(f"{type(exc).__name__}: {exc} (after the calls {[c[0] for c in recorder.calls]})")
        for name, args, kwargs in recorder.calls:
            calls.append(name)
            problems.extend(check_call(real, name, args, kwargs))

    run({})
    run({"cuStreamEndCapture": "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"})
    run({}, enqueue_raises=True)
    return problems, calls


def describe(real: Any, names: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name in names:
        value = getattr(real, name, None)
        if value is None:
            out[name] = None
        elif isinstance(value, type) and issubclass(value, enum.Enum):
            out[name] = {"enum": {m.name: int(m.value) for m in value}}
        elif isinstance(value, type):
            out[name] = {"class": sorted(n for n in dir(value) if not n.startswith("_"))}
        else:
            params, _, returns = doc_signature(value)
            out[name] = {"params": [p for p, _ in params], "returns": [r for r, _ in returns]}
    return out


def main(out_path: str, dist: str, version: str, names_path: str) -> None:
    from edge import cuda

    api = cuda.load_graph_api()
    problems = []
    if api.package != f"{dist} {version}":
        problems.append(f"load_graph_api() found {api.package}, expected {dist} {version}")
    real = api.driver
    more, calls = exercise(real, version, dist)
    problems += more
    with open(names_path) as fh:
        names = json.load(fh)
    result = {"module": real.__name__, "version": version, "problems": problems, "calls": sorted(set(calls)),
              "names": describe(real, names)}
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
