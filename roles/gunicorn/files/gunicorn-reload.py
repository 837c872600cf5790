"""Release-aware reload of one gunicorn master, installed by pyweb.stack.gunicorn (run as root).

A plain HUP is not enough after a deploy: gunicorn resolved its working directory when it started. The config
pyweb.stack.gunicorn writes sets chdir to <base>/current, which gunicorn re-resolves on HUP, and the config's
on_reload hook (gunicorn_environment.py) then executes the master again in place, same pid, sockets kept open,
when the release, the venv <base>/current/.venv resolves to or the env file differ from what its program image
started with; its old workers serve until the new image's workers have loaded the app. So a HUP moves the master
into a new venv too, without a refused request. The config's on_starting hook records the venv of the image in
the venv marker file, with a second line saying it can switch venvs in place; a master without that line (started
before the role could, or by hand) is restarted instead when the venv changed.

  gunicorn-reload --pidfile P --current DIR --venv-marker F [--env-file F] [--force-restart | --wait-only]
                  -- RESTART COMMAND...

--env-file F also waits until the master and every worker were executed with each KEY=VALUE of F.

--wait-only signals nothing: it waits for the master the pidfile names to have its workers in <current> (a
master a process manager has just started, while handing the socket over from another one).

Waits until every worker of the (new) master has the release <current> resolves to as its working directory (and,
when the venv changed, until master and workers run that venv's Python), and prints one JSON object: action (none
| hup | reexec | restart), master pid, release, workers. The whole run, the restart command included, is bounded by
--timeout. A pidfile whose process is not a gunicorn (a stale file whose pid was reused) counts as "not running":
no signal ever goes to a process that is not gunicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, "/usr/local/lib/pyweb-stack")  # the host library of pyweb.stack.common (host_library.yml)
from ansible_collections.pyweb.stack.plugins.module_utils._procs import (
    children,
    cmdline,
    cwd_of,
    environ_of,
    read_pid,
)

# The second line of the venv marker of a master that switches venvs in place on HUP (gunicorn.conf.py.j2).
SWITCHES_VENV = "switches-venv-in-place"


def run_as_owner(argv: list[str]) -> tuple[int, str, str]:
    """The runner _procs reads another user's /proc entries through (root in a container lacks CAP_SYS_PTRACE)."""
    completed = subprocess.run(argv, capture_output=True, check=False, timeout=10)
    return completed.returncode, os.fsdecode(completed.stdout), os.fsdecode(completed.stderr)


def master_pid(pidfile: str) -> int | None:
    return read_pid(pidfile, "gunicorn")


def parse_env_file(path: str) -> dict[str, str]:
    """The KEY=VALUE lines of an env file as bin/app-env exports them (as written; empty and # lines skipped)."""
    with open(path, "rb") as handle:
        text = os.fsdecode(handle.read())
    lines = (line for line in text.split("\n") if line and not line.startswith("#") and "=" in line)
    return dict(line.split("=", 1) for line in lines)


def missing_environment(pids: list[int], wanted: dict[str, str]) -> dict[int, list[str]]:
    """For each process whose environment lacks a KEY=VALUE of `wanted`: those keys (values are never shown)."""
    missing = {}
    for pid in pids:
        env = environ_of(pid, run_as_owner)
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
    old_master: int | None,
    old_workers: set[int],
    deadline: float,
    *,
    environment: dict[str, str] | None = None,
    venv: tuple[str, str] | None = None,
) -> dict:
    """Until a master (a new one when old_master is given) has only new workers, all running in `release`, (when
    `venv` = (marker file, venv) is given) the master's image runs that venv, and (when `environment` is given) the
    master and every worker were executed with each of its KEY=VALUE pairs.

    The venv is the one the image recorded at its start (the marker), not the workers' command lines, which
    setproctitle rewrites: workers forked after the check are forks of that image; the old ones are gone."""
    last: dict = {}
    while time.monotonic() < deadline:
        master = master_pid(pidfile)
        if master and master != old_master:
            workers = children(master)
            cwds = {pid: cwd_of(pid, run_as_owner) for pid in workers}
            last = {"master": master, "workers": workers, "worker_cwds": sorted({c or "?" for c in cwds.values()})}
            if venv is not None:
                last["master_venv"] = read_marker(venv[0])[0]
                last["pythons"] = sorted({(cmdline(pid) or ["?"])[0] for pid in [master, *workers]})
            fresh = not old_workers.intersection(workers)
            in_venv = venv is None or last["master_venv"] == venv[1]
            if workers and fresh and in_venv and all(cwd == release for cwd in cwds.values()):
                missing = missing_environment([master, *workers], environment) if environment else {}
                if not missing:
                    return dict(last, ok=True)
                last["environment_missing"] = {str(pid): keys for pid, keys in missing.items()}
        time.sleep(0.5)
    return dict(last, ok=False)


def run_restart(restart: list[str], deadline: float) -> str | None:
    """Run the restart command within the time left; None when it succeeded, else why not."""
    if not restart:
        return "the venv changed (or a restart was forced) but no restart command was given after --"
    command = " ".join(restart)
    try:
        completed = subprocess.run(
            restart, capture_output=True, text=True, check=False, timeout=max(deadline - time.monotonic(), 0.1)
        )
    except subprocess.TimeoutExpired:
        return f"{command} did not finish within the timeout"
    except OSError as exc:
        return f"cannot run {command}: {exc.strerror or exc}"
    if completed.returncode != 0:
        return f"{command} failed ({completed.returncode}): {completed.stdout}{completed.stderr}"
    return None


def emit(result: dict, code: int, msg: str | None = None) -> int:
    if msg:
        result["msg"] = msg
    print(json.dumps(result))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--current", required=True)
    parser.add_argument("--venv-marker", required=True)
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--force-restart", action="store_true")
    parser.add_argument("--wait-only", action="store_true")
    parser.add_argument("--env-file", help="also wait until every process was executed with this env file's values")
    parser.add_argument("restart", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    restart = args.restart[1:] if args.restart[:1] == ["--"] else args.restart

    release = os.path.realpath(args.current)
    wanted_venv = os.path.realpath(os.path.join(args.current, ".venv"))
    master = master_pid(args.pidfile)
    result: dict = {"release": release, "venv": wanted_venv, "action": "none", "old_master": master}
    if master is None:
        return emit(result, 0, "gunicorn is not running; its process manager starts it in the current release")
    try:
        environment = parse_env_file(args.env_file) if args.env_file else None
    except OSError as exc:
        return emit(result, 1, f"cannot read the env file {args.env_file}: {exc.strerror or exc}")

    running_venv, switches = read_marker(args.venv_marker)
    result["running_venv"] = running_venv
    deadline = time.monotonic() + args.timeout
    action = plan(running_venv, switches, wanted_venv, force_restart=args.force_restart, wait_only=args.wait_only)
    old_master, old_workers, venv = None, set(), None
    if action == "restart":
        result["action"] = "restart"
        failure = run_restart(restart, deadline)
        if failure:
            return emit(result, 1, failure)
        old_master = master
    elif action in ("hup", "reexec"):
        result["action"] = action
        old_workers = set(children(master))
        venv = (args.venv_marker, wanted_venv) if action == "reexec" else None
        try:
            os.kill(master, signal.SIGHUP)
        except ProcessLookupError:
            return emit(result, 1, f"gunicorn master {master} exited before it could be sent HUP")
    waited = wait_for_release(
        args.pidfile, release, old_master, old_workers, deadline, environment=environment, venv=venv
    )
    result.update(waited)
    if waited["ok"]:
        return emit(result, 0)
    if "environment_missing" in waited:
        missing = f"gunicorn still runs without the values of {args.env_file}"
    elif action == "reexec":
        missing = f"gunicorn does not run the venv {wanted_venv} in {release}"
    else:
        missing = f"the workers still do not all run in {release}"
    return emit(result, 1, f"after {args.timeout:g}s {missing}")


if __name__ == "__main__":
    sys.exit(main())
