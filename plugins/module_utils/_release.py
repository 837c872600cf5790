# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release store of one pyweb.stack app: <base>/releases/<UTC timestamp>, <base>/current, <base>/venvs (private).

One implementation for every path that changes releases: bin/app-release (the role and the push hook run it),
the pyweb.stack.app_release module. Standard library only: the same file runs inside a module and, installed by
pyweb.stack.common (host_library.yml), as plain Python on the host.

A release's state, from its marker files (in brackets the status `app-release state` prints, which the role and
the push hook read):

- building (incomplete): no .pyweb-release.json yet; being built, or a build abandoned.
- ready (good): .pyweb-release.json, written once its canary passed; not current.
- current (good): ready, and <base>/current points at it.
- failed (failed): .failed holds the reason, whatever else is there; it never becomes current again.
- rolled_back (rolled_back): ready with .rolled-back; a rollback moved away from it, so the next rollback goes
  further back and prune takes it early. Current again clears the marker.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

META_FILE = ".pyweb-release.json"
FAILED_FILE = ".failed"
ROLLED_BACK_FILE = ".rolled-back"
INCOMPLETE_GRACE = 3600.0  # seconds a release without meta (or an unlinked venv) may still be being built

GOOD = "good"
INCOMPLETE = "incomplete"
FAILED = "failed"
ROLLED_BACK = "rolled_back"


class ReleaseError(Exception):
    """An action refused or failed; result holds what the caller reports with the message."""

    def __init__(self, msg: str, result: dict[str, Any]) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


def release_status(path: Path) -> str:
    """good, failed, rolled_back or incomplete, from the marker files (failed wins over everything)."""
    if (path / FAILED_FILE).exists():
        return FAILED
    if (path / META_FILE).is_file():
        return ROLLED_BACK if (path / ROLLED_BACK_FILE).exists() else GOOD
    return INCOMPLETE


def engine_state(status: str, is_current: bool) -> str:
    """The engine's name for a release: building, ready, current, failed or rolled_back."""
    if status == INCOMPLETE:
        return "building"
    if status == GOOD:
        return "current" if is_current else "ready"
    return status


def read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def previous_good(all_releases: list[dict[str, Any]], current: str | None) -> str | None:
    """The rollback target: the newest good release older than current (without current, the newest good one)."""
    older = [r["name"] for r in all_releases if r["status"] == GOOD and (current is None or r["name"] < current)]
    return older[-1] if older else None


def releases_to_remove(
    all_releases: list[dict[str, Any]], current: str | None, keep: int, young: frozenset[str] = frozenset()
) -> list[str]:
    """Failed, rolled-back and old incomplete releases first, then good ones beyond `keep`, oldest first.

    Never current, nor the rollback target, nor an incomplete release in `young` (still being built). Of the good
    releases, `keep` survive: current (when good) and the rollback target count first, then the newest others
    (which may be newer than current after a manual swap or a rollback).
    """
    protected = {name for name in (current, previous_good(all_releases, current)) if name}
    remove = [r["name"] for r in all_releases if r["status"] != GOOD and r["name"] not in protected | young]
    good = [r["name"] for r in all_releases if r["status"] == GOOD]
    kept = [name for name in good if name in protected]
    for name in reversed(good):  # newest first
        if len(kept) >= keep:
            break
        if name not in kept:
            kept.append(name)
    remove.extend(name for name in good if name not in kept)
    return remove


def age(path: Path, now: float) -> float:
    """Seconds since path or one of its direct entries last changed (a build in progress keeps touching them)."""
    try:
        newest = path.lstat().st_mtime
        for entry in path.iterdir():
            try:
                newest = max(newest, entry.lstat().st_mtime)
            except OSError:
                continue
    except OSError:
        return 0.0  # vanished or unreadable: young, never removed on a guess
    return now - newest


@dataclass
class PrunePlan:
    """What prune removes (releases, venvs) and what it keeps only because it may still be being built."""

    remove: list[str] = field(default_factory=list)
    remove_venvs: list[str] = field(default_factory=list)
    kept_incomplete: list[str] = field(default_factory=list)
    kept_young_venvs: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.remove or self.remove_venvs)


class ReleaseStore:
    """The releases of one app under base (made absolute once: the links swap writes must never dangle)."""

    def __init__(self, base: str | os.PathLike[str]) -> None:
        self.base = Path(os.path.abspath(base))
        self.releases_dir = self.base / "releases"
        self.venvs_dir = self.base / "venvs"
        self.current_link = self.base / "current"

    # ------------------------------------------------------------------------------------------ reading

    def path(self, name: str) -> Path:
        return self.releases_dir / name

    def status(self, name: str) -> str:
        return release_status(self.path(name))

    def meta(self, name: str) -> dict[str, Any] | None:
        return read_meta(self.path(name))

    def current(self) -> str | None:
        """The release current points at; None without the link (a plain directory there is not current)."""
        if not self.current_link.is_symlink():
            return None
        return Path(os.path.realpath(self.current_link)).name

    def releases(self) -> list[dict[str, Any]]:
        """Every release directory, oldest first: name, status, and the reason of a failed one."""
        if not self.releases_dir.is_dir():
            return []
        found = []
        for path in sorted(p for p in self.releases_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            entry: dict[str, Any] = {"name": path.name, "status": release_status(path)}
            if entry["status"] == FAILED:
                entry["reason"] = (path / FAILED_FILE).read_text(encoding="utf-8", errors="replace").strip()
            found.append(entry)
        return found

    def previous_good(self) -> str | None:
        return previous_good(self.releases(), self.current())

    def state(self) -> dict[str, Any]:
        """What `app-release state` prints and the role and the push hook read."""
        all_releases = self.releases()
        current = self.current()
        return {
            "current": current,
            "current_meta": self.meta(current) if current else None,
            "releases": all_releases,
            "good": [r["name"] for r in all_releases if r["status"] == GOOD],
            "rolled_back": [r["name"] for r in all_releases if r["status"] == ROLLED_BACK],
            "previous_good": previous_good(all_releases, current),
        }

    def linked_venvs(self, names: list[str]) -> set[str]:
        """The real paths of the venvs these releases link to (<release>/.venv)."""
        linked = set()
        for name in names:
            link = self.path(name) / ".venv"
            if link.is_symlink():
                linked.add(os.path.realpath(link))
        return linked

    # ------------------------------------------------------------------------------------------ changing

    def point_current_at(self, target: Path | None) -> None:
        """Swap current to target atomically (a new symlink renamed over it, so current is never missing or
        half-written), or remove it (target None)."""
        if target is None:
            self.current_link.unlink()
            return
        temporary = self.base / f".current.{os.getpid()}"
        try:
            if temporary.is_symlink():
                temporary.unlink()
            os.symlink(str(target), str(temporary))
            os.replace(str(temporary), str(self.current_link))
        except OSError:
            if temporary.is_symlink():
                temporary.unlink()
            raise

    def swap(self, name: str, *, allow_unchecked: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Make release `name` current: {changed, previous, current}. Raises ReleaseError (current unchanged)."""
        target = self.path(name)
        previous = self.current()
        result: dict[str, Any] = {"changed": previous != name, "previous": previous, "current": name}
        if not target.is_dir():
            raise ReleaseError(f"release {name} does not exist under {self.releases_dir}", dict(result, changed=False))
        status = release_status(target)
        if not allow_unchecked and status not in (GOOD, ROLLED_BACK):
            raise ReleaseError(f"release {name} is {status}, not good", dict(result, changed=False))
        if result["changed"] and not dry_run:
            try:
                self.point_current_at(target)
            except OSError as exc:
                raise ReleaseError(
                    f"cannot point {self.current_link} at {name}: {exc}", dict(result, changed=False)
                ) from exc
            # Only once current points at it is it no longer rolled back: a swap that failed keeps the marker.
            (target / ROLLED_BACK_FILE).unlink(missing_ok=True)
        return result

    def fail(self, name: str, reason: str) -> dict[str, Any]:
        """Mark a release failed with the reason; when it is current, current goes back to the previous good
        release (or is removed without one): a failed release never stays current."""
        path = self.path(name)
        if not path.is_dir():
            raise ReleaseError(f"release {name} does not exist", {"changed": False})
        (path / FAILED_FILE).write_text(reason.rstrip() + "\n", encoding="utf-8")
        result: dict[str, Any] = {"changed": True, "release": name, "reason": reason, "current": self.current()}
        if result["current"] != name:
            return result
        # It failed after the swap (a reload, the live probe, an after-swap hook) and nothing swapped back yet.
        target = previous_good(self.releases(), name)
        try:
            self.point_current_at(None if target is None else self.path(target))
        except OSError as exc:
            raise ReleaseError(f"marked failed, but {self.current_link} still points at it: {exc}", result) from exc
        return dict(result, current=target)

    def mark_rolled_back(self, name: str, now: float | None = None) -> dict[str, Any]:
        """Mark the good release a rollback left; anything else (missing, failed, already marked) is unchanged."""
        path = self.path(name)
        if not path.is_dir() or release_status(path) != GOOD:
            return {"changed": False, "release": name}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        (path / ROLLED_BACK_FILE).write_text(stamp + "\n", encoding="utf-8")
        return {"changed": True, "release": name}

    # ------------------------------------------------------------------------------------------ prune

    def plan_prune(self, keep: int, grace: float = INCOMPLETE_GRACE, now: float | None = None) -> PrunePlan:
        """What prune would remove: see releases_to_remove; venvs no surviving release links to, once old."""
        if keep < 0 or grace < 0:
            raise ValueError("keep and the grace period must not be negative")
        now = time.time() if now is None else now
        all_releases = self.releases()
        young = frozenset(
            r["name"] for r in all_releases if r["status"] == INCOMPLETE and age(self.path(r["name"]), now) < grace
        )
        plan = PrunePlan(remove=releases_to_remove(all_releases, self.current(), keep, young))
        plan.kept_incomplete = sorted(young - set(plan.remove))
        in_use = self.linked_venvs([r["name"] for r in all_releases if r["name"] not in plan.remove])
        if self.venvs_dir.is_dir():
            for path in sorted(self.venvs_dir.iterdir()):
                if os.path.realpath(path) in in_use:
                    continue
                # A venv nothing links to yet may belong to a release being built: only an old one is stale.
                (plan.remove_venvs if age(path, now) >= grace else plan.kept_young_venvs).append(path.name)
        return plan

    def prune(self, plan: PrunePlan) -> None:
        current = self.current()  # a plan made before a swap must still never take what is current now
        for name in plan.remove:
            if name != current:
                shutil.rmtree(self.path(name))
        for name in plan.remove_venvs:
            shutil.rmtree(self.venvs_dir / name)
