"""Every process of the app sees the same environment: a secret rotated in app_environment (a side run of the
site playbook, the app's configuration and the servers only, so no new release hides a missing restart) reaches
each uwsgi worker, each daphne instance and each channels worker, read back from /proc/<pid>/environ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SETTINGS = yaml.safe_load(
    (PROJECT / "examples" / "django_channels" / "inventory" / "group_vars" / "all.yml").read_text(encoding="utf-8")
)
APP = SETTINGS["app_name"]
DAPHNE_UNITS = [f"daphne-{APP}@{n}.service" for n in range(1, SETTINGS["daphne_instances"] + 1)]
WORKER_UNITS = [f"daphne-{APP}-worker-{worker['name']}.service" for worker in SETTINGS["daphne_workers"]]
SECRET = "PYWEB_ROTATED_SECRET"


def process_tree(host, pid: int) -> list[int]:
    tree = [pid]
    for child in host.run(f"ps -o pid= --ppid {pid}").stdout.split():  # exit status 1: no children
        tree.extend(process_tree(host, int(child)))
    return tree


def environ(host, pid: int) -> dict[str, str]:
    # Read as the app user: root in a container lacks CAP_SYS_PTRACE for another user's /proc/<pid>/environ.
    raw = host.check_output(f"runuser -u {APP} -- cat /proc/{pid}/environ | tr '\\0' '\\n'")
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


def app_processes(host) -> dict[str, list[int]]:
    """Every process of the app by what runs it: the uwsgi vassal (master and workers), each daphne instance and
    each channels worker (with any children)."""
    uwsgi_master = int(host.file(f"/run/uwsgi/{APP}.pid").content_string.strip())
    processes = {"uwsgi": process_tree(host, uwsgi_master)}
    for unit in DAPHNE_UNITS + WORKER_UNITS:
        processes[unit] = process_tree(host, int(host.check_output(f"systemctl show -p MainPID --value {unit}")))
    return processes


@pytest.fixture(scope="module")
def rotation(host) -> dict:
    secret = f"rotated-{uuid.uuid4().hex}"
    environment = {**SETTINGS["app_environment"], SECRET: secret}
    before = app_processes(host)
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "--inventory",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "--tags",
        "app_configure,uwsgi,daphne",
        "--extra-vars",
        json.dumps({"app_environment": environment}),
        str(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"),
    ]
    run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    return {"secret": secret, "run": run, "before": before, "after": app_processes(host)}


def test_the_rotation_run_succeeds(rotation) -> None:
    run = rotation["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


# Known gap (issue 9, section 3): the emperor starts the vassal with its own environment and the vassal sets the
# app's values in memory (for-readline + env), so /proc/<pid>/environ of the uwsgi master and its workers never
# holds them (and here it cannot even be read: a master that dropped root is not dumpable, and the container has no
# CAP_SYS_PTRACE). Python's os.environ in the workers does see the new values after the full reload. The way out:
# start vassals (--emperor-wrapper) and re-execute them on reload (binary-path) through a launcher that exports the
# environment file. strict: the mark must go once that is done.
UWSGI_ENVIRON_GAP = pytest.mark.xfail(strict=True, reason="uwsgi sets the app environment in memory only")


@pytest.mark.parametrize("what", [pytest.param("uwsgi", marks=UWSGI_ENVIRON_GAP), *DAPHNE_UNITS, *WORKER_UNITS])
def test_every_process_sees_the_rotated_secret(host, rotation, what) -> None:
    processes = rotation["after"][what]
    if what == "uwsgi":
        assert len(processes) == 1 + SETTINGS["uwsgi_processes"], processes
    # A full reload re-executes the uwsgi master in place (same pid): its workers are the new processes.
    restarted = processes[1:] if what == "uwsgi" else processes
    assert not set(restarted) & set(rotation["before"][what]), f"{what} was not restarted for the new environment"
    seen = {pid: environ(host, pid).get(SECRET) for pid in processes}
    assert set(seen.values()) == {rotation["secret"]}, seen
