"""The full cache key of a TensorRT engine, stored in its sidecar, and the staleness check.

An engine is valid only for the exact ONNX bytes, TensorRT version, GPU (name and SM), L4T release, DLA
core, precision, input profile, plugin library, calibration data and NMS parameters it was built with. A
stale engine after a re-export is a classic trap: ``edge build`` rebuilds it and ``edge-run`` refuses it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

Shape = Tuple[int, ...]


@dataclass
class DeviceInfo:
    """The GPU an engine is built for. ``sm`` is the compute capability as "MAJOR.MINOR" (Orin: "8.7")."""

    name: str
    sm: str
    l4t_release: Optional[str] = None  # from /etc/nv_tegra_release on Jetson, None elsewhere

    def slug(self) -> str:
        """A short filename-safe id: 'orin-sm87', 'nvidia-geforce-rtx-4090-sm89'."""
        name = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"{name}-sm{self.sm.replace('.', '')}"


@dataclass
class Profile:
    """One optimization profile for one input tensor: min/opt/max shapes (explicit batch, NCHW or NHWC)."""

    input_name: str
    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape

    def to_dict(self) -> Dict[str, Any]:
        return {
            "input": self.input_name,
            "min": list(self.min_shape),
            "opt": list(self.opt_shape),
            "max": list(self.max_shape),
        }


@dataclass
class EngineKey:
    """Everything that makes an engine valid. Compared field by field; any difference means rebuild."""

    onnx_sha256: str
    tensorrt_version: str
    device_name: str
    device_sm: str
    l4t_release: Optional[str]
    dla_core: Optional[int]
    gpu_fallback: bool
    precision: str
    profiles: List[Dict[str, Any]]
    plugin_library: Optional[str]
    calibration_sha256: Optional[str]
    nms: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "EngineKey":
        known = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        missing = [f for f in ("onnx_sha256", "tensorrt_version", "device_name", "device_sm", "precision") if f not in data]
        if missing:
            raise ValueError(f"engine key is missing {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})


def stale_reasons(recorded: EngineKey, current: EngineKey, ignore: Tuple[str, ...] = ()) -> List[str]:
    """Human-readable differences between the key an engine was built with and the one wanted now.

    Empty list: the engine is up to date. ``ignore`` names fields the caller cannot know (the runtime
    without the source ONNX cannot recompute ``onnx_sha256``).
    """
    a, b = recorded.to_dict(), current.to_dict()
    reasons = []
    for name in a:
        if name in ignore:
            continue
        if a[name] != b.get(name):
            reasons.append(f"{name}: engine has {a[name]!r}, now {b.get(name)!r}")
    return reasons


def read_l4t_release(path: str = "/etc/nv_tegra_release") -> Optional[str]:
    """'R35 (release), REVISION: 4.1, ...' -> '35.4.1'; None when not a Jetson."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return text.strip().splitlines()[0] if text.strip() else None
    return f"{match.group(1)}.{match.group(2)}"


def engine_filename(stem: str, input_shape: Shape, max_batch: int, precision: str, device: DeviceInfo,
                    dla_core: Optional[int] = None) -> str:
    """engines/<stem>_<H>x<W>_b<maxbatch>_<precision>[_dla<N>]_<device>.engine for one resolution."""
    hw = "x".join(str(d) for d in input_shape[-3:-1]) if _is_nhwc(input_shape) else "x".join(
        str(d) for d in input_shape[-2:]
    )
    dla = f"_dla{dla_core}" if dla_core is not None else ""
    return f"{stem}_{hw}_b{max_batch}_{precision}{dla}_{device.slug()}.engine"


def _is_nhwc(shape: Shape) -> bool:
    return len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)


def device_info(device: int = 0, driver: Any = None) -> DeviceInfo:
    """Name, compute capability and L4T release of ``device``: the device part of an engine's cache key."""
    from edge.cuda import CudaContext

    ctx = CudaContext(device, driver)
    try:
        return DeviceInfo(name=ctx.name, sm=ctx.sm, l4t_release=read_l4t_release())
    finally:
        ctx.close()
