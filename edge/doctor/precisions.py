"""Which engine precisions the self-test builds on a device (``plan_precisions``): fp32; fp16 where the
GPU has fast FP16; int8 where it has fast INT8 and a Q/DQ model is given; on strongly typed TensorRT
(11) only the precisions the ONNX itself carries. Each skipped precision says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from edge.doctor.compare import PRE_NMS_TOLERANCE
from edge.errors import EdgeError


def _sm_tuple(sm: str) -> Tuple[int, int]:
    major, _, minor = sm.partition(".")
    return int(major), int(minor or 0)


def fast_fp16(sm: str) -> bool:
    """TensorRT's platform_has_fast_fp16: SM 5.3 (Nano), 6.0, 6.2 (TX2) and >= 7.0 (Xavier, Orin)."""
    v = _sm_tuple(sm)
    return v in ((5, 3), (6, 0), (6, 2)) or v >= (7, 0)


def fast_int8(sm: str) -> bool:
    """TensorRT's platform_has_fast_int8: SM 6.1 and >= 7.0 (not Nano 5.3, not TX2 6.2)."""
    v = _sm_tuple(sm)
    return v == (6, 1) or v >= (7, 0)


@dataclass
class PrecisionPlan:
    precision: str
    model: Optional[str]  # the ONNX to build; None when skipped
    skip_reason: str = ""


def plan_precisions(trt_version: str, sm: str, model: str, model_form: str, int8_model: Optional[str],
                    requested: Optional[Sequence[str]] = None) -> List[PrecisionPlan]:
    """Which engines the self-test builds on this device, and why the others are skipped."""
    from edge.trt.version import capabilities

    caps = capabilities(trt_version)
    wanted = list(requested) if requested else ["fp32", "fp16", "int8"]
    plans = []
    for p in wanted:
        if p not in PRE_NMS_TOLERANCE:
            raise EdgeError(f"precision {p!r} is not one of {sorted(PRE_NMS_TOLERANCE)}")
        reason = ""
        source: Optional[str] = model
        if p == "fp16" and not fast_fp16(sm):
            reason = f"SM {sm} has no fast FP16 (TensorRT would not use it)"
        elif p == "int8" and not fast_int8(sm):
            reason = f"SM {sm} has no fast INT8 (Jetson Nano/TX2 class GPU)"
        elif p == "int8":
            if model_form != "qdq":
                source = int8_model
                if not source:
                    reason = ("needs a Q/DQ model: run `edge quantize MODEL.onnx --precision int8 --calib ...`, "
                              "`edge surgery` on it, and pass it with --int8-model")
        elif model_form == "qdq":
            reason = ("the model is Q/DQ (INT8 only); pass the float deploy model with --model and the Q/DQ one "
                      "with --int8-model")
        elif caps.strongly_typed_only and p == "fp16" and model_form != "fp16":
            reason = f"TensorRT {trt_version} is strongly typed: FP16 needs an fp16 ONNX (edge quantize --precision fp16)"
        elif caps.strongly_typed_only and p == "fp32" and model_form != "fp32":
            reason = f"the model is {model_form}; TensorRT {trt_version} builds it only in its own precision"
        plans.append(PrecisionPlan(p, None if reason else source, reason))
    return plans


# edge build's default precision first: the engine most users ship
SHIPPED_PREFERENCE = ("fp16", "fp32", "int8")


def preferred_precision(plans: Sequence[PrecisionPlan], allowed: Sequence[str] = SHIPPED_PREFERENCE) -> Optional[str]:
    """The precision the cuda-graph and dynamic-H/W checks use: the first of ``allowed`` (in
    ``SHIPPED_PREFERENCE`` order) that the plan builds; None when it builds none of them."""
    built = {p.precision for p in plans if p.model is not None}
    return next((p for p in SHIPPED_PREFERENCE if p in allowed and p in built), None)


def calibrated_int8_skip_reason(trt_version: str, sm: str, model_form: str,
                                requested: Optional[Sequence[str]] = None) -> str:
    """Why the legacy-calibrated INT8 engine (``edge build --precision int8 --calib``) is not built here
    ('' when it is): it needs INT8 requested, a GPU with fast INT8, a TensorRT with the calibrator (<= 10)
    and an fp32 deploy graph (a Q/DQ graph brings its own scales, an fp16 one is not calibrated)."""
    from edge.trt.version import capabilities

    caps = capabilities(trt_version)
    if requested and "int8" not in requested:
        return "int8 is not among the precisions asked for (--precision)"
    if not fast_int8(sm):
        return f"SM {sm} has no fast INT8 (Jetson Nano/TX2 class GPU)"
    if not caps.int8_calibrator:
        return (f"TensorRT {trt_version} has no INT8 calibrator (removed in 11): INT8 there is Q/DQ only, "
                "checked by 'tensorrt int8' with --int8-model")
    if model_form != "fp32":
        return (f"the model is {model_form}; the legacy calibrator calibrates an fp32 graph (pass the fp32 deploy "
                "model with --model)")
    return ""


def dla_precision(dla_cores: int, plans: Sequence[PrecisionPlan]) -> Tuple[Optional[str], str]:
    """(precision, '') for the DLA engine (DLA runs FP16 or INT8 only), or (None, why it is not built)."""
    if dla_cores <= 0:
        return None, "this device has no DLA (TensorRT reports 0 DLA cores)"
    precision = preferred_precision(plans, ("fp16", "int8"))
    if precision is None:
        reasons = "; ".join(f"{p.precision}: {p.skip_reason}" for p in plans if p.precision in ("fp16", "int8"))
        return None, f"DLA runs FP16 or INT8 only, and neither is built here ({reasons or 'not asked for'})"
    return precision, ""
