# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pyweb.stack.app_release end to end on real release trees in tmp_path (built like the release store's tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.pyweb.stack.plugins.modules import app_release as module
from pyweb_molecule import load_source

trees = load_source("release_trees", Path(__file__).resolve().parents[1] / "module_utils" / "test_release.py")
R1, R2, R3, R4, R5 = trees.R1, trees.R2, trees.R3, trees.R4, trees.R5


def run_module(capsys: pytest.CaptureFixture[str], check_mode: bool = False, diff: bool = True, **args: object) -> dict:
    args["_ansible_check_mode"] = check_mode
    args["_ansible_diff"] = diff
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "releases").mkdir(parents=True)
    trees.make_release(root, R1)
    trees.make_release(root, R2, "failed", reason="canary said no")
    trees.make_release(root, R3)
    trees.make_release(root, R4)
    trees.make_release(root, R5, "incomplete")
    trees.point_current(root, R4)
    (root / "venvs" / "orphan").mkdir(parents=True)
    trees.age_path(root / "venvs" / "orphan", trees.HOUR + 60)
    return root


def test_status_reads_every_release_and_changes_nothing(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(capsys, base=str(base))
    assert result["changed"] is False
    assert result["release"] == {
        "base": str(base),
        "current": R4,
        "current_meta": {"release": R4},
        "previous_good": R3,
        "good": [R1, R3, R4],
        "rolled_back": [],
        "releases": [
            {"name": R1, "status": "good", "state": "ready"},
            {"name": R2, "status": "failed", "state": "failed", "reason": "canary said no"},
            {"name": R3, "status": "good", "state": "ready"},
            {"name": R4, "status": "good", "state": "current"},
            {"name": R5, "status": "incomplete", "state": "building"},
        ],
    }
    assert "removed" not in result
    assert trees.names(base) == [R1, R2, R3, R4, R5]


def test_status_of_an_app_never_deployed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(capsys, base=str(tmp_path / "none"))
    assert result["release"]["current"] is None
    assert result["release"]["releases"] == []


def test_pruned_in_check_mode_predicts_and_removes_nothing(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(capsys, check_mode=True, base=str(base), state="pruned", keep=2)
    assert result["changed"] is True
    assert result["removed"] == [R2, R1]
    assert result["removed_venvs"] == ["orphan"]
    assert result["kept_incomplete"] == [R5]
    assert result["diff"]["before"] == "".join(f"releases/{n}\n" for n in (R1, R2, R3, R4, R5)) + "venvs/orphan\n"
    assert result["diff"]["after"] == "".join(f"releases/{n}\n" for n in (R3, R4, R5))
    assert trees.names(base) == [R1, R2, R3, R4, R5]
    assert (base / "venvs" / "orphan").is_dir()


def test_pruned_removes_what_check_mode_predicted_then_is_idempotent(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predicted = run_module(capsys, check_mode=True, base=str(base), state="pruned", keep=2)
    done = run_module(capsys, base=str(base), state="pruned", keep=2)
    again = run_module(capsys, base=str(base), state="pruned", keep=2)
    assert (done["changed"], done["removed"], done["removed_venvs"]) == (True, predicted["removed"], ["orphan"])
    assert trees.names(base) == [R3, R4, R5]
    assert [r["name"] for r in done["release"]["releases"]] == [R3, R4, R5]
    assert (again["changed"], again["removed"], again["removed_venvs"]) == (False, [], [])
    assert again["diff"]["before"] == again["diff"]["after"]


def test_pruned_keeps_current_and_rollback_target_with_keep_zero(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_module(capsys, base=str(base), state="pruned", keep=0, grace=0)
    assert result["removed"] == [R2, R5, R1]
    assert trees.names(base) == [R3, R4]
    assert result["release"]["current"] == R4
    assert result["release"]["previous_good"] == R3


def test_pruned_without_diff_returns_no_diff(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(capsys, check_mode=True, diff=False, base=str(base), state="pruned")
    assert "diff" not in result


@pytest.mark.parametrize("option", [{"keep": -1}, {"grace": -1.0}])
def test_pruned_refuses_negative_numbers(base: Path, capsys: pytest.CaptureFixture[str], option: dict) -> None:
    result = run_module(capsys, base=str(base), state="pruned", **option)
    assert result["failed"] is True
    assert "must not be negative" in result["msg"]
    assert trees.names(base) == [R1, R2, R3, R4, R5]


def current_of(base: Path) -> str:
    return (base / "current").resolve().name


def test_current_swaps_to_a_good_release_and_check_mode_only_predicts(base, capsys) -> None:
    predicted = run_module(capsys, check_mode=True, base=str(base), state="current", release=R3)
    assert (predicted["changed"], predicted["previous"], predicted["current"]) == (True, R4, R3)
    assert predicted["diff"] == {"before": f"current -> {R4}\n", "after": f"current -> {R3}\n"}
    assert current_of(base) == R4
    swapped = run_module(capsys, base=str(base), state="current", release=R3)
    assert (swapped["changed"], swapped["previous"], swapped["release"]["current"]) == (True, R4, R3)
    assert current_of(base) == R3
    again = run_module(capsys, base=str(base), state="current", release=R3)
    assert again["changed"] is False


@pytest.mark.parametrize("release", [R2, R5])
def test_current_refuses_a_failed_or_unfinished_release_and_keeps_current(base, capsys, release) -> None:
    refused = run_module(capsys, base=str(base), state="current", release=release)
    assert refused["failed"] is True
    assert "not good" in refused["msg"]
    assert current_of(base) == R4


def test_check_mode_predicts_the_swap_to_a_release_it_did_not_build(base, capsys) -> None:
    # A check run predicts the build without making it: there is no release directory to check.
    predicted = run_module(capsys, check_mode=True, base=str(base), state="current", release="20991231T235959Z")
    assert (predicted["changed"], predicted["current"]) == (True, "20991231T235959Z")
    missing = run_module(capsys, base=str(base), state="current", release="20991231T235959Z")
    assert missing["failed"] is True


def test_failed_current_release_gives_current_back_to_the_previous_good_one(base, capsys) -> None:
    predicted = run_module(capsys, check_mode=True, base=str(base), state="failed", release=R4, reason="probe: 500")
    assert (predicted["changed"], predicted["current"]) == (True, R3)
    assert current_of(base) == R4
    failed = run_module(capsys, base=str(base), state="failed", release=R4, reason="probe: 500")
    assert (failed["changed"], failed["current"]) == (True, R3)
    assert current_of(base) == R3
    assert (base / "releases" / R4 / ".failed").read_text(encoding="utf-8") == "probe: 500\n"
    assert run_module(capsys, base=str(base), state="failed", release=R4, reason="probe: 500")["changed"] is False


def test_rolled_back_marks_a_good_release_once(base, capsys) -> None:
    assert run_module(capsys, check_mode=True, base=str(base), state="rolled_back", release=R4)["changed"] is True
    assert not (base / "releases" / R4 / ".rolled-back").exists()
    marked = run_module(capsys, base=str(base), state="rolled_back", release=R4)
    assert marked["changed"] is True
    assert marked["release"]["rolled_back"] == [R4]
    assert run_module(capsys, base=str(base), state="rolled_back", release=R4)["changed"] is False
    assert run_module(capsys, base=str(base), state="rolled_back", release=R2)["changed"] is False
