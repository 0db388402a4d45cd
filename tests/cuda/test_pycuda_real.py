"""PyCUDA held to the real module: the stand-in and ``edge/cuda.py`` use only what the released PyCUDA has.

The real ``pycuda.driver`` is built here from its PyPI sdist against a stub ``libcuda`` (tests/cuda/real_pycuda.py,
cached under ~/.cache/edge) and its surface dumped in a subprocess. Then:

* the stand-in ``make_pycuda`` (tests/runtime/test_standins.py) offers no module name, class member or
  instance attribute that the real module lacks, and its static methods and properties are such in the real one;
* every ``drv.X`` and every attribute or method ``edge/cuda.py`` uses on a PyCUDA object exists in the real
  module, on the class the object is. The class comes from the annotations in edge/cuda.py (``self.stream:
  pycuda_driver.Stream``, ...); ``drv`` and ``*.drv`` are the module. An unannotated assignment of a PyCUDA
  call's result fails the test (what it holds could not be checked otherwise).

Marked ``pycuda_real``; ids carry the PyCUDA version (``[pycuda-2026.1]``). The first run builds PyCUDA (~100 s
on two idle cores; ~5 min when several builds share them), later runs reuse the cache (~3 s). Skips (with the
reason) only without PyPI, a CUDA toolkit or a compiler; a build that fails is a test error.
"""

from __future__ import annotations

import ast
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.cuda import real_pycuda
from tests.paths import REPO

# the first run builds PyCUDA from its sdist (minutes on a loaded 2-core CPU): more than the default per-test limit
pytestmark = [pytest.mark.pycuda_real, pytest.mark.timeout(1800)]

CUDA_PY = REPO / "edge" / "cuda.py"
#: dunders a caller may rely on (``int(allocation)``): checked like public names
DUNDERS = {"__int__", "__index__", "__enter__", "__exit__", "__len__", "__iter__", "__getitem__", "__call__"}


@pytest.fixture(scope="session", params=real_pycuda.PYCUDA_VERSIONS,
                ids=[f"pycuda-{v}" for v in real_pycuda.PYCUDA_VERSIONS])
def real_surface(request, tmp_path_factory) -> Dict[str, Any]:
    try:
        build = real_pycuda.ensure_pycuda(request.param)
    except real_pycuda.Unavailable as exc:
        pytest.skip(f"real PyCUDA {request.param} cannot be built here: {exc}")
    surface = real_pycuda.dump_surface(build, tmp_path_factory.mktemp("pycuda") / "surface.json")
    assert surface["version"] == request.param
    return surface


def _members(surface: Dict[str, Any], cls: str) -> Dict[str, str]:
    assert cls in surface["classes"], f"real pycuda.driver {surface['version']} has no class {cls}"
    return surface["classes"][cls]


# -- the stand-in ------------------------------------------------------------------------------------------


def _public(names: List[str]) -> List[str]:
    return sorted(n for n in names if not n.startswith("_") or n in DUNDERS)


def _standin_kinds(cls: type) -> Dict[str, str]:
    kinds = {}
    for name in _public(dir(cls)):
        if name in dir(object) and name not in DUNDERS:
            continue
        raw = next((vars(k)[name] for k in cls.__mro__ if name in vars(k)), None)
        if raw is None or any(name in vars(k) for k in (object, Exception, BaseException) if k in cls.__mro__):
            continue
        kinds[name] = ("property" if isinstance(raw, property) else "staticmethod" if isinstance(raw, staticmethod)
                       else "classmethod" if isinstance(raw, classmethod) else "method" if callable(raw)
                       else "attribute")
    return kinds


def _standin_instances(drv: Any) -> Dict[str, Any]:
    """One object of each stand-in class that edge/cuda.py gets from the driver, made through its API."""
    dev = drv.Device(0)
    ctx = dev.retain_primary_context()
    ctx.push()
    try:
        host = drv.pagelocked_empty((2, 3), "float32")
        return {"Device": dev, "Context": ctx, "Stream": drv.Stream(), "DeviceAllocation": drv.mem_alloc(16),
                "PagelockedHostAllocation": host.base}
    finally:
        drv.Context.pop()


def standin_problems(surface: Dict[str, Any], drv: Any) -> List[str]:
    """What the PyCUDA stand-in offers that the real module lacks (or offers with another kind)."""
    problems = []
    real_names = set(surface["functions"]) | set(surface["classes"]) | set(surface["constants"])
    members = object.__getattribute__(drv, "_members")
    for name, value in sorted(members.items()):
        if name.startswith("__"):
            continue
        if name not in real_names:
            problems.append(f"pycuda.driver.{name}: not in the real module")
            continue
        if not isinstance(value, type) or name not in surface["classes"]:
            continue
        real = surface["classes"][name]
        for member, kind in _standin_kinds(value).items():
            if member not in real:
                problems.append(f"{name}.{member}: not in the real class")
            elif kind in ("staticmethod", "classmethod", "property") and real[member] != kind:
                problems.append(f"{name}.{member}: a {kind} in the stand-in, a {real[member]} in the real class")
    for cls, obj in _standin_instances(drv).items():
        real = _members(surface, cls)
        for attr in _public(list(vars(obj))):
            if attr not in real:
                problems.append(f"{cls} instances: attribute {attr!r} not in the real class")
    return problems


def test_pycuda_standin_offers_only_what_real_pycuda_has(real_surface):
    from tests.runtime.test_standins import make_pycuda

    drv, _ = make_pycuda()
    assert standin_problems(real_surface, drv) == []


def test_the_surface_check_catches_an_invented_stream_capture(real_surface):
    """The defect of issue 12 item 6: a stand-in Stream with begin_capture/end_capture (no released PyCUDA has
    them) must fail the check above."""
    from tests.runtime.test_standins import make_pycuda

    drv, _ = make_pycuda()
    stream_cls = drv.Stream
    invented = type("Stream", (stream_cls,), {"begin_capture": lambda self, mode=None: None,
                                              "end_capture": lambda self: None})
    object.__getattribute__(drv, "_members")["Stream"] = invented
    assert standin_problems(real_surface, drv) == ["Stream.begin_capture: not in the real class",
                                                   "Stream.end_capture: not in the real class"]
    assert "begin_capture" not in real_surface["classes"]["Stream"]


# -- edge/cuda.py against the real module -------------------------------------------------------------------

Type = Tuple[str, str]  # ("module", ""), ("class", X): the class object, ("pycuda", X): an instance,
#                         ("edge", C): an instance of edge/cuda.py's class C, ("list", T): a list of T


class CudaUses(ast.NodeVisitor):
    """Every use of ``pycuda.driver`` in a module, typed from its annotations (see the module docstring)."""

    def __init__(self, source: str) -> None:
        tree = ast.parse(source)
        self.source = source
        self.classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.fields: Dict[Tuple[str, str], Any] = {}  # (edge class, attribute) -> annotation
        for cls in self.classes.values():
            for node in ast.walk(cls):
                if isinstance(node, ast.AnnAssign):
                    target = node.target
                    if isinstance(target, ast.Name) and node in cls.body:
                        self.fields[(cls.name, target.id)] = node.annotation
                    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                            and target.value.id == "self":
                        self.fields[(cls.name, target.attr)] = node.annotation
        self.uses: List[Tuple[int, Type, str]] = []  # (line, receiver type, attribute)
        self.int_of: List[Tuple[int, Type]] = []
        self.unannotated: List[str] = []
        self.cls: Optional[str] = None
        self.scope: Dict[str, Any] = {}

    # types ---------------------------------------------------------------------------------------------
    def annotation(self, node: Any) -> Optional[Type]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pycuda_driver":
            return ("pycuda", node.attr)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            inner = self.annotation(node.slice)
            if node.value.id == "Optional":
                return inner
            if node.value.id == "List" and inner is not None:
                return ("list", "|".join(inner))
        if isinstance(node, ast.Name) and node.id in self.classes:
            return ("edge", node.id)
        return None

    def type_of(self, node: Any) -> Optional[Type]:
        if isinstance(node, ast.Name):
            if node.id == "drv":
                return ("module", "")
            if node.id == "self" and self.cls:
                return ("edge", self.cls)
            return self.scope.get(node.id)
        if isinstance(node, ast.Attribute):
            if node.attr == "drv":
                return ("module", "")
            base = self.type_of(node.value)
            if base is None:
                return None
            if base[0] == "edge":
                ann = self.fields.get((base[1], node.attr))
                return self.annotation(ann) if ann is not None else None
            if base[0] == "module":
                return ("class", node.attr)
        return None

    # visiting ------------------------------------------------------------------------------------------
    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802
        outer, self.cls = self.cls, node.name
        self.generic_visit(node)
        self.cls = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802
        outer = self.scope
        self.scope = {}
        for arg in node.args.args + node.args.kwonlyargs:
            if arg.annotation is not None and arg.arg != "self":
                typed = self.annotation(arg.annotation)
                if typed is not None:
                    self.scope[arg.arg] = typed
        self.generic_visit(node)
        self.scope = outer

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:  # noqa: N802
        if isinstance(node.target, ast.Name):
            typed = self.annotation(node.annotation)
            if typed is not None:
                self.scope[node.target.id] = typed
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:  # noqa: N802
        typed = self.type_of(node.iter)
        if typed is not None and typed[0] == "list" and isinstance(node.target, ast.Name):
            kind, _, name = typed[1].partition("|")
            self.scope[node.target.id] = (kind, name)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:  # noqa: N802
        if isinstance(node.value, ast.Call) and self.is_driver_call(node.value):
            for target in node.targets:
                if isinstance(target, (ast.Name, ast.Attribute)):
                    self.unannotated.append(f"line {node.lineno}: {ast.get_source_segment(self.source, node)}")
        self.generic_visit(node)

    def is_driver_call(self, call: ast.Call) -> bool:
        func = call.func
        return isinstance(func, ast.Attribute) and (self.type_of(func.value) or ("",))[0] in ("module", "class", "pycuda")

    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: N802
        base = self.type_of(node.value)
        if base is not None and base[0] in ("module", "class", "pycuda") and node.attr != "drv":
            self.uses.append((node.lineno, base, node.attr))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        if isinstance(node.func, ast.Name) and node.func.id == "int" and len(node.args) == 1:
            typed = self.type_of(node.args[0])
            if typed is not None and typed[0] == "pycuda":
                self.int_of.append((node.lineno, typed))
        self.generic_visit(node)


def cuda_py_problems(surface: Dict[str, Any], source: str) -> Tuple[List[str], CudaUses]:
    uses = CudaUses(source)
    uses.visit(ast.parse(source))
    problems = [f"{u}: annotate the target with its pycuda_driver class" for u in uses.unannotated]
    module_names = set(surface["functions"]) | set(surface["classes"]) | set(surface["constants"])
    for line, (kind, cls), attr in uses.uses:
        if kind == "module":
            if attr not in module_names:
                problems.append(f"line {line}: drv.{attr} is not in the real pycuda.driver")
        elif cls not in surface["classes"]:
            problems.append(f"line {line}: {cls} is not a class of the real pycuda.driver")
        elif attr not in surface["classes"][cls]:
            problems.append(f"line {line}: {cls}.{attr} is not in the real pycuda.driver.{cls}")
        elif kind == "class" and surface["classes"][cls][attr] not in ("staticmethod", "classmethod", "attribute"):
            problems.append(f"line {line}: {cls}.{attr} is called on the class, but the real one is a "
                            f"{surface['classes'][cls][attr]}")
    for line, (_, cls) in uses.int_of:
        members = surface["classes"].get(cls, {})
        if "__int__" not in members and "__index__" not in members:
            problems.append(f"line {line}: int() of a {cls}, which has neither __int__ nor __index__")
    return problems, uses


def test_edge_cuda_uses_only_real_pycuda_names(real_surface):
    problems, uses = cuda_py_problems(real_surface, CUDA_PY.read_text())
    assert problems == []
    used = {(t[1] or "drv") + "." + a for _, t, a in uses.uses}
    # the scan does see the calls that matter (a scan that typed nothing would pass vacuously)
    assert {"drv.Stream", "drv.pagelocked_empty", "drv.mem_alloc", "drv.memcpy_htod_async", "drv.get_driver_version",
            "Context.pop", "Device.count", "Device.retain_primary_context", "Context.push", "Context.detach",
            "Stream.synchronize", "Stream.handle", "DeviceAllocation.free", "PagelockedHostAllocation.free"} <= used
    assert {cls for _, (_, cls) in uses.int_of} == {"DeviceAllocation"}


def test_the_scan_catches_an_invented_pycuda_method(real_surface):
    """The pre-fix edge/cuda.py called ``self.stream.begin_capture()``: the scan must reject that line."""
    source = CUDA_PY.read_text().replace("self.stream.synchronize()", "self.stream.begin_capture()")
    problems, _ = cuda_py_problems(real_surface, source)
    assert len(problems) == 1 and "Stream.begin_capture is not in the real pycuda.driver.Stream" in problems[0]
    unannotated = CUDA_PY.read_text().replace("self.stream: pycuda_driver.Stream = ", "self.stream = ")
    problems, _ = cuda_py_problems(real_surface, unannotated)
    assert any("annotate" in p and "self.stream" in p for p in problems)
