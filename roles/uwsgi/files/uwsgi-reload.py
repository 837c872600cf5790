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
from ansible_collections.pyweb.stack.plugins.module_utils._reload import reload_uwsgi


def run(argv: list[str], timeout: float | None = 10) -> tuple[int, str, str]:
    """The runner of the shared code: /proc reads as another user (root in a container lacks CAP_SYS_PTRACE)."""
    completed = subprocess.run(argv, capture_output=True, check=False, timeout=timeout)
    return completed.returncode, os.fsdecode(completed.stdout), os.fsdecode(completed.stderr)


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
    ok, result = reload_uwsgi(
        args.app, run, config_dir=args.config_dir, full=args.full, environment=args.environment, timeout=args.timeout
    )
    print(json.dumps(result, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
