"""Unit tests for roles/gunicorn/files/gunicorn_environment.py: which environment a running gunicorn master must be
executed with again after shared/.env changed. The in-place re-exec itself is tested against a real gunicorn in
test_gunicorn_reload.py."""

from __future__ import annotations

import importlib.util
import os
import queue
import signal
import subprocess
import time
import types
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[3] / "roles" / "gunicorn" / "files" / "gunicorn_environment.py"
SPEC = importlib.util.spec_from_file_location("gunicorn_environment", MODULE)
assert SPEC
assert SPEC.loader
environment = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(environment)


def test_env_file_lines_are_read_as_app_env_exports_them() -> None:
    text = "# a comment\n\nA=1\nB=has = and spaces \nC=\nNOT A LINE\nD='quoted'\n#E=2"
    assert environment.parse_env(text) == {"A": "1", "B": "has = and spaces ", "C": "", "D": "'quoted'"}


def test_an_unreadable_env_file_leaves_the_environment_alone(tmp_path: Path) -> None:
    assert environment.read_env_file(str(tmp_path / "missing")) is None


def test_unchanged_file_needs_no_exec() -> None:
    started = {"HOME": "/srv/app", "SECRET": "a", "GUNICORN_PID": "10", "GUNICORN_FD": "5"}
    assert environment.wanted_environment(started, {"SECRET": "a"}, {"SECRET": "a"}, "/nonexistent") is None


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ({"SECRET": "b"}, {"HOME": "/srv/app", "SECRET": "b"}),
        ({"SECRET": "a", "NEW": "1"}, {"HOME": "/srv/app", "SECRET": "a", "NEW": "1"}),
        ({}, {"HOME": "/srv/app"}),
    ],
    ids=["changed value", "added key", "removed key"],
)
def test_changed_file_gives_the_new_environment(current: dict, wanted: dict) -> None:
    # What the process manager gave stays, gunicorn's re-exec keys never carry over, the file's keys are replaced.
    started = {"HOME": "/srv/app", "SECRET": "a", "GUNICORN_PID": "10", "GUNICORN_FD": "5"}
    assert environment.wanted_environment(started, {"SECRET": "a"}, current, "/nonexistent") == wanted


def test_a_master_started_before_the_file_was_remembered_still_sees_a_changed_value() -> None:
    # A master of an older config loads this module on the HUP that brings the new file: it remembers the new file,
    # yet its own environment still holds the old value.
    started = {"SECRET": "a"}
    assert environment.wanted_environment(started, {"SECRET": "b"}, {"SECRET": "b"}, "/nonexistent") == {"SECRET": "b"}


def test_path_from_the_file_gets_the_release_venv_first_as_app_env_does(tmp_path: Path) -> None:
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    python.chmod(0o755)
    started = {"PATH": f"{tmp_path}/.venv/bin:/usr/bin"}
    assert environment.wanted_environment(started, {"PATH": "/usr/bin"}, {"PATH": "/usr/bin"}, str(tmp_path)) is None
    wanted = environment.wanted_environment(started, {"PATH": "/usr/bin"}, {"PATH": "/opt/bin"}, str(tmp_path))
    assert wanted == {"PATH": f"{tmp_path}/.venv/bin:/opt/bin"}


def test_only_the_first_load_in_a_program_image_is_remembered(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SECRET=a\n")
    environment.remember_started_file(str(env_file))
    env_file.write_text("SECRET=b\n")
    environment.remember_started_file(str(env_file))
    assert environment.STARTED_WITH == {"SECRET": "a"}


@pytest.mark.parametrize("make_queue", [list, queue.SimpleQueue], ids=["gunicorn 23 list", "gunicorn 24+ queue"])
def test_a_pending_stop_is_seen_and_left_in_the_queue(make_queue) -> None:
    # An exec would lose the queued signal: the master must stop as asked instead.
    signals = make_queue()
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signals.append(sig) if isinstance(signals, list) else signals.put_nowait(sig)
    server = types.SimpleNamespace(SIG_QUEUE=signals)
    assert environment.stop_pending(server)
    left = list(signals) if isinstance(signals, list) else [signals.get_nowait() for _signal in range(2)]
    assert left == [signal.SIGHUP, signal.SIGTERM]


def test_no_stop_pending_for_a_hup_alone() -> None:
    assert not environment.stop_pending(types.SimpleNamespace(SIG_QUEUE=[signal.SIGHUP]))


def make_release(base: Path, name: str, *, venv: bool = True) -> Path:
    release = base / "releases" / name
    release.mkdir(parents=True)
    if venv:
        python = base / "venvs" / name / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text("")
        python.chmod(0o755)
        (release / ".venv").symlink_to(python.parent.parent)
    return release


def test_path_moves_from_the_release_the_master_started_in_to_the_new_one(tmp_path: Path) -> None:
    old, new = make_release(tmp_path, "r1"), make_release(tmp_path, "r2")
    bare = make_release(tmp_path, "r3", venv=False)

    assert environment.venv_path(f"{old}/.venv/bin:/usr/bin", str(new)) == f"{new}/.venv/bin:/usr/bin"
    assert environment.venv_path(f"{old}/.venv/bin:/usr/bin", str(bare)) == "/usr/bin"
    # Another tool's venv first in PATH is the process manager's business, not app-env's: it stays.
    assert (
        environment.venv_path("/opt/tool/.venv/bin:/usr/bin", str(new))
        == f"{new}/.venv/bin:/opt/tool/.venv/bin:/usr/bin"
    )


def test_the_command_line_runs_the_new_venvs_python(tmp_path: Path) -> None:
    old, new = tmp_path / "venvs" / "a", tmp_path / "venvs" / "b"
    for venv in (old, new):
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "gunicorn").write_text("")
    current = tmp_path / "current"
    current.symlink_to(new)  # <base>/current/.venv after the swap
    args = [f"{old}/bin/python", f"{current}/bin/gunicorn", "--config", "/etc/gunicorn/app.py", "app:app"]

    assert environment.exec_argv(args, str(old), str(new)) == [f"{new}/bin/python", *args[1:]]
    # A script named by its path inside the old venv goes to the same place in the new one.
    direct = [f"{old}/bin/python", f"{old}/bin/gunicorn", "app:app"]
    assert environment.exec_argv(direct, str(old), str(new)) == [f"{new}/bin/python", f"{new}/bin/gunicorn", "app:app"]
    assert environment.exec_argv([f"{old}/bin/python", "-m", "gunicorn"], str(old), str(new)) == [
        f"{new}/bin/python",
        "-m",
        "gunicorn",
    ]
    (new / "bin" / "gunicorn").unlink()
    assert environment.exec_argv(direct, str(old), str(new)) is None


def test_an_old_worker_is_signalled_only_while_it_is_the_same_process() -> None:
    # (pid, start time) names one process: a pid reused since, or one that left this master, gets nothing.
    child = subprocess.Popen(["sleep", "60"])
    try:
        started = environment.procs.start_time(child.pid)
        assert started is not None
        environment.retire([(child.pid, started + 1)], os.getpid(), signal.SIGTERM)
        environment.retire([(child.pid, started)], os.getpid() + 1, signal.SIGTERM)
        time.sleep(0.2)
        assert child.poll() is None
        environment.retire([(child.pid, started)], os.getpid(), signal.SIGTERM)
        assert child.wait(10) == -signal.SIGTERM
        environment.retire([(child.pid, started)], os.getpid(), signal.SIGTERM)  # gone: nothing to do, no error
    finally:
        child.kill()
        child.wait()


class Worker:
    def __init__(self, age: int, workers: int) -> None:
        self.age = age
        self.cfg = types.SimpleNamespace(workers=workers)


def test_the_first_generation_of_new_workers_shares_the_old_ones_out(monkeypatch: pytest.MonkeyPatch) -> None:
    sleepers = [subprocess.Popen(["sleep", "60"]) for _index in range(3)]
    try:
        old = [(proc.pid, environment.procs.start_time(proc.pid)) for proc in sleepers]
        monkeypatch.setattr(environment, "RETIRING", old)
        monkeypatch.setattr(environment.os, "getppid", os.getpid)  # the test process plays the master

        environment.retire_share(Worker(age=3, workers=2))  # a replacement worker: retires nobody
        time.sleep(0.2)
        assert [proc.poll() for proc in sleepers] == [None, None, None]
        environment.retire_share(Worker(age=2, workers=2))
        assert sleepers[1].wait(10) == -signal.SIGTERM
        assert sleepers[0].poll() is None
        environment.retire_share(Worker(age=1, workers=2))
        assert sleepers[0].wait(10) == sleepers[2].wait(10) == -signal.SIGTERM
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()


def test_the_retire_list_is_read_once_and_kept_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(environment.RETIRE_KEY, "12:345,67:890,junk")
    fresh = importlib.util.module_from_spec(SPEC)
    SPEC.loader.exec_module(fresh)

    assert fresh.RETIRING == [(12, 345), (67, 890)]
    assert environment.RETIRE_KEY not in os.environ
    assert environment.RETIRE_KEY in environment.REEXEC_KEYS  # never carried into the next exec
