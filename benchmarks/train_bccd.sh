#!/usr/bin/env bash
# Train one detector family on BCCD trainval and score it on test; the figures go to benchmarks/RESULTS.md.
#   [IMGSZ=320] [OUT=runs/bccd-FAMILY] [EDGE=.venv/bin/edge] bash benchmarks/train_bccd.sh FAMILY EPOCHS [extra args...]
#   RECIPE=1 [OUT=...] bash benchmarks/train_bccd.sh FAMILY     # the family's default recipe, nothing else given
# Writes runs/bccd-FAMILY/ (checkpoints, history.csv/png, train.log, test.json). Needs ../shared/datasets/bccd.
# EDGE: the edge command (from a git worktree without a .venv, e.g. EDGE="/path/to/.venv/bin/python -m edge").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
family="$1"
out="${OUT:-runs/bccd-$family}"
mkdir -p "$out"
read -r -a edge <<< "${EDGE:-.venv/bin/edge}"
start=$(date +%s)
if [ -n "${RECIPE:-}" ]; then
    # exactly the command benchmarks/RESULTS.md records for the default recipes; best.pt is what it ships
    epochs=null; shift
    "${edge[@]}" train --model "$family" --data data/bccd.yaml --train-split trainval --out "$out" --exist-ok "$@" \
        2>&1 | grep -v "edge.train.progress" > "$out/train.log"
    ckpt="$out/best.pt"
else
    epochs="$2"; shift 2
    "${edge[@]}" train --model "$family" --data data/bccd.yaml --train-split trainval --val-split none \
        --imgsz "${IMGSZ:-320}" --epochs "$epochs" --out "$out" --exist-ok --ema --seed 0 "$@" 2>&1 \
        | grep -v "edge.train.progress" > "$out/train.log"
    ckpt="$out/last.pt"
fi
end=$(date +%s)
"${edge[@]}" eval "$ckpt" --data data/bccd.yaml --split test --json "$out/test.json" > "$out/test.txt" 2>&1
echo "{\"family\": \"$family\", \"epochs\": $epochs, \"train_seconds\": $((end - start)), \"args\": \"$*\"}" > "$out/run.json"
cat "$out/test.txt"
