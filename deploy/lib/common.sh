# shellcheck shell=bash
# Shared helpers for the deploy/ scripts: logging, stopping with a fix, dry-run aware command runner,
# L4T/JetPack detection. Sourced, never run. Every function is safe under `set -euo pipefail`.
#
# Variables the sourcing script sets before use:
#   EDGE_PROG     name used in messages (default: the script's file name)
#   EDGE_DRY_RUN  1: print every command that would change the system instead of running it
#
# Test hooks (environment; all default to the real system files):
#   EDGE_TEGRA_RELEASE_FILE   /etc/nv_tegra_release
#   EDGE_DEVICE_MODEL_FILE    /proc/device-tree/model

EDGE_PROG="${EDGE_PROG:-$(basename "$0")}"
EDGE_DRY_RUN="${EDGE_DRY_RUN:-0}"
EDGE_STEP="starting"
EDGE_STEP_HINT=""

edge_log() {
    printf '%s: %s\n' "$EDGE_PROG" "$*" >&2
}

edge_warn() {
    printf '%s: warning: %s\n' "$EDGE_PROG" "$*" >&2
}

# edge_die MESSAGE [WHAT-TO-DO]: stop here, saying what went wrong and how to fix it.
edge_die() {
    printf '%s: error: %s\n' "$EDGE_PROG" "$1" >&2
    if [ -n "${2:-}" ]; then
        printf '%s: what to do: %s\n' "$EDGE_PROG" "$2" >&2
    fi
    exit 1
}

# edge_step NAME [HINT]: announce a step; HINT is what the user should do if a command in it fails.
edge_step() {
    EDGE_STEP="$1"
    EDGE_STEP_HINT="${2:-}"
    printf '%s: == %s\n' "$EDGE_PROG" "$1" >&2
}

# Installed with `trap edge_on_error ERR` by each script: the first failing command stops the script
# with the step it belongs to and that step's hint.
edge_on_error() {
    local rc=$? line="${BASH_LINENO[0]:-?}"
    printf '%s: error: step "%s" failed (exit %s, line %s): %s\n' \
        "$EDGE_PROG" "$EDGE_STEP" "$rc" "$line" "${BASH_COMMAND}" >&2
    if [ -n "$EDGE_STEP_HINT" ]; then
        printf '%s: what to do: %s\n' "$EDGE_PROG" "$EDGE_STEP_HINT" >&2
    fi
    printf '%s: the steps before this one are done; re-running the script after the fix is safe.\n' \
        "$EDGE_PROG" >&2
    exit "$rc"
}

# edge_quote ARGS...: the arguments as one shell-readable line (quotes only where needed).
edge_quote() {
    local out="" arg
    for arg in "$@"; do
        if [ -n "$arg" ] && [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            out+=" $arg"
        else
            out+=" '${arg//\'/\'\\\'\'}'"
        fi
    done
    printf '%s' "${out# }"
}

# edge_run CMD ARGS...: run a command that changes the system, or print it under --dry-run.
edge_run() {
    if [ "$EDGE_DRY_RUN" = "1" ]; then
        printf '+ %s\n' "$(edge_quote "$@")"
        return 0
    fi
    printf '%s: + %s\n' "$EDGE_PROG" "$(edge_quote "$@")" >&2
    "$@"
}

# edge_sudo CMD ARGS...: edge_run as root (through sudo unless already root).
edge_sudo() {
    if [ "$(id -u)" -eq 0 ]; then
        edge_run "$@"
    else
        edge_run sudo "$@"
    fi
}

# edge_write_file PATH CONTENT: write a file (or print what would be written under --dry-run).
edge_write_file() {
    if [ "$EDGE_DRY_RUN" = "1" ]; then
        printf '+ write %s <<EOF\n%s\nEOF\n' "$1" "$2"
        return 0
    fi
    printf '%s\n' "$2" > "$1"
}

# edge_l4t_release [FILE]: '35.4.1' from 'R35 (release), REVISION: 4.1, ...'; empty when absent.
edge_l4t_release() {
    local file="${1:-${EDGE_TEGRA_RELEASE_FILE:-/etc/nv_tegra_release}}" line major rev
    [ -r "$file" ] || return 0
    line="$(head -n 1 "$file")"
    if [[ "$line" =~ R([0-9]+)[[:space:]]*\(release\),[[:space:]]*REVISION:[[:space:]]*([0-9.]+) ]]; then
        major="${BASH_REMATCH[1]}"
        rev="${BASH_REMATCH[2]}"
        printf '%s.%s\n' "$major" "${rev%.}"
    fi
}

# edge_jetpack_for_l4t RELEASE: the JetPack version of an L4T release ('35.4.1' -> '5.1.2').
# Unknown point releases map to the major line ('35.9.9' -> '5.x'); empty for unknown majors.
edge_jetpack_for_l4t() {
    case "$1" in
        32.7.*) echo "4.6.x" ;;
        32.*) echo "4.x" ;;
        35.1.*) echo "5.0.2" ;;
        35.2.*) echo "5.1" ;;
        35.3.*) echo "5.1.1" ;;
        35.4.*) echo "5.1.2" ;;
        35.5.*) echo "5.1.3" ;;
        35.6.0) echo "5.1.4" ;;
        35.6.1) echo "5.1.5" ;;
        35.*) echo "5.x" ;;
        36.2.*) echo "6.0-DP" ;;
        36.3.*) echo "6.0" ;;
        36.4.0) echo "6.1" ;;
        36.4.3) echo "6.2" ;;
        36.4.4) echo "6.2.1" ;;
        36.*) echo "6.x" ;;
        38.*) echo "7.x" ;;
        *) echo "" ;;
    esac
}

# edge_device_model [FILE]: '/proc/device-tree/model' without its trailing NUL; empty when absent.
edge_device_model() {
    local file="${1:-${EDGE_DEVICE_MODEL_FILE:-/proc/device-tree/model}}"
    [ -r "$file" ] || return 0
    tr -d '\000' < "$file"
}

# What each L4T release ships (NVIDIA's JetPack release notes). The TensorRT major does NOT follow the
# L4T major: JetPack 6.0 (L4T 36.2/36.3) ships TensorRT 8.6 with CUDA 12.2; only JetPack 6.1+ (L4T 36.4+)
# ships TensorRT 10.3 with CUDA 12.6. JetPack 5.0.2 (L4T 35.1) ships TensorRT 8.4, 5.1+ (35.2+) 8.5.
# The same table lives in edge/doctor/facts.py (_JETPACK_STACK); tests/test_deploy.py keeps them equal.

# edge_l4t_minor RELEASE: '36.3.0' -> '3'; '0' when the release has no minor part.
edge_l4t_minor() {
    local rest="${1#*.}"
    [ "$rest" = "$1" ] && rest="0"
    printf '%s\n' "${rest%%.*}"
}

# edge_trt_for_l4t RELEASE: the TensorRT MAJOR.MINOR that JetPack ships for an L4T release; empty when unknown.
edge_trt_for_l4t() {
    local major="${1%%.*}" minor
    minor="$(edge_l4t_minor "$1")"
    case "$major" in
        35) if [ "$minor" = "1" ]; then echo "8.4"; else echo "8.5"; fi ;;
        36) if [ "$minor" -lt 4 ]; then echo "8.6"; else echo "10.3"; fi ;;
        *) echo "" ;;
    esac
}

# edge_cuda_for_l4t RELEASE: the CUDA MAJOR.MINOR that JetPack ships for an L4T release; empty when unknown.
edge_cuda_for_l4t() {
    local major="${1%%.*}" minor
    minor="$(edge_l4t_minor "$1")"
    case "$major" in
        35) echo "11.4" ;;
        36) if [ "$minor" -lt 4 ]; then echo "12.2"; else echo "12.6"; fi ;;
        *) echo "" ;;
    esac
}

# edge_cuda_packages CUDA_VERSION: JetPack's own apt names for what PyCUDA builds against (nvcc, cuda.h
# and the runtime, cuRAND), e.g. 12.6 -> 'cuda-nvcc-12-6 cuda-cudart-dev-12-6 libcurand-dev-12-6'.
# Never 'nvidia-cuda-dev' by bare name: Ubuntu 22.04 has its own package of that name (CUDA 11.5, in
# /usr/include) whose version sorts above JetPack's meta package, so apt may pick Ubuntu's.
edge_cuda_packages() {
    local v="${1//./-}"
    printf '%s\n' "cuda-nvcc-$v cuda-cudart-dev-$v libcurand-dev-$v"
}

# edge_l4t_image_compatible IMAGE_RELEASE HOST_RELEASE: true when a container built on the L4T base
# IMAGE_RELEASE ('36.4.0') runs on a host with HOST_RELEASE. The rule of jetson-containers'
# l4t_version_compatible: JetPack 6 images split at 36.4 (an r36.4 image needs a 36.4+ host, and a
# 36.0-36.3 image a 36.0-36.3 host); any r35 image runs on any 35.x host; nothing across majors.
edge_l4t_image_compatible() {
    local image_major="${1%%.*}" host_major="${2%%.*}" image_minor host_minor
    [ -n "$image_major" ] && [ "$image_major" = "$host_major" ] || return 1
    image_minor="$(edge_l4t_minor "$1")"
    host_minor="$(edge_l4t_minor "$2")"
    case "$host_major" in
        35) return 0 ;;
        36)
            if [ "$image_minor" -ge 4 ] && [ "$host_minor" -ge 4 ]; then return 0; fi
            if [ "$image_minor" -lt 4 ] && [ "$host_minor" -lt 4 ]; then return 0; fi
            return 1 ;;
        *) return 1 ;;
    esac
}

# edge_apt_candidate PACKAGE: the version apt would install (`apt-cache policy`); empty when none.
edge_apt_candidate() {
    local out
    out="$(apt-cache policy "$1" 2>/dev/null || true)"
    out="$(printf '%s\n' "$out" | awk '/^[[:space:]]*Candidate:/ {print $2; exit}')"
    [ "$out" = "(none)" ] && out=""
    printf '%s\n' "$out"
}
