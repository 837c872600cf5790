"""The example app under gunicorn (gevent) and supervisor, after converge and side_effect. Every check goes through
the real socket, the real processes or the files they use. The flask_spa scenario runs these too, after its
rollouts through the site playbook (its tests/test_rollouts.py checks those)."""

from __future__ import annotations

import json

import pytest
from pyweb_molecule import children, proc_status

BASE = "/srv/flaskapp"
SOCKET = "/run/flaskapp/gunicorn.sock"
PIDFILE = "/run/flaskapp/gunicorn.pid"


def curl(host, path: str, user: str = "root"):
    prefix = "" if user == "root" else f"runuser -u {user} -- "
    return host.run(f"{prefix}curl -sS --fail --max-time 10 --unix-socket {SOCKET} http://localhost{path}")


@pytest.fixture
def master(host) -> int:
    return int(host.file(PIDFILE).content_string.strip())


@pytest.fixture
def workers(host, master) -> list[int]:
    return children(host, master)


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


def test_code_and_venvs_belong_to_root(host):
    current = host.file(f"{BASE}/current").linked_to
    assert host.file(current).user == "root"
    assert host.file(f"{current}/api/__init__.py").user == "root"
    venv = host.file(f"{current}/.venv").linked_to
    assert venv.startswith(f"{BASE}/venvs/")
    assert host.file(venv).user == "root"
    assert host.run(f"runuser -u flaskapp -- touch {current}/api/evil.py").rc != 0
