"""The flask_spa scenario's rollouts (side_effect.yml, through the site playbook): a changed app, a release whose
health check fails, a rollback, and an upload kept across releases. side_effect records what it saw in
/root/pyweb-app-side-effect.json; these check the record and the live host."""

from __future__ import annotations

import json

import pytest
from pyweb_molecule import children

BASE = "/srv/flaskapp"
SOCKET = "/run/flaskapp/gunicorn.sock"
PIDFILE = "/run/flaskapp/gunicorn.pid"
RECORD = "/root/pyweb-app-side-effect.json"


def curl(host, path: str):
    return host.run(f"curl -sS --fail --max-time 10 --unix-socket {SOCKET} http://localhost{path}")


@pytest.fixture
def workers(host) -> list[int]:
    return children(host, int(host.file(PIDFILE).content_string.strip()))


@pytest.fixture
def record(host) -> dict:
    return json.loads(host.file(RECORD).content_string)


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
