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
