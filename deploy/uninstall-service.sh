#!/usr/bin/env bash
# Stop and remove the edge-run service installed by deploy/install-service.sh. Keeps the environment
# file, the service user and /var/lib/edge (outputs, engines) unless --purge. Safe to run again.
#
#   sudo deploy/uninstall-service.sh [--purge] [--env-file FILE] [--dry-run]
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail

EDGE_PROG="uninstall-service"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"
trap edge_on_error ERR

env_file="/etc/edge/edge-run.env"
unit_dir="/etc/systemd/system"
lib_dir="/usr/local/lib/edge"
state_dir="/var/lib/edge"
unit_name="edge-run.service"
user="edge"
purge=0
systemctl=1

usage() {
    cat <<'USAGE'
Usage: sudo deploy/uninstall-service.sh [options]

Options:
  --purge           also remove the environment file, the state directory and the service user
  --user USER       the service user to remove with --purge (default edge; never a login user)
  --env-file FILE   (default /etc/edge/edge-run.env)
  --unit-dir DIR    (default /etc/systemd/system)
  --lib-dir DIR     (default /usr/local/lib/edge)
  --state-dir DIR   outputs and engines of the service, removed by --purge (default /var/lib/edge)
  --no-systemctl    do not call systemctl or userdel (staged files only)
  --dry-run         print every command instead of running it
  -h, --help        this help
USAGE
}

while [ $# -gt 0 ]; do
    case "$1" in
        --purge) purge=1; shift ;;
        --user) user="${2:?--user needs a user name}"; shift 2 ;;
        --env-file) env_file="${2:?--env-file needs a path}"; shift 2 ;;
        --unit-dir) unit_dir="${2:?--unit-dir needs a directory}"; shift 2 ;;
        --lib-dir) lib_dir="${2:?--lib-dir needs a directory}"; shift 2 ;;
        --state-dir) state_dir="${2:?--state-dir needs a directory}"; shift 2 ;;
        --no-systemctl) systemctl=0; shift ;;
        --dry-run) EDGE_DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; edge_die "unknown option '$1'" "see the options above" ;;
    esac
done
for path in "$env_file" "$unit_dir" "$lib_dir" "$state_dir"; do
    [[ "$path" == /* ]] || edge_die "'$path' is not an absolute path" "pass /full/path"
done
case "$state_dir" in
    /|/var|/var/lib|/usr|/etc|/home) edge_die "--state-dir $state_dir would remove far more than edge's state" "pass the service's own directory" ;;
esac
if [ "$EDGE_DRY_RUN" != "1" ] && [ "$systemctl" = "1" ] && [ "$(id -u)" -ne 0 ]; then
    edge_die "removing a system service needs root" "run it with sudo: sudo $0 $*"
fi

if [ "$systemctl" = "1" ]; then
    edge_step "stop and disable the service" "check \`systemctl status ${unit_name%.service}\`"
    # `disable --now` of a unit that is already gone fails; that is fine when re-running.
    if [ "$EDGE_DRY_RUN" = "1" ] || [ -e "$unit_dir/$unit_name" ]; then
        edge_run systemctl disable --now "$unit_name"
    else
        edge_log "$unit_dir/$unit_name is not installed"
    fi
fi

edge_step "remove the unit and the launcher"
edge_run rm -f "$unit_dir/$unit_name" "$lib_dir/edge-run-service"
if [ "$EDGE_DRY_RUN" = "1" ] || [ -d "$lib_dir" ]; then
    edge_run rmdir --ignore-fail-on-non-empty "$lib_dir"
fi
if [ "$systemctl" = "1" ]; then
    edge_run systemctl daemon-reload
    # reset-failed errs for a unit systemd no longer knows: nothing to reset then.
    edge_run systemctl reset-failed "$unit_name" 2>/dev/null || true
fi

if [ "$purge" = "1" ]; then
    edge_step "purge settings, state and the service user"
    edge_run rm -f "$env_file"
    edge_run rm -rf "$state_dir"
    if [ "$systemctl" = "1" ] && id "$user" >/dev/null 2>&1; then
        uid="$(id -u "$user")"
        if [ "$uid" -ge 1000 ]; then
            edge_warn "not deleting user $user (uid $uid is a login user, not the service's system user)"
        else
            edge_run userdel "$user"
        fi
    fi
else
    edge_log "kept $env_file and $state_dir (pass --purge to remove them)"
fi
edge_log "edge-run service removed"
