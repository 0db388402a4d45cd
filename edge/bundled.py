"""The model shipped inside the package (``edge/assets/``): a YOLOv3-tiny trained on BCCD blood cells.

- ``bccd_yolov3-tiny_320.pt``: the training checkpoint with its model card (the only tracked .pt file).
- ``bccd_yolov3-tiny_320.nms.onnx`` + ``.json``: the deploy graph (uint8 NHWC BGR input 320x320, ONNX
  NonMaxSuppression inside, score > 0.3, IoU 0.45, 100 detections) that ``edge-run`` runs by default.
See benchmarks/RESULTS.md for how it was trained and what it scores on BCCD test.
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import ModelError

ASSETS = Path(__file__).resolve().parent / "assets"
DEPLOY_MODEL = "bccd_yolov3-tiny_320.nms.onnx"
CHECKPOINT = "bccd_yolov3-tiny_320.pt"


def _asset(name: str, what: str) -> Path:
    path = ASSETS / name
    if not path.is_file():
        raise ModelError(
            f"the bundled {what} {path} is missing from this installation (a partial copy or a build that "
            "dropped package data); reinstall edge, or pass a model file explicitly"
        )
    return path


def bundled_model() -> Path:
    """The deploy ONNX (NMS inside) that ``edge-run``, ``edge bench`` and ``edge doctor`` use by default."""
    return _asset(DEPLOY_MODEL, "deploy model")


def bundled_checkpoint() -> Path:
    """The PyTorch checkpoint (with model card) the deploy model was exported from."""
    return _asset(CHECKPOINT, "checkpoint")
