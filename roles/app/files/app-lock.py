"""Run a command under an app's release lock, installed by pyweb.stack.app as <base>/bin/app-lock.

  app-lock [--base DIR] [--timeout SECONDS] [--owner TEXT] -- COMMAND [ARGUMENT...]
      Takes <base>/.pyweb-release.lock (the lock an Ansible rollout and a git push take too), waiting up to
      --timeout seconds while another path holds it and saying who that is, runs COMMAND, gives the lock back
      and exits with COMMAND's status (75 when the lock was not granted in time).
  app-lock --status [--base DIR]
      Says who holds the lock now, or that it is free; exit status 0 when free, 1 when held.

The base defaults to the directory above this script's bin/. A thin command line on the host library of
pyweb.stack.common (host_library.yml): the lock is plugins/module_utils/_lock.py, the code every other path runs.
"""

from __future__ import annotations

import sys

sys.path.insert(0, "/usr/local/lib/pyweb-stack")  # the host library of pyweb.stack.common (host_library.yml)

import argparse
import getpass
import os
import shlex
import subprocess
from pathlib import Path

from ansible_collections.pyweb.stack.plugins.module_utils._lock import (
    LockError,
    current_holder,
    describe,
    hold,
    release_lock_path,
)

EX_TEMPFAIL = 75  # sysexits.h: try again later


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app-lock", description="Run a command under the app's release lock.")
    parser.add_argument("--base", default=str(Path(os.path.realpath(__file__)).parent.parent), help="app base dir")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the lock (default 900)")
    parser.add_argument("--owner", help="who holds the lock, shown to whoever waits (default: user and command)")
    parser.add_argument("--status", action="store_true", help="say who holds the lock, run nothing")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGUMENT...]")
    arguments = parser.parse_args(argv)
    if arguments.command[:1] == ["--"]:
        arguments.command = arguments.command[1:]
    if arguments.status == bool(arguments.command):
        parser.error("give either --status or -- COMMAND")
    if arguments.timeout < 0:
        parser.error("--timeout must be 0 or more seconds")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse(sys.argv[1:] if argv is None else argv)
    path = release_lock_path(arguments.base)
    if not path.parent.is_dir():
        print(f"app-lock: {arguments.base} is not an app base directory", file=sys.stderr)
        return 2
    if arguments.status:
        holder = current_holder(path)
        print(f"{path}: held by {describe(holder)}" if holder is not None else f"{path}: free")
        return 0 if holder is None else 1
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    owner = arguments.owner or f"bin/app-lock by {user}: {shlex.join(arguments.command)[:200]}"
    try:
        with hold(path, arguments.timeout, owner, lambda message: print(f"app-lock: {message}", file=sys.stderr)):
            try:
                return subprocess.call(arguments.command)
            except OSError as exc:
                print(f"app-lock: cannot run {arguments.command[0]}: {exc.strerror or exc}", file=sys.stderr)
                return 127
    except LockError as exc:
        print(f"app-lock: {exc}", file=sys.stderr)
        return EX_TEMPFAIL


if __name__ == "__main__":
    sys.exit(main())
