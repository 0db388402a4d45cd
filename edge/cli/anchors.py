"""``edge anchors``: YOLO anchor priors by k-means (1 - IoU distance) over a dataset split's boxes.

    edge anchors --data data/bccd.yaml --split trainval -k 9 --imgsz 320 --out anchors.json

Prints the anchors (w, h in pixels of the letterboxed network input, smallest first) and their mean IoU
with the boxes, and with ``--out`` saves them as JSON; the ``anchors`` list goes straight into a YOLO
model config (``build_model("yolov3", anchors=...)``, split over levels by area).
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Tuple

from edge.errors import EdgeError

HELP = "compute YOLO anchor priors by k-means (1 - IoU) over a dataset split's box sizes"


def parse_imgsz(text: str) -> Tuple[int, int]:
    """'320' -> (320, 320); '256x320' (H x W) -> (256, 320)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+)\s*)?", str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"--imgsz {text!r}: expected S or HxW in pixels, e.g. 320 or 256x320")
    height = int(match.group(1))
    width = int(match.group(2)) if match.group(2) else height
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"--imgsz {text!r}: sizes must be positive")
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DATA.yaml", help="dataset YAML (e.g. data/bccd.yaml)")
    parser.add_argument("--split", default="trainval", metavar="NAME",
                        help="split whose boxes are clustered (default: trainval)")
    parser.add_argument("-k", "--num-anchors", dest="k", type=int, required=True, metavar="N",
                        help="number of anchors (YOLOv2: 5, YOLOv3: 9, yolov3-tiny: 6)")
    parser.add_argument("--imgsz", type=parse_imgsz, required=True, metavar="S|HxW",
                        help="network input size; boxes are letterboxed to it, anchors are in its pixels")
    parser.add_argument("--out", metavar="FILE.json", help="also save the anchors and their statistics as JSON")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the k-means++ seeding (default 0)")
    parser.add_argument("--restarts", type=int, default=5,
                        help="independent k-means runs; the best mean IoU wins (default 5)")


def run(args: argparse.Namespace) -> int:
    from edge.data import load_dataset
    from edge.models.kmeans_anchors import anchors_for_dataset

    if args.k < 1:
        raise EdgeError(f"-k must be at least 1, got {args.k}")
    if args.restarts < 1:
        raise EdgeError(f"--restarts must be at least 1, got {args.restarts}")
    dataset = load_dataset(args.data, args.split)
    result = anchors_for_dataset(dataset, args.k, args.imgsz, seed=args.seed, restarts=args.restarts)
    summary = result.to_dict()
    summary["data"] = str(args.data)

    height, width = args.imgsz
    print(f"{summary['k']} anchors for {dataset.name}/{dataset.split} ({summary['num_boxes']} boxes, "
          f"{len(dataset.records)} images) at input {height}x{width}, w x h pixels, smallest first:")
    for (w, h), count in zip(summary["anchors"], summary["counts"]):
        print(f"  {w:8.2f} x {h:8.2f}   ({count} boxes)")
    print(f"mean IoU of each box with its best anchor: {result.mean_iou:.4f}")
    print("anchors: " + json.dumps(summary["anchors"]))
    if args.out:
        from edge.artifacts import atomic_write_json

        atomic_write_json(args.out, summary)
        print(f"saved {args.out}")
    return 0
