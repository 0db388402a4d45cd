#!/usr/bin/env bash
# Create or reuse the virtual environment at .venv and install edge into it.
#
#   scripts/bootstrap.sh [EXTRAS]      EXTRAS: a pip extras list, e.g. "dev" (default) or "runtime"
#
# "runtime" installs only what edge-run needs (no torch). Everything else gets torch: where this
# machine carries the CPU build of torch 2.13.0 as a local wheel, pip takes it from disk; elsewhere pip
# resolves torch from the index as usual. Re-running is cheap: nothing is reinstalled unless
# pyproject.toml changed since the last successful install for the same extras.
set -euo pipefail

extras="${1:-dev}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "bootstrap: '$python' not found; install Python >= 3.8 or set PYTHON=/path/to/python3" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating $venv"
    # --system-site-packages lets a Jetson's venv see JetPack's TensorRT and GStreamer OpenCV.
    if [ -f /etc/nv_tegra_release ]; then
        "$python" -m venv --system-site-packages "$venv"
    else
        "$python" -m venv "$venv"
    fi
fi

stamp="$venv/.edge-installed-$extras"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if [ "$extras" != "runtime" ] && ! "$venv/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
    # torch and torchvision must come as a matching pair (torchvision's C++ ops are built for one torch).
    # These pairs lie on this project's machines' local package disk; elsewhere pip fetches them.
    case "$(uname -m)" in
        aarch64) pair=("torch==2.9.1" "torchvision==0.24.1") ;;
        *) pair=("torch==2.14.1" "torchvision==0.29.1") ;;
    esac
    echo "bootstrap: installing ${pair[*]}"
    "${pip[@]}" install "${pair[@]}" || "${pip[@]}" install torch torchvision
fi
echo "bootstrap: installing edge[$extras] into $venv"
if [ "$extras" = "runtime" ]; then
    "${pip[@]}" install -e "$root"
else
    "${pip[@]}" install -e "$root[$extras]"
fi
echo "$want" > "$stamp"
