"""``edge export``: a checkpoint from ``edge train`` -> pre-NMS ONNX graphs (one per size) + JSON sidecars.

``edge export --torchvision ARCH --weights FILE.pth [--classes a,b,...] [--num-classes N]`` exports a
detector trained with torchvision instead (``edge.export.torchvision_loading``): same graph contract, with
torchvision's own normalization and pre-NMS decode.
"""

from __future__ import annotations

import argparse
import json
from typing import List

HELP = ("export a checkpoint (or a torchvision detector) to pre-NMS ONNX (boxes, scores), self-verified against "
        "PyTorch in ONNX Runtime")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", default=None,
                        help="checkpoint written by `edge train` (a .pt, or a run folder: best.pt, else last.pt); "
                             "omit it with --torchvision")
    tv = parser.add_argument_group("torchvision detectors (instead of CHECKPOINT)")
    tv.add_argument("--torchvision", metavar="ARCH", default=None,
                    choices=["ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn",
                             "retinanet_resnet50_fpn_v2"],
                    help="export a torchvision detector: %(choices)s")
    tv.add_argument("--weights", metavar="FILE.pth", default=None,
                    help="its state dict (torch.save(model.state_dict())), or a checkpoint holding it under "
                         "'model' (torchvision's reference scripts)")
    tv.add_argument("--classes", metavar="A,B,...", default=None,
                    help="foreground class names, comma-separated, torchvision label 1 first (default class1..)")
    tv.add_argument("--num-classes", type=int, default=None, metavar="N",
                    help="torchvision's num_classes, background included (default: read from the weights)")
    parser.add_argument("--imgsz", action="append", nargs="+", default=None, metavar="HxW",
                        help="input size(s), one ONNX each (anchors depend on the size); default: the model "
                             "card's size. With --dynamic-hw: the nominal size first, all verified")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, metavar="N", help="static batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="free batch dimension")
    parser.add_argument("--dynamic-hw", action="store_true",
                        help="one graph with free height and width (YOLO families only: SSD and RetinaNet "
                             "default boxes are fixed to one size)")
    parser.add_argument("--opset", type=int, default=17, metavar="K",
                        help="ONNX opset (default 17: TensorRT >= 8.5; use 13 for TensorRT 8.2 / JetPack 4.6)")
    parser.add_argument("--input", dest="input_layout", choices=["uint8-nhwc-bgr", "float-nchw"],
                        default="uint8-nhwc-bgr",
                        help="graph input: uint8 [B,H,W,3] BGR letterboxed frames with the preprocessing in the "
                             "graph (default), or float32 [B,3,H,W] RGB already normalized")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    parser.add_argument("--verify-images", nargs="+", default=[], metavar="PATH",
                        help="image files or folders: letterboxed into extra verification inputs (first 8)")
    parser.add_argument("--tolerance", type=float, default=1e-4, metavar="T",
                        help="allowed max|onnx - torch| / max(1, max|torch|) per output (default 1e-4)")
    parser.add_argument("--name", default=None, metavar="STEM",
                        help="file name stem (default: the architecture): DIR/STEM_HxW.onnx + .json")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")


def _sizes(values: object) -> List[str]:
    """``--imgsz A B --imgsz C`` (argparse: [[A, B], [C]]) -> [A, B, C]."""
    return [str(item) for group in (values or []) for item in group]  # type: ignore[union-attr]


def _source(args: argparse.Namespace) -> object:
    """The ExportSource of a torchvision detector, or None for an `edge train` checkpoint."""
    from edge.errors import ModelError

    tv_only = [flag for flag, value in (("--weights", args.weights), ("--classes", args.classes),
                                        ("--num-classes", args.num_classes)) if value is not None]
    if args.torchvision is None:
        if tv_only:
            raise ModelError(f"{', '.join(tv_only)} only apply with --torchvision ARCH")
        if args.checkpoint is None:
            raise ModelError("no model given: pass a CHECKPOINT written by `edge train`, or --torchvision ARCH "
                             "--weights FILE.pth")
        return None
    if args.checkpoint is not None:
        raise ModelError(f"both CHECKPOINT ({args.checkpoint}) and --torchvision were given; pass one model")
    if args.weights is None:
        raise ModelError(f"--torchvision {args.torchvision} needs --weights FILE.pth (the trained state dict)")
    from edge.export.torchvision_loading import TorchvisionExportRequest

    names = args.classes.split(",") if args.classes is not None else None
    return TorchvisionExportRequest(arch=args.torchvision, weights=args.weights, class_names=names,
                                    num_classes=args.num_classes).source()


def run(args: argparse.Namespace) -> int:
    from edge.export.torch_export import ExportConfig, export_checkpoint, export_source

    config = ExportConfig(
        imgsz=_sizes(args.imgsz),  # type: ignore[arg-type]
        batch=int(args.batch),
        dynamic_batch=bool(args.dynamic_batch),
        dynamic_hw=bool(args.dynamic_hw),
        opset=int(args.opset),
        input_layout=args.input_layout,
        simplify=not args.no_simplify,
        tolerance=float(args.tolerance),
        verify_images=list(args.verify_images),
        name=args.name,
    )
    config.validate()  # bad options fail before a model is built
    source = _source(args)
    if source is None:
        results = export_checkpoint(args.checkpoint, args.out, config)
    else:
        results = export_source(source, args.out, config)  # type: ignore[arg-type]
    for result in results:
        print(json.dumps(result.summary()))
    return 0
