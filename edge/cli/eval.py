"""``edge eval``: mAP of a model or of a detections file on a dataset split (VOC and COCO figures)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import EdgeError

HELP = "score a model or a COCO-format detections file on a dataset split (VOC mAP50, COCO mAP50-95)"

DESCRIPTION = """\
Score a model (or a COCO results file) on a dataset split.

Class names: the model's class names (its sidecar, or a checkpoint's model card) must match the dataset's,
or edge eval refuses to score it and names both lists: a model trained on other classes scored against
this dataset gives a meaningless mAP. --map-classes-by-index scores model class i as dataset class i anyway
and prints the mapping. A model without class names (no sidecar) is scored by index, with a warning saying
so.

Model outputs: a deploy graph's or an engine's detections with a NaN or infinite box or score, a score
outside [0, 1] or a class id outside its class names are dropped before scoring, with one warning giving
the count (the model is broken: re-export it). See docs/troubleshooting.md, "Reliability".
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
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
        "--map-classes-by-index",
        action="store_true",
        help="score a model whose class names differ from the dataset's anyway, model class i as dataset "
        "class i (the mapping is printed); without it such a model is refused, naming both lists",
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
    from edge.runtime.predictors import check_class_names, load_predictor, predictor_class_names

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
        names, origin = predictor_class_names(predictor, args.model)
        for line in check_class_names(names, dataset.class_names, origin=origin, model=Path(args.model).name,
                                      by_index=args.map_classes_by_index):
            print(line)
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
