"""Dump the public surface of the ``pycuda.driver`` importable here to JSON (run by ``real_pycuda.dump_surface``
in a subprocess whose LD_LIBRARY_PATH holds the stub libcuda).

usage: python dump_pycuda.py OUT.json

Output: ``version``; ``functions`` (module-level callables that are not classes); ``classes``: for every
public class of the module, each attribute its instances or the class offer (inherited ones included,
``object``'s own excluded) with its kind: "method", "staticmethod", "classmethod", "property" or "attribute".
"""

from __future__ import annotations

import inspect
import json
import sys

import pycuda
import pycuda.driver as drv

OBJECT_NAMES = set(dir(object)) | {"__dict__", "__module__", "__weakref__", "__instance_size__",
                                   "__safe_for_unpickling__", "__getinitargs__"}
#: dunders that matter to callers (int(allocation), with-blocks, iteration)
DUNDERS = {"__int__", "__index__", "__enter__", "__exit__", "__len__", "__iter__", "__getitem__", "__call__",
           "__getattr__"}


def kind(cls: type, name: str) -> str:
    raw = None
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            break
    if isinstance(raw, property) or type(raw).__name__ in ("getset_descriptor", "member_descriptor"):
        return "property"
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if isinstance(raw, classmethod):
        return "classmethod"
    return "method" if callable(raw) else "attribute"


def members(cls: type) -> dict:
    out = {}
    for name in dir(cls):
        if name in OBJECT_NAMES and name not in DUNDERS:
            continue
        if name.startswith("__") and name not in DUNDERS:
            continue
        out[name] = kind(cls, name)
    return out


def main(path: str) -> None:
    functions, classes, other = [], {}, []
    for name in sorted(dir(drv)):
        if name.startswith("_"):
            continue
        value = getattr(drv, name)
        if inspect.isclass(value):
            classes[name] = members(value)
        elif inspect.ismodule(value):
            continue
        elif callable(value):
            functions.append(name)
        else:
            other.append(name)
    surface = {
        "version": pycuda.VERSION_TEXT,
        "driver_module": drv.__file__,
        "functions": functions,
        "classes": classes,
        "constants": other,
    }
    with open(path, "w") as fh:
        json.dump(surface, fh, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
