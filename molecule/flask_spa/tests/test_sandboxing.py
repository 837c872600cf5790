"""The sandboxes of supervisord (running gunicorn and celery) and nginx in the Flask + SPA stack: each unit's
`systemd-analyze security` score is no worse than its role's README publishes, nothing was ignored, and the
programs still run as their users and answer: pages through nginx, a celery task through redis."""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
from pathlib import Path

import pytest
import yaml

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SETTINGS = yaml.safe_load((PROJECT / "examples/flask_spa/inventory/group_vars/all.yml").read_text("utf-8"))
APP = SETTINGS["app_name"]
HOSTNAME = SETTINGS["nginx_sites"][0]["server_name"][0]
# unit on the host -> the role whose README publishes its score
UNITS = {"supervisor.service": "supervisor", "nginx.service": "nginx"}


def published_score(role: str, unit: str, codename: str) -> float:
    """The score the role README's Sandboxing table publishes for `unit` on the Debian release `codename`."""
    text = (PROJECT / "roles" / role / "README.md").read_text("utf-8")
    section = text.split("\n## Sandboxing\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    column = next(i for i, title in enumerate(rows[0]) if codename in title.lower())
    return float(next(row for row in rows[2:] if row[0].strip("`") == unit)[column])


def measured_score(host, unit: str) -> float:
    out = host.check_output(f"systemd-analyze security {unit} --no-pager")
    return float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))


def main_pid(host, unit: str) -> int:
    return int(host.check_output(f"systemctl show --property MainPID --value {unit}"))


def proc_status(host, pid: int) -> dict[str, str]:
    status = host.file(f"/proc/{pid}/status").content_string
    return {key: value.strip() for key, value in (line.split(":", 1) for line in status.splitlines() if ":" in line)}


def request(method: str, address: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(address, timeout=30, context=context)
    try:
        headers = {"Host": HOSTNAME, "Content-Type": "application/json"}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


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
    assert request("GET", address, "/")[0] == 200
    status, body = request("POST", address, "/api/tasks/add", json.dumps({"x": 2, "y": 3}).encode())
    assert status == 200, body
    assert json.loads(body)["result"] == 5
