"""``edge train``: train a detector on a dataset YAML; checkpoints with a model card, history CSV/PNG.

    edge train --model retinanet --data data/bccd.yaml --out runs/retinanet   # the family's default recipe
    edge train --model ssd --data data/bccd.yaml --imgsz 256 --epochs 60 --out runs/ssd  # flags win
    edge train --resume runs/ssd                       # continue runs/ssd/last.pt where it stopped
    torchrun --nproc_per_node 2 --no-python edge train --model yolov3-tiny --data data/bccd.yaml ...

torch is imported only when the verb runs, so ``edge --help`` works where torch is absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List

from edge.errors import EdgeError, MissingDependencyError

HELP = "train a detector (SSD, YOLOv2/v3, RetinaNet) on a dataset YAML; writes checkpoints with a model card"

ARCHS = ("ssd", "yolov2", "yolov3", "yolov3-tiny", "retinanet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Every option defaults to None here: the defaults live in the family's recipe (edge.train.recipes) and
    # edge.train.config.TrainConfig, and a resumed run must tell what the user actually typed from what the
    # checkpoint says.
    p = parser
    p.add_argument("--model", choices=ARCHS, help="detector family")
    p.add_argument("--help-model", action="store_true",
                   help="list the --model-arg options of --model (all families without it) with defaults; exit")
    p.add_argument("--data", metavar="DATA.yaml", help="dataset YAML (e.g. data/bccd.yaml)")
    p.add_argument("--imgsz", type=int, metavar="S", help="square input size in pixels (default: the recipe's)")
    p.add_argument("--epochs", type=int, metavar="N", help="training epochs (default: the recipe's)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/train-MODEL)")
    p.add_argument("--exist-ok", action="store_true", help="train into an --out that already holds a run")
    p.add_argument("--recipe", default="auto", metavar="NAME",
                   help="defaults for every option not given: auto (the --model family's recipe, see the README's "
                        "recipes table), a family name, or none (plain defaults: 320 px, 50 epochs, no EMA)")
    p.add_argument("--batch", type=int, metavar="B", help="images per step per process (default: the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.001 adamw, 0.01 sgd)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help="optimizer (default adamw)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default 0.05 adamw, 5e-4 sgd)")
    p.add_argument("--schedule", choices=("cosine", "step"), help="learning-rate decay after warm-up (default cosine)")
    p.add_argument("--warmup-epochs", type=float, metavar="E", help="linear learning-rate warm-up (default 1)")
    ema = p.add_mutually_exclusive_group()
    ema.add_argument("--ema", action="store_true", default=None, help="keep an EMA of the weights (evaluated, saved)")
    ema.add_argument("--no-ema", dest="ema", action="store_false", help="no EMA (the recipes turn it on)")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes (default 0: in-process)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads per process (default: CPU share)")
    p.add_argument("--resume", nargs="?", const="", metavar="CKPT|DIR",
                   help="continue a run from CKPT, DIR/last.pt, or (no value) --out/last.pt")
    p.add_argument("--train-split", metavar="NAME", help="split to train on (default train)")
    p.add_argument("--val-split", metavar="NAME",
                   help="split for validation mAP, which picks best.pt (default: val, else a seeded 10%% of the "
                        "training split, written to OUT/splits; 'none' disables; 'test' warns)")
    p.add_argument("--eval-every", type=int, metavar="K", help="validate every K epochs and after the last (default 1)")
    p.add_argument("--precise-bn", type=int, metavar="N",
                   help="recompute BatchNorm statistics on N training images before each evaluation and "
                        "checkpoint (default 64; 0 off)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="build_model option, repeatable: backbone=resnet18, width=0.5, anchors=@anchors.json, "
                        "anchors=auto (k-means on the training split; the YOLO recipes' default) "
                        "(VALUE is JSON when it parses, @FILE reads JSON from FILE)")
    p.add_argument("--augment", choices=("auto", "ssd", "light", "flip", "none"),
                   help="augmentation preset (default: the recipe's, light; auto: ssd for SSD, light for the others)")
    ms = p.add_mutually_exclusive_group()
    ms.add_argument("--multiscale", dest="multiscale", action="store_true", default=None,
                    help="multi-scale training (default: on for yolov2 only)")
    ms.add_argument("--no-multiscale", dest="multiscale", action="store_false")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-images", dest="cache_images", action="store_const", const="on", default=None,
                       help="decode all images into memory once (default: when they fit in 4 GiB)")
    cache.add_argument("--no-cache-images", dest="cache_images", action="store_const", const="off")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", metavar="DEV", help="cpu (default), cuda or cuda:N")
    p.add_argument("--save-period", type=int, metavar="N", help="also keep OUT/epochN.pt every N epochs")
    p.add_argument("--limit", type=int, metavar="N", help="train on the first N images only (smoke tests)")
    p.add_argument("--strict", action="store_true", default=None,
                   help="stop when an image is missing, empty or does not decode (default: such images are "
                        "skipped, counted and named in a warning)")
    p.add_argument("--best-metric", choices=("map50", "map50_95"), help="validation figure that picks best.pt")
    p.add_argument("--rank-hash-dir", metavar="DIR",
                   help="debug: every process writes the sha256 of its final weights to DIR/rank<R>.json")
    _add_backbone_arguments(p)


def _add_backbone_arguments(p: argparse.ArgumentParser) -> None:
    """Where the backbone starts, and how long it stays frozen (edge.models.pretrained, edge.train.backbone)."""
    start = p.add_mutually_exclusive_group()
    start.add_argument("--pretrained", action="store_true", default=None,
                       help="start the backbone from torchvision's ImageNet weights (VGG16, ResNet18/34/50 at "
                            "width 1; downloaded into torch.hub's cache, or placed there by hand)")
    start.add_argument("--backbone-weights", metavar="FILE.pth",
                       help="start the backbone from this state dict (torchvision's or edge's key names); prints "
                            "what loaded, what was missing and what was unexpected")
    p.add_argument("--freeze-backbone", type=int, metavar="N",
                   help="keep the backbone frozen (no gradients, BatchNorm in eval mode) for the first N epochs")


def parse_model_args(items: List[str]) -> Dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> dict; VALUE as JSON if it parses, ``@FILE`` as JSON read from FILE (if
    FILE holds an object with KEY, its KEY entry: ``anchors=@anchors.json`` from ``edge anchors --out``)."""
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise EdgeError(f"--model-arg {item!r}: expected KEY=VALUE, e.g. backbone=resnet18 or width=0.5")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key.isidentifier():
            raise EdgeError(f"--model-arg {item!r}: {key!r} is not an option name")
        if text.startswith("@"):
            path = Path(text[1:])
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise EdgeError(f"--model-arg {key}: cannot read {path} ({exc.strerror})") from None
            except json.JSONDecodeError as exc:
                raise EdgeError(f"--model-arg {key}: {path} is not valid JSON ({exc})") from None
            if isinstance(value, dict) and key in value:
                value = value[key]
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
        out[key] = value
    return out


_FIELDS = {
    "model": "model", "data": "data", "imgsz": "imgsz", "epochs": "epochs", "out": "out", "batch": "batch",
    "lr": "lr", "optimizer": "optimizer", "weight_decay": "weight_decay", "schedule": "schedule",
    "warmup_epochs": "warmup_epochs", "ema": "ema", "workers": "workers", "threads": "threads",
    "train_split": "train_split", "val_split": "val_split", "eval_every": "eval_every", "augment": "augment",
    "multiscale": "multiscale", "cache_images": "cache_images", "seed": "seed", "device": "device",
    "save_period": "save_period", "limit": "limit", "best_metric": "best_metric", "rank_hash_dir": "rank_hash_dir",
    "precise_bn": "precise_bn", "strict": "strict",
    "pretrained": "pretrained", "backbone_weights": "backbone_weights", "freeze_backbone": "freeze_backbone",
}


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "torch", "edge train", "install the training extra: pip install 'edge-detect[train]'"
        ) from None
    if args.help_model:
        from edge.models import model_options_help

        print(model_options_help(args.model))
        if args.model:
            from edge.train.recipes import recipe_summary

            print(recipe_summary(args.model))
        return 0
    from edge.train.loop import config_for_resume, train
    from edge.train.recipes import config_from_flags

    given: Dict[str, Any] = {}
    for attr, name in _FIELDS.items():
        value = getattr(args, attr, None)
        if value is not None:
            given[name] = value
    if args.model_arg:
        given["model_args"] = parse_model_args(args.model_arg)

    if args.resume is not None:
        source = args.resume or given.get("out")
        if not source:
            raise EdgeError("--resume without a value continues --out DIR's last.pt: give --out, or --resume CKPT")
        config = config_for_resume(source, **given)
    else:
        missing = [flag for flag, key in (("--model", "model"), ("--data", "data")) if key not in given]
        if missing:
            raise EdgeError(f"edge train needs {' and '.join(missing)} (or --resume to continue a run)")
        given.setdefault("out", os.path.join("runs", f"train-{given['model']}"))
        config = config_from_flags(given, args.recipe)
        last = Path(config.out) / "last.pt"
        if last.exists() and not args.exist_ok:
            raise EdgeError(
                f"{last} exists: a run already lives in {config.out}. Continue it with --resume {config.out}, "
                "pick another --out, or pass --exist-ok to overwrite it"
            )
    config.validate()
    if int(os.environ.get("RANK", "0")) != 0:
        # torchrun: rank 0 reports progress; the other ranks log warnings and errors only
        logging.getLogger("edge").setLevel(logging.WARNING)
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        m = result.best_metrics or result.metrics
        print(f"trained {config.model} for {result.epochs} epochs in {result.wall_s:.0f} s "
              f"({result.world_size} process{'es' if result.world_size > 1 else ''})")
        if m.get("map50") is not None:
            print(f"best {m.get('split')} mAP50 {m['map50']:.4f}  mAP50-95 {m.get('map50_95') or 0.0:.4f}  "
                  f"(epoch {m.get('epoch')})")
            for name, v in (m.get("per_class") or {}).items():
                ap50 = v.get("ap50")
                ap = v.get("ap50_95")
                print(f"  {name:20s} AP50 {ap50 if ap50 is None else round(ap50, 4)}  "
                      f"AP50-95 {ap if ap is None else round(ap, 4)}")
        if result.backbone_weights:
            from edge.models.pretrained import summary_line

            print(f"backbone: {summary_line(result.backbone_weights)}")
        print(f"checkpoints: {result.best} (deploy), {result.last} (resume); history: "
              f"{result.out / 'history.csv'}, {result.out / 'history.png'}")
    return 0
