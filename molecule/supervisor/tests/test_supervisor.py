"""pyweb.stack.supervisor after converge and side_effect: what runs, as whom, what restarted, and what was refused."""

from __future__ import annotations

import json
import re

import pytest

CONFIG = "/etc/supervisor/supervisord.conf"
SUPERVISORCTL = f"supervisorctl --configuration {CONFIG}"
SOCKET = "/run/supervisor.sock"
TEST_USER = "pyweb-test"
ADMIN = "supervisor:molecule-admin-secret"
RECORD = "/var/tmp/pyweb-supervisor-side-effect.json"


def supervisorctl_bin(host) -> str:
    """supervisorctl of whichever install method the scenario ran with."""
    venv = "/opt/supervisor/venv/bin/supervisorctl"
    return venv if host.file(venv).exists else "/usr/bin/supervisorctl"


def ctl(host, *args: str):
    return host.run(" ".join([supervisorctl_bin(host), "--configuration", CONFIG, *args]))


def program_pid(host, name: str) -> int:
    result = ctl(host, "pid", name)
    assert result.rc == 0, result.stderr
    pid = int(result.stdout.strip())
    assert pid > 0, f"{name} has no running process"
    return pid


def proc_environ(host, pid: int) -> dict[str, str]:
    raw = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


def proc_uid(host, pid: int) -> int:
    status = host.file(f"/proc/{pid}/status").content_string
    return int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))


def pids_of(lines: list[str]) -> dict[str, str]:
    """`name pid` lines of the side_effect snapshots (checksum lines are left out)."""
    return dict(line.split() for line in lines if len(line.split()) == 2 and line.split()[1].isdigit())


@pytest.fixture(scope="module")
def record(host) -> dict:
    return json.loads(host.file(RECORD).content_string)


def test_supervisord_runs_as_root_from_its_unit(host):
    service = host.service("supervisor")
    assert service.is_running
    assert service.is_enabled
    assert host.file("/etc/systemd/system/supervisor.service").contains("--nodaemon --configuration " + CONFIG)
    main_pid = int(host.check_output("systemctl show --property MainPID --value supervisor"))
    cmdline = host.file(f"/proc/{main_pid}/cmdline").content_string.split("\0")
    assert any(arg.endswith("/supervisord") for arg in cmdline), cmdline
    assert proc_uid(host, main_pid) == 0


def test_control_socket_is_root_only(host):
    socket = host.file(SOCKET)
    assert socket.is_socket
    assert socket.mode == 0o700
    assert socket.user == "root"
    assert socket.group == "root"


def test_unprivileged_user_cannot_control_supervisord(host):
    result = host.run(f"runuser -u {TEST_USER} -- {supervisorctl_bin(host)} --configuration {CONFIG} status")
    assert result.rc != 0
    assert "Permission denied" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["web", "ticker", "other-sleeper"])
def test_programs_run_unprivileged(host, name):
    status = ctl(host, "status", name)
    assert " RUNNING " in status.stdout, status.stdout
    uid = proc_uid(host, program_pid(host, name))
    assert uid != 0
    expected = host.user("nobody" if name == "other-sleeper" else TEST_USER).uid
    assert uid == expected


def test_program_environment_reaches_the_process(host):
    environ = proc_environ(host, program_pid(host, "web"))
    assert environ["PYWEB_GREETING"] == "100% ready, with spaces"
    assert environ["PYWEB_QUOTED"] == 'say "hi" twice'
    assert environ["PYWEB_PORT"] == "8765"
    assert environ["SUPERVISOR_PROCESS_NAME"] == "web"


def test_web_program_answers_on_loopback(host):
    code = host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8765/")
    assert code == "200"


def test_program_files_name_their_owner(host):
    for owner, name in [("supervisor", "web"), ("supervisor", "ticker"), ("molecule-other", "other-sleeper")]:
        conf = host.file(f"/etc/supervisor/conf.d/{owner}--{name}.conf")
        assert conf.exists
        assert conf.contains(f"^; owner: {owner}$")
        assert conf.contains(rf"^\[program:{name}\]$")
        assert conf.mode == 0o644


def test_only_the_changed_program_restarted(host, record):
    before, after = pids_of(record["before"]), pids_of(record["after"])
    assert after["supervisord"] == before["supervisord"], "supervisord itself must not restart"
    assert after["web"] == before["web"], "the unchanged program must keep running"
    assert after["other-sleeper"] == before["other-sleeper"], "another owner's program must keep running"
    assert after["ticker"] != before["ticker"], "the changed program must restart"
    assert proc_environ(host, int(after["ticker"]))["PYWEB_TICK_ROUND"] == "2"
    assert program_pid(host, "ticker") == int(after["ticker"])


def test_nothing_restarted_after_the_recorded_run(host, record):
    """The pids recorded at the end of side_effect are still the live ones (no late handler restarted anything)."""
    recorded = pids_of(record["final"])
    live_daemon = host.check_output("systemctl show --property MainPID --value supervisor")
    assert live_daemon == recorded.pop("supervisord")
    assert {name: str(program_pid(host, name)) for name in recorded} == recorded


def test_a_program_supervisor_gave_up_on_is_started_by_the_next_converge(host, record):
    """web went FATAL while its port was taken; an unchanged converge afterwards starts it again."""
    assert " FATAL " in f" {record['fatal']} ", record["fatal"]
    assert " RUNNING " in f" {record['recovered']} ", record["recovered"]
    assert pids_of(record["final"])["web"] != pids_of(record["after"])["web"]


def test_removed_program_is_gone(host, record):
    assert "doomed" in pids_of(record["before"])
    assert "doomed" not in pids_of(record["after"])
    assert not host.file("/etc/supervisor/conf.d/supervisor--doomed.conf").exists
    status = ctl(host, "status", "doomed")
    assert "no such process" in (status.stdout + status.stderr).lower()
    assert host.run("pgrep -f -x '/bin/sleep infinity' -u pyweb-test").rc == 1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("root", "runs as root"),
        ("option", "autorestrat"),
        ("user", "no-such-user"),
        ("parse", "%(process_num) must be present within process_name"),
    ],
)
def test_bad_programs_are_refused_before_anything_changes(record, case, message):
    refusal = record["refusals"][case]
    assert refusal is not None, f"the {case} case was not refused"
    assert refusal["failed"]
    assert message in json.dumps(refusal)
    # Same pids (nothing restarted) and same checksums of every config file (nothing written) as before the refusals.
    assert record["after_refusals"] == record["after"]


def test_admin_endpoint_needs_credentials(host):
    anonymous = host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9001/")
    wrong = host.check_output("curl -s -o /dev/null -w '%{http_code}' -u supervisor:wrong http://127.0.0.1:9001/")
    admin = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -u {ADMIN} http://127.0.0.1:9001/")
    assert (anonymous, wrong, admin) == ("401", "401", "200")


def test_admin_endpoint_listens_on_loopback_only(host):
    listeners = host.check_output("ss -Hltn 'sport = :9001'").splitlines()
    addresses = [line.split()[3] for line in listeners]
    assert addresses == ["127.0.0.1:9001"]


def test_admin_password_is_stored_hashed(host):
    settings = host.file("/etc/supervisor/inet_http_server.conf")
    assert settings.mode == 0o600
    content = settings.content_string
    assert re.search(r"^password=\{SHA\}[0-9a-f]{40}$", content, re.MULTILINE), content
    assert "molecule-admin-secret" not in content
    assert not host.file(CONFIG).contains("molecule-admin-secret")
