#!/usr/bin/env python3
"""INT8 for ONNX Runtime's CPU (``edge quantize --target onnxruntime``) against FP32, side by side (issue 14).

    edge export edge/assets/bccd_yolov3-tiny_320.pt --name bccd_yolov3-tiny --out runs/ortint8/
    edge quantize runs/ortint8/bccd_yolov3-tiny_320x320.onnx --precision int8 --target onnxruntime \\
        --calib data/bccd.yaml --calib-split trainval --out runs/ortint8/bccd.int8-ort.onnx
    .venv/bin/python benchmarks/ort_int8.py runs/ortint8/bccd_yolov3-tiny_320x320.onnx \\
        runs/ortint8/bccd.int8-ort.onnx --data data/bccd.yaml --split test --threads 1,2 --json runs/ortint8/ort.json

Raw throughput: ``session.run`` alone, batch 1, on one real preprocessed BCCD image, ONNX Runtime
CPUExecutionProvider with every graph optimization (ORT_ENABLE_ALL), ``--threads`` intra-op threads (one
figure per count), one inter-op thread. The graphs are timed in interleaved rounds (FP32, INT8, FP32-folded,
then the order reversed the next round, ...): each round times ``--runs`` calls of each graph, and the figures
are the medians over rounds of each round's median, plus the median of the per-round ratios, so load that
comes and goes on a shared machine hits every graph alike. The load average is printed before and after.

Also: mAP50 / mAP50-95 of both graphs on ``--data``/``--split``, scored as ``edge eval`` does (score > 0.001,
IoU 0.5, 100 per image), and what ONNX Runtime's optimizer made of each graph (op types of the optimized
graph; with ``--optimized-dir`` the optimized graphs are written there): the nodes that still run in float
and the Q/DQ conversions left.

"FP32, preprocessing folded" is the FP32 graph with the same exact fold of the input preprocessing into the
first convolution that the onnxruntime target applies (``edge.export.quantize.ort_cpu``): it separates what
the fold gains (a channel-swap Gather that ONNX Runtime runs element by element) from what INT8 gains.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.bench.machine import cpu_model  # noqa: E402

log = logging.getLogger("ort_int8")



def cpu_flags() -> List[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx512_vnni", "avx_vnni", "avx512f", "avx2")))
    except OSError:
        pass
    return []


def session(model: Any, threads: int, optimized: Optional[Path] = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def optimized_ops(model: Any, folder: Path, stem: str) -> Dict[str, int]:
    """Op types of ONNX Runtime's optimized graph (1 thread; the graph does not depend on the count)."""
    import onnx

    path = folder / f"{stem}.optimized.onnx"
    session(model, 1, path)
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def interleaved(models: Dict[str, Any], sample: Any, threads: int, rounds: int, runs: int,
                warmup: int) -> Dict[str, Any]:
    """Median (over rounds) of each round's median ``session.run`` time, per graph, and per-round ratios."""
    sessions = {name: session(m, threads) for name, m in models.items()}
    feeds = {name: {s.get_inputs()[0].name: sample} for name, s in sessions.items()}
    for name, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[name])
    names = list(models)
    per_round: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            s, feed = sessions[name], feeds[name]
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                s.run(None, feed)
                times.append(time.perf_counter() - start)
            per_round[name].append(statistics.median(times) * 1000.0)
    base = names[0]
    out: Dict[str, Any] = {"threads": threads, "rounds": rounds, "runs_per_round": runs, "graphs": {}}
    for name in names:
        ms = statistics.median(per_round[name])
        ratios = [b / x for b, x in zip(per_round[base], per_round[name])]
        out["graphs"][name] = {"median_ms": round(ms, 3), "fps": round(1000.0 / ms, 1),
                               "speedup_vs_fp32": round(statistics.median(ratios), 3),
                               "speedup_min_max": [round(min(ratios), 3), round(max(ratios), 3)],
                               "round_ms": [round(x, 3) for x in per_round[name]]}
    return out


def score(model: Any, sidecar: Dict[str, Any], dataset: Any) -> Dict[str, Optional[float]]:
    from edge.evaluate import evaluate_model
    from edge.export.prenms import OnnxPreNmsPredictor

    predictor = OnnxPreNmsPredictor(model, sidecar=sidecar, threads=1)
    try:
        result = evaluate_model(predictor, dataset)
    finally:
        predictor.close()
    return {"map50": result.map50, "map50_95": result.map50_95}


def render(report: Dict[str, Any], names: List[str]) -> str:
    """The figures as Markdown (for benchmarks/RESULTS.md)."""
    import onnxruntime

    lines = [f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores "
             f"({', '.join(report['machine']['flags'])}); ONNX Runtime {onnxruntime.__version__} "
             "CPUExecutionProvider, ORT_ENABLE_ALL, batch 1. Load average before "
             f"{report['load_before']}, after {report['load_after']}.", ""]
    lines.append("| threads | graph | median ms | FPS | × FP32 (median of rounds; min-max) |")
    lines.append("|---|---|---|---|---|")
    for t in report["timing"]:
        for name, g in t["graphs"].items():
            lines.append(f"| {t['threads']} | {name} | {g['median_ms']:.2f} | {g['fps']:.1f} | "
                         f"{g['speedup_vs_fp32']:.2f} ({g['speedup_min_max'][0]:.2f}-{g['speedup_min_max'][1]:.2f}) |")
    if "map" in report:
        lines += ["", f"mAP on {report['map']['split']}:"]
        ref = report["map"]["FP32"]["map50"]
        for name in names[:2]:
            m = report["map"][name]
            lines.append(f"- {name}: mAP50 {m['map50']:.4f} ({100 * (m['map50'] - ref):+.2f} points), "
                         f"mAP50-95 {m['map50_95']:.4f}")
    lines += ["", "ONNX Runtime's optimized graphs (op types):"]
    for name, ops in report["optimized_ops"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32", help="pre-NMS ONNX from edge export (sidecar beside it)")
    parser.add_argument("int8", help="its INT8 graph from edge quantize --target onnxruntime")
    parser.add_argument("--data", default=str(REPO / "data" / "bccd.yaml"), help="dataset YAML (default BCCD)")
    parser.add_argument("--split", default="test", help="split scored for mAP50 (default test)")
    parser.add_argument("--no-map", action="store_true", help="skip the mAP scoring")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts, comma-separated (default 1,2)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per graph per round (default 30)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per graph first (default 10)")
    parser.add_argument("--no-folded", action="store_true", help="leave out the FP32 graph with folded preprocessing")
    parser.add_argument("--optimized-dir", default=None, help="write ONNX Runtime's optimized graphs here")
    parser.add_argument("--json", default=None, help="write every figure as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    import onnx
    import onnxruntime

    from edge.artifacts import atomic_write_json, read_sidecar, sha256_file
    from edge.data import load_dataset
    from edge.data.images import read_image
    from edge.export.prenms import OnnxPreNmsPredictor
    from edge.export.quantize.ort_cpu import fold_input_preprocessing

    fp32_path, int8_path = Path(args.fp32), Path(args.int8)
    fp32, int8 = onnx.load(str(fp32_path)), onnx.load(str(int8_path))
    sidecar = read_sidecar(fp32_path, required=False) or {}
    int8_side = read_sidecar(int8_path, required=False) or {}
    target = (int8_side.get("quantization") or {}).get("target")
    if target != "onnxruntime":
        log.warning("%s was not written by edge quantize --target onnxruntime (sidecar target: %s)", int8_path, target)
    models = {"FP32": fp32, "INT8 (onnxruntime target)": int8}
    if not args.no_folded:
        folded = onnx.ModelProto()
        folded.CopyFrom(fp32)
        if fold_input_preprocessing(folded) is not None:
            models["FP32, preprocessing folded"] = folded
    dataset = load_dataset(args.data, args.split)
    sample = OnnxPreNmsPredictor(fp32, sidecar=sidecar, threads=1).prepare(read_image(dataset.records[0].path))[0]

    report: Dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(),
                    "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "fp32": {"path": str(fp32_path), "sha256": sha256_file(fp32_path)},
        "int8": {"path": str(int8_path), "sha256": sha256_file(int8_path), "target": target,
                 "method": (int8_side.get("quantization") or {}).get("method")},
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="ort-int8-") as tmp:
        folder = Path(args.optimized_dir) if args.optimized_dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        report["optimized_ops"] = {name: optimized_ops(m, folder, f"g{i}") for i, (name, m) in enumerate(models.items())}
    report["timing"] = []
    for threads in [int(t) for t in args.threads.split(",") if t.strip()]:
        report["timing"].append(interleaved(models, sample, threads, args.rounds, args.runs, args.warmup))
        log.info("timed at %d thread(s): %s", threads,
                 {n: g["median_ms"] for n, g in report["timing"][-1]["graphs"].items()})
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if not args.no_map:
        report["map"] = {name: score(models[name], sidecar, dataset) for name in list(models)[:2]}
        report["map"]["split"] = f"{Path(args.data).name}:{args.split} ({len(dataset.records)} images)"

    print(render(report, list(models)))
    if args.json:
        atomic_write_json(Path(args.json), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
