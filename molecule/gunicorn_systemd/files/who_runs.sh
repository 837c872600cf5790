#!/bin/bash
# Who runs gunicorn for the scenario's app, as KEY=VALUE lines: which manager (the unit, its file, the supervisor
# program), the master pid that manager tracks, the app's answer through the socket, the venv and release current
# resolves to, the interpreters (argv[0]) of master and workers and the workers' working directories (read as the
# app user: root in a container lacks CAP_SYS_PTRACE for another user's /proc/<pid>/cwd).
#   who_runs.sh UNIT
set -u -o pipefail
unit=$1
active=$(systemctl is-active "$unit")
program=$(supervisorctl status asgiapp-web 2>/dev/null | awk '{print $2}')
if [ "$active" = active ]; then
  master=$(systemctl show --property MainPID --value "$unit")
else
  master=$(supervisorctl pid asgiapp-web 2>/dev/null)
fi
workers=$(pgrep -P "$master" | sort -n)
printf 'unit=%s\n' "$active"
printf 'unit_file=%s\n' "$(test -e "/etc/systemd/system/$unit" && echo yes || echo no)"
printf 'program=%s\n' "$program"
printf 'answer=%s\n' "$(curl -sS --max-time 10 --unix-socket /run/asgiapp/gunicorn.sock http://localhost/api/version)"
printf 'master=%s\n' "$master"
printf 'workers=%s\n' "$(echo $workers | tr ' ' ',')"
printf 'venv=%s\n' "$(readlink -f /srv/asgiapp/current/.venv)"
printf 'current=%s\n' "$(readlink -f /srv/asgiapp/current)"
printf 'pythons=%s\n' "$(for pid in $master $workers; do tr '\0' '\n' < "/proc/$pid/cmdline" | head -n 1; done | sort -u | paste -sd,)"
printf 'cwds=%s\n' "$(for pid in $workers; do runuser -u asgiapp -- readlink "/proc/$pid/cwd"; done | sort -u | paste -sd,)"
