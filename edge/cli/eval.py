"""``edge eval``: mAP of a model or of a detections file on a dataset split (VOC and COCO figures)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import EdgeError

HELP = "score a model or a COCO-format detections file on a dataset split (VOC mAP50, COCO mAP50-95)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="model file to run over the split (checkpoint .pt, pre- or post-NMS ONNX, TensorRT engine); "
        "omit it when scoring a file with --detections",
    )
    parser.add_argument(
        "--data", required=True, metavar="DATA.yaml", help="dataset YAML (e.g. data/bccd.yaml)"
    )
    parser.add_argument("--split", default="test", metavar="NAME", help="split to score (default: test)")
    parser.add_argument(
        "--detections",
        metavar="FILE",
        help='COCO results JSON: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}] in source '
        "pixels; image_id = image file stem and category_id = 0-based class index for VOC/YOLO datasets, "
        "the file's own ids for COCO datasets",
    )
    parser.add_argument(
        "--json", metavar="OUT", help="write the figures as JSON (map50, map50_95, coco, voc, per_class)"
    )
    parser.add_argument(
        "--plot-pr", metavar="PNG", help="write per-class precision/recall curves (needs matplotlib)"
    )
    parser.add_argument(
        "--iou-type",
        choices=["bbox"],
        default="bbox",
        help="what is scored; only axis-aligned boxes (pycocotools' 'bbox') are supported",
    )
    parser.add_argument(
        "--max-dets",
        type=int,
        default=100,
        metavar="N",
        help="COCO's cap of detections per image and class (default 100, as pycocotools)",
    )


def run(args: argparse.Namespace) -> int:
    from edge.artifacts import atomic_write_json
    from edge.data import load_dataset
    from edge.evaluate import evaluate_detections, evaluate_model, format_table, plot_pr_curves
    from edge.runtime.predictors import load_predictor

    if bool(args.model) == bool(args.detections):
        raise EdgeError(
            "edge eval needs exactly one input: a MODEL file or --detections FILE "
            f"(got {'both' if args.model else 'neither'}); see `edge eval --help`"
        )
    if args.max_dets < 1:
        raise EdgeError(f"--max-dets must be at least 1, got {args.max_dets}")

    dataset = load_dataset(args.data, args.split)
    if args.detections:
        source = {"detections": str(Path(args.detections))}
        result = evaluate_detections(dataset, args.detections, max_dets=args.max_dets)
    else:
        source = {"model": str(Path(args.model))}
        predictor = load_predictor(args.model)
        result = evaluate_model(predictor, dataset, max_dets=args.max_dets)

    print(
        f"dataset {dataset.name!r} split {args.split!r}: {len(dataset)} images, {len(dataset.class_names)} classes"
    )
    print(format_table(result))

    if args.json:
        payload = result.to_json()
        payload.update({"data": str(Path(args.data)), "split": args.split, "iou_type": args.iou_type})
        payload.update(source)
        atomic_write_json(args.json, payload)
        print(f"wrote {args.json}")
    if args.plot_pr:
        plot_pr_curves(
            result, args.plot_pr, title=f"{dataset.name} {args.split}: precision/recall at IoU 0.5"
        )
        print(f"wrote {args.plot_pr}")
    return 0
