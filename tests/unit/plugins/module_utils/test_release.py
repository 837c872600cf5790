# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/_release.py: the release store of one app, on real <base>/releases trees in tmp_path.

The tree builders at the top are also what tests/unit/roles/test_app_release.py (the command line on this store)
builds its trees with.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.pyweb.stack.plugins.module_utils import _release as rel

R1, R2, R3, R4, R5 = (f"2024010{i}T120000Z" for i in range(1, 6))
HOUR = 3600


def make_release(base: Path, name: str, status: str = "good", reason: str = "boom") -> Path:
    """Create <base>/releases/<name> in the given state: good, failed, rolled_back or incomplete."""
    path = base / "releases" / name
    path.mkdir(parents=True)
    (path / "app.py").write_text("# code\n", encoding="utf-8")
    if status in ("good", "failed", "rolled_back"):
        (path / rel.META_FILE).write_text(json.dumps({"release": name}), encoding="utf-8")
    if status == "failed":
        (path / rel.FAILED_FILE).write_text(reason + "\n", encoding="utf-8")
    if status == "rolled_back":
        (path / rel.ROLLED_BACK_FILE).write_text("2024-01-01T00:00:00Z\n", encoding="utf-8")
    return path


def point_current(base: Path, name: str) -> None:
    os.symlink(str(base / "releases" / name), str(base / "current"))


def current_target(base: Path) -> str:
    return os.readlink(str(base / "current"))


def names(base: Path) -> list[str]:
    return sorted(p.name for p in (base / "releases").iterdir())


def age_path(path: Path, seconds: float) -> Path:
    """Make path and its direct entries look last changed `seconds` ago (a build abandoned that long ago)."""
    then = time.time() - seconds
    for entry in [path, *path.iterdir()]:
        os.utime(str(entry), (then, then), follow_symlinks=False)
    return path


def link_venv(base: Path, release: str, venv: str, age: float = HOUR + 60) -> None:
    path = base / "venvs" / venv
    if not path.exists():
        (path / "bin").mkdir(parents=True)
        age_path(path, age)
    os.symlink(str(path), str(base / "releases" / release / ".venv"))


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "releases").mkdir(parents=True)
    return root


@pytest.fixture
def store(base: Path) -> rel.ReleaseStore:
    return rel.ReleaseStore(base)


# ---------------------------------------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("status", "expected"),
    [("good", "good"), ("failed", "failed"), ("rolled_back", "rolled_back"), ("incomplete", "incomplete")],
)
def test_release_status(base: Path, status: str, expected: str) -> None:
    assert rel.release_status(make_release(base, R1, status)) == expected


def test_failed_wins_over_meta_and_rolled_back(base: Path) -> None:
    path = make_release(base, R1, "rolled_back")
    (path / rel.FAILED_FILE).write_text("bad\n", encoding="utf-8")
    assert rel.release_status(path) == "failed"


def test_meta_must_be_a_file(base: Path) -> None:
    path = make_release(base, R1, "incomplete")
    (path / rel.META_FILE).mkdir()
    assert rel.release_status(path) == "incomplete"


@pytest.mark.parametrize(
    ("status", "is_current", "state"),
    [
        ("incomplete", False, "building"),
        ("good", False, "ready"),
        ("good", True, "current"),
        ("failed", False, "failed"),
        ("failed", True, "failed"),
        ("rolled_back", False, "rolled_back"),
    ],
)
def test_engine_state_of_each_status(status: str, is_current: bool, state: str) -> None:
    assert rel.engine_state(status, is_current) == state


def test_status_of_each_state_in_one_tree(store: rel.ReleaseStore, base: Path) -> None:
    for name, status in ((R1, "good"), (R2, "failed"), (R3, "rolled_back"), (R4, "good"), (R5, "incomplete")):
        make_release(base, name, status, reason="canary said no")
    point_current(base, R4)
    current = store.current()
    assert current == R4
    states = {r["name"]: rel.engine_state(r["status"], r["name"] == current) for r in store.releases()}
    assert states == {R1: "ready", R2: "failed", R3: "rolled_back", R4: "current", R5: "building"}
    assert store.releases()[1] == {"name": R2, "status": "failed", "reason": "canary said no"}
    assert store.previous_good() == R1
    assert store.meta(R4) == {"release": R4}
    assert store.meta(R5) is None


def test_current_that_is_a_plain_directory_is_not_current(store: rel.ReleaseStore, base: Path) -> None:
    (base / "current").mkdir()
    assert store.current() is None


def test_store_without_a_releases_directory(tmp_path: Path) -> None:
    store = rel.ReleaseStore(tmp_path / "nothing")
    assert store.releases() == []
    assert store.current() is None
    assert store.state()["previous_good"] is None


def test_store_base_is_absolute(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(base.parent)
    assert rel.ReleaseStore(base.name).base == base


# ---------------------------------------------------------------------------------------------- swap


def test_swap_is_one_rename_current_is_always_a_valid_link(store: rel.ReleaseStore, base: Path) -> None:
    # A reader looking at current while releases swap back and forth must always find a link to a release: never
    # no current, never a half-made one.
    for name in (R1, R2):
        make_release(base, name)
    point_current(base, R1)
    seen: list[str] = []
    problems: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(os.readlink(str(base / "current")))
                if not (base / "current" / "app.py").is_file():
                    problems.append("current does not lead to a release")
            except OSError as exc:
                problems.append(f"{exc}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for turn in range(300):
            store.swap(R2 if turn % 2 == 0 else R1)
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert set(seen) <= {str(base / "releases" / R1), str(base / "releases" / R2)}
    assert [p.name for p in base.iterdir() if p.name.startswith(".current.")] == []


def test_swap_returns_previous_and_current(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    make_release(base, R2)
    point_current(base, R1)
    assert store.swap(R2) == {"changed": True, "previous": R1, "current": R2}
    assert store.swap(R2) == {"changed": False, "previous": R2, "current": R2}
    assert current_target(base) == str(base / "releases" / R2)


@pytest.mark.parametrize(("status", "msg"), [("failed", "is failed, not good"), ("incomplete", "is incomplete")])
def test_swap_refuses_a_release_that_is_not_good(store: rel.ReleaseStore, base: Path, status: str, msg: str) -> None:
    make_release(base, R1)
    make_release(base, R2, status)
    point_current(base, R1)
    with pytest.raises(rel.ReleaseError, match=msg) as refused:
        store.swap(R2)
    assert refused.value.result == {"changed": False, "previous": R1, "current": R2}
    assert store.current() == R1


def test_swap_that_cannot_rename_keeps_current_and_the_marker(store: rel.ReleaseStore, base: Path) -> None:
    path = make_release(base, R2, "rolled_back")
    (base / "current").mkdir()  # a directory where the link belongs: rename(2) of a link over it fails
    (base / "current" / "keep").write_text("", encoding="utf-8")
    with pytest.raises(rel.ReleaseError, match="cannot point"):
        store.swap(R2)
    assert rel.release_status(path) == "rolled_back"
    assert [p.name for p in base.iterdir() if p.name.startswith(".current.")] == []


def test_swap_to_a_rolled_back_release_clears_its_marker(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    path = make_release(base, R2, "rolled_back")
    point_current(base, R1)
    store.swap(R2)
    assert rel.release_status(path) == "good"


# ---------------------------------------------------------------------------------------------- fail / rolled back


def test_fail_of_current_swaps_back_to_the_previous_good_release(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    make_release(base, R2, "rolled_back")  # not a rollback target: a rollback already left it
    make_release(base, R3)
    point_current(base, R3)
    result = store.fail(R3, "reload failed\n")
    assert result == {"changed": True, "release": R3, "reason": "reload failed\n", "current": R1}
    assert store.current() == R1
    assert os.path.isabs(current_target(base))
    assert store.status(R3) == "failed"
    assert (base / "releases" / R3 / rel.FAILED_FILE).read_text(encoding="utf-8") == "reload failed\n"


def test_fail_of_the_only_release_removes_current(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    point_current(base, R1)
    assert store.fail(R1, "reload failed")["current"] is None
    assert not (base / "current").is_symlink()


def test_fail_of_another_release_leaves_current(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    make_release(base, R2, "incomplete")
    point_current(base, R1)
    assert store.fail(R2, "canary 500")["current"] == R1
    assert store.current() == R1


def test_fail_of_a_missing_release_is_refused(store: rel.ReleaseStore, base: Path) -> None:
    with pytest.raises(rel.ReleaseError, match="does not exist"):
        store.fail(R1, "x")
    assert not (base / "releases" / R1).exists()


def test_mark_rolled_back_only_a_good_release(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    make_release(base, R2, "failed")
    assert store.mark_rolled_back(R1, now=0) == {"changed": True, "release": R1}
    assert (base / "releases" / R1 / rel.ROLLED_BACK_FILE).read_text(encoding="utf-8") == "1970-01-01T00:00:00Z\n"
    assert store.mark_rolled_back(R1) == {"changed": False, "release": R1}
    assert store.mark_rolled_back(R2) == {"changed": False, "release": R2}
    assert store.mark_rolled_back(R3) == {"changed": False, "release": R3}


# ---------------------------------------------------------------------------------------------- prune choice


def test_prune_never_takes_current_even_when_failed(store: rel.ReleaseStore, base: Path) -> None:
    for name in (R1, R2):
        make_release(base, name)
    make_release(base, R3, "failed")
    point_current(base, R3)
    plan = store.plan_prune(keep=0, grace=0)
    assert R3 not in plan.remove
    assert plan.remove == [R1]  # R2 is the rollback target


@pytest.mark.parametrize("keep", [0, 1, 2])
def test_prune_never_takes_the_rollback_target(store: rel.ReleaseStore, base: Path, keep: int) -> None:
    for name in (R1, R2, R3, R4):
        make_release(base, name)
    point_current(base, R3)  # swapped back by hand: R4 is newer
    plan = store.plan_prune(keep=keep, grace=0)
    assert store.previous_good() == R2
    assert set(plan.remove) == {R1, R4}


def test_prune_keeps_rollback_target_when_current_is_not_newest() -> None:
    all_releases = [{"name": name, "status": "good"} for name in (R1, R2, R3, R4)]
    target = rel.previous_good(all_releases, R2)
    assert target == R1
    assert target not in rel.releases_to_remove(all_releases, R2, 2)


def test_prune_never_takes_a_young_build(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    point_current(base, R1)
    age_path(make_release(base, R2, "incomplete"), 120)
    make_release(base, R3, "incomplete")  # being built right now
    plan = store.plan_prune(keep=1, grace=60)
    assert plan.remove == [R2]
    assert plan.kept_incomplete == [R3]


def test_prune_build_with_a_fresh_entry_is_young(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    point_current(base, R1)
    path = age_path(make_release(base, R2, "incomplete"), HOUR + 60)
    (path / "requirements.txt").write_text("flask\n", encoding="utf-8")  # the build just wrote this
    assert store.plan_prune(keep=1).remove == []


def test_prune_takes_failed_and_rolled_back_first_then_the_oldest_good(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    make_release(base, R2)
    make_release(base, R3, "failed")
    make_release(base, R4, "rolled_back")
    make_release(base, R5)
    point_current(base, R5)
    assert store.plan_prune(keep=2).remove == [R3, R4, R1]


def test_prune_keeps_newest_good_counting_current(store: rel.ReleaseStore, base: Path) -> None:
    for name in (R1, R2, R3, R4, R5):
        make_release(base, name)
    point_current(base, R5)
    plan = store.plan_prune(keep=3)
    assert (plan.remove, plan.changes) == ([R1, R2], True)
    store.prune(plan)
    assert names(base) == [R3, R4, R5]


def test_prune_unlinked_venvs_once_old(store: rel.ReleaseStore, base: Path) -> None:
    for name in (R1, R2, R3, R4):
        make_release(base, name, "failed" if name == R1 else "good")
    link_venv(base, R1, "old-only")
    link_venv(base, R2, "shared")
    link_venv(base, R3, "shared")
    link_venv(base, R4, "current-only")
    (base / "venvs" / "orphan").mkdir()
    age_path(base / "venvs" / "orphan", HOUR + 60)
    (base / "venvs" / "building").mkdir()  # a deploy's venv, not linked into its release yet
    point_current(base, R4)
    assert store.linked_venvs([R2, R3, R4]) == {str(base / "venvs" / "shared"), str(base / "venvs" / "current-only")}
    plan = store.plan_prune(keep=3)
    assert plan.remove == [R1]
    assert plan.remove_venvs == ["old-only", "orphan"]
    assert plan.kept_young_venvs == ["building"]
    store.prune(plan)
    assert sorted(p.name for p in (base / "venvs").iterdir()) == ["building", "current-only", "shared"]
    assert (base / "releases" / R4 / ".venv" / "bin").is_dir()


def test_prune_of_a_plan_made_before_a_swap_keeps_what_is_current_now(store: rel.ReleaseStore, base: Path) -> None:
    for name in (R1, R2, R3):
        make_release(base, name)
    point_current(base, R3)
    plan = store.plan_prune(keep=2)
    assert plan.remove == [R1]
    store.swap(R1)  # an operator (or a rollback) made R1 current in between
    store.prune(plan)
    assert names(base) == [R1, R2, R3]


def test_prune_nothing_to_do(store: rel.ReleaseStore, base: Path) -> None:
    make_release(base, R1)
    point_current(base, R1)
    plan = store.plan_prune(keep=5)
    assert plan == rel.PrunePlan()
    assert plan.changes is False


@pytest.mark.parametrize(("keep", "grace"), [(-1, 3600.0), (2, -5.0)])
def test_prune_refuses_negative_numbers(store: rel.ReleaseStore, keep: int, grace: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        store.plan_prune(keep=keep, grace=grace)
