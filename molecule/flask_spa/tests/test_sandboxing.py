"""The sandboxes of supervisord (running gunicorn and celery) and nginx in the Flask + SPA stack: each unit's
`systemd-analyze security` score is no worse than its role's README publishes, nothing was ignored, and the
programs still run as their users and answer: pages through nginx, a celery task through redis."""

from __future__ import annotations

import json

import pytest
from pyweb_molecule import example_settings, main_pid, measured_score, proc_status, published_score, request

SETTINGS = example_settings("flask_spa")
APP = SETTINGS["app_name"]
HOSTNAME = SETTINGS["nginx_sites"][0]["server_name"][0]
# unit on the host -> the role whose README publishes its score
UNITS = {"supervisor.service": "supervisor", "nginx.service": "nginx"}


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_score_is_no_worse_than_published(host, unit) -> None:
    assert host.service(unit).is_running
    assert measured_score(host, unit) <= published_score(UNITS[unit], unit, host.system_info.codename)


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_no_setting_was_ignored(host, unit) -> None:
    """systemd logs a setting it cannot apply or parse (in a container too): none may concern these units."""
    log = host.check_output(f"journalctl --boot --no-pager --output cat --unit {unit}")
    assert not [line for line in log.splitlines() if "ignoring" in line.lower()]
    show = host.check_output(f"systemctl show {unit} --property ProtectSystem,NoNewPrivileges")
    assert dict(line.split("=", 1) for line in show.splitlines()) == {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
    }


def test_gunicorn_and_celery_run_under_supervisor_as_the_app_user_without_capabilities(host) -> None:
    programs = host.check_output(f"pgrep -u {APP} -f 'gunicorn|celery'").split()
    assert programs
    names = set()
    for pid in map(int, programs):
        status = proc_status(host, pid)
        assert int(status["Uid"].split()[0]) == host.user(APP).uid
        assert int(status["CapEff"], 16) == 0
        assert status["NoNewPrivs"] == "1"
        # A process of supervisor.service, forked by supervisord: it inherited the unit's sandbox.
        assert "/supervisor.service" in host.file(f"/proc/{pid}/cgroup").content_string
        assert status["Seccomp"] == "2"
        names.add(host.file(f"/proc/{pid}/cmdline").content_string)
    assert any("gunicorn" in name for name in names)
    assert any("celery" in name for name in names)


def test_the_app_writes_shared_and_not_its_release_in_the_sandbox(host) -> None:
    enter = f"nsenter --target {main_pid(host, 'supervisor.service')} --mount"
    shared = host.run(f"{enter} runuser -u {APP} -- touch /srv/{APP}/shared/.sandbox-probe")
    assert shared.rc == 0, shared.stderr
    for path in [f"/srv/{APP}/current/.sandbox-probe", "/etc/.sandbox-probe"]:
        assert "Read-only file system" in host.run(f"{enter} touch {path}").stderr, path


def test_pages_and_a_celery_task_answer(host) -> None:
    address = host.check_output("hostname -I").split()[0]
    assert request(address, "/", HOSTNAME)[0] == 200
    status, _, body = request(
        address,
        "/api/tasks/add",
        HOSTNAME,
        method="POST",
        body=json.dumps({"x": 2, "y": 3}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 200, body
    assert json.loads(body)["result"] == 5
