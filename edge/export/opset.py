"""The default-domain (ai.onnx) opset of an ONNX model, shared by graph surgery and quantization.

Imports nothing heavy (it reads ``model.opset_import`` of an ``onnx.ModelProto``).
"""

from __future__ import annotations

from typing import Any, Optional

from edge.errors import ModelError


def model_opset(model: Any, default: Optional[int] = None) -> int:
    """The version of the default-domain opset ``model`` imports.

    A model that imports none raises ModelError, or returns ``default`` when one is given.
    """
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    if default is not None:
        return int(default)
    raise ModelError("the model imports no default-domain (ai.onnx) opset; it is not a standard ONNX graph")
