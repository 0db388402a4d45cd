"""What each TensorRT release can do, decided from its version string alone.

The Python APIs Jetson users have (see docs/tensorrt.md for the matrix):

==========  =========  ====================================================================
TensorRT    JetPack    what changes for us
==========  =========  ====================================================================
8.2         4.6        runtime only, best effort: bindings API, ``max_workspace_size``
8.5         5.1        name-based tensor API (``execute_async_v3``), memory pools
10.x        6.x        EXPLICIT_BATCH ignored, STRONGLY_TYPED flag, calibrators deprecated
11.x        7.2.2+ *   strongly typed only: no FP16/INT8 builder flags, no IInt8Calibrator
==========  =========  ====================================================================

* JetPack only with TensorRT 11.4.1 (JetPack 7.2.2+ on AGX Orin and Thor); 11.0, 11.2.1, 11.3.0,
  11.4.0 and 11.5.0 support no JetPack (their release documentation), only desktop GPUs and servers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Tuple

from edge.errors import EdgeError

MIN_SUPPORTED = (8, 2)
MIN_BUILD_SUPPORTED = (8, 4)  # memory pools and build_serialized_network with profiles as we use them


def parse_version(text: str) -> Tuple[int, int, int]:
    """'10.3.0.30' -> (10, 3, 0). Raises EdgeError on anything else."""
    match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not match:
        raise EdgeError(f"cannot parse TensorRT version {text!r}; expected MAJOR.MINOR[.PATCH]")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


@dataclass(frozen=True)
class TrtCapabilities:
    """Feature switches for one TensorRT version; every builder/runtime branch reads these, not versions."""

    version: Tuple[int, int, int]

    @property
    def version_string(self) -> str:
        return ".".join(str(v) for v in self.version)

    @property
    def major_minor(self) -> Tuple[int, int]:
        return self.version[0], self.version[1]

    @property
    def supported(self) -> bool:
        return self.major_minor >= MIN_SUPPORTED

    @property
    def can_build(self) -> bool:
        return self.major_minor >= MIN_BUILD_SUPPORTED

    @property
    def implicit_precision(self) -> bool:
        """BuilderFlag.FP16 / BuilderFlag.INT8 exist (removed in 11)."""
        return self.version[0] <= 10

    @property
    def int8_calibrator(self) -> bool:
        """IBuilderConfig.int8_calibrator and IInt8EntropyCalibrator2 exist (removed in 11)."""
        return self.version[0] <= 10

    @property
    def strongly_typed_flag(self) -> bool:
        """NetworkDefinitionCreationFlag.STRONGLY_TYPED can be requested (10.0+; the default in 11)."""
        return self.version[0] >= 10

    @property
    def strongly_typed_only(self) -> bool:
        return self.version[0] >= 11

    @property
    def explicit_batch_flag_needed(self) -> bool:
        """TensorRT 8.x needs EXPLICIT_BATCH for ONNX networks; 10+ ignores it (always explicit batch)."""
        return self.version[0] < 10

    @property
    def tensor_api(self) -> bool:
        """Name-based I/O (num_io_tensors, set_tensor_address, execute_async_v3): 8.5+."""
        return self.major_minor >= (8, 5)

    @property
    def memory_pools(self) -> bool:
        """IBuilderConfig.set_memory_pool_limit (8.4+); older has max_workspace_size."""
        return self.major_minor >= (8, 4)

    @property
    def efficient_nms_deprecated(self) -> bool:
        return self.major_minor >= (10, 12)

    @property
    def efficient_nms_class_agnostic(self) -> bool:
        """The EfficientNMS_TRT creator reads ``class_agnostic`` from 8.6; the 8.5.x creator parses six
        fields and ignores it (per-class NMS, silently)."""
        return self.major_minor >= (8, 6)

    @property
    def onnx_nms_import(self) -> bool:
        """The ONNX parser imports NonMaxSuppression (INMSLayer) from 8.6."""
        return self.major_minor >= (8, 6)


def capabilities(version_text: str) -> TrtCapabilities:
    return TrtCapabilities(parse_version(version_text))


def require_supported(caps: TrtCapabilities, *, for_build: bool) -> None:
    """Raise a clear EdgeError when this TensorRT is too old for what is asked."""
    if not caps.supported:
        raise EdgeError(
            f"TensorRT {caps.version_string} is too old: edge supports TensorRT >= 8.2 (JetPack 4.6). "
            "Upgrade JetPack (or the tensorrt package on a desktop GPU)."
        )
    if for_build and not caps.can_build:
        raise EdgeError(
            f"TensorRT {caps.version_string} can run engines here but edge builds engines only with "
            "TensorRT >= 8.4 (JetPack 5.0+). Build on a newer JetPack, or build with trtexec on this "
            "device and pass the .engine file to edge-run."
        )
