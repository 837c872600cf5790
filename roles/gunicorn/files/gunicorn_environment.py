"""A new app environment for a running gunicorn master, without a restart (pyweb.stack.gunicorn).

Loaded in the master by the gunicorn config the role writes; its on_reload hook calls reexec_for_environment on every
HUP. Every process of the app starts through bin/app-env, which exports the KEY=VALUE lines of shared/.env and execs
the program: the values are part of the environment the kernel keeps for the process (/proc/<pid>/environ) from that
exec on. A HUP alone cannot change that: gunicorn's raw_env only sets os.environ in the master, and workers forked
from it carry the master's exec-time environment in /proc/<pid>/environ. A restart of the master would, but the
socket is closed meanwhile and the web server answers 502.

So when the file no longer matches the environment the master was executed with, the master replaces its program
image in place (execve, same pid, so supervisor and systemd keep tracking it) with the new environment: its workers
first finish their requests (as on a graceful stop), the listening sockets stay open across the exec (gunicorn's own
re-exec protocol: GUNICORN_FD, GUNICORN_PID), so connections wait in the backlog until the new image's workers accept
them. Nothing is refused.
"""

from __future__ import annotations

import os
import signal
import time

# What gunicorn's re-exec protocol adds; never carried over from an earlier exec.
REEXEC_KEYS = ("GUNICORN_PID", "GUNICORN_FD", "LISTEN_PID", "LISTEN_FDS")
# The env file as it was when this program image started (the first config load after the exec).
STARTED_WITH: dict[str, str] = {}
_REMEMBERED: list[str] = []


def parse_env(text: str) -> dict[str, str]:
    """The KEY=VALUE lines of an env file the way bin/app-env exports them: as written, no quoting, no expansion;
    empty lines and lines starting with # are skipped."""
    env: dict[str, str] = {}
    for line in text.split("\n"):
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key] = value
    return env


def read_env_file(path: str) -> dict[str, str] | None:
    """The env file's values, or None when it cannot be read (then the environment is left alone)."""
    try:
        with open(path, "rb") as handle:
            return parse_env(os.fsdecode(handle.read()))
    except OSError:
        return None


def exec_environ(pid: int | str = "self") -> dict[str, str]:
    """The environment a process was executed with (/proc/<pid>/environ), not os.environ."""
    with open(f"/proc/{pid}/environ", "rb") as handle:
        raw = handle.read()
    return dict(os.fsdecode(item).split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def remember_started_file(path: str) -> None:
    """Record the env file the master's program image started with; only the first call in an image counts."""
    if not _REMEMBERED:
        _REMEMBERED.append(path)
        STARTED_WITH.update(read_env_file(path) or {})


def venv_path(path: str, release: str) -> str:
    """PATH as bin/app-env leaves it: the release's venv first, when the release has one."""
    if os.access(os.path.join(release, ".venv", "bin", "python"), os.X_OK):
        return os.path.join(release, ".venv", "bin") + ":" + path
    return path


def wanted_environment(
    started: dict[str, str], started_file: dict[str, str], current_file: dict[str, str], release: str
) -> dict[str, str] | None:
    """The environment a master executed with `started` must have now that the env file holds `current_file` (it
    held `started_file` when the master's image started), or None when it has it already.

    Keys of the old file that the new one dropped go away; everything else the process manager gave stays."""
    wanted = {k: v for k, v in started.items() if k not in started_file and k not in REEXEC_KEYS}
    wanted.update(current_file)
    if "PATH" in current_file:
        wanted["PATH"] = venv_path(current_file["PATH"], release)
    if wanted == {k: v for k, v in started.items() if k not in REEXEC_KEYS}:
        return None
    return wanted


def reexec_for_environment(server, env_file: str) -> bool:
    """Re-execute the master in place when the env file changed since its image started. Returns False when nothing
    had to change (or the exec failed: the reload then goes on as a plain HUP and the reload tool reports it)."""
    current = read_env_file(env_file)
    if current is None:
        return False
    wanted = wanted_environment(exec_environ(), STARTED_WITH, current, os.path.realpath(server.cfg.chdir))
    if wanted is None:
        return False
    if stop_pending(server):
        # An exec would lose the signal; the main loop stops the master right after this reload instead.
        return False
    server.log.info("%s changed: executing the master again in place (pid %s) with it", env_file, os.getpid())
    stop_workers(server)
    if server.pidfile is not None:
        # The new image writes it again; a file naming its own pid would make gunicorn skip that and never unlink it.
        server.pidfile.unlink()
    wanted["GUNICORN_PID"] = str(os.getpid())
    wanted["GUNICORN_FD"] = ",".join(str(listener.fileno()) for listener in server.LISTENERS)
    try:
        os.chdir(server.cfg.chdir)
        os.execve(server.START_CTX[0], server.START_CTX["args"], wanted)
    except OSError as exc:
        server.log.error("cannot execute the master again (%s): the new environment is not applied", exc)
    return False


def stop_pending(server) -> bool:
    """True when a stop signal waits in the master's queue: gunicorn before 24 keeps a list, later ones a
    queue.SimpleQueue, which is emptied to look and then refilled in the same order."""
    queue = server.SIG_QUEUE
    if isinstance(queue, list):
        pending = list(queue)
    else:
        pending = []
        while not queue.empty():
            pending.append(queue.get_nowait())
        for sig in pending:
            queue.put_nowait(sig)
    return any(sig in pending for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))


def stop_workers(server) -> None:
    """What gunicorn's graceful stop does to the workers, with the listening sockets left open: TERM, wait up to
    graceful_timeout for the requests in progress, KILL what is left, and reap them all."""
    server.kill_workers(signal.SIGTERM)
    deadline = time.monotonic() + server.cfg.graceful_timeout
    while server.WORKERS and time.monotonic() < deadline:
        server.reap_workers()
        time.sleep(0.05)
    server.kill_workers(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while server.WORKERS and time.monotonic() < deadline:
        server.reap_workers()
        time.sleep(0.05)
