"""Unit tests for roles/gunicorn/files/gunicorn-reload.py, the release-aware reload of a gunicorn master.

The tool is run as a real command against real processes: a small stand-in gunicorn master (a Python script whose
command line names gunicorn, like the real one) that writes its pidfile and venv marker, forks workers in the
directory <base>/current resolves to, re-resolves it and replaces its workers on HUP, and exits with its workers
on TERM, logging every signal it gets. A stand-in "supervisorctl restart" stops the master and starts a new one.
Nothing of the tool is mocked: it reads /proc, sends signals and runs the restart command for real.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest
from ansible_collections.pyweb.stack.plugins.module_utils import _reload
from ansible_collections.pyweb.stack.plugins.module_utils._procs import children, cmdline, environ_of
from pyweb_molecule import cached_venv

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "gunicorn" / "files" / "gunicorn-reload.py"

# The stand-in master. Usage: gunicorn_standin.py master PIDFILE CURRENT MARKER LOG WORKERS [ignore-hup]
#                             gunicorn_standin.py restart PIDFILE CURRENT MARKER LOG WORKERS [ignore-hup]
# `restart` plays the process manager: TERM the master named in the pidfile, wait until it is gone, start a new
# master in its own session and wait until it has written its pidfile.
STANDIN = r"""
import os
import signal
import subprocess
import sys
import time

mode, pidfile, current, marker, log, count = sys.argv[1:7]
ignore_hup = "ignore-hup" in sys.argv[7:]


def record(line):
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {line}\n")


def alive(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return bool(handle.read())
    except OSError:
        return False


def read_pid():
    try:
        with open(pidfile, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def spawn():
    pids = []
    for _index in range(int(count)):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            while True:
                signal.pause()
        pids.append(pid)
    return pids


def master():
    pending = []
    signal.signal(signal.SIGHUP, lambda *_args: pending.append("HUP"))
    signal.signal(signal.SIGTERM, lambda *_args: pending.append("TERM"))
    os.chdir(current)
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(os.path.realpath(os.path.join(current, ".venv")) + "\n")
    workers = spawn()
    with open(pidfile + ".tmp", "w", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(pidfile + ".tmp", pidfile)
    record("started")
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        while pending:
            sig = pending.pop(0)
            record(sig)
            if sig == "TERM":
                for pid in workers:
                    os.kill(pid, signal.SIGTERM)
                for pid in workers:
                    os.waitpid(pid, 0)
                if read_pid() == os.getpid():
                    os.unlink(pidfile)
                sys.exit(0)
            if not ignore_hup:
                os.chdir(current)  # like gunicorn's chdir setting, re-resolved on HUP
                old, workers = workers, spawn()
                for pid in old:
                    os.kill(pid, signal.SIGTERM)
        time.sleep(0.05)


def restart():
    old = read_pid()
    if old and alive(old):
        os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while alive(old) and time.monotonic() < deadline:
            time.sleep(0.05)
    subprocess.Popen(
        [sys.executable, __file__, "master", *sys.argv[2:]],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = read_pid()
        if pid and pid != old and alive(pid):
            return 0
        time.sleep(0.05)
    return 1


sys.exit(master() if mode == "master" else restart())
"""


@dataclass
class Site:
    """<base>/releases/{r1,r2}, <base>/venvs/{v1,v2}, <base>/current, and the stand-in's files."""

    base: Path
    run: Path
    standin: Path

    @property
    def pidfile(self) -> Path:
        return self.run / "gunicorn.pid"

    @property
    def marker(self) -> Path:
        return self.run / "gunicorn.venv"

    @property
    def log(self) -> Path:
        return self.run / "signals.log"

    @property
    def current(self) -> Path:
        return self.base / "current"

    def release(self, name: str) -> Path:
        return self.base / "releases" / name

    def point_current(self, release: str) -> None:
        temporary = self.base / ".current.tmp"
        os.symlink(str(self.release(release)), str(temporary))
        os.replace(str(temporary), str(self.current))

    def standin_args(self, *extra: str) -> list[str]:
        return [str(self.pidfile), str(self.current), str(self.marker), str(self.log), "2", *extra]

    def restart_command(self, *extra: str) -> list[str]:
        return [sys.executable, str(self.standin), "restart", *self.standin_args(*extra)]

    def start(self, *extra: str) -> int:
        """Start a master the way the process manager would; its pid."""
        subprocess.run(self.restart_command(*extra), check=True, timeout=30)
        pid = master_pid(self)
        assert pid is not None
        wait_for(lambda: len(children(pid)) == 2)
        return pid

    def events(self) -> list[tuple[int, str]]:
        if not self.log.exists():
            return []
        return [(int(pid), what) for pid, what in (line.split(" ", 1) for line in self.log.read_text().splitlines())]


def master_pid(site: Site) -> int | None:
    try:
        return int(site.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def site() -> Iterator[Site]:
    # Short paths under /tmp: the stand-in's command line must name gunicorn, and nothing here needs tmp_path.
    root = Path(tempfile.mkdtemp(prefix="gr-", dir="/tmp"))
    base = root / "app"
    for name in ("r1", "r2"):
        (base / "releases" / name).mkdir(parents=True)
    for name in ("v1", "v2"):
        (base / "venvs" / name / "bin").mkdir(parents=True)
    (root / "run").mkdir()
    standin = root / "gunicorn_standin.py"
    standin.write_text(STANDIN, encoding="utf-8")
    made = Site(base=base, run=root / "run", standin=standin)
    os.symlink(str(base / "venvs" / "v1"), str(base / "releases" / "r1" / ".venv"))
    made.point_current("r1")
    yield made
    for pid in {pid for pid, what in made.events() if what == "started"}:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # each master leads its own session, workers included
    shutil.rmtree(root, ignore_errors=True)


def reload_tool(site: Site, *options: str, restart: list[str] | None = None, timeout: float = 20) -> tuple[int, dict]:
    argv = [
        sys.executable,
        str(SCRIPT),
        "--pidfile",
        str(site.pidfile),
        "--current",
        str(site.current),
        "--venv-marker",
        str(site.marker),
        "--timeout",
        str(timeout),
        *options,
    ]
    if restart is not None:
        argv += ["--", *restart]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout + 30)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0])


def worker_cwds(pid: int) -> set[str]:
    return {os.readlink(f"/proc/{worker}/cwd") for worker in children(pid)}


# ---------------------------------------------------------------------------------------------- nothing to reload


def test_not_running_does_nothing(site: Site) -> None:
    sentinel = site.run / "restarted"
    code, result = reload_tool(site, restart=["touch", str(sentinel)])

    assert code == 0
    assert result["action"] == "none"
    assert result["old_master"] is None
    assert "not running" in result["msg"]
    assert not sentinel.exists()


def test_stale_pidfile_of_another_process_is_never_signalled(site: Site) -> None:
    # The master was killed hard and its pid now belongs to something else: HUP would kill that process.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        site.pidfile.write_text(f"{stranger.pid}\n", encoding="ascii")
        site.marker.write_text(os.path.realpath(site.current / ".venv") + "\n", encoding="utf-8")

        code, result = reload_tool(site, restart=["true"])

        time.sleep(0.3)
        assert stranger.poll() is None, "the tool signalled a process that is not gunicorn"
        assert code == 0
        assert result["action"] == "none"
    finally:
        stranger.kill()
        stranger.wait()


# ---------------------------------------------------------------------------------------------- HUP


def test_same_venv_new_release_is_a_hup(site: Site) -> None:
    master = site.start()
    old_workers = set(children(master))
    assert worker_cwds(master) == {str(site.release("r1"))}
    os.symlink(str(site.base / "venvs" / "v1"), str(site.release("r2") / ".venv"))
    site.point_current("r2")

    code, result = reload_tool(site, restart=site.restart_command())

    assert code == 0, result
    assert result["action"] == "hup"
    assert result["ok"] is True
    assert result["master"] == master == result["old_master"]
    assert result["release"] == str(site.release("r2"))
    assert result["worker_cwds"] == [str(site.release("r2"))]
    assert not old_workers.intersection(result["workers"])
    assert (master, "HUP") in site.events()
    assert (master, "TERM") not in site.events()
    assert worker_cwds(master) == {str(site.release("r2"))}


def test_hup_that_changes_nothing_times_out_with_a_reason(site: Site) -> None:
    master = site.start("ignore-hup")
    os.symlink(str(site.base / "venvs" / "v1"), str(site.release("r2") / ".venv"))
    site.point_current("r2")

    started = time.monotonic()
    code, result = reload_tool(site, restart=site.restart_command(), timeout=2)

    assert time.monotonic() - started < 10
    assert code == 1
    assert result["action"] == "hup"
    assert result["ok"] is False
    assert "still do not all run in" in result["msg"]
    assert (master, "HUP") in site.events()


# ---------------------------------------------------------------------------------------------- restart


def test_changed_venv_restarts_the_master(site: Site) -> None:
    master = site.start()
    os.symlink(str(site.base / "venvs" / "v2"), str(site.release("r2") / ".venv"))
    site.point_current("r2")

    code, result = reload_tool(site, restart=site.restart_command())

    assert code == 0, result
    assert result["action"] == "restart"
    assert result["ok"] is True
    assert result["running_venv"] == str(site.base / "venvs" / "v1")
    assert result["venv"] == str(site.base / "venvs" / "v2")
    assert result["old_master"] == master
    assert result["master"] != master
    assert (master, "TERM") in site.events()
    assert (master, "HUP") not in site.events()
    assert worker_cwds(result["master"]) == {str(site.release("r2"))}


def test_missing_venv_marker_restarts(site: Site) -> None:
    master = site.start()
    site.marker.unlink()

    code, result = reload_tool(site, restart=site.restart_command())

    assert code == 0, result
    assert result["action"] == "restart"
    assert result["running_venv"] is None
    assert result["master"] != master


def test_force_restart_with_the_same_venv(site: Site) -> None:
    master = site.start()

    code, result = reload_tool(site, "--force-restart", restart=site.restart_command())

    assert code == 0, result
    assert result["action"] == "restart"
    assert result["master"] != master
    assert (master, "HUP") not in site.events()


def test_failing_restart_command_is_reported(site: Site) -> None:
    site.start()

    code, result = reload_tool(
        site, "--force-restart", restart=[sys.executable, "-c", "import sys; print('no such program'); sys.exit(7)"]
    )

    assert code == 1
    assert result["action"] == "restart"
    assert "failed (7)" in result["msg"]
    assert "no such program" in result["msg"]


def test_missing_restart_program_is_a_clean_failure(site: Site) -> None:
    site.start()

    code, result = reload_tool(site, "--force-restart", restart=["/nonexistent/supervisorctl", "restart", "web"])

    assert code == 1
    assert result["action"] == "restart"
    assert "cannot run /nonexistent/supervisorctl" in result["msg"]


def test_restart_needed_without_a_command_is_a_clean_failure(site: Site) -> None:
    site.start()

    code, result = reload_tool(site, "--force-restart", restart=None)

    assert code == 1
    assert "no restart command" in result["msg"]


def test_hanging_restart_command_is_bounded_by_the_timeout(site: Site) -> None:
    site.start()

    started = time.monotonic()
    code, result = reload_tool(site, "--force-restart", restart=["sleep", "30"], timeout=2)

    assert time.monotonic() - started < 10
    assert code == 1
    assert "did not finish within the timeout" in result["msg"]


# ---------------------------------------------------------------------------------------------- real gunicorn

PY_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"
GUNICORN_VENV = Path(__file__).resolve().parents[3] / ".cache" / "unit-gunicorn" / PY_TAG

GUNICORN_CONF = """
import os
import sys

chdir = {current!r}
bind = ["unix:{socket}"]
pidfile = {pidfile!r}
workers = 2
worker_class = "sync"
preload_app = False
errorlog = {errorlog!r}


def on_starting(server):
    with open({marker!r}, "w", encoding="utf-8") as marker:
        marker.write(os.path.realpath(sys.prefix) + "\\n")
"""

WSGI_APP = """
import os


def app(environ, start_response):
    body = os.path.basename(os.getcwd()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture(scope="session")
def gunicorn_venv() -> Path:
    """A venv with a real gunicorn, built once from PyPI and kept under .cache/ for later runs."""
    return cached_venv(GUNICORN_VENV, "gunicorn")


@dataclass
class RealGunicorn:
    site: Site
    venv: Path
    config: Path
    socket: Path

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "gunicorn"), "--config", str(self.config), "--daemon", "app:app"]

    def restart_command(self) -> list[str]:
        """What supervisorctl restart does: stop the master, wait until it is gone, start a new one."""
        script = (
            f'pid=$(cat {self.site.pidfile}); kill -TERM "$pid"; '
            f'i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done; '
            + " ".join(self.command())
        )
        return ["sh", "-c", script]

    def get(self) -> str:
        reply = subprocess.run(
            [sys.executable, "-c", GET_OVER_UNIX, str(self.socket)], capture_output=True, text=True, check=True
        )
        return reply.stdout


GET_OVER_UNIX = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
print(data.split(b"\\r\\n\\r\\n", 1)[1].decode(), end="")
"""


def start_real_gunicorn(
    site: Site, venv: Path, template: str, *, env: dict[str, str] | None = None, **values: str
) -> RealGunicorn:
    """Writes the config from `template` for the site (with `values` for its own placeholders), starts a real
    gunicorn master from it (with `env`) and waits for its two workers."""
    (site.release("r1") / ".venv").unlink()
    os.symlink(str(venv), str(site.release("r1") / ".venv"))
    socket_path = site.run / "g.sock"
    config = site.run / "gunicorn.conf.py"
    config.write_text(
        template.format(
            current=str(site.current),
            socket=socket_path,
            pidfile=str(site.pidfile),
            errorlog=str(site.run / "error.log"),
            marker=str(site.marker),
            **values,
        ),
        encoding="utf-8",
    )
    real = RealGunicorn(site=site, venv=venv, config=config, socket=socket_path)
    subprocess.run(real.command(), check=True, timeout=30, env=env)
    wait_for(lambda: master_pid(site) is not None and len(children(master_pid(site) or 0)) == 2, timeout=20)
    return real


@pytest.fixture
def gunicorn(site: Site, gunicorn_venv: Path) -> Iterator[RealGunicorn]:
    for name in ("r1", "r2"):
        (site.release(name) / "app.py").write_text(WSGI_APP, encoding="utf-8")
    os.symlink(str(gunicorn_venv), str(site.release("r2") / ".venv"))
    real = start_real_gunicorn(site, gunicorn_venv, GUNICORN_CONF)
    yield real
    pid = master_pid(site)
    if pid:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20)


def test_real_gunicorn_hup_moves_workers_to_the_new_release(gunicorn: RealGunicorn) -> None:
    site = gunicorn.site
    master = master_pid(site)
    assert gunicorn.get() == "r1"
    site.point_current("r2")

    code, result = reload_tool(site, restart=gunicorn.restart_command())

    assert code == 0, (result, (site.run / "error.log").read_text())
    assert result["action"] == "hup"
    assert result["master"] == master
    assert result["worker_cwds"] == [str(site.release("r2"))]
    assert gunicorn.get() == "r2"


def test_real_gunicorn_forced_restart_starts_a_new_master(gunicorn: RealGunicorn) -> None:
    site = gunicorn.site
    master = master_pid(site)
    site.point_current("r2")

    code, result = reload_tool(site, "--force-restart", restart=gunicorn.restart_command())

    assert code == 0, (result, (site.run / "error.log").read_text())
    assert result["action"] == "restart"
    assert result["master"] != master
    assert result["worker_cwds"] == [str(site.release("r2"))]
    assert gunicorn.get() == "r2"


def test_wait_only_signals_nothing_and_waits_for_the_workers(site: Site) -> None:
    # A master another process manager has just started (a switch of gunicorn_process_manager): no HUP, no restart.
    master = site.start()
    sentinel = site.run / "restarted"

    code, result = reload_tool(site, "--wait-only", restart=["touch", str(sentinel)])

    assert code == 0, result
    assert result["action"] == "none"
    assert result["ok"] is True
    assert result["master"] == master
    assert result["worker_cwds"] == [str(site.release("r1"))]
    assert (master, "HUP") not in site.events()
    assert not sentinel.exists()


# ------------------------------------------------------------------------------- a new environment (real gunicorn)

ENVIRONMENT_MODULE = SCRIPT.parent / "gunicorn_environment.py"
TEMPLATE = SCRIPT.parents[1] / "templates" / "gunicorn.conf.py.j2"


def role_config(site: Site, *, timeout: int = 30, tcp_bind: str = "") -> str:
    """roles/gunicorn/templates/gunicorn.conf.py.j2 itself, rendered for the site: the module loaded once per
    program image, the hooks that re-execute the master in place and retire the old workers. sync workers, the
    socket handed to the test user's own group."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    environment.filters["bool"] = lambda value: str(value).lower() in ("1", "true", "yes", "on")
    environment.filters["comment"] = lambda text: f"# {text}"
    socket_path = site.run / "gunicorn.sock"
    return environment.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        ansible_managed="rendered by test_gunicorn_reload.py",
        gunicorn_app_name="app",
        gunicorn_base_dir=str(site.base),
        gunicorn_socket_path=str(socket_path),
        gunicorn_backlog=64,
        _gunicorn_pidfile=str(site.pidfile),
        gunicorn_proc_name="app",
        gunicorn_workers=2,
        _gunicorn_worker_class_path="sync",
        gunicorn_worker_connections=100,
        gunicorn_threads=1,
        gunicorn_timeout=timeout,
        gunicorn_graceful_timeout=10,
        gunicorn_keepalive=2,
        gunicorn_max_requests=0,
        gunicorn_max_requests_jitter=0,
        gunicorn_reload=False,
        gunicorn_dev_mode=False,
        _gunicorn_forwarded_allow_ips="127.0.0.1",
        _gunicorn_private_bind=tcp_bind,
        gunicorn_log_level="info",
        gunicorn_log_dir=str(site.run),
        gunicorn_access_log_enabled=False,
        gunicorn_socket_group=grp.getgrgid(os.getgid()).gr_name,
        _gunicorn_venv_marker=str(site.marker),
        _gunicorn_env_file=str(site.base / ".env"),
        _gunicorn_environment_module=str(ENVIRONMENT_MODULE),
    )


def start_role_gunicorn(
    site: Site, venv: Path, *, env: dict[str, str] | None = None, timeout: int = 30, tcp_bind: str = ""
) -> RealGunicorn:
    """A real gunicorn master from venv (r1's .venv) with the role's config, the way bin/app-env starts it (the
    script through <base>/current); waits for its two workers."""
    (site.release("r1") / ".venv").unlink()
    os.symlink(str(venv), str(site.release("r1") / ".venv"))
    config = site.run / "gunicorn.conf.py"
    config.write_text(role_config(site, timeout=timeout, tcp_bind=tcp_bind), encoding="utf-8")
    real = RealGunicorn(site=site, venv=site.current / ".venv", config=config, socket=site.run / "gunicorn.sock")
    subprocess.run(real.command(), check=True, timeout=30, env=env, cwd=site.current)
    wait_for(lambda: master_pid(site) is not None and len(children(master_pid(site) or 0)) == 2, timeout=20)
    return real


ENV_APP = """
import os


def app(environ, start_response):
    body = os.environ.get("PYWEB_SECRET", "-").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


class SocketLoad(threading.Thread):
    """Asks the app through its socket every 20 ms (at most 3000 times) and counts what is not a 200."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.stop = threading.Event()
        self.answers: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set() and len(self.answers) + len(self.failures) < 3000:
            try:
                with socket.socket(socket.AF_UNIX) as conn:
                    conn.settimeout(30)
                    conn.connect(str(self.socket_path))
                    conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                    data = b""
                    while chunk := conn.recv(4096):
                        data += chunk
                head, _separator, body = data.partition(b"\r\n\r\n")
                if head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"):
                    self.answers.append(body.decode())
                else:
                    self.failures.append(head[:60].decode(errors="replace") or "empty answer")
            except OSError as exc:
                self.failures.append(repr(exc))
            time.sleep(0.02)


@pytest.fixture
def env_gunicorn(site: Site, gunicorn_venv: Path) -> Iterator[RealGunicorn]:
    (site.release("r1") / "app.py").write_text(ENV_APP, encoding="utf-8")
    env_file = site.base / ".env"
    env_file.write_text("# comment\nPYWEB_SECRET=old\nPYWEB_DROPPED=x\n", encoding="utf-8")
    # What bin/app-env does: the file's values exported, then exec.
    env = {**os.environ, "PYWEB_SECRET": "old", "PYWEB_DROPPED": "x"}
    real = start_role_gunicorn(site, gunicorn_venv, env=env)
    yield real
    pid = master_pid(site)
    if pid:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20)


def proc_environ(pid: int) -> dict[str, str]:
    environ = environ_of(pid)
    assert environ is not None, pid
    return environ


def test_real_gunicorn_takes_a_new_environment_in_place_without_refusing_a_request(env_gunicorn: RealGunicorn) -> None:
    site = env_gunicorn.site
    master = master_pid(site)
    assert master is not None
    old_workers = set(children(master))
    load = SocketLoad(env_gunicorn.socket)
    load.start()
    wait_for(lambda: len(load.answers) >= 5)
    (site.base / ".env").write_text("PYWEB_SECRET=new\n", encoding="utf-8")

    code, result = reload_tool(site, "--env-file", str(site.base / ".env"), restart=["false"])
    log = (site.run / "gunicorn-error.log").read_text()
    assert code == 0, (result, log)
    wait_for(lambda: "new" in load.answers, timeout=20)
    load.stop.set()
    load.join(40)

    assert result["action"] == "hup"
    assert result["master"] == master  # the same process, executed again: supervisor and systemd keep tracking it
    workers = children(master)
    assert len(workers) == 2
    assert not old_workers & set(workers)
    for pid in (master, *workers):
        environ = proc_environ(pid)
        assert environ["PYWEB_SECRET"] == "new", pid
        assert "PYWEB_DROPPED" not in environ, pid
    assert load.failures == []
    assert load.answers[0] == "old"
    assert load.answers[-1] == "new"


def test_real_gunicorn_hup_with_an_unchanged_environment_keeps_the_master_image(env_gunicorn: RealGunicorn) -> None:
    site = env_gunicorn.site
    master = master_pid(site)
    assert master is not None
    code, result = reload_tool(site, "--env-file", str(site.base / ".env"), restart=["false"])

    assert code == 0, result
    assert result["master"] == master
    assert "executing the master again" not in (site.run / "gunicorn-error.log").read_text()


def test_env_file_values_missing_from_the_processes_are_reported(site: Site) -> None:
    # The stand-in master never takes a new environment: the tool must say so, naming the key but never its value.
    site.start()
    env_file = site.base / ".env"
    env_file.write_text("PYWEB_SECRET=never-shown\n", encoding="utf-8")
    site.point_current("r2")
    os.symlink(str(site.base / "venvs" / "v1"), str(site.release("r2") / ".venv"))

    code, result = reload_tool(site, "--env-file", str(env_file), restart=["false"], timeout=3)

    assert code == 1
    assert "still runs without the values of" in result["msg"]
    assert result["environment_missing"]
    assert all(keys == ["PYWEB_SECRET"] for keys in result["environment_missing"].values())
    assert "never-shown" not in json.dumps(result)


def test_unreadable_env_file_is_a_clean_failure(site: Site) -> None:
    site.start()
    code, result = reload_tool(site, "--env-file", str(site.base / "missing.env"), restart=["false"])

    assert code == 1
    assert "cannot read the env file" in result["msg"]


# ---------------------------------------------------------------------------------------------- the decision


def load_tool():
    """The decisions live in the collection's module_utils, which the tool (and the module) import."""
    return _reload


@pytest.mark.parametrize(
    ("running", "switches", "force", "wait", "expected"),
    [
        ("/v/a", True, False, False, "hup"),  # same venv: HUP (the master re-executes itself when the release moved)
        ("/v/a", False, False, False, "hup"),
        ("/v/old", True, False, False, "reexec"),  # new venv, a master that switches in place
        ("/v/old", False, False, False, "restart"),  # new venv, a master started before the role could switch
        (None, True, False, False, "restart"),  # no marker: nothing known about the master
        ("/v/a", True, True, False, "restart"),
        ("/v/old", True, False, True, "wait"),
        ("/v/old", True, True, True, "wait"),
    ],
)
def test_the_reload_plan(running: str | None, switches: bool, force: bool, wait: bool, expected: str) -> None:
    tool = load_tool()

    assert tool.plan(running, switches, "/v/a", force_restart=force, wait_only=wait) == expected


def test_the_venv_marker_says_whether_the_master_switches_in_place(tmp_path: Path) -> None:
    tool = load_tool()
    marker = tmp_path / "gunicorn.venv"

    assert tool.read_marker(str(marker)) == (None, False)
    marker.write_text("/srv/app/venvs/a\n")
    assert tool.read_marker(str(marker)) == ("/srv/app/venvs/a", False)
    marker.write_text(f"/srv/app/venvs/a\n{tool.SWITCHES_VENV}\n")
    assert tool.read_marker(str(marker)) == ("/srv/app/venvs/a", True)
    marker.write_text("\n")
    assert tool.read_marker(str(marker)) == (None, False)


# ---------------------------------------------------------------------------------------- a new venv (real gunicorn)

# Answers which release and venv serve; at import (in each worker, preload_app is off) it records which children
# of its master are alive, so a test can see the old workers were still serving when a new one had loaded the app.
VENV_APP = """
import json, os, sys


def alive_siblings():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getppid() and fields[0] != "Z":
                found.append(int(entry))
    return sorted(found)


with open(os.environ["PYWEB_IMPORTS"], "a") as log:
    log.write(json.dumps({"pid": os.getpid(), "alive": alive_siblings()}) + "\\n")


def app(environ, start_response):
    body = f"{os.path.basename(os.getcwd())} {sys.prefix}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@dataclass
class VenvSite:
    real: RealGunicorn
    old_venv: Path
    new_venv: Path
    imports: Path

    def imported(self) -> list[dict]:
        return [json.loads(line) for line in self.imports.read_text().splitlines()]


@pytest.fixture
def venv_site(site: Site, gunicorn_venv: Path) -> Iterator[VenvSite]:
    """gunicorn from the test venv in r1; r2 links venv b, a copy of it (its own pyvenv.cfg: another sys.prefix),
    whose scripts name its own Python as a venv made in place would."""
    old_venv = gunicorn_venv.resolve()
    new_venv = site.base / "venvs" / "b"
    shutil.copytree(gunicorn_venv, new_venv, symlinks=True)
    script = new_venv / "bin" / "gunicorn"
    script.write_text(f"#!{new_venv}/bin/python\n" + script.read_text().split("\n", 1)[1])
    for name in ("r1", "r2"):
        (site.release(name) / "app.py").write_text(VENV_APP, encoding="utf-8")
    os.symlink(str(new_venv), str(site.release("r2") / ".venv"))
    (site.base / ".env").write_text("PYWEB_MARKER=kept\n", encoding="utf-8")
    imports = site.run / "imports.jsonl"
    env = {**os.environ, "PYWEB_MARKER": "kept", "PYWEB_IMPORTS": str(imports)}
    # What bin/app-env starts: <base>/current/.venv/bin/gunicorn, whose interpreter is the venv's own Python.
    real = start_role_gunicorn(site, old_venv, env=env)
    yield VenvSite(real=real, old_venv=old_venv, new_venv=new_venv, imports=imports)
    pid = master_pid(site)
    if pid:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20)


def test_real_gunicorn_moves_into_a_new_venv_in_place_without_refusing_a_request(venv_site: VenvSite) -> None:
    site = venv_site.real.site
    master = master_pid(site)
    assert master is not None
    old_workers = children(master)
    load = SocketLoad(venv_site.real.socket)
    load.start()
    wait_for(lambda: len(load.answers) >= 5)
    site.point_current("r2")

    code, result = reload_tool(site, restart=["false"])
    log = (site.run / "gunicorn-error.log").read_text()
    assert code == 0, (result, log)
    new_python = str(venv_site.new_venv / "bin" / "python")
    wait_for(lambda: f"r2 {venv_site.new_venv}" in load.answers, timeout=20)
    load.stop.set()
    load.join(40)

    assert result["action"] == "reexec"
    assert result["running_venv"] == str(venv_site.old_venv)
    assert result["master_venv"] == str(venv_site.new_venv)
    assert result["master"] == master  # the same process: systemd's MainPID and supervisor's pid stay right
    assert site.marker.read_text().splitlines() == [str(venv_site.new_venv), "switches-venv-in-place"]
    workers = children(master)
    assert len(workers) == 2
    assert not set(old_workers) & set(workers)
    assert {cmdline(pid)[0] for pid in (master, *workers)} == {new_python}
    assert {os.readlink(f"/proc/{pid}/cwd") for pid in workers} == {str(site.release("r2"))}
    assert all(proc_environ(pid)["PYWEB_MARKER"] == "kept" for pid in (master, *workers))
    assert load.failures == []
    assert load.answers[0] == f"r1 {venv_site.old_venv}"
    assert load.answers[-1] == f"r2 {venv_site.new_venv}"
    # The first new worker to load the app found every old worker still serving: they are retired after, not before.
    first_new = next(record for record in venv_site.imported() if record["pid"] in workers)
    assert set(old_workers) <= set(first_new["alive"]), (old_workers, venv_site.imported())


def test_a_new_venv_without_gunicorn_keeps_the_master_and_fails_with_a_reason(venv_site: VenvSite) -> None:
    site = venv_site.real.site
    master = master_pid(site)
    (venv_site.new_venv / "bin" / "gunicorn").unlink()
    site.point_current("r2")

    code, result = reload_tool(site, restart=["false"], timeout=4)

    assert code == 1
    assert result["action"] == "reexec"
    assert "does not run the venv" in result["msg"]
    assert result["master"] == master
    assert result["running_venv"] == result["master_venv"] == str(venv_site.old_venv)
    assert "has no" in (site.run / "gunicorn-error.log").read_text()


# ------------------------------------------------------------------ the TCP listener for web hosts elsewhere


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_role_gunicorn_or_show_its_log(site: Site, venv: Path, **options) -> RealGunicorn:
    try:
        return start_role_gunicorn(site, venv, **options)
    except AssertionError as error:
        log = site.run / "gunicorn-error.log"
        raise AssertionError(log.read_text() if log.exists() else "gunicorn wrote no log") from error


def test_role_config_with_a_tcp_bind_serves_both_listeners(site: Site, gunicorn_venv: Path) -> None:
    """With web hosts on other machines the role's config adds address:port to the unix socket: the master holds
    both listeners (its when_ready hook still hands the socket file to the web server's group)."""
    (site.release("r1") / "app.py").write_text(ENV_APP, encoding="utf-8")
    port = free_port()
    real = start_role_gunicorn_or_show_its_log(
        site, gunicorn_venv, env={**os.environ, "PYWEB_SECRET": "tcp"}, tcp_bind=f"127.0.0.1:{port}"
    )
    try:
        assert real.get() == "tcp"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1."), data[:200]
        assert data.endswith(b"\r\n\r\ntcp"), data[:200]
    finally:
        pid = master_pid(site)
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20)


def test_role_config_without_web_hosts_elsewhere_has_no_tcp_listener(site: Site) -> None:
    config = role_config(site)
    assert f'bind = ["unix:{site.run / "gunicorn.sock"}"]' in config
    assert "127.0.0.1:" not in config
