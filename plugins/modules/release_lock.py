#!/usr/bin/python
# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_lock
short_description: Hold an app's release lock across the tasks of a rollout, so a push or an operator waits
version_added: 0.2.0
author: pyweb.stack maintainers (@pyweb)
description:
  - Every path that rolls out a release of an app takes one exclusive C(flock) on C(<base_dir>/.pyweb-release.lock)
    first; a push to C(pyweb.stack.git_deploy) and an operator's C(<base>/bin/app-lock) do, and this module does for
    an Ansible rollout, so two rollouts of one app on a host never interleave however they were started.
  - A module process ends after its task, and a C(flock) ends with the last process that holds it. With
    O(state=held) the module takes the lock, waiting up to O(timeout) seconds while another path holds it, and hands
    it to a detached holder process (its own session, nothing inherited but the lock) that keeps it until a task
    with O(state=released) and the returned RV(token) ends it, or until O(lease) seconds have passed, a safety net
    for a controller that dies mid-rollout.
  - The holder writes O(owner) into the lock file, so whoever waits can say who holds the lock; a task that gives up
    after O(timeout) fails naming the holder. Each take, wait and release is logged to syslog (journald) as
    C(pyweb-release-lock).
  - Taking and giving back the lock changes nothing the play manages, so the module never reports a change.
options:
  base_dir:
    description:
      - The app's base directory (C(app_base_dir)); the lock file is C(.pyweb-release.lock) in it. It must exist.
    type: path
    required: true
  state:
    description:
      - V(held) takes the lock (waiting for it) and keeps it after the task ends.
      - V(released) ends the lease named by O(token). A lease that already ended (its O(lease) ran out) is reported
        with a warning; an empty O(token) (a V(held) task run in check mode) releases nothing.
    type: str
    choices: [held, released]
    default: held
  owner:
    description:
      - Who holds the lock, in words, shown to whoever waits for it (a push prints it to the pusher).
    type: str
    default: an Ansible rollout (pyweb.stack.release_lock)
  timeout:
    description:
      - Seconds O(state=held) waits while another path holds the lock before it fails naming the holder.
    type: int
    default: 900
  lease:
    description:
      - Seconds the holder keeps the lock at most when no O(state=released) task ends it first. Make it longer
        than the longest rollout; a rollout still running when it runs out no longer holds the lock.
    type: int
    default: 3600
  token:
    description:
      - The RV(token) a V(held) task returned. Required to release; with V(held), a lease of this token that holds
        the lock is returned as it is instead of waiting for it.
    type: str
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - In check mode the lock is not taken (nothing would give it back, and nothing a check run does needs it);
        V(held) reports who holds it now without waiting, V(released) does nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
    details:
      - Nothing the play manages changes, so there is no diff.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: full
    details:
      - The module never reports a change. With the same O(token), a second V(held) returns the same lease and a
        second V(released) finds it ended.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - The lock is advisory; only the paths that take it (this module, the push runner of C(pyweb.stack.git_deploy),
    C(bin/app-lock) of C(pyweb.stack.app)) wait for each other. Release tools such as C(bin/app-release) do not take
    it themselves, so they can run under it.
  - Put the V(released) task in an C(always) section, so a failed rollout gives the lock back at once instead of
    after O(lease) seconds.
seealso:
  - name: flock(2)
    description: The Linux advisory lock the module holds.
    link: https://man7.org/linux/man-pages/man2/flock.2.html
"""

EXAMPLES = r"""
- name: Roll out under the release lock, and give it back even when the rollout fails
  block:
    - name: Take the release lock (a push in progress finishes first)
      pyweb.stack.release_lock:
        base_dir: /srv/chatapp
        owner: "ansible-playbook rollout of chatapp from {{ lookup('ansible.builtin.pipe', 'hostname') }}"
        timeout: 900
        lease: 3600
      register: release_lock

    - name: Build, check and activate the release
      ansible.builtin.include_tasks: release.yml
  always:
    - name: Give the release lock back
      pyweb.stack.release_lock:
        base_dir: /srv/chatapp
        state: released
        token: "{{ release_lock.token }}"
      when: release_lock.token | default('') | length > 0

- name: Only see who holds the lock now (check mode takes nothing)
  pyweb.stack.release_lock:
    base_dir: /srv/chatapp
  check_mode: true
  register: lock_now
"""

RETURN = r"""
lock_file:
  description: The lock file.
  returned: always
  type: str
  sample: /srv/chatapp/.pyweb-release.lock
held:
  description: Whether the lease of RV(token) holds the lock when the task ends.
  returned: always
  type: bool
  sample: true
token:
  description:
    - Names the lease; pass it to O(state=released). Empty when nothing was taken (check mode).
  returned: always
  type: str
  sample: 5f1c0a9d3e7b2c44
holder:
  description:
    - The description in the lock file of whoever holds the lock (this task's lease after O(state=held)); null
      when nobody holds it.
  returned: always
  type: dict
  sample:
    owner: ansible-playbook rollout of chatapp
    pid: 41872
    since: "2026-12-01T15:10:01.214455Z"
    until: "2026-12-01T16:10:01.214455Z"
    token: 5f1c0a9d3e7b2c44
waited:
  description: Seconds O(state=held) waited for another holder.
  returned: always
  type: float
  sample: 12.4
waited_for:
  description: What the task waited for, naming the holder then; empty when the lock was free.
  returned: always
  type: str
  sample: >-
    the lock /srv/chatapp/.pyweb-release.lock is held by git push of refs/heads/main 3f1c2a9e4b7d
    (pyweb.stack.git_deploy, pushed by chatapp-deploy) (pid 3120, since 2026-12-01T15:09:48.100231Z); waiting up to 900s
released:
  description: The description of the lease O(state=released) ended; null when it had ended already.
  returned: when O(state=released)
  type: dict
  sample:
    owner: ansible-playbook rollout of chatapp
    pid: 41872
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.pyweb.stack.plugins.module_utils._lock import (  # noqa: E402
    LockError,
    current_holder,
    end_lease,
    held_by,
    release_lock_path,
    take_lease,
)


def take(module: AnsibleModule, path: str, result: dict) -> None:
    params = module.params
    if module.check_mode:
        result["holder"] = current_holder(path)
        return
    heard: list[str] = []
    try:
        holder, waited = take_lease(
            path, params["timeout"], params["owner"], params["lease"], heard.append, token=params["token"]
        )
    except LockError as exc:
        module.fail_json(msg=str(exc), **{**result, "holder": current_holder(path)})
    result.update(held=True, token=holder["token"], holder=holder, waited=round(waited, 3), waited_for=" ".join(heard))


def give_back(module: AnsibleModule, path: str, result: dict) -> None:
    token = module.params["token"] or ""
    result["token"] = token
    result["released"] = None
    if module.check_mode or not token:
        result["held"] = held_by(path, token) is not None
        result["holder"] = current_holder(path)
        return
    try:
        result["released"] = end_lease(path, token)
    except LockError as exc:
        module.fail_json(msg=str(exc), **result)
    if result["released"] is None:
        module.warn(
            f"the lease {token} no longer held {path} when it was released: its lease ran out (or its holder was "
            "ended) before the rollout finished, so another path may have taken the lock meanwhile; raise the lease"
        )
    result["holder"] = current_holder(path)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "base_dir": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["held", "released"], "default": "held"},
            "owner": {"type": "str", "default": "an Ansible rollout (pyweb.stack.release_lock)"},
            "timeout": {"type": "int", "default": 900},
            "lease": {"type": "int", "default": 3600},
            "token": {"type": "str", "no_log": False},
        },
        required_if=[("state", "released", ["token"])],
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 0 or params["lease"] < 1:
        module.fail_json(msg="timeout must be 0 or more seconds and lease at least 1 second")
    if not os.path.isdir(params["base_dir"]):
        module.fail_json(msg=f"base_dir {params['base_dir']} is not a directory: the app's layout must exist first")
    path = str(release_lock_path(params["base_dir"]))
    result: dict = {"changed": False, "lock_file": path, "held": False, "token": "", "holder": None}
    result.update(waited=0.0, waited_for="")
    if params["state"] == "held":
        take(module, path, result)
    else:
        give_back(module, path, result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
