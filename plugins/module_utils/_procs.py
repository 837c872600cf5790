# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Process discovery from /proc for the app-server reload tools: who a pidfile names, a master's workers, where
a worker runs and what it was executed with.

Standard library only and no process running of its own (ansible-test's pylint refuses it in plugins/): reading
another user's /proc/<pid>/cwd or environ needs CAP_SYS_PTRACE, which root in a container lacks, so the fallback
that reads them as the process's own user goes through a runner the caller passes in (``run(argv) -> (rc, out,
err)``: a subprocess wrapper in the host tools, AnsibleModule.run_command in a module). ``as_owner_argv`` builds
that command with numeric ids (setpriv), so a uid without a passwd entry works too.
"""

from __future__ import annotations

import os
from collections.abc import Callable

# Fields of /proc/<pid>/stat after the command name, counted from the state (field 3 of proc(5)).
_PPID = 1
_STARTTIME = 19


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, which may itself hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cmdline(pid: int) -> list[str]:
    """The command line of a process; empty when it is gone or a zombie (whose command line the kernel drops)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    if not raw:
        return []
    # A process that rewrote its arguments (setproctitle) may leave no trailing NUL.
    return [os.fsdecode(part) for part in (raw[:-1] if raw.endswith(b"\0") else raw).split(b"\0")]


def runs(pid: int, program: str) -> bool:
    """True when a live process's command line (or setproctitle's title) names `program`, case-insensitively:
    "/srv/app/current/.venv/bin/gunicorn", "gunicorn: master [app]", "/usr/bin/uwsgi-core --ini ..."."""
    return any(program.lower() in part.lower() for part in cmdline(pid))


def read_pid(pidfile: str, program: str | None = None) -> int | None:
    """The live process a pidfile names, or None. With `program`, only when that process runs it: a pidfile
    outlives a master that was killed hard and its pid may since belong to anything else, which must never get a
    signal meant for the master."""
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip() or "0")
    except (OSError, ValueError):
        return None
    if pid <= 0 or not cmdline(pid):
        return None
    return pid if program is None or runs(pid, program) else None


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[_PPID]) if fields else None


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot: with the pid, it names one process for good (a pid
    alone may be reused once the process is gone)."""
    fields = _stat_fields(pid)
    return int(fields[_STARTTIME]) if fields and len(fields) > _STARTTIME else None


def children(pid: int, program: str | None = None) -> list[int]:
    """The direct children of a process, sorted; with `program`, only those that run it."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and parent_of(int(entry)) == pid and (program is None or runs(int(entry), program)):
            found.append(int(entry))
    return sorted(found)


def as_owner_argv(pid: int, argv: list[str]) -> list[str] | None:
    """`argv` run as the user and group that own /proc/<pid> (no supplementary groups), or None when it is gone."""
    try:
        info = os.stat(f"/proc/{pid}")
    except OSError:
        return None
    return ["setpriv", f"--reuid={info.st_uid}", f"--regid={info.st_gid}", "--clear-groups", "--", *argv]


def _read_as_owner(pid: int, argv: list[str], run: Callable[[list[str]], tuple[int, str, str]] | None) -> str | None:
    command = as_owner_argv(pid, argv) if run is not None else None
    if command is None or run is None:
        return None
    try:
        code, out, _err = run(command)
    except OSError:
        return None
    return out if code == 0 else None


def cwd_of(pid: int, read_as_owner: Callable[[list[str]], tuple[int, str, str]] | None = None) -> str | None:
    """The working directory of a process, or None when it is gone or cannot be read. When root may not read it
    (no CAP_SYS_PTRACE), `read_as_owner` runs readlink as the process's own user. A worker forked by a master that
    dropped root privileges is not dumpable, and then even its own user cannot read it: None."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except PermissionError:
        out = _read_as_owner(pid, ["readlink", f"/proc/{pid}/cwd"], read_as_owner)
        return (out.rstrip("\n") or None) if out is not None else None
    except OSError:
        return None


def parse_environ(raw: bytes) -> dict[str, str]:
    """NUL-separated KEY=VALUE entries, as /proc/<pid>/environ holds them."""
    return dict(os.fsdecode(item).split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def environ_of(
    pid: int | str, read_as_owner: Callable[[list[str]], tuple[int, str, str]] | None = None
) -> dict[str, str] | None:
    """The environment a process was executed with (/proc/<pid>/environ: what execve got, not what the program
    set since), or None. `pid` may be "self". The fallback as for cwd_of, through `cat`."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return parse_environ(handle.read())
    except PermissionError:
        if pid == "self":
            return None
        out = _read_as_owner(int(pid), ["cat", f"/proc/{pid}/environ"], read_as_owner)
        return parse_environ(os.fsencode(out)) if out is not None else None
    except OSError:
        return None
