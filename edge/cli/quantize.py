"""``edge quantize``: INT8 (explicit Q/DQ) or FP16 from a pre-NMS ONNX, calibrated and accuracy-gated on CPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import EdgeError

HELP = "INT8 (explicit Q/DQ) or FP16 from a pre-NMS ONNX, calibrated on CPU and gated on validation mAP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="pre-NMS ONNX from `edge export` (outputs boxes, scores)")
    parser.add_argument("--out", required=True, metavar="OUT.onnx",
                        help="graph to write; its sidecar OUT.json (and the gate report OUT.gate.json) go beside it")
    parser.add_argument("--precision", choices=("int8", "fp16"), required=True,
                        help="int8: Q/DQ graph (TensorRT 8.x-11, or ONNX Runtime's CPU with --target onnxruntime); "
                             "fp16: fp16 graph with float32 inputs/outputs")
    parser.add_argument("--target", choices=("tensorrt", "onnxruntime"), default="tensorrt",
                        help="runtime the INT8 graph is for. tensorrt (default): explicit symmetric int8 Q/DQ, the "
                             "form TensorRT fuses (ONNX Runtime's CPU runs it slower than FP32). onnxruntime: QDQ "
                             "with uint8 activations, int8 per-channel weights, int32 bias and int8 from layer to "
                             "layer, the form ONNX Runtime's CPU provider fuses into integer kernels (faster than "
                             "FP32 on x86; not for TensorRT). --precision int8 only")
    cal = parser.add_argument_group("calibration (INT8)")
    cal.add_argument("--calib", metavar="SOURCE",
                     help="calibration images: a manifest (calibration/NAME.txt, one image path per line) or a "
                          "dataset YAML with --calib-split")
    cal.add_argument("--calib-split", metavar="SPLIT", help="split of the --calib dataset YAML (e.g. trainval)")
    cal.add_argument("--calib-count", type=int, metavar="N",
                     help="use N images (default: all of a manifest, 64 spread over a dataset split); fewer than "
                          "32 calibration images get a warning (ranges from a handful of images do not generalize)")
    cal.add_argument("--calib-batch", type=int, default=1, metavar="B", help="images per calibration batch (default 1)")
    cal.add_argument("--method", choices=("entropy", "percentile", "minmax"), default=None,
                     help="activation range calibration (default: entropy, as TensorRT's calibrator, for --target "
                          "tensorrt; percentile for --target onnxruntime, where entropy ranges cost the bundled "
                          "model 0.9 mAP50 points and percentile none)")
    cal.add_argument("--percentile", type=float, metavar="P",
                     help="with --method percentile: kept share of |activations| in percent (default 99.999)")
    cal.add_argument("--entropy-bins", type=int, default=2048, metavar="N",
                     help="histogram bins of --method entropy (default 2048, as TensorRT; fewer is faster)")
    cal.add_argument("--keep-float", action="append", default=[], metavar="NODE",
                     help="keep this weighted layer (ONNX node name) in float; repeatable")
    gate = parser.add_argument_group("accuracy gate")
    gate.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                      help="largest mAP50 drop below FP32 that is accepted, in points (default 1.0 = 0.01 mAP50)")
    gate.add_argument("--val-data", metavar="DATA.yaml",
                      help="dataset YAML scored by the gate (default: the --calib YAML when it is one)")
    gate.add_argument("--val-split", metavar="SPLIT",
                      help="split scored by the gate (default val; a YAML without one needs --val-split, and the "
                           "split is checked before calibrating)")
    gate.add_argument("--val-count", type=int, metavar="N", help="score only the first N images of the split")
    gate.add_argument("--sensitivity", choices=("quantize-one", "exclude-one"), default="quantize-one",
                      help="per-layer sensitivity over budget: quantize one layer group alone, or all but one")
    gate.add_argument("--max-float-fraction", type=float, default=0.5, metavar="F",
                      help="mixed precision keeps at most this share of the weighted layers in float (default 0.5)")
    gate.add_argument("--no-gate", action="store_true",
                      help="skip the gate (the sidecar then records the model as unverified)")
    parser.add_argument("--decode", choices=("auto", "fp16", "fp32"), default="auto",
                        help="FP16: decode precision (auto: fp32 when fp16 moves boxes by more than 0.01 px)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="ONNX Runtime threads for the gate's scoring (default 0: all cores)")


def run(args: argparse.Namespace) -> int:
    from edge.data.calibration import DATASET_SUFFIXES, calibration_source
    from edge.export.quantize import QuantizeConfig, quantize_file
    from edge.export.quantize.gate import GateConfig, check_gate_splits

    config = QuantizeConfig(
        precision=args.precision, method=args.method, percentile=args.percentile, calib_batch=args.calib_batch,
        keep_float=list(args.keep_float), decode=args.decode, entropy_bins=args.entropy_bins, target=args.target,
    ).validate()
    if args.calib_split and not args.calib:
        raise EdgeError("--calib-split needs --calib DATA.yaml")
    calib_yaml = args.calib if args.calib and Path(args.calib).suffix.lower() in DATASET_SUFFIXES else None
    val_data = None if args.no_gate else (args.val_data or calib_yaml)
    if not args.no_gate and val_data is None:
        raise EdgeError(
            "the accuracy gate needs a validation split: pass --val-data DATA.yaml [--val-split val], or "
            "--no-gate to skip it (the model is then recorded as unverified)")
    val_split = check_gate_splits(val_data, args.val_split, calib_yaml, args.calib_split)  # before calibrating
    calib = calibration_source(args.calib, args.calib_split, args.calib_count) if args.calib else None
    gate = None
    if not args.no_gate:
        gate = GateConfig(val_data=val_data, val_split=val_split, val_count=args.val_count,
                          max_drop=args.max_drop, sensitivity=args.sensitivity,
                          max_float_fraction=args.max_float_fraction, threads=args.threads).validate()
    result = quantize_file(args.model, args.out, config, calib=calib, gate=gate)
    q = result.sidecar["quantization"]
    summary = {
        "out": str(result.path),
        "precision": result.precision,
        "target": q.get("target"),
        "decision": result.decision,
        "method": q.get("method"),
        "calibration_images": (q.get("calibration") or {}).get("images"),
        "calibration_sha256": q.get("calibration_sha256"),
        "float_layers": len(q.get("float_layers") or []),
    }
    gate_report = q.get("gate") or {}
    if "final" in gate_report:
        summary["map50"] = gate_report["final"].get("map50")
        summary["fp32_map50"] = (gate_report.get("fp32") or {}).get("map50")
        summary["drop_points"] = gate_report["final"].get("drop_points")
        summary["gate"] = gate_report.get("message")
        summary["gate_images"] = (gate_report.get("validation") or {}).get("images")
    if result.gate_report_path is not None:
        summary["gate_report"] = str(result.gate_report_path)
    print(json.dumps(summary))
    return 0
