# Copyright (c) pyweb.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release-aware reload of each app server, once: the module pyweb.stack.app_server_reload and the host tools
(gunicorn-reload, uwsgi-reload, daphne-roll, which the push hook runs) call these functions.

Standard library only, so the same file runs on the host through pyweb.stack.common's host library. Commands go
through the caller's runner, `run(argv, timeout=None) -> (rc, stdout, stderr)`: AnsibleModule.run_command in the
module (which has no timeout), a subprocess wrapper in the host tools.

- gunicorn: a HUP when the venv is unchanged (the master re-resolves chdir <base>/current and forks new workers
  there); a HUP after which the master executes itself again in place in the new venv ("reexec", same pid,
  sockets open, old workers serving until the new ones loaded the app) when the venv changed and the master's
  image says it can (the venv marker's second line); otherwise the process manager's restart command.
- uwsgi: a chain reload (touch-chain-reload: one worker at a time) when the venv is unchanged, a whole-vassal
  reload (touch-reload: the master re-executes itself, keeping its sockets) when it changed or when asked; twice
  for a new environment file.
- daphne: one instance at a time behind its systemd socket, the other instances' unix sockets hidden until the
  restarted one answers, so a dropped client reconnects once, onto the new code.

Each entry point returns (ok, result): result is the JSON object the host tool prints, with "msg" when not ok.
With check_mode=True it only decides: result["action"] says what a real run would do, and nothing is signalled,
touched or restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ansible_collections.pyweb.stack.plugins.module_utils._procs import children, cmdline, cwd_of, environ_of, read_pid
from ansible_collections.pyweb.stack.plugins.module_utils._unixhttp import probe, tcp_target

Runner = Callable[..., tuple[int, str, str]]

# ------------------------------------------------------------------------------------------------------ gunicorn

# The second line of the venv marker of a master that switches venvs in place on HUP (gunicorn.conf.py.j2).
SWITCHES_VENV = "switches-venv-in-place"


def parse_env_file(path: str) -> dict[str, str]:
    """The KEY=VALUE lines of an env file as bin/app-env exports them (as written; empty and # lines skipped)."""
    with open(path, "rb") as handle:
        text = os.fsdecode(handle.read())
    lines = (line for line in text.split("\n") if line and not line.startswith("#") and "=" in line)
    return dict(line.split("=", 1) for line in lines)


def missing_environment(pids: list[int], wanted: dict[str, str], run: Runner) -> dict[int, list[str]]:
    """For each process whose environment lacks a KEY=VALUE of `wanted`: those keys (values are never shown)."""
    missing = {}
    for pid in pids:
        env = environ_of(pid, run)
        keys = sorted(wanted) if env is None else sorted(k for k, v in wanted.items() if env.get(k) != v)
        if keys:
            missing[pid] = keys
    return missing


def read_marker(path: str) -> tuple[str | None, bool]:
    """The venv the master's image runs from, and whether it switches venvs in place on HUP."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except OSError:
        return None, False
    return (lines[0].strip() or None), SWITCHES_VENV in (line.strip() for line in lines[1:])


def plan(running_venv: str | None, switches: bool, wanted_venv: str, *, force_restart: bool, wait_only: bool) -> str:
    """What a reload takes: "wait" (signal nothing), "hup" (same venv), "reexec" (a HUP after which the master
    executes itself again in place in the new venv), or "restart" (forced, no marker, or a master that cannot
    switch in place)."""
    if wait_only:
        return "wait"
    if force_restart or running_venv is None:
        return "restart"
    if running_venv == wanted_venv:
        return "hup"
    return "reexec" if switches else "restart"


def wait_for_release(
    pidfile: str,
    release: str,
    *,
    old_master: int | None,
    old_workers: set[int],
    deadline: float,
    run: Runner,
    environment: dict[str, str] | None = None,
    venv: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Until a master (a new one when old_master is given) has only new workers, all running in `release`, (when
    `venv` = (marker file, venv) is given) the master's image runs that venv, and (when `environment` is given) the
    master and every worker were executed with each of its KEY=VALUE pairs.

    The venv is the one the image recorded at its start (the marker), not the workers' command lines, which
    setproctitle rewrites: workers forked after the check are forks of that image; the old ones are gone."""
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        master = read_pid(pidfile, "gunicorn")
        if master and master != old_master:
            workers = children(master)
            cwds = {pid: cwd_of(pid, run) for pid in workers}
            last = {"master": master, "workers": workers, "worker_cwds": sorted({c or "?" for c in cwds.values()})}
            if venv is not None:
                last["master_venv"] = read_marker(venv[0])[0]
                last["pythons"] = sorted({(cmdline(pid) or ["?"])[0] for pid in [master, *workers]})
            fresh = not old_workers.intersection(workers)
            in_venv = venv is None or last["master_venv"] == venv[1]
            if workers and fresh and in_venv and all(cwd == release for cwd in cwds.values()):
                missing = missing_environment([master, *workers], environment, run) if environment else {}
                if not missing:
                    return dict(last, ok=True)
                last["environment_missing"] = {str(pid): keys for pid, keys in missing.items()}
        time.sleep(0.5)
    return dict(last, ok=False)


def run_restart(restart: list[str], deadline: float, run: Runner) -> str | None:
    """Run the restart command within the time left; None when it succeeded, else why not."""
    if not restart:
        return "the venv changed (or a restart was forced) but no restart command was given after --"
    command = " ".join(restart)
    try:
        rc, out, err = run(restart, timeout=max(deadline - time.monotonic(), 0.1))
    except TimeoutError:
        return f"{command} did not finish within the timeout"
    except OSError as exc:
        return f"cannot run {command}: {exc.strerror or exc}"
    if rc != 0:
        return f"{command} failed ({rc}): {out}{err}"
    return None


def reload_gunicorn(
    pidfile: str,
    current: str,
    venv_marker: str,
    run: Runner,
    *,
    timeout: float = 90.0,
    force_restart: bool = False,
    wait_only: bool = False,
    env_file: str | None = None,
    restart: list[str] | None = None,
    check_mode: bool = False,
) -> tuple[bool, dict[str, Any]]:
    """Reload the master `pidfile` names into the release `current` resolves to, and wait until every worker runs
    it (and, with env_file, every process carries its values). A master that is not running is left to its process
    manager, which starts it in the current release."""
    release = os.path.realpath(current)
    wanted_venv = os.path.realpath(os.path.join(current, ".venv"))
    master = read_pid(pidfile, "gunicorn")
    result: dict[str, Any] = {"release": release, "venv": wanted_venv, "action": "none", "old_master": master}
    if master is None:
        return True, dict(result, msg="gunicorn is not running; its process manager starts it in the current release")
    try:
        environment = parse_env_file(env_file) if env_file else None
    except OSError as exc:
        return False, dict(result, msg=f"cannot read the env file {env_file}: {exc.strerror or exc}")

    running_venv, switches = read_marker(venv_marker)
    result["running_venv"] = running_venv
    deadline = time.monotonic() + timeout
    action = plan(running_venv, switches, wanted_venv, force_restart=force_restart, wait_only=wait_only)
    if check_mode:
        # Where the workers run now, for the diff; a real reload waits for them in the release instead (each read
        # may start a process as the app user, so it is not done on every reload).
        running = sorted({cwd_of(pid, run) or "?" for pid in children(master)})
        return True, dict(result, running_release=running, action="none" if action == "wait" else action)
    old_master, old_workers, venv, failure = None, set(), None, None
    if action == "restart":
        result["action"] = "restart"
        failure = run_restart(restart or [], deadline, run)
        old_master = master
    elif action in ("hup", "reexec"):
        result["action"] = action
        old_workers = set(children(master))
        venv = (venv_marker, wanted_venv) if action == "reexec" else None
        try:
            os.kill(master, signal.SIGHUP)
        except ProcessLookupError:
            failure = f"gunicorn master {master} exited before it could be sent HUP"
    if failure:
        return False, dict(result, msg=failure)
    waited = wait_for_release(
        pidfile,
        release,
        old_master=old_master,
        old_workers=old_workers,
        deadline=deadline,
        run=run,
        environment=environment,
        venv=venv,
    )
    result.update(waited)
    if waited["ok"]:
        return True, result
    if "environment_missing" in waited:
        missing = f"gunicorn still runs without the values of {env_file}"
    elif action == "reexec":
        missing = f"gunicorn does not run the venv {wanted_venv} in {release}"
    else:
        missing = f"the workers still do not all run in {release}"
    return False, dict(result, msg=f"after {timeout:g}s {missing}")


# --------------------------------------------------------------------------------------------------------- uwsgi


def read_vassal(path: Path) -> dict[str, str]:
    """The first value of each key of the vassal's [uwsgi] section (uwsgi ini files repeat keys, such as env)."""
    values: dict[str, str] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section == "uwsgi" and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            values.setdefault(key, value)
    return values


def uwsgi_workers(master: int) -> set[int]:
    """Worker pids: the master's direct children that are uwsgi processes ("/usr/bin/uwsgi-core --ini ...")."""
    return set(children(master, "uwsgi"))


def touch(path: str) -> None:
    """Give the file a new modification time; uwsgi compares whole seconds, so a second touch waits for the next."""
    file = Path(path)
    previous = int(file.stat().st_mtime) if file.exists() else 0
    file.touch(exist_ok=True)
    while int(time.time()) <= previous:
        time.sleep(0.05)
    now = time.time()
    os.utime(path, (now, now))


def wait_for_workers(
    master: int, before: set[int], processes: int, release: str, *, deadline: float, run: Runner
) -> list[int]:
    """Wait until every worker is new and runs in the release; the workers, or raise TimeoutError."""
    while True:
        workers = uwsgi_workers(master)
        fresh = workers - before
        # A worker forked after the touch entered current (hook-pre-app) after the swap. Its directory is checked
        # too where it can be read: a worker forked by a master that dropped root privileges is not dumpable, and
        # then even its own user cannot read /proc/<pid>/cwd without CAP_SYS_PTRACE (containers).
        if len(fresh) >= processes and not (workers & before):
            directories = {cwd_of(pid, run) for pid in fresh}
            if directories <= {release, None}:
                return sorted(fresh)
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"after the reload the master {master} has workers {sorted(workers)}; wanted {processes} new ones "
                f"in {release} (old ones: {sorted(workers & before)}, "
                f"directories: {[cwd_of(pid, run) for pid in sorted(workers)]})"
            )
        time.sleep(0.2)


def reload_uwsgi(
    app: str,
    run: Runner,
    *,
    config_dir: str = "/etc/uwsgi",
    full: bool = False,
    environment: bool = False,
    timeout: float = 90.0,
    check_mode: bool = False,
) -> tuple[bool, dict[str, Any]]:
    """Reload the vassal <config_dir>/vassals/<app>.ini into the release its current link resolves to, and wait
    until the master has its full set of new workers there. A vassal not configured or not running yet is left
    alone: it loads current when it starts."""
    vassal_file = Path(config_dir) / "vassals" / f"{app}.ini"
    if not vassal_file.exists():
        # Not configured yet (first deploy: pyweb.stack.uwsgi writes the vassal after the release is current).
        return True, {"action": "none", "reason": f"no vassal file {vassal_file}"}
    vassal = read_vassal(vassal_file)
    current = vassal.get("pythonpath", "")
    pidfile = vassal.get("pidfile", "")
    # A stale pidfile whose pid was reused by another program counts as no master.
    master = read_pid(pidfile, "uwsgi") if pidfile else None
    if master is None:
        # Not running (first deploy, or the emperor is starting it): it will load current when it starts.
        return True, {"action": "none", "reason": f"no running vassal master in {pidfile or 'no pidfile'}"}

    release = os.path.realpath(current)
    venv = os.path.realpath(os.path.join(current, ".venv"))
    marker = Path(pidfile).with_suffix(".venv")
    try:
        loaded_venv = marker.read_text(encoding="utf-8").strip()
    except OSError:
        loaded_venv = ""
    whole = full or environment or loaded_venv != venv
    action = "reload" if whole else "chain-reload"
    reloads = 2 if environment else 1
    result: dict[str, Any] = {"action": action, "master": master, "release": release, "venv": venv}
    result["running_venv"] = loaded_venv or None
    if check_mode:
        # Where the workers run now, for the diff (not read on a real reload, which waits for them in the release).
        return True, dict(result, running_release=sorted({cwd_of(pid, run) or "?" for pid in uwsgi_workers(master)}))
    deadline = time.monotonic() + timeout
    workers: list[int] = []
    for _reload in range(reloads):
        before = uwsgi_workers(master)
        touch(vassal["touch-reload"] if whole else vassal["touch-chain-reload"])
        try:
            workers = wait_for_workers(
                master, before, int(vassal.get("processes", "1")), release, deadline=deadline, run=run
            )
        except TimeoutError as exc:
            return False, dict(result, error=str(exc), msg=str(exc))
    # Only root can record the venv (the marker sits in the emperor's runtime directory); without the record the
    # next reload is a full one, which is always safe.
    with contextlib.suppress(OSError):
        marker.write_text(venv + "\n", encoding="utf-8")
    return True, dict(result, workers=workers, reloads=reloads)


# -------------------------------------------------------------------------------------------------------- daphne

# Each health request may take this long (within the instance's own deadline); a retry follows after RETRY_DELAY.
PER_TRY = 10.0
RETRY_DELAY = 0.3
# The web server's group may connect (0660, the socket unit's SocketMode=); hidden, nobody but root may.
VISIBLE_MODE = 0o660
HIDDEN_MODE = 0o000


def socket_path(config: dict[str, Any], instance: str) -> str:
    """Where the web server connects to the instance."""
    return f"{config['socket_dir']}/{instance}.sock"


def hide(config: dict[str, Any], instance: str) -> bool:
    """Take the instance's socket away from the web server: a connect fails at once (EACCES) and nginx tries the
    next server; the connections the instance has stay. False when there was no socket."""
    try:
        os.chmod(socket_path(config, instance), HIDDEN_MODE)
    except FileNotFoundError:
        return False
    return True


def unhide(config: dict[str, Any], instance: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.chmod(socket_path(config, instance), VISIBLE_MODE)


def probe_target(config: dict[str, Any], instance: str) -> str:
    """Where the roll asks the instance for its health: its own unix socket, or its TCP port."""
    if config["bind"] == "unix":
        return socket_path(config, instance)
    return tcp_target(config["tcp_address"], instance)


def unit_main_pid(run: Runner, unit: str) -> int:
    _rc, out, _err = run(["systemctl", "show", "--property=MainPID", "--value", unit])
    return int(out.strip() or "0")


def wait_until_answering(config: dict[str, Any], instance: str, unit: str, deadline: float, run: Runner) -> str | None:
    """None once the instance is active and healthy (HTTP 200, retried until the deadline), else why not."""

    def ready() -> str | None:
        return None if run(["systemctl", "is-active", "--quiet", unit])[0] == 0 else f"{unit} is not active"

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


def restart_instance(config: dict[str, Any], instance: str, timeout: float, run: Runner) -> dict[str, Any] | str:
    """The restarted instance, or why it is not back."""
    unit = f"{config['unit_prefix']}@{instance}.service"
    before = unit_main_pid(run, unit)
    rc, _out, err = run(["systemctl", "restart", unit])
    if rc != 0:
        return err.strip() or f"systemctl restart {unit} failed"
    problem = wait_until_answering(config, instance, unit, time.monotonic() + timeout, run)
    if problem:
        return problem
    return {"unit": unit, "old_pid": before, "pid": unit_main_pid(run, unit)}


def roll_order(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The instances in restart order, and those whose paths are hidden before the first restart: all but the
    first one on unix sockets, none on TCP."""
    instances = [str(instance) for instance in config["instances"]]
    hidden = instances[1:] if config["bind"] == "unix" and len(instances) > 1 else []
    return instances, hidden


def roll(config: dict[str, Any], timeout: float, run: Runner) -> tuple[bool, dict[str, Any]]:
    restarted: list[dict[str, Any]] = []
    instances, to_hide = roll_order(config)
    if config["bind"] == "unix":
        # Sockets an interrupted roll left hidden come back first: they are live instances.
        for instance in instances:
            unhide(config, instance)
    hidden = [instance for instance in to_hide if hide(config, instance)]
    try:
        for instance in instances:
            outcome = restart_instance(config, instance, timeout, run)
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
        rc, _out, err = run(["systemctl", "restart", f"{unit}.service"])
        if rc != 0:
            return False, {"restarted": restarted, "failed": unit, "error": err.strip(), "hidden": hidden}
        restarted.append({"unit": f"{unit}.service", "pid": unit_main_pid(run, f"{unit}.service")})
    return True, {"restarted": restarted, "hidden": hidden}


def roll_daphne(
    app: str,
    run: Runner,
    *,
    config_dir: str = "/etc/pyweb/daphne",
    timeout: float | None = None,
    missing_ok: bool = False,
    check_mode: bool = False,
) -> tuple[bool, dict[str, Any]]:
    """Restart the app's daphne instances one at a time (then its channels workers), from the settings the role
    wrote to <config_dir>/<app>.json. With missing_ok, settings not written yet (the role has not configured the
    app: its first run starts the units) mean nothing to do."""
    config_file = Path(config_dir) / f"{app}.json"
    if missing_ok and not config_file.exists():
        return True, {"ok": True, "action": "none", "reason": f"no settings {config_file}"}
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return False, {
            "ok": False,
            "error": f"cannot read {config_file}: {exc}",
            "msg": f"cannot read {config_file}: {exc}",
        }
    instances, _hidden = roll_order(config)
    units = [f"{config['unit_prefix']}@{instance}.service" for instance in instances]
    units += [f"{unit}.service" for unit in config["workers"]]
    if check_mode:
        return True, {"ok": True, "action": "roll", "restarted": [{"unit": unit} for unit in units], "hidden": []}
    ok, result = roll(config, timeout or float(config["timeout"]), run)
    result.update(ok=ok, action="roll")
    if not ok:
        result["msg"] = f"{result['failed']} did not come back: {result['error']}"
    return ok, result
