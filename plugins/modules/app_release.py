#!/usr/bin/python
# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_release
short_description: Read, activate, fail, roll back or prune the releases of a pyweb.stack app
version_added: 0.2.0
description:
  - Works on the release layout of M(pyweb.stack.app) under O(base) (C(releases/<UTC timestamp>), the C(current)
    symlink, C(venvs/)), through the same release store as C(<base>/bin/app-release) and the push hook.
  - With O(state=status), reads which release is current, which one a rollback would go to, and the state of
    every release (V(building), V(ready), V(current), V(failed), V(rolled_back)). Nothing changes.
  - With O(state=current), makes O(release) current (activate, or go back to it in a rollback) with a new symlink
    renamed over C(current), so C(current) is never missing or half-written. Only a good or rolled-back release can
    become current.
  - With O(state=failed), marks a built release failed with O(reason) (a failed canary, reload, probe or hook);
    when it is current, C(current) goes back to the previous good release (or is removed without one), so a failed
    release never stays current.
  - With O(state=rolled_back), marks the good release a rollback left, so that the next rollback goes further back and
    prune removes it first.
  - With O(state=pruned), removes failed and rolled-back releases, builds abandoned longer than O(grace) ago and
    the good releases beyond O(keep), and virtualenvs no remaining release links to (once older than O(grace)).
    It never removes the current release, the rollback target, or a build younger than O(grace).
  - Run it under the app's release lock (M(pyweb.stack.release_lock)) when a push or another rollout may run at
    the same time.
author:
  - pyweb.stack maintainers (@pyweb)
options:
  base:
    description: The app's base directory (C(app_base_dir) of M(pyweb.stack.app)).
    type: path
    required: true
  state:
    description:
      - V(status) only reads the releases.
      - V(current) makes O(release) current.
      - V(failed) marks O(release) failed with O(reason).
      - V(rolled_back) marks O(release) as the one a rollback left.
      - V(pruned) makes sure nothing prunable is left.
    type: str
    choices: [status, current, failed, rolled_back, pruned]
    default: status
  release:
    description:
      - The release (its directory name under C(releases/)); required with O(state=current), O(state=failed) and
        O(state=rolled_back).
    type: str
  reason:
    description: With O(state=failed), why the release failed (kept in its C(.failed) file, shown by status).
    type: str
    default: failed
  keep:
    description:
      - With O(state=pruned), how many good releases survive. The current release and the rollback target count
        first and are kept even when O(keep) is smaller, then the newest others.
    type: int
    default: 3
  grace:
    description:
      - With O(state=pruned), seconds since a release without its metadata (or a virtualenv no release links to)
        last changed, below which it counts as still being built and is kept.
    type: float
    default: 3600
attributes:
  check_mode:
    support: full
    description: In check mode every state reports what it would change (a swap is checked as a real one would be)
      and changes nothing.
  diff_mode:
    support: full
    description: O(state=current) and O(state=failed) show C(current) before and after; O(state=pruned) the
      releases and virtualenvs before and after.
  idempotent:
    support: full
    description: A second run with the same options changes nothing (current already points at the release, the
      release is already failed or marked rolled back, nothing is left to prune).
  platform:
    support: full
    platforms: posix
    description: Works on files and symlinks of a POSIX file system.
notes:
  - The module never makes or swaps a release; C(<base>/bin/app-release) (run by M(pyweb.stack.app)) does.
seealso:
  - module: pyweb.stack.venv
"""

EXAMPLES = r"""
- name: Read the releases of the app
  pyweb.stack.app_release:
    base: /srv/shop
  register: shop

- name: Say what a rollback would go to
  ansible.builtin.debug:
    msg: "current {{ shop.release.current }}, rollback target {{ shop.release.previous_good | default('none') }}"

- name: Make the checked release current (the swap a deploy makes)
  pyweb.stack.app_release:
    base: /srv/shop
    state: current
    release: 20240131T235959Z
  register: swap

- name: Mark a release whose live probe failed, so it never becomes current again
  pyweb.stack.app_release:
    base: /srv/shop
    state: failed
    release: 20240131T235959Z
    reason: "the live probe answered HTTP 500"

- name: Roll back to the previous good release and mark the one left
  block:
    - name: Make the rollback target current
      pyweb.stack.app_release:
        base: /srv/shop
        state: current
        release: "{{ shop.release.previous_good }}"
    - name: Mark the release rolled back from
      pyweb.stack.app_release:
        base: /srv/shop
        state: rolled_back
        release: "{{ shop.release.current }}"

- name: Prune old releases, keeping five good ones
  pyweb.stack.app_release:
    base: /srv/shop
    state: pruned
    keep: 5
"""

RETURN = r"""
release:
  description: The releases under O(base), after the change.
  returned: always
  type: dict
  contains:
    base:
      description: O(base), absolute.
      type: str
      returned: always
      sample: /srv/shop
    current:
      description: The release C(current) points at; V(null) when there is none.
      type: str
      returned: always
      sample: 20240131T235959Z
    current_meta:
      description: The metadata of the current release (C(.pyweb-release.json)), V(null) when unreadable or none.
      type: dict
      returned: always
      sample: {"name": "20240131T235959Z", "source_hash": "3f2a...", "venv": "/srv/shop/venvs/9c1d..."}
    previous_good:
      description: The rollback target, the newest good release older than current; V(null) when there is none.
      type: str
      returned: always
      sample: 20240130T101500Z
    good:
      description: The good releases (V(ready) or V(current)), oldest first.
      type: list
      elements: str
      returned: always
      sample: [20240130T101500Z, 20240131T235959Z]
    rolled_back:
      description: The releases a rollback moved away from, oldest first.
      type: list
      elements: str
      returned: always
      sample: []
    releases:
      description: Every release, oldest first.
      type: list
      elements: dict
      returned: always
      contains:
        name:
          description: The release's directory name (its UTC build time).
          type: str
          returned: always
          sample: 20240131T235959Z
        status:
          description: What C(app-release state) reports, V(good), V(incomplete), V(failed) or V(rolled_back).
          type: str
          returned: always
          sample: good
        state:
          description: V(building), V(ready), V(current), V(failed) or V(rolled_back).
          type: str
          returned: always
          sample: current
        reason:
          description: Why a failed release failed.
          type: str
          returned: when failed
          sample: "Start a canary server from the new release and probe its health: HTTP 500"
previous:
  description: With O(state=current), the release C(current) pointed at before (V(null) when there was none).
  returned: when O(state=current)
  type: str
  sample: 20240130T101500Z
current:
  description: With O(state=current) and O(state=failed), the release C(current) points at afterwards (in check
    mode, would point at).
  returned: when O(state=current) or O(state=failed)
  type: str
  sample: 20240131T235959Z
removed:
  description: The releases removed (in check mode, those that would be).
  returned: when O(state=pruned)
  type: list
  elements: str
  sample: [20240101T120000Z]
removed_venvs:
  description: The virtualenvs under C(<base>/venvs) removed (in check mode, those that would be).
  returned: when O(state=pruned)
  type: list
  elements: str
  sample: [0b8e41c2d7]
kept_incomplete:
  description: Releases without metadata kept because they changed less than O(grace) ago (being built).
  returned: when O(state=pruned)
  type: list
  elements: str
  sample: []
kept_young_venvs:
  description: Unlinked virtualenvs kept because they changed less than O(grace) ago.
  returned: when O(state=pruned)
  type: list
  elements: str
  sample: []
"""

import os  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.pyweb.stack.plugins.module_utils._release import (  # noqa: E402
    FAILED,
    GOOD,
    INCOMPLETE,
    ReleaseError,
    ReleaseStore,
    engine_state,
    previous_good,
    release_status,
)


def release_facts(store: ReleaseStore) -> dict[str, Any]:
    state = store.state()
    current = state["current"]
    releases = []
    for entry in state["releases"]:
        releases.append(dict(entry, state=engine_state(entry["status"], entry["name"] == current)))
    return {
        "base": str(store.base),
        "current": current,
        "current_meta": state["current_meta"],
        "previous_good": state["previous_good"],
        "good": state["good"],
        "rolled_back": state["rolled_back"],
        "releases": releases,
    }


def venv_names(store: ReleaseStore) -> list[str]:
    return sorted(os.listdir(store.venvs_dir)) if store.venvs_dir.is_dir() else []


def tree_view(releases: list[str], venvs: list[str]) -> str:
    return "".join(f"releases/{name}\n" for name in releases) + "".join(f"venvs/{name}\n" for name in venvs)


def current_diff(before: str | None, after: str | None) -> dict[str, str]:
    return {"before": f"current -> {before or '(none)'}\n", "after": f"current -> {after or '(none)'}\n"}


def change_release(module: AnsibleModule, store: ReleaseStore) -> dict[str, Any]:
    """states current, failed and rolled_back: one release, checked in check mode exactly as a real run would."""
    params = module.params
    name = params["release"]
    before = store.current()
    status = release_status(store.path(name)) if store.path(name).is_dir() else None
    if status is None and not module.check_mode:
        module.fail_json(msg=f"release {name} does not exist under {store.releases_dir}", changed=False)
    try:
        if module.check_mode and status in (None, INCOMPLETE) and params["state"] != "rolled_back":
            # Check mode predicted the build without making it: the release a real run would have made.
            after = name if params["state"] == "current" else before
            result = {"changed": True, "release": name, "previous": before, "current": after}
        elif params["state"] == "current":
            result = store.swap(name, dry_run=module.check_mode)
        elif params["state"] == "failed":
            already = status == FAILED and before != name
            if already or module.check_mode:
                after = previous_good(store.releases(), name) if before == name else before
                result = {"changed": not already, "release": name, "reason": params["reason"], "current": after}
            else:
                result = store.fail(name, params["reason"])
        elif module.check_mode:
            result = {"changed": status == GOOD, "release": name}
        else:
            result = store.mark_rolled_back(name)
    except ReleaseError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    result.pop("release", None)  # the name given; "release" in the result is the release facts
    if module._diff and params["state"] in ("current", "failed"):
        result["diff"] = current_diff(before, result.get("current"))
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "base": {"type": "path", "required": True},
            "state": {
                "type": "str",
                "choices": ["status", "current", "failed", "rolled_back", "pruned"],
                "default": "status",
            },
            "release": {"type": "str"},
            "reason": {"type": "str", "default": "failed"},
            "keep": {"type": "int", "default": 3},
            "grace": {"type": "float", "default": 3600.0},
        },
        required_if=[("state", state, ["release"]) for state in ("current", "failed", "rolled_back")],
        supports_check_mode=True,
    )
    store = ReleaseStore(module.params["base"])
    if module.params["state"] == "status":
        module.exit_json(changed=False, release=release_facts(store))
    if module.params["state"] != "pruned":
        result = change_release(module, store)
        module.exit_json(**result, release=release_facts(store))

    if module.params["keep"] < 0 or module.params["grace"] < 0:
        module.fail_json(msg="keep and grace must not be negative (keep counts releases, grace seconds)")
    plan = store.plan_prune(module.params["keep"], module.params["grace"])
    names = [entry["name"] for entry in store.releases()]
    venvs = venv_names(store)
    result: dict[str, Any] = {
        "changed": plan.changes,
        "removed": plan.remove,
        "removed_venvs": plan.remove_venvs,
        "kept_incomplete": plan.kept_incomplete,
        "kept_young_venvs": plan.kept_young_venvs,
    }
    if module._diff:
        result["diff"] = {
            "before_header": f"{store.base} (releases, venvs)",
            "after_header": f"{store.base} (releases, venvs)",
            "before": tree_view(names, venvs),
            "after": tree_view(
                [name for name in names if name not in plan.remove],
                [name for name in venvs if name not in plan.remove_venvs],
            ),
        }
    if plan.changes and not module.check_mode:
        try:
            store.prune(plan)
        except OSError as exc:
            module.fail_json(msg=f"cannot prune {store.base}: {exc}", **result)
    result["release"] = release_facts(store)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
