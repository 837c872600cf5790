"""Unit tests for roles/gunicorn/files/gunicorn_environment.py: which environment a running gunicorn master must be
executed with again after shared/.env changed. The in-place re-exec itself is tested against a real gunicorn in
test_gunicorn_reload.py."""

from __future__ import annotations

import importlib.util
import queue
import signal
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
