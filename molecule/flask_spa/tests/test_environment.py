"""Every process of the app sees the same environment: a secret rotated in app_environment (a side run of the
site playbook, the app's configuration and its servers only, so no new release hides a missing restart) reaches
the gunicorn master and each of its workers and the celery worker, read back from /proc/<pid>/environ, while an
HTTP client keeps being answered: gunicorn's master executes itself again in place (same pid, sockets open)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pyweb_molecule import HttpWatcher, environ, example_settings, process_tree

SETTINGS = example_settings("flask_spa")
APP = SETTINGS["app_name"]
HOSTNAME = SETTINGS["nginx_sites"][0]["server_name"][0]
SECRET = "PYWEB_ROTATED_SECRET"
PROGRAMS = {"gunicorn": f"{APP}-web", "celery": f"{APP}-worker"}


def app_processes(host) -> dict[str, list[int]]:
    return {
        what: process_tree(host, int(host.check_output(f"supervisorctl pid {program}")))
        for what, program in PROGRAMS.items()
    }


@pytest.fixture(scope="module")
def rotation(host) -> dict:
    address = host.check_output("hostname -I").split()[0]
    secret = f"rotated-{uuid.uuid4().hex}"
    environment = {**SETTINGS["app_environment"], SECRET: secret}
    before = app_processes(host)
    web = HttpWatcher(address, "/api/health", HOSTNAME)
    web.start()
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "--inventory",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "--tags",
        "app_configure,gunicorn,celery",
        "--extra-vars",
        json.dumps({"app_environment": environment}),
        str(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"),
    ]
    run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    web.finish()
    return {"secret": secret, "run": run, "before": before, "after": app_processes(host), "web": web}


def test_the_rotation_run_succeeds(rotation) -> None:
    run = rotation["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


@pytest.mark.parametrize("what", list(PROGRAMS))
def test_every_process_sees_the_rotated_secret(host, rotation, what) -> None:
    processes, before = rotation["after"][what], rotation["before"][what]
    replaced, replaced_before = processes, before
    if what == "gunicorn":
        assert len(processes) == 1 + SETTINGS["gunicorn_workers"], processes
        # The master keeps its pid, executed again with the new environment (a restart would refuse requests).
        assert processes[0] == before[0], "gunicorn's master was restarted instead of executed again in place"
        replaced, replaced_before = processes[1:], before[1:]
    assert not set(replaced) & set(replaced_before), f"{what} was not restarted for the new environment"
    seen = {pid: environ(host, pid, APP).get(SECRET) for pid in processes}
    assert set(seen.values()) == {rotation["secret"]}, seen


# A restart of gunicorn's master answered 8 requests with 502 here (nginx has no second upstream to retry on).
def test_requests_keep_being_answered_during_the_rotation(rotation) -> None:
    web = rotation["web"]
    assert web.answers > 5
    assert web.failures == []
