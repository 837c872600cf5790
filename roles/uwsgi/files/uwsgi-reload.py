"""Release-aware reload of one uwsgi vassal, installed by pyweb.stack.uwsgi (run as root, or as the app user).

The vassal loads its app lazily in each worker and every worker enters <base>/current when it starts, so after
current was swapped a chain reload (touch-chain-reload: one worker at a time, the others keep serving) is all it
takes for the new release to answer. The master's interpreter and its sys.path come from the venv it started
with; when <base>/current/.venv resolves elsewhere than at the last reload (the venv marker), or with --full, the
whole vassal reloads instead (touch-reload: the master re-executes itself, keeping its sockets).

With --environment (the app's environment file changed) the whole vassal reloads twice: uwsgi re-executes itself
with the environment it holds in memory, which its configuration read (for-readline/env) sets, so the first reload
reads the new values and only the second starts master and workers with them in their exec-time environment
(/proc/<pid>/environ).

  uwsgi-reload --app NAME [--config-dir /etc/uwsgi] [--full | --environment] [--timeout 90]

Reads the pidfile, the touch files, the process count and <base>/current from the vassal file
<config-dir>/vassals/NAME.ini, touches the right file, then waits until the master has its full set of workers,
none of them from before the reload, each with the release <base>/current resolves to as its working directory
(where /proc lets it read that).
Prints one JSON object: action (none | chain-reload | reload), master pid, release, workers, reloads (how many
times the vassal was reloaded). Exit status 1 when the workers did not come up within --timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, "/usr/local/lib/pyweb-stack")  # the host library of pyweb.stack.common (host_library.yml)
from ansible_collections.pyweb.stack.plugins.module_utils._procs import children, cwd_of, read_pid


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


def run_as_owner(argv: list[str]) -> tuple[int, str, str]:
    """The runner _procs reads another user's /proc entries through (root in a container lacks CAP_SYS_PTRACE)."""
    completed = subprocess.run(argv, capture_output=True, check=False, timeout=10)
    return completed.returncode, os.fsdecode(completed.stdout), os.fsdecode(completed.stderr)


def workers_of(master: int) -> set[int]:
    """Worker pids: the master's direct children that are uwsgi processes ("/usr/bin/uwsgi-core --ini ...")."""
    return set(children(master, "uwsgi"))


def worker_cwd(pid: int) -> str | None:
    """A worker's working directory, read as its own user where root may not (containers)."""
    return cwd_of(pid, run_as_owner)


def touch(path: str) -> None:
    """Give the file a new modification time; uwsgi compares whole seconds, so a second touch waits for the next."""
    file = Path(path)
    previous = int(file.stat().st_mtime) if file.exists() else 0
    file.touch(exist_ok=True)
    while int(time.time()) <= previous:
        time.sleep(0.05)
    now = time.time()
    os.utime(path, (now, now))


def wait_for_workers(master: int, before: set[int], processes: int, release: str, deadline: float) -> list[int]:
    """Wait until every worker is new and runs in the release; the workers, or raise TimeoutError."""
    while True:
        workers = workers_of(master)
        fresh = workers - before
        # A worker forked after the touch entered current (hook-pre-app) after the swap. Its directory is checked
        # too where it can be read: a worker forked by a master that dropped root privileges is not dumpable, and
        # then even its own user cannot read /proc/<pid>/cwd without CAP_SYS_PTRACE (containers).
        if len(fresh) >= processes and not (workers & before):
            directories = {worker_cwd(pid) for pid in fresh}
            if directories <= {release, None}:
                return sorted(fresh)
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"after the reload the master {master} has workers {sorted(workers)}; wanted {processes} new ones "
                f"in {release} (old ones: {sorted(workers & before)}, "
                f"directories: {[worker_cwd(pid) for pid in sorted(workers)]})"
            )
        time.sleep(0.2)


def emit(result: dict, ok: bool = True) -> int:
    print(json.dumps(result, sort_keys=True))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uwsgi-reload", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--app", required=True, help="vassal name (the app)")
    parser.add_argument("--config-dir", default="/etc/uwsgi")
    parser.add_argument("--full", action="store_true", help="reload the whole vassal, not worker by worker")
    parser.add_argument(
        "--environment", action="store_true", help="the environment file changed: reload the whole vassal twice"
    )
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)

    vassal_file = Path(args.config_dir) / "vassals" / f"{args.app}.ini"
    if not vassal_file.exists():
        # Not configured yet (first deploy: pyweb.stack.uwsgi writes the vassal after the release is current).
        return emit({"action": "none", "reason": f"no vassal file {vassal_file}"})
    vassal = read_vassal(vassal_file)
    current = vassal.get("pythonpath", "")
    pidfile = vassal.get("pidfile", "")
    # A stale pidfile whose pid was reused by another program counts as no master.
    master = read_pid(pidfile, "uwsgi") if pidfile else None
    if master is None:
        # Not running (first deploy, or the emperor is starting it): it will load current when it starts.
        return emit({"action": "none", "reason": f"no running vassal master in {pidfile or 'no pidfile'}"})

    release = os.path.realpath(current)
    venv = os.path.realpath(os.path.join(current, ".venv"))
    marker = Path(pidfile).with_suffix(".venv")
    try:
        loaded_venv = marker.read_text(encoding="utf-8").strip()
    except OSError:
        loaded_venv = ""
    full = args.full or args.environment or loaded_venv != venv
    action = "reload" if full else "chain-reload"
    reloads = 2 if args.environment else 1
    deadline = time.monotonic() + args.timeout
    workers: list[int] = []
    for _reload in range(reloads):
        before = workers_of(master)
        touch(vassal["touch-reload"] if full else vassal["touch-chain-reload"])
        try:
            workers = wait_for_workers(master, before, int(vassal.get("processes", "1")), release, deadline)
        except TimeoutError as exc:
            return emit({"action": action, "master": master, "error": str(exc)}, False)
    # Only root can record the venv (the marker sits in the emperor's runtime directory); without the record the
    # next reload is a full one, which is always safe.
    with contextlib.suppress(OSError):
        marker.write_text(venv + "\n", encoding="utf-8")
    return emit({"action": action, "master": master, "release": release, "workers": workers, "reloads": reloads})


if __name__ == "__main__":
    sys.exit(main())
