"""supervisord's sandbox: its score, what its programs inherit, and what the unit and drop-ins let them write."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

UNIT = "supervisor.service"
README = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / "roles/supervisor/README.md"
TEST_USER = "pyweb-test"
RECORD = "/var/tmp/pyweb-supervisor-side-effect.json"
# Capabilities by number (linux/capability.h): the bounding set the unit grants with the default settings.
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7}


def published_score(readme: Path, unit: str, codename: str) -> float:
    """The score the README's Sandboxing table publishes for `unit` on the Debian release `codename`."""
    section = readme.read_text().split("\n## Sandboxing\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    header = rows[0]
    column = next(i for i, title in enumerate(header) if codename in title.lower())
    row = next(r for r in rows[2:] if r[0].strip("`") == unit)
    return float(row[column])


def measured_score(host, unit: str) -> float:
    out = host.check_output(f"systemd-analyze security {unit} --no-pager")
    return float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))


def ctl(host, *args: str) -> str:
    """supervisorctl of whichever install method the scenario ran with."""
    venv = "/opt/supervisor/venv/bin/supervisorctl"
    binary = venv if host.file(venv).exists else "/usr/bin/supervisorctl"
    return host.check_output(" ".join([binary, "--configuration", "/etc/supervisor/supervisord.conf", *args]))


def main_pid(host) -> int:
    return int(host.check_output(f"systemctl show --property MainPID --value {UNIT}"))


def in_sandbox(host, command: str, user: str = TEST_USER):
    """Run `command` as `user` in supervisord's mount namespace: the file system its programs see."""
    return host.run(f"nsenter --target {main_pid(host)} --mount runuser -u {user} -- /bin/sh -c '{command}'")


@pytest.fixture(scope="module")
def record(host) -> dict:
    return json.loads(host.file(RECORD).content_string)


def test_score_is_no_worse_than_published(host):
    codename = host.system_info.codename
    assert measured_score(host, UNIT) <= published_score(README, UNIT, codename)


def test_unit_is_sandboxed(host):
    show = host.check_output(
        f"systemctl show {UNIT} --property ProtectSystem,ProtectHome,PrivateTmp,NoNewPrivileges,"
        "CapabilityBoundingSet,SystemCallArchitectures"
    )
    props = dict(line.split("=", 1) for line in show.splitlines())
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["NoNewPrivileges"] == "yes"
    assert set(props["CapabilityBoundingSet"].split()) == {"cap_setuid", "cap_setgid", "cap_kill"}


def test_settings_were_applied_not_ignored(host):
    """systemd logs what it cannot apply (in a container too); none of it may concern the unit."""
    log = host.check_output(f"journalctl --boot --no-pager --output cat --unit {UNIT} --unit init.scope")
    assert not [line for line in log.splitlines() if UNIT in line and "ignoring" in line.lower()]
    assert host.run(f"systemd-analyze verify --man=no /etc/systemd/system/{UNIT}").stderr.count("ignoring") == 0


@pytest.mark.parametrize("name", ["web", "ticker"])
def test_programs_inherit_the_sandbox_and_keep_no_capability(host, name):
    pid = int(ctl(host, "pid", name))
    status = host.file(f"/proc/{pid}/status").content_string
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == 0
    assert int(fields["CapPrm"], 16) == 0
    assert int(fields["CapBnd"], 16) == sum(1 << CAP_NUMBERS[c] for c in ("CAP_KILL", "CAP_SETGID", "CAP_SETUID"))
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    assert int(fields["Uid"].split()[0]) == host.user(TEST_USER).uid


def test_program_writes_only_what_it_declares(host):
    declared = in_sandbox(host, "echo probe > /var/lib/pyweb-test/sandbox-probe")
    undeclared = in_sandbox(host, "echo probe > /var/lib/pyweb-test-undeclared/sandbox-probe")
    assert declared.rc == 0, declared.stderr
    assert undeclared.rc != 0
    assert "Read-only file system" in undeclared.stderr
    assert host.file("/var/lib/pyweb-test/sandbox-probe").exists
    assert not host.file("/var/lib/pyweb-test-undeclared/sandbox-probe").exists


def test_root_in_the_sandbox_cannot_change_the_system(host):
    for path in ["/etc/pyweb-sandbox-probe", "/usr/local/pyweb-sandbox-probe", "/srv/pyweb-sandbox-probe"]:
        result = in_sandbox(host, f"echo probe > {path}", user="root")
        assert "Read-only file system" in result.stderr, path


def test_programs_see_a_private_tmp_and_no_home(host):
    host.check_output("touch /tmp/pyweb-host-only /root/pyweb-host-only")
    assert in_sandbox(host, "test -e /tmp/pyweb-host-only").rc == 1
    assert in_sandbox(host, "test -e /root/pyweb-host-only", user="root").rc == 1


def test_drop_in_lists_the_owner_paths(host):
    dropin = host.file(f"/etc/systemd/system/{UNIT}.d/program-paths-supervisor.conf")
    assert dropin.contains("^ReadWritePaths=-/var/lib/pyweb-test$")
    assert dropin.mode == 0o644


def test_new_owner_path_restarts_supervisord_once(host, record):
    assert record["daemon_after_paths"] != record["daemon_before_paths"], "a new path needs a restart"
    assert record["daemon_after_rerun"] == record["daemon_after_paths"], "an unchanged declaration must not restart"
    assert host.file(f"{record['late_dir']}/written").exists
    status = ctl(host, "status", "late-writer")
    assert " RUNNING " in status


def test_relative_program_path_is_refused(record):
    refusal = record["refusals"]["path"]
    assert refusal is not None
    assert refusal["failed"]
    assert "read_write_paths entry" in json.dumps(refusal)


def test_ignored_drop_in_line_is_refused(record):
    """systemd-analyze exits 0 on a line it ignores; the validation fails on it and nothing goes live."""
    refusal = record["bad_unit_line"]
    assert refusal is not None
    assert refusal["failed"]
    assert "not normalized, ignoring" in json.dumps(refusal)
    assert record["dropin_after_bad_line"] is False
