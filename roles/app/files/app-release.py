"""Release bookkeeping for one pyweb.stack app, installed by the pyweb.stack.app role as <base>/bin/app-release.

Subcommands (each prints one JSON object; exit status 0 on success, 1 when the check or action failed):
  state    list releases (good / failed / incomplete), the current one and the previous good one
  swap     point <base>/current at a release atomically (new symlink, then rename over current)
  fail     mark a release failed, with the reason, so it never becomes current and is pruned first; when it is
           current, current goes back to the previous good release (or is removed when there is none)
  rolled-back  mark the release a rollback left, so the next rollback goes further back and prune takes it early
  prune    keep current, the rollback target and the newest good releases up to --keep; remove failed and
           rolled-back releases, incomplete ones older than --incomplete-grace seconds (a release still being
           built is young and stays), and venvs no kept release links to (again only past the grace period)
  probe    GET a path through a live unix socket, expecting 200 (and JSON), within --timeout seconds overall
  canary   start a one-off server from a release on a temporary unix socket, probe it, stop it

A release is good once <release>/.pyweb-release.json exists (written after its canary passed) and it has no
.failed file. A good release a rollback moved away from is rolled_back (.rolled-back) until it is current again.
A thin command line on the host library of pyweb.stack.common (host_library.yml): the release store is
plugins/module_utils/_release.py and the probe plugins/module_utils/_unixhttp.py, the same code the modules run;
this file parses arguments, prints JSON and runs the canary process. Runs on app_python (3.9 or later), standard
library only.
"""

from __future__ import annotations

import sys

sys.path.insert(0, "/usr/local/lib/pyweb-stack")  # the host library of pyweb.stack.common (host_library.yml)

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ansible_collections.pyweb.stack.plugins.module_utils._release import (
    INCOMPLETE_GRACE,
    ReleaseError,
    ReleaseStore,
)
from ansible_collections.pyweb.stack.plugins.module_utils._unixhttp import BODY_LIMIT, ProbeResult, probe


def emit(result: dict[str, Any], ok: bool = True) -> int:
    print(json.dumps(result, sort_keys=True))
    return 0 if ok else 1


def emit_action(action: Any) -> int:
    """Run a store action; its result, or on ReleaseError the result it carries with msg, as one JSON object."""
    try:
        return emit(action())
    except ReleaseError as exc:
        return emit(dict(exc.result, msg=exc.msg), False)


def cmd_state(args: argparse.Namespace) -> int:
    return emit(ReleaseStore(args.base).state())


def cmd_swap(args: argparse.Namespace) -> int:
    store = ReleaseStore(args.base)
    return emit_action(lambda: store.swap(args.to, allow_unchecked=args.allow_unchecked, dry_run=args.dry_run))


def cmd_fail(args: argparse.Namespace) -> int:
    store = ReleaseStore(args.base)
    return emit_action(lambda: store.fail(args.release, args.reason))


def cmd_rolled_back(args: argparse.Namespace) -> int:
    return emit(ReleaseStore(args.base).mark_rolled_back(args.release))


def cmd_prune(args: argparse.Namespace) -> int:
    store = ReleaseStore(args.base)
    try:
        plan = store.plan_prune(args.keep, args.incomplete_grace)
    except ValueError:
        return emit({"changed": False, "msg": "--keep and --incomplete-grace must not be negative"}, False)
    if not args.dry_run:
        store.prune(plan)
    return emit(
        {
            "changed": plan.changes,
            "removed": plan.remove,
            "removed_venvs": plan.remove_venvs,
            "kept_incomplete": plan.kept_incomplete,
            "kept_young_venvs": plan.kept_young_venvs,
        }
    )


def probe_report(result: ProbeResult) -> dict[str, Any]:
    """The JSON fields app-release has always printed for probe and canary: ok, error, status and body."""
    report: dict[str, Any] = {"ok": result.ok, "error": result.reason}
    if result.status is not None:  # an HTTP answer decided
        report["status"] = result.status
        report["body"] = result.text(BODY_LIMIT)
    return report


def cmd_probe(args: argparse.Namespace) -> int:
    result = probe_report(probe(args.socket, args.path, time.monotonic() + args.timeout, **probe_options(args)))
    result["socket"] = args.socket
    return emit(result, result["ok"])


def probe_options(args: argparse.Namespace) -> dict[str, Any]:
    # One try may use the whole budget: the first HTTP answer decides, and a slow first answer is still an answer.
    return {"per_try": args.timeout, "expect_json": args.expect_json}


def stop_process_group(process: subprocess.Popen, grace: float) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cmd_canary(args: argparse.Namespace) -> int:
    if not args.command:
        return emit({"ok": False, "error": "no canary command given after --"}, False)
    workdir = Path(tempfile.mkdtemp(prefix="app-canary-"))
    socket_path = str(workdir / "canary.sock")
    log_path = workdir / "canary.log"
    command = [part.replace("{socket}", socket_path) for part in args.command]
    try:
        deadline = time.monotonic() + args.timeout
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            outcome = probe(
                socket_path, args.path, deadline, alive=lambda: process.poll() is None, **probe_options(args)
            )
        finally:
            stop_process_group(process, args.grace)
        result = probe_report(outcome)
        if outcome.died:
            result["error"] = f"the canary exited with status {process.returncode} before answering"
        result["command"] = command
        if not result["ok"]:
            result["log"] = tail(log_path)
        return emit(result, result["ok"])
    except OSError as exc:
        return emit({"ok": False, "error": f"cannot start {command[0]}: {exc.strerror}", "command": command}, False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- entry point


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="app-release", description=__doc__.split("\n", 1)[0])
    sub = top.add_subparsers(dest="subcommand", required=True)

    state = sub.add_parser("state")
    state.add_argument("--base", required=True)
    state.set_defaults(func=cmd_state)

    swap = sub.add_parser("swap")
    swap.add_argument("--base", required=True)
    swap.add_argument("--to", required=True)
    swap.add_argument("--dry-run", action="store_true")
    swap.add_argument("--allow-unchecked", action="store_true", help="swap to a release that is not marked good")
    swap.set_defaults(func=cmd_swap)

    fail = sub.add_parser("fail")
    fail.add_argument("--base", required=True)
    fail.add_argument("--release", required=True)
    fail.add_argument("--reason", required=True)
    fail.set_defaults(func=cmd_fail)

    rolled_back = sub.add_parser("rolled-back")
    rolled_back.add_argument("--base", required=True)
    rolled_back.add_argument("--release", required=True)
    rolled_back.set_defaults(func=cmd_rolled_back)

    prune = sub.add_parser("prune")
    prune.add_argument("--base", required=True)
    prune.add_argument("--keep", type=int, required=True)
    prune.add_argument("--dry-run", action="store_true")
    prune.add_argument(
        "--incomplete-grace",
        type=float,
        default=INCOMPLETE_GRACE,
        help="keep incomplete releases and unlinked venvs changed less than this many seconds ago (being built)",
    )
    prune.set_defaults(func=cmd_prune)

    for name, func in (("probe", cmd_probe), ("canary", cmd_canary)):
        command = sub.add_parser(name)
        command.add_argument("--path", default="/")
        command.add_argument("--timeout", type=float, default=30.0)
        command.add_argument("--expect-json", action="store_true")
        if name == "probe":
            command.add_argument("--socket", required=True)
        else:
            command.add_argument("--grace", type=float, default=10.0)
            command.add_argument("command", nargs=argparse.REMAINDER)
        command.set_defaults(func=func)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    if getattr(args, "base", None):
        # Absolute once, here: the links swap writes must not depend on the caller's working directory.
        args.base = os.path.abspath(args.base)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
