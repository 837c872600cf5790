# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_procs against real processes: the tests spawn children (and grandchildren) with subprocess and read them
through /proc; the read-as-owner fallback is exercised in a reader that really lacks CAP_SYS_PTRACE."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.pyweb.stack.plugins.module_utils import _procs
from ansible_collections.pyweb.stack.plugins.module_utils._procs import (
    as_owner_argv,
    children,
    cmdline,
    cwd_of,
    environ_of,
    parent_of,
    read_pid,
    runs,
    start_time,
)

# The directory that holds ansible_collections/ (not resolved: the collection may be a link to the checkout).
COLLECTIONS = Path(_procs.__file__).parents[5]

# A parent that forks `count` children sleeping in `cwd`, prints their pids as one JSON line, then waits.
FORKER = r"""
import json, os, sys, time
count, cwd = int(sys.argv[1]), sys.argv[2]
pids = []
os.chdir(cwd)  # the children start in it, the parent leaves it
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    pids.append(pid)
os.chdir("/")
print(json.dumps(pids), flush=True)
time.sleep(60)
"""


def executed(argv: list[str], **options) -> subprocess.Popen:
    """A child that has executed `argv` (Popen returns when it has forked, before the exec)."""
    proc = subprocess.Popen(argv, **options)
    deadline = time.monotonic() + 10
    while cmdline(proc.pid) != argv:
        assert time.monotonic() < deadline, f"{argv} did not start"
        time.sleep(0.01)
    return proc


@pytest.fixture
def forker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, list[int], Path]]:
    work = tmp_path / "work dir (1)"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", FORKER, "3", str(work), "gunicorn: master [x]"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pids = json.loads(proc.stdout.readline())
    yield proc, pids, work
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    proc.kill()
    proc.wait()


def test_children_are_the_direct_children_sorted(forker) -> None:
    proc, pids, _work = forker

    assert children(proc.pid) == sorted(pids)
    assert all(parent_of(pid) == proc.pid for pid in pids)
    assert children(pids[0]) == []
    assert children(proc.pid, "gunicorn") == sorted(pids)  # forks share the parent's command line
    assert children(proc.pid, "uwsgi") == []


def test_cmdline_keeps_arguments_with_spaces_and_empty_ones() -> None:
    proc = executed([sys.executable, "-c", "import time; time.sleep(60)", "a b", "", "gunicorn: x"])
    try:
        assert cmdline(proc.pid) == [sys.executable, "-c", "import time; time.sleep(60)", "a b", "", "gunicorn: x"]
        assert runs(proc.pid, "GUNICORN")
        assert not runs(proc.pid, "uwsgi")
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_and_a_gone_process_have_no_command_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while (_procs._stat_fields(proc.pid) or ["?"])[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    pidfile = tmp_path / "zombie.pid"
    pidfile.write_text(f"{proc.pid}\n")

    assert cmdline(proc.pid) == []
    assert read_pid(str(pidfile)) is None
    proc.wait()
    assert cmdline(proc.pid) == []
    assert start_time(proc.pid) is None
    assert parent_of(proc.pid) is None


@pytest.mark.parametrize("content", ["", "\n", "abc\n", "-5\n", "0\n", "12 34\n"])
def test_read_pid_refuses_what_names_no_process(tmp_path: Path, content: str) -> None:
    pidfile = tmp_path / "x.pid"
    pidfile.write_text(content)

    assert read_pid(str(pidfile)) is None


def test_read_pid_of_a_missing_file_and_of_a_directory(tmp_path: Path) -> None:
    assert read_pid(str(tmp_path / "missing.pid")) is None
    assert read_pid(str(tmp_path)) is None


def test_read_pid_checks_the_program_when_asked(forker, tmp_path: Path) -> None:
    proc, _pids, _work = forker
    stranger = executed(["sleep", "60"])
    try:
        pidfile = tmp_path / "m.pid"
        pidfile.write_text(f"{proc.pid}\n")
        assert read_pid(str(pidfile)) == proc.pid
        assert read_pid(str(pidfile), "gunicorn") == proc.pid

        pidfile.write_text(f"{stranger.pid}")  # a reused pid: no newline, another program
        assert read_pid(str(pidfile)) == stranger.pid
        assert read_pid(str(pidfile), "gunicorn") is None
    finally:
        stranger.kill()
        stranger.wait()


def test_start_time_tells_processes_apart(forker) -> None:
    proc, pids, _work = forker
    times = [start_time(pid) for pid in [proc.pid, *pids]]

    assert all(isinstance(value, int) for value in times)
    assert start_time(proc.pid) == times[0]  # stable
    assert min(times[1:]) >= times[0]  # the children started after their parent


def test_cwd_and_environ_of_readable_processes(forker) -> None:
    proc, pids, work = forker

    assert {cwd_of(pid) for pid in pids} == {str(work)}
    assert cwd_of(proc.pid) == "/"
    env = environ_of(proc.pid)
    assert env is not None
    assert env["PATH"] == os.environ["PATH"]
    assert cwd_of(999_999_999) is None
    assert environ_of(999_999_999) is None


def test_environ_of_is_the_exec_time_environment(tmp_path: Path) -> None:
    script = "import os, time; os.environ['LATER'] = 'x'; os.putenv('LATER', 'x'); time.sleep(60)"
    proc = executed([sys.executable, "-c", script], env={"PYWEB_A": "1=2", "PYWEB_B": "spaces and $"})
    try:
        env = environ_of(proc.pid)
        assert env == {"PYWEB_A": "1=2", "PYWEB_B": "spaces and $"}
    finally:
        proc.kill()
        proc.wait()


def test_the_fallback_is_not_asked_when_the_file_is_readable(forker) -> None:
    _proc, pids, work = forker
    asked: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str, str]:
        asked.append(argv)
        return 1, "", "not expected"

    assert cwd_of(pids[0], runner) == str(work)
    assert asked == []


def test_as_owner_argv_uses_the_numeric_ids_of_the_process(forker) -> None:
    _proc, pids, _work = forker
    info = os.stat(f"/proc/{pids[0]}")

    assert as_owner_argv(pids[0], ["readlink", "x"]) == [
        "setpriv",
        f"--reuid={info.st_uid}",
        f"--regid={info.st_gid}",
        "--clear-groups",
        "--",
        "readlink",
        "x",
    ]
    assert as_owner_argv(999_999_999, ["true"]) is None


# What a reload tool does as root in a container: root without CAP_SYS_PTRACE may not read another user's
# /proc/<pid>/cwd or environ. The reader drops that capability for real (setpriv) and reads a process of nobody.
READER = r"""
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[2])
from ansible_collections.pyweb.stack.plugins.module_utils._procs import cwd_of, environ_of

asked = []


def runner(argv):
    asked.append(argv)
    completed = subprocess.run(argv, capture_output=True, check=False, timeout=30)
    return completed.returncode, os.fsdecode(completed.stdout), os.fsdecode(completed.stderr)


def failing(argv):
    asked.append(argv)
    return 1, "", "refused"


pid = int(sys.argv[1])
try:
    os.readlink(f"/proc/{pid}/cwd")
    direct = "readable"
except PermissionError:
    direct = "refused"
print(json.dumps({
    "direct": direct,
    "cwd": cwd_of(pid, runner),
    "environ": environ_of(pid, runner),
    "without_runner": cwd_of(pid),
    "failing_runner": cwd_of(pid, failing),
    "asked": asked,
}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_cwd_and_environ_fall_back_to_the_owner_through_the_runner(tmp_path: Path) -> None:
    work = tmp_path / "nobody's dir"
    work.mkdir()
    tmp_path.chmod(0o755)
    nobody = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sleep", "60"],
        cwd=work,
        env={"PYWEB_OWNED": "by nobody"},
    )
    try:
        deadline = time.monotonic() + 10
        while cmdline(nobody.pid) != ["sleep", "60"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        reader = subprocess.run(
            [
                "setpriv",
                "--inh-caps=-sys_ptrace",
                "--bounding-set=-sys_ptrace",
                "--",
                sys.executable,
                "-c",
                READER,
                str(nobody.pid),
                str(COLLECTIONS),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        seen = json.loads(reader.stdout)
    finally:
        nobody.kill()
        nobody.wait()

    assert seen["direct"] == "refused"
    assert seen["cwd"] == str(work)
    assert seen["environ"] == {"PYWEB_OWNED": "by nobody"}
    assert seen["without_runner"] is None
    assert seen["failing_runner"] is None
    assert seen["asked"][0][:4] == ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert seen["asked"][0][-2:] == ["readlink", f"/proc/{nobody.pid}/cwd"]
