# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-app release lock: one exclusive flock on <base>/.pyweb-release.lock that every path rolling out a
release takes (the pyweb.stack.release_lock module for an Ansible rollout, the push runner of pyweb.stack.git_deploy,
an operator's bin/app-lock), so two rollouts of one app never interleave however they were started.

The holder writes a one-line JSON description into the file right after it took the lock, so a waiter can say who
it waits for. The file keeps the last holder's description after a release: it names the current holder only while
the lock is held (a flock that inherits across fork() can outlive the process that wrote it).

Every take, wait and release is also logged to syslog (journald) under the identifier `pyweb-release-lock`, with
the wall-clock time of the event in the message: a log line "taken" is written after the flock was granted and
"released" before it is given up, so the logged intervals of two holders contain their real ones.

Standard library only, no ansible.module_utils: the same file runs inside a module and on the host as plain Python.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import signal
import syslog
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_NAME = ".pyweb-release.lock"
LOG_IDENT = "pyweb-release-lock"
POLL_INTERVAL = 0.2
START_TIMEOUT = 10.0  # seconds a lease holder may take to say it holds the lock


class LockError(Exception):
    """The lock could not be taken or given back; the message says why and who holds it."""


class LockTimeout(LockError):
    """Another holder kept the lock longer than the caller would wait."""


def release_lock_path(base_dir: str | os.PathLike[str]) -> Path:
    return Path(base_dir) / LOCK_NAME


def utc_now(clock: Callable[[], float] = time.time) -> str:
    """Wall-clock time with microseconds, the form every description and log line uses."""
    now = clock()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def log_event(event: str, path: str | os.PathLike[str], holder: dict) -> None:
    """One syslog line per event, `<event> <path> at <time> by <description>` (what the molecule lock test reads)."""
    syslog.openlog(LOG_IDENT, syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_INFO, f"{event} {path} at {utc_now()} by {describe(holder)}")


def open_lock(path: str | os.PathLike[str]) -> int:
    # O_NOFOLLOW: the lock lives in a root-owned directory, but a symlink planted there must still not be followed.
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)


def _granted(descriptor: int, operation: int) -> bool:
    try:
        fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def try_lock(descriptor: int) -> bool:
    return _granted(descriptor, fcntl.LOCK_EX)


def is_locked(path: str | os.PathLike[str]) -> bool:
    """Whether someone holds the lock now. A shared probe: it never makes a holder or another prober wait."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        return not _granted(descriptor, fcntl.LOCK_SH)
    finally:
        os.close(descriptor)


def read_holder(path: str | os.PathLike[str]) -> dict | None:
    """The description the last holder wrote; None when there is none (or it is unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.loads(handle.read() or "null")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def current_holder(path: str | os.PathLike[str]) -> dict | None:
    """The holder's description while the lock is held, else None."""
    if not is_locked(path):
        return None
    return read_holder(path) or {}


def describe(holder: dict | None) -> str:
    if not holder:
        return "an unknown holder (no description in the lock file)"
    text = str(holder.get("owner") or "an unnamed holder")
    details = [f"pid {holder['pid']}"] if holder.get("pid") else []
    details += [f"since {holder['since']}"] if holder.get("since") else []
    details += [f"lease until {holder['until']}"] if holder.get("until") else []
    return f"{text} ({', '.join(details)})" if details else text


def write_holder(descriptor: int, holder: dict) -> None:
    data = (json.dumps(holder, sort_keys=True) + "\n").encode()
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, data, 0)


def acquire(
    descriptor: int,
    path: str | os.PathLike[str],
    timeout: float,
    on_wait: Callable[[str], None] | None = None,
    *,
    owner: str = "",
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Blocks until the flock on descriptor is granted, at most timeout seconds; returns the seconds waited.
    on_wait hears once that (and for whom) the caller waits; LockTimeout names the holder still in the way."""
    started = clock()
    deadline = started + timeout
    announced = False
    while not try_lock(descriptor):
        holder = read_holder(path)
        if not announced:
            message = f"the lock {path} is held by {describe(holder)}; waiting up to {timeout:g}s"
            if on_wait is not None:
                on_wait(message)
            log_event("waiting for", path, {"owner": owner or "a waiter", "pid": os.getpid()})
            announced = True
        remaining = deadline - clock()
        if remaining <= 0:
            raise LockTimeout(
                f"the lock {path} is still held by {describe(holder)} after waiting {timeout:g}s; "
                "wait for that rollout to finish, or end it, then try again"
            )
        time.sleep(min(POLL_INTERVAL, remaining))
    return clock() - started


@contextlib.contextmanager
def hold(
    path: str | os.PathLike[str], timeout: float, owner: str, on_wait: Callable[[str], None] | None = None
) -> Iterator[int]:
    """The exclusive lock for the body of a `with`, its description naming owner; yields the descriptor (a child
    forked inside the body keeps the lock after the body ends: flock belongs to the open file, not the process)."""
    descriptor = open_lock(path)
    try:
        acquire(descriptor, path, timeout, on_wait, owner=owner)
        holder = {"owner": owner, "pid": os.getpid(), "since": utc_now()}
        write_holder(descriptor, holder)
        log_event("taken", path, holder)
        try:
            yield descriptor
        finally:
            log_event("released", path, holder)
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------------------- leases
# A lock held across several Ansible tasks: a module process ends after each task, so a detached holder process
# (own session, the flock inherited) keeps it until it is told to end or its lease runs out.


def process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (/proc/<pid>/stat field 22): with the pid it names
    one process, so a pid reused after the holder ended is never signalled."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def held_by(path: str | os.PathLike[str], token: str) -> dict | None:
    """The holder's description when the lease named token holds the lock now, else None."""
    holder = current_holder(path)
    if not holder or not token or holder.get("token") != token:
        return None
    return holder


def take_lease(
    path: str | os.PathLike[str],
    timeout: float,
    owner: str,
    lease: float,
    on_wait: Callable[[str], None] | None = None,
    *,
    token: str | None = None,
) -> tuple[dict, float]:
    """Takes the lock (waiting up to timeout) and hands it to a detached holder process that keeps it until
    end_lease(token) or for lease seconds at most. Returns the holder's description (with its token) and the
    seconds waited. With the token of the lease holding the lock already, returns that one unchanged."""
    if token:
        existing = held_by(path, token)
        if existing is not None:
            return existing, 0.0
    token = token or secrets.token_hex(8)
    descriptor = open_lock(path)
    try:
        waited = acquire(descriptor, path, timeout, on_wait, owner=owner)
        reader, writer = os.pipe()
        first = os.fork()
        if first == 0:  # pragma: no cover - runs in the forked holder
            os.close(reader)
            _become_holder(descriptor, writer, path, owner=owner, token=token, lease=lease)
        os.close(writer)
        os.waitpid(first, 0)  # the intermediate child exits at once; the holder's parent becomes init
        with os.fdopen(reader, "rb") as ready:
            answer = _read_with_deadline(ready.fileno(), START_TIMEOUT)
    finally:
        os.close(descriptor)
    if not answer.startswith(b"held "):
        raise LockError(f"the lock holder for {path} did not start: {answer.decode(errors='replace') or 'no answer'}")
    holder = json.loads(answer[len(b"held ") :])
    return holder, waited


def _read_with_deadline(descriptor: int, seconds: float) -> bytes:
    deadline = time.monotonic() + seconds
    data = b""
    os.set_blocking(descriptor, False)
    while time.monotonic() < deadline and not data.endswith(b"\n"):
        try:
            chunk = os.read(descriptor, 4096)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not chunk:
            break
        data += chunk
    return data


def _become_holder(  # pragma: no cover - runs in the forked holder
    descriptor: int, writer: int, path: str | os.PathLike[str], *, owner: str, token: str, lease: float
) -> None:
    """Second fork, new session, nothing inherited but the lock and the ready pipe; then sleep until the lease
    ends or SIGTERM (end_lease) arrives. Never returns."""
    status = 0
    try:
        if os.fork() != 0:
            os._exit(0)
        os.setsid()
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        for standard in (0, 1, 2):  # the connection (ssh, docker exec) waits until nobody holds the task's output
            os.dup2(devnull, standard)
        keep = sorted({descriptor, writer})
        os.closerange(3, keep[0])
        for low, high in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")]):
            os.closerange(low + 1, high)
        ended = {"by": "its lease running out"}

        def stop(signum: int, _frame: object) -> None:
            ended["by"] = f"signal {signal.Signals(signum).name}"
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the session of the task that started it may end
        holder = {
            "owner": owner,
            "pid": os.getpid(),
            "start": process_start(os.getpid()),
            "since": utc_now(),
            "until": utc_now(lambda: time.time() + lease),
            "token": token,
        }
        write_holder(descriptor, holder)
        log_event("taken", path, holder)
        os.write(writer, b"held " + json.dumps(holder, sort_keys=True).encode() + b"\n")
        os.close(writer)
        deadline = time.monotonic() + lease
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                time.sleep(min(remaining, 60.0))
        except SystemExit:
            pass
        log_event(f"released (ended by {ended['by']})", path, holder)
    except BaseException:  # a forked child must never return into its parent's code
        status = 1
    finally:
        os._exit(status)


def end_lease(path: str | os.PathLike[str], token: str, timeout: float = 10.0) -> dict | None:
    """Ends the lease named token: its holder gets SIGTERM and the call returns once the lock is no longer that
    holder's. Returns the ended holder's description, or None when that lease no longer held the lock."""
    holder = held_by(path, token)
    if holder is None:
        return None
    pid = int(holder.get("pid") or 0)
    if pid <= 1 or (holder.get("start") and process_start(pid) != holder["start"]):
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while held_by(path, token) is not None:
        if time.monotonic() > deadline:
            raise LockError(f"the lock holder {describe(holder)} of {path} did not end within {timeout:g}s")
        time.sleep(0.05)
    return holder
