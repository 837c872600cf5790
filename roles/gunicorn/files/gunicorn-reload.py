"""Release-aware reload of one gunicorn master, installed by pyweb.stack.gunicorn (run as root).

A plain HUP is not enough after a deploy: gunicorn resolved its working directory when it started. The config
pyweb.stack.gunicorn writes sets chdir to <base>/current, which gunicorn re-resolves on HUP, so new workers fork
in the new release and import its code. That only holds while the venv stays the same: the master's interpreter
and installed packages come from the venv it was started from (recorded by the config's on_starting hook in the
venv marker file). When <base>/current/.venv resolves elsewhere, the master is restarted instead.

  gunicorn-reload --pidfile P --current DIR --venv-marker F [--env-file F] [--force-restart | --wait-only]
                  -- RESTART COMMAND...

--env-file F also waits until the master and every worker were executed with each KEY=VALUE of F (the master
executes itself again in place on the HUP when the file changed: gunicorn_environment.py).

--wait-only signals nothing: it waits for the master the pidfile names to have its workers in <current> (a
master a process manager has just started, while handing the socket over from another one).

Waits until every worker of the (new) master has the release <current> resolves to as its working directory, and
prints one JSON object: action (none | hup | restart), master pid, release, workers. The whole run, the restart
command included, is bounded by --timeout. A pidfile whose process is not a gunicorn (a stale file whose pid
was reused) counts as "not running": no signal ever goes to a process that is not gunicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def read_pid(pidfile: str) -> int | None:
    """The live gunicorn master the pidfile names, or None."""
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and is_gunicorn(pid) else None


def is_gunicorn(pid: int) -> bool:
    """True for a running gunicorn process: its command line (or setproctitle's title) names gunicorn.

    A pidfile outlives a master that was killed hard, and its pid may since belong to anything else; a zombie
    has an empty command line.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"gunicorn" in handle.read()
    except OSError:
        return False


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def cwd_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except PermissionError:
        target = as_owner(pid, lambda: os.readlink(f"/proc/{pid}/cwd").encode())
        return target.decode(errors="replace") if target else None
    except OSError:
        return None


def environ_of(pid: int) -> dict[str, str] | None:
    """The environment the process was executed with (/proc/<pid>/environ), or None."""

    def read() -> bytes:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read()

    try:
        raw: bytes | None = read()
    except PermissionError:
        raw = as_owner(pid, read)
    except OSError:
        raw = None
    if raw is None:
        return None
    return dict(os.fsdecode(item).split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def as_owner(pid: int, read) -> bytes | None:
    """What read() returns when run as the process's own user: root without CAP_SYS_PTRACE (containers) may not
    read another user's /proc/<pid>/cwd or environ. None when it failed."""
    try:
        info = os.stat(f"/proc/{pid}")
    except OSError:
        return None
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        os.close(reader)
        status = 1
        try:
            os.setgroups([])
            os.setgid(info.st_gid)
            os.setuid(info.st_uid)
            os.write(writer, read())
            status = 0
        except OSError:
            pass
        os._exit(status)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    _pid, status = os.waitpid(child, 0)
    return data if status == 0 else None


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
        env = environ_of(pid)
        keys = sorted(wanted) if env is None else sorted(k for k, v in wanted.items() if env.get(k) != v)
        if keys:
            missing[pid] = keys
    return missing


def read_marker(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def wait_for_release(
    pidfile: str,
    release: str,
    old_master: int | None,
    old_workers: set[int],
    deadline: float,
    *,
    environment: dict[str, str] | None = None,
) -> dict:
    """Until a master (a new one when old_master is given) has only new workers, all running in `release`, and
    (when `environment` is given) the master and every worker were executed with each of its KEY=VALUE pairs."""
    last: dict = {}
    while time.monotonic() < deadline:
        master = read_pid(pidfile)
        if master and master != old_master:
            workers = children(master)
            cwds = {pid: cwd_of(pid) for pid in workers}
            last = {"master": master, "workers": workers, "worker_cwds": sorted({c or "?" for c in cwds.values()})}
            fresh = not old_workers.intersection(workers)
            if workers and fresh and all(cwd == release for cwd in cwds.values()):
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
    master = read_pid(args.pidfile)
    result: dict = {"release": release, "venv": wanted_venv, "action": "none", "old_master": master}
    if master is None:
        result["msg"] = "gunicorn is not running; its process manager starts it in the current release"
        print(json.dumps(result))
        return 0

    try:
        environment = parse_env_file(args.env_file) if args.env_file else None
    except OSError as exc:
        result["msg"] = f"cannot read the env file {args.env_file}: {exc.strerror or exc}"
        print(json.dumps(result))
        return 1

    running_venv = read_marker(args.venv_marker)
    result["running_venv"] = running_venv
    deadline = time.monotonic() + args.timeout
    if args.wait_only:
        waited = wait_for_release(args.pidfile, release, None, set(), deadline, environment=environment)
    elif args.force_restart or running_venv != wanted_venv:
        result["action"] = "restart"
        failure = run_restart(restart, deadline)
        if failure:
            result["msg"] = failure
            print(json.dumps(result))
            return 1
        waited = wait_for_release(args.pidfile, release, master, set(), deadline, environment=environment)
    else:
        result["action"] = "hup"
        old_workers = set(children(master))
        try:
            os.kill(master, signal.SIGHUP)
        except ProcessLookupError:
            result["msg"] = f"gunicorn master {master} exited before it could be sent HUP"
            print(json.dumps(result))
            return 1
        waited = wait_for_release(args.pidfile, release, None, old_workers, deadline, environment=environment)
    result.update(waited)
    if not waited["ok"] and "environment_missing" in waited:
        result["msg"] = f"after {args.timeout:g}s gunicorn still runs without the values of {args.env_file}"
    elif not waited["ok"]:
        result["msg"] = f"after {args.timeout:g}s the workers still do not all run in {release}"
    print(json.dumps(result))
    return 0 if waited["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
