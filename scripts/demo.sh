#!/usr/bin/env bash
# The README's main job, on any CPU-only machine (no camera, GPU or dataset needed):
# the bundled BCCD blood-cell detector (edge/assets/) runs through edge-run with ONNX Runtime on
# procedurally generated blood-smear footage (test://smear), writing to out/demo/:
#   bccd_demo.mp4      the annotated video (boxes, labels, scores, FPS)
#   stats.json         end-to-end FPS, per-stage latency p50/p99, glass-to-glass latency, frame counts
#   detections.jsonl   one JSON line of detections per frame
# Extra arguments go to edge-run, e.g. `bash scripts/demo.sh --max-frames 100` or `--serve :8080`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh runtime
out="out/demo"
mkdir -p "$out"
.venv/bin/edge-run --source "test://smear?frames=300&seed=0" --headless \
    --output "$out/bccd_demo.mp4" --stats-json "$out/stats.json" --detections-out "$out/detections.jsonl" "$@"
echo "demo: wrote $out/bccd_demo.mp4, $out/stats.json and $out/detections.jsonl"
