"""Strict verification of a systemd unit or drop-in before it goes live: the one validator every role uses.

`systemd-analyze verify` only reads files named like units, and it exits 0 on settings it ignores ("Unknown key
name ..., ignoring", a value it cannot parse, a sandboxing setting this systemd lacks). Such a line would go live
silently, so here any message about a line of the candidate fails the check too.

The candidate is staged in a scratch directory under the unit's own name (a drop-in as `<unit>.d/candidate.conf`
beside a copy of the unit file it extends; a socket beside a stand-in of its service) and verified there.

Installed by pyweb.stack.common (tasks_from: unit_verify) as /usr/local/libexec/pyweb/unit-verify, run by the
platform python; the roles' `validate:` calls it (`unit-verify --name <unit> [--drop-in-for ...] %s`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SERVICE_STUB = "[Service]\nExecStart=/bin/true\n"


class VerifyError(Exception):
    """The candidate could not be staged (a missing unit file to extend, a bad unit name)."""


def unit_type(name: str) -> str:
    """The unit's type from its name (`service`, `socket`, `timer`...); refuses a name without one."""
    stem, dot, kind = name.rpartition(".")
    if not dot or not stem or "/" in name or not kind.isalpha():
        raise VerifyError(f"{name!r} is not a unit name (like app.service or app@1.socket)")
    return kind


def stage(scratch: Path, candidate: Path, name: str, drop_in_for: Path | None, socket_service_stub: bool) -> Path:
    """Lays the candidate out in `scratch` the way systemd reads it; returns the unit file to verify."""
    kind = unit_type(name)
    unit = scratch / name
    if drop_in_for is not None:
        if not drop_in_for.is_file():
            raise VerifyError(f"the unit file {drop_in_for} that the drop-in extends does not exist")
        shutil.copyfile(drop_in_for, unit)
        (scratch / f"{name}.d").mkdir()
        shutil.copyfile(candidate, scratch / f"{name}.d" / "candidate.conf")
    else:
        shutil.copyfile(candidate, unit)
    if socket_service_stub:
        if kind != "socket":
            raise VerifyError(f"--socket-service-stub goes with a socket unit, not {name}")
        (scratch / f"{name[: -len('.socket')]}.service").write_text(SERVICE_STUB, encoding="utf-8")
    return unit


def problems(output: str, scratch: Path, returncode: int) -> list[str]:
    """Why the verification fails: systemd-analyze's failure, or each message about a line of the staged files."""
    found = [f"systemd-analyze verify exited {returncode}"] if returncode else []
    found.extend(line.strip() for line in output.splitlines() if str(scratch) in line)
    return found


def verify(
    candidate: Path,
    name: str,
    *,
    drop_in_for: Path | None = None,
    socket_service_stub: bool = False,
    analyze: str = "systemd-analyze",
) -> tuple[list[str], str]:
    """(problems, systemd-analyze's output) for the candidate; no problems means it may go live."""
    scratch = Path(tempfile.mkdtemp(prefix="pyweb-unit-verify."))
    try:
        unit = stage(scratch, candidate, name, drop_in_for, socket_service_stub)
        argv = [analyze, "verify", "--man=no", str(unit)]
        if socket_service_stub:
            argv.append(str(unit.with_suffix(".service")))
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        output = result.stdout + result.stderr
        return problems(output, scratch, result.returncode), output
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unit_file_of(unit: str) -> Path:
    """Where systemd loads a unit from (its FragmentPath): the file a drop-in for a packaged unit extends."""
    result = subprocess.run(
        ["systemctl", "show", "--property", "FragmentPath", "--value", unit],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    path = result.stdout.strip()
    if result.returncode or not path:
        raise VerifyError(f"systemd knows no unit file for {unit}")
    return Path(path)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="unit-verify", description=__doc__.split("\n\n", 1)[0])
    cli.add_argument("--name", required=True, help="the unit's name, e.g. app.service, app@1.service, app@.socket")
    target = cli.add_mutually_exclusive_group()
    target.add_argument("--drop-in-for", type=Path, metavar="FILE", help="the candidate is a drop-in for FILE")
    target.add_argument("--drop-in-for-unit", metavar="UNIT", help="the candidate is a drop-in for UNIT's file")
    cli.add_argument(
        "--socket-service-stub", action="store_true", help="verify a socket beside a stand-in of its service"
    )
    cli.add_argument("candidate", type=Path)
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        drop_in_for = unit_file_of(args.drop_in_for_unit) if args.drop_in_for_unit else args.drop_in_for
        found, output = verify(
            args.candidate, args.name, drop_in_for=drop_in_for, socket_service_stub=args.socket_service_stub
        )
    except (VerifyError, OSError) as exc:
        print(f"unit-verify: {exc}", file=sys.stderr)
        return 2
    if output.strip():
        print(output.strip(), file=sys.stderr)
    for problem in found:
        print(f"unit-verify: {args.name}: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
