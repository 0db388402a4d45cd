#!/usr/bin/env bash
# Install edge-run as a systemd service (deploy/edge-run.service): restarted on failure, logs in the
# journal, configured by an environment file. Safe to run again (updates the unit and the launcher,
# never overwrites the environment file).
#
#   sudo deploy/install-service.sh [--venv DIR] [--user USER] [--env-file FILE] [--no-start] [--dry-run]
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail

EDGE_PROG="install-service"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"
trap edge_on_error ERR

venv="/opt/edge/venv"
user="edge"
env_file="/etc/edge/edge-run.env"
unit_dir="/etc/systemd/system"
lib_dir="/usr/local/lib/edge"
unit_name="edge-run.service"
start=1
enable=1
systemctl=1

usage() {
    cat <<'USAGE'
Usage: sudo deploy/install-service.sh [options]

Options:
  --venv DIR        environment with edge installed (default /opt/edge/venv, as deploy/setup-jetson.sh makes)
  --user USER       run the service as USER (default edge: a system user created here, in group video)
  --env-file FILE   what to run (default /etc/edge/edge-run.env; created from deploy/edge-run.env.example
                    when absent, never overwritten)
  --unit-dir DIR    where the unit goes (default /etc/systemd/system)
  --lib-dir DIR     where the launcher goes (default /usr/local/lib/edge)
  --no-start        enable the service for the next boot but do not start it now
  --no-enable       install only: neither enable nor start
  --no-systemctl    do not call systemctl or useradd (staging the files somewhere else)
  --dry-run         print every command instead of running it
  -h, --help        this help
USAGE
}

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv="${2:?--venv needs a directory}"; shift 2 ;;
        --user) user="${2:?--user needs a user name}"; shift 2 ;;
        --env-file) env_file="${2:?--env-file needs a path}"; shift 2 ;;
        --unit-dir) unit_dir="${2:?--unit-dir needs a directory}"; shift 2 ;;
        --lib-dir) lib_dir="${2:?--lib-dir needs a directory}"; shift 2 ;;
        --no-start) start=0; shift ;;
        --no-enable) enable=0; start=0; shift ;;
        --no-systemctl) systemctl=0; shift ;;
        --dry-run) EDGE_DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; edge_die "unknown option '$1'" "see the options above" ;;
    esac
done
for path in "$venv" "$env_file" "$unit_dir" "$lib_dir"; do
    [[ "$path" == /* ]] || edge_die "'$path' is not an absolute path" "systemd needs absolute paths; pass /full/path"
done
# The paths written into the unit (Environment=, EnvironmentFile=, ExecStart=) must mean the same to sed
# and to systemd: spaces split ExecStart= and Environment=, % starts a specifier, \ " ' $ are escapes or
# quotes, & | rewrite sed's replacement. Such paths are refused rather than written half-right.
safe_path='^/[A-Za-z0-9._/+@,:=-]*$'
for pair in "--venv=$venv" "--env-file=$env_file" "--lib-dir=$lib_dir"; do
    opt="${pair%%=*}"
    path="${pair#*=}"
    [[ "$path" =~ $safe_path ]] && continue
    bad=""
    for ((i = 0; i < ${#path}; i++)); do
        c="${path:i:1}"
        [[ "$c" =~ ^[A-Za-z0-9._/+@,:=-]$ ]] && continue
        case "$c" in
            " ") bad+=" a space" ;;
            $'\t') bad+=" a tab" ;;
            $'\n') bad+=" a newline" ;;
            *) bad+=" '$c'" ;;
        esac
    done
    edge_die "$opt $(printf '%q' "$path") has characters the systemd unit cannot hold as written:$bad" \
        "use a path of letters, digits and . _ - + @ , : = / only; e.g. link it: ln -s $(printf '%q' "$path") /opt/edge-link, then $opt /opt/edge-link"
done
[[ "$user" =~ ^[a-z_][a-z0-9_-]*$ ]] || edge_die "--user '$user' is not a valid user name" "pass a name like edge"

edge_step "check the environment $venv" \
    "run deploy/setup-jetson.sh --venv $venv first (it installs edge-run there)"
if [ "$EDGE_DRY_RUN" != "1" ]; then
    [ -x "$venv/bin/edge-run" ] || edge_die "$venv/bin/edge-run not found" \
        "run deploy/setup-jetson.sh --venv $venv first, or pass --venv with the environment where edge is installed"
    if [ "$systemctl" = "1" ] && [ "$(id -u)" -ne 0 ]; then
        edge_die "installing a system service needs root" "run it with sudo: sudo $0 $*"
    fi
fi

if [ "$systemctl" = "1" ]; then
    edge_step "service user $user" "create it by hand (sudo useradd --system --groups video $user) and re-run"
    if id "$user" >/dev/null 2>&1; then
        edge_log "user $user exists; making sure it is in group video"
        edge_run usermod -a -G video "$user"
    else
        edge_run useradd --system --no-create-home --shell /usr/sbin/nologin --groups video "$user"
    fi
    if getent group render >/dev/null 2>&1; then
        edge_run usermod -a -G render "$user"
    fi
fi

edge_step "install the launcher and the unit" "check that $lib_dir and $unit_dir are writable (run with sudo)"
edge_run install -d -m 0755 "$lib_dir" "$unit_dir" "$(dirname "$env_file")"
edge_run install -m 0755 "$here/lib/edge-run-service.sh" "$lib_dir/edge-run-service"
unit="$(sed \
    -e "s|^User=.*|User=$user|" \
    -e "s|^EnvironmentFile=.*|EnvironmentFile=$env_file|" \
    -e "s|^Environment=EDGE_VENV=.*|Environment=EDGE_VENV=$venv|" \
    -e "s|^ExecStart=.*|ExecStart=$lib_dir/edge-run-service|" \
    "$here/edge-run.service")"
edge_write_file "$unit_dir/$unit_name" "$unit"
if [ -e "$env_file" ]; then
    edge_log "keeping the existing $env_file"
else
    edge_run install -m 0644 "$here/edge-run.env.example" "$env_file"
    edge_log "wrote $env_file from the example: edit EDGE_SOURCE / EDGE_MODEL / EDGE_OUTPUT there"
fi

if [ "$systemctl" = "1" ]; then
    edge_step "enable the service" "read \`systemctl status ${unit_name%.service}\` and \`journalctl -u ${unit_name%.service}\`"
    edge_run systemctl daemon-reload
    if [ "$start" = "1" ]; then
        edge_run systemctl enable "$unit_name"
        # restart, not start: a re-install must pick up the new unit and settings
        edge_run systemctl restart "$unit_name"
    elif [ "$enable" = "1" ]; then
        edge_run systemctl enable "$unit_name"
    fi
fi
edge_log "installed. Logs: journalctl -u ${unit_name%.service} -f; settings: $env_file"
