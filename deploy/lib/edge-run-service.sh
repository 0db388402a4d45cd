#!/usr/bin/env bash
# The edge-run service's ExecStart: turns the variables of /etc/edge/edge-run.env into edge-run's
# command line (systemd cannot leave out an option whose value is empty) and execs it, so edge-run
# itself gets systemd's SIGTERM and its exit status decides Restart=on-failure.
#
#   EDGE_VENV (set by the unit)  EDGE_MODEL  EDGE_SOURCE  EDGE_OUTPUT  EDGE_SERVE  EDGE_DETECTIONS_OUT
#   EDGE_STATS_JSON  EDGE_HEADLESS (1/0)  EDGE_EXTRA_ARGS (split on whitespace)
#
# `edge-run-service --print` prints the command instead of running it.
set -euo pipefail

venv="${EDGE_VENV:-/opt/edge/venv}"
exe="$venv/bin/edge-run"
cmd=("$exe")
[ -n "${EDGE_MODEL:-}" ] && cmd+=("$EDGE_MODEL")
[ -n "${EDGE_SOURCE:-}" ] && cmd+=(--source "$EDGE_SOURCE")
[ -n "${EDGE_OUTPUT:-}" ] && cmd+=(--output "$EDGE_OUTPUT")
[ -n "${EDGE_SERVE:-}" ] && cmd+=(--serve "$EDGE_SERVE")
[ -n "${EDGE_DETECTIONS_OUT:-}" ] && cmd+=(--detections-out "$EDGE_DETECTIONS_OUT")
[ -n "${EDGE_STATS_JSON:-}" ] && cmd+=(--stats-json "$EDGE_STATS_JSON")
case "${EDGE_HEADLESS:-1}" in
    1|yes|true) cmd+=(--headless) ;;
    0|no|false|"") ;;
    *) echo "edge-run-service: EDGE_HEADLESS='${EDGE_HEADLESS}' must be 1 or 0" >&2; exit 2 ;;
esac
if [ -n "${EDGE_EXTRA_ARGS:-}" ]; then
    read -r -a extra <<< "$EDGE_EXTRA_ARGS"
    cmd+=("${extra[@]}")
fi

if [ "${1:-}" = "--print" ]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    exit 0
fi
if [ ! -x "$exe" ]; then
    echo "edge-run-service: $exe not found: EDGE_VENV=$venv is not an environment with edge installed." \
        "Run deploy/setup-jetson.sh --venv $venv, or reinstall the service with --venv pointing at yours." >&2
    exit 1
fi
exec "${cmd[@]}"
