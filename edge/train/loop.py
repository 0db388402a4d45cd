"""The training loop behind ``edge train``: data, model, optimizer, schedule, EMA, DDP, eval, checkpoints.

One process (``edge train ...``) or several (``torchrun --nproc_per_node N --no-python edge train ...``):
every process trains on its ``DistributedSampler`` share with the same per-process batch, DDP averages
the gradients, and rank 0 alone evaluates, logs progress and writes files.

Inputs to the model: RGB float32 [B, 3, S, S], letterboxed (pad 114) and normalized per the model's
``Normalization``; targets: ``Target`` boxes xyxy in input pixels.

Per epoch (rank 0): ``OUT/last.pt`` (full, resumable), ``OUT/best.pt`` (deploy: card + weights, picked by
validation ``best_metric``), ``OUT/history.csv`` and ``OUT/history.png``; with ``save_period`` also
``OUT/epoch<N>.pt``.

The splits, caches and DataLoader come from ``edge.train.data``; the validation pass (precise BN, mAP)
from ``edge.train.validate``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from edge.data.targets import Target
from edge.errors import EdgeError
from edge.train.backbone import BackboneFreeze, check_pretrained, initial_backbone_weights
from edge.train.checkpoint import (
    build_card,
    dataset_hash,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from edge.train.config import RUNTIME_FIELDS, TrainConfig
from edge.train.data import (
    Prefetcher,
    available_cpus,
    image_caches,
    load_splits,
    train_datasets,
    train_loader,
    write_split_files,
)
from edge.train.distributed import (
    DistContext,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    cleanup,
    init_distributed,
    state_hashes,
)
from edge.train.ema import ModelEMA
from edge.train.history import History
from edge.train.predict import normalize_batch
from edge.train.progress import Progress, format_duration
from edge.train.recipes import resolve_model_args
from edge.train.schedule import LRSchedule
from edge.train.validate import metric_columns, precise_bn, validate

log = logging.getLogger(__name__)

#: consecutive non-finite steps (NaN/inf loss or gradients) tolerated before the run stops.
MAX_NONFINITE_STEPS = 10


@dataclass
class TrainResult:
    """What a finished run produced (paths on rank 0; other ranks get the same figures)."""

    out: Path
    last: Path
    best: Path
    epochs: int
    metrics: Dict[str, Any] = field(default_factory=dict)
    best_metrics: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    world_size: int = 1
    backbone_weights: Optional[Dict[str, Any]] = None


# ----------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume, when ``config.resume`` is set) one training run; see the module docstring."""
    config.validate()
    ctx = init_distributed(config.device)
    try:
        return _Trainer(config, ctx).run()
    finally:
        cleanup(ctx)


def config_for_resume(checkpoint: str, **overrides: Any) -> TrainConfig:
    """The config a resumed run uses: the checkpoint's own, with ``overrides`` applied.

    Overrides of ``RUNTIME_FIELDS`` (out, device, workers, ...) and ``epochs`` are expected; changing
    anything else (lr, batch, model args, ...) changes what is computed, so it is applied with a warning.
    Without an ``out`` override the run continues in the checkpoint's folder.
    """
    data = read_checkpoint(_resume_path(checkpoint))
    if "train_config" not in data or "optimizer" not in data:
        raise EdgeError(
            f"{checkpoint} is a deploy checkpoint (weights and card only, like best.pt); resume from the "
            "run's last.pt (or pass the run folder)"
        )
    saved = TrainConfig.from_dict(data["train_config"])
    changes = {k: v for k, v in overrides.items() if v is not None}
    for key, value in changes.items():
        if key not in RUNTIME_FIELDS and key != "epochs" and getattr(saved, key, value) != value:
            log.warning("resuming with %s = %r instead of the checkpoint's %r", key, value, getattr(saved, key))
    if "epochs" in changes and changes["epochs"] != saved.epochs:
        log.warning(
            "resuming with epochs = %d instead of %d: the learning-rate schedule is stretched to the new length",
            changes["epochs"],
            saved.epochs,
        )
    if "out" not in changes:
        # the run folder is where the checkpoint is now (it may have moved since it was written)
        changes["out"] = str(_resume_path(checkpoint).resolve().parent)
    changes["resume"] = str(checkpoint)
    return saved.replace(**changes)


def _resume_path(path: str) -> Path:
    p = Path(path)
    return p / "last.pt" if p.is_dir() else p


# ----------------------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------------------


class _LossModule(nn.Module):
    """images, targets -> (total loss, terms): the training step as one ``forward`` for DDP to wrap."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, targets: List[Target]) -> Tuple[torch.Tensor, Dict[str, float]]:
        losses = self.detector.compute_loss(self.detector.forward_raw(images), targets)
        return losses.total, dict(losses.terms)


class _Trainer:
    def __init__(self, config: TrainConfig, ctx: DistContext):
        self.cfg = config
        self.ctx = ctx
        self.main = ctx.is_main
        self.device = torch.device(ctx.device)
        self.out = Path(config.out)
        self.resume_data: Optional[Dict[str, Any]] = None
        if config.resume:
            self.resume_data = read_checkpoint(_resume_path(config.resume))
            if "optimizer" not in self.resume_data:
                raise EdgeError(
                    f"{config.resume} is a deploy checkpoint (no optimizer state); resume from the run's last.pt"
                )
            self._warn_config_drift(TrainConfig.from_dict(self.resume_data.get("train_config", {}) or {}))

        threads = config.threads or max(1, available_cpus() // ctx.world_size)
        torch.set_num_threads(threads)
        try:
            import cv2

            cv2.setNumThreads(1)
        except ImportError:  # pragma: no cover
            pass
        torch.set_flush_denormal(True)  # denormal floats are very slow on x86 CPUs; no effect on results here
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        if self.main:  # OUT is created by the first checkpoint write (nothing is left behind on a bad start)
            log.info(
                "training %s on %s (%s), %d process(es) x %d torch threads, batch %d per process",
                config.model, config.data, ctx.device, ctx.world_size, threads, config.batch,
            )

        if self.resume_data is None:
            check_pretrained(config)  # before the data: a refusal should not wait for it
        self._load_data()
        self._build_model()
        self._build_optimization()
        self.history = History()
        self.start_epoch = 0
        self.nonfinite = 0  # consecutive skipped steps, across epochs
        self.best_fitness = -math.inf
        self.best_metrics: Dict[str, Any] = {}
        self.last_metrics: Dict[str, Any] = {}
        if self.resume_data is not None:
            self._restore(self.resume_data)
            self.resume_data = None  # free the memory

    # -- setup ---------------------------------------------------------------------------------------

    def _warn_config_drift(self, saved: TrainConfig) -> None:
        for key in ("model", "data", "imgsz", "batch", "lr", "optimizer", "schedule", "train_split", "seed"):
            if getattr(saved, key) != getattr(self.cfg, key):
                log.warning(
                    "resume: %s is %r here but %r in the checkpoint's run; the run will not continue the same way",
                    key, getattr(self.cfg, key), getattr(saved, key),
                )

    def _load_data(self) -> None:
        cfg = self.cfg
        self.train_ds, self.val_split, self.val_ds, self.derived_splits = load_splits(cfg, self.main)
        self.class_names = list(self.train_ds.class_names)
        records = self.train_ds.records
        self.train_cache, self.val_cache = image_caches(cfg, records, self.val_ds, self.main)
        self.sizes, self.dataset, self.plain_dataset = train_datasets(cfg, records, self.train_cache)
        self.sampler, self.loader = train_loader(cfg, self.dataset, len(records), self.sizes, self.ctx, self.device)
        if self.main:
            log.info(
                "train: %d images (%s), %d steps/epoch of %d x %d processes, augment %s, input %s",
                len(records), cfg.train_split, len(self.sampler), cfg.batch, self.ctx.world_size,
                cfg.augment_preset, "/".join(str(s) for s in self.sizes),
            )

    def _build_model(self) -> None:
        from edge.models import build_model

        # anchors=auto -> k-means anchors of the training split, kept in the config (last.pt) and the card
        args, self.anchor_stats = resolve_model_args(self.cfg, self.train_ds)
        self.cfg = cfg = self.cfg.replace(model_args=args)
        for reserved in ("num_classes", "input_size"):
            if reserved in args:
                raise EdgeError(
                    f"--model-arg {reserved}=... is set by edge train itself (from the dataset's classes and "
                    "--imgsz); remove it"
                )
        try:
            self.model = build_model(
                cfg.model, num_classes=len(self.class_names), input_size=(cfg.imgsz, cfg.imgsz), **args
            )
        except TypeError as exc:
            raise EdgeError(f"cannot build {cfg.model} with model args {args}: {exc}; check the --model-arg names") from None
        except ValueError as exc:
            raise EdgeError(f"cannot build {cfg.model} with model args {args}: {exc}") from None
        # a resumed run keeps the checkpoint's weights (and the card's record of where the backbone came from)
        self.backbone_weights = (initial_backbone_weights(cfg, self.model) if self.resume_data is None
                                 else (self.resume_data.get("card") or {}).get("backbone_weights"))
        self.freeze = BackboneFreeze(self.model, cfg.freeze_backbone, enabled=self.main)
        self.model.to(self.device)
        n_params = sum(p.numel() for p in self.model.parameters())
        if self.main:
            log.info("model %s %s: %.2f M parameters", cfg.model, self.model.config, n_params / 1e6)
        self.step_module: nn.Module = _LossModule(self.model)
        if self.ctx.distributed:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.freeze_backbone > 0,  # a frozen backbone's parameters get no gradients
            )
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None

    def _build_optimization(self) -> None:
        cfg = self.cfg
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": cfg.decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        lr = cfg.peak_lr
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=(cfg.momentum, 0.999))
        self.steps_per_epoch = len(self.sampler)
        self.schedule = LRSchedule(
            base_lr=lr,
            total_iters=cfg.epochs * self.steps_per_epoch,
            warmup_iters=int(round(cfg.warmup_epochs * self.steps_per_epoch)),
            warmup_start_factor=cfg.warmup_start_factor,
            kind=cfg.schedule,
            final_factor=cfg.final_lr_factor,
            milestones=list(cfg.step_milestones),
            gamma=cfg.step_gamma,
        )

    def _restore(self, data: Dict[str, Any]) -> None:
        card = data["card"]
        if card.get("arch") != self.cfg.model or list(card.get("class_names", [])) != self.class_names:
            raise EdgeError(
                f"cannot resume from {self.cfg.resume}: it trained {card.get('arch')} on classes "
                f"{card.get('class_names')}, this run is {self.cfg.model} on {self.class_names}"
            )
        self.model.load_state_dict(data.get("train_model", data["model"]))
        self.optimizer.load_state_dict(data["optimizer"])
        self.schedule.load_state_dict(data["scheduler"])
        if self.ema is not None:
            if data.get("ema"):
                self.ema.module.load_state_dict(data["model"])
                self.ema.updates = int(data["ema"]["updates"])
            else:
                log.warning("resume: the checkpoint has no EMA state; EMA starts from the current weights")
        self.start_epoch = int(data["epoch"])
        self.anchor_stats = (card.get("training") or {}).get("anchors")  # anchors came from the config
        self.history = History(data.get("history", []))
        self.best_fitness = float(data.get("best_fitness", -math.inf))
        self.best_metrics = dict(data.get("best_metrics", {}) or {})
        self.last_metrics = dict(card.get("metrics", {}) or {})
        set_rng_state(data["rng"])
        if self.main:
            log.info("resumed from %s after epoch %d (iteration %d)", self.cfg.resume, self.start_epoch,
                     self.schedule.iteration)

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        if self.start_epoch >= cfg.epochs and self.main:
            log.warning("nothing to do: the checkpoint already finished %d of %d epochs", self.start_epoch, cfg.epochs)
        for epoch in range(self.start_epoch, cfg.epochs):
            row = self._train_epoch(epoch)
            evaluate = self.val_ds is not None and (
                epoch + 1 == cfg.epochs or (cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0)
            )
            if self.main:
                if cfg.precise_bn and (evaluate or self.val_ds is None):
                    self._precise_bn()
                if evaluate:
                    metrics = self._evaluate(epoch)
                    row.update(metric_columns(metrics))
                    self.last_metrics = metrics
                self.history.add(row)
                self._save(epoch, evaluated=evaluate)
                self._log_epoch(row)
            barrier(self.ctx)

        if self.ctx.distributed:
            broadcast_buffers(self.model, self.ctx)
        if cfg.rank_hash_dir:
            from edge.artifacts import atomic_write_json

            hashes = state_hashes(self.model)
            hashes.update({"rank": self.ctx.rank, "world_size": self.ctx.world_size,
                           "iteration": self.schedule.iteration})
            atomic_write_json(Path(cfg.rank_hash_dir) / f"rank{self.ctx.rank}.json", hashes, what="--rank-hash-dir")
        wall = time.perf_counter() - t0
        if self.main:
            log.info("done: %d epochs in %s; %s", cfg.epochs, format_duration(wall), self.out)
        return TrainResult(
            out=self.out,
            last=self.out / "last.pt",
            best=self.out / "best.pt",
            epochs=cfg.epochs,
            metrics=self.last_metrics,
            best_metrics=self.best_metrics,
            history=self.history.to_state(),
            wall_s=wall,
            world_size=self.ctx.world_size,
            backbone_weights=self.backbone_weights,
        )

    def _train_epoch(self, epoch: int) -> Dict[str, Any]:
        cfg = self.cfg
        self.model.train()
        self.freeze.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        steps_left_after = (cfg.epochs - epoch - 1) * self.steps_per_epoch
        bar = Progress(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", enabled=self.main,
                       extra_eta_iters=steps_left_after)
        t0 = time.perf_counter()
        skipped = 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.schedule.apply(self.optimizer)
        batches = iter(self.loader)
        if self.cfg.workers == 0:
            batches = iter(Prefetcher(batches))
        data_wait = 0.0
        t_ready = time.perf_counter()
        for images, targets, _ in batches:
            data_wait += time.perf_counter() - t_ready
            lr = self.schedule.apply(self.optimizer)
            images = images.to(self.device, non_blocking=True)
            targets = [Target(t.boxes.to(self.device), t.labels.to(self.device)) for t in targets]
            x = normalize_batch(images, self.model.normalization)
            total, terms = self.step_module(x, targets)
            total.backward()
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            # the gradient norm is the same on every rank (gradients are all-reduced), so all ranks skip
            # together; a single process also skips on a non-finite loss
            bad = not math.isfinite(grad_norm) or (
                not self.ctx.distributed and not math.isfinite(float(total.detach()))
            )
            if bad:
                self.optimizer.zero_grad(set_to_none=True)
                self.nonfinite += 1
                skipped += 1
                if self.nonfinite > MAX_NONFINITE_STEPS:
                    raise EdgeError(
                        f"training diverged: {self.nonfinite} consecutive steps with NaN/inf loss or gradients at "
                        f"epoch {epoch + 1} (lr {lr:.3g}); lower --lr, raise --warmup-epochs, or check the data"
                    )
            else:
                self.nonfinite = 0
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.model)
            self.schedule.step()
            bar.update({"loss": float(total.detach()), **{k: float(v) for k, v in terms.items()}})
            t_ready = time.perf_counter()
        means = bar.close()
        if skipped and self.main:
            log.warning("epoch %d: skipped %d step(s) with non-finite loss or gradients", epoch + 1, skipped)
        means = all_reduce_mean(means, self.ctx)
        row: Dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "time_s": round(time.perf_counter() - t0, 3),
                               "data_wait_s": round(data_wait, 3)}
        row["loss"] = means.pop("loss", float("nan"))
        # loss terms become loss_<name>; statistics a model logs beside them (num_pos, ...) keep their name
        for key in sorted(means, key=lambda k: (k.startswith("num_"), k)):
            row[key if key.startswith("num_") else f"loss_{key}"] = means[key]
        return row

    def _precise_bn(self) -> None:
        """``edge.train.validate.precise_bn`` on the evaluated model over ``cfg.precise_bn`` training images."""
        precise_bn(self._eval_model(), self.plain_dataset, len(self.train_ds.records), self.cfg.precise_bn,
                   self.cfg.batch, self.device, keep=self.freeze.kept(self._eval_model()))

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _evaluate(self, epoch: int) -> Dict[str, Any]:
        weights = "ema" if self.ema is not None else "model"
        return validate(self._eval_model(), self.val_ds, self.val_cache, self.cfg, self.device, self.val_split,
                        epoch, weights)

    def _card(self, epochs: int, metrics: Dict[str, Any]) -> Dict[str, Any]:
        cfg = self.cfg
        return build_card(
            self.model,
            class_names=self.class_names,
            data={
                "name": self.train_ds.name,
                "yaml": str(cfg.data),
                "train_split": cfg.train_split,
                "val_split": self.val_split,
                "hash": self.train_hash,
                "num_images": len(self.train_ds.records),
                "split_files": self.derived_splits.record() if self.derived_splits is not None else None,
            },
            training={
                "imgsz": cfg.imgsz,
                "epochs": cfg.epochs,
                "batch": cfg.batch,
                "world_size": self.ctx.world_size,
                "optimizer": cfg.optimizer,
                "lr": cfg.peak_lr,
                "weight_decay": cfg.decay,
                "schedule": cfg.schedule,
                "warmup_epochs": cfg.warmup_epochs,
                "augment": cfg.augment_preset,
                "multiscale": list(self.sizes) if len(self.sizes) > 1 else None,
                "ema": cfg.ema,
                "precise_bn": cfg.precise_bn,
                "seed": cfg.seed,
                "device": self.ctx.device,
                "model_args": dict(cfg.model_args),
                "pretrained": cfg.pretrained,
                "backbone_weights": cfg.backbone_weights,
                "freeze_backbone": cfg.freeze_backbone,
                "recipe": cfg.recipe,
                "anchors": self.anchor_stats,
            },
            metrics=metrics,
            epochs=epochs,
            weights="ema" if self.ema is not None else "model",
            backbone_weights=self.backbone_weights,
        )

    @property
    def train_hash(self) -> str:
        if not hasattr(self, "_train_hash"):
            self._train_hash = dataset_hash(self.train_ds)
        return self._train_hash

    def _save(self, epoch: int, evaluated: bool) -> None:
        cfg = self.cfg
        done = epoch + 1
        deploy_state = self._eval_model().state_dict()
        card = self._card(done, self.last_metrics)
        full = {
            "card": card,
            "model": deploy_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "ema": {"updates": self.ema.updates, "decay": self.ema.decay, "tau": self.ema.tau} if self.ema else None,
            "epoch": done,
            "rng": rng_state(),
            "history": self.history.to_state(),
            "train_config": cfg.to_dict(),
        }
        if self.ema is not None:
            full["train_model"] = self.model.state_dict()
        improved = False
        if evaluated:
            fitness = self.last_metrics.get(cfg.best_metric)
            fitness = -math.inf if fitness is None else float(fitness)
            if fitness > self.best_fitness or not (self.out / "best.pt").exists():
                self.best_fitness = fitness
                self.best_metrics = dict(self.last_metrics)
                improved = True
        elif self.val_ds is None:
            improved = True  # no validation: best.pt follows the latest weights
        full["best_fitness"] = self.best_fitness if math.isfinite(self.best_fitness) else -1.0
        full["best_metrics"] = self.best_metrics
        if self.derived_splits is not None and epoch == self.start_epoch:  # the splits made, beside the run
            write_split_files(self.out, self.derived_splits)
        save_checkpoint(self.out / "last.pt", full)
        if improved:
            save_checkpoint(self.out / "best.pt", {"card": self._card(done, self.best_metrics), "model": deploy_state})
        if cfg.save_period and done % cfg.save_period == 0:
            save_checkpoint(self.out / f"epoch{done}.pt", full)
        self.history.write_csv(self.out / "history.csv")
        try:
            self.history.plot(self.out / "history.png", title=f"{cfg.model} on {self.train_ds.name}",
                              split=self.val_split)
        except EdgeError as exc:  # matplotlib missing: the CSV is still there
            if epoch == self.start_epoch:
                log.warning("no history plot: %s", exc)

    def _log_epoch(self, row: Dict[str, Any]) -> None:
        terms = ", ".join(f"{k[5:]} {v:.4f}" for k, v in row.items() if k.startswith("loss_"))
        text = f"epoch {row['epoch']}/{self.cfg.epochs}: loss {row['loss']:.4f}"
        if terms:
            text += f" ({terms})"
        text += f", lr {row['lr']:.3g}, {row['time_s']:.1f} s (waiting for data {row['data_wait_s']:.1f} s)"
        if row.get("map50") is not None:
            text += f" | {self.val_split} mAP50 {row['map50']:.4f} mAP50-95 {row.get('map50_95') or 0.0:.4f}"
        log.info("%s", text)
