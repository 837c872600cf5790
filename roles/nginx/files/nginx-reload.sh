#!/bin/sh
# Reload nginx and prove the new configuration took: usage nginx-reload.sh <pid file> <error log> <timeout s>.
# Success is a worker process the reload started (the master starts new workers only after it applied the new
# configuration); failure prints the [emerg] lines nginx logged since the reload, or says that nothing happened.
set -eu
pid_file=$1 error_log=$2 timeout=$3

children_of() {
    for stat in /proc/[0-9]*/stat; do
        # pid (comm) state ppid ...; nginx's comm has no spaces. A process may end while this loop runs.
        read -r pid _comm _state ppid _rest 2>/dev/null <"$stat" || continue
        if [ "$ppid" = "$1" ]; then echo "$pid"; fi
    done
}

new_emerg_lines() {
    tail -c "+$((log_size + 1))" "$error_log" 2>/dev/null | grep '\[emerg\]' || true
}

master=$(cat "$pid_file" 2>/dev/null || true)
if [ -z "$master" ] || ! kill -0 "$master" 2>/dev/null; then
    # Not running: start it (the configuration was checked with nginx -t before it went live).
    systemctl start nginx
    echo "nginx was not running: started"
    exit 0
fi
workers_before=" $(children_of "$master" | tr '\n' ' ') "
log_size=$(stat -c %s "$error_log" 2>/dev/null || echo 0)

systemctl reload nginx

tenths=0
while [ "$tenths" -lt "$((timeout * 10))" ]; do
    for pid in $(children_of "$master"); do
        case "$workers_before" in
            *" $pid "*) ;;
            *) echo "nginx reloaded: worker $pid runs the new configuration"; exit 0 ;;
        esac
    done
    if [ -n "$(new_emerg_lines)" ]; then break; fi
    sleep 0.1
    tenths=$((tenths + 1))
done

echo "nginx kept its previous configuration, the reload did not take:" >&2
emerg=$(new_emerg_lines)
echo "${emerg:-no new worker within ${timeout}s and no [emerg] line in $error_log}" >&2
exit 1
