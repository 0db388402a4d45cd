"""``edge surgery``: append NMS (EfficientNMS_TRT or ONNX NonMaxSuppression) to a pre-NMS detector ONNX."""

from __future__ import annotations

import argparse
import json
from typing import List, Tuple

from edge.errors import EdgeError

HELP = "append NMS (EfficientNMS_TRT for TensorRT, or ONNX NonMaxSuppression) to a detector ONNX"


def _size(text: str) -> Tuple[int, int]:
    try:
        h, w = text.lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 240x320, got {text!r}") from None


def _classes(text: str) -> List[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="pre-NMS detector ONNX (boxes + scores outputs)")
    parser.add_argument("--out", required=True, metavar="OUT.onnx",
                        help="deploy graph to write; its sidecar OUT.json is written beside it")
    parser.add_argument("--nms", choices=("efficient", "onnx"), default="efficient",
                        help="efficient: EfficientNMS_TRT plugin node (TensorRT 8.0-10.x); onnx: standard "
                             "NonMaxSuppression (ONNX Runtime, TensorRT >= 8.6). Default: efficient")
    recorded = "the input's sidecar's where it records one (a torchvision export's), else"
    parser.add_argument("--score-threshold", type=float, help=f"in [0, 1] (default: {recorded} 0.25)")
    parser.add_argument("--iou-threshold", type=float, help=f"in [0, 1] (default: {recorded} 0.45)")
    parser.add_argument("--max-detections", type=int, metavar="K",
                        help=f"detections per image, all classes together (default: {recorded} 100)")
    parser.add_argument("--class-agnostic", action="store_true",
                        help="one NMS over all classes (overlapping boxes of different classes suppress each other)")
    byo = parser.add_argument_group("bring your own model (defaults fit edge export's output)")
    byo.add_argument("--boxes", default="boxes", metavar="NAME", help="boxes tensor [B,N,4] (default: boxes)")
    byo.add_argument("--scores", default="scores", metavar="NAME", help="scores tensor [B,N,C] (default: scores)")
    byo.add_argument("--box-format", choices=("xyxy", "cxcywh"), default="xyxy",
                     help="coordinates of the boxes tensor (default xyxy)")
    byo.add_argument("--normalized", action="store_true",
                     help="boxes are in 0..1; they are scaled to input pixels in the graph")
    byo.add_argument("--background-class", type=int, default=-1, metavar="I",
                     help="score column of the background class, removed in the graph (default -1: none)")
    byo.add_argument("--score-activation", choices=("none", "sigmoid", "softmax"), default="none",
                     help="activation still to apply to the scores (default none: already probabilities)")
    byo.add_argument("--anchors", metavar="NAME",
                     help="fused-decoder form: --boxes holds deltas against these [1|B,N,4] anchors "
                          "(same --box-format; SSD variances folded into the deltas)")
    byo.add_argument("--preset", choices=("yolov5", "yolov8"),
                     help="single-tensor YOLO heads: yolov5 [B,N,5+C] (cx,cy,w,h,obj,cls...), "
                          "yolov8/11 [B,4+C,N]")
    byo.add_argument("--preset-output", metavar="NAME", help="the preset's tensor (default: the first output)")
    byo.add_argument("--input-size", type=_size, metavar="HxW",
                     help="input size for --normalized when the graph's input is dynamic")
    byo.add_argument("--classes", type=_classes, metavar="A,B,...", help="class names for the sidecar")
    parser.add_argument("--no-verify", action="store_true", help="skip the one ONNX Runtime run of the result")


def run(args: argparse.Namespace) -> int:
    from edge.export.presets import HeadSpec
    from edge.export.surgery import SurgeryConfig, surgery_file

    if args.preset and (args.boxes != "boxes" or args.scores != "scores" or args.normalized
                        or args.background_class != -1 or args.score_activation != "none"
                        or args.box_format != "xyxy"):
        raise EdgeError(
            "--preset fixes the layout; it cannot be combined with --boxes/--scores/--box-format/"
            "--normalized/--background-class/--score-activation (use --preset-output to name its tensor)"
        )
    head = HeadSpec(
        boxes=args.boxes,
        scores=args.scores,
        box_format=args.box_format,
        normalized=args.normalized,
        background_class=args.background_class,
        score_activation=args.score_activation,
        preset=args.preset,
        preset_output=args.preset_output,
        anchors=args.anchors,
        input_size=args.input_size,
    )
    config = SurgeryConfig(
        nms=args.nms,
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        max_detections=args.max_detections,
        class_agnostic=args.class_agnostic,
        head=head,
        classes=args.classes,
        verify=not args.no_verify,
    )
    meta = surgery_file(args.model, args.out, config)
    summary = {
        "out": str(args.out),
        "nms": meta["nms"]["type"],
        "op": meta["nms"]["op"],
        "score_threshold": meta["nms"]["score_threshold"],
        "iou_threshold": meta["nms"]["iou_threshold"],
        "max_detections": meta["nms"]["max_detections"],
        "num_classes": meta.get("num_classes"),
        "opset": meta.get("opset"),
    }
    print(json.dumps(summary))
    return 0

