"""The Flask + SPA example on four hosts reached over SSH: web1 (nginx), app1 and app2 (gunicorn on their private
addresses), worker1 (celery and redis), firewalld on all; then what side_effect.yml's rollouts recorded."""

from __future__ import annotations

import functools
import json
import os

import pytest
import testinfra

WEB, APP1, APP2, WORKER = (f"pyweb-cluster-{name}" for name in ("web1", "app1", "app2", "worker1"))
ADDRESS = {WEB: "172.31.240.10", APP1: "172.31.240.11", APP2: "172.31.240.12", WORKER: "172.31.240.13"}
SITE = "flaskapp.test"
REDIS_PASSWORD = "cluster-scenario-redis-secret"

# One line of Python run on a host: connect to ADDRESS:PORT, send the bytes, print what came back (or the error).
PROBE = (
    "import socket, sys; s = socket.socket(); s.settimeout(3)\n"
    "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(sys.argv[3].encode().decode('unicode_escape')"
    ".encode()); print(s.recv(200).decode(errors='replace').strip())\n"
    "except OSError as e: print('error', type(e).__name__)"
)


@functools.cache
def node(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def probe(client: str, server: str, port: int, send: str = "") -> str:
    return node(client).check_output("python3 -c %s %s %s %s", PROBE, ADDRESS[server], str(port), send)


def test_every_host_runs_its_part_only() -> None:
    assert node(WEB).service("nginx").is_running
    assert not node(WEB).file("/srv/flaskapp").exists
    for app in (APP1, APP2):
        assert node(app).socket(f"tcp://{ADDRESS[app]}:8000").is_listening
        assert node(app).file("/run/flaskapp/gunicorn.sock").is_socket
        assert not node(app).package("nginx").is_installed
        assert not node(app).package("redis-server").is_installed
    assert node(WORKER).service("redis-server").is_running
    assert not node(WORKER).package("nginx").is_installed


def test_requests_through_nginx_reach_both_app_hosts() -> None:
    answers = node(WEB).check_output(
        "for i in $(seq 1 20); do curl -sfk -H 'Host: %s' https://127.0.0.1/api/version; echo; done", SITE
    )
    hosts = {json.loads(line)["host"] for line in answers.splitlines() if line}
    assert hosts == {"app1", "app2"}


def test_nginx_upstream_lists_the_app_hosts_private_addresses() -> None:
    config = node(WEB).check_output("nginx -T 2>/dev/null")
    for app in (APP1, APP2):
        assert f"server {ADDRESS[app]}:8000 max_fails=" in config
    assert " down;" not in config


@pytest.mark.parametrize("app", [APP1, APP2])
def test_the_app_port_answers_the_web_host_and_no_other(app: str) -> None:
    assert probe(WEB, app, 8000, "GET /api/health HTTP/1.0\\r\\n\\r\\n").startswith("HTTP/1.")
    assert probe(WORKER, app, 8000, "GET /api/health HTTP/1.0\\r\\n\\r\\n").startswith("error")


def test_redis_wants_the_password_and_is_closed_to_the_web_host() -> None:
    assert probe(APP1, WORKER, 6379, "PING\\r\\n").startswith("-NOAUTH")
    assert probe(APP1, WORKER, 6379, f"AUTH {REDIS_PASSWORD}\\r\\nPING\\r\\n").startswith("+OK")
    assert probe(WEB, WORKER, 6379, "PING\\r\\n").startswith("error")


def test_firewalld_runs_on_every_host() -> None:
    for name in ADDRESS:
        assert node(name).service("firewalld").is_running, name


@pytest.fixture(scope="module")
def rollouts() -> dict:
    return json.loads(node(WEB).file("/root/pyweb-cluster-rollouts.json").content_string)


def test_the_rolling_rollout_reached_every_app_host_without_a_failed_request(rollouts: dict) -> None:
    rolled = rollouts["rolling_v2"]
    assert rolled["rc"] == 0, rolled["output"]
    load = rolled["load"]
    assert load["failed"] == 0, load["errors"]
    assert load["connections"] >= 10
    assert load["seconds"] >= 30
    # Both hosts answered with the old version and then the new one while the rollout went on.
    assert {answer.split()[0] for answer in load["answers"]} == {"app1", "app2"}, load["answers"]
    assert {answer.split()[1] for answer in load["answers"]} == {"1.0.0", "2.0.0"}, load["answers"]
    assert {answer["version"] for answer in rollouts["versions_after_v2"]} == {"2.0.0"}
    assert {answer["host"] for answer in rollouts["versions_after_v2"]} == {"app1", "app2"}
    # One release id on every app host, and a new one.
    assert len(set(rollouts["current_after_v2"])) == 1
    assert rollouts["current_after_v2"][0] not in rollouts["before"]


def test_a_release_failing_its_live_check_stops_on_the_first_host(rollouts: dict) -> None:
    broken = rollouts["broken"]
    assert broken["rc"] != 0
    assert broken["load"]["failed"] == 0, broken["load"]["errors"]
    assert any(f"stopped at {APP1}" in line for line in broken["output"]), broken["output"]
    first, second = rollouts["after_broken"]
    # The first host is back on 2.0.0's release with the new one marked failed; the second never switched.
    assert first[0] == rollouts["current_after_v2"][0]
    assert len([line for line in first[1:] if line.startswith("failed ")]) == 1
    assert second[0] == rollouts["current_after_v2"][0]
    assert not [line for line in second[1:] if line.startswith("failed ")]
    # Nothing is left drained, and the load saw only 2.0.0 from both hosts.
    assert {answer.split()[1] for answer in broken["load"]["answers"]} == {"2.0.0"}
