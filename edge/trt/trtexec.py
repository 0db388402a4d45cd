"""The ``trtexec`` command line equivalent to an ``edge build`` request, recorded in the engine sidecar.

So that a user (or NVIDIA support) can reproduce the engine with NVIDIA's own tool.
"""

from __future__ import annotations

import shlex
from typing import Collection, List, Optional, Sequence

from edge.trt.engine_key import Profile
from edge.trt.version import TrtCapabilities


def _shape(name: str, shape: Sequence[int]) -> str:
    return f"{name}:{'x'.join(str(int(d)) for d in shape)}"


def trtexec_command(
    caps: TrtCapabilities,
    onnx_path: str,
    engine_path: str,
    precision: str,
    profiles: Sequence[Profile],
    workspace_mb: int,
    dla_core: Optional[int] = None,
    gpu_fallback: bool = False,
    timing_cache: Optional[str] = None,
    calibration_cache: Optional[str] = None,
    strongly_typed: bool = False,
    dynamic_inputs: Optional[Collection[str]] = None,
) -> str:
    """A shell-quoted trtexec invocation matching the build (flags as trtexec spells them per version).

    ``dynamic_inputs``: names of the inputs with dynamic dimensions; ``--minShapes/--optShapes/--maxShapes``
    name only those (trtexec refuses explicit shapes for a static model: "Static model does not take
    explicit shapes"). None: every profiled input is dynamic.
    """
    args: List[str] = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if caps.implicit_precision and not strongly_typed:
        if precision in ("fp16", "best"):
            args.append("--fp16")
        if precision in ("int8", "best"):
            args.append("--int8")
            if calibration_cache:
                args.append(f"--calib={calibration_cache}")
    elif caps.strongly_typed_flag and not caps.strongly_typed_only:
        args.append("--stronglyTyped")
    shaped = [p for p in profiles if dynamic_inputs is None or p.input_name in dynamic_inputs]
    if shaped:
        args.append("--minShapes=" + ",".join(_shape(p.input_name, p.min_shape) for p in shaped))
        args.append("--optShapes=" + ",".join(_shape(p.input_name, p.opt_shape) for p in shaped))
        args.append("--maxShapes=" + ",".join(_shape(p.input_name, p.max_shape) for p in shaped))
    if caps.memory_pools:
        args.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    else:
        args.append(f"--workspace={int(workspace_mb)}")
    if dla_core is not None:
        args.append(f"--useDLACore={int(dla_core)}")
        if gpu_fallback:
            args.append("--allowGPUFallback")
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(a) for a in args)
