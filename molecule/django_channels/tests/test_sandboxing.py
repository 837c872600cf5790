"""The sandboxes of the uwsgi emperor, the daphne units and nginx in the Django + Channels stack: each unit's
`systemd-analyze security` score is no worse than its role's README publishes, nothing was ignored, and the
programs still run as their users and answer through nginx."""

from __future__ import annotations

import pytest
from pyweb_molecule import example_settings, main_pid, measured_score, proc_status, published_score, request

SETTINGS = example_settings("django_channels")
APP = SETTINGS["app_name"]
HOSTNAME = SETTINGS["nginx_sites"][0]["server_name"][0]
WORKER = SETTINGS["daphne_workers"][0]["name"]
# unit on the host -> (role whose README publishes its score, the row naming it there)
UNITS = {
    "uwsgi-emperor.service": ("uwsgi", "uwsgi-emperor.service"),
    f"daphne-{APP}@1.service": ("daphne", "daphne-<app>@<instance>.service"),
    f"daphne-{APP}-worker-{WORKER}.service": ("daphne", "daphne-<app>-worker-<name>.service"),
    "nginx.service": ("nginx", "nginx.service"),
}
# The nginx master's bounding set (linux/capability.h numbers); SYS_RESOURCE only with nginx_worker_rlimit_nofile.
NGINX_CAPABILITIES = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_SYS_RESOURCE": 24,
}


def pids_of_user(host, user: str, pattern: str) -> list[int]:
    return [int(pid) for pid in host.check_output(f"pgrep -u {user} -f {pattern!r} || true").split()]


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_score_is_no_worse_than_published(host, unit) -> None:
    role, row = UNITS[unit]
    assert host.service(unit).is_running
    assert measured_score(host, unit) <= published_score(role, row, host.system_info.codename)


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_no_setting_was_ignored(host, unit) -> None:
    """systemd logs a setting it cannot apply or parse (in a container too): none may concern these units."""
    log = host.check_output(f"journalctl --boot --no-pager --output cat --unit {unit}")
    assert not [line for line in log.splitlines() if "ignoring" in line.lower()]
    props = dict(
        line.split("=", 1)
        for line in host.check_output(f"systemctl show {unit} --property ProtectSystem,NoNewPrivileges").splitlines()
    )
    assert props == {"ProtectSystem": "strict", "NoNewPrivileges": "yes"}


def test_uwsgi_vassal_runs_as_the_app_user_without_capabilities(host) -> None:
    master = int(host.file(f"/run/uwsgi/{APP}.pid").content_string.strip())
    for pid in [master, *pids_of_user(host, APP, "uwsgi")]:
        status = proc_status(host, pid)
        assert int(status["Uid"].split()[0]) == host.user(APP).uid
        assert int(status["CapEff"], 16) == 0
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"


def test_daphne_runs_as_the_app_user_without_capabilities(host) -> None:
    for unit in [f"daphne-{APP}@1.service", f"daphne-{APP}-worker-{WORKER}.service"]:
        status = proc_status(host, main_pid(host, unit))
        assert int(status["Uid"].split()[0]) == host.user(APP).uid
        assert int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"] == "1"


def test_nginx_workers_run_as_www_data_and_the_master_keeps_only_its_capabilities(host) -> None:
    master = proc_status(host, main_pid(host, "nginx.service"))
    assert int(master["Uid"].split()[0]) == 0
    allowed = sum(1 << number for number in NGINX_CAPABILITIES.values())
    assert int(master["CapBnd"], 16) & ~allowed == 0
    workers = pids_of_user(host, "www-data", "nginx: worker")
    assert workers
    for pid in workers:
        assert int(proc_status(host, pid)["CapEff"], 16) == 0


def test_vassal_writes_only_its_shared_directory_in_the_sandbox(host) -> None:
    """In the emperor's mount namespace (the vassals') the app user may write shared/; even root may not write the
    release or /etc. (Only a root process's namespace can be entered without CAP_SYS_PTRACE, which containers lack.)"""
    enter = f"nsenter --target {main_pid(host, 'uwsgi-emperor.service')} --mount"
    shared = host.run(f"{enter} runuser -u {APP} -- touch /srv/{APP}/shared/.sandbox-probe")
    assert shared.rc == 0, shared.stderr
    for path in [f"/srv/{APP}/current/.sandbox-probe", "/etc/.sandbox-probe"]:
        assert "Read-only file system" in host.run(f"{enter} touch {path}").stderr, path


@pytest.mark.parametrize("unit", [f"daphne-{APP}@1.service", f"daphne-{APP}-worker-{WORKER}.service"])
def test_daphne_may_write_only_the_shared_directory(host, unit) -> None:
    show = host.check_output(f"systemctl show {unit} --property ReadWritePaths --value")
    assert set(show.split()) - {f"-/run/daphne-{APP}"} == {f"/srv/{APP}/shared"}


@pytest.mark.parametrize("path", ["/", "/health/"])
def test_pages_answer_through_the_sandboxed_nginx(host, path) -> None:
    status, _, _ = request(host.check_output("hostname -I").split()[0], path, HOSTNAME)
    assert status == 200
