"""Check mode on the Django Channels stack, run from the controller like a user would (`ansible-playbook --check`):
after converge, `--check --diff` of the whole site has nothing to change; and on a host without uwsgi (here: a
uwsgi binary and an emperor unit under names this host never had) the uwsgi role's check run goes to the end
instead of asking systemd about a unit that does not exist.

Runs before the other test modules (alphabetical order), on the host as converge and idempotence left it."""

from __future__ import annotations

import json
import re

import pytest
from pyweb_molecule import run_converge

RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # molecule may force colours on the nested run


def recap(output: str) -> dict[str, dict[str, int]]:
    return {
        host: {"changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
        for host, changed, unreachable, failed in RECAP.findall(COLOUR.sub("", output))
    }


def changed_tasks(output: str) -> list[str]:
    """The tasks that reported a change, by name (what a failing check names)."""
    tasks, task = [], ""
    for line in COLOUR.sub("", output).splitlines():
        if line.startswith("TASK ["):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed: ") and task not in tasks:
            tasks.append(task)
    return tasks


@pytest.fixture(scope="module")
def check_diff():
    return run_converge("--check", "--diff")


def test_check_diff_after_converge_succeeds(check_diff) -> None:
    assert check_diff.returncode == 0, check_diff.stdout[-3000:] + check_diff.stderr[-2000:]


def test_check_diff_after_converge_changes_nothing(check_diff) -> None:
    hosts = recap(check_diff.stdout)
    assert hosts, check_diff.stdout[-2000:]
    assert {name: counts["changed"] for name, counts in hosts.items()} == dict.fromkeys(hosts, 0), changed_tasks(
        check_diff.stdout
    )


def test_check_mode_on_a_host_without_uwsgi_goes_to_the_end() -> None:
    """Check mode cannot install uwsgi, so its emperor unit does not exist yet: the role treats a missing uwsgi
    binary as a fresh host and skips configuring and starting it, as a real --check on such a host does."""
    never_installed = {
        "uwsgi_binary": "/usr/bin/uwsgi-never-installed",
        "uwsgi_emperor_unit": "pyweb-uwsgi-never-installed",
    }
    checked = run_converge("--check", "--tags", "uwsgi", "--extra-vars", json.dumps(never_installed))
    output = checked.stdout + checked.stderr
    assert "Could not find the requested service" not in output, output[-3000:]
    assert checked.returncode == 0, output[-3000:]
    assert all(counts["failed"] == 0 for counts in recap(checked.stdout).values())
