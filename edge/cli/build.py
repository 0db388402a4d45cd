"""``edge build``: TensorRT engines per resolution from a Q/DQ, fp16 or fp32 ONNX (or any model file
``edge-run`` takes: ``edge.runtime.engines``)."""

from __future__ import annotations

import argparse
import logging

from edge.errors import EdgeError

HELP = "build TensorRT engines (per resolution, precision and device) from an ONNX model"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="deploy ONNX (from edge surgery / quantize, or your own); a pre-NMS ONNX or a "
                   "checkpoint is given NMS first, an engine is rebuilt from the ONNX its sidecar names")
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8", "best"],
                   help="fp16/int8 as builder flags on TensorRT <= 10; on 11 the ONNX must carry them (edge quantize)")
    p.add_argument("--imgsz", action="append", default=[], metavar="HxW",
                   help="input resolution, repeatable: one engine each (default: the ONNX's or sidecar's size)")
    p.add_argument("--span-profile", action="store_true",
                   help="one engine whose optimization profile spans all --imgsz values instead of one each")
    p.add_argument("--batch", default="1,1,1", metavar="MIN,OPT,MAX", help="batch profile (dynamic-batch ONNX)")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="builder workspace pool (MB)")
    p.add_argument("--dla-core", type=int, default=None, metavar="N", help="build for DLA core N (Xavier/Orin)")
    p.add_argument("--gpu-fallback", action="store_true", help="with --dla-core: let unsupported layers run on the GPU")
    p.add_argument("--timing-cache", default=None, metavar="FILE", help="read and update a TensorRT timing cache")
    p.add_argument("--strongly-typed", action="store_true",
                   help="TensorRT 10: build a strongly typed network (types from the ONNX; always on in 11)")
    p.add_argument("--calib", default=None, metavar="SOURCE",
                   help="legacy implicit INT8 (TensorRT <= 10, fp32 graph): calibrate with TensorRT's entropy "
                        "calibrator on a manifest or dataset YAML (prefer `edge quantize` Q/DQ graphs)")
    p.add_argument("--calib-split", default=None, metavar="SPLIT", help="with a dataset YAML --calib: the split")
    p.add_argument("--calib-count", type=int, default=None, metavar="N", help="calibration images to use")
    p.add_argument("--calib-cache", default=None, metavar="FILE",
                   help="calibration cache (+ provenance .json beside it; default calibration/cache/<model>.cache)")
    p.add_argument("--force", action="store_true", help="rebuild even when the engine is up to date")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (engine files, cache keys, trtexec commands) without TensorRT")
    p.add_argument("--trt-version", default=None, help="with --dry-run: plan for this TensorRT version (e.g. 10.3)")
    p.add_argument("--device-name", default=None, help="with --dry-run: GPU name to plan for (e.g. Orin)")
    p.add_argument("--device-sm", default=None, help="with --dry-run: compute capability (e.g. 8.7)")
    p.add_argument("--out", default="engines", help="output folder (default: engines/)")


def _config(args: argparse.Namespace):
    from edge.trt.build import EngineBuildConfig, parse_imgsz

    try:
        batch = tuple(int(x) for x in args.batch.split(","))
    except ValueError:
        raise EdgeError(f"--batch {args.batch!r}: expected MIN,OPT,MAX integers, e.g. 1,4,8") from None
    if len(batch) == 1:
        batch = batch * 3
    if len(batch) != 3:
        raise EdgeError(f"--batch {args.batch!r}: expected MIN,OPT,MAX or one number")
    cfg = EngineBuildConfig(
        onnx_path=args.model, out_dir=args.out, precision=args.precision,
        imgsz=[parse_imgsz(s) for s in args.imgsz], batch=batch, span_profile=args.span_profile,  # type: ignore[arg-type]
        workspace_mb=args.workspace, dla_core=args.dla_core, gpu_fallback=args.gpu_fallback,
        timing_cache=args.timing_cache, strongly_typed=args.strongly_typed, force=args.force,
    )
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    from edge.runtime.engines import CalibrationRequest, PlanTarget, build_engines_for_model

    cfg = _config(args)
    dry_run = None
    if args.dry_run:
        if not (args.trt_version and args.device_name and args.device_sm):
            raise EdgeError("--dry-run needs --trt-version, --device-name and --device-sm (no TensorRT/GPU is queried)")
        dry_run = PlanTarget(args.trt_version, args.device_name, args.device_sm)
    calib = CalibrationRequest(args.calib, args.calib_split, args.calib_count, args.calib_cache) if args.calib else None
    build_engines_for_model(cfg, calib=calib, dry_run=dry_run, announce=lambda line: print(line, flush=True))
    return 0
