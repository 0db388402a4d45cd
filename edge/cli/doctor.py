"""``edge doctor``: environment report and, with ``--selftest``, the on-device self-test.

    edge doctor [--json] [--selftest [--model ONNX] [--int8-model ONNX] [--images DIR]
                [--precision P ...] [--iterations N] [--workspace MB] [--work-dir DIR]]

Exit status: 0 when nothing failed (warnings and skipped checks do not count), 1 when a check failed,
2 for a usage error (an unreadable model, a bad option).
"""

from __future__ import annotations

import argparse
import logging

HELP = "check this machine (Jetson, CUDA, TensorRT, PyCUDA, OpenCV, cameras, ...) and self-test engines"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON (stdout) instead of text")
    p.add_argument("--selftest", action="store_true",
                   help="also build engines from the model in each precision this device supports, run them, "
                        "compare with ONNX Runtime and time them (ONNX Runtime part only without TensorRT)")
    p.add_argument("--model", default=None, metavar="ONNX",
                   help="--selftest: deploy ONNX (NMS inside) to test; default: the bundled model")
    p.add_argument("--int8-model", default=None, metavar="ONNX",
                   help="--selftest: Q/DQ deploy ONNX (edge quantize + surgery) for the INT8 engine")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="--selftest: folder of images to feed (default: synthetic test:// frames)")
    p.add_argument("--precision", action="append", choices=("fp32", "fp16", "int8"), default=None,
                   help="--selftest: only these precisions (repeatable; default: all the device supports)")
    p.add_argument("--iterations", type=int, default=20, metavar="N", help="--selftest: timed runs (default 20)")
    p.add_argument("--workspace", type=int, default=256, metavar="MB",
                   help="--selftest: TensorRT builder workspace (default 256, fits the smallest Jetsons)")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="--selftest: keep engines and probe graphs here (default: a temporary folder, removed)")


def run(args: argparse.Namespace) -> int:
    from edge.doctor import run_doctor

    report = run_doctor(
        selftest=args.selftest, model=args.model, int8_model=args.int8_model, images=args.images,
        precisions=args.precision, iterations=args.iterations, workspace_mb=args.workspace, work_dir=args.work_dir,
    )
    print(report.format_json() if args.json else report.format_text())
    return report.exit_code
