"""The layout holds: layers point down, no import cycles, files short enough to read, one suffix table.

The import graph is read with ``ast`` from every module of ``edge/``: module-level and function-level
imports both count; imports only under ``if TYPE_CHECKING:`` do not. Lazy ``importlib`` loading from a
fixed table of module names (the CLI's ``VERBS``, the model families' ``_FAMILY_MODULES``) counts as
imports of the modules in that table. Packages are ``edge.<name>``; each top-level module ``edge/x.py``
is a package of its own.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from tests.paths import REPO as ROOT

EDGE = ROOT / "edge"

#: Each package's layer; an import may only go to the same or a lower layer (cycles are checked apart).
#: Primitives (layer 0) are the top-level modules: they import nothing above them.
LAYERS: Dict[str, int] = {
    "edge": 0, "edge.errors": 0, "edge.artifacts": 0, "edge.boxes": 0, "edge.nms": 0, "edge.efficient_nms": 0,
    "edge.letterbox": 0, "edge.metrics": 0, "edge.cuda": 0, "edge.bundled": 0, "edge.model_input": 0,
    "edge.ort": 0,
    "edge.data": 1, "edge.synth": 1,
    "edge.models": 2,
    "edge.evaluate": 3,
    "edge.train": 4, "edge.trt": 4,
    "edge.export": 5,
    "edge.runtime": 6,
    "edge.bench": 7, "edge.doctor": 7,
    "edge.cli": 8, "edge.__main__": 9,
}
#: The layer of the shared primitives.
PRIMITIVE = 0
MAX_FILE_LINES = 600
#: Lazily imported modules: name of a module-level dict literal -> its values are module names.
LAZY_TABLES = ("VERBS", "_FAMILY_MODULES")


def module_files() -> Dict[str, Path]:
    mods = {}
    for path in sorted(EDGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = module_files()


def resolve(name: str) -> str:
    """The longest prefix of dotted ``name`` that is a module of edge ('' when none is)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _lazy_table_targets(tree: ast.Module) -> List[Tuple[str, int]]:
    out = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in LAZY_TABLES for t in targets):
                for value in node.value.values:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str) and resolve(value.value):
                        out.append((resolve(value.value), value.lineno))
    return out


def imports_of(module: str) -> List[Tuple[str, int]]:
    """(imported edge module, line) for every import in ``module`` outside ``if TYPE_CHECKING:``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: List[Tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit_one(other)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend((resolve(a.name), node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found.append((resolve(f"{base}.{alias.name}") or resolve(base), node.lineno))
        else:
            visit(node)

    visit(tree)
    found.extend(_lazy_table_targets(tree))
    return [(target, line) for target, line in found if target and target != module]


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def graph() -> Dict[str, Set[str]]:
    return {m: {t for t, _ in imports_of(m)} for m in MODULES}


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_between_modules():
    assert cycles(graph()) == []


def test_no_import_cycle_between_packages():
    edges: Dict[str, Set[str]] = defaultdict(set)
    for module, targets in graph().items():
        for target in targets:
            if package_of(module) != package_of(target):
                edges[package_of(module)].add(package_of(target))
    assert cycles(edges) == []


def test_every_package_has_a_layer():
    missing = sorted({package_of(m) for m in MODULES} - set(LAYERS))
    assert missing == [], f"add {missing} to LAYERS in {Path(__file__).name} (and to the README's layout)"


def test_layers_point_down():
    upward = []
    for module in MODULES:
        here = LAYERS.get(package_of(module))
        for target, line in imports_of(module):
            there = LAYERS.get(package_of(target))
            if package_of(target) != package_of(module) and None not in (here, there) and there > here:
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target} "
                              f"(layer {there} > {here})")
    assert upward == []


def test_primitives_are_top_level_modules_that_import_only_primitives():
    for package, layer in LAYERS.items():
        if layer == PRIMITIVE and package != "edge":
            assert (ROOT / (package.replace(".", "/") + ".py")).is_file(), f"{package} is not edge/*.py"
    wrong = [f"{m} imports {t}" for m in MODULES if LAYERS.get(package_of(m)) == PRIMITIVE
             for t, _ in imports_of(m) if LAYERS.get(package_of(t)) != PRIMITIVE]
    assert wrong == [], wrong


def test_cli_verbs_table_names_existing_modules():
    from edge.cli.main import VERBS
    from edge.models import _FAMILY_MODULES

    assert all(m in MODULES for m in list(VERBS.values()) + list(_FAMILY_MODULES.values()))
    # and the checker reads those tables
    assert {m for m, _ in _lazy_table_targets(ast.parse(MODULES["edge.cli.main"].read_text()))} == set(VERBS.values())


def test_files_are_short_enough_to_read():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert long == {}


def test_one_logger_name():
    """Library modules log through ``log = logging.getLogger(__name__)`` (the CLI's entry may name "edge")."""
    wrong = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assigned = {id(a.value): [getattr(t, "id", None) for t in a.targets]
                    for a in ast.walk(tree) if isinstance(a, ast.Assign)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "getLogger" and getattr(node.func.value, "id", None) == "logging"):
                continue
            by_name = len(node.args) == 1 and getattr(node.args[0], "id", None) == "__name__"
            root = len(node.args) == 1 and getattr(node.args[0], "value", None) == "edge"
            if by_name and assigned.get(id(node)) != ["log"]:
                wrong.append(f"{module}:{node.lineno}: assign it to `log`")
            elif node.args and not by_name and not root:  # getLogger() (the root logger) is for filters
                wrong.append(f"{module}:{node.lineno}: use logging.getLogger(__name__)")
    assert wrong == [], wrong


def test_the_checker_catches_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: a fake tree with a cycle and a primitive importing a verb package."""
    fake = tmp_path / "edge"
    (fake / "runtime").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "runtime" / "__init__.py").write_text("")
    (fake / "runtime" / "a.py").write_text("from edge.runtime import b\n")
    (fake / "runtime" / "b.py").write_text("def f():\n    from edge.runtime.a import x\n")
    (fake / "boxes.py").write_text("def g():\n    import edge.runtime.a\n")
    (fake / "nms.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import edge.runtime.b\n")
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "ROOT", tmp_path)
    monkeypatch.setattr(this, "EDGE", fake)
    monkeypatch.setattr(this, "MODULES", module_files())
    assert cycles(graph()) == [["edge.runtime.a", "edge.runtime.b"]]
    assert ("edge.runtime.a", 2) in imports_of("edge.boxes")
    assert imports_of("edge.nms") == []
    with pytest.raises(AssertionError):
        test_layers_point_down()


def test_one_home_for_output_names_and_model_suffixes():
    """The deploy / pre-NMS output names and the model-file suffixes are written down once, in edge.artifacts."""
    from edge.artifacts import MODEL_SUFFIXES, NMS_OUTPUTS, PRE_NMS_OUTPUTS

    facts = {tuple(NMS_OUTPUTS), tuple(PRE_NMS_OUTPUTS)}
    suffixes = set(MODEL_SUFFIXES)
    copies = []
    for module, path in MODULES.items():
        if module == "edge.artifacts":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                values = tuple(e.value for e in node.elts)
                if values in facts or (len(values) > 1 and set(values) <= suffixes):
                    copies.append(f"{module}:{node.lineno} {values}")
    assert copies == [], copies
