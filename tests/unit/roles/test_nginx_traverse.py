"""Unit tests for roles/nginx/files/nginx-traverse.py, which lets the nginx user enter the directories on the way to
the files it serves.

The tool runs as a real command on a real tree; the kernel decides who may enter (the tool probes as the user). It
needs root (to probe as another user); granting also needs setfacl and a file system with POSIX ACLs, which the
molecule scenario flask_spa has (tests/test_serving.py there proves the grant end to end).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "nginx" / "files" / "nginx-traverse.py"
USER = "nobody"
# The tool probes with its own interpreter as the user: the system's, as on a host (a virtualenv may be closed).
PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probing as another user needs root"),
    pytest.mark.skipif(not os.access(PYTHON, os.X_OK), reason=f"needs {PYTHON}"),
]


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=check, timeout=60
    )


def answer(*args: str | Path) -> dict:
    return json.loads(run(*args).stdout)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A tree every user may reach (pytest's own tmp_path sits below a 0700 directory)."""
    with tempfile.TemporaryDirectory(prefix="pyweb-traverse-", dir="/tmp") as directory:
        Path(directory).chmod(0o755)
        yield Path(directory)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """An app base like pyweb.stack.app's: shared/ and shared/uploads closed (0750), current -> releases/1."""
    base = tmp_path / "srv" / "app"
    (base / "releases" / "1" / "spa" / "dist").mkdir(parents=True)
    (base / "shared" / "uploads").mkdir(parents=True)
    (base / "current").symlink_to("releases/1")
    for directory in [tmp_path / "srv", base, base / "releases", base / "releases" / "1"]:
        directory.chmod(0o755)
    (base / "shared").chmod(0o750)
    (base / "shared" / "uploads").chmod(0o750)
    return base


def test_closed_directories_on_the_way_are_found(app: Path) -> None:
    found = answer(USER, "--check", app / "current" / "spa" / "dist", app / "shared" / "uploads")
    assert found == {"granted": [str(app / "shared"), str(app / "shared" / "uploads")], "missing": []}


def test_a_closed_directory_behind_a_symlink_is_found(app: Path) -> None:
    (app / "releases" / "1").chmod(0o700)
    found = answer(USER, "--check", app / "current" / "spa" / "dist")
    assert found["granted"] == [str(app / "releases" / "1")]


def test_open_paths_need_nothing(app: Path) -> None:
    assert answer(USER, "--check", app / "current" / "spa" / "dist") == {"granted": [], "missing": []}


def test_a_missing_path_is_reported_and_its_existing_parents_checked(app: Path) -> None:
    found = answer(USER, "--check", app / "shared" / "media")
    assert found == {"granted": [str(app / "shared")], "missing": [str(app / "shared" / "media")]}


def test_a_missing_required_directory_fails_naming_it(app: Path) -> None:
    result = run(USER, f"--require={app / 'shared' / 'static'}", check=False)
    assert result.returncode == 1
    assert f"nginx_traverse_dirs: {app / 'shared' / 'static'} does not exist" in result.stderr


def test_relative_paths_are_refused(app: Path) -> None:
    result = run(USER, "--check", "spa/dist", check=False)
    assert result.returncode != 0
    assert "spa/dist is not an absolute path" in result.stderr


def acl_supported(directory: Path) -> bool:
    probe = subprocess.run(["setfacl", "--modify", "u:nobody:--x", str(directory)], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("setfacl") is None, reason="granting needs setfacl (package acl)")
def test_grants_let_the_user_in_and_a_second_run_grants_nothing(app: Path, tmp_path: Path) -> None:
    probe_dir = tmp_path / "acl-probe"
    probe_dir.mkdir()
    if not acl_supported(probe_dir):
        pytest.skip("the file system of the test tree has no POSIX ACLs")
    (app / "shared" / "uploads" / "a.txt").write_text("uploaded\n", encoding="utf-8")
    (app / "shared" / "uploads" / "a.txt").chmod(0o644)
    uploads = app / "shared" / "uploads"
    assert answer(USER, uploads)["granted"] == [str(app / "shared"), str(uploads)]
    assert answer(USER, uploads) == {"granted": [], "missing": []}
    nobody = pwd.getpwnam(USER)
    read = subprocess.run(
        ["cat", str(uploads / "a.txt")], user=nobody.pw_uid, group=nobody.pw_gid, capture_output=True, check=False
    )
    assert read.stdout == b"uploaded\n"
    assert (app / "shared").stat().st_mode & 0o777 == 0o750, "the mode stays as it was"
