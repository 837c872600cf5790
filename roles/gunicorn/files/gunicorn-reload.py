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

The logic is the collection's one copy (plugins/module_utils/_reload.py, installed by pyweb.stack.common's
host_library.yml), which the module pyweb.stack.app_server_reload runs too; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, "/usr/local/lib/pyweb-stack")  # the host library of pyweb.stack.common (host_library.yml)
from ansible_collections.pyweb.stack.plugins.module_utils._reload import reload_gunicorn


def run(argv: list[str], timeout: float | None = 10) -> tuple[int, str, str]:
    """The runner of the shared code: /proc reads as another user (root in a container lacks CAP_SYS_PTRACE)
    and the restart command."""
    try:
        completed = subprocess.run(argv, capture_output=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(str(exc)) from exc
    return completed.returncode, os.fsdecode(completed.stdout), os.fsdecode(completed.stderr)


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
    ok, result = reload_gunicorn(
        args.pidfile,
        args.current,
        args.venv_marker,
        run,
        timeout=args.timeout,
        force_restart=args.force_restart,
        wait_only=args.wait_only,
        env_file=args.env_file,
        restart=args.restart[1:] if args.restart[:1] == ["--"] else args.restart,
    )
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
