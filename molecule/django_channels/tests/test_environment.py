"""Every process of the app sees the same environment: a secret rotated in app_environment (a side run of the
site playbook, the app's configuration and the servers only, so no new release hides a missing restart) reaches
each uwsgi worker, each daphne instance and each channels worker, read back from /proc/<pid>/environ, while an
HTTP client keeps asking through nginx and uwsgi."""

from __future__ import annotations

import json
import uuid

import pytest
from pyweb_molecule import HttpWatcher, environ, example_settings, main_pid, process_tree, run_converge

SETTINGS = example_settings("django_channels")
APP = SETTINGS["app_name"]
HOSTNAME = SETTINGS["nginx_sites"][0]["server_name"][0]
DAPHNE_UNITS = [f"daphne-{APP}@{n}.service" for n in range(1, SETTINGS["daphne_instances"] + 1)]
WORKER_UNITS = [f"daphne-{APP}-worker-{worker['name']}.service" for worker in SETTINGS["daphne_workers"]]
SECRET = "PYWEB_ROTATED_SECRET"


def uwsgi_master(host) -> int:
    return int(host.file(f"/run/uwsgi/{APP}.pid").content_string.strip())


def app_processes(host) -> dict[str, list[int]]:
    """Every process of the app by what runs it: the uwsgi vassal (master and workers), each daphne instance and
    each channels worker (with any children)."""
    processes = {"uwsgi": process_tree(host, uwsgi_master(host))}
    for unit in DAPHNE_UNITS + WORKER_UNITS:
        processes[unit] = process_tree(host, main_pid(host, unit))
    return processes


def secrets_seen(host, pids: list[int]) -> dict[int, str | None]:
    # Read as the app user: root in a container lacks CAP_SYS_PTRACE for another user's /proc/<pid>/environ.
    return {pid: environ(host, pid, APP).get(SECRET) for pid in pids}


@pytest.fixture(scope="module")
def rotation(host) -> dict:
    secret = f"rotated-{uuid.uuid4().hex}"
    environment = {**SETTINGS["app_environment"], SECRET: secret}
    before = app_processes(host)
    web = HttpWatcher(host.check_output("hostname -I").split()[0], "/version/", HOSTNAME)
    web.start()
    try:
        run = run_converge(
            "--tags", "app_configure,uwsgi,daphne", "--extra-vars", json.dumps({"app_environment": environment})
        )
    finally:
        web.finish()
    return {"secret": secret, "run": run, "before": before, "after": app_processes(host), "web": web}


def test_the_rotation_run_succeeds(rotation) -> None:
    run = rotation["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_the_rotated_secret_never_shows_in_the_run_output(rotation) -> None:
    assert rotation["secret"] not in rotation["run"].stdout + rotation["run"].stderr


def test_http_requests_through_uwsgi_keep_being_answered_during_the_rotation(rotation) -> None:
    web = rotation["web"]
    assert web.answers > 10
    assert web.failures == []


@pytest.mark.parametrize("what", ["uwsgi", *DAPHNE_UNITS, *WORKER_UNITS])
def test_every_process_sees_the_rotated_secret(host, rotation, what) -> None:
    processes = rotation["after"][what]
    if what == "uwsgi":
        assert len(processes) == 1 + SETTINGS["uwsgi_processes"], processes
    # A full reload re-executes the uwsgi master in place (same pid): its workers are the new processes.
    restarted = processes[1:] if what == "uwsgi" else processes
    assert not set(restarted) & set(rotation["before"][what]), f"{what} was not restarted for the new environment"
    seen = secrets_seen(host, processes)
    assert set(seen.values()) == {rotation["secret"]}, seen


def test_uwsgi_workers_of_a_chain_reload_keep_the_rotated_secret(host, rotation) -> None:
    """A deploy's chain reload forks new workers from the same master: they inherit its exec-time environment."""
    master = uwsgi_master(host)
    before = process_tree(host, master)[1:]
    reloaded = host.run(f"/usr/bin/python3 /usr/local/libexec/pyweb/uwsgi-reload --app {APP}")
    assert reloaded.rc == 0, reloaded.stdout + reloaded.stderr
    assert json.loads(reloaded.stdout)["action"] == "chain-reload"
    after = process_tree(host, master)
    assert uwsgi_master(host) == master
    assert not set(after[1:]) & set(before)
    seen = secrets_seen(host, after)
    assert set(seen.values()) == {rotation["secret"]}, seen
