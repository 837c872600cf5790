"""Unit tests for roles/app/files/app-lock.py (<base>/bin/app-lock): the real script in a real subprocess, real
flocks, the lock held by the test process the way a push or an Ansible rollout would hold it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.pyweb.stack.plugins.module_utils import _lock

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "roles" / "app" / "files" / "app-lock.py"
COLLECTIONS = str(REPO / ".cache" / "collections")
READ_LOCK = "import sys; sys.stdout.write(open(sys.argv[1]).read())"


def app_lock(*arguments: str, base: Path | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(SCRIPT), *(["--base", str(base)] if base else []), *arguments]
    environment = {**os.environ, "PYTHONPATH": COLLECTIONS, "SUDO_USER": "alice"}
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60, env=environment)


def test_the_command_runs_under_the_lock_naming_the_operator(tmp_path: Path) -> None:
    lock = tmp_path / ".pyweb-release.lock"
    result = app_lock("--", sys.executable, "-c", READ_LOCK, str(lock), base=tmp_path)
    assert result.returncode == 0, result.stderr
    holder = json.loads(result.stdout)
    assert holder["owner"].startswith("bin/app-lock by alice: ")
    assert holder["owner"].endswith(str(lock))
    assert not _lock.is_locked(lock)  # given back when the command ended


def test_the_commands_exit_status_is_app_locks(tmp_path: Path) -> None:
    result = app_lock("--owner", "restore of the database", "--", "sh", "-c", "exit 3", base=tmp_path)
    assert result.returncode == 3


def test_a_held_lock_makes_it_wait_then_give_up_naming_the_holder(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with _lock.hold(_lock.release_lock_path(tmp_path), 1, "git push of refs/heads/main 3f1c2a9e4b7d"):
        result = app_lock("--timeout", "0.5", "--", "touch", str(marker), base=tmp_path)
    assert result.returncode == 75
    assert "is held by git push of refs/heads/main 3f1c2a9e4b7d (pid " in result.stderr
    assert "is still held by git push of refs/heads/main 3f1c2a9e4b7d" in result.stderr
    assert not marker.exists()


def test_status_says_who_holds_the_lock(tmp_path: Path) -> None:
    free = app_lock("--status", base=tmp_path)
    assert (free.returncode, free.stdout) == (0, f"{tmp_path}/.pyweb-release.lock: free\n")
    with _lock.hold(_lock.release_lock_path(tmp_path), 1, "an Ansible rollout"):
        held = app_lock("--status", base=tmp_path)
    assert held.returncode == 1
    assert f"held by an Ansible rollout (pid {os.getpid()}, since " in held.stdout


def test_the_base_defaults_to_the_directory_above_bin(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    installed = tmp_path / "bin" / "app-lock"
    installed.write_text(SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(installed), "--status"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": COLLECTIONS},
    )
    assert result.stdout == f"{tmp_path}/.pyweb-release.lock: free\n", result.stderr


def test_usage_errors_run_nothing(tmp_path: Path) -> None:
    assert app_lock(base=tmp_path).returncode == 2
    assert app_lock("--status", "--", "true", base=tmp_path).returncode == 2
    assert app_lock("--timeout", "-1", "--", "true", base=tmp_path).returncode == 2
    missing = app_lock("--", "true", base=tmp_path / "nowhere")
    assert missing.returncode == 2
    assert "is not an app base directory" in missing.stderr
    unknown = app_lock("--", str(tmp_path / "no-such-command"), base=tmp_path)
    assert unknown.returncode == 127
