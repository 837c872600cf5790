# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release lock with real flocks and real holder processes: other Python processes hold it (with hold() or a
lease), the test process competes like another rollout would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.pyweb.stack.plugins.module_utils import _lock

COLLECTIONS = str(Path(__file__).resolve().parents[4] / ".cache" / "collections")


def python(code: str, **kwargs) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": COLLECTIONS}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=environment, text=True, **kwargs)


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return _lock.release_lock_path(tmp_path)


@pytest.fixture
def other_holder(lock_path: Path, lock_elsewhere) -> subprocess.Popen:
    return lock_elsewhere(lock_path, "git push of refs/heads/main 3f1c2a9e4b7d")


@pytest.fixture
def lease_cleanup(lock_path: Path) -> Iterator[None]:
    """No lease holder outlives its test."""
    yield
    holder = _lock.read_holder(lock_path)
    if holder and holder.get("token"):
        _lock.end_lease(lock_path, holder["token"])


def test_the_lock_file_is_in_the_base_directory(tmp_path: Path) -> None:
    assert _lock.release_lock_path(tmp_path) == tmp_path / ".pyweb-release.lock"
    assert _lock.release_lock_path(str(tmp_path)) == tmp_path / ".pyweb-release.lock"


def test_hold_names_the_holder_in_the_file(lock_path: Path) -> None:
    with _lock.hold(lock_path, 1, "bin/app-lock by alice") as descriptor:
        assert isinstance(descriptor, int)
        holder = _lock.current_holder(lock_path)
        assert holder is not None
        assert holder["owner"] == "bin/app-lock by alice"
        assert holder["pid"] == os.getpid()
        assert _lock.is_locked(lock_path)
    assert not _lock.is_locked(lock_path)
    assert _lock.current_holder(lock_path) is None  # the description left behind does not count as a holder
    assert lock_path.stat().st_mode & 0o777 == 0o644


def test_a_waiter_times_out_naming_the_holder(lock_path: Path, other_holder: subprocess.Popen) -> None:
    heard: list[str] = []
    with pytest.raises(_lock.LockTimeout) as failure, _lock.hold(lock_path, 0.5, "ansible rollout", heard.append):
        pytest.fail("the lock was granted while another process held it")
    message = str(failure.value)
    assert f"git push of refs/heads/main 3f1c2a9e4b7d (pid {other_holder.pid}, since " in message
    assert "after waiting 0.5s" in message
    assert len(heard) == 1
    assert heard[0].startswith(f"the lock {lock_path} is held by git push of refs/heads/main 3f1c2a9e4b7d (pid ")
    assert heard[0].endswith("; waiting up to 0.5s")


def test_a_waiter_gets_the_lock_once_the_holder_lets_go(lock_path: Path, other_holder: subprocess.Popen) -> None:
    heard: list[str] = []
    assert other_holder.stdin is not None
    descriptor = _lock.open_lock(lock_path)
    try:
        assert not _lock.try_lock(descriptor)
        other_holder.stdin.close()  # the other rollout ends
        waited = _lock.acquire(descriptor, lock_path, 15, heard.append)
        assert waited >= 0
        assert other_holder.wait(10) == 0
    finally:
        os.close(descriptor)


def test_the_shared_probe_does_not_take_the_lock(lock_path: Path) -> None:
    assert not _lock.is_locked(lock_path)  # no file yet: nobody holds it
    with _lock.hold(lock_path, 1, "probe test"):
        assert _lock.is_locked(lock_path)
    descriptor = _lock.open_lock(lock_path)
    try:
        assert not _lock.is_locked(lock_path)
        assert _lock.try_lock(descriptor)
    finally:
        os.close(descriptor)


@pytest.mark.parametrize(
    ("holder", "text"),
    [
        (None, "an unknown holder (no description in the lock file)"),
        ({"owner": "x"}, "x"),
        ({"owner": "x", "pid": 7, "since": "S"}, "x (pid 7, since S)"),
        ({"owner": "x", "pid": 7, "since": "S", "until": "U"}, "x (pid 7, since S, lease until U)"),
    ],
)
def test_describe(holder: dict | None, text: str) -> None:
    assert _lock.describe(holder) == text


def test_a_garbled_description_reads_as_none(lock_path: Path) -> None:
    lock_path.write_text("not json\n", encoding="utf-8")
    assert _lock.read_holder(lock_path) is None
    lock_path.write_text("[1]\n", encoding="utf-8")
    assert _lock.read_holder(lock_path) is None


# ---------------------------------------------------------------------------------------------- leases


def test_a_lease_is_held_by_a_detached_process(lock_path: Path, lease_cleanup: None) -> None:
    holder, waited = _lock.take_lease(lock_path, 5, "ansible rollout of chatapp", 300)
    assert waited >= 0
    pid = holder["pid"]
    assert pid != os.getpid()
    assert os.getsid(pid) == pid  # its own session: a controller's ssh or docker exec session may end
    assert _lock.is_locked(lock_path)
    assert _lock.current_holder(lock_path) == holder
    assert holder["owner"] == "ansible rollout of chatapp"
    assert holder["start"] == _lock.process_start(pid)
    # it keeps nothing of its parent but the lock: stdin, stdout and stderr are /dev/null
    fds = {name: os.readlink(f"/proc/{pid}/fd/{name}") for name in os.listdir(f"/proc/{pid}/fd")}
    assert {fds[name] for name in ("0", "1", "2")} == {os.devnull}
    assert sorted(target for name, target in fds.items() if name not in ("0", "1", "2")) == [str(lock_path)]
    # the lock is really held: a waiter times out naming the lease
    with pytest.raises(_lock.LockTimeout, match=r"ansible rollout of chatapp \(pid \d+, since .*, lease until "):
        _lock.take_lease(lock_path, 0.3, "another rollout", 300)
    ended = _lock.end_lease(lock_path, holder["token"])
    assert ended == holder
    assert not _lock.is_locked(lock_path)
    assert _lock.end_lease(lock_path, holder["token"]) is None  # ending it twice is a no-op


def test_taking_a_lease_never_keeps_the_callers_output_open(lock_path: Path, lease_cleanup: None) -> None:
    """An Ansible module's output pipe must reach EOF when the module ends, or the task would never return."""
    process = python(
        f"""
        import json
        from ansible_collections.pyweb.stack.plugins.module_utils._lock import take_lease
        print(json.dumps(take_lease({str(lock_path)!r}, 5, "module", 300)[0]))
        """,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = process.communicate(timeout=30)  # would hang if the holder kept the pipe
    assert process.returncode == 0, err
    holder = json.loads(out)
    assert _lock.held_by(lock_path, holder["token"]) == holder


def test_the_same_token_takes_the_lease_once(lock_path: Path, lease_cleanup: None) -> None:
    first, _waited = _lock.take_lease(lock_path, 5, "rollout", 300)
    again, waited = _lock.take_lease(lock_path, 0.1, "rollout", 300, token=first["token"])
    assert again == first
    assert waited == 0.0


def test_a_lease_ends_when_it_runs_out(lock_path: Path, eventually) -> None:
    holder, _waited = _lock.take_lease(lock_path, 5, "controller that died", 1)
    assert _lock.held_by(lock_path, holder["token"]) is not None
    assert eventually(lambda: not _lock.is_locked(lock_path)), "the lease outlived its time"
    assert _lock.end_lease(lock_path, holder["token"]) is None


def test_a_lease_waits_for_a_holder_then_takes_over(
    lock_path: Path, other_holder: subprocess.Popen, lease_cleanup: None
) -> None:
    heard: list[str] = []
    assert other_holder.stdin is not None
    with pytest.raises(_lock.LockTimeout, match="held by git push of refs/heads/main"):
        _lock.take_lease(lock_path, 0.3, "ansible", 300, heard.append)
    other_holder.stdin.close()
    holder, _waited = _lock.take_lease(lock_path, 15, "ansible", 300, heard.append)
    assert _lock.current_holder(lock_path) == holder
    assert all("held by git push of refs/heads/main" in line for line in heard)


def test_end_lease_never_signals_a_reused_pid(lock_path: Path) -> None:
    """A description naming a live process that is not the holder (its start time differs) is left alone."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with _lock.hold(lock_path, 1, "test") as descriptor:
            _lock.write_holder(descriptor, {"owner": "old lease", "pid": bystander.pid, "start": "1", "token": "t"})
            assert _lock.end_lease(lock_path, "t") is None
            assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(10)


def test_end_lease_ignores_another_token(lock_path: Path, lease_cleanup: None) -> None:
    holder, _waited = _lock.take_lease(lock_path, 5, "rollout", 300)
    assert _lock.end_lease(lock_path, "not-" + holder["token"]) is None
    assert _lock.held_by(lock_path, holder["token"]) == holder
