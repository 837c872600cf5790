"""The example app under gunicorn (gevent) and supervisor, after converge and side_effect (redeploy, failing
release, rollback). Every check goes through the real socket, the real processes or the files they use.
The flask_spa scenario runs these too, after the same side_effect through the site playbook."""

from __future__ import annotations

import json

import pytest
from pyweb_molecule import children, proc_status

BASE = "/srv/flaskapp"
SOCKET = "/run/flaskapp/gunicorn.sock"
PIDFILE = "/run/flaskapp/gunicorn.pid"
RECORD = "/root/pyweb-app-side-effect.json"


def curl(host, path: str, user: str = "root"):
    prefix = "" if user == "root" else f"runuser -u {user} -- "
    return host.run(f"{prefix}curl -sS --fail --max-time 10 --unix-socket {SOCKET} http://localhost{path}")


@pytest.fixture
def master(host) -> int:
    return int(host.file(PIDFILE).content_string.strip())


@pytest.fixture
def workers(host, master) -> list[int]:
    return children(host, master)


@pytest.fixture
def record(host) -> dict:
    return json.loads(host.file(RECORD).content_string)


def test_supervisor_runs_the_program(host):
    status = host.run("supervisorctl status flaskapp-web")
    assert status.rc == 0, status.stdout
    assert "RUNNING" in status.stdout


def test_workers_are_gevent_workers_of_the_app_user(host, master, workers):
    uid = host.user("flaskapp").uid
    for pid in [master, *workers]:
        real_uid = int(proc_status(host, pid)["Uid"].split()[0])
        assert real_uid == uid, f"process {pid} runs as uid {real_uid}, not flaskapp"
    for pid in workers:
        # The gevent worker loads gevent's compiled hub from the release's venv.
        maps = host.run(f"runuser -u flaskapp -- cat /proc/{pid}/maps").stdout
        assert "/site-packages/gevent/" in maps, f"worker {pid} has not loaded gevent"
    assert 'worker_class = "gevent"' in host.file("/etc/gunicorn/flaskapp.py").content_string


def test_health_answers_json_from_the_current_release(host):
    answer = curl(host, "/api/health")
    assert answer.rc == 0, answer.stderr
    body = json.loads(answer.stdout)
    current = host.file(f"{BASE}/current").linked_to
    assert body["status"] == "ok"
    assert body["release"] == current.rsplit("/", 1)[1]


def test_socket_is_for_the_web_server_group_only(host):
    socket = host.file(SOCKET)
    assert socket.is_socket
    assert socket.user == "flaskapp"
    assert socket.group == "www-data"
    assert socket.mode & 0o007 == 0, oct(socket.mode)
    assert curl(host, "/api/health", user="www-data").rc == 0
    assert curl(host, "/api/health", user="nobody").rc != 0


def test_second_deploy_switched_code_and_workers(record):
    assert record["before"]["release"] == record["first_release"].rsplit("/", 1)[1]
    assert record["second_release"] != record["first_release"]
    assert record["after_v2"]["version"] == "2.0.0"
    assert record["after_v2"]["release"] == record["second_release"].rsplit("/", 1)[1]
    assert record["after_v2_worker_cwds"]
    assert set(record["after_v2_worker_cwds"]) == {record["second_release"]}


def test_failing_release_was_never_current(host, record):
    assert int(record["failed_deploy_rc"]) != 0
    assert len(record["failed"]) == 1
    name, reason = record["failed"][0].split(": ", 1)
    assert "failed its health check" in reason
    assert "HTTP 500" in reason
    assert host.file(f"{BASE}/releases/{name}/.failed").exists
    assert not host.file(f"{BASE}/releases/{name}/.pyweb-release.json").exists


def test_rollback_returned_to_the_first_release(host, record, workers):
    assert host.file(f"{BASE}/current").linked_to == record["first_release"]
    assert record["after_rollback"]["version"] == record["before"]["version"]
    assert record["after_rollback"]["release"] == record["first_release"].rsplit("/", 1)[1]
    assert set(record["after_rollback_worker_cwds"]) == {record["first_release"]}
    for pid in workers:
        cwd = host.check_output(f"runuser -u flaskapp -- readlink /proc/{pid}/cwd")
        assert cwd == record["first_release"]
    assert json.loads(curl(host, "/api/version").stdout)["version"] == record["before"]["version"]


def test_uploads_survive_releases(host):
    kept = host.file(f"{BASE}/shared/uploads/keep-me.txt")
    assert kept.exists
    assert kept.user == "flaskapp"
    assert kept.content_string.strip() == "kept across releases"


def test_code_and_venvs_belong_to_root(host):
    current = host.file(f"{BASE}/current").linked_to
    assert host.file(current).user == "root"
    assert host.file(f"{current}/api/__init__.py").user == "root"
    venv = host.file(f"{current}/.venv").linked_to
    assert venv.startswith(f"{BASE}/venvs/")
    assert host.file(venv).user == "root"
    assert host.run(f"runuser -u flaskapp -- touch {current}/api/evil.py").rc != 0
