"""A running gunicorn master moved into a new release, venv or environment without a refused request
(pyweb.stack.gunicorn).

Loaded in the master by the gunicorn config the role writes; its on_reload hook calls reexec_for_environment on every
HUP, its on_starting hook guard_retiring and its post_worker_init hook retire_share.

Why a re-exec. A HUP alone re-reads the config and forks new workers from the master's program image: they import
the release `current` points to (chdir is re-resolved), but with the master's interpreter and packages (the venv it
was started from) and the environment it was executed with (/proc/<pid>/environ: bin/app-env exports shared/.env
before it execs gunicorn; gunicorn's raw_env only changes os.environ). A restart of the master would change both,
but it closes the socket meanwhile: measured on a real host, 40,175 of 146,173 requests got a 502 in 2-3 s.

So on a HUP the master replaces its program image in place (execve: same pid, so systemd's MainPID and supervisor's
pid stay right) when the release, the venv of <base>/current or the env file differ from the ones its image
started with: the new image runs the new venv's Python, gets the listening sockets through gunicorn's own re-exec
protocol (GUNICORN_FD and GUNICORN_PID, as arbiter.reexec passes them on USR2), and forks its workers.

Why the old workers stay until the new ones are ready. gunicorn's own HUP sends TERM to the old workers right
after it forked the new ones, before those imported the app: for an app that takes seconds to import nobody
accepts meanwhile, connections pile up in the socket's backlog, and once it is full the web server's
non-blocking connect fails (nginx: 502, "Resource temporarily unavailable"). Measured with gunicorn 23, sync
workers, 150 clients at 300 requests/s, a backlog of 64 and a 1.5 s app import (a stand-in for a Django app): a
restart failed 391 requests, a re-exec that stopped the old workers first 292 and 362 (two runs), gunicorn's own
HUP 258; the re-exec with the old workers kept serving (this module) 0, for a new venv, a new environment and a
new release alike. So the old
workers are not stopped: they are children of the same pid and keep serving from the old release across the
exec. Each worker of the new image's first generation, once it has loaded the app (post_worker_init), sends TERM
to its share of them (graceful: they finish their requests). A process is named by its pid and its start time,
so no signal reaches a reused pid; guard_retiring in the new master sends TERM after `timeout` to any old worker
still left (a new worker that never got ready) and KILL after graceful_timeout more, and gunicorn reaps them (an
unknown child is skipped by its reap_workers).

Why not gunicorn's USR2: the new master is then a child of the old one, with its own pid. systemd's MainPID (and
NotifyAccess=main) and supervisor's pid would keep naming the old master, and when it is retired systemd stops the
unit's remaining processes and supervisor starts a third gunicorn over the socket. An in-place exec keeps the one
pid both trackers know.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
import threading
import time

# What gunicorn's re-exec protocol and this module add; never carried over from an earlier exec.
RETIRE_KEY = "PYWEB_GUNICORN_RETIRE"
REEXEC_KEYS = ("GUNICORN_PID", "GUNICORN_FD", "LISTEN_PID", "LISTEN_FDS", RETIRE_KEY)
# The env file as it was when this program image started (the first config load after the exec).
STARTED_WITH: dict[str, str] = {}
_REMEMBERED: list[str] = []
# The release this program image started in (on_starting), and the old image's workers it must retire: (pid, start
# time) pairs from RETIRE_KEY, taken out of os.environ so neither the app nor a later exec sees them.
STARTED_IN: list[str] = []
# The venv this image runs from, resolved now: sys.prefix may name it through <base>/current, which a later swap
# points elsewhere.
STARTED_VENV = os.path.realpath(sys.prefix)
RETIRING: list[tuple[int, int]] = [
    (int(pid), int(started))
    for pid, started in (item.split(":", 1) for item in os.environ.pop(RETIRE_KEY, "").split(",") if ":" in item)
]

# pyweb.stack.common's host library (host_library.yml), loaded from its file under a private name: putting the
# library on sys.path would put an `ansible_collections` package into every app process's import namespace (where
# an app's own could be shadowed). A checkout (the unit tests) has the same file beside the role.
_PROCS_RELATIVE = os.path.join("ansible_collections", "pyweb", "stack", "plugins", "module_utils", "_procs.py")
_PROCS_CANDIDATES = (
    os.path.join("/usr/local/lib/pyweb-stack", _PROCS_RELATIVE),
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "plugins", "module_utils", "_procs.py"),
)


def _load_procs():
    name = "pyweb_stack_procs"
    if name not in sys.modules:
        path = next((candidate for candidate in _PROCS_CANDIDATES if os.path.exists(candidate)), _PROCS_CANDIDATES[0])
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}: install pyweb.stack.common's host library")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


procs = _load_procs()


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
    return procs.environ_of(pid) or {}


def remember_started_file(path: str) -> None:
    """Record the env file the master's program image started with; only the first call in an image counts."""
    if not _REMEMBERED:
        _REMEMBERED.append(path)
        STARTED_WITH.update(read_env_file(path) or {})


def venv_path(path: str, release: str) -> str:
    """PATH as bin/app-env leaves it in `release`: the release's venv first, when the release has one. The venv of
    another release of the same app that app-env put first (the one the master started in) goes."""
    entries = path.split(":")
    releases = os.path.dirname(release)
    if entries and entries[0].endswith("/.venv/bin") and os.path.dirname(entries[0][: -len("/.venv/bin")]) == releases:
        entries = entries[1:]
    if os.access(os.path.join(release, ".venv", "bin", "python"), os.X_OK):
        entries.insert(0, os.path.join(release, ".venv", "bin"))
    return ":".join(entries)


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


def release_venv(release: str) -> str | None:
    """The venv the release's .venv link resolves to, when it holds a Python."""
    python = os.path.join(release, ".venv", "bin", "python")
    return os.path.realpath(os.path.join(release, ".venv")) if os.access(python, os.X_OK) else None


def exec_argv(start_args: list[str], running: str, wanted: str) -> list[str] | None:
    """The master's command line (START_CTX["args"]: its interpreter, then its script or `-m` and the rest) to run
    with the Python of the venv `wanted` instead of `running`. The script is named by its path through
    <base>/current (the role's ExecStart), which now resolves into the new venv; a path into the old venv itself is
    mapped to the same place in the new one. None when that script does not exist there."""
    args = [os.path.join(wanted, "bin", "python"), *start_args[1:]]
    if len(args) > 1 and not args[1].startswith("-"):
        script = os.path.realpath(args[1])
        if script.startswith(running + os.sep):
            args[1] = wanted + script[len(running) :]
        if not os.path.exists(args[1]):
            return None
    return args


def reexec_for_environment(server, env_file: str) -> bool:
    """Re-execute the master in place when the release, its venv or the env file differ from what this program
    image started with. Returns False when nothing had to change (or the exec failed: the reload then goes on as a
    plain HUP, and the reload tool reports the master still in the old venv or environment)."""
    release = os.path.realpath(server.cfg.chdir)
    running = STARTED_VENV
    venv = release_venv(release) or running
    started = exec_environ()
    current = read_env_file(env_file)
    wanted = wanted_environment(started, STARTED_WITH, current, release) if current is not None else None
    moved = release != (STARTED_IN[0] if STARTED_IN else release)
    if wanted is None and venv == running and not moved:
        return False
    if stop_pending(server):
        # An exec would lose the signal; the main loop stops the master right after this reload instead.
        return False
    if wanted is None:
        wanted = {k: v for k, v in started.items() if k not in REEXEC_KEYS}
    args = list(server.START_CTX["args"])
    if venv != running:
        moved_args = exec_argv(args, running, venv)
        if moved_args is None:
            server.log.error("%s has no %s: the master stays in %s", venv, args[1], running)
            return False
        args = moved_args
        wanted["PATH"] = venv_path(wanted.get("PATH", os.defpath), release)
    server.log.info(
        "executing the master again in place (pid %s) in %s with %s; its %d workers serve until the new ones are up",
        os.getpid(),
        release,
        venv,
        len(server.WORKERS),
    )
    if server.pidfile is not None:
        # The new image writes it again; a file naming its own pid would make gunicorn skip that and never unlink it.
        server.pidfile.unlink()
    wanted["GUNICORN_PID"] = str(os.getpid())
    wanted["GUNICORN_FD"] = ",".join(str(listener.fileno()) for listener in server.LISTENERS)
    wanted[RETIRE_KEY] = ",".join(
        f"{pid}:{started_at}" for pid in sorted(server.WORKERS) if (started_at := procs.start_time(pid)) is not None
    )
    try:
        os.chdir(release)
        os.execve(args[0], args, wanted)
    except OSError as exc:
        server.log.error("cannot execute the master again (%s): it stays in %s", exc, running)
    return False


def remember_release(server) -> None:
    """on_starting: the release this program image starts in."""
    if not STARTED_IN:
        STARTED_IN.append(os.path.realpath(server.cfg.chdir))


def still_there(pid: int, started_at: int, master: int) -> bool:
    """True while the process is the old worker it was: the same start time, still a child of this master."""
    return procs.start_time(pid) == started_at and procs.parent_of(pid) == master


def retire(old: list[tuple[int, int]], master: int, sig: int) -> None:
    for pid, started_at in old:
        if still_there(pid, started_at, master):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def retire_share(worker) -> None:
    """post_worker_init, in a worker of the new image: once the app is loaded, TERM to this worker's share of the
    old image's workers. The first generation (age 1..workers) shares them out, so capacity never drops."""
    count = max(int(worker.cfg.workers), 1)
    if RETIRING and worker.age <= count:
        retire(RETIRING[worker.age - 1 :: count], os.getppid(), signal.SIGTERM)


def guard_retiring(server) -> None:
    """on_starting, in the master of a new image: the old workers are gone after `timeout` (TERM) plus
    graceful_timeout (KILL) at the latest, even when a new worker never got ready to retire them."""
    remember_release(server)
    if not RETIRING:
        return
    master = os.getpid()
    old = list(RETIRING)
    # gunicorn kills a worker that has not booted within `timeout` itself; 0 (no timeout) gets 30 s.
    term_after = float(server.cfg.timeout) or 30.0
    kill_after = term_after + max(float(server.cfg.graceful_timeout), 1.0)

    def guard() -> None:
        started = time.monotonic()
        time.sleep(term_after)
        retire(old, master, signal.SIGTERM)
        time.sleep(max(kill_after - (time.monotonic() - started), 0.0))
        retire(old, master, signal.SIGKILL)

    threading.Thread(target=guard, name="pyweb-retire-old-workers", daemon=True).start()


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


def let_accepted_connections_speak(grace: float = 1.0) -> bool:
    """In a uvicorn worker: a graceful stop first stops accepting, then gives the connections it accepted until then
    `grace` seconds to send their request, and only then lets uvicorn close the ones still silent.

    uvicorn's own shutdown closes every connection that has not sent a request yet, in the same step as it stops
    accepting. A connection the worker accepted a moment before it was told to stop (the old workers of a HUP, the
    workers of a master retired in a switch of process manager) is then closed unanswered and its client (nginx)
    sees a reset: measured under load in molecule/gunicorn_systemd, one switch in seven lost a request that way.
    Patches uvicorn's Server class in this process (a worker, forked after its app was loaded); False when the
    worker is not a uvicorn one. A second call is a no-op."""
    server_module = sys.modules.get("uvicorn.server")
    if server_module is None:
        return False
    server_class = server_module.Server
    if getattr(server_class.shutdown, "pyweb_grace", None) is not None:
        return True
    uvicorn_shutdown = server_class.shutdown

    async def shutdown(self, sockets=None):  # type: ignore[no-untyped-def]
        for server in self.servers:
            server.close()
        for listener in sockets or []:
            listener.close()
        if self.server_state.connections:
            await asyncio.sleep(grace)
        await uvicorn_shutdown(self, sockets=sockets)

    shutdown.pyweb_grace = grace  # type: ignore[attr-defined]
    server_class.shutdown = shutdown
    return True
