"""Unit tests for roles/app/files/app-release.py, the release command line installed as <base>/bin/app-release.

The script is not a package and has no shebang, so it is loaded from its path; it imports the release store and
the probe from the collection's module_utils (PYTHONPATH=.cache/collections, as `make units` sets it; on a host,
the host library of pyweb.stack.common). These tests hold what the command line prints and does, the store's
own rules are in tests/unit/plugins/module_utils/test_release.py. Every test works on a real
<base>/releases/<timestamp> tree in tmp_path; nothing of the logic under test is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.pyweb.stack.plugins.module_utils import _release as rel
from pyweb_molecule import load_source

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "roles" / "app" / "files" / "app-release.py"


app_release = load_source("app_release", SCRIPT)
# The release trees and the test servers of the module_utils tests, built the same way here.
trees = load_source("release_trees", REPO / "tests" / "unit" / "plugins" / "module_utils" / "test_release.py")
servers = load_source("http_servers", REPO / "tests" / "unit" / "plugins" / "module_utils" / "test_unixhttp.py")
R1, R2, R3, R4, R5 = trees.R1, trees.R2, trees.R3, trees.R4, trees.R5
HOUR = trees.HOUR
make_release, point_current, current_target = trees.make_release, trees.point_current, trees.current_target
names, age_path = trees.names, trees.age_path
socket_path = servers.socket_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    """Run main() in-process and return (exit status, the one JSON object it printed)."""
    code = app_release.main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return code, json.loads(out[0])


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "releases").mkdir(parents=True)
    return root


# ---------------------------------------------------------------------------------------------- state


def test_state_without_releases_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run(capsys, "state", "--base", str(tmp_path / "nothing"))
    assert code == 0
    assert result == {
        "current": None,
        "current_meta": None,
        "releases": [],
        "good": [],
        "rolled_back": [],
        "previous_good": None,
    }


def test_state_reports_releases_current_and_previous_good(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "failed", reason="canary said no")
    make_release(base, R3, "good")
    make_release(base, R4, "good")
    make_release(base, R5, "incomplete")
    (base / "releases" / "notadir").write_text("", encoding="utf-8")
    os.symlink(str(base / "releases" / R1), str(base / "releases" / "alias"))
    point_current(base, R4)

    code, result = run(capsys, "state", "--base", str(base))

    assert code == 0
    assert result["current"] == R4
    assert result["current_meta"] == {"release": R4}
    assert result["releases"] == [
        {"name": R1, "status": "good"},
        {"name": R2, "status": "failed", "reason": "canary said no"},
        {"name": R3, "status": "good"},
        {"name": R4, "status": "good"},
        {"name": R5, "status": "incomplete"},
    ]
    assert result["good"] == [R1, R3, R4]
    assert result["rolled_back"] == []
    assert result["previous_good"] == R3


def test_state_previous_good_skips_failed_and_rolled_back(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "rolled_back")
    make_release(base, R3, "failed")
    make_release(base, R4, "good")
    point_current(base, R4)

    _exit_code, result = run(capsys, "state", "--base", str(base))

    assert result["rolled_back"] == [R2]
    assert result["good"] == [R1, R4]
    assert result["previous_good"] == R1


def test_state_previous_good_is_older_than_current(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    make_release(base, R3, "good")
    point_current(base, R2)

    _exit_code, result = run(capsys, "state", "--base", str(base))

    assert result["previous_good"] == R1


def test_state_oldest_current_has_no_previous_good(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    point_current(base, R1)

    _exit_code, result = run(capsys, "state", "--base", str(base))

    assert result["previous_good"] is None


def test_state_without_current_offers_newest_good(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    make_release(base, R3, "failed")

    _exit_code, result = run(capsys, "state", "--base", str(base))

    assert result["current"] is None
    assert result["current_meta"] is None
    assert result["previous_good"] == R2


def test_state_current_meta_none_when_unreadable(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_release(base, R1, "good")
    (path / rel.META_FILE).write_text("{not json", encoding="utf-8")
    point_current(base, R1)

    _exit_code, result = run(capsys, "state", "--base", str(base))

    assert result["current"] == R1
    assert result["current_meta"] is None


# ---------------------------------------------------------------------------------------------- swap


def test_swap_replaces_current_and_reports_previous(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    point_current(base, R1)

    code, result = run(capsys, "swap", "--base", str(base), "--to", R2)

    assert code == 0
    assert result == {"changed": True, "previous": R1, "current": R2}
    assert (base / "current").is_symlink()
    assert current_target(base) == str(base / "releases" / R2)
    assert rel.ReleaseStore(base).current() == R2
    leftovers = [p.name for p in base.iterdir() if p.name.startswith(".current.")]
    assert leftovers == [], "the temporary symlink must be renamed over current, not left behind"


def test_swap_creates_current_when_missing(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")

    code, result = run(capsys, "swap", "--base", str(base), "--to", R1)

    assert code == 0
    assert result == {"changed": True, "previous": None, "current": R1}
    assert current_target(base) == str(base / "releases" / R1)


def test_swap_replaces_a_stale_temporary_link(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    os.symlink("/nonexistent", str(base / f".current.{os.getpid()}"))

    code, _output = run(capsys, "swap", "--base", str(base), "--to", R1)

    assert code == 0
    assert current_target(base) == str(base / "releases" / R1)


def test_swap_to_current_is_unchanged(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    point_current(base, R1)
    before = os.lstat(str(base / "current")).st_ino

    code, result = run(capsys, "swap", "--base", str(base), "--to", R1)

    assert code == 0
    assert result == {"changed": False, "previous": R1, "current": R1}
    assert os.lstat(str(base / "current")).st_ino == before


def test_swap_to_missing_release_fails_and_leaves_current(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    point_current(base, R1)

    code, result = run(capsys, "swap", "--base", str(base), "--to", R2)

    assert code == 1
    assert result["changed"] is False
    assert result["previous"] == R1
    assert "does not exist" in result["msg"]
    assert current_target(base) == str(base / "releases" / R1)


@pytest.mark.parametrize("status", ["failed", "incomplete"])
def test_swap_refuses_release_that_is_not_good(base: Path, capsys: pytest.CaptureFixture[str], status: str) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, status)
    point_current(base, R1)

    code, result = run(capsys, "swap", "--base", str(base), "--to", R2)

    assert code == 1
    assert result["changed"] is False
    assert f"is {status}, not good" in result["msg"]
    assert current_target(base) == str(base / "releases" / R1)


def test_swap_allow_unchecked_takes_incomplete_release(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "incomplete")
    point_current(base, R1)

    code, result = run(capsys, "swap", "--base", str(base), "--to", R2, "--allow-unchecked")

    assert code == 0
    assert result == {"changed": True, "previous": R1, "current": R2}
    assert rel.ReleaseStore(base).current() == R2


def test_swap_back_to_rolled_back_release_clears_marker(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    path = make_release(base, R2, "rolled_back")
    point_current(base, R1)

    code, result = run(capsys, "swap", "--base", str(base), "--to", R2)

    assert code == 0
    assert result["changed"] is True
    assert not (path / rel.ROLLED_BACK_FILE).exists()
    assert rel.release_status(path) == "good"
    assert rel.ReleaseStore(base).current() == R2


def test_swap_dry_run_reports_but_does_not_touch(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    path = make_release(base, R2, "rolled_back")
    point_current(base, R1)

    code, result = run(capsys, "swap", "--base", str(base), "--to", R2, "--dry-run")

    assert code == 0
    assert result == {"changed": True, "previous": R1, "current": R2}
    assert current_target(base) == str(base / "releases" / R1)
    assert (path / rel.ROLLED_BACK_FILE).exists()


def test_swap_that_cannot_rename_keeps_rolled_back_marker(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    path = make_release(base, R2, "rolled_back")
    (base / "current").mkdir()  # a directory where the link belongs: rename(2) of a link over it fails
    (base / "current" / "keep").write_text("", encoding="utf-8")

    code, result = run(capsys, "swap", "--base", str(base), "--to", R2)

    assert code == 1
    assert result["changed"] is False
    assert "cannot point" in result["msg"]
    assert (path / rel.ROLLED_BACK_FILE).exists(), "the marker goes only once current really moved"
    assert rel.release_status(path) == "rolled_back"
    assert [p.name for p in base.iterdir() if p.name.startswith(".current.")] == []


def test_swap_with_relative_base_in_process(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    point_current(base, R1)
    monkeypatch.chdir(base.parent)

    code, _output = run(capsys, "swap", "--base", base.name, "--to", R2)

    assert code == 0
    assert os.path.isabs(current_target(base))
    assert (base / "current" / "app.py").is_file()
    assert rel.ReleaseStore(base).current() == R2


# ---------------------------------------------------------------------------------------------- fail / rolled-back


def test_fail_writes_reason_and_release_becomes_failed(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_release(base, R1, "good")

    code, result = run(capsys, "fail", "--base", str(base), "--release", R1, "--reason", "health check 500\n\n")

    assert code == 0
    assert result == {"changed": True, "release": R1, "reason": "health check 500\n\n", "current": None}
    assert (path / rel.FAILED_FILE).read_text(encoding="utf-8") == "health check 500\n"
    assert rel.release_status(path) == "failed"
    assert rel.ReleaseStore(base).releases() == [{"name": R1, "status": "failed", "reason": "health check 500"}]


def test_fail_of_another_release_leaves_current(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "incomplete")
    point_current(base, R1)

    code, result = run(capsys, "fail", "--base", str(base), "--release", R2, "--reason", "canary 500")

    assert code == 0
    assert result["current"] == R1
    assert rel.ReleaseStore(base).current() == R1


def test_fail_of_current_release_swaps_back_to_previous_good(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A failure after the swap (a reload handler, the live probe): the failed release must not stay current.
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    point_current(base, R2)

    code, result = run(capsys, "fail", "--base", str(base), "--release", R2, "--reason", "reload failed")

    assert code == 0
    assert result["current"] == R1
    assert rel.ReleaseStore(base).current() == R1
    assert os.path.isabs(current_target(base))
    assert rel.release_status(base / "releases" / R2) == "failed"
    assert not list(base.glob(".current.*"))


def test_fail_of_current_release_without_previous_good_removes_current(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first deploy: nothing to go back to, so nothing is current (the next run makes a new release).
    make_release(base, R1, "good")
    point_current(base, R1)

    code, result = run(capsys, "fail", "--base", str(base), "--release", R1, "--reason", "reload failed")

    assert code == 0
    assert result["current"] is None
    assert not (base / "current").is_symlink()
    assert rel.ReleaseStore(base).current() is None


def test_fail_missing_release_fails(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run(capsys, "fail", "--base", str(base), "--release", R1, "--reason", "x")

    assert code == 1
    assert result["changed"] is False
    assert not (base / "releases" / R1).exists()


def test_rolled_back_marks_good_release(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_release(base, R1, "good")

    code, result = run(capsys, "rolled-back", "--base", str(base), "--release", R1)

    assert code == 0
    assert result == {"changed": True, "release": R1}
    assert rel.release_status(path) == "rolled_back"


@pytest.mark.parametrize("status", ["failed", "incomplete", "rolled_back"])
def test_rolled_back_ignores_release_that_is_not_good(
    base: Path, capsys: pytest.CaptureFixture[str], status: str
) -> None:
    path = make_release(base, R1, status)

    code, result = run(capsys, "rolled-back", "--base", str(base), "--release", R1)

    assert code == 0
    assert result == {"changed": False, "release": R1}
    assert rel.release_status(path) == status


def test_rolled_back_missing_release_is_a_no_op(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run(capsys, "rolled-back", "--base", str(base), "--release", R1)

    assert code == 0
    assert result == {"changed": False, "release": R1}


# ---------------------------------------------------------------------------------------------- prune


def test_prune_keeps_newest_good_counting_current(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in (R1, R2, R3, R4, R5):
        make_release(base, name, "good")
    point_current(base, R5)

    code, result = run(capsys, "prune", "--base", str(base), "--keep", "3")

    assert code == 0
    assert result == {
        "changed": True,
        "removed": [R1, R2],
        "removed_venvs": [],
        "kept_incomplete": [],
        "kept_young_venvs": [],
    }
    assert names(base) == [R3, R4, R5]


def test_prune_removes_failed_incomplete_and_rolled_back_first(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "failed")
    make_release(base, R3, "rolled_back")
    age_path(make_release(base, R4, "incomplete"), HOUR + 60)
    make_release(base, R5, "good")
    point_current(base, R5)

    code, result = run(capsys, "prune", "--base", str(base), "--keep", "3")

    assert code == 0
    assert result["removed"] == [R2, R3, R4]
    assert names(base) == [R1, R5]


def test_prune_keep_one_still_keeps_previous_good(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in (R1, R2, R3):
        make_release(base, name, "good")
    point_current(base, R3)

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", "1")

    assert result["removed"] == [R1]
    assert names(base) == [R2, R3]


def test_prune_never_removes_current_even_if_failed(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    make_release(base, R3, "failed")
    point_current(base, R3)

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", "1")

    assert R3 not in result["removed"]
    assert (base / "releases" / R3).is_dir()
    assert names(base) == [R2, R3]


def test_prune_without_current_keeps_newest_good(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    make_release(base, R3, "failed")

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", "0")

    assert result["removed"] == [R3, R1]
    assert names(base) == [R2]


def test_prune_nothing_to_do_is_unchanged(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    point_current(base, R2)

    code, result = run(capsys, "prune", "--base", str(base), "--keep", "5")

    assert code == 0
    assert result == {
        "changed": False,
        "removed": [],
        "removed_venvs": [],
        "kept_incomplete": [],
        "kept_young_venvs": [],
    }
    assert names(base) == [R1, R2]


def test_prune_dry_run_removes_nothing(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "failed")
    make_release(base, R2, "good")
    make_release(base, R3, "good")
    point_current(base, R3)
    (base / "venvs" / "orphan").mkdir(parents=True)
    age_path(base / "venvs" / "orphan", HOUR + 60)

    code, result = run(capsys, "prune", "--base", str(base), "--keep", "2", "--dry-run")

    assert code == 0
    assert result == {
        "changed": True,
        "removed": [R1],
        "removed_venvs": ["orphan"],
        "kept_incomplete": [],
        "kept_young_venvs": [],
    }
    assert names(base) == [R1, R2, R3]
    assert (base / "venvs" / "orphan").is_dir()


def test_prune_removes_venvs_only_linked_by_removed_releases(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    venvs = base / "venvs"
    for venv in ("shared", "old-only", "orphan", "current-only"):
        (venvs / venv / "bin").mkdir(parents=True)
        age_path(venvs / venv, HOUR + 60)
    links = {R1: "old-only", R2: "shared", R3: "shared", R4: "current-only"}
    for name, venv in links.items():
        path = make_release(base, name, "failed" if name == R1 else "good")
        os.symlink(str(venvs / venv), str(path / ".venv"))
    point_current(base, R4)

    code, result = run(capsys, "prune", "--base", str(base), "--keep", "3")

    assert code == 0
    assert result["removed"] == [R1]
    assert result["removed_venvs"] == ["old-only", "orphan"]
    assert sorted(p.name for p in venvs.iterdir()) == ["current-only", "shared"]
    assert (base / "releases" / R4 / ".venv" / "bin").is_dir()


def test_prune_after_manual_swap_back_keeps_current_and_rollback_target(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (R1, R2, R3, R4, R5):
        make_release(base, name, "good")
    point_current(base, R2)  # an operator swapped back by hand: R3..R5 are newer but good

    code, result = run(capsys, "prune", "--base", str(base), "--keep", "3")

    assert code == 0
    # current (R2) and its rollback target (R1) count towards keep, then the newest other good release.
    assert result["removed"] == [R3, R4]
    assert names(base) == [R1, R2, R5]
    # and what survives still rolls back: state offers R1 as the previous good release
    _exit_code, state = run(capsys, "state", "--base", str(base))
    assert state["previous_good"] == R1
    assert (base / "releases" / state["previous_good"]).is_dir()


@pytest.mark.parametrize("keep", [0, 1, 2])
def test_prune_small_keep_never_takes_current_or_rollback_target(
    base: Path, capsys: pytest.CaptureFixture[str], keep: int
) -> None:
    for name in (R1, R2, R3, R4):
        make_release(base, name, "good")
    point_current(base, R3)

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", str(keep))

    assert R3 in names(base)
    assert R2 in names(base)
    assert set(result["removed"]) == {R1, R4}


def test_prune_rolled_back_current_neighbour_is_not_the_rollback_target(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # After a rollback from R3 to R2, R3 is rolled back; the next rollback would go to R1, which must survive.
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    make_release(base, R3, "rolled_back")
    point_current(base, R2)

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", "1")

    assert result["removed"] == [R3]
    assert names(base) == [R1, R2]


def test_prune_keeps_incomplete_release_still_being_built(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    point_current(base, R2)
    make_release(base, R3, "incomplete")  # just created: a deploy is building it right now

    code, result = run(capsys, "prune", "--base", str(base), "--keep", "2")

    assert code == 0
    assert result["removed"] == []
    assert result["kept_incomplete"] == [R3]
    assert names(base) == [R1, R2, R3]


def test_prune_removes_incomplete_release_past_the_grace_period(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    point_current(base, R1)
    age_path(make_release(base, R2, "incomplete"), 120)
    make_release(base, R3, "incomplete")

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", "2", "--incomplete-grace", "60")

    assert result["removed"] == [R2]
    assert result["kept_incomplete"] == [R3]
    assert names(base) == [R1, R3]


def test_prune_incomplete_release_with_a_fresh_entry_is_young(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    point_current(base, R1)
    path = age_path(make_release(base, R2, "incomplete"), HOUR + 60)
    (path / "requirements.txt").write_text("flask\n", encoding="utf-8")  # the build just wrote this

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", "2")

    assert result["removed"] == []
    assert names(base) == [R1, R2]


def test_prune_keeps_young_unlinked_venv(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    point_current(base, R1)
    (base / "venvs" / "building").mkdir(parents=True)  # a deploy's venv, not linked into its release yet

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", "2")

    assert result["removed_venvs"] == []
    assert result["kept_young_venvs"] == ["building"]
    assert (base / "venvs" / "building").is_dir()


def test_prune_grace_zero_removes_every_incomplete_release(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(base, R1, "good")
    point_current(base, R1)
    make_release(base, R2, "incomplete")

    _exit_code, result = run(capsys, "prune", "--base", str(base), "--keep", "2", "--incomplete-grace", "0")

    assert result["removed"] == [R2]
    assert names(base) == [R1]


@pytest.mark.parametrize("option", [("--keep", "-1"), ("--incomplete-grace", "-5")])
def test_prune_rejects_negative_numbers(
    base: Path, capsys: pytest.CaptureFixture[str], option: tuple[str, str]
) -> None:
    make_release(base, R1, "failed")
    argv = {"--keep": "2", "--incomplete-grace": "3600"}
    argv[option[0]] = option[1]

    code, result = run(capsys, "prune", "--base", str(base), *(part for pair in argv.items() for part in pair))

    assert code == 1
    assert result["changed"] is False
    assert names(base) == [R1]


# ---------------------------------------------------------------------------------------------- probe and canary
# The probe's own rules (deadline, retries, malformed replies) are in tests/unit/plugins/module_utils/
# test_unixhttp.py; these hold what the command line makes of them.


def test_probe_healthy_json_over_unix_socket(socket_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with servers.AnsweringServer(socket_path, (200, b'{"ok": true, "path": "/health"}')):
        code, result = run(capsys, "probe", "--socket", socket_path, "--path", "/health", "--expect-json")
    assert code == 0
    assert result == {
        "ok": True,
        "status": 200,
        "body": '{"ok": true, "path": "/health"}',
        "error": None,
        "socket": socket_path,
    }


def test_probe_unhealthy_answer_reports_status_and_body(socket_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with servers.AnsweringServer(socket_path, (503, b'{"db": "down"}')):
        code, result = run(capsys, "probe", "--socket", socket_path, "--expect-json")
    assert code == 1
    assert result == {"ok": False, "status": 503, "body": '{"db": "down"}', "error": "HTTP 503", "socket": socket_path}


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"garbage\r\n\r\n", id="bad-status-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", id="header-line-too-long"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", id="body-cut-short"),
    ],
)
def test_probe_malformed_reply_is_a_clean_failure(
    socket_path: str, capsys: pytest.CaptureFixture[str], reply: bytes
) -> None:
    with servers.RawReplyServer(socket_path, reply):
        code, result = run(capsys, "probe", "--socket", socket_path, "--timeout", "5")
    assert code == 1
    assert result["ok"] is False
    assert "malformed HTTP reply" in result["error"]
    assert "status" not in result
    assert result["socket"] == socket_path


def test_probe_never_runs_past_its_deadline(socket_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing listens for 2 s, then a server accepts and never answers: the attempt that connects late may only
    # use the time left of the 3 s overall, not a fresh 3 s (or 10 s) of its own.
    with servers.RawReplyServer(socket_path, None, delay=2.0):
        started = time.monotonic()
        code, result = run(capsys, "probe", "--socket", socket_path, "--timeout", "3")
        elapsed = time.monotonic() - started
    assert code == 1
    assert result["ok"] is False
    assert result["error"].startswith("no answer within 3s")
    assert elapsed < 3 + servers.SLACK, f"the probe ran {elapsed:.1f}s past a 3s deadline"


# A canary server: answers GET on the unix socket it is given with the status in argv[2], after printing a line
# (so the log has something); with status "exit" it exits 3 before listening.
CANARY = """
import http.server, socketserver, sys
print("canary starting", flush=True)
if sys.argv[2] == "exit":
    sys.exit(3)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"canary": true}'
        self.send_response(int(sys.argv[2]))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
socketserver.UnixStreamServer(sys.argv[1], Handler).serve_forever()
"""


def canary(capsys: pytest.CaptureFixture[str], status: str, *options: str) -> tuple[int, dict]:
    return run(capsys, "canary", "--timeout", "10", *options, "--", sys.executable, "-c", CANARY, "{socket}", status)


def test_canary_healthy_server_passes_and_is_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = canary(capsys, "200", "--expect-json")
    assert code == 0
    assert (result["ok"], result["status"], result["body"], result["error"]) == (True, 200, '{"canary": true}', None)
    assert result["command"][-2].endswith("/canary.sock"), "{socket} is replaced by the canary's own socket"
    assert not Path(result["command"][-2]).parent.exists(), "the canary's scratch directory is removed"
    assert "log" not in result


def test_canary_unhealthy_server_fails_with_its_log(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = canary(capsys, "500")
    assert code == 1
    assert (result["ok"], result["status"], result["error"]) == (False, 500, "HTTP 500")
    assert "canary starting" in result["log"]


def test_canary_that_exits_names_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = canary(capsys, "exit")
    assert code == 1
    assert result["ok"] is False
    assert result["error"] == "the canary exited with status 3 before answering"
    assert "canary starting" in result["log"]


def test_canary_that_cannot_start(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run(capsys, "canary", "--", "/nonexistent/server", "{socket}")
    assert code == 1
    assert result["ok"] is False
    assert result["error"].startswith("cannot start /nonexistent/server: ")


def test_canary_without_command_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run(capsys, "canary", "--")
    assert code == 1
    assert result == {"ok": False, "error": "no canary command given after --"}


# ---------------------------------------------------------------------------------------------- command line


def test_cli_swap_then_state(base: Path) -> None:
    make_release(base, R1, "good")
    make_release(base, R2, "good")
    point_current(base, R1)

    swap = subprocess.run(
        [sys.executable, str(SCRIPT), "swap", "--base", str(base), "--to", R2],
        capture_output=True,
        text=True,
        check=False,
    )
    state = subprocess.run(
        [sys.executable, str(SCRIPT), "state", "--base", str(base)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert swap.returncode == 0, swap.stderr
    assert json.loads(swap.stdout) == {"changed": True, "previous": R1, "current": R2}
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["current"] == R2
    assert json.loads(state.stdout)["previous_good"] == R1


def test_cli_failure_exits_one(base: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "swap", "--base", str(base), "--to", R1],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["changed"] is False
    assert not (base / "current").exists()


def test_cli_swap_with_relative_base(tmp_path: Path) -> None:
    base = tmp_path / "app"
    make_release(base, R1, "good")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "swap", "--base", "app", "--to", R1],
        capture_output=True,
        text=True,
        check=False,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert (base / "current").resolve() == (base / "releases" / R1).resolve()
    assert (base / "current" / "app.py").is_file()
