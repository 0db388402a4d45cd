#!/usr/bin/env python3
"""The precision table of issue 5: accuracy and ONNX Runtime CPU latency of FP32, FP16 and INT8 (each
calibration method), and the accuracy gate's decision, printed as Markdown (for benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/quantize_table.py runs/bccd/yolov3_416x416.onnx --data data/bccd.yaml \\
        --calib calibration/bccd-trainval-64.txt --split test --gate-split val --json benchmarks/quantize.json

MODEL is a trained pre-NMS ONNX from ``edge export`` (with its sidecar). For every precision:

* mAP50 (VOC all-points, IoU 0.5) and mAP50-95 (COCO) on ``--split`` (default test), scored exactly as
  ``edge eval MODEL.onnx`` scores it (``edge.runtime.predictors``: score > 0.001, IoU 0.5, 100 per image);
* ONNX Runtime CPU latency of the graph alone: batch 1, one real preprocessed image, ``--warmup`` runs
  discarded, then the median (and p90) of ``--runs`` timed ``session.run`` calls, with ``--threads``
  intra-op threads (stated in the output);
* the gate (``edge.export.quantize.gate`` on ``--gate-split``, default val, budget ``--max-drop``): for each
  INT8 method its decision (int8 / int8-mixed / fp16-fallback / refused); a mixed-precision result gets a row
  of its own. FP16 is also scored through ``fp16_simulation`` (fp16 rounding of every tensor), since ONNX
  Runtime's CPU runs the fp16 graph largely in fp32.

The Q/DQ INT8 graphs are the TensorRT form (float weights with Q/DQ pairs, float bias); ONNX Runtime's CPU
runs them as simulated quantization, so their CPU latency says little about TensorRT's INT8 speed.
Graphs are written to ``--out-dir`` when given.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.bench.machine import cpu_model  # noqa: E402

log = logging.getLogger("quantize_table")



def latency_ms(model: Any, sample: np.ndarray, threads: int, warmup: int, runs: int) -> Dict[str, float]:
    """Median / p90 / min milliseconds of ``session.run`` at batch 1 (ONNX Runtime CPU)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outputs = ["boxes", "scores"]
    for _ in range(warmup):
        sess.run(outputs, {name: sample})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(outputs, {name: sample})
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "min_ms": times[0]}


def score(model: Any, sidecar: Dict[str, Any], dataset: Any, threads: int) -> Dict[str, Optional[float]]:
    from edge.evaluate import evaluate_model
    from edge.export.prenms import OnnxPreNmsPredictor

    predictor = OnnxPreNmsPredictor(model, sidecar=sidecar, threads=threads)
    try:
        result = evaluate_model(predictor, dataset)
    finally:
        predictor.close()
    return {"map50": result.map50, "map50_95": result.map50_95}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained pre-NMS ONNX from edge export (sidecar beside it)")
    parser.add_argument("--data", required=True, help="dataset YAML")
    parser.add_argument("--split", default="test", help="split the table's mAP is measured on (default test)")
    parser.add_argument("--count", type=int, default=None, help="score only the first N images of --split")
    parser.add_argument("--calib", default=str(REPO / "calibration" / "bccd-trainval-64.txt"),
                        help="calibration manifest or dataset YAML (default: calibration/bccd-trainval-64.txt)")
    parser.add_argument("--calib-split", default=None, help="split of a --calib dataset YAML")
    parser.add_argument("--calib-count", type=int, default=None, help="calibration images (default: all / 64)")
    parser.add_argument("--methods", default="entropy,percentile,minmax", help="INT8 methods, comma-separated")
    parser.add_argument("--percentile", type=float, default=None, help="percentile of --method percentile")
    parser.add_argument("--gate-split", default="val", help="split the gate scores (default val)")
    parser.add_argument("--gate-count", type=int, default=None, help="score only the first N images of it")
    parser.add_argument("--max-drop", type=float, default=1.0, help="gate budget in mAP50 points (default 1.0)")
    parser.add_argument("--no-gate", action="store_true", help="skip the gate column")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="ONNX Runtime intra-op threads for latency and scoring (default: all CPUs)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs before timing (default 10)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs, batch 1 (default 100)")
    parser.add_argument("--out-dir", default=None, help="also write every graph here")
    parser.add_argument("--json", default=None, help="write all figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    import onnx
    import onnxruntime

    from edge.artifacts import atomic_write_json, read_sidecar, sha256_file
    from edge.data import load_dataset
    from edge.data.calibration import ImageBatcher, calibration_source
    from edge.data.images import read_image
    from edge.export.quantize import Int8Quantizer, build_fp16, name_nodes
    from edge.export.quantize.gate import GateConfig, run_gate
    from edge.model_input import model_input_format

    model_path = Path(args.model)
    model = onnx.load(str(model_path))
    name_nodes(model)
    sidecar = read_sidecar(model_path, required=False) or {}
    fmt = model_input_format(model, sidecar)
    calib = calibration_source(args.calib, args.calib_split, args.calib_count)
    batcher = ImageBatcher(calib, fmt)
    batches = list(batcher)
    dataset = load_dataset(args.data, args.split)
    if args.count:
        from dataclasses import replace

        dataset = replace(dataset, records=list(dataset.records[: args.count]))
    first = read_image(dataset.records[0].path)
    from edge.export.prenms import OnnxPreNmsPredictor

    sample = OnnxPreNmsPredictor(model, sidecar=sidecar, threads=1).prepare(first)[0]
    gate_cfg = None if args.no_gate else GateConfig(
        val_data=args.data, val_split=args.gate_split, val_count=args.gate_count, max_drop=args.max_drop,
        threads=args.threads).validate()

    fp16 = build_fp16(model, batches[:4])
    rows: List[Dict[str, Any]] = []

    def add(label: str, graph: Any, gate: str, timed: bool = True, file_stem: Optional[str] = None) -> None:
        if args.out_dir and file_stem:
            out = Path(args.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            onnx.save(graph, str(out / f"{model_path.stem}.{file_stem}.onnx"))
        start = time.perf_counter()
        figures = score(graph, sidecar, dataset, args.threads)
        row: Dict[str, Any] = {"precision": label, "gate": gate, **figures, "score_seconds": time.perf_counter() - start}
        row.update(latency_ms(graph, sample, args.threads, args.warmup, args.runs) if timed else
                   {"median_ms": None, "p90_ms": None, "min_ms": None})
        rows.append(row)
        log.info("%s: %s", label, {k: v for k, v in row.items() if k != "precision"})

    add("FP32", model, "reference", file_stem=None)
    fp16_gate = "not run"
    if gate_cfg is not None:
        outcome = run_gate(model, fp16.model, None, gate_cfg, precision="fp16", sidecar=sidecar,
                           fp16_simulation=fp16.simulation)
        fp16_gate = f"{'pass' if outcome.decision == 'fp16' else 'refused'}: {outcome.message}"
    add(f"FP16 (decode {fp16.report['decode']})", fp16.model, fp16_gate, file_stem="fp16")
    add("FP16, simulated fp16 tensors", fp16.simulation, "(scoring aid, not a deployable graph)", timed=False)
    gate_reports: Dict[str, Any] = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        with Int8Quantizer(model, batches, method=method,
                           percentile=args.percentile if method == "percentile" else None) as quantizer:
            raw = quantizer.quantize()
            decision = "not run"
            extra = None
            if gate_cfg is not None:
                outcome = run_gate(model, fp16.model, quantizer, gate_cfg, precision="int8", sidecar=sidecar,
                                   calib=calib, fp16_simulation=fp16.simulation)
                gate_reports[method] = outcome.report
                decision = f"{outcome.decision}: {outcome.message}"
                if outcome.decision == "int8-mixed":
                    extra = outcome
        label = f"INT8 {method}" + (f" {quantizer.percentile:g}" if method == "percentile" else "")
        add(label, raw, decision, file_stem=f"int8-{method}")
        if extra is not None:
            add(f"INT8 {method}, mixed ({len(extra.float_nodes)} layers float)", extra.model,
                "int8-mixed (the gate's output)", file_stem=f"int8-{method}-mixed")

    ref = rows[0]["map50"]
    header = [
        f"Model: `{model_path.name}` (sha256 {sha256_file(model_path)[:12]}), input {fmt.height}x{fmt.width} "
        f"{fmt.layout}; scored on {Path(args.data).name} split `{args.split}` ({len(dataset.records)} images) as "
        "`edge eval` does (score > 0.001, IoU 0.5, 100 per image).",
        f"Calibration: {calib.describe()}, {batcher.num_images} images, list sha256 {batcher.list_sha256()[:12]}.",
        f"Gate: split `{args.gate_split}`, budget {args.max_drop:g} mAP50 points." if gate_cfg else "Gate: not run.",
        f"Latency: ONNX Runtime {onnxruntime.__version__} CPUExecutionProvider, batch 1, {args.threads} intra-op "
        f"threads, median (p90) of {args.runs} runs after {args.warmup} warm-up runs, on {cpu_model()} "
        f"({os.cpu_count()} CPUs). The INT8 Q/DQ graphs are TensorRT's form (simulated quantization on this CPU).",
        "",
        "| precision | mAP50 | mAP50-95 | ΔmAP50 (points) | ORT CPU latency, ms | gate decision |",
        "|---|---|---|---|---|---|",
    ]
    lines = list(header)
    for r in rows:
        m50 = "n/a" if r["map50"] is None else f"{r['map50']:.4f}"
        m95 = "n/a" if r["map50_95"] is None else f"{r['map50_95']:.4f}"
        delta = "" if r["map50"] is None or ref is None or r is rows[0] else f"{100 * (r['map50'] - ref):+.2f}"
        lat = "—" if r["median_ms"] is None else f"{r['median_ms']:.2f} ({r['p90_ms']:.2f})"
        gate = str(r["gate"]).replace("|", "/")
        lines.append(f"| {r['precision']} | {m50} | {m95} | {delta} | {lat} | {gate} |")
    print("\n".join(lines))
    if args.json:
        atomic_write_json(args.json, {"model": str(model_path), "data": args.data, "split": args.split,
                                      "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
                                      "cpu": cpu_model(), "onnxruntime": onnxruntime.__version__,
                                      "calibration": {"source": calib.describe(), "images": batcher.num_images},
                                      "fp16": fp16.report, "rows": rows, "gate_reports": gate_reports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
