"""The machinery that holds the TensorRT stand-ins to the real bindings (tests/trt_standin.py,
tests/runtime/test_standins.py).

* :class:`TrtObject`: base of the stand-ins for objects only TensorRT's factories make (``Builder``,
  ``IBuilderConfig``, ``ICudaEngine``...). Public names are the TensorRT API; internal state is ``_``-prefixed.
  Reading a name the class does not define fails as on the real class; writing works only through a property
  with a setter; ``Cls(...)`` works only for the classes TensorRT lets Python construct (``_constructible``).
* :class:`RealApi`: one real bindings module (tests/trt/bindings.py). When a stand-in class carries one
  (``_api``), every public read, write and call on its instances is checked against the real class named
  ``_trt_name``: the attribute exists there, a call binds to one of its pybind11 signatures (arity, keyword
  names, argument types), a property write matches the setter's type, and what the stand-in returns is what
  the real signature says it returns.
* :class:`PybindLike`: metaclass of the hand-written stand-ins of TensorRT's Python-subclassable classes
  (``ILogger``, ``IInt8EntropyCalibrator2``): like pybind11, a subclass that forgets to call the base
  ``__init__`` fails at construction.
* :func:`surface_mismatches`: the stand-in's public surface compared with the real module, class by class,
  attribute by attribute, enum by enum (what tests/trt/test_bindings.py asserts is empty).
"""

from __future__ import annotations

import enum
import inspect
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from tests.trt import signatures as sig

# -- the real module --------------------------------------------------------------------------------


class RealApi:
    """One real ``tensorrt`` (bindings) module: lookups, parsed signatures, checks, and what was touched."""

    def __init__(self, module: ModuleType):
        self.module = module
        self.version = str(module.__version__)
        self.package = module.__name__
        self.touched: Set[str] = set()
        self._overloads: Dict[Tuple[str, str, str], List[sig.Overload]] = {}

    def __repr__(self) -> str:
        return f"RealApi(TensorRT {self.version})"

    def lookup(self, dotted: str) -> Any:
        obj: Any = self.module
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj

    def attribute(self, owner: str, name: str) -> Any:
        """The real class attribute (static: properties stay properties) or AttributeError as on a device."""
        cls = self.lookup(owner)
        if cls is None:
            raise AttributeError(f"TensorRT {self.version} has no class {owner}")
        try:
            return inspect.getattr_static(cls, name)
        except AttributeError:
            raise AttributeError(f"'{owner}' object has no attribute '{name}' (real TensorRT {self.version} "
                                 "bindings)") from None

    # signatures
    def overloads(self, owner: str, name: str, func: Any, part: str = "call") -> List[sig.Overload]:
        key = (owner, name, part)
        if key not in self._overloads:
            if part == "get":
                found = sig.parse_doc(func.fget.__doc__ if func.fget else None)
            elif part == "set":
                found = sig.parse_doc(func.fset.__doc__ if func.fset else None)
            else:
                found = sig.parse_doc(getattr(func, "__doc__", None), name)
            self._overloads[key] = found
        return self._overloads[key]

    def accepts(self, annotation: str, value: Any) -> bool:
        name = sig.strip_module(annotation, self.package)
        builtin = sig.accepts_builtin(name, value)
        if builtin is not None:
            return builtin
        structured = sig.accepts_structured(name, value, self.accepts)
        if structured is not None:
            return structured
        if name in sig.CAPSULE_ANNOTATIONS:  # pybind11's void* caster: None, a capsule, or any bound C++ object
            return value is None or type(value).__name__ == "PyCapsule" or is_bound_object(value)
        target = self.lookup(name)
        if isinstance(target, type):
            return self.is_instance(value, target)
        raise sig.UnknownAnnotation(f"cannot judge annotation {annotation!r} (TensorRT {self.version})")

    def is_instance(self, value: Any, target: type) -> bool:
        if isinstance(value, target):
            return True
        if isinstance(value, TrtObject):  # a stand-in of a factory-made object
            real = type(value)._real_class()
            return real is not None and issubclass(real, target)
        if target.__name__.startswith("Dims") and isinstance(value, (tuple, list)):
            return all(sig.is_int(v) for v in value)  # TensorRT registers sequence -> Dims conversion
        return False

    def returns_ok(self, annotation: Optional[str], value: Any) -> bool:
        """Lenient: the stand-in's result is something the real function can return (or a plain Python form
        of it: bytes for IHostMemory, a tuple for Dims)."""
        if annotation is None:
            return True
        name = sig.strip_module(annotation, self.package)
        if name == "None":
            return value is None
        seq = sig.SEQ_RE.match(name)
        if seq:
            return isinstance(value, (list, tuple)) and all(self.returns_ok(seq.group(1), v) for v in value)
        builtin = sig.accepts_builtin(name, value)
        if builtin is not None:
            return builtin
        target = self.lookup(name)
        if not isinstance(target, type):
            return True  # e.g. nvonnxparser::IParserError: not bound under that name; nothing to compare
        if value is None and not hasattr(target, "__members__"):
            return True  # pybind11 returns None for a null pointer
        if name == "IHostMemory":
            return sig.is_buffer(value) or self.is_instance(value, target)
        return self.is_instance(value, target)

    def check_call(self, owner: str, name: str, func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                   part: str = "call") -> List[sig.Overload]:
        """The overloads ``(args, kwargs)`` bind to; TypeError (as pybind11 raises it) when none."""
        overloads = self.overloads(owner, name, func, part)
        if not overloads:
            if part == "call" and inspect.isfunction(func):  # pure-Python helpers of the package (nptype)
                try:
                    inspect.signature(func).bind(*args, **kwargs)
                except TypeError as exc:
                    raise TypeError(f"{owner}.{name}(): {exc} (real TensorRT {self.version})") from None
                return []
            raise AssertionError(f"no signature for {owner}.{name} ({part}) in TensorRT {self.version}: "
                                 "teach tests/trt/signatures.py to read it")
        ok, why = sig.bind(overloads, args, kwargs, self.accepts)
        if not ok:
            shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
            raise TypeError(
                f"{owner}.{name}(): incompatible function arguments for the real TensorRT {self.version}. "
                "The supported signatures and why each refuses the call:\n    " + "\n    ".join(why)
                + f"\nInvoked with: {shown}"
            )
        return ok

    def check_result(self, owner: str, name: str, matched: List[sig.Overload], value: Any) -> None:
        if matched and not any(self.returns_ok(ov.returns, value) for ov in matched):
            raise AssertionError(
                f"stand-in bug: {owner}.{name} returned {type(value).__name__} where the real TensorRT "
                f"{self.version} returns {matched[0].returns}"
            )

    def checked(self, owner: str, name: str, real: Any, impl: Callable[..., Any]) -> Callable[..., Any]:
        """``impl`` (a stand-in callable) behind the real signature of ``owner.name``."""

        def call(*args: Any, **kwargs: Any) -> Any:
            matched = self.check_call(owner, name, real, args, kwargs)
            result = impl(*args, **kwargs)
            self.check_result(owner, name, matched, result)
            return result

        call.__name__ = name
        call.__doc__ = getattr(real, "__doc__", None)
        return call


def is_bound_object(value: Any) -> bool:
    """An instance of a pybind11-bound class (real) or of a stand-in for one."""
    return any(c.__name__ == "pybind11_object" for c in type(value).__mro__) or isinstance(value, TrtObject)


# -- stand-in bases ---------------------------------------------------------------------------------


class _TrtMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if not cls._constructible:
            raise TypeError(f"{cls._trt_name}: No constructor defined! (TensorRT makes it through a factory)")
        if cls._api is not None:
            cls._api.check_call(cls._trt_name, "__init__", cls._api.attribute(cls._trt_name, "__init__"),
                                args, kwargs)
            cls._api.touched.add(f"{cls._trt_name}.__init__")
        return super().__call__(*args, **kwargs)

    def _new(cls, *args: Any, **kwargs: Any) -> Any:
        """How the stand-in itself creates a factory-made object."""
        return super().__call__(*args, **kwargs)


class TrtObject(metaclass=_TrtMeta):
    """Base of the stand-ins of factory-made TensorRT objects (see the module docstring)."""

    _trt_name = ""
    _constructible = False
    _api: Optional[RealApi] = None

    @classmethod
    def _real_class(cls) -> Optional[type]:
        return cls._api.lookup(cls._trt_name) if cls._api is not None else None

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls = type(self)
        api = cls._api
        real = api.attribute(cls._trt_name, name) if api is not None else None
        value = object.__getattribute__(self, name)
        if api is None:
            return value
        api.touched.add(f"{cls._trt_name}.{name}")
        if isinstance(real, property):
            api.check_result(cls._trt_name, name, api.overloads(cls._trt_name, name, real, "get"), value)
            return value
        if callable(value) and inspect.ismethod(value):
            return api.checked(cls._trt_name, name, real, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        cls = type(self)
        if cls._api is not None:
            real = cls._api.attribute(cls._trt_name, name)
            if not isinstance(real, property) or real.fset is None:
                raise AttributeError(f"'{cls._trt_name}.{name}' cannot be set in the real TensorRT "
                                     f"{cls._api.version}")
            cls._api.check_call(cls._trt_name, name, real, (value,), {}, part="set")
            cls._api.touched.add(f"{cls._trt_name}.{name}")
        static = inspect.getattr_static(cls, name, None)
        if not isinstance(static, property) or static.fset is None:
            raise AttributeError(f"'{cls._trt_name}' object attribute '{name}' cannot be set (stand-in of TensorRT)")
        object.__setattr__(self, name, value)


class PybindLike(type):
    """Metaclass of hand-written stand-ins of Python-subclassable TensorRT classes (ILogger, calibrators):
    a subclass whose ``__init__`` does not call the base ``__init__`` fails as pybind11 makes it fail."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        if not getattr(obj, "_trt_initialized", False):
            raise TypeError(f"{cls.__name__}.__init__() must be called when overriding __init__")
        return obj


# -- the stand-in module ------------------------------------------------------------------------------

#: What a stand-in module offers the tests besides the API (edge never reads it): the record of calls.
TEST_ONLY_MEMBERS = ("calls",)


class StrictModule:
    """A stand-in module: exactly ``members`` (+ ``__version__``); anything else raises AttributeError.

    With ``api`` (a :class:`RealApi`), a member the real module lacks raises AttributeError too, and the
    functions are checked against the real signatures. ``classes``: every stand-in class reachable from it
    (also those only returned by factories), for :func:`surface_mismatches`.
    """

    def __init__(self, version: str, members: Dict[str, Any], *, api: Optional[RealApi] = None,
                 classes: Iterable[type] = ()):
        object.__setattr__(self, "_members", dict(members, __version__=version))
        object.__setattr__(self, "_api", api)
        object.__setattr__(self, "_classes", tuple(classes))

    def __getattr__(self, name: str) -> Any:
        members = object.__getattribute__(self, "_members")
        api = object.__getattribute__(self, "_api")
        if name not in members:
            raise AttributeError(f"module 'tensorrt' (stand-in {members['__version__']}) has no attribute {name!r}")
        value = members[name]
        if api is None or name in TEST_ONLY_MEMBERS or name == "__version__":
            return value
        real = getattr(api.module, name, None)
        if real is None:
            raise AttributeError(f"module 'tensorrt' has no attribute {name!r} (real TensorRT {api.version})")
        api.touched.add(f"tensorrt.{name}")
        if inspect.isfunction(value) and value is not real:
            return api.checked("tensorrt", name, real, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"stand-in module 'tensorrt' is read-only ({name!r})")


def standin_members(module: StrictModule) -> Dict[str, Any]:
    members = dict(object.__getattribute__(module, "_members"))
    for name in TEST_ONLY_MEMBERS + ("__version__",):
        members.pop(name, None)
    return members


def standin_classes(module: StrictModule) -> Tuple[type, ...]:
    return object.__getattribute__(module, "_classes")


# -- surface comparison -------------------------------------------------------------------------------


def _public_attrs(cls: type, stop: Tuple[type, ...]) -> Dict[str, Any]:
    """Public attributes a stand-in class defines itself (and its stand-in bases), statically."""
    found: Dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass in stop or klass is object:
            break
        for name, value in vars(klass).items():
            if (not name.startswith("_") or name == "__init__") and name not in found:
                found[name] = value
    return found


def _params_within(func: Callable[..., Any], overloads: List[sig.Overload], drop_self: bool) -> Optional[str]:
    """None when every call the stand-in callable accepts (by arity and names) binds to a real overload."""
    params = list(inspect.signature(func).parameters.values())
    if drop_self and params:
        params = params[1:]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in params):
        return "the stand-in takes *args/**kwargs/keyword-only parameters"
    for ov in overloads:
        if len(params) > len(ov.params):
            continue
        good = True
        for mine, real in zip(params, ov.params):
            if real.positional_only:
                good = good and mine.kind == mine.POSITIONAL_ONLY
            else:
                good = good and mine.name == real.name
            good = good and (mine.default is mine.empty or real.has_default)
        good = good and all(p.has_default for p in ov.params[len(params):])
        if good:
            return None
    shown = "; ".join(ov.describe() for ov in overloads) or "no signature"
    return f"stand-in {inspect.signature(func)} is not within the real {shown}"


def _compare_attr(api: RealApi, owner: str, name: str, mine: Any, real: Any) -> Optional[str]:
    if isinstance(mine, property):
        if not isinstance(real, property):
            return f"{owner}.{name}: a property in the stand-in, not in the real module"
        if mine.fset is not None and real.fset is None:
            return f"{owner}.{name}: settable in the stand-in, read-only in the real module"
        return None
    if isinstance(mine, type) and issubclass(mine, enum.Enum):
        return _compare_enum(api, f"{owner}.{name}", mine, real)
    if isinstance(mine, enum.Enum):
        if getattr(real, "name", None) != mine.name or int(real) != int(mine):
            return f"{owner}.{name}: {mine!r} is not the real {real!r}"
        return None
    if isinstance(mine, (staticmethod, classmethod)):
        mine = mine.__func__
    if inspect.isfunction(mine):
        if isinstance(real, property) or not callable(real):
            return f"{owner}.{name}: a method in the stand-in, a property or value in the real module"
        if name == "__init__":
            overloads = sig.parse_doc(real.__doc__, "__init__")
        else:
            overloads = api.overloads(owner, name, real)
        if not overloads and inspect.isfunction(real):  # pure Python in the real package (nptype)
            same = list(inspect.signature(real).parameters) == list(inspect.signature(mine).parameters)
            return None if same else f"{owner}.{name}: {inspect.signature(mine)} != real {inspect.signature(real)}"
        why = _params_within(mine, overloads, drop_self=bool(owner))
        return f"{owner}.{name}: {why}" if why else None
    return f"{owner}.{name}: cannot compare {type(mine).__name__} with {type(real).__name__}"


def _compare_enum(api: RealApi, owner: str, mine: type, real: Any) -> Optional[str]:
    members = getattr(real, "__members__", None)
    if members is None:
        return f"{owner}: an enum in the stand-in, not in the real module"
    bad = [f"{n}={int(m)}" for n, m in mine.__members__.items() if n not in members or int(members[n]) != int(m)]
    return f"{owner}: members {bad} are not real (real: {dict((n, int(v)) for n, v in members.items())})" if bad \
        else None


def _compare_class(api: RealApi, cls: type) -> List[str]:
    owner = getattr(cls, "_trt_name", "") or cls.__name__
    real = api.lookup(owner)
    if not isinstance(real, type):
        return [f"class {owner}: not in the real module"]
    problems = []
    stop = (TrtObject,) if issubclass(cls, TrtObject) else ()
    for name, mine in _public_attrs(cls, stop).items():
        if name == "__init__" and issubclass(cls, TrtObject) and not cls._constructible:
            continue  # the stand-in's own factory constructor: callers cannot reach it
        try:
            real_attr = inspect.getattr_static(real, name)
        except AttributeError:
            problems.append(f"{owner}.{name}: not in the real module")
            continue
        problem = _compare_attr(api, owner, name, mine, real_attr)
        if problem:
            problems.append(problem)
    return problems


def surface_mismatches(module: StrictModule, api: RealApi) -> List[str]:
    """Everything the stand-in module offers that the real module lacks or offers differently."""
    problems = []
    seen: Set[type] = set()
    for name, mine in standin_members(module).items():
        real = getattr(api.module, name, None)
        if real is None:
            problems.append(f"tensorrt.{name}: not in the real module")
        elif isinstance(mine, type) and issubclass(mine, enum.Enum):
            problems += [p for p in [_compare_enum(api, name, mine, real)] if p]
        elif isinstance(mine, type):
            seen.add(mine)
            problems += _compare_class(api, mine)
        elif inspect.isfunction(mine):
            problems += [p for p in [_compare_attr(api, "", name, mine, real)] if p]
        else:
            problems.append(f"tensorrt.{name}: cannot compare {type(mine).__name__}")
    for cls in standin_classes(module):
        if cls not in seen:
            problems += _compare_class(api, cls)
    return problems
