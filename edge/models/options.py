"""The ``--model-arg`` options of each detector family, in one place: what ``edge train --help-model`` lists
and the one check every family's unknown option goes through (``check_model_args``).

A family module registers a function returning its options with ``edge.models.registry.register(name,
options=...)``; the options come from the family's own definitions (a config dataclass and its variants,
or the model class's keyword arguments), so their defaults are never written twice. This module imports
only the registry: the families import it, not the other way round.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from edge.errors import ModelError
from edge.models.registry import MODEL_OPTIONS

#: options ``edge train`` sets itself (from the dataset's classes and ``--imgsz``)
SET_BY_TRAIN = {"num_classes": "the dataset's classes", "input_size": "--imgsz"}


@dataclass
class ModelOption:
    """One ``--model-arg`` option: its name, default, each variant's other value, and the keys of a dict
    option whose keys are fixed (``keys``)."""

    name: str
    default: Any
    variants: Dict[str, Any] = field(default_factory=dict)
    note: str = ""
    keys: Optional[List[str]] = None


def dataclass_options(config_cls: Any, variants: Mapping[str, Mapping[str, Any]]) -> List[ModelOption]:
    """Options from a config dataclass (``SSDConfig``, ``RetinaNetConfig``) whose ``variant`` field picks a
    set of defaults (``SSD_VARIANTS``...): each field's default is the default variant's, and the other
    variants' values are listed where they differ."""
    default_variant = config_cls.__dataclass_fields__["variant"].default
    base = dict(variants.get(default_variant, {}))
    out = []
    for f in dataclasses.fields(config_cls):
        if f.name == "num_classes":
            continue
        if f.name == "variant":
            out.append(ModelOption("variant", default_variant, note="one of " + ", ".join(variants)))
            continue
        default = base[f.name] if f.name in base else _field_default(f)
        others = {v: vals[f.name] for v, vals in variants.items() if v != default_variant and f.name in vals
                  and vals[f.name] != default}
        out.append(ModelOption(f.name, default, others))
    return out


def signature_options(cls: Any, dicts: Optional[Mapping[str, Mapping[str, Any]]] = None,
                      notes: Optional[Mapping[str, str]] = None) -> List[ModelOption]:
    """Options from a model class's keyword arguments (the YOLO families); ``dicts``: the defaults of dict
    options whose keys are fixed (``loss``: ``YoloLossConfig``'s fields)."""
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name == "num_classes":
            continue
        fixed = dict((dicts or {}).get(p.name) or {})
        default = fixed if fixed and p.default is None else p.default
        out.append(ModelOption(p.name, default, note=(notes or {}).get(p.name, ""),
                               keys=sorted(fixed) if fixed else None))
    return out


def _field_default(f: Any) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def family_options(arch: str) -> List[ModelOption]:
    """The registered options of ``arch`` (its module must be imported first); [] when it registered none."""
    return list(MODEL_OPTIONS[arch]()) if arch in MODEL_OPTIONS else []


def check_model_args(arch: str, given: Mapping[str, Any]) -> None:
    """Refuse an option ``arch`` does not have, the same way for every family (ModelError naming the
    unknown option, the family's options, and where they are described). A model registered without
    options (a test's own) is not checked."""
    if arch not in MODEL_OPTIONS:
        return
    options = family_options(arch)
    known = {o.name for o in options} | set(SET_BY_TRAIN)
    unknown = [k for k in given if k not in known]
    for o in options:  # dict options with fixed keys (YOLO's loss): their keys are options too
        value = given.get(o.name)
        if o.keys is not None and isinstance(value, dict):
            unknown += [f"{o.name}.{k}" for k in value if k not in o.keys]
    if unknown:
        names = [o.name for o in options if o.name not in SET_BY_TRAIN]
        names += [f"{o.name}.{k}" for o in options if o.keys for k in o.keys]
        raise ModelError(f"unknown --model-arg {', '.join(unknown)} for {arch}; options: {', '.join(names)} "
                         f"(edge train --model {arch} --help-model)")


def describe(arch: str) -> str:
    """``edge train --model ARCH --help-model``: each option with its default and the variants' values."""
    options = family_options(arch)
    variant = next((o for o in options if o.name == "variant"), None)
    by = f"; defaults of variant {variant.default}, other variants' values in brackets" if variant else ""
    lines = [f"{arch}: --model-arg KEY=VALUE (VALUE: JSON, a plain word, or @FILE.json{by})"]
    for o in options:
        if o.name in SET_BY_TRAIN:
            lines.append(f"  {o.name:<20} set by edge train from {SET_BY_TRAIN[o.name]}")
            continue
        text = f"  {o.name:<20} {_show(o.default)}"
        extra = [o.note] if o.note else []
        extra += [f"{v}: {_show(value)}" for v, value in o.variants.items()]
        lines.append(text + (f"  [{'; '.join(extra)}]" if extra else ""))
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    try:
        return json.dumps(value, separators=(", ", ": "))
    except TypeError:
        return str(value)
