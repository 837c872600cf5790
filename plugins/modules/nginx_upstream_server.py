#!/usr/bin/python
# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nginx_upstream_server
short_description: Drain app servers from nginx's upstreams (mark them down) or put them back, validated and reloaded
version_added: 0.2.0
author: pyweb.stack maintainers (@pyweb)
description:
  - Takes servers out of every nginx C(upstream) block that lists them, or puts them back, on a web host while a
    rolling rollout switches an app host; the site playbook's rollout runs it on each web host, delegated from the
    app host being switched.
  - V(drained) adds the C(down) parameter to each C(server <address> ...;) line of the O(servers) inside
    C(upstream) blocks of the files in O(sites_dir); V(active) removes it. Nothing else in the files changes.
  - A changed configuration is checked with O(validate_command) before nginx reloads it; when nginx rejects it, or
    the reload does not take, the files get their previous content back and the task fails with nginx's words, so
    the running nginx and the files on disk always agree.
  - nginx's reload lets the old workers finish the requests they have, so draining refuses no request; new requests
    go to the other servers of the upstream.
  - Runs for several app hosts at once (a batch of a rollout) take turns on an exclusive lock (O(lock_file)), so
    that no edit of one run is lost in another's.
  - A server that no upstream of the host lists (an app server on the web host itself, reached over its unix
    socket) is not an error; RV(matched) says which were found.
options:
  servers:
    description:
      - The servers to drain or put back, as the upstream blocks name them (C(address:port), or C(unix:/path)).
    type: list
    elements: str
    required: true
  state:
    description: V(drained) marks the servers C(down), V(active) puts them back.
    type: str
    choices: [drained, active]
    default: drained
  sites_dir:
    description: The directory whose C(*.conf) files (symbolic links followed) hold the upstream blocks.
    type: path
    default: /etc/nginx/sites-enabled
  validate_command:
    description: The command (argv) that checks the whole configuration after the change.
    type: list
    elements: str
    default: [nginx, -q, -t]
  reload_command:
    description:
      - The command (argv) that reloads nginx and fails when the new configuration did not take; the default is the
        host tool that C(pyweb.stack.nginx) installs and its handler runs.
    type: list
    elements: str
    default: [/usr/local/sbin/pyweb-nginx-reload]
  lock_file:
    description: The file whose C(flock) the runs on one host take in turn, from reading the files to the reload.
    type: path
    default: /run/lock/pyweb-nginx-upstream.lock
attributes:
  check_mode:
    support: full
    description: Reports the files that would change and changes nothing; neither command runs.
  diff_mode:
    support: full
    description: Each changed file before and after.
  idempotent:
    support: full
    description: A server already in the asked state changes nothing and reloads nothing.
notes:
  - A later run of C(pyweb.stack.nginx) renders the upstreams from the inventory again, without C(down).
"""

EXAMPLES = r"""
- name: Drain app1 from the upstreams of every web host
  pyweb.stack.nginx_upstream_server:
    servers: ["10.0.0.11:8000"]
    state: drained
  delegate_to: "{{ item }}"
  loop: "{{ groups['pyweb_web'] }}"

- name: Put it back
  pyweb.stack.nginx_upstream_server:
    servers: ["10.0.0.11:8000"]
    state: active
  delegate_to: web1
"""

RETURN = r"""
matched:
  description: The O(servers) that an upstream block of the host lists.
  returned: always
  type: list
  elements: str
  sample: ["10.0.0.11:8000"]
files:
  description: The files that changed (or would change in check mode).
  returned: always
  type: list
  elements: str
  sample: ["/etc/nginx/sites-available/flaskapp.conf"]
"""

import fcntl  # noqa: E402
import glob  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402
from ansible_collections.pyweb.stack.plugins.module_utils._nginx_upstream import set_servers_down  # noqa: E402


def _write(path, text):
    directory = os.path.dirname(path)
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    handle, scratch = tempfile.mkstemp(dir=directory, prefix=".pyweb-upstream-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(scratch, mode)
        os.rename(scratch, path)
    except BaseException:
        if os.path.exists(scratch):
            os.unlink(scratch)
        raise


def _output(result):
    rc, out, err = result
    return (err.strip() or out.strip() or f"exit status {rc}").replace("\n", "; ")


def main():
    module = AnsibleModule(
        argument_spec={
            "servers": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["drained", "active"], "default": "drained"},
            "sites_dir": {"type": "path", "default": "/etc/nginx/sites-enabled"},
            "validate_command": {"type": "list", "elements": "str", "default": ["nginx", "-q", "-t"]},
            "reload_command": {"type": "list", "elements": "str", "default": ["/usr/local/sbin/pyweb-nginx-reload"]},
            "lock_file": {"type": "path", "default": "/run/lock/pyweb-nginx-upstream.lock"},
        },
        supports_check_mode=True,
    )
    # From reading the files to the reload; exit_json and fail_json end the module through SystemExit.
    lock = os.open(module.params["lock_file"], os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        apply(module)
    finally:
        os.close(lock)


def apply(module):
    params = module.params
    down = params["state"] == "drained"
    changes, matched, diffs = {}, [], []
    for link in sorted(glob.glob(os.path.join(params["sites_dir"], "*.conf"))):
        path = os.path.realpath(link)
        try:
            with open(path, encoding="utf-8") as stream:
                before = stream.read()
        except OSError as error:
            module.fail_json(msg=f"cannot read {path}: {to_native(error)}")
        after, found = set_servers_down(before, params["servers"], down)
        matched.extend(address for address in found if address not in matched)
        if after != before:
            changes[path] = (before, after)
            diffs.append({"before_header": path, "after_header": path, "before": before, "after": after})

    result = {"changed": bool(changes), "matched": matched, "files": sorted(changes)}
    if module._diff:
        result["diff"] = diffs
    if not changes or module.check_mode:
        module.exit_json(**result)

    for path, (_before, after) in changes.items():
        _write(path, after)
    failure = None
    checked = module.run_command(params["validate_command"])
    if checked[0] != 0:
        failure = f"nginx rejected the configuration with the servers {params['state']}: {_output(checked)}"
    else:
        reloaded = module.run_command(params["reload_command"])
        if reloaded[0] != 0:
            failure = f"nginx did not reload with the servers {params['state']}: {_output(reloaded)}"
    if failure:
        for path, (before, _after) in changes.items():
            _write(path, before)
        module.fail_json(
            msg=f"{failure}; the files are back as they were and nginx runs its previous configuration", **result
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
