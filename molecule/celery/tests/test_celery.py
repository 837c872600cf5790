"""Verify redis and the celery programs of the test app with real clients on the test host."""

from __future__ import annotations

import configparser
import re
import socket

import pytest

APP = "celeryapp"
BASE = f"/srv/{APP}"
WORKER = f"{APP}-worker"
BEAT = f"{APP}-beat"
REDIS_PORT = 6379
LOOPBACK = {"127.0.0.1", "[::1]"}

# Runs as the app user through the app's launcher, like every app process: the broker URL comes from shared/.env.
APP_PYTHON = f"cd {BASE}/current && runuser -u {APP} -- {BASE}/bin/app-env {BASE}/current/.venv/bin/python -"


def redis_password(host) -> str:
    conf = host.file("/etc/redis/redis.conf").content_string
    match = re.search(r'^requirepass "(.*)"$', conf, re.MULTILINE)
    assert match, "the scenario sets redis_requirepass, so redis.conf must hold it"
    return match.group(1)


def program_config(host, name: str) -> configparser.SectionProxy:
    path = host.check_output(f"grep -l '^\\[program:{name}\\]' /etc/supervisor/conf.d/*.conf")
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read_string(host.file(path).content_string)
    return parser[f"program:{name}"]


def program_pid(host, name: str) -> int:
    status = host.run(f"supervisorctl status {name}")
    assert " RUNNING " in status.stdout, status.stdout
    return int(host.check_output(f"supervisorctl pid {name}"))


def test_redis_listens_on_loopback_only(host):
    listeners = host.check_output(f"ss -Hltn '( sport = :{REDIS_PORT} )'").splitlines()
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listeners}
    assert addresses, "redis is not listening"
    assert addresses <= LOOPBACK, f"redis listens beyond loopback: {addresses}"


def test_redis_is_unreachable_from_outside(host):
    address = host.check_output("hostname -I").split()[0]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, REDIS_PORT), timeout=5).close()


def test_redis_requires_the_password(host):
    anonymous = host.run(f"redis-cli -p {REDIS_PORT} ping")
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    authenticated = host.run(f"REDISCLI_AUTH={redis_password(host)} redis-cli -p {REDIS_PORT} ping")
    assert authenticated.stdout.strip() == "PONG"


def redis_setting(host, name: str) -> str:
    """The live value of a redis setting, asked over an authenticated connection."""
    result = host.run(f"REDISCLI_AUTH={redis_password(host)} redis-cli -p {REDIS_PORT} --raw config get {name}")
    assert result.rc == 0, result.stderr
    return result.stdout.split("\n")[1]


def test_redis_config_is_applied(host):
    assert redis_setting(host, "maxmemory") == str(64 * 1024 * 1024)
    assert redis_setting(host, "maxmemory-policy") == "noeviction"
    assert redis_setting(host, "protected-mode") == "yes"
    assert redis_setting(host, "save") == ""


@pytest.mark.parametrize("program", [WORKER, BEAT])
def test_program_runs_as_the_app_user(host, program):
    pid = program_pid(host, program)
    assert host.check_output(f"ps -o user= -p {pid}") == APP
    # The whole process group (prefork pool children included) runs as the app user, never root.
    processes = [line.split() for line in host.check_output("ps -eo pgid=,user=").splitlines()]
    group_users = {user for pgid, user in processes if int(pgid) == pid}
    assert group_users == {APP}


def test_beat_keeps_its_schedule_under_shared(host):
    program_pid(host, BEAT)
    schedule = host.run(f"ls {BASE}/shared/celerybeat-schedule*")
    assert schedule.rc == 0, "beat wrote no schedule file under shared/"


def test_task_round_trips_through_redis(host):
    script = "from api.tasks import add\nprint(add.delay(2, 3).get(timeout=20))\n"
    result = host.run(f"{APP_PYTHON} <<'PY'\n{script}PY")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "5"


def test_worker_stop_outlasts_the_task_time_limit(host):
    program = program_config(host, WORKER)
    time_limit = int(re.search(r"--time-limit (\d+)", program["command"]).group(1))
    assert int(program["stopwaitsecs"]) > time_limit
    assert program["stopsignal"] == "TERM"
    # TERM goes to the main process only (prefork children die on TERM, killing their task); a worker that
    # outlives stopwaitsecs is killed with its whole group.
    assert program["stopasgroup"] == "false"
    assert program["killasgroup"] == "true"
    assert program["user"] == APP
    assert program["directory"] == f"{BASE}/current"
    assert program["command"].startswith(f"{BASE}/bin/app-env {BASE}/current/.venv/bin/celery ")


# The slow task sleeps 5 s; it must be running when the restart starts, and its result must arrive although the
# worker that ran it was restarted (warm shutdown waits for it).
WARM_RESTART = f"""
set -u
out=$(mktemp)
({APP_PYTHON} > "$out" 2>&1 <<'PY'
import time
from api.tasks import slow
r = slow.delay(5)
deadline = time.monotonic() + 20
while r.state != "STARTED" and time.monotonic() < deadline:
    time.sleep(0.1)
print("state", r.state, flush=True)
try:
    print("result", r.get(timeout=60), flush=True)
except Exception as exc:
    print("error", type(exc).__name__, exc, flush=True)
PY
) &
client=$!
i=0
while ! grep -q '^state' "$out" && [ $i -lt 250 ]; do sleep 0.1; i=$((i + 1)); done
echo "pid_before $(supervisorctl pid {WORKER})"
supervisorctl restart {WORKER} >/dev/null
echo "pid_after $(supervisorctl pid {WORKER})"
wait $client
cat "$out"
rm -f "$out"
"""


def test_graceful_restart_lets_a_running_task_finish(host):
    program_pid(host, WORKER)
    result = host.run(WARM_RESTART)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines.get("state") == "STARTED", result.stdout
    assert lines.get("pid_before") != lines.get("pid_after"), "the worker was not restarted"
    assert lines.get("result") == "5", result.stdout
    program_pid(host, WORKER)
