"""gunicorn with the uvicorn worker under a hardened systemd unit, after converge and side_effect (a release with
new requirements, one without, a start over a stale socket, a reload through systemd). Every check goes through
the real socket, the real processes, systemd itself or the files they use."""

from __future__ import annotations

import json

import pytest
from pyweb_molecule import children, environ, main_pid, proc_status

BASE = "/srv/asgiapp"
UNIT = "asgiapp-web.service"
SOCKET = "/run/asgiapp/gunicorn.sock"
RECORD = "/root/pyweb-gunicorn-systemd.json"
SWITCH_RECORD = "/root/pyweb-gunicorn-switch.json"


def curl(host, path: str, user: str = "asgiapp"):
    return host.run(f"runuser -u {user} -- curl -sS --fail --max-time 10 --unix-socket {SOCKET} http://localhost{path}")


def as_app(host, command: str) -> str:
    """Read /proc entries of the app's processes as the app user (root in the container lacks CAP_SYS_PTRACE)."""
    return host.check_output(f"runuser -u asgiapp -- {command}")


@pytest.fixture
def master(host) -> int:
    return main_pid(host, UNIT)


@pytest.fixture
def workers(host, master) -> list[int]:
    return children(host, master)


@pytest.fixture
def record(host) -> dict:
    return json.loads(host.file(RECORD).content_string)


def unit_properties(host, *names: str) -> dict[str, str]:
    output = host.check_output(f"systemctl show {UNIT} " + " ".join(f"--property={name}" for name in names))
    return dict(line.split("=", 1) for line in output.splitlines())


def test_unit_is_active_enabled_and_of_type_notify(host):
    props = unit_properties(host, "ActiveState", "SubState", "Type", "NotifyAccess", "UnitFileState", "StatusText")
    assert props["ActiveState"] == "active", props
    assert props["SubState"] == "running", props
    assert props["UnitFileState"] == "enabled", props
    assert props["Type"] == "notify", props
    assert props["NotifyAccess"] == "main", props
    # Only gunicorn's own READY=1 sets this status: systemd saw the arbiter boot.
    assert props["StatusText"] == "Gunicorn arbiter booted", props


def test_unit_file_verifies(host):
    verify = host.run(f"systemd-analyze verify --man=no /etc/systemd/system/{UNIT}")
    assert verify.rc == 0, verify.stderr


def test_unit_is_sandboxed(host, master):
    props = unit_properties(
        host,
        "User",
        "Group",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "RuntimeDirectory",
        "RuntimeDirectoryMode",
        "CapabilityBoundingSet",
    )
    assert props["User"] == "asgiapp", props
    assert props["Group"] == "asgiapp", props
    assert props["NoNewPrivileges"] == "yes", props
    assert props["ProtectSystem"] == "strict", props
    assert props["ProtectHome"] == "yes", props
    assert props["PrivateTmp"] == "yes", props
    assert props["PrivateDevices"] == "yes", props
    assert props["RuntimeDirectory"] == "asgiapp", props
    assert props["CapabilityBoundingSet"] == "", props
    status = proc_status(host, master)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    # The master's view of the file system: / read-only, shared/ writable.
    mounts = {}
    for line in as_app(host, f"cat /proc/{master}/mountinfo").splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
    assert "ro" in mounts["/"], mounts["/"]
    assert "rw" in mounts[f"{BASE}/shared"], mounts.get(f"{BASE}/shared")


def test_master_and_workers_run_as_the_app_user_with_uvicorn(host, master, workers):
    uid = host.user("asgiapp").uid
    for pid in [master, *workers]:
        uids = proc_status(host, pid)["Uid"].split()
        assert uids == [str(uid)] * 4, f"process {pid} runs as uids {uids}, not asgiapp"
    venv = host.file(f"{BASE}/current/.venv").linked_to
    for pid in workers:
        argv = as_app(host, f"cat /proc/{pid}/cmdline").split("\0")
        assert argv[0] == f"{venv}/bin/python", argv
    assert 'worker_class = "uvicorn_worker.UvicornWorker"' in host.file("/etc/gunicorn/asgiapp.py").content_string
    log = host.file(f"{BASE}/shared/logs/gunicorn-error.log").content_string
    assert "Using worker: uvicorn_worker.UvicornWorker" in log


def test_http_through_the_socket_answers_from_the_asgi_app(host, workers):
    answer = curl(host, "/api/health", user="www-data")
    assert answer.rc == 0, answer.stderr
    body = json.loads(answer.stdout)
    current = host.file(f"{BASE}/current").linked_to
    assert body["status"] == "ok"
    assert body["asgi"] == "3.0", "the request did not come through an ASGI server"
    assert body["release"] == current.rsplit("/", 1)[1]
    assert body["pid"] in workers
    assert body["prefix"] == host.file(f"{current}/.venv").linked_to


def test_socket_is_for_the_web_server_group_only(host):
    socket = host.file(SOCKET)
    assert socket.is_socket
    assert socket.user == "asgiapp"
    assert socket.group == "www-data"
    assert socket.mode & 0o007 == 0, oct(socket.mode)
    directory = host.file("/run/asgiapp")
    assert directory.user == "asgiapp"
    assert directory.mode & 0o006 == 0, oct(directory.mode)
    assert curl(host, "/api/health", user="www-data").rc == 0
    assert curl(host, "/api/health", user="nobody").rc != 0


def test_env_file_reaches_the_workers(host, master, workers):
    # The value side_effect_switch.yml rotated to, with spaces and a dollar sign like the first one.
    marker = json.loads(host.file(SWITCH_RECORD).content_string)["environment"]["marker"]
    assert " " in marker
    assert "$" in marker
    for pid in [master, *workers]:
        assert environ(host, pid, "asgiapp")["PYWEB_MARKER"] == marker, pid
    assert json.loads(curl(host, "/api/version").stdout)["marker"] == marker


def test_new_requirements_moved_the_master_into_the_new_venv_in_place_under_load(record):
    v1, v2, load = record["v1"], record["v2"], record["v2_load"]
    assert load["failed"] == 0, load["errors"]
    assert load["ok"] > 0
    assert load["versions"] == ["1.0.0", "2.0.0"]
    assert v2["venv"] != v1["venv"]
    assert v2["master"] == v1["master"], "the master was restarted, not executed again in place"
    assert v2["master_argv0"] == f"{v2['venv']}/bin/python"
    assert not set(v2["workers"]) & set(v1["workers"]), "old workers survived"
    assert v2["answer"]["version"] == "2.0.0"
    assert v2["answer"]["prefix"] == v2["venv"]
    assert v2["answer"]["executable"] == f"{v2['venv']}/bin/python"
    assert v2["answer"]["idna"] == "3.10"
    assert v1["answer"]["idna"] is None
    assert {w["cwd"] for w in v2["workers"].values()} == {v2["current"]}
    assert {w["argv0"] for w in v2["workers"].values()} == {f"{v2['venv']}/bin/python"}


def test_same_requirements_reloaded_the_workers_with_hup(host, record):
    v2, v3 = record["v2"], record["v3"]
    assert v3["venv"] == v2["venv"]
    assert v3["master"] == v2["master"], "the master was restarted where a HUP was enough"
    assert not set(v3["workers"]) & set(v2["workers"]), "old workers survived the reload"
    assert v3["answer"]["version"] == "3.0.0"
    assert {w["cwd"] for w in v3["workers"].values()} == {v3["current"]}
    assert "Handling signal: hup" in host.file(f"{BASE}/shared/logs/gunicorn-error.log").content_string


def test_a_stale_socket_did_not_block_the_start(record):
    after = record["after_stale_socket"]
    assert after["master"] != record["v3"]["master"]
    assert after["answer"]["version"] == "3.0.0"
    assert {w["cwd"] for w in after["workers"].values()} == {after["current"]}


def test_reload_through_systemd_keeps_the_socket_for_the_web_server(record):
    assert record["after_reload"]["version"] == "3.0.0"
