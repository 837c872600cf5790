"""Rolling restart of an app's daphne instances, installed by pyweb.stack.daphne (run as root).

  daphne-roll --app NAME [--config-dir /etc/pyweb/daphne] [--timeout SECONDS]

Reads <config-dir>/NAME.json (written by the role: unit prefix, instance names, where each listens, the health
path, the channels worker units), then restarts one instance at a time: `systemctl restart <prefix>@<n>.service`,
and waits until the instance is active and answers GET <health path> with HTTP 200 on its own socket before the
next one goes down. The listening sockets belong to systemd (<prefix>@<n>.socket), so a restarting instance never
refuses a connection: it waits in the socket's backlog for the new process.

On unix sockets the roll also makes every client that loses its instance reconnect onto the new code, once: before
the first restart the sockets of all other instances are hidden (mode 0000: their processes keep their
connections, but the web server's connect fails at once and it goes to the first instance, whose backlog waits for
the new process); each later instance gets its socket back (0660) once its new process answers. So a dropped
client is never moved to an instance still on the old code. A roll that stops early gives every socket back, so
the instances left on the old code keep serving. (On TCP ports nothing can be hidden: instances restart in turn.)

Prints one JSON object; exit status 1 when an instance did not come back (the remaining ones are left untouched,
still serving). The health probe is the collection's one probe (plugins/module_utils/_unixhttp.py, installed by
pyweb.stack.common's host_library.yml), with its one deadline rule.
"""

from __future__ import annotations

import sys

sys.path.insert(0, "/usr/local/lib/pyweb-stack")  # the host library of pyweb.stack.common (host_library.yml)

import argparse
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

from ansible_collections.pyweb.stack.plugins.module_utils._unixhttp import probe, tcp_target

# Each health request may take this long (within the instance's own deadline); a retry follows after RETRY_DELAY.
PER_TRY = 10.0
RETRY_DELAY = 0.3


def socket_path(config: dict, instance: str) -> str:
    """Where the web server connects to the instance."""
    return f"{config['socket_dir']}/{instance}.sock"


# The web server's group may connect (0660, the socket unit's SocketMode=); hidden, nobody but root may.
VISIBLE_MODE = 0o660
HIDDEN_MODE = 0o000


def hide(config: dict, instance: str) -> bool:
    """Take the instance's socket away from the web server: a connect fails at once (EACCES) and nginx tries the
    next server; the connections the instance has stay. False when there was no socket."""
    try:
        os.chmod(socket_path(config, instance), HIDDEN_MODE)
    except FileNotFoundError:
        return False
    return True


def unhide(config: dict, instance: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.chmod(socket_path(config, instance), VISIBLE_MODE)


def probe_target(config: dict, instance: str) -> str:
    """Where the roll asks the instance for its health: its own unix socket, or its TCP port."""
    if config["bind"] == "unix":
        return socket_path(config, instance)
    return tcp_target(config["tcp_address"], instance)


def systemctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)


def main_pid(unit: str) -> int:
    shown = systemctl("show", "--property=MainPID", "--value", unit).stdout.strip()
    return int(shown or "0")


def wait_until_answering(config: dict, instance: str, unit: str, deadline: float) -> str | None:
    """None once the instance is active and healthy (HTTP 200, retried until the deadline), else why not."""

    def ready() -> str | None:
        return None if systemctl("is-active", "--quiet", unit).returncode == 0 else f"{unit} is not active"

    result = probe(
        probe_target(config, instance),
        config["health_path"],
        deadline,
        per_try=PER_TRY,
        expect_json=False,
        ready=ready,
        interval=RETRY_DELAY,
        until_healthy=True,
    )
    return None if result.ok else f"{result.reason} for {config['health_path']}"


def restart_instance(config: dict, instance: str, timeout: float) -> dict | str:
    """The restarted instance, or why it is not back."""
    unit = f"{config['unit_prefix']}@{instance}.service"
    before = main_pid(unit)
    result = systemctl("restart", unit)
    if result.returncode != 0:
        return result.stderr.strip() or f"systemctl restart {unit} failed"
    problem = wait_until_answering(config, instance, unit, time.monotonic() + timeout)
    if problem:
        return problem
    return {"unit": unit, "old_pid": before, "pid": main_pid(unit)}


def roll_order(config: dict) -> tuple[list[str], list[str]]:
    """The instances in restart order, and those whose paths are hidden before the first restart: all but the
    first one on unix sockets, none on TCP."""
    instances = [str(instance) for instance in config["instances"]]
    hidden = instances[1:] if config["bind"] == "unix" and len(instances) > 1 else []
    return instances, hidden


def roll(config: dict, timeout: float) -> tuple[bool, dict]:
    restarted: list[dict] = []
    instances, to_hide = roll_order(config)
    if config["bind"] == "unix":
        # Sockets an interrupted roll left hidden come back first: they are live instances.
        for instance in instances:
            unhide(config, instance)
    hidden = [instance for instance in to_hide if hide(config, instance)]
    try:
        for instance in instances:
            outcome = restart_instance(config, instance, timeout)
            unit = f"{config['unit_prefix']}@{instance}.service"
            if isinstance(outcome, str):
                return False, {"restarted": restarted, "failed": unit, "error": outcome, "hidden": hidden}
            restarted.append(outcome)
            if instance in hidden:
                unhide(config, instance)
    finally:
        for instance in hidden:
            unhide(config, instance)
    for unit in config["workers"]:
        result = systemctl("restart", f"{unit}.service")
        if result.returncode != 0:
            return False, {"restarted": restarted, "failed": unit, "error": result.stderr.strip(), "hidden": hidden}
        restarted.append({"unit": f"{unit}.service", "pid": main_pid(f"{unit}.service")})
    return True, {"restarted": restarted, "hidden": hidden}


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
