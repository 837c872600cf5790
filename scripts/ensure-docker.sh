#!/usr/bin/env bash
# ensure-docker.sh: make sure a Docker engine answers `docker info`, installing docker.io
# and starting dockerd (root on Debian/Ubuntu) when none is running. Quiet when all is fine.
#
# Env: PYWEB_DOCKER_WAIT  seconds to wait for the engine to answer (default 60)
set -euo pipefail

me=ensure-docker.sh
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { log "error: $*"; exit 1; }

wait_s=${PYWEB_DOCKER_WAIT:-60}
dockerd_log=/var/log/pyweb-dockerd.log
pidfile=/run/pyweb-dockerd.pid

engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

if engine_answers; then
    exit 0
fi

how_to="install Docker (Debian/Ubuntu: 'sudo apt-get install docker.io') and start it ('sudo systemctl start docker', or without systemd 'sudo dockerd &'), then re-run"

if [[ -n ${DOCKER_HOST:-} ]]; then
    die "DOCKER_HOST=$DOCKER_HOST is set but no engine answers there; start that engine or unset DOCKER_HOST"
fi
if [[ $(id -u) -ne 0 ]]; then
    if command -v docker >/dev/null 2>&1 && [[ -S /var/run/docker.sock ]]; then
        die "a Docker engine seems to run but '$(id -un)' may not use it: add the user to the 'docker' group ('sudo usermod -aG docker $(id -un)', then log in again) or run as root"
    fi
    die "no Docker engine answers and we are not root: $how_to"
fi
if [[ ! -r /etc/debian_version ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "no Docker engine answers and this is not Debian/Ubuntu: $how_to"
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    log "installing docker.io with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq docker.io >/dev/null || die "apt-get install docker.io failed"
fi

dockerd_pid=
if [[ -d /run/systemd/system && $(cat /proc/1/comm 2>/dev/null) == systemd ]]; then
    log "starting docker with systemctl"
    systemctl start docker || die "systemctl start docker failed; see 'journalctl -u docker'"
elif [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    dockerd_pid=$(cat "$pidfile")
    log "dockerd (pid $dockerd_pid, started earlier by $me) is not answering yet; waiting"
elif pgrep -x dockerd >/dev/null 2>&1; then
    log "a dockerd we did not start is running but not answering yet; waiting"
else
    log "starting dockerd in the background (no systemd; log: $dockerd_log)"
    # setsid: detach from our session so dockerd outlives this script and its CI step.
    setsid dockerd >>"$dockerd_log" 2>&1 </dev/null &
    dockerd_pid=$!
    echo "$dockerd_pid" >"$pidfile"
fi

deadline=$((SECONDS + wait_s))
until engine_answers; do
    if [[ -n $dockerd_pid ]] && ! kill -0 "$dockerd_pid" 2>/dev/null; then
        tail -n 20 "$dockerd_log" >&2 || true
        rm -f "$pidfile"
        die "dockerd exited during start-up (log: $dockerd_log)"
    fi
    if ((SECONDS >= deadline)); then
        die "Docker engine did not answer within ${wait_s}s (dockerd log: $dockerd_log)"
    fi
    sleep 1
done
log "Docker engine is up ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
