"""The registry of detector families: arch name -> callable returning a ``Detector``.

Family modules (``edge.models.ssd``, ...) register themselves here with ``@register("name")`` when they are
imported; ``edge.models.build_model`` imports them lazily from its table of family modules.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

MODEL_REGISTRY: Dict[str, Callable[..., Any]] = {}
#: arch name -> a function returning its ``--model-arg`` options (``edge.models.options.ModelOption`` list)
MODEL_OPTIONS: Dict[str, Callable[[], Any]] = {}


def register(name: str, options: Optional[Callable[[], Any]] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        MODEL_REGISTRY[name] = fn
        if options is not None:
            MODEL_OPTIONS[name] = options
        return fn

    return wrap
