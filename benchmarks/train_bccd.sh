#!/usr/bin/env bash
# Train one detector family on BCCD trainval and score it on test; the figures go to benchmarks/RESULTS.md.
#   [IMGSZ=320] [OUT=runs/bccd-FAMILY] bash benchmarks/train_bccd.sh FAMILY EPOCHS [extra edge-train args...]
# Writes runs/bccd-FAMILY/ (checkpoints, history.csv/png, train.log, test.json). Needs ../shared/datasets/bccd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
family="$1"; epochs="$2"; shift 2
out="${OUT:-runs/bccd-$family}"
mkdir -p "$out"
edge=.venv/bin/edge
start=$(date +%s)
"$edge" train --model "$family" --data data/bccd.yaml --train-split trainval --val-split none --imgsz "${IMGSZ:-320}" \
    --epochs "$epochs" --out "$out" --exist-ok --ema --seed 0 "$@" 2>&1 | grep -v "edge.train.progress" > "$out/train.log"
end=$(date +%s)
"$edge" eval "$out/last.pt" --data data/bccd.yaml --split test --json "$out/test.json" > "$out/test.txt" 2>&1
echo "{\"family\": \"$family\", \"epochs\": $epochs, \"train_seconds\": $((end - start)), \"args\": \"$*\"}" > "$out/run.json"
cat "$out/test.txt"
