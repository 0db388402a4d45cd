"""Checkpoints with a model card: ``torch.load(path, weights_only=True)``-safe, written atomically.

A checkpoint is a dict of tensors and plain Python values only::

    {"format": "edge-checkpoint", "format_version": 1,
     "card":  {...model card, see build_card...},
     "model": state_dict of the deployable weights (the EMA weights when EMA was on),
     # full (resumable) checkpoints, i.e. last.pt, also carry:
     "train_model": state_dict of the raw trained weights (present only when "model" holds EMA weights),
     "optimizer": optimizer.state_dict(), "scheduler": {...}, "ema": {"updates", "decay", "tau"},
     "epoch": completed epochs, "rng": {...}, "history": [rows], "best_fitness": float,
     "train_config": TrainConfig.to_dict()}

``best.pt`` is a *deploy* checkpoint (card + "model" only): small, and what export and ``edge eval`` read.
``load_checkpoint(path) -> (model, card)`` rebuilds the detector from the card alone via
``edge.models.build_model(card["arch"], **card["config"])``.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

import edge
from edge.artifacts import atomic_open
from edge.errors import ModelError

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

CHECKPOINT_FORMAT = "edge-checkpoint"
CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------


def dataset_hash(dataset: Any) -> str:
    """sha256 of a split's content: class names, then per image (sorted by id) its id, file name, size,
    and annotations (boxes rounded to 1/100 px, labels, difficult flags). Changes when an image is added
    or removed or an annotation edited; does not depend on where the dataset lives on disk."""
    digest = hashlib.sha256()
    digest.update(("classes:" + "|".join(dataset.class_names) + "\n").encode())
    for rec in sorted(dataset.records, key=lambda r: str(r.image_id)):
        boxes = np.round(np.asarray(rec.boxes, np.float64) * 100.0).astype(np.int64)
        digest.update(f"{rec.image_id}|{os.path.basename(rec.path)}|{rec.width}x{rec.height}\n".encode())
        digest.update(boxes.tobytes())
        digest.update(np.asarray(rec.labels, np.int64).tobytes())
        digest.update(np.asarray(rec.difficult, np.uint8).tobytes())
    return digest.hexdigest()


def build_card(
    model: Any,
    *,
    class_names: Any,
    data: Optional[Dict[str, Any]] = None,
    training: Optional[Dict[str, Any]] = None,
    metrics: Optional[Dict[str, Any]] = None,
    epochs: int = 0,
    weights: str = "model",
    backbone_weights: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The model card: everything export and evaluation need, from the model and the run.

    Keys: ``arch``, ``config`` (build_model kwargs), ``class_names``, ``num_classes``, ``input_size``
    [H, W], ``input`` (layout NCHW, RGB, float32, letterbox with pad 114, ``normalization``),
    ``normalization`` ``{"scale", "mean", "std", "channel_order"}`` (pixel / scale - mean) / std,
    ``anchors`` (``model.anchors_for_card()``), ``outputs`` (boxes [B,N,4] xyxy input pixels, scores
    [B,N,C]), ``data`` (dataset name, splits, ``hash``, image count), ``training`` (the run's
    settings), ``epochs``, ``metrics`` (val map50, map50_95, per class), ``weights`` ("ema" or
    "model"), ``backbone_weights`` (where the backbone's starting weights came from: ``source``
    ("torchvision:<weights>" or the file), ``file``, ``sha256``, counts ``loaded``/``missing``/``unexpected``;
    None when it started from random weights), ``edge_version``, ``torch_version``, ``created`` (UTC ISO 8601).
    """
    normalization = model.normalization.to_dict()
    card = {
        "arch": model.arch,
        "config": _plain(model.config),
        "class_names": [str(n) for n in class_names],
        "num_classes": int(model.num_classes),
        "input_size": [int(model.input_size[0]), int(model.input_size[1])],
        "input": {
            "layout": "NCHW",
            "channel_order": "RGB",
            "dtype": "float32",
            "resize": "letterbox",
            "pad_value": 114,
            "normalization": normalization,
        },
        "normalization": normalization,
        "anchors": _plain(model.anchors_for_card()),
        "outputs": {
            "boxes": "[B, N, 4] x1,y1,x2,y2 input pixels",
            "scores": "[B, N, C] per-class scores in [0, 1], no background column",
        },
        "data": _plain(data or {}),
        "training": _plain(training or {}),
        "epochs": int(epochs),
        "metrics": _plain(metrics or {}),
        "weights": weights,
        "backbone_weights": _plain(backbone_weights) if backbone_weights else None,
        "edge_version": edge.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if len(card["class_names"]) != card["num_classes"]:
        raise ModelError(
            f"model has {card['num_classes']} classes but {len(card['class_names'])} class names were given "
            f"({card['class_names']}); build the model with num_classes = len(dataset class names)"
        )
    return card


def _plain(value: Any) -> Any:
    """Convert to weights_only-safe plain Python: dict/list/str/int/float/bool/None (tuples -> lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    raise ModelError(f"model card value {value!r} ({type(value).__name__}) is not plain data; "
                     "model configs must hold only numbers, strings, lists and dicts")


# ----------------------------------------------------------------------------------------------------
# RNG state (weights_only-safe: tensors and ints)
# ----------------------------------------------------------------------------------------------------


def rng_state() -> Dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [int(py[0]), [int(v) for v in py[1]], None if py[2] is None else float(py[2])],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------
# Save / load
# ----------------------------------------------------------------------------------------------------


def save_checkpoint(path: PathLike, payload: Dict[str, Any]) -> Path:
    """Write a checkpoint dict atomically (temporary file in the same folder, fsync, rename).

    ``payload`` must hold "card" and "model"; "format" keys are added. Everything must be tensors or
    plain containers/str/int/float/bool/None so that ``torch.load(weights_only=True)`` reads it.
    """
    if "card" not in payload or "model" not in payload:
        raise ValueError("a checkpoint needs 'card' and 'model' entries")
    data = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION}
    data.update(payload)
    with atomic_open(path, "wb") as fh:
        torch.save(data, fh)
    log.debug("saved checkpoint %s", path)
    return Path(path)


def resolve_checkpoint_path(path: PathLike, prefer: str = "best") -> Path:
    """A checkpoint file, or a run folder -> its ``best.pt`` (``prefer="best"``, falling back to last.pt)
    or its ``last.pt`` (``prefer="last"``, for resuming)."""
    p = Path(path)
    if not p.is_dir():
        return p
    first, second = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
    return p / first if (p / first).exists() or not (p / second).exists() else p / second


def read_checkpoint(
    path: PathLike, map_location: Union[str, torch.device] = "cpu", *, prefer: str = "last"
) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with checks; raises ModelError naming what is wrong.

    ``path`` may be a run folder: its last.pt (``prefer="last"``) or best.pt (``prefer="best"``).
    """
    p = resolve_checkpoint_path(path, prefer)
    if not p.exists():
        raise ModelError(f"checkpoint {p} does not exist; pass a .pt written by `edge train` (OUT/best.pt or OUT/last.pt)")
    try:
        data = torch.load(str(p), map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise ModelError(f"cannot read {p} as a weights-only checkpoint: {_load_failure(exc)}; expected a "
                         "checkpoint written by `edge train` (tensors and plain data only); copy the file again, "
                         "or pass the right one") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise ModelError(
            f"{p} is not an edge checkpoint (found {found}); expected a dict with format "
            f"{CHECKPOINT_FORMAT!r} and a model card, as written by `edge train`. A bare state_dict "
            "cannot be exported: the card (architecture, classes, input size, normalization) is missing."
        )
    if int(data.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise ModelError(
            f"{p} has checkpoint format version {data.get('format_version')}, newer than this edge "
            f"({edge.__version__}) reads ({CHECKPOINT_VERSION}); upgrade edge"
        )
    for key in ("card", "model"):
        if key not in data:
            raise ModelError(f"{p} has no {key!r} entry; the file is incomplete or not from `edge train`")
    return data


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in edge's words. PyTorch's own message is not
    relayed where it suggests retrying with ``weights_only=False``: that runs whatever code the file holds."""
    text = " ".join(str(exc).split())
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a pickled Python object ({found.group(1)}), which edge never unpickles: it is not an "
                "edge checkpoint, or it was altered")
    if "weights_only" in text or "Weights only" in text or isinstance(exc, pickle.UnpicklingError):
        operand = re.search(r"Unsupported operand \w+", text)
        detail = f"unpickling failed: {operand.group(0)}" if operand else "unpickling failed"
    else:
        detail = f"{type(exc).__name__}: {text.split('. ')[0].rstrip('.')[:200]}"
    return f"it may be corrupt (truncated or damaged in transfer) or not an edge checkpoint ({detail})"


def model_from_card(card: Dict[str, Any]) -> Any:
    """Build the (untrained) detector a card describes."""
    from edge.models import build_model

    for key in ("arch", "config"):
        if key not in card:
            raise ModelError(f"model card has no {key!r}; expected a card written by `edge train`")
    try:
        return build_model(card["arch"], **card["config"])
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"cannot rebuild {card['arch']!r} from the model card config {card['config']} ({exc}); "
            "was the checkpoint written by another edge version?"
        ) from None


def load_checkpoint(
    path: PathLike, *, device: Union[str, torch.device] = "cpu", weights: str = "model"
) -> Tuple[Any, Dict[str, Any]]:
    """Rebuild a detector from a checkpoint's card and load its weights; returns (model in eval mode, card).

    Args:
        path: a checkpoint, or a run folder (its best.pt, else last.pt).
        weights: "model" (the deployable weights: EMA when training used EMA) or "train" (the raw trained
            weights of a full checkpoint, used to resume).
    """
    data = read_checkpoint(path, prefer="best")
    card = data["card"]
    model = model_from_card(card)
    key = "train_model" if weights == "train" and "train_model" in data else "model"
    try:
        model.load_state_dict(data[key])
    except RuntimeError as exc:
        raise ModelError(
            f"weights in {path} do not fit the {card['arch']} model its card describes: "
            f"{str(exc).splitlines()[0]} (a card and weights from different runs?)"
        ) from None
    model.to(device).eval()
    return model, card


def strip_checkpoint(src: PathLike, dst: PathLike, *, half: bool = False) -> Path:
    """Write a deploy checkpoint (card + deployable weights only) from any edge checkpoint.

    ``half`` stores floating-point weights as float16 (halves the file; ``load_checkpoint`` loads them
    into the float32 model).
    """
    data = read_checkpoint(src)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in data["model"].items()}
    card = dict(data["card"])
    card["stripped_from"] = os.path.basename(str(src))
    if half:
        card["weights_dtype"] = "float16"
    return save_checkpoint(dst, {"card": card, "model": state})
