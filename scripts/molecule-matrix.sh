#!/usr/bin/env bash
# Run molecule scenarios in a few parallel lanes: scripts/molecule-matrix.sh <lanes> <unit>...
# A unit is a space-separated list of scenario:distro runs that must run one after the other, because they share
# state on the controller: the same scenario on two distros shares molecule's ephemeral directory, and scenarios
# that deploy the same app share its controller-side wheelhouse. Units are taken in the order given (put the
# longest first), each by the next free lane. Every lane has its own apt cache per distro (apt's lock is not
# shared across containers). Each run's full output goes to build/molecule/<scenario>-<distro>.log; this prints a
# line per run, and the tail of every failed run's log at the end. Exit status 1 when any run failed.
set -euo pipefail

lanes=$1
shift
log_dir=build/molecule
queue_dir=$(mktemp -d)
apt_cache_root=${PYWEB_APT_CACHE:?PYWEB_APT_CACHE must name the host directory of the test hosts apt caches}
trap 'rm -rf "$queue_dir"' EXIT
trap 'trap - INT TERM; kill 0' INT TERM
rm -rf "$log_dir" && mkdir -p "$log_dir"

index=0
for unit in "$@"; do
    printf '%s\n' "$unit" >"$queue_dir/$(printf '%03d' "$index")"
    index=$((index + 1))
done

stamp() { date -u +%H:%M:%S; }

run_lane() {
    local lane=$1 item unit run scenario distro started
    export PYWEB_APT_CACHE=$apt_cache_root/lane-$lane
    for item in "$queue_dir"/[0-9]*; do
        # Claim the unit: rename is atomic, so exactly one lane gets it.
        mv "$item" "$item.lane-$lane" 2>/dev/null || continue
        read -r -a unit <"$item.lane-$lane"
        for run in "${unit[@]}"; do
            scenario=${run%%:*} distro=${run##*:}
            mkdir -p "$PYWEB_APT_CACHE/$distro"
            started=$SECONDS
            echo "$(stamp) lane $lane: $scenario ($distro) started"
            if PYWEB_TEST_DISTRO=$distro molecule test -s "$scenario" >"$log_dir/$scenario-$distro.log" 2>&1; then
                echo "$(stamp) lane $lane: $scenario ($distro) passed in $((SECONDS - started)) s"
            else
                echo "$(stamp) lane $lane: $scenario ($distro) FAILED after $((SECONDS - started)) s"
                touch "$log_dir/$scenario-$distro.failed"
            fi
        done
    done
}

for lane in $(seq "$lanes"); do
    run_lane "$lane" &
done
wait

failed=$(find "$log_dir" -name '*.failed' -printf '%f\n' | sed 's/\.failed$//' | sort)
if [ -n "$failed" ]; then
    for run in $failed; do
        echo "=== last 200 lines of $log_dir/$run.log"
        tail -n 200 "$log_dir/$run.log"
    done
    # Last, so that the end of the output says why even when only its last lines are kept: each failed run's
    # failing tasks with the first lines of what they said, colours stripped and long lines cut.
    for run in $failed; do
        echo "=== why $run failed"
        sed 's/\x1b\[[0-9;]*m//g' "$log_dir/$run.log" | awk '
            /TASK \[/ { task = $0 }
            /fatal: \[|failed: \[|FAILED! =>|ERROR! / { print task; shown = 8 }
            shown > 0 { print substr($0, 1, 600); shown-- }' | tail -n 14
    done
    echo "molecule: failed: $(echo "$failed" | tr '\n' ' ')"
    exit 1
fi
echo "molecule: every run passed ($(find "$log_dir" -name '*.log' | wc -l) runs; logs in $log_dir)"
