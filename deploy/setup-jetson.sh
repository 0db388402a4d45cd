#!/usr/bin/env bash
# Set up a freshly flashed Jetson (JetPack 5 or 6) to run edge: system packages, a virtual environment
# that sees JetPack's TensorRT and GStreamer OpenCV, PyCUDA built against the device's CUDA, edge
# itself (without torch), and at the end `edge doctor --selftest`, which builds an engine, opens it
# and runs it through the TensorRT backend: setup succeeds only when an engine really runs.
#
#   deploy/setup-jetson.sh [--venv DIR] [--extras LIST] [--editable] [--opencv jetpack|ubuntu|skip]
#                          [--skip-apt] [--max-power] [--selftest] [--selftest-model ONNX]
#                          [--no-doctor] [--dry-run]
#
# Idempotent: run it again after a failure or a JetPack upgrade; finished steps are skipped or repeated
# harmlessly. It stops at the first error and says what to do. It never changes the power mode or the
# clocks unless --max-power is given. --dry-run prints every command that would change the system
# instead of running it (tests point it at fake system files with EDGE_TEGRA_RELEASE_FILE,
# EDGE_DEVICE_MODEL_FILE, EDGE_CUDA_HOME and EDGE_PYTHON).
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail

EDGE_PROG="setup-jetson"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"
trap edge_on_error ERR

root="$(cd "$here/.." && pwd)"
venv="/opt/edge/venv"
extras="jetson,quantize"
editable=0
opencv="jetpack"
skip_apt=0
max_power=0
selftest=0
selftest_model=""
doctor=1
cuda_home="${EDGE_CUDA_HOME:-/usr/local/cuda}"
python="${EDGE_PYTHON:-/usr/bin/python3}"

usage() {
    cat <<'USAGE'
Usage: deploy/setup-jetson.sh [options]

Sets up this Jetson (JetPack 5 or 6) to run edge. Safe to run again.

Options:
  --venv DIR        virtual environment to create or reuse (default /opt/edge/venv); made with
                    --system-site-packages so JetPack's TensorRT and OpenCV are visible in it
  --extras LIST     edge extras to install (default jetson,quantize: PyCUDA + the ONNX tools that run
                    TensorRT-flavoured graphs on ONNX Runtime; never torch)
  --editable        install this checkout in editable mode (pip install -e) for development
  --opencv KIND     jetpack: nvidia-opencv, JetPack's GStreamer build (default); ubuntu: python3-opencv;
                    skip: leave OpenCV alone
  --skip-apt        do not install system packages (they are already there)
  --max-power       also run `nvpmodel -m 0` (MAXN on most modules) and `jetson_clocks`
  --selftest        at the end, the full self-test: an engine in every precision the GPU has
                    (default: one fp32 engine, built, opened and run against ONNX Runtime)
  --selftest-model ONNX
                    the deploy ONNX the final engine check builds (default: the bundled model;
                    on JetPack 5 an EfficientNMS_TRT graph is needed, see deploy/README.md)
  --no-doctor       skip the final checks (edge doctor and its engine check)
  --dry-run         print every command that would change the system instead of running it
  -h, --help        this help
USAGE
}

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv="${2:?--venv needs a directory}"; shift 2 ;;
        --venv=*) venv="${1#*=}"; shift ;;
        --extras) extras="${2?--extras needs a list, e.g. jetson,quantize}"; shift 2 ;;
        --extras=*) extras="${1#*=}"; shift ;;
        --editable) editable=1; shift ;;
        --opencv) opencv="${2:?--opencv needs jetpack, ubuntu or skip}"; shift 2 ;;
        --opencv=*) opencv="${1#*=}"; shift ;;
        --skip-apt) skip_apt=1; shift ;;
        --max-power) max_power=1; shift ;;
        --selftest) selftest=1; shift ;;
        --selftest-model) selftest_model="${2:?--selftest-model needs a deploy ONNX file}"; shift 2 ;;
        --selftest-model=*) selftest_model="${1#*=}"; shift ;;
        --no-doctor) doctor=0; shift ;;
        --dry-run) EDGE_DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; edge_die "unknown option '$1'" "see the options above" ;;
    esac
done

case "$opencv" in
    jetpack|ubuntu|skip) ;;
    *) edge_die "--opencv '$opencv' is not one of jetpack, ubuntu, skip" "pass --opencv jetpack (the default)" ;;
esac
case ",$extras," in
    *,train,*|*,export,*|*,dev,*)
        edge_die "--extras '$extras' would install torch, which this runtime setup never does" \
            "train and export on a desktop; on the Jetson use --extras jetson,quantize (the default)" ;;
esac
if [[ "$venv" != /* ]]; then
    venv="$PWD/$venv"
fi
if [ -n "$selftest_model" ]; then
    [ -f "$selftest_model" ] || edge_die "--selftest-model $selftest_model: no such file" \
        "pass the deploy ONNX (edge surgery's output, NMS inside) that the final engine check should build"
    [[ "$selftest_model" == /* ]] || selftest_model="$PWD/$selftest_model"
fi
[ "$EDGE_DRY_RUN" = "1" ] && edge_log "dry run: printing commands instead of running them"

# --- 1. which Jetson, which JetPack -----------------------------------------------------------------
edge_step "detect the Jetson and its JetPack"
release_file="${EDGE_TEGRA_RELEASE_FILE:-/etc/nv_tegra_release}"
if [ ! -r "$release_file" ]; then
    edge_die "this is not a Jetson: $release_file not found (it names the L4T release JetPack installed)" \
        "run this script on a Jetson flashed with JetPack 5 or 6. On a desktop or laptop install edge with \`bash scripts/bootstrap.sh\` (or \`pip install -e '.[dev]'\`) instead."
fi
l4t="$(edge_l4t_release "$release_file")"
[ -n "$l4t" ] || edge_die "cannot read the L4T release from $release_file (first line: '$(head -n 1 "$release_file")')" \
    "expected a line like '# R36 (release), REVISION: 4.0, ...'; reflash with JetPack 5 or 6 or repair that file"
jetpack="$(edge_jetpack_for_l4t "$l4t")"
l4t_major="${l4t%%.*}"
# The TensorRT and CUDA versions follow the L4T release, not its major: L4T 36.2/36.3 (JetPack 6.0)
# ship TensorRT 8.6 + CUDA 12.2, L4T 36.4+ (JetPack 6.1+) TensorRT 10.3 + CUDA 12.6.
trt_version="$(edge_trt_for_l4t "$l4t")"
cuda_version="$(edge_cuda_for_l4t "$l4t")"
trt_major="${trt_version%%.*}"
case "$l4t_major" in
    35) jp=5; py_expected="3.8" ;;
    36) jp=6; py_expected="3.10" ;;
    32) edge_die "L4T $l4t is JetPack $jetpack (Python 3.6, TensorRT 8.2): this script supports JetPack 5 and 6" \
            "upgrade to JetPack 5 (Xavier) or 6 (Orin); on a Jetson Nano, edge-run works best-effort with an engine built by trtexec (see deploy/README.md)" ;;
    *) edge_die "L4T $l4t (JetPack ${jetpack:-unknown}) is not one this script knows (JetPack 5 = L4T R35, JetPack 6 = L4T R36)" \
            "install by hand following deploy/README.md, or use a JetPack 5/6 release" ;;
esac
model="$(edge_device_model "${EDGE_DEVICE_MODEL_FILE:-/proc/device-tree/model}")"
edge_log "device: ${model:-unknown Jetson}; L4T $l4t = JetPack $jetpack (TensorRT $trt_major.x, Python $py_expected)"
edge_log "JetPack $jetpack ships TensorRT $trt_version and CUDA $cuda_version"
# TensorRT 8.5 and older cannot import ONNX NonMaxSuppression, which the bundled model carries.
case "$trt_version" in
    8.4|8.5) trt_imports_onnx_nms=0 ;;
    *) trt_imports_onnx_nms=1 ;;
esac

arch="$(uname -m)"
if [ "$arch" != "aarch64" ]; then
    if [ "$EDGE_DRY_RUN" = "1" ]; then
        edge_warn "this machine is $arch, not aarch64: a real run stops here (dry run goes on)"
    else
        edge_die "this machine is $arch, not a Jetson (aarch64), although $release_file exists" \
            "run this script on the Jetson itself; on a desktop use scripts/bootstrap.sh"
    fi
fi

# --- 2. system packages ------------------------------------------------------------------------------
read -r -a cuda_packages <<< "$(edge_cuda_packages "$cuda_version")"
apt_packages=(
    python3-venv python3-dev python3-pip build-essential pkg-config
    "${cuda_packages[@]}"
    "libnvinfer$trt_major" "libnvinfer-plugin$trt_major" "libnvonnxparsers$trt_major" python3-libnvinfer
    nvidia-l4t-gstreamer gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    v4l-utils
)
case "$opencv" in
    jetpack) apt_packages+=(nvidia-opencv) ;;
    ubuntu) apt_packages+=(python3-opencv) ;;
esac
if [ "$skip_apt" = "1" ]; then
    edge_log "skipping system packages (--skip-apt)"
else
    edge_step "install system packages (JetPack $jp)" \
        "check the network and NVIDIA's apt source (/etc/apt/sources.list.d/nvidia-l4t-apt-source.list, 'r$l4t_major.x'), run \`sudo apt-get update\`, then re-run; or pass --skip-apt if they are installed"
    edge_sudo apt-get update
    if [ "$EDGE_DRY_RUN" != "1" ]; then
        # The L4T release decided the packages; apt-cache only confirms that NVIDIA's source offers them.
        for pkg in "libnvinfer$trt_major" "${cuda_packages[0]}"; do
            candidate="$(edge_apt_candidate "$pkg")"
            [ -n "$candidate" ] || edge_die "apt offers no $pkg, which JetPack $jetpack (L4T $l4t) ships (TensorRT $trt_version, CUDA $cuda_version)" \
                "check NVIDIA's apt source (/etc/apt/sources.list.d/nvidia-l4t-apt-source.list names 'r$l4t_major.$(edge_l4t_minor "$l4t")'), run \`sudo apt-get update\`, then re-run"
            edge_log "apt offers $pkg $candidate"
        done
        candidate="$(edge_apt_candidate "libnvinfer$trt_major")"
        [[ "$candidate" == "$trt_version".* ]] || edge_warn "apt offers libnvinfer$trt_major $candidate; JetPack $jetpack ships TensorRT $trt_version"
    fi
    edge_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${apt_packages[@]}"
fi

# --- 3. CUDA toolkit paths (PyCUDA compiles against them) --------------------------------------------
if [ -z "${EDGE_CUDA_HOME:-}" ] && [ ! -e "$cuda_home/bin/nvcc" ] && [ -e "/usr/local/cuda-$cuda_version/bin/nvcc" ]; then
    cuda_home="/usr/local/cuda-$cuda_version"  # the /usr/local/cuda link is missing; JetPack's CUDA is here
fi
edge_step "check the CUDA toolkit at $cuda_home"
if [ "$EDGE_DRY_RUN" != "1" ]; then
    for needed in "$cuda_home/bin/nvcc" "$cuda_home/include/cuda.h"; do
        [ -e "$needed" ] || edge_die "$needed not found: PyCUDA cannot be built without the CUDA toolkit" \
            "sudo apt-get install ${cuda_packages[*]} (JetPack's CUDA $cuda_version; not nvidia-cuda-dev by bare name, which Ubuntu's own CUDA package can shadow), or set EDGE_CUDA_HOME to where CUDA is (default /usr/local/cuda)"
    done
fi
if [ "$EDGE_DRY_RUN" != "1" ]; then
    edge_step "check JetPack's Python and TensorRT bindings" \
        "sudo apt-get install python3-libnvinfer (JetPack's TensorRT for $python); re-run"
    py_found="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$py_found" != "$py_expected" ]; then
        edge_warn "$python is Python $py_found; JetPack $jp's TensorRT bindings are built for Python $py_expected"
    fi
    "$python" -c "import tensorrt" || edge_die "JetPack's TensorRT Python bindings are not importable by $python" \
        "sudo apt-get install python3-libnvinfer (and do not run this script inside another venv or conda)"
fi
cuda_env=(
    "CUDA_ROOT=$cuda_home" "CUDA_HOME=$cuda_home" "PATH=$cuda_home/bin:$PATH"
    "CPATH=$cuda_home/include${CPATH:+:$CPATH}"
    "LIBRARY_PATH=$cuda_home/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
)

# --- 4. the virtual environment ----------------------------------------------------------------------
edge_step "create or reuse the virtual environment $venv" \
    "check that $python exists (sudo apt-get install python3-venv) and that $(dirname "$venv") is writable"
if [ -f "$venv/pyvenv.cfg" ]; then
    if ! grep -Eq '^include-system-site-packages *= *true' "$venv/pyvenv.cfg"; then
        edge_die "$venv exists but was made without --system-site-packages, so JetPack's TensorRT and GStreamer OpenCV are invisible in it" \
            "remove it (rm -rf '$venv') and re-run, or pass --venv with a new directory"
    fi
    edge_log "reusing $venv (it sees the system site-packages)"
else
    parent="$(dirname "$venv")"
    if [ ! -d "$parent" ] || [ ! -w "$parent" ]; then
        edge_sudo mkdir -p "$venv"
        edge_sudo chown "$(id -un):$(id -gn)" "$venv"
    fi
    edge_run "$python" -m venv --system-site-packages "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
constraints="$venv/edge-constraints.txt"
build_constraints="$venv/edge-build-constraints.txt"
# Runtime and build constraints are kept apart. What the venv may run (PIP_CONSTRAINT): NumPy 1.x, because
# JetPack's OpenCV and TensorRT bindings are built against it (NumPy 2 breaks both), and PyCUDA below 2026
# on Python < 3.10 (2026.1 says it supports 3.8 but uses zip(strict=), new in 3.10). What PyCUDA's
# isolated build may use (PIP_BUILD_CONSTRAINT, pip >= 25.3; older pips apply PIP_CONSTRAINT there):
# PyCUDA >= 2024.1.2 needs NumPy >= 1.24 to build; built against 1.x like the runtime.
cuda_env+=("PIP_CONSTRAINT=$constraints" "PIP_BUILD_CONSTRAINT=$build_constraints")
edge_write_file "$constraints" "numpy<2
pycuda<2026; python_version < \"3.10\""
edge_write_file "$build_constraints" "numpy>=1.24,<2"
edge_run "${pip[@]}" install --upgrade pip setuptools wheel

# --- 5. PyCUDA, built against this device's CUDA ----------------------------------------------------
edge_step "build PyCUDA against $cuda_home" \
    "the compiler output above names the missing piece: usually ${cuda_packages[*]} or python3-dev (sudo apt-get install ...); then re-run"
if [ "$EDGE_DRY_RUN" != "1" ] && "$venv/bin/python" -c "import pycuda.driver" >/dev/null 2>&1; then
    edge_log "PyCUDA is already importable in $venv"
else
    edge_run env "${cuda_env[@]}" "${pip[@]}" install --no-cache-dir -c "$constraints" "pycuda>=2021.1"
fi

# --- 6. edge itself, without torch and without pip's OpenCV -------------------------------------------
edge_step "install edge[$extras] from $root" \
    "read pip's message above; a missing wheel for aarch64 usually means a missing -dev package (sudo apt-get install ...)"
[ -f "$root/pyproject.toml" ] || edge_die "$root/pyproject.toml not found: this script installs edge from the checkout it lives in" \
    "run deploy/setup-jetson.sh from a full clone of the edge repository"
spec="$root"
[ -n "$extras" ] && spec="${root}[$extras]"
if [ "$editable" = "1" ]; then
    edge_run env "${cuda_env[@]}" "${pip[@]}" install -c "$constraints" -e "$spec"
else
    edge_run env "${cuda_env[@]}" "${pip[@]}" install -c "$constraints" "$spec"
fi

edge_step "make sure pip's OpenCV does not shadow JetPack's"
# pyproject.toml skips opencv-python on aarch64, but another package or an earlier manual install may
# have brought it: its cv2 has no GStreamer, so CSI cameras would fail.
if [ "$EDGE_DRY_RUN" != "1" ]; then
    shadowing=()
    for dist in opencv-python opencv-python-headless opencv-contrib-python opencv-contrib-python-headless; do
        if "${pip[@]}" show "$dist" 2>/dev/null | grep "^Location: $venv" >/dev/null; then
            shadowing+=("$dist")
        fi
    done
    if [ "${#shadowing[@]}" -gt 0 ]; then
        edge_warn "removing pip's OpenCV from $venv (${shadowing[*]}): it has no GStreamer"
        edge_run "${pip[@]}" uninstall -y "${shadowing[@]}"
    fi
    if "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
        edge_warn "torch is importable in $venv (not from this script); edge's runtime does not need it"
    fi
fi

# --- 7. power mode: only when asked ------------------------------------------------------------------
if [ "$max_power" = "1" ]; then
    edge_step "maximum performance (--max-power)" \
        "nvpmodel may ask for a reboot to switch modes; reboot and re-run with --skip-apt"
    edge_sudo nvpmodel -m 0
    edge_sudo jetson_clocks
else
    edge_log "power mode and clocks left as they are (--max-power runs nvpmodel -m 0 and jetson_clocks)"
fi

# --- 8. check: an engine is built, opened and run ---------------------------------------------------
# `edge doctor` alone never opens an engine, so a TensorRT backend that cannot open one would pass. The
# self-test builds an engine from a deploy graph, deserializes it and runs it through the TensorRT backend
# (and checks it against ONNX Runtime); setup succeeds only when that works.
if [ "$doctor" = "1" ]; then
    edge_step "edge doctor --selftest: build an engine, open it and run it" \
        "each line above marked 'fail' says how to fix it; fix those and re-run this script with --skip-apt"
    check_cmd=("$venv/bin/edge" doctor --selftest)
    [ "$selftest" = "1" ] || check_cmd+=(--precision fp32 --iterations 5)
    if [ -n "$selftest_model" ]; then
        check_cmd+=(--model "$selftest_model")
    elif [ "$trt_imports_onnx_nms" != "1" ]; then
        edge_run "$venv/bin/edge" doctor
        edge_die "no engine was opened: TensorRT $trt_version (JetPack $jetpack) cannot import the ONNX NonMaxSuppression of the bundled model, so the engine check needs an EfficientNMS_TRT deploy graph" \
            "make it where torch is (edge export + edge surgery --nms efficient, docs/guide.md), copy the .onnx and .json here and re-run: deploy/setup-jetson.sh --skip-apt --selftest-model bccd.trt.onnx (or pass --no-doctor to finish without checks)"
    fi
    edge_run "${check_cmd[@]}"
fi

edge_log "done. Try: $venv/bin/edge-run --source test:// --headless --max-frames 100"
edge_log "as a service: sudo deploy/install-service.sh --venv $venv"
