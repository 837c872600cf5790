"""Rolling restart of an app's daphne instances, installed by pyweb.stack.daphne (run as root).

  daphne-roll --app NAME [--config-dir /etc/pyweb/daphne] [--timeout SECONDS]

Reads <config-dir>/NAME.json (written by the role: unit prefix, instance names, where each listens, the health
path, the channels worker units), then restarts one instance at a time: `systemctl restart <prefix>@<n>.service`,
and waits until the instance is active and answers GET <health path> with HTTP 200 on its own socket before the
next one goes down. So at most one instance is away at any moment, and websocket clients it drops reconnect to a
live one. The worker units restart last. Prints one JSON object; exit status 1 when an instance did not come
back (the remaining ones are left untouched, still serving).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def connection_for(config: dict, instance: str, timeout: float) -> http.client.HTTPConnection:
    if config["bind"] == "unix":
        return UnixHTTPConnection(f"{config['socket_dir']}/{instance}.sock", timeout)
    return http.client.HTTPConnection(config["tcp_address"], int(instance), timeout=timeout)


def health_status(config: dict, instance: str, timeout: float) -> int:
    connection = connection_for(config, instance, timeout)
    try:
        connection.request("GET", config["health_path"], headers={"Host": "localhost", "User-Agent": "daphne-roll"})
        return connection.getresponse().status
    finally:
        connection.close()


def systemctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)


def main_pid(unit: str) -> int:
    shown = systemctl("show", "--property=MainPID", "--value", unit).stdout.strip()
    return int(shown or "0")


def wait_until_answering(config: dict, instance: str, unit: str, deadline: float) -> str | None:
    """None once the instance is active and healthy, else why not."""
    last = "no answer"
    while time.monotonic() < deadline:
        if systemctl("is-active", "--quiet", unit).returncode != 0:
            last = f"{unit} is not active"
        else:
            try:
                status = health_status(config, instance, max(1.0, min(10.0, deadline - time.monotonic())))
            except OSError as exc:
                last = f"{exc.strerror or exc}"
            else:
                if status == 200:
                    return None
                last = f"HTTP {status} for {config['health_path']}"
        time.sleep(0.3)
    return last


def roll(config: dict, timeout: float) -> tuple[bool, dict]:
    restarted = []
    for instance in config["instances"]:
        unit = f"{config['unit_prefix']}@{instance}.service"
        before = main_pid(unit)
        result = systemctl("restart", unit)
        if result.returncode != 0:
            return False, {"restarted": restarted, "failed": unit, "error": result.stderr.strip()}
        problem = wait_until_answering(config, instance, unit, time.monotonic() + timeout)
        if problem:
            return False, {"restarted": restarted, "failed": unit, "error": problem}
        restarted.append({"unit": unit, "old_pid": before, "pid": main_pid(unit)})
    for unit in config["workers"]:
        result = systemctl("restart", f"{unit}.service")
        if result.returncode != 0:
            return False, {"restarted": restarted, "failed": unit, "error": result.stderr.strip()}
        restarted.append({"unit": f"{unit}.service", "pid": main_pid(f"{unit}.service")})
    return True, {"restarted": restarted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="daphne-roll", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--app", required=True)
    parser.add_argument("--config-dir", default="/etc/pyweb/daphne")
    parser.add_argument("--timeout", type=float, help="seconds each instance has to answer (default from the config)")
    args = parser.parse_args(argv)
    config_file = Path(args.config_dir) / f"{args.app}.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(json.dumps({"ok": False, "error": f"cannot read {config_file}: {exc}"}))
        return 1
    ok, result = roll(config, args.timeout or float(config["timeout"]))
    result["ok"] = ok
    print(json.dumps(result, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
