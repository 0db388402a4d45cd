#!/usr/bin/env bash
# Build and run edge's container on this Jetson with the recipe and base image its L4T release can run,
# and with the host files a container cannot see on its own.
#
#   deploy/container.sh build  [--tag NAME] [--base IMAGE] [--dry-run]
#   deploy/container.sh run    [--tag NAME] [--dry-run] [EDGE-RUN ARGS...]
#   deploy/container.sh doctor [--tag NAME] [--dry-run] [EDGE DOCTOR ARGS...]   (default: --selftest)
#
# The base follows jetson-containers' l4t_version_compatible: any r35 image on an L4T 35.x host; JetPack 6
# images split at 36.4 (an r36.4 image needs a 36.4+ host, a 36.0-36.3 host needs an r36.3 image, which
# ships TensorRT 8.6 instead of 10.3). A --base the host cannot run is refused.
# `docker run` mounts /etc/nv_tegra_release (engines record the L4T release they were built on: without
# the host's file an engine built on the host is refused in the container as built for another L4T) and
# /tmp/nv_jetson_model, a copy of /proc/device-tree/model (containers mask /proc/device-tree; edge doctor
# reads the copy, as jetson-inference's docker/run.sh arranges).
# --dry-run prints the commands instead of running them (tests point it at fake files with
# EDGE_TEGRA_RELEASE_FILE and EDGE_DEVICE_MODEL_FILE).
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail

EDGE_PROG="container"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"
trap edge_on_error ERR

root="$(cd "$here/.." && pwd)"
model_copy="/tmp/nv_jetson_model"
tag=""
base=""

usage() {
    cat <<'USAGE'
Usage: deploy/container.sh build|run|doctor [options] [ARGS...]

  build             docker build with the Dockerfile and L4T base image this Jetson can run
  run [ARGS...]     run edge-run in the container (ARGS go to edge-run; default --help)
  doctor [ARGS...]  run edge doctor in the container (default: --selftest)

Options:
  --tag NAME        image name (default edge:jp5, edge:jp6.0 on L4T 36.0-36.3, edge:jp6 on 36.4+)
  --base IMAGE      build on this base instead (refused when this host cannot run it)
  --dry-run         print the commands instead of running them
  -h, --help        this help
USAGE
}

[ $# -gt 0 ] || { usage >&2; edge_die "no command given" "use build, run or doctor"; }
command="$1"
shift
case "$command" in
    build|run|doctor) ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; edge_die "unknown command '$command'" "use build, run or doctor" ;;
esac
passthrough=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="${2:?--tag needs an image name}"; shift 2 ;;
        --tag=*) tag="${1#*=}"; shift ;;
        --base) base="${2:?--base needs an image, e.g. nvcr.io/nvidia/l4t-jetpack:r36.4.0}"; shift 2 ;;
        --base=*) base="${1#*=}"; shift ;;
        --dry-run) EDGE_DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; passthrough+=("$@"); break ;;
        *) passthrough+=("$1"); shift ;;
    esac
done
if [ -n "$base" ] && [ "$command" != "build" ]; then
    edge_die "--base applies to build only" "build with --base, then run with the same --tag"
fi

release_file="${EDGE_TEGRA_RELEASE_FILE:-/etc/nv_tegra_release}"
[ -r "$release_file" ] || edge_die "this is not a Jetson: $release_file not found" \
    "run this on a Jetson with JetPack 5 or 6 and Docker (with the NVIDIA container runtime)"
l4t="$(edge_l4t_release "$release_file")"
[ -n "$l4t" ] || edge_die "cannot read the L4T release from $release_file" \
    "expected a line like '# R36 (release), REVISION: 4.0, ...'"
case "$l4t" in
    35.*) dockerfile="Dockerfile.jp5"; default_base="nvcr.io/nvidia/l4t-jetpack:r35.4.1"; default_tag="edge:jp5" ;;
    36.*)
        dockerfile="Dockerfile.jp6"
        if [ "$(edge_l4t_minor "$l4t")" -lt 4 ]; then
            default_base="nvcr.io/nvidia/l4t-jetpack:r36.3.0"; default_tag="edge:jp6.0"
        else
            default_base="nvcr.io/nvidia/l4t-jetpack:r36.4.0"; default_tag="edge:jp6"
        fi ;;
    *) edge_die "L4T $l4t has no edge container recipe (JetPack 5 = L4T 35, JetPack 6 = L4T 36)" \
        "use deploy/setup-jetson.sh on JetPack 5 or 6, or follow deploy/README.md" ;;
esac
tag="${tag:-$default_tag}"
base="${base:-$default_base}"
base_l4t="${base##*:r}"
base_l4t="${base_l4t%%-*}"
if ! edge_l4t_image_compatible "$base_l4t" "$l4t"; then
    edge_die "$base (L4T $base_l4t) cannot run on this host's L4T $l4t" \
        "leave --base out ($default_base suits this host); JetPack 6 images split at 36.4: r36.4 images need an L4T 36.4+ host"
fi
edge_log "L4T $l4t = JetPack $(edge_jetpack_for_l4t "$l4t"): $dockerfile on $base (TensorRT $(edge_trt_for_l4t "$base_l4t")), image $tag"

host_files=(
    -v "$release_file:/etc/nv_tegra_release:ro"
    -v "$model_copy:/tmp/nv_jetson_model:ro"
)

case "$command" in
    build)
        edge_step "docker build $tag" "read docker's message above; the base image must be pullable (docker login nvcr.io is not needed for l4t-jetpack)"
        edge_run docker build -f "$root/deploy/$dockerfile" --build-arg "BASE_IMAGE=$base" -t "$tag" "$root"
        ;;
    run|doctor)
        edge_step "copy the device model for the container" "check that /tmp is writable"
        edge_write_file "$model_copy" "$(edge_device_model "${EDGE_DEVICE_MODEL_FILE:-/proc/device-tree/model}")"
        devices=()
        for dev in /dev/video[0-9]*; do
            [ -e "$dev" ] && devices+=(--device "$dev")
        done
        edge_step "docker run $tag" "build the image first: deploy/container.sh build"
        if [ "$command" = "run" ]; then
            [ "${#passthrough[@]}" -gt 0 ] || passthrough=(--help)
            edge_run docker run --rm -it --runtime nvidia --network host "${host_files[@]}" \
                -v /tmp/argus_socket:/tmp/argus_socket "${devices[@]}" -v "$PWD:/data" "$tag" "${passthrough[@]}"
        else
            [ "${#passthrough[@]}" -gt 0 ] || passthrough=(--selftest)
            edge_run docker run --rm --runtime nvidia "${host_files[@]}" -v "$PWD:/data" \
                --entrypoint /opt/edge/venv/bin/edge "$tag" doctor "${passthrough[@]}"
        fi
        ;;
esac
