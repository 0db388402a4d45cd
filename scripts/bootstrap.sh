#!/usr/bin/env bash
# Create or reuse the virtual environment at .venv and install edge into it.
#
#   scripts/bootstrap.sh [--dry-run] [EXTRAS]   EXTRAS: a pip extras list, e.g. "dev" (default) or "runtime"
#
# "runtime" installs only what edge-run needs (no torch). Everything else gets torch: where this
# machine carries the CPU build of torch 2.13.0 as a local wheel, pip takes it from disk; elsewhere pip
# resolves torch from the index as usual. Re-running is cheap: nothing is reinstalled unless
# pyproject.toml changed since the last successful install for the same extras.
#
# On a Jetson (/etc/nv_tegra_release exists) the venv sees the system site-packages (JetPack's TensorRT
# and GStreamer OpenCV), NumPy stays below 2 (pyproject.toml's aarch64 bound: JetPack's cv2 is built
# against NumPy 1.x), and torch never comes from PyPI: PyPI's aarch64 torch cannot use the Jetson GPU.
# The extras that need torch take NVIDIA's torch for JetPack, installed beforehand (system-wide or in
# .venv), and pin the installed torch/torchvision so that pip keeps them; without it they stop with
# the way out. deploy/setup-jetson.sh is the route for running edge on a Jetson (no torch at all).
#
# --dry-run prints the commands that would change something instead of running them (tests point it at
# fake files with EDGE_TEGRA_RELEASE_FILE and at another venv with EDGE_VENV).
set -euo pipefail

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
    dry_run=1
    shift
fi
extras="${1:-dev}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EDGE_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
tegra_release="${EDGE_TEGRA_RELEASE_FILE:-/etc/nv_tegra_release}"

run() {
    if [ "$dry_run" = "1" ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "bootstrap: '$python' not found; install Python >= 3.8 or set PYTHON=/path/to/python3" >&2
    exit 1
fi
jetson=0
[ -f "$tegra_release" ] && jetson=1

if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating $venv"
    # --system-site-packages lets a Jetson's venv see JetPack's TensorRT and GStreamer OpenCV.
    if [ "$jetson" = "1" ]; then
        run "$python" -m venv --system-site-packages "$venv"
    else
        run "$python" -m venv "$venv"
    fi
fi
# The interpreter that answers "is torch there?": the venv's, or before it exists, the one it is made from.
probe="$python"
[ -x "$venv/bin/python" ] && probe="$venv/bin/python"

stamp="$venv/.edge-installed-$extras"
want="$(sha256sum < "$root/pyproject.toml" | cut -d' ' -f1)"
if [ "$dry_run" != "1" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

needs_torch=0
needs_torchvision=0
case ",$extras," in
    *,runtime,*) ;;
    *,dev,*) needs_torch=1; needs_torchvision=1 ;;
    *,torchvision,*) needs_torch=1; needs_torchvision=1 ;;
    *,train,*|*,export,*) needs_torch=1 ;;
esac
[ "$extras" = "runtime" ] || [ "$jetson" = "1" ] || needs_torch=1  # off a Jetson: as before, torch for all but runtime

pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
install_env=()
if [ "$jetson" = "1" ] && [ "$needs_torch" = "1" ]; then
    # NVIDIA's torch for JetPack (CUDA on the Jetson GPU), never PyPI's: pin what is installed.
    missing=()
    "$probe" -c "import torch" >/dev/null 2>&1 || missing+=(torch)
    if [ "$needs_torchvision" = "1" ]; then
        "$probe" -c "import torchvision" >/dev/null 2>&1 || missing+=(torchvision)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "bootstrap: error: edge[$extras] needs ${missing[*]}, and on a Jetson it must be NVIDIA's build for this JetPack: PyPI's aarch64 torch cannot use the Jetson GPU, and pip would fetch it" >&2
        echo "bootstrap: what to do: install NVIDIA's PyTorch for JetPack first (docs.nvidia.com/deeplearning/frameworks/install-pytorch-jetson-platform; torchvision built from source for that torch), then re-run; or use 'bash scripts/bootstrap.sh runtime' / deploy/setup-jetson.sh, which need no torch" >&2
        exit 1
    fi
    pins="$venv/edge-torch-constraints.txt"
    keep=(torch)
    [ "$needs_torchvision" = "1" ] && keep+=(torchvision)
    versions="$("$probe" -c 'import importlib, sys
for name in sys.argv[1:]:
    print("%s==%s" % (name, importlib.import_module(name).__version__))' "${keep[@]}")"
    echo "bootstrap: keeping the installed ${versions//$'\n'/, } (NVIDIA's build for JetPack)"
    if [ "$dry_run" = "1" ]; then
        printf '+ write %s <<EOF\n%s\nEOF\n' "$pins" "$versions"
    else
        printf '%s\n' "$versions" > "$pins"
    fi
    install_env=(env "PIP_CONSTRAINT=$pins")
elif [ "$needs_torch" = "1" ] && ! "$probe" -c "import torch, torchvision" >/dev/null 2>&1; then
    # torch and torchvision must come as a matching pair (torchvision's C++ ops are built for one torch).
    # These pairs lie on this project's machines' local package disk; elsewhere pip fetches them.
    case "$(uname -m)" in
        aarch64) pair=("torch==2.9.1" "torchvision==0.24.1") ;;
        *) pair=("torch==2.14.1" "torchvision==0.29.1") ;;
    esac
    echo "bootstrap: installing ${pair[*]}"
    run "${pip[@]}" install "${pair[@]}" || run "${pip[@]}" install torch torchvision
fi
echo "bootstrap: installing edge[$extras] into $venv"
if [ "$extras" = "runtime" ]; then
    run "${install_env[@]}" "${pip[@]}" install -e "$root"
else
    run "${install_env[@]}" "${pip[@]}" install -e "${root}[$extras]"
fi
if [ "$dry_run" != "1" ]; then
    echo "$want" > "$stamp"
fi
