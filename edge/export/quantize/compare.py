"""Running a pre-NMS graph on ONNX Runtime's CPU and comparing its outputs with another graph's.

``run_outputs`` gives the ``boxes`` and ``scores`` of an in-memory graph per input batch; ``output_errors``
measures how far a quantized (or fp16) graph's outputs are from the FP32 graph's: max box error in
pixels, max and mean score error. Used by the FP16 decode check, the INT8 report and the accuracy gate.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from edge.artifacts import PRE_NMS_OUTPUTS
from edge.errors import ModelError


def session(model: Any, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session for an in-memory ``onnx.ModelProto`` (or bytes)."""
    from edge.ort import open_session

    return open_session(model, threads=threads, providers=["CPUExecutionProvider"])


def run_outputs(model: Any, inputs: Sequence[np.ndarray], threads: int = 0) -> List[Dict[str, np.ndarray]]:
    """Run ``model`` on each input batch; returns {"boxes", "scores"} per batch (float32)."""
    sess = session(model, threads)
    name = sess.get_inputs()[0].name
    out = []
    for x in inputs:
        try:
            boxes, scores = sess.run(list(PRE_NMS_OUTPUTS), {name: x})
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot run the quantized graph: {str(exc).splitlines()[0]}") from None
        out.append({"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32)})
    return out


def output_errors(actual: Sequence[Dict[str, np.ndarray]], expected: Sequence[Dict[str, np.ndarray]]) -> Dict[str, float]:
    """Max |box difference| in pixels, max and mean |score difference| over all batches."""
    box, score, score_sum, count = 0.0, 0.0, 0.0, 0
    for a, e in zip(actual, expected):
        if a["boxes"].shape != e["boxes"].shape or a["scores"].shape != e["scores"].shape:
            raise ModelError(f"output shapes changed: boxes {a['boxes'].shape} vs {e['boxes'].shape}, scores "
                             f"{a['scores'].shape} vs {e['scores'].shape}")
        box = max(box, float(np.max(np.abs(a["boxes"].astype(np.float64) - e["boxes"]))) if a["boxes"].size else 0.0)
        d = np.abs(a["scores"].astype(np.float64) - e["scores"])
        if d.size:
            score = max(score, float(d.max()))
            score_sum += float(d.sum())
            count += d.size
    return {"max_box_error_px": box, "max_score_error": score, "mean_score_error": score_sum / max(1, count)}
