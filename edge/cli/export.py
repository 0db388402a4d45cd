"""``edge export``: a checkpoint from ``edge train`` -> pre-NMS ONNX graphs (one per size) + JSON sidecars."""

from __future__ import annotations

import argparse
import json
from typing import List

HELP = "export a checkpoint to pre-NMS ONNX (boxes, scores), self-verified against PyTorch in ONNX Runtime"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="checkpoint written by `edge train` (a .pt, or a run folder: best.pt, else last.pt)")
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


def run(args: argparse.Namespace) -> int:
    from edge.export.torch_export import ExportConfig, export_checkpoint

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
    results = export_checkpoint(args.checkpoint, args.out, config)
    for result in results:
        print(json.dumps(result.summary()))
    return 0
