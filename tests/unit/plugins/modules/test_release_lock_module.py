# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pyweb.stack.release_lock with real flocks: real detached holder processes, another real process holding the lock
the way a push does, real lease expiry."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from ansible_collections.pyweb.stack.plugins.module_utils import _lock
from ansible_collections.pyweb.stack.plugins.modules import release_lock as release_lock_module

PUSH = "git push of refs/heads/main 3f1c2a9e4b7d (git-deploy)"


def run_module(capsys: pytest.CaptureFixture[str], check_mode: bool = False, **args: object) -> dict:
    with patch_module_args({**args, "_ansible_check_mode": check_mode}), pytest.raises(SystemExit):
        release_lock_module.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """An app base directory; no lease holder outlives the test."""
    yield tmp_path
    holder = _lock.read_holder(_lock.release_lock_path(tmp_path))
    if holder and holder.get("token"):
        _lock.end_lease(_lock.release_lock_path(tmp_path), holder["token"])


@pytest.fixture
def push(base: Path, lock_elsewhere) -> subprocess.Popen:
    """Another process holds the lock like the push runner does, until its stdin closes."""
    return lock_elsewhere(_lock.release_lock_path(base), PUSH)


def test_held_keeps_the_lock_after_the_task_and_released_gives_it_back(
    capsys: pytest.CaptureFixture[str], base: Path
) -> None:
    taken = run_module(capsys, base_dir=str(base), owner="ansible rollout of chatapp")
    path = str(base / ".pyweb-release.lock")
    assert taken["changed"] is False
    assert taken["held"] is True
    assert taken["lock_file"] == path
    assert taken["waited_for"] == ""
    holder = taken["holder"]
    assert holder["owner"] == "ansible rollout of chatapp"
    assert holder["token"] == taken["token"]
    assert holder["pid"] != os.getpid()
    # the task has ended; a detached process still holds the lock for it
    assert _lock.current_holder(path) == holder
    with pytest.raises(_lock.LockTimeout, match=r"held by ansible rollout of chatapp \(pid"):
        _lock.take_lease(path, 0.2, "someone else", 10)

    released = run_module(capsys, base_dir=str(base), state="released", token=taken["token"])
    assert released["changed"] is False
    assert released["released"] == holder
    assert released["held"] is False
    assert released["holder"] is None
    assert not _lock.is_locked(path)
    assert "warnings" not in released


def test_held_twice_with_the_token_is_the_same_lease(capsys: pytest.CaptureFixture[str], base: Path) -> None:
    first = run_module(capsys, base_dir=str(base))
    again = run_module(capsys, base_dir=str(base), token=first["token"], timeout=0)
    assert again["changed"] is False
    assert again["holder"] == first["holder"]
    released = run_module(capsys, base_dir=str(base), state="released", token=first["token"])
    assert released["released"] == first["holder"]
    twice = run_module(capsys, base_dir=str(base), state="released", token=first["token"])
    assert twice["changed"] is False
    assert twice["released"] is None


def test_a_rollout_waits_for_a_push_and_fails_naming_it(
    capsys: pytest.CaptureFixture[str], base: Path, push: subprocess.Popen
) -> None:
    failed = run_module(capsys, base_dir=str(base), timeout=1)
    assert failed["failed"] is True
    assert f"is still held by {PUSH} (pid {push.pid}, since " in failed["msg"]
    assert "after waiting 1s" in failed["msg"]
    assert failed["holder"]["owner"] == PUSH
    assert failed["held"] is False


def test_a_rollout_takes_the_lock_once_the_push_ends(
    capsys: pytest.CaptureFixture[str], base: Path, push: subprocess.Popen
) -> None:
    assert push.stdin is not None
    # the push ends a moment after the module started waiting for it
    ender = threading.Timer(1.0, push.stdin.close)
    ender.start()
    try:
        taken = run_module(capsys, base_dir=str(base), timeout=30, owner="ansible")
    finally:
        ender.cancel()
    assert taken["held"] is True
    assert taken["waited_for"].startswith(f"the lock {base}/.pyweb-release.lock is held by {PUSH} (pid {push.pid}")
    assert PUSH in taken["waited_for"]
    assert push.wait(10) == 0
    assert _lock.current_holder(base / ".pyweb-release.lock") == taken["holder"]


def test_a_lease_that_ran_out_warns_on_release(capsys: pytest.CaptureFixture[str], base: Path, eventually) -> None:
    taken = run_module(capsys, base_dir=str(base), lease=1)
    assert eventually(lambda: not _lock.is_locked(base / ".pyweb-release.lock")), "the lease outlived its time"
    released = run_module(capsys, base_dir=str(base), state="released", token=taken["token"])
    assert released["released"] is None
    assert released["changed"] is False
    assert "its lease ran out" in json.dumps(released["warnings"])


def test_check_mode_takes_no_lock_and_does_not_wait(
    capsys: pytest.CaptureFixture[str], base: Path, push: subprocess.Popen
) -> None:
    checked = run_module(capsys, check_mode=True, base_dir=str(base), timeout=900)
    assert checked["changed"] is False
    assert checked["held"] is False
    assert checked["token"] == ""
    assert checked["holder"]["owner"] == PUSH  # who holds it now, reported without waiting
    released = run_module(capsys, check_mode=True, base_dir=str(base), state="released", token=checked["token"])
    assert released["released"] is None
    assert _lock.current_holder(base / ".pyweb-release.lock")["owner"] == PUSH


def test_check_mode_on_a_free_lock_leaves_it_free(capsys: pytest.CaptureFixture[str], base: Path) -> None:
    checked = run_module(capsys, check_mode=True, base_dir=str(base))
    assert checked["holder"] is None
    assert not _lock.is_locked(base / ".pyweb-release.lock")


def test_a_missing_base_dir_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    failed = run_module(capsys, base_dir=str(tmp_path / "nowhere"))
    assert failed["failed"] is True
    assert "nowhere is not a directory" in failed["msg"]
    assert not (tmp_path / "nowhere").exists()


def test_released_needs_a_token(capsys: pytest.CaptureFixture[str], base: Path) -> None:
    failed = run_module(capsys, base_dir=str(base), state="released")
    assert failed["failed"] is True
    assert "token" in failed["msg"]


def test_documentation_matches_the_argument_spec() -> None:
    documentation = yaml.safe_load(release_lock_module.DOCUMENTATION)
    assert set(documentation["options"]) == {"base_dir", "state", "owner", "timeout", "lease", "token"}
    assert set(documentation["attributes"]) >= {"check_mode", "diff_mode", "idempotent"}
    assert documentation["options"]["timeout"]["default"] == 900
    assert documentation["options"]["lease"]["default"] == 3600
    returned = yaml.safe_load(release_lock_module.RETURN)
    assert set(returned) == {"lock_file", "held", "token", "holder", "waited", "waited_for", "released"}
    assert yaml.safe_load(release_lock_module.EXAMPLES)
