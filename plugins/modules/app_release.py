#!/usr/bin/python
# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_release
short_description: Read the releases of a pyweb.stack app, or prune the old ones
version_added: 0.2.0
description:
  - Works on the release layout of M(pyweb.stack.app) under O(base) (C(releases/<UTC timestamp>), the C(current)
    symlink, C(venvs/)), through the same release store as C(<base>/bin/app-release) and the push hook.
  - With O(state=status), reads which release is current, which one a rollback would go to, and the state of
    every release (V(building), V(ready), V(current), V(failed), V(rolled_back)). Nothing changes.
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
      - V(pruned) makes sure nothing prunable is left.
    type: str
    choices: [status, pruned]
    default: status
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
    description: In check mode O(state=pruned) reports what it would remove and removes nothing.
  diff_mode:
    support: full
    description: O(state=pruned) shows the releases and virtualenvs before and after.
  idempotent:
    support: full
    description: A second O(state=pruned) run with the same options finds nothing to remove.
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
from ansible_collections.pyweb.stack.plugins.module_utils._release import ReleaseStore, engine_state  # noqa: E402


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


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "base": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["status", "pruned"], "default": "status"},
            "keep": {"type": "int", "default": 3},
            "grace": {"type": "float", "default": 3600.0},
        },
        supports_check_mode=True,
    )
    store = ReleaseStore(module.params["base"])
    if module.params["state"] == "status":
        module.exit_json(changed=False, release=release_facts(store))

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
