"""Verify redis and the celery programs of the test app with real clients on the test host."""

from __future__ import annotations

import configparser
import json
import re
import socket

import pytest
from pyweb_molecule import environ, process_tree

APP = "celeryapp"
BASE = f"/srv/{APP}"
WORKER = f"{APP}-worker"
BEAT = f"{APP}-beat"
# The scenario's second worker: same app code, base directory and user, gevent pool, own queue.
GEVENT_WORKER = "celerygevent-worker"
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


def test_redis_runs_without_a_user_namespace_on_this_container_host(host):
    """The test image carries no workaround: the role saw a container (virt_capabilities) and wrote the drop-in
    that turns off Debian's PrivateUsers=true, which an unprivileged container cannot set up (status 217/USER)."""
    assert host.service("redis-server").is_running
    dropin = host.file("/etc/systemd/system/redis-server.service.d/pyweb-private-users.conf")
    assert dropin.exists
    assert "PrivateUsers=false" in dropin.content_string
    assert host.check_output("systemctl show -p PrivateUsers redis-server") == "PrivateUsers=no"


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


@pytest.mark.parametrize("program", [WORKER, GEVENT_WORKER, BEAT])
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


@pytest.mark.parametrize("worker", [WORKER, GEVENT_WORKER])
def test_worker_stop_outlasts_the_task_time_limit(host, worker):
    program = program_config(host, worker)
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


@pytest.mark.parametrize(
    ("worker", "pool", "concurrency", "queue"),
    [(WORKER, "prefork", "2", "celery"), (GEVENT_WORKER, "gevent", "10", "gevent")],
)
def test_worker_runs_the_configured_pool(host, worker, pool, concurrency, queue):
    command = program_config(host, worker)["command"]
    assert f" --pool {pool} --concurrency {concurrency} " in command
    assert f" --queues {queue}" in command
    # Recycling pool processes is a prefork matter; the gevent pool has none.
    assert ("--max-tasks-per-child" in command) == (pool == "prefork")
    # The live worker reports the pool it really runs (gevent monkey-patched, green threads).
    script = "import json\nfrom api.tasks import app\nprint(json.dumps(app.control.inspect(timeout=5).stats()))\n"
    stats = host.run(f"{APP_PYTHON} <<'PY'\n{script}PY")
    assert stats.rc == 0, stats.stderr
    reply = json.loads(stats.stdout.strip().splitlines()[-1]) or {}
    answers = [value for name, value in reply.items() if name.startswith(f"{worker}@")]
    assert len(answers) == 1, f"{worker} did not answer inspect stats: {stats.stdout}"
    worker_stats = answers[0]
    assert worker_stats["pool"]["implementation"].endswith(f"{pool}:TaskPool")
    assert worker_stats["pool"]["max-concurrency"] == int(concurrency)


# side_effect.yml started an 8 s task on each worker, made a new release current and notified "pyweb app
# released": the role's handler restarted the worker while the task ran. The task must still have finished in the
# old worker (warm shutdown) with its result stored, and the new worker must run in the new release.
def stored_result(host, task_id: str) -> dict:
    """State, result and completion time (epoch seconds) of a task as the result backend (redis) holds them."""
    script = (
        "import datetime, json\nfrom celery.result import AsyncResult\nfrom api.tasks import app\n"
        f"result = AsyncResult({task_id!r}, app=app)\n"
        "done = result.date_done\n"
        "if done is not None and done.tzinfo is None:\n"
        "    done = done.replace(tzinfo=datetime.timezone.utc)\n"
        'print(json.dumps({"state": result.state, "result": repr(result.result),'
        ' "done": done.timestamp() if done else None}))\n'
    )
    stored = host.run(f"{APP_PYTHON} <<'PY'\n{script}PY")
    assert stored.rc == 0, stored.stderr
    return json.loads(stored.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("worker", [GEVENT_WORKER, WORKER])
def test_deploy_restart_lets_the_running_task_finish(host, worker):
    record_file = host.file(f"/var/tmp/pyweb-celery-deploy-{worker}.json")
    assert record_file.exists, "side_effect.yml did not run (molecule test runs it before verify)"
    record = json.loads(record_file.content_string)
    assert record["state"] == "STARTED", "the task was not running when the release was announced"

    pid = program_pid(host, worker)
    assert pid != record["pid_before"], "the release handler did not restart the worker"
    stored = stored_result(host, record["id"])
    assert (stored["state"], stored["result"]) == ("SUCCESS", "20"), stored
    # It finished after the deploy began and before the handler's restart returned: the restart waited for it.
    assert record["deploy_started"] < stored["done"] < record["handlers_done"], (record, stored)
    # Read as the app user: root in a container lacks CAP_SYS_PTRACE for another user's /proc/<pid>/cwd.
    cwd = host.check_output(f"runuser -u {APP} -- readlink /proc/{pid}/cwd")
    # The secret rotation after the deploys (side_effect.yml) restarts every worker again, into what current is
    # then: the last release, which is at least the one of this deploy.
    assert cwd == host.check_output(f"readlink -f {BASE}/current")
    assert int(cwd.rsplit("/", 1)[-1]) >= int(record["release"])


@pytest.mark.parametrize("program", [WORKER, GEVENT_WORKER, BEAT])
def test_every_process_sees_the_rotated_secret(host, program):
    record_file = host.file("/var/tmp/pyweb-celery-rotation.json")
    assert record_file.exists, "side_effect.yml did not run (molecule test runs it before verify)"
    record = json.loads(record_file.content_string)
    pid = program_pid(host, program)
    assert pid not in record["pids_before"], f"{program} was not restarted for the new environment"
    tree = process_tree(host, pid)
    if program == WORKER:
        assert len(tree) > 1, "the prefork worker has no pool processes"
    # Read as the app user: root in a container lacks CAP_SYS_PTRACE for another user's /proc/<pid>/environ.
    seen = {child: environ(host, child, APP).get("PYWEB_ROTATED_SECRET") for child in tree}
    assert set(seen.values()) == {record["secret"]}, seen


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
