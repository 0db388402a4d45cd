"""pybind11 signatures of the real TensorRT bindings, read from their docstrings, and calls checked against them.

``inspect.signature`` does not work on pybind11 functions; their docstrings carry the signature instead:
``set_tensor_address(self: X.IExecutionContext, name: str, memory: int) -> bool``, or for overloads a
``name(*args, **kwargs)`` line, "Overloaded function." and ``1. name(...)``, ``2. name(...)`` lines;
property getters and setters read ``(arg0: X.IBuilderConfig) -> int`` / ``(arg0: ..., arg1: int) -> None``.

:func:`bind` decides, as pybind11's dispatcher does, whether ``(args, kwargs)`` bind to one overload: arity,
keyword names (parameters pybind11 names ``argN`` take no keyword), and each argument's type where the
annotation names one (int, float, bool, str, buffer, capsule, sequences, enums, classes, Dims).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Optional[str]
    has_default: bool

    @property
    def positional_only(self) -> bool:
        """pybind11 names unnamed parameters ``arg0, arg1...``; those cannot be passed by keyword."""
        return re.fullmatch(r"arg\d+", self.name) is not None


@dataclass(frozen=True)
class Overload:
    params: Tuple[Param, ...]  # without ``self``
    returns: Optional[str]
    text: str

    def describe(self) -> str:
        return self.text


class UnknownAnnotation(Exception):
    """An annotation the checker cannot judge: teach :func:`accepts` instead of letting it pass unchecked."""


def split_top(text: str, sep: str) -> List[str]:
    """Split on ``sep`` outside brackets, ``<...>`` reprs and quotes."""
    parts, depth, quote, cur, i = [], 0, None, "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif depth == 0 and text.startswith(sep, i):
            parts.append(cur)
            cur, i = "", i + len(sep)
            continue
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>" and text[i - 1:i + 1] != "->":
            depth -= 1
        cur += ch
        i += 1
    return parts + [cur]


def parse_signature(line: str) -> Overload:
    """``'f(self: X, a: int, b: str = 'x') -> bool'`` -> Overload(params without self, returns 'bool')."""
    start = line.index("(")
    body, rest = split_top(line[start + 1:], ")")[0], ""
    tail = line[start + 1 + len(body) + 1:].strip()
    if tail.startswith("->"):
        rest = tail[2:].strip()
    params = []
    for part in (p.strip() for p in split_top(body, ",")):
        if part in ("", "/", "*"):
            continue
        head, *default = split_top(part, " = ")
        name, *annot = head.split(":", 1)
        params.append(Param(name.strip(), annot[0].strip() if annot else None, bool(default)))
    if params and params[0].name in ("self", "arg0") and _is_self(params[0], line):
        params = params[1:]
    return Overload(tuple(params), rest or None, line.strip())


def _is_self(param: Param, line: str) -> bool:
    # methods name it self; property accessors call it arg0 and have no function name before '('
    return param.name == "self" or line.lstrip().startswith("(")


def parse_doc(doc: Optional[str], name: str = "") -> List[Overload]:
    """Every overload in a pybind11 docstring ([] when the docstring holds no signature)."""
    lines = (doc or "").strip().splitlines()
    if not lines:
        return []
    first = lines[0].strip()
    if len(lines) > 1 and lines[1].strip() == "Overloaded function.":
        pat = re.compile(rf"^\d+\. {re.escape(name or first.split('(', 1)[0])}\(")
        return [parse_signature(ln.strip().split(". ", 1)[1]) for ln in lines if pat.match(ln.strip())]
    if not re.match(rf"^{re.escape(name)}\(", first):
        return []
    return [parse_signature(first)]


# -- binding ---------------------------------------------------------------------------------------


Accepts = Callable[[str, Any], bool]


def bind_one(ov: Overload, args: Sequence[Any], kwargs: dict, accepts: Accepts) -> Optional[str]:
    """None when the call binds to ``ov``; else why not."""
    if len(args) > len(ov.params):
        return f"takes {len(ov.params)} argument(s), {len(args)} given"
    given = {}
    for p, a in zip(ov.params, args):
        given[p.name] = a
    names = {p.name: p for p in ov.params}
    for key, value in kwargs.items():
        p = names.get(key)
        if p is None or p.positional_only:
            return f"no keyword argument {key!r}"
        if key in given:
            return f"argument {key!r} given twice"
        given[key] = value
    for p in ov.params:
        if p.name not in given:
            if not p.has_default:
                return f"missing argument {p.name!r}"
            continue
        if p.annotation is not None and not accepts(p.annotation, given[p.name]):
            return f"argument {p.name!r}: {type(given[p.name]).__name__} is not {p.annotation}"
    return None


def bind(overloads: Sequence[Overload], args: Sequence[Any], kwargs: dict,
         accepts: Accepts) -> Tuple[List[Overload], List[str]]:
    """(overloads the call binds to, why each other one refused it)."""
    ok, why = [], []
    for ov in overloads:
        reason = bind_one(ov, args, kwargs, accepts)
        if reason is None:
            ok.append(ov)
        else:
            why.append(f"{ov.describe()}: {reason}")
    return ok, why


# -- annotations ------------------------------------------------------------------------------------

INT_ANNOTATIONS = {"int", "typing.SupportsInt", "SupportsInt"}
FLOAT_ANNOTATIONS = {"float", "typing.SupportsFloat", "SupportsFloat"}
BUFFER_ANNOTATIONS = {"buffer", "typing_extensions.Buffer", "collections.abc.Buffer", "Buffer", "bytes"}
CAPSULE_ANNOTATIONS = {"capsule", "typing_extensions.CapsuleType", "types.CapsuleType", "CapsuleType"}
SEQ_RE = re.compile(r"^(?:typing\.)?(?:List|list|Sequence|collections\.abc\.Sequence|Iterable|"
                  r"collections\.abc\.Iterable)\[(.*)\]$")
OPT_RE = re.compile(r"^(?:typing\.)?Optional\[(.*)\]$")


def strip_module(annotation: str, package: str) -> str:
    """``'<pkg>.tensorrt.ILogger.Severity'`` / ``'nvinfer1::ILogger::Severity'`` -> ``'ILogger.Severity'``."""
    text = annotation.strip()
    for prefix in (f"{package}.tensorrt.", f"{package}.", "tensorrt.tensorrt.", "tensorrt."):
        if text.startswith(prefix):
            return text[len(prefix):]
    for ns in ("nvinfer1::", "nvonnxparser::", "nvuffparser::", "nvcaffeparser1::"):
        if text.startswith(ns):
            return text[len(ns):].replace("::", ".")
    return text


def is_int(value: Any) -> bool:
    """pybind11's int caster: ints (bool included) and objects with __index__ / __int__, never floats."""
    if isinstance(value, float) or isinstance(value, (str, bytes)):
        return False
    return isinstance(value, int) or hasattr(type(value), "__index__") or hasattr(type(value), "__int__")


def is_buffer(value: Any) -> bool:
    try:
        memoryview(value)
    except TypeError:
        return False
    return True


def accepts_builtin(name: str, value: Any) -> Optional[bool]:
    """True/False for the builtin annotations, None when ``name`` is not one of them."""
    if name in INT_ANNOTATIONS:
        return is_int(value)
    if name in FLOAT_ANNOTATIONS:
        return not isinstance(value, (str, bytes)) and (isinstance(value, (int, float)) or
                                                        hasattr(type(value), "__float__"))
    if name == "bool":  # pybind11 converts None, bools, numpy bools and numbers (nb_bool)
        return value is None or isinstance(value, (bool, int, float)) or type(value).__name__ == "bool_"
    if name == "str":
        return isinstance(value, (str, bytes))
    if name in BUFFER_ANNOTATIONS:
        return is_buffer(value)
    if name in ("object", "typing.Any", "Any", "handle"):
        return True
    if name == "tuple":
        return isinstance(value, tuple)
    if name == "list":
        return isinstance(value, list)
    if name.startswith("numpy.ndarray"):
        return type(value).__name__ == "ndarray"
    return None


def accepts_structured(annotation: str, value: Any, accepts: Accepts) -> Optional[bool]:
    """Optional[...] and sequences of X; None when ``annotation`` is neither."""
    opt = OPT_RE.match(annotation)
    if opt:
        return value is None or accepts(opt.group(1), value)
    seq = SEQ_RE.match(annotation)
    if seq:  # pybind11's list caster takes any sequence but str/bytes
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
            return False
        return all(accepts(seq.group(1), v) for v in value)
    return None
