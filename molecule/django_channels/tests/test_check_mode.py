"""Check mode on the Django Channels stack, run from the controller like a user would (`ansible-playbook --check`):
after converge, `--check --diff` of the whole site has nothing to change; and on a host without uwsgi (here: a
uwsgi binary and an emperor unit under names this host never had) the uwsgi role's check run goes to the end
instead of asking systemd about a unit that does not exist.

Runs before the other test modules (alphabetical order), on the host as converge and idempotence left it."""

from __future__ import annotations

import json

import pytest
from pyweb_molecule import assert_check_diff_changes_nothing, recap, run_converge


@pytest.fixture(scope="module")
def check_diff():
    return run_converge("--check", "--diff")


def test_check_diff_after_converge_changes_nothing(check_diff) -> None:
    assert_check_diff_changes_nothing(check_diff)


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
