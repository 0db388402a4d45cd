"""Per-family default recipes: what ``edge train --model NAME --data D.yaml`` uses where no flag is given.

One typed table (``RECIPES``) gives each detector family its input size, epochs, batch, optimizer and
schedule, EMA, augmentation, model arguments (width, variant, ...), loss options and anchors. The
command line always wins: ``config_from_flags`` fills in only what the user left out, and
``--recipe none`` turns the table off (plain ``TrainConfig`` defaults). The recipe's name and the values it
supplied are stored in ``TrainConfig.recipe``, hence in ``last.pt``'s config and the model card's
``training.recipe``; a resumed run keeps its stored config and never re-applies a recipe.

Anchors ``"auto"`` (the YOLO families): k-means (1 - IoU) anchors on the training split at the start of
training, with ``edge anchors``'s code (``edge.models.kmeans_anchors.anchors_for_dataset``, seeded by
``--seed``, rounded as ``edge anchors --out`` writes them), unless ``--model-arg anchors=...`` is given.
``resolve_model_args`` replaces ``"auto"`` with the computed list, so the checkpoint's config and card hold
the anchors that export and eval rebuild the model with. ``--model-arg anchors=auto`` asks for the same
with ``--recipe none``.

The figures behind each recipe (BCCD, from scratch, 2 shared CPU cores) are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

from edge.errors import EdgeError
from edge.train.config import ARCHS, AUGMENTS, OPTIMIZERS, SCHEDULES, TrainConfig

log = logging.getLogger(__name__)

#: ``--model-arg anchors=auto``: k-means anchors computed on the training split when training starts.
AUTO = "auto"
#: number of k-means anchors per anchor-based YOLO family (as the papers: 5, 9 and 6).
AUTO_ANCHOR_K = {"yolov2": 5, "yolov3": 9, "yolov3-tiny": 6}
#: ``--recipe`` values besides a family name: the model's own recipe, or none (plain TrainConfig defaults).
RECIPE_CHOICES = ("auto", "none") + ARCHS


@dataclass(frozen=True)
class Recipe:
    """One family's defaults. Fields named like ``TrainConfig``'s fill those fields; ``model_args`` and
    ``loss`` (``model_args["loss"]``) are merged under the user's ``--model-arg`` values; ``anchors``
    "auto" asks for k-means anchors (``AUTO_ANCHOR_K``) unless ``anchors`` is given.

    Attributes:
        name: recorded in the card (family and revision, e.g. "retinanet/v1").
        imgsz, epochs, batch, optimizer, lr (None: the optimizer's default), schedule, warmup_epochs, ema,
            augment, multiscale (None: the family's default): as ``TrainConfig``.
        model_args: build_model keyword arguments. loss: YOLO/SSD/RetinaNet loss options, if any.
        anchors: "auto" or None (the family's own anchors / default boxes).
        measured: where the recipe's figure comes from (a section of benchmarks/RESULTS.md).
    """

    name: str
    family: str
    imgsz: int
    epochs: int
    batch: int = 16
    optimizer: str = "adamw"
    lr: Optional[float] = None
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    ema: bool = True
    augment: str = "light"
    multiscale: Optional[bool] = None
    model_args: Dict[str, Any] = field(default_factory=dict)
    loss: Dict[str, Any] = field(default_factory=dict)
    anchors: Optional[str] = None
    measured: str = ""

    def validate(self) -> "Recipe":
        if self.family not in ARCHS:
            raise EdgeError(f"recipe {self.name}: family {self.family!r}, expected one of {', '.join(ARCHS)}")
        if self.anchors not in (None, AUTO) or (self.anchors == AUTO and self.family not in AUTO_ANCHOR_K):
            raise EdgeError(f"recipe {self.name}: anchors {self.anchors!r}; 'auto' only for {sorted(AUTO_ANCHOR_K)}")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES or self.augment not in AUGMENTS:
            raise EdgeError(f"recipe {self.name}: optimizer/schedule/augment {self.optimizer}/{self.schedule}/"
                            f"{self.augment} not among {OPTIMIZERS}/{SCHEDULES}/{AUGMENTS}")
        # the TrainConfig checks (imgsz multiple of 32 for YOLO, epochs >= 1, ...)
        TrainConfig(model=self.family, data="-", **self.train_values()).validate()
        return self

    def train_values(self) -> Dict[str, Any]:
        """The ``TrainConfig`` fields this recipe sets (``multiscale`` and ``lr`` only when not None)."""
        values = {k: getattr(self, k) for k in ("imgsz", "epochs", "batch", "optimizer", "schedule",
                                                "warmup_epochs", "ema", "augment")}
        for key in ("lr", "multiscale"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        return values

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


RECIPES: Dict[str, Recipe] = {
    r.family: r.validate()
    for r in (
        # the bundled model's recipe (edge/assets/bccd_yolov3-tiny_320.pt, test mAP50 0.838 on BCCD)
        Recipe(name="yolov3-tiny/v1", family="yolov3-tiny", imgsz=320, epochs=60, batch=16,
               model_args={"width": 0.5}, anchors=AUTO,
               measured="RESULTS.md, Training on BCCD: default recipes"),
        # Darknet-53 x0.25, depth 0.34 at 256 px, 30 epochs: test mAP50 0.851 on BCCD
        Recipe(name="yolov3/v1", family="yolov3", imgsz=256, epochs=30, batch=16,
               model_args={"width": 0.25, "depth": 0.34}, anchors=AUTO,
               measured="RESULTS.md, Training on BCCD: default recipes"),
        # stride 32 only: 352 px puts BCCD's platelets (~39 px of 640) at ~22 px in 11 x 11 cells (at 256 they
        # were ~16 px and never found); multi-scale training (on for yolov2) draws 288..416; platelets are
        # learned late (36 epochs: test mAP50 0.788, 44: 0.805)
        Recipe(name="yolov2/v1", family="yolov2", imgsz=352, epochs=44, batch=16,
               model_args={"width": 0.25}, anchors=AUTO,
               measured="RESULTS.md, Training on BCCD: default recipes"),
        # ResNet18 x0.5 + FPN 64; P3 anchors 16-25 px cover platelets (~20 px at 320)
        Recipe(name="retinanet/v1", family="retinanet", imgsz=320, epochs=40, batch=8,
               model_args={"variant": "small"},
               measured="RESULTS.md, Training on BCCD: default recipes"),
        # MobileNet x0.5; first map at stride 8 with 22-32 px default boxes (platelets ~20 px at 320).
        # Light augmentation: SSD's zoom-out/crop needs hundreds of epochs to pay off.
        Recipe(name="ssd/v1", family="ssd", imgsz=320, epochs=40, batch=8,
               model_args={"variant": "mobile"},
               measured="RESULTS.md, Training on BCCD: default recipes"),
    )
}


def recipe_summary(family: str) -> str:
    """One paragraph for ``edge train --model F --help-model``: what the family's recipe fills in."""
    r = RECIPES[family]
    values = ", ".join(f"{k} {v}" for k, v in r.train_values().items())
    args = dict(r.model_args, **({"anchors": "auto (k-means on the training split)"} if r.anchors else {}))
    margs = ", ".join(f"{k}={v}" for k, v in args.items()) or "none"
    return (f"default recipe {r.name} (what edge train fills in where you give no flag; --recipe none turns "
            f"it off): {values}; --model-arg {margs}")


def config_from_flags(given: Dict[str, Any], recipe: str = "auto") -> TrainConfig:
    """A new run's ``TrainConfig`` from the flags the user gave (``given``: field -> value, absent = not
    given) and the recipe (``auto``: the model's own, ``none``: none, or a family name).

    The user's values always win; ``model_args`` (and its ``loss`` dict) merge key by key. The recipe's
    name and every value it supplied are recorded in ``TrainConfig.recipe``.
    """
    if recipe not in RECIPE_CHOICES:
        raise EdgeError(f"--recipe {recipe!r}: expected one of {', '.join(RECIPE_CHOICES)}")
    given = dict(given)
    if recipe == "none":
        return TrainConfig(**given)
    r = RECIPES[given["model"] if recipe == "auto" else recipe]
    applied: Dict[str, Any] = {}
    for key, value in r.train_values().items():
        if key not in given:
            given[key] = applied[key] = value
    user_args = dict(given.get("model_args") or {})
    args = dict(user_args)
    for key, value in r.model_args.items():
        if key not in user_args:
            args[key] = value
            applied.setdefault("model_args", {})[key] = value
    if r.loss:
        loss = dict(r.loss)
        loss.update(user_args.get("loss") or {})
        args["loss"] = loss
        applied.setdefault("model_args", {})["loss"] = {k: v for k, v in r.loss.items()
                                                        if k not in (user_args.get("loss") or {})}
    if r.anchors == AUTO and "anchors" not in user_args:
        args["anchors"] = applied.setdefault("model_args", {})["anchors"] = AUTO
    if args:
        given["model_args"] = args
    config = TrainConfig(**given)
    config.recipe = {"name": r.name, "applied": applied}
    log.info("recipe %s: %s (your flags win; --recipe none for plain defaults)", r.name,
             ", ".join(f"{k}={v}" for k, v in applied.items()) or "nothing to fill in")
    return config


def resolve_model_args(config: TrainConfig, dataset: Any) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """``config.model_args`` with ``anchors="auto"`` replaced by k-means anchors of ``dataset`` (the
    training split) at ``config.imgsz``; returns (model args, anchor statistics or None)."""
    args = dict(config.model_args)
    if args.get("anchors") != AUTO:
        return args, None
    if config.model not in AUTO_ANCHOR_K:
        raise EdgeError(f"--model-arg anchors=auto: {config.model} has no k-means anchors (only "
                        f"{', '.join(sorted(AUTO_ANCHOR_K))}); remove it or set the family's own anchor options")
    from edge.models.kmeans_anchors import anchors_for_dataset

    k = AUTO_ANCHOR_K[config.model]
    applied = ((config.recipe or {}).get("applied") or {}).get("model_args") or {}
    try:
        result = anchors_for_dataset(dataset, k, (config.imgsz, config.imgsz), seed=config.seed)
    except EdgeError as exc:
        if applied.get("anchors") != AUTO:  # the user asked for anchors=auto: their request fails loudly
            raise
        # the recipe asked: a split too small for k-means still trains, on the family's own anchors
        log.warning("anchors: the recipe's k-means anchors need more boxes than %s has (%s); using %s's "
                    "default anchors", config.train_split, exc, config.model)
        del args["anchors"]
        return args, {"method": "the family's default anchors (too few boxes for k-means)", "k": k,
                      "split": config.train_split}
    summary = result.to_dict()  # rounded like `edge anchors --out`: what --model-arg anchors=@FILE reads
    args["anchors"] = summary["anchors"]
    stats = {"method": "k-means (1 - IoU), as `edge anchors`", "k": k, "split": config.train_split,
             "imgsz": config.imgsz, "seed": config.seed, "mean_iou": round(result.mean_iou, 4),
             "num_boxes": int(summary["num_boxes"])}
    log.info("anchors: k-means k=%d on %s (%d boxes) at %d px, mean IoU %.3f: %s", k, config.train_split,
             stats["num_boxes"], config.imgsz, result.mean_iou, summary["anchors"])
    return args, stats
