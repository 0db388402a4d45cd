"""``TrainConfig``: everything one ``edge train`` run needs, validated, and stored in its checkpoints.

All fields are plain Python values (str/int/float/bool/None, lists, dicts of those), so the config
round-trips through ``to_dict``/``from_dict`` and sits in a ``torch.load(weights_only=True)`` checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from edge.errors import EdgeError

ARCHS = ("ssd", "yolov2", "yolov3", "yolov3-tiny", "retinanet")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
AUGMENTS = ("auto", "ssd", "light", "flip", "none")
BEST_METRICS = ("map50", "map50_95")

#: learning rate used when ``lr`` is None, per optimizer.
DEFAULT_LR = {"sgd": 0.01, "adamw": 0.001}
#: weight decay used when ``weight_decay`` is None, per optimizer (AdamW's is decoupled, hence larger).
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}

#: fields a resumed run takes from the command line instead of the checkpoint (they change where and how
#: fast the run goes, not what it computes).
RUNTIME_FIELDS = ("out", "device", "workers", "threads", "cache_images", "resume", "rank_hash_dir", "save_period")


@dataclass
class TrainConfig:
    """Settings of one training run.

    Attributes (the ``edge train`` flags of the same names):
        model: architecture, one of ``ARCHS``. data: dataset YAML path. imgsz: square input side (pixels).
        epochs: total epochs. out: output folder (last.pt, best.pt, history.csv, history.png).
        batch: images per step *per process*. lr: peak learning rate (None: ``DEFAULT_LR[optimizer]``).
        optimizer: ``sgd`` (momentum, nesterov) or ``adamw``. weight_decay (None: per optimizer,
            ``DEFAULT_WEIGHT_DECAY``) applies to conv/linear weights only (not biases or norm parameters).
        schedule: ``cosine`` (to ``lr * final_lr_factor``) or ``step`` (x ``step_gamma`` at the
            ``step_milestones`` fractions of training), after a linear warm-up over ``warmup_epochs``
            from ``lr * warmup_start_factor``.
        ema: keep an exponential moving average of the weights (evaluated and saved in best.pt);
            decay ramps as ``ema_decay * (1 - exp(-updates / ema_tau))``.
        train_split / val_split: dataset splits (val_split None: ``val`` if the YAML has it, else a seeded
            10% carved out of the training split, see ``edge.data.splits.resolve_val_split``; never ``test``
            unless named; "none" disables evaluation). eval_every: evaluate every K epochs (and after the last).
        precise_bn: before each evaluation (and its checkpoint), recompute BatchNorm statistics of the
            evaluated weights on this many letterboxed training images (0: off); see
            ``edge.train.validate.recompute_batchnorm``.
        model_args: extra ``build_model`` keyword arguments (backbone, width, anchors, ...).
        augment: ``auto`` (ssd for SSD, light for the others) or a preset of ``edge.data.transforms``.
        multiscale: YOLOv2 multi-scale training (None: on for yolov2 only); sizes imgsz +- 32 *
            ``multiscale_steps``, redrawn every ``multiscale_interval`` batches.
        cache_images: ``auto`` (decode all images once into memory when they fit in ``cache_max_gb``),
            ``on`` or ``off``. workers: DataLoader worker processes (0: load in the training process).
        threads: torch intra-op threads per process (0: this process's CPU share).
        seed: seeds model init and augmentation (per sample from (seed, epoch, index)).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        grad_clip: max gradient norm (0: off). save_period: also keep epoch<N>.pt every N epochs (0: off).
        score_threshold / iou_threshold / max_detections: postprocessing for validation mAP.
        best_metric: which validation figure picks best.pt.
        limit: train on the first N images of the split only (0: all; smoke tests).
        pretrained: start the backbone from torchvision's ImageNet weights (``edge.models.pretrained``).
        backbone_weights: start the backbone from this state dict file instead (torchvision's or edge's keys).
        freeze_backbone: keep the backbone frozen (no gradients, BatchNorm in eval mode) for the first N
            epochs, then train everything (0: never frozen).
        strict: stop when an image of the training or validation split is missing, empty or does not decode
            (default: every image is decoded once when the splits load; such images are skipped, counted and
            named in a warning).
        resume: checkpoint to resume from (set by ``--resume``).
        rank_hash_dir: debug; every process writes the sha256 of its final weights there.
        recipe: the family recipe that filled in defaults, ``{"name", "applied": {field: value}}``
            (set by ``edge.train.recipes.config_from_flags``; None: none was applied).
    """

    model: str
    data: str
    imgsz: int = 320
    epochs: int = 50
    out: str = "runs/train"
    batch: int = 16
    lr: Optional[float] = None
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: Optional[float] = None
    schedule: str = "cosine"
    final_lr_factor: float = 0.01
    step_milestones: List[float] = field(default_factory=lambda: [0.67, 0.9])
    step_gamma: float = 0.1
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.01
    ema: bool = False
    ema_decay: float = 0.999
    ema_tau: float = 200.0
    train_split: str = "train"
    val_split: Optional[str] = None
    eval_every: int = 1
    precise_bn: int = 64
    model_args: Dict[str, Any] = field(default_factory=dict)
    augment: str = "auto"
    multiscale: Optional[bool] = None
    multiscale_steps: int = 2
    multiscale_interval: int = 10
    cache_images: str = "auto"
    cache_max_gb: float = 4.0
    workers: int = 0
    threads: int = 0
    seed: int = 0
    device: str = "cpu"
    grad_clip: float = 10.0
    save_period: int = 0
    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    max_detections: int = 100
    best_metric: str = "map50"
    limit: int = 0
    strict: bool = False
    pretrained: bool = False
    backbone_weights: Optional[str] = None
    freeze_backbone: int = 0
    resume: Optional[str] = None
    rank_hash_dir: Optional[str] = None
    recipe: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------------------------------------------
    @property
    def peak_lr(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def decay(self) -> float:
        return float(self.weight_decay) if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY[self.optimizer]

    @property
    def augment_preset(self) -> str:
        if self.augment != "auto":
            return self.augment
        return "ssd" if self.model == "ssd" else "light"

    @property
    def use_multiscale(self) -> bool:
        return bool(self.multiscale) if self.multiscale is not None else self.model == "yolov2"

    def validate(self) -> "TrainConfig":
        """Raise EdgeError naming the first bad field, what it holds and what is expected."""

        def bad(name: str, expected: str) -> None:
            raise EdgeError(f"training option {name} = {getattr(self, name)!r}: expected {expected}")

        if self.model not in ARCHS:
            bad("model", f"one of {', '.join(ARCHS)}")
        if not self.data:
            bad("data", "a dataset YAML path")
        if not isinstance(self.imgsz, int) or self.imgsz < 32:
            bad("imgsz", "an integer input size >= 32")
        if self.model.startswith("yolo") and self.imgsz % 32:
            bad("imgsz", f"a multiple of 32 for {self.model} (its output stride), e.g. {self.imgsz // 32 * 32 or 32}")
        if self.epochs < 1:
            bad("epochs", "an integer >= 1")
        if self.batch < 1:
            bad("batch", "an integer >= 1")
        if self.lr is not None and not self.lr > 0:
            bad("lr", "a positive learning rate")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"one of {', '.join(OPTIMIZERS)}")
        if not 0 <= self.momentum < 1:
            bad("momentum", "a value in [0, 1)")
        if self.weight_decay is not None and self.weight_decay < 0:
            bad("weight_decay", ">= 0")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"one of {', '.join(SCHEDULES)}")
        if not 0 <= self.final_lr_factor <= 1:
            bad("final_lr_factor", "a value in [0, 1]")
        if any(not 0 < m <= 1 for m in self.step_milestones) or list(self.step_milestones) != sorted(
            self.step_milestones
        ):
            bad("step_milestones", "increasing fractions of training in (0, 1]")
        if not 0 < self.step_gamma <= 1:
            bad("step_gamma", "a factor in (0, 1]")
        if self.warmup_epochs < 0:
            bad("warmup_epochs", ">= 0")
        if not 0 < self.warmup_start_factor <= 1:
            bad("warmup_start_factor", "a factor in (0, 1]")
        if not 0 < self.ema_decay < 1:
            bad("ema_decay", "a value in (0, 1)")
        if not self.ema_tau > 0:
            bad("ema_tau", "> 0")
        if self.precise_bn < 0:
            bad("precise_bn", ">= 0 images (0: off)")
        if self.eval_every < 0:
            bad("eval_every", ">= 0 (0: evaluate after the last epoch only)")
        if self.augment not in AUGMENTS:
            bad("augment", f"one of {', '.join(AUGMENTS)}")
        if self.use_multiscale and self.imgsz % 32:
            bad("imgsz", "a multiple of 32 with multi-scale training")
        if self.multiscale_steps < 0 or self.multiscale_interval < 1:
            bad("multiscale_interval", ">= 1 (and multiscale_steps >= 0)")
        if self.cache_images not in ("auto", "on", "off"):
            bad("cache_images", "auto, on or off")
        if self.workers < 0:
            bad("workers", ">= 0")
        if self.threads < 0:
            bad("threads", ">= 0 (0: automatic)")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            bad("device", "cpu, cuda or cuda:N")
        if self.grad_clip < 0:
            bad("grad_clip", ">= 0 (0: off)")
        if self.save_period < 0:
            bad("save_period", ">= 0")
        if not 0 <= self.score_threshold < 1:
            bad("score_threshold", "a value in [0, 1)")
        if not 0 <= self.iou_threshold <= 1:
            bad("iou_threshold", "a value in [0, 1]")
        if self.max_detections < 1:
            bad("max_detections", ">= 1")
        if self.best_metric not in BEST_METRICS:
            bad("best_metric", f"one of {', '.join(BEST_METRICS)}")
        if self.limit < 0:
            bad("limit", ">= 0 (0: all images)")
        if not isinstance(self.model_args, dict):
            bad("model_args", "a dict of build_model keyword arguments")
        self._validate_backbone(bad)
        if self.recipe is not None and not isinstance(self.recipe, dict):
            bad("recipe", "None or a dict with the recipe's name and the values it applied")
        return self

    def _validate_backbone(self, bad: Any) -> None:
        if not isinstance(self.pretrained, bool):
            bad("pretrained", "true or false")
        if self.backbone_weights is not None and (not isinstance(self.backbone_weights, str) or not self.backbone_weights):
            bad("backbone_weights", "the path of a state dict file (.pth)")
        if self.pretrained and self.backbone_weights:
            bad("backbone_weights", "no file together with --pretrained: give one source of backbone weights")
        if self.backbone_weights and not self.resume and not os.path.isfile(self.backbone_weights):
            bad("backbone_weights", "an existing state dict file (.pth); check the path")
        if not isinstance(self.freeze_backbone, int) or self.freeze_backbone < 0:
            bad("freeze_backbone", "an integer >= 0 epochs (0: never frozen)")
        if self.freeze_backbone and not (self.pretrained or self.backbone_weights):
            bad("freeze_backbone", "0 when the backbone starts from random weights: freezing them trains nothing "
                                   "useful; add --pretrained or --backbone-weights FILE.pth")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        """Inverse of ``to_dict``; unknown keys (from a newer edge) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
