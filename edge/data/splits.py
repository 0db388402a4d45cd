"""Splits made from fractions, the seeded shuffle behind them, and the default validation split.

Fraction splits (``splits: {train: 0.7, val: 0.15, test: 0.15}`` in a dataset YAML, see
``edge.data.config``): the pool of the dataset's images (VOC: the ids of ``<annotations>/*.xml``; YOLO: the
images under ``<images>``, as paths relative to the root) is sorted, shuffled by ``seeded_shuffle`` with the
YAML's ``seed``, and cut in the order the splits are written: split k takes the images from
``round(F(k-1) * n)`` to ``round(F(k) * n)``, where F is the running sum of the fractions. The same files and
seed give the same splits on every run, machine and Python version.

``resolve_val_split`` is the one rule for the validation split when none is named, used by ``edge train``
and ``edge quantize``: the YAML's ``val``, else a seeded ``carve`` of ``DEFAULT_VAL_FRACTION`` of the training
split (training only; ``edge quantize`` refuses instead and names ``--val-split``). The test split is only
ever used when named.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, TypeVar

from edge.data.config import DatasetConfig
from edge.errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: share of the training split carved out for validation when the YAML has no ``val`` split
DEFAULT_VAL_FRACTION = 0.1
#: a training split smaller than this is not carved: training refuses and asks for a val split
MIN_CARVE_IMAGES = 10


def seeded_shuffle(items: Sequence[T], seed: int) -> List[T]:
    """``items`` in a seeded random order, the same on every Python version: a Fisher-Yates shuffle drawing
    only ``random.Random(seed).random()`` (whose sequence Python guarantees across versions; ``shuffle``
    and ``randrange`` carry no such promise). Sort ``items`` first for an order independent of listing."""
    out = list(items)
    rng = random.Random(int(seed))
    for i in range(len(out) - 1, 0, -1):
        j = min(int(rng.random() * (i + 1)), i)
        out[i], out[j] = out[j], out[i]
    return out


def cut_fractions(ids: Sequence[str], fractions: Dict[str, float], seed: int) -> Dict[str, List[str]]:
    """Split name -> its ids: ``ids`` sorted, shuffled with ``seed``, cut in the order of ``fractions``
    at the rounded running sums (each split's ids come back sorted)."""
    order = seeded_shuffle(sorted(ids), seed)
    n = len(order)
    out: Dict[str, List[str]] = {}
    start, total = 0, 0.0
    for name, fraction in fractions.items():
        total += fraction
        end = min(n, int(total * n + 0.5))
        out[name] = sorted(order[start:end])
        start = end
    return out


def fraction_pool(config: DatasetConfig) -> List[str]:
    """The ids fraction splits share out: VOC annotation ids, or YOLO image paths relative to the root
    (posix), sorted. Raises DataError when the folder is missing or holds nothing."""
    if config.format == "voc":
        folder = config.annotations_dir()
        ids = sorted(p.stem for p in folder.glob("*.xml")) if folder.is_dir() else []
        what = "annotation files (*.xml)"
    else:
        from edge.data.images import list_images

        folder = config.pool_dir()
        ids = sorted(_relative(p, config) for p in list_images(folder)) if folder.is_dir() else []
        what = "images"
    if not ids:
        raise DataError(f"dataset {config.name!r}: no {what} in {folder} to share out as the fraction splits "
                        f"{', '.join(config.splits)}; fix 'root' or set "
                        f"'{'annotations' if config.format == 'voc' else 'images'}:' in {config.source or 'the YAML'}")
    return ids


def fraction_splits(config: DatasetConfig) -> Dict[str, List[str]]:
    """Every fraction split of ``config`` -> its ids (see the module docstring)."""
    fractions = {k: float(s.fraction) for k, s in config.splits.items() if s.fraction is not None}
    return cut_fractions(fraction_pool(config), fractions, config.seed)


def split_members(config: DatasetConfig, split: str) -> List[str]:
    """The ids of one fraction split; a DataError when it comes out empty (too few images for its share)."""
    spec = config.split_spec(split)
    members = fraction_splits(config)[split]
    if not members:
        raise DataError(f"split {split!r} of dataset {config.name!r} is {spec.fraction:g} of "
                        f"{len(fraction_pool(config))} images, which rounds to none; give it a larger fraction")
    log.debug("%s/%s: %d images (fraction %g, seed %d)", config.name, split, len(members), spec.fraction, config.seed)
    return members


def _relative(path, config: DatasetConfig) -> str:
    try:
        return path.resolve().relative_to(config.root.resolve()).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------- validation split


@dataclass
class ValSplit:
    """Where validation images come from.

    split: the split to score ("none": no validation); with ``carve``, the name the carved part goes by.
    carve: the split is a seeded ``fraction`` of the training split ``source`` (removed from training).
    explicit: the user named the split.
    """

    split: str
    carve: bool = False
    source: Optional[str] = None
    fraction: float = DEFAULT_VAL_FRACTION
    explicit: bool = False


def resolve_val_split(config: DatasetConfig, requested: Optional[str], train_split: Optional[str] = "train",
                      option: str = "--val-split", skip: Optional[str] = "--val-split none") -> ValSplit:
    """The validation split: ``requested`` when given (checked: it must be a split of the YAML, or "none"
    where ``skip`` is the option that turns validation off), else the YAML's ``val``, else a carve of
    ``train_split`` (a DataError when ``train_split`` is None, as for ``edge quantize``, which has no training
    split to carve from). Never the test split by default."""
    available = ", ".join(config.splits)
    where = f"dataset {config.name!r} ({config.source or 'config'})"
    if requested == "none" and skip != "--val-split none":
        raise DataError(f"{option} none: a split to score is needed here (the YAML has {available}); "
                        f"{skip or 'name one'} skips the scoring")
    if requested is not None:
        if requested != "none" and requested not in config.splits:
            raise DataError(f"{where} has no split {requested!r} (it has {available}); pick one with {option}"
                            + (f", or {skip}" if skip else ""))
        return ValSplit(requested, explicit=True)
    if "val" in config.splits:
        return ValSplit("val")
    if train_split is None:
        raise DataError(f"{where} has no 'val' split (it has "
                        f"{available}); name the split to score with {option} SPLIT (one the calibration did not "
                        "use), or add a val split to the YAML")
    return ValSplit("val", carve=True, source=train_split)


def carve(ids: Sequence[str], fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """``(kept, carved)``: a seeded ``fraction`` of ``ids`` (at least 1, at most all but 1) taken out.
    Both come back in the order of ``ids``."""
    n = len(ids)
    count = min(max(1, int(fraction * n + 0.5)), max(0, n - 1))
    chosen = set(seeded_shuffle(sorted(set(ids)), seed)[:count])
    return [i for i in ids if i not in chosen], [i for i in ids if i in chosen]
