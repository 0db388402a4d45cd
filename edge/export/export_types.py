"""The data ``edge export`` takes and gives, shared by its PyTorch and torchvision sources.

* ``ExportSource``  what to export: the detector at any input size, and the metadata of its sidecar
                    (built by ``edge.export.torch_export.source_from_model`` / ``source_from_checkpoint``
                    and ``edge.export.torchvision_loading.source_from_torchvision_model``)
* ``ExportResult``  one written graph: paths, sizes, box counts, verification and simplification outcomes
* ``parse_size``    "HxW" / one number / a pair -> (H, W), the ``Size`` every export option uses
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from edge.errors import ModelError
from edge.export.preprocess import NormalizationSpec
from edge.export.simplify import SimplifyOutcome
from edge.export.verify import VerificationReport

Size = Tuple[int, int]


# ------------------------------------------------------------------------------------------------ sizes


def parse_size(value: Union[str, int, Sequence[int]]) -> Size:
    """"320x256" / "320" / 320 / (320, 256) -> (H, W), positive ints."""
    if isinstance(value, str):
        text = value.lower().replace(" ", "")
        parts = text.split("x") if "x" in text else text.split(",") if "," in text else [text, text]
        try:
            size = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (-1, -1)
        except ValueError:
            size = (-1, -1)
    elif isinstance(value, int):
        size = (int(value), int(value))
    else:
        seq = [int(v) for v in value]
        size = (seq[0], seq[1]) if len(seq) == 2 else (-1, -1)
    if size[0] < 1 or size[1] < 1:
        raise ModelError(f"image size {value!r} is not valid; expected HxW (e.g. 320x320) or one number for a "
                         "square input")
    return size


# ------------------------------------------------------------------------------------------------ sources


@dataclass
class ExportSource:
    """What to export: a way to get the detector at any input size, and the metadata of its sidecar.

    model_for_size((H, W)) -> eval-mode torch module, float32 [B, 3, H, W] normalized RGB ->
        (boxes [B, N, 4] xyxy input pixels, scores [B, N, C] activations applied, no background).
    """

    arch: str
    class_names: List[str]
    input_size: Size
    normalization: NormalizationSpec
    model_for_size: Callable[[Size], Any]
    config: Dict[str, Any] = field(default_factory=dict)
    card: Dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[Path] = None
    checkpoint_sha256: Optional[str] = None
    pad_value: int = 114

    def anchors_for(self, module: Any) -> List[Any]:
        fn = getattr(module, "anchors_for_card", None)
        return list(fn()) if callable(fn) else []


# ------------------------------------------------------------------------------------------------ results


@dataclass
class ExportResult:
    """One written graph: paths, size(s), box count, verification and simplification outcomes, sidecar."""

    onnx_path: Path
    sidecar_path: Path
    input_size: Size
    num_boxes: Dict[str, int]
    report: VerificationReport
    simplify: Optional[SimplifyOutcome]
    sidecar: Dict[str, Any]

    def summary(self) -> Dict[str, Any]:
        return {
            "onnx": str(self.onnx_path),
            "sidecar": str(self.sidecar_path),
            "input_size": list(self.input_size),
            "num_boxes": dict(self.num_boxes),
            "simplified": bool(self.simplify and self.simplify.simplified),
            "max_errors": self.report.max_errors,
        }
