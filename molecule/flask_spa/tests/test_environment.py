"""Every process of the app sees the same environment: a secret rotated in app_environment (a side run of the
site playbook, the app's configuration and its servers only, so no new release hides a missing restart) reaches
the gunicorn master and each of its workers and the celery worker, read back from /proc/<pid>/environ, while an
HTTP client keeps being answered."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SETTINGS = yaml.safe_load(
    (PROJECT / "examples" / "flask_spa" / "inventory" / "group_vars" / "all.yml").read_text(encoding="utf-8")
)
APP = SETTINGS["app_name"]
HOSTNAME = SETTINGS["nginx_sites"][0]["server_name"][0]
SECRET = "PYWEB_ROTATED_SECRET"
PROGRAMS = {"gunicorn": f"{APP}-web", "celery": f"{APP}-worker"}


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
    return {
        what: process_tree(host, int(host.check_output(f"supervisorctl pid {program}")))
        for what, program in PROGRAMS.items()
    }


class HttpWatcher(threading.Thread):
    """Asks the API through nginx every 0.2 s (bounded: at most 1500 requests) and records every failure."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.stop = threading.Event()
        self.answers = 0
        self.failures: list[str] = []

    def run(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        while not self.stop.is_set() and self.answers + len(self.failures) < 1500:
            connection = http.client.HTTPSConnection(self.address, timeout=30, context=context)
            try:
                connection.request("GET", "/api/health", headers={"Host": HOSTNAME})
                status = connection.getresponse().status
                self.answers += 1
                if status != 200:
                    self.failures.append(f"HTTP {status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            finally:
                connection.close()
            time.sleep(0.2)


@pytest.fixture(scope="module")
def rotation(host) -> dict:
    address = host.check_output("hostname -I").split()[0]
    secret = f"rotated-{uuid.uuid4().hex}"
    environment = {**SETTINGS["app_environment"], SECRET: secret}
    before = app_processes(host)
    web = HttpWatcher(address)
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
    web.stop.set()
    web.join(60)
    return {"secret": secret, "run": run, "before": before, "after": app_processes(host), "web": web}


def test_the_rotation_run_succeeds(rotation) -> None:
    run = rotation["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


@pytest.mark.parametrize("what", list(PROGRAMS))
def test_every_process_sees_the_rotated_secret(host, rotation, what) -> None:
    processes = rotation["after"][what]
    if what == "gunicorn":
        assert len(processes) == 1 + SETTINGS["gunicorn_workers"], processes
    assert not set(processes) & set(rotation["before"][what]), f"{what} was not restarted for the new environment"
    seen = {pid: environ(host, pid).get(SECRET) for pid in processes}
    assert set(seen.values()) == {rotation["secret"]}, seen


# Known gap (issue 9 section 3): gunicorn takes a new environment only through a restart of its master, and nginx
# has no second upstream to retry on, so requests during the restart answer 502 (8 of them in the run that found it).
# The way out is a HUP that re-reads the environment file into the master (gunicorn's raw_env on reload).
@pytest.mark.xfail(strict=True, reason="gunicorn restarts its master for a new environment: requests get 502 meanwhile")
def test_requests_keep_being_answered_during_the_rotation(rotation) -> None:
    web = rotation["web"]
    assert web.answers > 5
    assert web.failures == []
