"""Unit tests for roles/daphne/files/daphne-roll.py, the rolling restart of an app's daphne instances.

The tool runs as a real command. The instances' listening sockets are real unix sockets the test holds (as systemd
holds them for daphne-<app>@<n>.socket) and answers HTTP on, so the tool's health checks go through whatever path a
socket has at that moment; `systemctl` is a stand-in on PATH that records each call together with the socket paths
a web server could connect to at that moment. So the tests see what nginx would see during the roll.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "daphne" / "files" / "daphne-roll.py"

# The stand-in systemctl: logs every call as JSON, with the sockets of the socket directory nginx (the group) could
# connect to. `restart` fails for the units named in FAIL_RESTART.
SYSTEMCTL = r"""
import json, os, stat, sys
args = sys.argv[1:]
socket_dir = os.environ["ROLL_SOCKET_DIR"]
visible = sorted(
    name for name in os.listdir(socket_dir) if os.stat(os.path.join(socket_dir, name)).st_mode & stat.S_IWGRP
)
with open(os.environ["ROLL_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({"args": args, "visible": visible}) + "\n")
if args[0] == "show":
    print("4242")
elif args[0] == "restart" and args[1] in os.environ.get("FAIL_RESTART", "").split():
    print(f"Job for {args[1]} failed.", file=sys.stderr)
    sys.exit(1)
"""


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
STARTING = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 8\r\nConnection: close\r\n\r\nstarting"


class HealthSockets:
    """Listening unix sockets <dir>/<n>.sock answering HTTP 200, like healthy instances; an instance in `starting`
    first answers 503 that many times (a new process still loading the app). `requests` counts per instance."""

    def __init__(self, directory: Path, instances: list[str]) -> None:
        self.listeners = []
        self.starting: dict[str, int] = {}
        self.requests: dict[str, int] = dict.fromkeys(instances, 0)
        for instance in instances:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(directory / f"{instance}.sock"))
            (directory / f"{instance}.sock").chmod(0o660)
            listener.listen(16)
            self.listeners.append(listener)
            threading.Thread(target=self.serve, args=(listener, instance), daemon=True).start()

    def serve(self, listener: socket.socket, instance: str) -> None:
        while True:
            try:
                connection, _peer = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(4096)
                self.requests[instance] += 1
                starting = self.starting.get(instance, 0) >= self.requests[instance]
                connection.sendall(STARTING if starting else OK)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


@pytest.fixture
def roll_env(tmp_path: Path) -> Iterator[dict]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f"#!{sys.executable}\n{SYSTEMCTL}", encoding="utf-8")
    systemctl.chmod(0o755)
    socket_dir = tmp_path / "run"
    socket_dir.mkdir()
    sockets = HealthSockets(socket_dir, ["1", "2", "3"])
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "ROLL_SOCKET_DIR": str(socket_dir),
        "ROLL_LOG": str(tmp_path / "systemctl.log"),
    }
    yield {"tmp": tmp_path, "env": env, "socket_dir": socket_dir, "sockets": sockets}
    sockets.close()


def write_config(tmp: Path, socket_dir: Path, bind: str = "unix") -> Path:
    config_dir = tmp / "etc"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "chat.json").write_text(
        json.dumps(
            {
                "app": "chat",
                "bind": bind,
                "unit_prefix": "daphne-chat",
                "instances": ["1", "2", "3"],
                "socket_dir": str(socket_dir),
                "tcp_address": "127.0.0.1",
                "health_path": "/health/",
                "timeout": 1 if bind == "tcp" else 5,
                "workers": ["daphne-chat-worker-archive"],
            }
        ),
        encoding="utf-8",
    )
    return config_dir


def run_roll(roll_env: dict, bind: str = "unix", **extra_env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    config_dir = write_config(roll_env["tmp"], roll_env["socket_dir"], bind)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--app", "chat", "--config-dir", str(config_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**roll_env["env"], **extra_env},
    )
    log = Path(roll_env["env"]["ROLL_LOG"])
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
    return result, calls


def restarts(calls: list[dict]) -> list[tuple[str, list[str]]]:
    return [(call["args"][1], call["visible"]) for call in calls if call["args"][0] == "restart"]


def visible_sockets(socket_dir: Path) -> list[str]:
    return sorted(path.name for path in socket_dir.iterdir() if path.stat().st_mode & 0o777 == 0o660)


def test_dropped_clients_can_only_reach_instances_already_restarted(roll_env) -> None:
    result, calls = run_roll(roll_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert restarts(calls) == [
        # Only the first instance is reachable while it restarts: its clients wait in its backlog. (The stand-in
        # restarts nothing, so no new process makes a socket reachable again before the roll does.)
        ("daphne-chat@1.service", ["1.sock"]),
        # The clients the second one drops can only go to the first, already new.
        ("daphne-chat@2.service", ["1.sock"]),
        ("daphne-chat@3.service", ["1.sock", "2.sock"]),
        ("daphne-chat-worker-archive.service", ["1.sock", "2.sock", "3.sock"]),
    ]
    assert json.loads(result.stdout)["hidden"] == ["2", "3"]
    assert visible_sockets(roll_env["socket_dir"]) == ["1.sock", "2.sock", "3.sock"]


def test_a_failed_restart_gives_every_path_back(roll_env) -> None:
    result, calls = run_roll(roll_env, FAIL_RESTART="daphne-chat@2.service")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["failed"] == "daphne-chat@2.service"
    assert [unit for unit, _visible in restarts(calls)] == ["daphne-chat@1.service", "daphne-chat@2.service"]
    # The instances left on the old code keep serving new clients too.
    assert visible_sockets(roll_env["socket_dir"]) == ["1.sock", "2.sock", "3.sock"]


def test_sockets_an_interrupted_roll_left_hidden_come_back_first(roll_env) -> None:
    socket_dir = roll_env["socket_dir"]
    (socket_dir / "3.sock").chmod(0)
    result, calls = run_roll(roll_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert restarts(calls)[0] == ("daphne-chat@1.service", ["1.sock"])
    assert visible_sockets(socket_dir) == ["1.sock", "2.sock", "3.sock"]


def test_tcp_instances_restart_in_turn_without_hiding(roll_env) -> None:
    # Nothing listens on these ports: the health check fails, which is all this test needs to see the order.
    result, calls = run_roll(roll_env, bind="tcp")
    report = json.loads(result.stdout)
    assert report["hidden"] == []
    assert restarts(calls)[0] == ("daphne-chat@1.service", ["1.sock", "2.sock", "3.sock"])


def test_an_instance_still_starting_is_waited_for(roll_env) -> None:
    # The health probe (the collection's one probe, until healthy) retries a 503 until the instance answers 200.
    roll_env["sockets"].starting["2"] = 2
    result, _calls = run_roll(roll_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert roll_env["sockets"].requests["2"] == 3


def test_an_instance_never_healthy_stops_the_roll_with_the_reason(roll_env) -> None:
    roll_env["sockets"].starting["2"] = 1000
    config_dir = write_config(roll_env["tmp"], roll_env["socket_dir"])
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--app", "chat", "--config-dir", str(config_dir), "--timeout", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=roll_env["env"],
    )
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["failed"] == "daphne-chat@2.service"
    assert report["error"] == "no answer within 1s (HTTP 503) for /health/"
    assert visible_sockets(roll_env["socket_dir"]) == ["1.sock", "2.sock", "3.sock"]
